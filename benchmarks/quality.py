"""Model quality of a training recipe on real chest X-rays: patient-level k-fold cross-validation.

Trains the profile's model (``xray`` by default) with the project's own code (context images,
online augmentation, ``pneumo.network``) once per fold, predicts the held-out patients, and reports
AUC, sensitivity and specificity per fold and pooled. The decision threshold of fold k is chosen,
for sensitivity ``gate.target_sensitivity``, on the out-of-fold predictions of the *other* folds,
never on fold k itself. The held-out images are also scored after degradations a clinic's images
show (squashed to 224x224 and saved as JPEG quality 75, gamma and contrast shifts, lower
resolution) and after square cropping, at the same threshold. Numbers only, no assertions; the
targets are printed next to them.

The out-of-fold threshold is the policy the training flow applies with ``gate.threshold_folds``
(the ``xray`` profile: tasks/threshold.py), measured here on unseen patients. The column
"sens @ spec 0.90" reads the operating point off each held-out fold's ROC, so it is optimistic.

    python benchmarks/quality.py --data ../shared/data/cxr-dev            # all 5 folds
    python benchmarks/quality.py --data DIR --fold 0 --set train.epochs=5  # a quick look

Per-fold predictions are saved in ``--out`` as they finish, so an interrupted run resumes where it
stopped (same data, profile and overrides).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads (pneumo.network)

import numpy as np
import pandas as pd
import typer
from PIL import Image, ImageEnhance
from sklearn.metrics import roc_auc_score, roc_curve

from pneumo.augment import context, context_side
from pneumo.config import load_params, parse_overrides, state_dir
from pneumo.datasets import read_labelled
from pneumo.images import decode, prepare, square
from pneumo.metrics import binary_metrics, bootstrap_intervals, choose_threshold
from pneumo.network import fit_on_contexts, patient_folds, predict

app = typer.Typer(add_completion=False)
TARGETS = {"auc": 0.98, "sensitivity": 0.95, "specificity": 0.90, "max_auc_drop": 0.02}


def _gamma(image: Any, gamma: float) -> Any:
    return image.point(lambda v: round(255 * (v / 255) ** gamma))


def _contrast(image: Any, factor: float) -> Any:
    return ImageEnhance.Contrast(image).enhance(factor)


def _squash_jpeg(image: Any) -> Any:
    buffer = io.BytesIO()
    image.resize((224, 224), Image.BILINEAR).convert("RGB").save(buffer, "JPEG", quality=75)
    return Image.open(io.BytesIO(buffer.getvalue()))


def _low_resolution(image: Any, short_side: int = 112) -> Any:
    scale = short_side / min(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)


def _square_crop(image: Any) -> Any:
    return square(image, "crop")


CONDITIONS = {
    "original": lambda image: image,
    "square_cropped": _square_crop,
    "squashed_jpeg75": _squash_jpeg,
    "gamma_0.67": lambda image: _gamma(image, 0.67),
    "gamma_1.5": lambda image: _gamma(image, 1.5),
    "contrast_0.7": lambda image: _contrast(image, 0.7),
    "contrast_1.3": lambda image: _contrast(image, 1.3),
    "low_res_112px": _low_resolution,
}


def fold_predictions(model: Any, originals: list[Any], rows: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Probabilities of the held-out rows under every condition."""
    size, square = params["data"]["image_size"], params["data"]["square"]
    return {
        name: predict(model, np.stack([prepare(change(originals[i]), size, square) for i in rows]))
        for name, change in CONDITIONS.items()
    }


