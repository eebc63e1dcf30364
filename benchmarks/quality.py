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
import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads (pneumo.network)

import keras
import numpy as np
import pandas as pd
import typer
from quality_report import (  # the sibling module: benchmarks run as scripts
    ensemble_comparison,
    platt_check,
    print_operating_points,
    print_report,
    site_calibration,
    site_checks,
    summarise,
)
from sklearn.metrics import roc_auc_score

from pneumo.augment import context, context_side
from pneumo.config import load_params, parse_overrides, state_dir
from pneumo.datasets import read_labelled
from pneumo.degrade import CONDITIONS
from pneumo.images import decode, prepare, to_grayscale8
from pneumo.network import fit_on_contexts, patient_folds, predict

app = typer.Typer(add_completion=False)


def fold_predictions(model: Any, originals: list[Any], rows: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Probabilities of the held-out rows under every condition."""
    size, square = params["data"]["image_size"], params["data"]["square"]
    return {
        name: predict(model, np.stack([prepare(change(originals[i]), size, square) for i in rows]))
        for name, change in CONDITIONS.items()
    }


def train_inner_models(
    k: int,
    ensemble: int,
    out: Path,
    splits: list,
    contexts: list,
    originals: list,
    table: Any,
    params: dict[str, Any],
) -> None:
    """The training flow's fold models inside outer fold ``k``: out-of-fold scores of its training
    patients (the threshold policy) and every fold model's scores of the held-out patients.

    Saves ``fold{k}-inner{i}of{K}.npz`` per fold model (resumable) and then
    ``fold{k}-ensemble{K}.csv``: the held-out rows with the fold models' mean under every condition.
    """
    y, patients = table["label"].to_numpy(), table["patient_id"].to_numpy()
    size, square = params["data"]["image_size"], params["data"]["square"]
    train_rows, test_rows = splits[k]
    inner = patient_folds(y[train_rows], patients[train_rows], ensemble, params["data"]["seed"])
    for i, (fit, held) in enumerate(inner):
        path = out / f"fold{k}-inner{i}of{ensemble}.npz"
        if path.exists():
            continue
        started = time.monotonic()
        fit_rows, held_rows = train_rows[fit], train_rows[held]
        model = fit_on_contexts(
            [contexts[j] for j in fit_rows], y[fit_rows], params, params["train"]["seed"] + i
        )
        oof = predict(model, np.stack([prepare(originals[j], size, square) for j in held_rows]))
        conditions = fold_predictions(model, originals, test_rows, params)
        np.savez(path, held_rows=held_rows, oof=oof, seconds=time.monotonic() - started, **conditions)
        keras.backend.clear_session()
        print(f"fold {k}: fold model {i + 1}/{ensemble} done in {(time.monotonic() - started) / 60:.1f} min",
              flush=True)  # fmt: skip
    saved = [np.load(out / f"fold{k}-inner{i}of{ensemble}.npz") for i in range(ensemble)]
    oof = pd.DataFrame({"row": np.concatenate([s["held_rows"] for s in saved]),
                        "model": np.concatenate([np.full(len(s["oof"]), i) for i, s in enumerate(saved)]),
                        "oof": np.concatenate([s["oof"] for s in saved])})  # fmt: skip
    oof.to_csv(out / f"fold{k}-oof{ensemble}.csv", index=False)
    rows = table.iloc[test_rows][["path", "patient_id", "label"]].assign(fold=k)
    for name in CONDITIONS:
        rows[name] = np.mean([s[name] for s in saved], axis=0)
    for i, s in enumerate(saved):
        rows[f"original_m{i}"] = s["original"]
    rows.to_csv(out / f"fold{k}-ensemble{ensemble}.csv", index=False)


def geometry_baseline(originals: list[Any], y: Any) -> dict[str, float]:
    """AUC of image width and aspect ratio alone: the shortcut the preprocessing must not use."""
    width = np.array([image.width for image in originals], float)
    aspect = np.array([image.width / image.height for image in originals])
    auc = {name: roc_auc_score(y, values) for name, values in (("width", width), ("aspect", aspect))}
    return {name: max(value, 1 - value) for name, value in auc.items()}


@app.command()
def main(
    data: Annotated[Path, typer.Option(help="Labelled folder (class folders or NIH CSV).", exists=True)],
    profile: Annotated[str, typer.Option(help="Profile of params.yaml.")] = "xray",
    folds: Annotated[int, typer.Option(help="Cross-validation folds (by patient).", min=2)] = 5,
    fold: Annotated[list[int] | None, typer.Option(help="Run only these folds (AUC only).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override: section.key=value.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for predictions and results.json.")] = None,
    ensemble: Annotated[
        int,
        typer.Option(
            help="Also train the flow's K threshold-fold models in each outer fold and "
            "measure their averaged ensemble (0: no).",
            min=0,
        ),
    ] = 0,
) -> None:
    """Cross-validate a recipe on a labelled folder and print its quality and robustness."""
    overrides = parse_overrides(set_ or [])
    params = load_params(profile, overrides)
    table = read_labelled(data, params["data"]["positive_label"], params["data"]["negative_label"])
    originals = [to_grayscale8(decode(Path(path).read_bytes())) for path in table["path"]]
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
    contexts = [
        context(original, side, augment["squeeze"], params["data"]["square"]) for original in originals
    ]
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

    if ensemble:
        for k in fold if fold is not None else range(folds):
            if not (out / f"fold{k}-ensemble{ensemble}.csv").exists():
                print(f"fold {k}: training {ensemble} fold models on its training patients", flush=True)
                train_inner_models(k, ensemble, out, splits, contexts, originals, table, params)

    done = sorted(int(p.stem[4:]) for p in out.glob("fold*.csv") if p.stem[4:].isdigit())
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
    target = params["gate"]["target_sensitivity"]
    results = summarise(predictions, folds, target)
    results["site_calibration"] = site_calibration(predictions, target)
    results["platt"] = platt_check(predictions, folds)
    fold_models = ensemble or params["gate"]["threshold_folds"] or 5
    results["ensemble"] = ensemble_comparison(out, table, predictions, fold_models, target)
    results.update(profile=profile, overrides=overrides, images=len(table), fold_seconds=seconds,
                   geometry_baseline=geometry_baseline(originals, y))  # fmt: skip
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    predictions.to_csv(out / "oof_predictions.csv", index=False)
    print_report(results, seconds)
    print_operating_points(results, target)
    print()
    for check, met in site_checks(results):
        print(f"{'met   ' if met else 'MISSED'}  {check}")
    print(f"\nresults: {out / 'results.json'}")


if __name__ == "__main__":
    app()
