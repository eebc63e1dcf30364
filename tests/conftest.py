"""Fixtures. The integration stack runs on its own ports and state folder, never the user's.

Environment is set at import time, before Prefect or MLflow read their settings.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_STATE = Path(tempfile.mkdtemp(prefix="pneumo-test-state-"))
_STATE.chmod(0o755)  # PostgreSQL may run as its own user (PNEUMO_TEST_DB=postgres, as root)
# PNEUMO_TEST_DB=postgres: MLflow, Prefect and the records on a PostgreSQL server of the stack
_DB = os.environ.get("PNEUMO_TEST_DB", "sqlite")
# Every session, and every pytest-xdist worker of one, runs a stack of its own: base ports + 100 per
# slot. Slots 0-3 are the workers gw0-gw3 of the SQLite suite, 4-7 those of the PostgreSQL scenarios
# (the two run side by side in make test). Slots stay below 8, so that no two slots' ports meet
# (SeaweedFS's companions sit 555, 1000, 1007 and 15313 above its port, Prefect's 800 below MLflow's).
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
_SLOT = _WORKER + (4 if _DB == "postgres" else 0)
assert _WORKER < 4, "at most 4 pytest-xdist workers (-n 4): their stacks' ports would meet"


def _port(name: str, base: int) -> str:
    """The port of one of this session's servers (``PNEUMO_TEST_<NAME>_PORT`` moves the base)."""
    return str(int(os.environ.get(f"PNEUMO_TEST_{name}_PORT", base)) + 100 * _SLOT)


os.environ.update(
    {
        "PNEUMO_STATE_DIR": str(_STATE),
        "PNEUMO_WORKDIR": str(_STATE / "work"),
        "PNEUMO_S3_PORT": _port("S3", 28333),
        "PNEUMO_MLFLOW_PORT": _port("MLFLOW", 25000),
        "PNEUMO_PREFECT_PORT": _port("PREFECT", 24200),
        "PNEUMO_DB": _DB,
        "PNEUMO_POSTGRES_PORT": _port("POSTGRES", 25432),
        "PREFECT_HOME": str(_STATE / "prefect-client"),
        # A flow run whose process was killed is marked CRASHED after 60 s without heartbeats, the
        # shortest window allowed (pneumo.orchestration.crashed_after_s; the product's default: 90).
        "PNEUMO_CRASHED_AFTER_S": "60",
        # The tests' Prefect workers look for runs every 2 s, not 10: a run starts when the test asks.
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        # Operator events go nowhere unless a test points them at its own service (never :8085).
        "PNEUMO_EVENTS_URL": "http://127.0.0.1:1/admin/events",
    }
)
for _name in ("PNEUMO_S3_ENDPOINT", "MLFLOW_TRACKING_URI", "PREFECT_API_URL", "MLFLOW_S3_ENDPOINT_URL"):
    os.environ.pop(_name, None)

from scheduling import (  # noqa: E402, F401 (hooks: the order modules go to workers, where the time went)
    pytest_collection_modifyitems,
    pytest_runtest_logreport,
    pytest_terminal_summary,
)

from pneumo.config import Settings, apply_client_env  # noqa: E402
from pneumo.synth import generate  # noqa: E402

SETTINGS = apply_client_env()
REPO = Path(__file__).resolve().parents[1]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """This session's state folder (its servers' data and logs) goes once every test passed; after
    a failure it stays, and its path is printed, for the logs."""
    if exitstatus == 0:
        shutil.rmtree(_STATE, ignore_errors=True)
    elif any(_STATE.iterdir()):
        print(f"\nthis session's servers' state and logs: {_STATE}", file=sys.stderr)


