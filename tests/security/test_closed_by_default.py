"""Closed by default, tried from the outside as a security review would: a service other machines
can reach refuses to start without a token; with one, every data endpoint wants it; a page on
another name that resolves to the service (DNS rebinding) is refused."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import SERVING_MODEL, free_port, running_service

from pneumo.stack import gunicorn_command

PNEUMO = str(Path(sys.executable).parent / "pneumo")
TOKEN = "closed-by-default-token"


def _open_env() -> dict[str, str]:
    env = {**os.environ}
    for name in ("PNEUMO_API_TOKEN", "PNEUMO_ALLOW_ANONYMOUS"):
        env.pop(name, None)
    return env


@pytest.mark.parametrize("how", ["pneumo serve", "gunicorn"])
def test_a_service_every_machine_can_reach_refuses_to_start_without_a_token(how: str, tmp_path: Path):
    port = free_port()
    if how == "pneumo serve":  # the image's default command
        command = [PNEUMO, "serve", "--host", "0.0.0.0", "--port", str(port)]
        env = _open_env()
    else:  # gunicorn started by hand with the project's configuration
        command, extra = gunicorn_command("0.0.0.0", port, workers=1, threads=1)
        env = {**_open_env(), **extra}
    env["PNEUMO_STATE_DIR"] = str(tmp_path)  # no token kept from another run
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: refusing to serve on 0.0.0.0"), lines
    assert "PNEUMO_API_TOKEN" in lines[0] and "PNEUMO_ALLOW_ANONYMOUS=1" in lines[0]
    assert not (tmp_path / "api-token").exists()  # no token made up for a public address


@pytest.mark.integration
def test_with_a_token_every_data_endpoint_wants_it_and_rebinding_is_refused(served_model, xray, tmp_path):
    png = io.BytesIO()
    xray.save(png, "PNG")
    env = {
        "PNEUMO_MODEL_NAME": SERVING_MODEL, "PNEUMO_API_TOKEN": TOKEN,
        "PNEUMO_ALLOWED_HOSTS": "pneumo.hospital.example",
        "PNEUMO_RECORDS_URL": f"sqlite:///{tmp_path / 'records.db'}",
    }  # fmt: skip
    with running_service(env, "/ready", host="0.0.0.0") as url:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        upload, label = {"file": ("x.png", png.getvalue())}, {"request_id": "r", "label": "NORMAL"}
        calls = {
            "predict": lambda h: requests.post(f"{url}/predict", files=upload, headers=h, timeout=30),
            "feedback": lambda h: requests.post(f"{url}/feedback", json=label, headers=h, timeout=30),
            "reports": lambda h: requests.get(f"{url}/reports", headers=h, timeout=30),
            "metrics": lambda h: requests.get(f"{url}/metrics", headers=h, timeout=30),
        }  # fmt: skip
        for name, call in calls.items():
            assert call({}).status_code == 401, name
            assert call({"Authorization": "Bearer wrong"}).status_code == 401, name
        assert calls["predict"](bearer).status_code == 200
        assert calls["metrics"](bearer).status_code == 200  # no metrics token: the API token opens it
        assert requests.get(f"{url}/ready", timeout=10).json()["auth_required"] is True

        port = url.rsplit(":", 1)[1]
        for host in (f"rebind.evil.example:{port}", "rebind.evil.example", f"192.168.7.7:{port}"):
            rebound = {**bearer, "Host": host, "Origin": f"http://{host}"}
            refused = calls["predict"](rebound)
            assert refused.status_code == 403, (host, refused.text)
            assert "PNEUMO_ALLOWED_HOSTS" in refused.json()["error"]
        named = f"pneumo.hospital.example:{port}"
        listed = {**bearer, "Host": named, "Origin": f"http://{named}"}
        assert calls["predict"](listed).status_code == 200  # the name it is served as, from its own page
