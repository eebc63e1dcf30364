"""Evidently drift report of production features against a model version's training reference."""

from __future__ import annotations

from typing import Any

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

from pneumo.monitoring.features import EMBEDDING_COLUMNS, FEATURE_COLUMNS, IMAGE_COLUMNS, PREDICTION_COLUMN


def drift_report(
    reference: pd.DataFrame, current: pd.DataFrame, drift_threshold: float = 0.5
) -> tuple[Any, dict[str, Any]]:
    """Run the report on the feature columns both tables have.

    ``drift_threshold`` is the share of drifted features the project decides at
    (``monitoring.drift_threshold``): Evidently's own dataset-drift verdict uses it too, so the
    report shows one threshold, not two.

    Returns:
        The Evidently snapshot (``save_html``) and a summary: overall drift share, drifted columns,
        and the share per group (image statistics, prediction, embedding).
    """
    columns = [c for c in FEATURE_COLUMNS if c in reference and c in current and current[c].notna().any()]
    definition = DataDefinition(numerical_columns=columns)
    snapshot = Report([DataDriftPreset(columns=columns, drift_share=drift_threshold)]).run(
        reference_data=Dataset.from_pandas(reference[columns].astype(float), data_definition=definition),
        current_data=Dataset.from_pandas(current[columns].astype(float), data_definition=definition),
    )
    per_column = _column_results(snapshot.dict())
    drifted = [c for c in columns if per_column.get(c, {}).get("drifted")]

    def share(group: tuple[str, ...]) -> float | None:
        present = [c for c in group if c in columns]
        return round(sum(c in drifted for c in present) / len(present), 4) if present else None

    summary = {
        "drift_share": round(len(drifted) / len(columns), 4) if columns else 0.0,
        "drifted_columns": drifted,
        "image_drift_share": share(IMAGE_COLUMNS),
        "prediction_drift": PREDICTION_COLUMN in drifted,
        "embedding_drift_share": share(EMBEDDING_COLUMNS),
        "columns": per_column,
        "reference_rows": len(reference),
        "current_rows": len(current),
    }
    return snapshot, summary


def _column_results(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-column test, score and verdict from the report's ``ValueDrift`` metrics."""
    results = {}
    for metric in report["metrics"]:
        config = metric["config"]
        if not config.get("type", "").endswith("ValueDrift"):
            continue
        score, threshold, method = float(metric["value"]), float(config["threshold"]), config["method"]
        is_p_value = "p_value" in method
        results[config["column"]] = {
            "method": method,
            "score": round(score, 6),
            "threshold": threshold,
            "drifted": score < threshold if is_p_value else score >= threshold,
        }
    return results