def package_folders() -> dict[str, Path]:
    """Each package of pyproject.toml and the folder it is built from (one namespace, any folder)."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = setuptools.get("package-dir", {})
    return {name: REPO / mapped.get(name, name.replace(".", "/")) for name in setuptools["packages"]}


CLI = str(Path(sys.executable).parent / "pneumo")  # the console script of this environment


def run_cli(*args: str, timeout: int = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``pneumo ARGS`` as a user would, in a process of its own (``env`` on top of this one's);
    error boxes on one line each."""
    env = {**os.environ, "COLUMNS": "250", **(env or {})}
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    """The real S3 + MLflow + Prefect stack, started once for the session and stopped after."""
    from pneumo import stack as stack_module

    (_STATE / "work").mkdir(parents=True, exist_ok=True)
    started = stack_module.up(SETTINGS)
    yield SETTINGS
    stack_module.down(SETTINGS, only=started)


@pytest.fixture(scope="session")
def deployments(stack: Settings) -> None:
    """prefect.yaml's deployments, their work pool and automations, registered once per session
    (``prefect deploy`` loads every flow file: ~13 s of CPU each time)."""
    from pneumo.orchestration import register_deployments

    register_deployments()


@pytest.fixture
def records_url(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A new, empty prediction records store for one test: a SQLite file, or, when the stack runs on
    PostgreSQL, a database of its own on the stack's server."""
    if SETTINGS.db != "postgres":
        return f"sqlite:///{tmp_path / 'records.db'}"
    from pneumo.stack import local_postgres

    request.getfixturevalue("stack")
    name = f"records_{os.getpid()}_{next(_DATABASES)}"
    local_postgres(SETTINGS).create_databases((name,))
    return local_postgres(SETTINGS).url(name)


_DATABASES = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator:
    """A PostgreSQL server of its own (initdb'd in a temporary folder, on a free port)."""
    from pneumo.postgres import LocalPostgres, run_as
    from pneumo.stack import terminate_group

    folder = Path(tempfile.mkdtemp(prefix="pneumo-test-postgres-"))
    folder.chmod(0o755)  # the server may run as another user (postgres, when we are root)
    server = LocalPostgres(folder, free_port())
    server.initialise()
    with (folder / "server.log").open("ab") as log:
        process = subprocess.Popen(server.command(), stdout=log, stderr=subprocess.STDOUT, cwd="/",
                                   start_new_session=True, user=run_as())  # fmt: skip
    wait_until(server.ready, process, 60, lambda: (folder / "server.log").read_text())
    yield server
    terminate_group(process.pid, stop_signal=signal.SIGINT)
    shutil.rmtree(folder, ignore_errors=True)


def wait_until(ready: Callable[[], bool], process: subprocess.Popen, timeout_s: float,
               why: Callable[[], str]) -> None:  # fmt: skip
    """Poll ``ready`` until it is true; AssertionError with ``why()`` (its log, say) if ``process``
    exits first or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert process.poll() is None and time.monotonic() < deadline, why()
        time.sleep(0.5)


def answers(url: str) -> bool:
    """Whether GET ``url`` answers 2xx now."""
    import requests

    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def seaweed_port() -> int:
    """An S3 port whose companions are free too: master +1000, volume +1007, filer +555 and admin
    +15313 (pneumo.stack), each with its gRPC port 10000 above (SeaweedFS's rule), all below 65536."""
    offsets = [base + grpc for base in (0, 555, 1000, 1007, 15313) for grpc in (0, 10000)]
    for _ in range(200):
        port = random.randrange(20000, 65535 - max(offsets))
        try:
            for offset in offsets:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port + offset))
            return port
        except OSError:
            continue
    raise AssertionError("no free set of ports for SeaweedFS")


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic NIH-layout data set (deterministic)."""
    out = tmp_path_factory.mktemp("synthetic")
    generate(out, n=240, seed=7, size=96)
    return out


@pytest.fixture(scope="session")
def source(stack: Settings, synthetic_dir: Path) -> str:
    """The synthetic set uploaded to the test stack's raw bucket."""
    from pneumo.storage import s3_client, upload_dir

    uri = f"s3://{stack.raw_bucket}/synthetic-test"
    assert upload_dir(s3_client(stack), synthetic_dir, uri) > 200
    return uri