def summarise(table: Any, folds: int, target_sensitivity: float) -> dict[str, Any]:
    """Per-fold and pooled metrics per condition, thresholds chosen out of fold."""

    results: dict[str, Any] = {"thresholds": {}, "conditions": {}}
    for k in range(folds):
        others = table[table["fold"] != k]
        results["thresholds"][k] = choose_threshold(
            others["label"].to_numpy(), others["original"].to_numpy(), target_sensitivity
        )
    for name in CONDITIONS:
        per_fold = []
        for k in range(folds):
            rows = table[table["fold"] == k]
            y, p = rows["label"].to_numpy(), rows[name].to_numpy()
            metrics = binary_metrics(y, p, results["thresholds"][k])
            fpr, tpr, _ = roc_curve(y, p)
            metrics["sensitivity_at_spec_0.90"] = float(tpr[fpr <= 0.10].max())
            per_fold.append(metrics)
        pooled_threshold = table["fold"].map(results["thresholds"]).to_numpy()
        y, p = table["label"].to_numpy(), table[name].to_numpy()
        decided = (p >= pooled_threshold).astype(float)  # each image at its own fold's threshold
        pooled = binary_metrics(y, decided, 0.5)
        pooled["auc"] = binary_metrics(y, p, 0.5)["auc"]
        intervals = bootstrap_intervals(y, decided, 0.5, table["patient_id"].to_numpy())
        intervals["auc"] = bootstrap_intervals(y, p, 0.5, table["patient_id"].to_numpy())["auc"]
        summary = {}
        for metric in ("auc", "sensitivity", "specificity", "sensitivity_at_spec_0.90", "accuracy"):
            values = np.array([m[metric] for m in per_fold])
            summary[metric] = {"mean": float(values.mean()), "std": float(values.std()),
                               "folds": [round(float(v), 4) for v in values]}  # fmt: skip
        summary["pooled"] = {m: pooled[m] for m in ("auc", "sensitivity", "specificity", "precision", "f1")}
        summary["pooled_intervals"] = {m: intervals[m] for m in ("auc", "sensitivity", "specificity")}
        results["conditions"][name] = summary
    base = np.array(results["conditions"]["original"]["auc"]["folds"])
    for summary in results["conditions"].values():
        summary["auc_drop"] = float((base - np.array(summary["auc"]["folds"])).mean())
    return results


def geometry_baseline(originals: list[Any], y: Any) -> dict[str, float]:
    """AUC of image width and aspect ratio alone: the shortcut the preprocessing must not use."""
    width = np.array([image.width for image in originals], float)
    aspect = np.array([image.width / image.height for image in originals])
    auc = {name: roc_auc_score(y, values) for name, values in (("width", width), ("aspect", aspect))}
    return {name: max(value, 1 - value) for name, value in auc.items()}


def print_report(results: dict[str, Any], seconds: list[float]) -> None:
    """The results as a markdown table, then each target and whether it is met."""
    print("\n| condition | AUC mean ± sd | AUC drop | sens | spec | sens @ spec 0.90 | pooled AUC [95% CI] |")
    print("|---|---|---|---|---|---|---|")
    for name, s in results["conditions"].items():
        low, high = s["pooled_intervals"]["auc"]
        auc, sens, spec = s["auc"], s["sensitivity"], s["specificity"]
        print(
            f"| {name} | {auc['mean']:.4f} ± {auc['std']:.4f} | {s['auc_drop']:+.4f} | "
            f"{sens['mean']:.3f} ± {sens['std']:.3f} | {spec['mean']:.3f} ± {spec['std']:.3f} | "
            f"{s['sensitivity_at_spec_0.90']['mean']:.3f} | "
            f"{s['pooled']['auc']:.4f} [{low:.4f}, {high:.4f}] |"
        )
    original = {metric: value["mean"] for metric, value in results["conditions"]["original"].items()
                if isinstance(value, dict) and "mean" in value}  # fmt: skip
    worst = max(s["auc_drop"] for s in results["conditions"].values())
    checks = [
        (f"AUC >= {TARGETS['auc']}", original["auc"] >= TARGETS["auc"]),
        (f"sensitivity >= {TARGETS['sensitivity']} at the out-of-fold threshold",
         original["sensitivity"] >= TARGETS["sensitivity"]),
        (f"specificity >= {TARGETS['specificity']} at that threshold",
         original["specificity"] >= TARGETS["specificity"]),
        (f"sensitivity >= {TARGETS['sensitivity']} at specificity 0.90 on each fold's ROC (optimistic: "
         "the operating point is read off the held-out fold itself)",
         original["sensitivity_at_spec_0.90"] >= TARGETS["sensitivity"]),
        (f"AUC drop <= {TARGETS['max_auc_drop']} on every condition (worst {worst:+.4f})",
         worst <= TARGETS["max_auc_drop"]),
        (f"one fold trains in < 10 min (slowest {max(seconds) / 60:.1f} min)", max(seconds) < 600),
    ]  # fmt: skip
    print()
    for check, met in checks:
        print(f"{'met   ' if met else 'MISSED'}  {check}")


