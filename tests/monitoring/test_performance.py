"""pneumo.monitoring.performance: live performance on confirmed diagnoses, against the champion."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pneumo.config import load_params
from pneumo.monitoring.performance import describe, live_performance

CONFIG = load_params()["monitoring"]  # min_labelled 30, max_performance_drop 0.1
CHAMPION = {"test_auc": 0.98, "test_sensitivity": 0.95, "test_specificity": 0.90}


def _records(n: int, accuracy: float, seed: int = 0, labelled: int | None = None) -> pd.DataFrame:
    """``n`` records at threshold 0.5; a share ``accuracy`` of the answers is right."""
    rng = np.random.default_rng(seed)
    truth = np.arange(n) % 2
    right = rng.random(n) < accuracy
    p = np.where(right == (truth == 1), rng.uniform(0.6, 1.0, n), rng.uniform(0.0, 0.4, n))
    confirmed = np.where(truth == 1, "PNEUMONIA", "NORMAL").astype(object)
    confirmed[labelled if labelled is not None else n :] = None
    return pd.DataFrame({"probability": p, "threshold": 0.5, "confirmed_label": confirmed})


def test_no_confirmed_diagnoses_report_no_performance():
    result = live_performance(_records(50, 0.9, labelled=0), CHAMPION, CONFIG)
    assert result["labelled"] == 0 and result["degraded"] is None and "sensitivity" not in result
    assert describe(result) == "live performance: no confirmed diagnoses in this window"


def test_good_answers_match_the_champion_with_intervals():
    result = live_performance(_records(200, 0.97), CHAMPION, CONFIG)
    assert result["labelled"] == 200 and result["positives"] == 100 and result["threshold"] == 0.5
    for metric in ("auc", "sensitivity", "specificity"):
        low, high = result["intervals"][metric]
        assert low <= result[metric] <= high
    assert result["degraded"] is None
    assert result["drops"]["sensitivity"] == round(0.95 - result["sensitivity"], 4)


def test_a_drop_beyond_the_limit_is_a_reason_to_retrain_and_says_which_metric():
    result = live_performance(_records(100, 0.6), CHAMPION, CONFIG)
    assert result["degraded"] and "confirmed diagnoses" in result["degraded"]
    worst = max(result["drops"], key=result["drops"].get)
    assert f"live {worst} " in result["degraded"]


def test_too_few_labels_are_reported_but_decide_nothing():
    result = live_performance(_records(100, 0.3, labelled=20), CHAMPION, CONFIG)
    assert result["labelled"] == 20 and result["sensitivity"] < 0.6 and result["degraded"] is None
    assert "fewer than 30: not yet a reason to retrain" in describe(result)


def test_one_class_only_gives_no_rates_yet():
    records = _records(40, 0.9)
    records["confirmed_label"] = "NORMAL"
    result = live_performance(records, CHAMPION, CONFIG)
    assert result["labelled"] == 40 and "sensitivity" not in result and result["degraded"] is None
    assert "one class only" in describe(result)


def test_one_confirmed_case_of_a_class_says_nothing_about_its_rate():
    """29 normal films and 1 pneumonia the model missed: sensitivity 0, but no reason to retrain."""
    records = pd.DataFrame({"probability": [0.1] * 30, "threshold": 0.5,
                            "confirmed_label": ["NORMAL"] * 29 + ["PNEUMONIA"]})  # fmt: skip
    result = live_performance(records, CHAMPION, CONFIG)
    assert result["sensitivity"] == 0.0 and result["specificity"] == 1.0
    assert result["degraded"] is None


def _site_records(n: int, caught: float, site: str | None = "north", seed: int = 1) -> pd.DataFrame:
    """``n`` confirmed records decided at a site's threshold 0.3; a share ``caught`` of pneumonia found."""
    rng = np.random.default_rng(seed)
    truth = np.arange(n) % 2
    found = rng.random(n) < caught
    p = np.where(truth == 1, np.where(found, 0.8, 0.1), rng.uniform(0.0, 0.2, n))
    confirmed = np.where(truth == 1, "PNEUMONIA", "NORMAL")
    return pd.DataFrame({"probability": p, "threshold": 0.3, "site": site, "confirmed_label": confirmed})


def test_a_site_threshold_that_still_meets_its_target_says_so():
    result = live_performance(_site_records(120, 1.0), CHAMPION, CONFIG, sites={"north": 0.95})
    (check,) = result["sites"]
    assert check["site"] == "north" and check["target"] == 0.95 and check["positives"] == 60
    assert check["sensitivity"] == 1.0 and check["meets"] is True and check["clearly_below"] is False
    assert "site north: live sensitivity 1.00" in describe(result) and "still meets its target" in describe(
        result
    )


def test_a_site_threshold_below_its_target_asks_for_a_new_calibration():
    result = live_performance(_site_records(120, 0.6), CHAMPION, CONFIG, sites={"north": 0.95})
    (check,) = result["sites"]
    assert check["meets"] is False and check["clearly_below"] is True
    low, high = check["interval"]
    assert low <= check["sensitivity"] <= high < 0.95
    assert "clearly below its target: calibrate again (pneumo calibrate --site north)" in describe(result)


def test_too_few_pneumonia_cases_of_a_site_judge_nothing():
    result = live_performance(_site_records(20, 0.5), CHAMPION, CONFIG, sites={"north": 0.95})
    (check,) = result["sites"]
    assert (
        check["positives"] == 10
        and check["meets"] is None
        and "too few to judge (15 needed)" in describe(result)
    )


def test_records_without_a_site_have_no_site_checks():
    assert live_performance(_site_records(60, 1.0, site=None), CHAMPION, CONFIG)["sites"] == []
    assert live_performance(_records(60, 0.9), CHAMPION, CONFIG)["sites"] == []  # an older records table
    uncalibrated = live_performance(_site_records(60, 1.0), CHAMPION, CONFIG, sites={})
    assert uncalibrated["sites"][0]["target"] is None and uncalibrated["sites"][0]["meets"] is None


def test_each_record_is_judged_at_the_threshold_it_was_decided_with():
    """A recalibration mid-window: the older records keep the decisions they got."""
    records = _records(100, 1.0)
    later = pd.DataFrame({"probability": [0.3], "threshold": [0.2], "confirmed_label": ["NORMAL"]})
    result = live_performance(pd.concat([records, later], ignore_index=True), CHAMPION, CONFIG)
    assert result["specificity"] == round(50 / 51, 4) and result["sensitivity"] == 1.0
    assert result["thresholds"] == [0.2, 0.5] and result["degraded"] is None


def test_a_site_named_like_a_number_keeps_its_name_through_the_records_file(tmp_path):
    from pneumo.tasks.monitor import measure_performance

    records = pd.concat([_site_records(60, 1.0, site="01"), _site_records(20, 1.0, site=None)])
    records.to_csv(tmp_path / "current.csv", index=False)
    result = measure_performance.fn(str(tmp_path / "current.csv"), CHAMPION, CONFIG, {"01": 0.95})
    (check,) = result["sites"]
    assert check["site"] == "01" and check["target"] == 0.95 and check["meets"] is True
