"""The image as shipped: built by deploy/build-image.sh (``make image``), its default command, run
with buildah against the test stack, serves the registry's champion. Run by ``make test-image``
and, in ``make test``, last in the PostgreSQL session, once the build started alongside is done."""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import requests
from conftest import REPO, SERVING_MODEL, answers, free_port, run_deployment_when_free, wait_until

from pneumo.config import Settings
from pneumo.stack import terminate_group

pytestmark = [pytest.mark.integration, pytest.mark.image, pytest.mark.postgres]
IMAGE = os.environ.get("PNEUMO_IMAGE", "localhost/pneumo:latest")
RUN = ["buildah", "run", "--isolation", "chroot"]  # shares the host's network: the test stack is on 127.0.0.1


def _image_config() -> dict:
    result = subprocess.run(["buildah", "inspect", "--type", "image", IMAGE], capture_output=True, text=True)
    assert result.returncode == 0, f"no image {IMAGE}: run make image first ({result.stderr.strip()})"
    return json.loads(result.stdout)["OCIv1"]["config"]


def _run(container: str, env: dict[str, str], command: list[str], log: Path, options: Sequence[str] = ()):
    """``command`` in ``container`` with ``env``, in its own session, its output going to ``log``."""
    settings = [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]
    with log.open("ab") as output:
        return subprocess.Popen([*RUN, *settings, *options, container, "--", *command], stdout=output,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


IMAGE_TOKEN = "image-test-api-token"


@pytest.fixture(scope="module")
def built() -> str:
    """The image built from this checkout: deploy/build-image.sh waits for a build already running
    (make test starts one alongside the tests) and finds its layers cached, or builds it."""
    build = subprocess.run([str(REPO / "deploy" / "build-image.sh"), IMAGE], capture_output=True, text=True)
    assert build.returncode == 0, f"deploy/build-image.sh {IMAGE} failed:\n{build.stderr[-3000:]}"
    return IMAGE


@pytest.fixture(scope="module")
def container(built: str) -> Iterator[str]:
    name = subprocess.run(
        ["buildah", "from", "--pull-never", built], capture_output=True, text=True, check=True
    )
    container = name.stdout.strip()
    yield container
    subprocess.run(["buildah", "rm", container], capture_output=True, check=False)


@pytest.fixture(scope="module")
def served_from_the_image(
    container: str, served_model: dict, stack: Settings, tmp_path_factory
) -> Iterator[str]:
    """The image's default command (entry point and command as built) with the deployment's settings."""
    config = _image_config()
    default_command = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
    assert default_command == ["pneumo", "serve"]
    port = free_port()
    settings = {
        "PNEUMO_PORT": str(port), "PNEUMO_HOST": "127.0.0.1", "PNEUMO_MODEL_NAME": SERVING_MODEL,
        "PNEUMO_API_TOKEN": IMAGE_TOKEN,
        "MLFLOW_TRACKING_URI": stack.mlflow_uri, "PNEUMO_S3_ENDPOINT": stack.s3_endpoint,
        "AWS_ACCESS_KEY_ID": stack.access_key, "AWS_SECRET_ACCESS_KEY": stack.secret_key,
    }  # fmt: skip
    log = tmp_path_factory.mktemp("image") / "serve.log"
    server = _run(container, settings, default_command, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{url}/ready"), server, 240, lambda: log.read_text()[-3000:])
        yield url
    finally:
        terminate_group(server.pid)


def test_the_image_serves_the_champion_through_its_default_command(
    served_from_the_image: str, served_model, xray
):
    url = served_from_the_image
    assert requests.get(f"{url}/health", timeout=5).status_code == 200
    ready = requests.get(f"{url}/ready", timeout=5).json()
    assert ready["model_name"] == SERVING_MODEL and ready["model_version"] == served_model["version"]
    assert ready["runtime"] == "onnx" and ready["records"]["ok"] is True
    buffer = io.BytesIO()
    xray.save(buffer, "PNG")
    upload = {"file": ("x.png", buffer.getvalue(), "image/png")}
    assert (
        requests.post(f"{url}/predict", files=upload, timeout=60).status_code == 401
    )  # the token it was given is wanted
    answer = requests.post(
        f"{url}/predict", files=upload, headers={"Authorization": f"Bearer {IMAGE_TOKEN}"}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["label"] in ("NORMAL", "PNEUMONIA") and 0 <= body["probability"] <= 1
    assert body["model_version"] == served_model["version"]


def test_the_images_worker_registers_the_deployments_and_runs_one_to_completion(
    container: str, stack: Settings, served_model: dict, records_url: str, tmp_path: Path
):
    """compose's worker: ``pneumo deploy --healthcheck`` from the image registers prefect.yaml's
    deployments (flow files in PNEUMO_HOME, /app), answers its health check, and runs a monitoring
    flow run to COMPLETED in the container."""
    health_port, mounts = free_port(), []
    if records_url.startswith("sqlite:///"):  # the container sees the host's file through a mount
        folder = Path(records_url.removeprefix("sqlite:///")).parent
        folder.chmod(0o777)  # the image runs as uid 10001
        mounts, records_url = ["--volume", f"{folder}:/records"], "sqlite:////records/records.db"
    settings = {
        "MLFLOW_TRACKING_URI": stack.mlflow_uri, "PNEUMO_S3_ENDPOINT": stack.s3_endpoint,
        "PREFECT_API_URL": stack.prefect_api_url, "PNEUMO_RECORDS_URL": records_url,
        "AWS_ACCESS_KEY_ID": stack.access_key, "AWS_SECRET_ACCESS_KEY": stack.secret_key,
        "PNEUMO_EVENTS_URL": os.environ["PNEUMO_EVENTS_URL"], "PNEUMO_ADMIN_TOKEN": "image-test-admin",
        "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1", "PREFECT_WORKER_WEBSERVER_PORT": str(health_port),
    }  # fmt: skip
    log = tmp_path / "worker.log"
    worker = _run(container, settings, ["pneumo", "deploy", "--healthcheck"], log, mounts)
    try:
        health = f"http://127.0.0.1:{health_port}/health"
        wait_until(lambda: answers(health), worker, 180, lambda: log.read_text()[-3000:])
        parameters = {"model_name": SERVING_MODEL, "records_url": records_url}
        run = run_deployment_when_free("monitoring/monitoring", parameters)
        assert run.state.is_completed(), (run.state.message, log.read_text()[-3000:])
    finally:
        terminate_group(worker.pid)


def test_the_image_holds_what_runs_and_no_dev_tool(container: str):
    probe = ("import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None for m in "
             "['pneumo', 'onnxruntime', 'pydicom', 'alembic', 'psycopg2', 'pytest', 'ruff', 'playwright', "
             "'schemathesis']}))")  # fmt: skip
    result = subprocess.run([*RUN, container, "--", "python", "-c", probe], capture_output=True, text=True,
                            check=True)  # fmt: skip
    found = json.loads(result.stdout)
    assert all(found[m] for m in ("pneumo", "onnxruntime", "pydicom", "alembic", "psycopg2")), found
    assert not any(found[m] for m in ("pytest", "ruff", "playwright", "schemathesis")), found
    user = subprocess.run([*RUN, container, "--", "id", "-u"], capture_output=True, text=True, check=True)
    assert user.stdout.strip() == "10001"
