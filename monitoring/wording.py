"""Monitoring results as sentences, for reports, the Prefect UI and the service's /reports page.

Plain Python on purpose: the prediction service renders these, and its workers import no pandas.
"""

from __future__ import annotations

from typing import Any


def describe_site(check: dict[str, Any]) -> str:
    """One site's check as a sentence."""
    target = (
        "no target (not calibrated on this version)"
        if check["target"] is None
        else f"target {check['target']}"
    )
    if not check["positives"]:
        return f"site {check['site']}: no confirmed pneumonia cases yet ({target})"
    low, high = check["interval"]
    seen = (f"site {check['site']}: live sensitivity {check['sensitivity']:.2f}"
            + ("" if low is None else f" [{low:.2f}, {high:.2f}]")
            + f" on {check['positives']} confirmed pneumonia cases, {target}")  # fmt: skip
    if check["meets"] is None:
        return f"{seen}: too few to judge ({check['needed']} needed)"
    if check["meets"]:
        return f"{seen}: the site threshold still meets its target"
    again = "clearly below" if check["clearly_below"] else "below"
    return f"{seen}: {again} its target: calibrate again (pneumo calibrate --site {check['site']})"
