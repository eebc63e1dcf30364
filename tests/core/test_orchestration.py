"""pneumo.orchestration: what the crash-detection automation is set to."""

from __future__ import annotations

import pytest

from pneumo.orchestration import crashed_after_s, zombie_message


def test_the_crash_window_defaults_to_90_s_and_is_never_shorter_than_two_heartbeats(monkeypatch):
    monkeypatch.delenv("PNEUMO_CRASHED_AFTER_S", raising=False)
    assert crashed_after_s() == 90
    monkeypatch.setenv("PNEUMO_CRASHED_AFTER_S", "60")
    assert crashed_after_s() == 60 and "no heartbeat for 60 s" in zombie_message(60)
    monkeypatch.setenv("PNEUMO_CRASHED_AFTER_S", "45")
    with pytest.raises(ValueError, match=r"PNEUMO_CRASHED_AFTER_S must be at least 60 .*not 45"):
        crashed_after_s()