def send_images(
    images: list,
    records_url: str,
    model_name: str,
    confirmed: list[str] | None = None,
    site: str | None = None,
) -> list[dict]:
    """Predict every PIL image through the real API of ``model_name``, recording into ``records_url``
    (as a service with ``PNEUMO_SITE=site``); with ``confirmed``, send each image's confirmed
    diagnosis to ``/feedback`` too. Returns the answers."""
    import io

    from pneumo.serving import create_app

    config = {"MODEL_NAME": model_name, "RELOAD_INTERVAL_S": 0, "RECORDS_URL": records_url, "SITE": site}
    app = create_app(config)
    client = app.test_client()
    answers = []
    for index, image in enumerate(images):
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        response = client.post("/predict", data={"file": (io.BytesIO(buffer.getvalue()), "x.png")})
        assert response.status_code == 200
        answers.append(response.get_json())
        if confirmed is not None:
            body = {"request_id": answers[-1]["request_id"], "label": confirmed[index]}
            assert client.post("/feedback", json=body).status_code == 201
    app.extensions["pneumo.recorder"].flush()
    app.extensions["pneumo.model"].stop()
    return answers


@contextlib.contextmanager
def running_service(
    env: dict[str, str], ready: str = "/health", log: Path | None = None, host: str = "127.0.0.1"
) -> Iterator[str]:
    """The prediction service as deployed (gunicorn, 1 worker) on a free port of ``host``, with
    ``env`` on top of this process's environment, once ``ready`` answers 200 (``/ready``: with its
    model loaded); yields its URL (on 127.0.0.1) and stops it after. With ``log``, its output
    (access and error logs) goes there."""

    from pneumo.stack import gunicorn_command, terminate_group

    port = free_port()
    command, extra = gunicorn_command(host, port, workers=1, threads=2)
    output = log.open("ab") if log else None
    server = subprocess.Popen(command, env={**os.environ, **extra, **env}, start_new_session=True,
                              stdout=output or subprocess.DEVNULL, stderr=output)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{url}{ready}"), server, 120, lambda: "the service did not start")
        yield url
    finally:
        terminate_group(server.pid)
        if output:
            output.close()


def start_worker() -> subprocess.Popen:
    """A real Prefect process worker on the project's pool, in its own session (killable as a group)."""
    from pneumo.orchestration import worker_command

    (_STATE / "logs").mkdir(parents=True, exist_ok=True)
    with (_STATE / "logs" / "worker.log").open("ab") as log:
        command = worker_command()
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def stop_worker(worker: subprocess.Popen) -> None:
    from pneumo.stack import terminate_group

    terminate_group(worker.pid, grace_s=10)


def wait_for_flow_run(flow_run_id, timeout: float = 900):
    """The flow run once it is in a final state (or ``timeout`` seconds passed: AssertionError)."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            state = run.state.name if run.state else "without state"
            assert time.monotonic() < deadline, f"flow run {run.name} still {state} after {timeout} s"
            time.sleep(0.5)


def flow_runs_of(deployment_id, states: tuple[str, ...], since=None) -> list:
    """The deployment's flow runs in one of ``states`` (state type names, ``"RUNNING"``), expected
    to start after ``since`` when it is given."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    wanted = FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(s) for s in states])),
        expected_start_time=FlowRunFilterExpectedStartTime(after_=since) if since else None,
    )
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=wanted)


