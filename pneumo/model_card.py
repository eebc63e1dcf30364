"""The model card of a registered version: what it is for, what it was trained on, how well it does.

Logged as :data:`pneumo.contract.CARD_ARTIFACT` to the version's run and set as the version's
description, so it is on the version's page in the MLflow UI.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pneumo.degrade import DEGRADED
from pneumo.metrics import REPORTED

INTENDED_USE = """\
Triage support: the model flags frontal chest X-rays that probably show pneumonia, so that a
clinician reads them sooner. It does not diagnose, and it must not rule pneumonia out: a
radiologist reads every image. It answers "pneumonia" or "no finding" only; other findings
(effusion, nodules, tubes, fractures...) are outside what it was trained on."""

LIMITS = """\
- It was trained on the data named above only. On images from another hospital, scanner,
  population or age group, measure it first: `pneumo evaluate --data DIR --model {uri}`.
- Trained without pretrained weights unless `train.weights` says otherwise (the offline default).
- The public real-X-ray recipe (profile `xray`) was measured on paediatric images (ages 1-5) of
  one hospital (Kermany et al., 2018); adults were not measured. See MODEL_CARD.md in the
  repository for its cross-validated numbers and robustness checks.
- Synthetic data (the demo) proves the pipeline, not the model: never use a model trained on it
  for patients."""


def calibration_line(results: dict[str, Any], chosen_on: str) -> str:
    """How the score becomes the probability the service reports (``calibrated_probability``)."""
    if "calibration_a" not in results:
        return ""
    return (
        "\nThe service also reports a calibrated probability: Platt scaling, "
        f"sigmoid({results['calibration_a']:.3f} * logit(score) + {results['calibration_b']:.3f}), fitted on "
        f"{chosen_on}. It does not change any decision; it makes the number mean what it says.\n"
    )


def new_site_section(results: dict[str, Any], gate: dict[str, Any]) -> str:
    """How far the operating point moves: the threshold across folds, and the test split's degraded
    copies (stand-ins for another site's pipeline) decided at the stored threshold."""
    lines = ["## At another site", ""]
    if "threshold_fold_sd" in results:
        lines += [
            f"The threshold each of the {gate['threshold_folds']} folds would choose on its own ranges "
            f"{results['threshold_fold_min']:.4f} - {results['threshold_fold_max']:.4f} "
            f"(sd {results['threshold_fold_sd']:.4f}).",
            "",
        ]
    if "threshold_ci_low" in results:
        lines += [
            "Chosen on other patients of the validation split, the threshold would lie in "
            f"{results['threshold_ci_low']:.4f} - {results['threshold_ci_high']:.4f} (95% patient bootstrap, "
            f"sd {results['threshold_sd']:.4f}); at those two ends the test split's sensitivity is "
            f"{results['test_sensitivity_at_threshold_ci_high']:.3f} - "
            f"{results['test_sensitivity_at_threshold_ci_low']:.3f} and its specificity "
            f"{results['test_specificity_at_threshold_ci_low']:.3f} - "
            f"{results['test_specificity_at_threshold_ci_high']:.3f}.",
            "",
        ]
    degraded = [name for name in DEGRADED if f"degraded_{name}_auc" in results]
    if degraded:
        lines += ["The test split altered as another hospital's pipeline might alter it, decided at the "
                  f"threshold {results['threshold']:.4f}:", "",
                  "| test images | AUC | sensitivity | specificity |", "|---|---|---|---|",
                  f"| as received | {results['test_auc']:.3f} | {results['test_sensitivity']:.3f} | "
                  f"{results['test_specificity']:.3f} |"]  # fmt: skip
        for name in degraded:
            cells = [f"{results[f'degraded_{name}_{m}']:.3f}" for m in ("auc", "sensitivity", "specificity")]
            lines.append(f"| {name} | {' | '.join(cells)} |")
        lines.append("")
    lines += [
        "A ranking travels between sites better than a threshold does. Before clinical use at a new site, "
        "choose the site's own threshold on a labelled sample of its images: `pneumo calibrate --site NAME "
        "--data DIR` (add `--confidence 0.95` to require the lower bound of sensitivity, not its estimate, "
        "to meet the target), then start the service with `PNEUMO_SITE=NAME`.",
        "",
    ]
    return "\n".join(lines)


def serving_line(results: dict[str, Any], export: dict[str, Any]) -> str:
    """Which graph the service runs, and the int8 check behind that (:mod:`pneumo.quantize`)."""
    if "int8_agreement" not in results:
        return "The service runs the float ONNX graph (no int8 graph was exported).\n"
    verdict = ("so the service runs the int8 graph" if results.get("int8_served")
               else "so the service runs the float ONNX graph")  # fmt: skip
    return (
        f"The int8 graph decided as the float model on {results['int8_agreement']:.1%} of the test images "
        f"and their degraded copies (largest probability difference "
        f"{results['int8_max_abs_difference']:.3f}; "
        f"at least {export['min_agreement']:.0%} required), with test AUC {results['int8_test_auc']:.3f}, "
        f"sensitivity {results['int8_test_sensitivity']:.3f} and specificity "
        f"{results['int8_test_specificity']:.3f} at the threshold, {verdict}.\n"
    )


def render_card(name: str, version: str, results: dict[str, Any], params: dict[str, Any],
                summary: dict[str, Any], provenance: dict[str, str]) -> str:  # fmt: skip
    """The markdown model card of one version.

    Args:
        name: registered model name.
        version: its version.
        results: the evaluate task's ``threshold`` and ``test_*`` metrics with ``_ci_low``/``_ci_high``.
        params: the parameters it was trained with.
        summary: the processed data's ``summary.json``.
        provenance: ``run_id``, ``data_version``, ``data_source`` and ``git_commit``.
    """
    data, train, gate = params["data"], params["train"], params["gate"]
    if gate["threshold_folds"]:
        chosen_on = (
            f"the out-of-fold predictions of {gate['threshold_folds']} models trained with the same recipe "
            f"on folds of the training patients (out-of-fold AUC {results['oof_auc']:.3f})"
        )
    else:
        chosen_on = "the validation split"
    splits = summary["splits"]
    rows = "\n".join(
        f"| {metric} | {results[f'test_{metric}']:.3f} | "
        f"{results[f'test_{metric}_ci_low']:.3f} - {results[f'test_{metric}_ci_high']:.3f} |"
        for metric in REPORTED
    )
    uri = f"models:/{name}/{version}"
    return f"""# Model card: {name} version {version}

Created {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")} by the `training` flow
(profile `{params["profile"]}`, run `{provenance["run_id"]}`, code `{provenance["git_commit"][:12]}`).

## Intended use
{INTENDED_USE}

## Model
{train["backbone"]} (weights: {train["weights"]}) with a dense head, input
{data["image_size"]}x{data["image_size"]} grayscale, images made square by `{data["square"]}` first;
Adam, binary cross-entropy, {train["epochs"]} epochs at most,
learning rate {train["learning_rate"]} ({train["lr_schedule"]}).

## Data
- Source `{provenance["data_source"]}`, data version (DVC) `{provenance["data_version"]}`.
- Positive: "{data["positive_label"]}"; negative: "{data["negative_label"]}" only.
- Split by patient: train {splits["train"]["images"]} images (balanced copies included when made
  offline), validation {splits["val"]["images"]},
  test {splits["test"]["images"]} ({splits["test"]["positives"]} positive).
- Unreadable images skipped: {summary["unreadable"]}.

## Metrics (test split, at the threshold below)
95% intervals: bootstrap over patients, 1000 resamples.

| metric | value | 95% interval |
|---|---|---|
{rows}

## Threshold policy
The decision threshold {results["threshold"]:.4f} is the highest one that reaches sensitivity
{gate["target_sensitivity"]} on {chosen_on}: missing pneumonia costs more than a second look.
The version is promoted only if its test AUC >= {gate["min_test_auc"]}, sensitivity >=
{gate["min_test_sensitivity"]} and specificity >= {gate["min_test_specificity"]}, and it is not
worse than the champion beyond tolerance on the same test split.

{calibration_line(results, chosen_on)}
{new_site_section(results, gate)}
## Serving
{serving_line(results, params["export"])}
## Known limits
{LIMITS.format(uri=uri)}
"""
