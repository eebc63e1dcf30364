"""The retraining plan: a cooldown that waits for live retrainings but is not silenced by failed ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pneumo.config import load_params
from pneumo.tasks.retrain import Retraining, plan

CONFIG = load_params()["monitoring"]  # threshold 0.3, cooldown 24 h, 3 attempts


def _run(state: str, minutes_ago: int, name: str = "run") -> Retraining:
    created = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return Retraining(f"id-{name}", name, state, state.title(), created, "boom" if state == "CRASHED" else "")


def test_no_drift_starts_nothing():
    assert plan(0.2, [_run("FAILED", 5)], CONFIG)["decision"] == "no drift"


def test_drift_with_no_recent_retraining_retrains():
    decided = plan(0.95, [], CONFIG)
    assert decided["decision"] == "retrain" and "attempt 1 of 3" in decided["reason"]


def test_a_scheduled_running_or_completed_retraining_means_wait():
    for state in ("SCHEDULED", "PENDING", "RUNNING", "COMPLETED"):
        decided = plan(0.95, [_run(state, 30, "busy-bee")], CONFIG)
        assert decided["decision"] == "cooldown", state
        assert decided["waiting_for"]["name"] == "busy-bee" and "busy-bee" in decided["reason"]


def test_a_crashed_retraining_does_not_silence_the_loop():
    decided = plan(0.95, [_run("CRASHED", 30, "dead-duck")], CONFIG)
    assert decided["decision"] == "retrain"
    assert "attempt 2 of 3" in decided["reason"] and "dead-duck (Crashed" in decided["reason"]


def test_attempts_are_capped_per_cooldown_window_and_the_failures_are_named():
    failed = [_run("FAILED", 10, "a"), _run("CRASHED", 20, "b"), _run("CANCELLED", 30, "c")]
    decided = plan(0.95, failed, CONFIG)
    assert decided["decision"] == "gave up"
    assert [r["name"] for r in decided["failed"]] == ["a", "b", "c"]
    assert "max_attempts 3" in decided["reason"]


def test_a_drop_in_live_performance_retrains_without_drift_and_waits_like_drift():
    reason = "live sensitivity 0.60 on 40 confirmed diagnoses is 0.35 below the champion's test 0.95"
    decided = plan(0.1, [], CONFIG, degraded=reason)
    assert decided["decision"] == "retrain" and decided["reason"].startswith(reason)
    both = plan(0.95, [], CONFIG, degraded=reason)
    assert "drift share 0.95 > threshold 0.3 and live sensitivity" in both["reason"]
    waiting = plan(None, [_run("RUNNING", 10, "busy-bee")], CONFIG, degraded=reason)
    assert waiting["decision"] == "cooldown" and reason in waiting["reason"]


def test_too_few_records_for_drift_and_no_degradation_retrain_nothing():
    decided = plan(None, [], CONFIG)
    assert decided["decision"] == "no drift" and "too few records" in decided["reason"]