def cancel_scheduled_trainings(model_name: str) -> None:
    """Cancel the training deployment's runs of ``model_name`` still waiting for a worker (the
    retrainings a monitoring test scheduled without one), so that no later test's worker runs them."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("training/training")
        for run in flow_runs_of(deployment.id, ("SCHEDULED", "PENDING")):
            if (run.parameters.get("overrides") or {}).get("registry", {}).get("model_name") == model_name:
                client.set_flow_run_state(run.id, Cancelled(message="left by a test"), force=True)


def run_deployment_when_free(name: str, parameters: dict, timeout: float = 600, attempts: int = 3):
    """``run_deployment`` as an operator would use it next to a schedule: the monitoring deployment
    runs one at a time and cancels a newcomer (``CANCEL_NEW``), and its daily 06:00 UTC run may take
    the slot first when the tests run at that hour. A run cancelled by the limit is started again once
    the runs holding the slot have ended; any other final state is returned as it is."""
    from prefect.deployments import run_deployment

    for _ in range(attempts):
        run = run_deployment(name, parameters=parameters, timeout=timeout, poll_interval=1)
        if not (run.state.is_cancelled() and "concurrency limit" in (run.state.message or "").lower()):
            return run
        for holder in flow_runs_of(run.deployment_id, ("PENDING", "RUNNING", "CANCELLING")):
            wait_for_flow_run(holder.id, timeout)
    return run


def wait_for_task_run(names: tuple[str, ...], since, state: str = "RUNNING", timeout: float = 600):
    """The first task run named like one of ``names`` (``name-xyz``) created after ``since`` in ``state``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterStartTime
    from prefect.client.schemas.sorting import TaskRunSort

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_task_runs(
                task_run_filter=TaskRunFilter(start_time=TaskRunFilterStartTime(after_=since)),
                sort=TaskRunSort.EXPECTED_START_TIME_DESC,
                limit=50,
            )
            for run in runs:
                if run.name.rsplit("-", 1)[0] in names and run.state and run.state.type.value == state:
                    return run
            time.sleep(0.2)
    raise AssertionError(f"no task run of {names} reached {state} within {timeout} s")


# --- the prediction service with a real model (tests/serving) ------------------------------------

SERVING_MODEL = "pneumonia-serving-test"
SERVING_ADMIN = "admin-secret"


@pytest.fixture(scope="session")
def served_model(stack: Settings, source: str) -> dict:
    """A champion of its own registered model, so the other tests' promotions do not interfere."""
    from pneumo.flows.training_flow import training

    summary = training(source=source, profile="test", overrides={"registry": {"model_name": SERVING_MODEL}})
    assert summary["promoted"], summary["reasons"]
    return summary


def champion_copy(served_model: dict, name: str) -> dict:
    """A champion for the registered model ``name`` without a training of its own: the session's
    trained version (``served_model``) copied into ``name`` with every tag (its data version,
    threshold, gate verdict; the run, its graphs and its monitoring reference are shared) and a
    recipe that names ``name`` (a retraining trains ``name``), then promoted as an operator would
    (audited, by ``tests``). Returns ``served_model``'s summary for the copy. For the tests whose
    subject is not the training itself."""
    import dataclasses

    import mlflow

    from pneumo.contract import Recipe
    from pneumo.tasks.registry import promote

    client = mlflow.MlflowClient()
    copy = client.copy_model_version(f"models:/{SERVING_MODEL}/{served_model['version']}", name)
    version, recipe = str(copy.version), Recipe.from_tags(copy.tags)
    registry = {**recipe.overrides.get("registry", {}), "model_name": name}
    renamed = dataclasses.replace(recipe, overrides={**recipe.overrides, "registry": registry})
    for key, value in renamed.to_tags().items():
        client.set_model_version_tag(name, version, key, value)
    promote.fn(name, version, "a copy of the session's trained model", expected=None, by="tests")
    return {**served_model, "version": version, "model_uri": f"models:/{name}/{version}"}


@pytest.fixture
def app(served_model: dict, tmp_path: Path, records_url: str):
    """A fresh app (and a fresh predictions database) per test."""
    from pneumo.serving import create_app

    app = create_app(
        {
            "TESTING": True,
            "MODEL_NAME": SERVING_MODEL,
            "RELOAD_INTERVAL_S": 0,
            "RECORDS_URL": records_url,
            "ADMIN_TOKEN": SERVING_ADMIN,
        }
    )
    yield app
    app.extensions["pneumo.model"].stop()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def xray(synthetic_dir: Path):
    """One synthetic chest X-ray (PIL image)."""
    from PIL import Image

    return Image.open(next((synthetic_dir / "images").glob("*.png"))).copy()
