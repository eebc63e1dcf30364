"""pneumo.config: profiles, overrides and their errors."""

from __future__ import annotations

import pytest

from pneumo.config import api_token, exposure_refusal, is_loopback, load_params, parse_overrides


def test_profiles_merge_over_base_and_overrides_win():
    params = load_params("demo", parse_overrides(["train.epochs=1", "gate.max_drop.auc=0.1"]))
    assert params["train"]["backbone"] == "small_cnn"
    assert params["train"]["epochs"] == 1
    assert params["gate"]["max_drop"]["auc"] == 0.1
    assert params["data"]["val_fraction"] == load_params()["data"]["val_fraction"]


def test_unknown_profile_and_override_are_refused():
    with pytest.raises(ValueError, match="unknown profile"):
        load_params("nope")
    with pytest.raises(ValueError, match="unknown parameter"):
        load_params("default", parse_overrides(["train.epoch=1"]))
    with pytest.raises(ValueError, match=r"section\.key=value"):
        parse_overrides(["epochs"])


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True), ("[::1]", True),
     ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("pneumo.example", False)],
)  # fmt: skip
def test_only_loopback_addresses_count_as_this_machine_only(host: str, loopback: bool):
    assert is_loopback(host) is loopback


def test_a_reachable_service_needs_a_token_or_an_explicit_anonymous(monkeypatch):
    monkeypatch.delenv("PNEUMO_API_TOKEN", raising=False)
    monkeypatch.delenv("PNEUMO_ALLOW_ANONYMOUS", raising=False)
    assert exposure_refusal("127.0.0.1") is None
    assert "PNEUMO_API_TOKEN" in exposure_refusal("0.0.0.0")
    monkeypatch.setenv("PNEUMO_ALLOW_ANONYMOUS", "yes")  # only "1" says it
    assert exposure_refusal("0.0.0.0") is not None
    monkeypatch.setenv("PNEUMO_ALLOW_ANONYMOUS", "1")
    assert exposure_refusal("0.0.0.0") is None
    monkeypatch.delenv("PNEUMO_ALLOW_ANONYMOUS")
    monkeypatch.setenv("PNEUMO_API_TOKEN", "  ")  # blank is no token
    assert exposure_refusal("0.0.0.0") is not None
    monkeypatch.setenv("PNEUMO_API_TOKEN", "t0ken")
    assert exposure_refusal("0.0.0.0") is None


def test_the_kept_api_token_is_made_once_and_readable_by_its_owner_only(monkeypatch, tmp_path):
    monkeypatch.delenv("PNEUMO_API_TOKEN", raising=False)
    monkeypatch.setenv("PNEUMO_STATE_DIR", str(tmp_path))
    assert api_token() is None
    made = api_token(create=True)
    assert made and len(made) >= 24 and api_token(create=True) == made == api_token()
    assert (tmp_path / "api-token").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("PNEUMO_API_TOKEN", "from-the-environment")
    assert api_token(create=True) == "from-the-environment"