@app.command()
def main(
    data: Annotated[Path, typer.Option(help="Labelled folder (class folders or NIH CSV).", exists=True)],
    profile: Annotated[str, typer.Option(help="Profile of params.yaml.")] = "xray",
    folds: Annotated[int, typer.Option(help="Cross-validation folds (by patient).", min=2)] = 5,
    fold: Annotated[list[int] | None, typer.Option(help="Run only these folds (AUC only).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override: section.key=value.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for predictions and results.json.")] = None,
) -> None:
    """Cross-validate a recipe on a labelled folder and print its quality and robustness."""
    overrides = parse_overrides(set_ or [])
    params = load_params(profile, overrides)
    table = read_labelled(data, params["data"]["positive_label"], params["data"]["negative_label"])
    originals = [decode(Path(path).read_bytes()) for path in table["path"]]
    y = table["label"].to_numpy()
    key = json.dumps([str(data.resolve()), len(table), params, folds], sort_keys=True)
    out = (
        out
        or state_dir() / "benchmarks" / f"quality-{profile}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    )
    out.mkdir(parents=True, exist_ok=True)
    print(f"{len(table)} images ({int(y.sum())} pneumonia, {table['patient_id'].nunique()} patients), "
          f"profile {profile}, {folds} folds by patient; results in {out}")  # fmt: skip
    splits = patient_folds(y, table["patient_id"].to_numpy(), folds, params["data"]["seed"])
    augment = params["data"]["augment"]
    side = context_side(params["data"]["image_size"], augment)
    contexts = [context(original, side, augment["squeeze"]) for original in originals]
    seconds = []
    for k in fold if fold is not None else range(folds):
        path = out / f"fold{k}.csv"
        if path.exists():
            print(f"fold {k}: reusing {path.name}")
            seconds.append(json.loads((out / f"fold{k}.json").read_text())["seconds"])
            continue
        train_rows, test_rows = splits[k]
        print(f"fold {k}: training on {len(train_rows)} images, holding out {len(test_rows)}", flush=True)
        started = time.monotonic()
        fold_contexts = [contexts[i] for i in train_rows]
        model = fit_on_contexts(fold_contexts, y[train_rows], params, params["train"]["seed"] + k)
        seconds.append(time.monotonic() - started)
        predictions = fold_predictions(model, originals, test_rows, params)
        rows = table.iloc[test_rows][["path", "patient_id", "label"]].assign(fold=k, **predictions)
        rows.to_csv(path, index=False)
        (out / f"fold{k}.json").write_text(json.dumps({"seconds": seconds[-1]}))
        auc = roc_auc_score(rows["label"], rows["original"])
        print(f"fold {k}: AUC {auc:.4f}, trained in {seconds[-1] / 60:.1f} min", flush=True)

    done = sorted(int(p.stem.removeprefix("fold")) for p in out.glob("fold*.csv"))
    predictions = pd.concat([pd.read_csv(out / f"fold{k}.csv") for k in done])
    print(f"geometry alone (uncropped originals): AUC {json.dumps(geometry_baseline(originals, y))}")
    if len(done) < folds:
        for k in done:
            rows = predictions[predictions["fold"] == k]
            print(
                f"fold {k}: "
                + ", ".join(f"{c} AUC {roc_auc_score(rows['label'], rows[c]):.4f}" for c in CONDITIONS)
            )
        print(f"{len(done)} of {folds} folds done: out-of-fold thresholds need them all")
        return
    results = summarise(predictions, folds, params["gate"]["target_sensitivity"])
    results.update(profile=profile, overrides=overrides, images=len(table), fold_seconds=seconds,
                   geometry_baseline=geometry_baseline(originals, y))  # fmt: skip
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    predictions.to_csv(out / "oof_predictions.csv", index=False)
    print_report(results, seconds)
    print(f"\nresults: {out / 'results.json'}")


if __name__ == "__main__":
    app()
