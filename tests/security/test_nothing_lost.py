"""Nothing lost, tried on the running service with real servers: PostgreSQL killed with SIGKILL under
load and started again, and S3 down while predictions come in. Every request answered 200 has its
row afterwards, and accepts a label."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import SERVING_MODEL, free_port, running_service, wait_until

from pneumo.config import Settings
from pneumo.monitoring.records import read_records
from pneumo.postgres import LocalPostgres, run_as

pytestmark = pytest.mark.integration


class Postgres:
    """A PostgreSQL server of this test's own, which it may kill with SIGKILL and start again."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="pneumo-kill-postgres-"))
        self.folder.chmod(0o755)  # the server may run as another user (postgres, when we are root)
        self.server = LocalPostgres(self.folder, free_port())
        self.server.initialise()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with (self.folder / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                self.server.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
                start_new_session=True,
                user=run_as(),
            )
        wait_until(self.server.ready, self.process, 90, lambda: (self.folder / "server.log").read_text())

    def kill(self) -> None:
        """kill -9 of the postmaster and every backend, as a crashed host would leave it."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            self.process.wait(30)
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    server.start()
    server.server.create_databases(("records",))
    yield server
    server.stop()


class Load:
    """Predictions sent one after another from a thread until stopped: (status, request id) each."""

    def __init__(self, url: str, image: bytes) -> None:
        self.url, self.image, self.answers, self._stop = url, image, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = requests.post(
                    f"{self.url}/predict", files={"file": ("x.png", self.image)}, timeout=30
                )
                self.answers.append((response.status_code, response.json().get("request_id")))
            except requests.RequestException as error:
                self.answers.append((0, str(error)))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(60)


def _png(xray) -> bytes:
    buffer = io.BytesIO()
    xray.save(buffer, "PNG")
    return buffer.getvalue()


def _settled(url: str) -> bool:
    pending = requests.get(f"{url}/ready", timeout=10).json()["records"]["pending"]
    return not any(pending.values())


def _wait_settled(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not _settled(url):
        assert time.monotonic() < deadline, requests.get(f"{url}/ready", timeout=10).json()["records"]
        time.sleep(1)


def test_postgres_killed_under_load_loses_no_record_and_no_label(served_model, postgres, xray, tmp_path):
    records = postgres.server.url("records")
    env = {"PNEUMO_MODEL_NAME": SERVING_MODEL, "PNEUMO_RECORDS_URL": records,
           "PNEUMO_STATE_DIR": str(tmp_path / "state")}  # fmt: skip
    with running_service(env, "/ready") as url:
        with Load(url, _png(xray)) as load:
            time.sleep(3)
            postgres.kill()
            killed_at = len(load.answers)
            time.sleep(6)  # predictions go on while the database is gone
            during = len(load.answers) - killed_at
            postgres.start()
            time.sleep(3)
        assert during >= 2, "no prediction was made while PostgreSQL was down"
        answered = [request_id for status, request_id in load.answers if status == 200]
        assert len(answered) == len(load.answers), {status for status, _ in load.answers}
        _wait_settled(url)
        kept = {row["request_id"] for row in read_records(records)}
        assert set(answered) <= kept, f"{len(set(answered) - kept)} of {len(answered)} records lost"
        for request_id in answered:  # every one of them takes its clinician's label
            label = requests.post(
                f"{url}/feedback", json={"request_id": request_id, "label": "NORMAL"}, timeout=30
            )
            assert label.status_code == 201, (request_id, label.text)


class _Forward(socketserver.BaseRequestHandler):
    """One connection to the real S3, bytes passed both ways."""

    def handle(self) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.server.upstream_port))

        def pump(source: socket.socket, target: socket.socket) -> None:
            try:
                while data := source.recv(65536):
                    target.sendall(data)
            except OSError:
                pass
            finally:
                target.close()

        threading.Thread(target=pump, args=(upstream, self.request), daemon=True).start()
        pump(self.request, upstream)


def test_s3_down_during_predictions_keeps_every_row_and_stores_the_images_once_back(
    served_model, stack: Settings, xray, tmp_path
):
    port = free_port()  # where the service finds S3: nothing listens there yet
    records = f"sqlite:///{tmp_path / 'records.db'}"
    env = {"PNEUMO_MODEL_NAME": SERVING_MODEL, "PNEUMO_RECORDS_URL": records,
           "PNEUMO_S3_ENDPOINT": f"http://127.0.0.1:{port}", "PNEUMO_STATE_DIR": str(tmp_path / "state"),
           "PNEUMO_STORE_IMAGES_URI": f"s3://{stack.raw_bucket}/s3-down-images"}  # fmt: skip
    with running_service(env, "/ready") as url:
        answers = [
            requests.post(f"{url}/predict", files={"file": ("x.png", _png(xray))}, timeout=30)
            for _ in range(5)
        ]
        assert all(answer.status_code == 200 for answer in answers)
        sent = {answer.json()["request_id"] for answer in answers}
        time.sleep(2)
        rows = {row["request_id"]: row for row in read_records(records)}
        assert sent <= rows.keys()  # the rows, though no image could be stored
        assert all(rows[request_id]["image_uri"] is None for request_id in sent)
        assert requests.get(f"{url}/ready", timeout=10).json()["records"]["pending"]["images"] == len(sent)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        with socketserver.ThreadingTCPServer(("127.0.0.1", port), _Forward) as s3_back:
            s3_back.daemon_threads, s3_back.upstream_port = True, stack.s3_port
            threading.Thread(target=s3_back.serve_forever, daemon=True).start()
            _wait_settled(url, 90)  # retried with backoff (at most 30 s apart)
            s3_back.shutdown()
    rows = {row["request_id"]: row for row in read_records(records)}
    assert all(rows[request_id]["image_uri"].endswith(request_id) for request_id in sent)
