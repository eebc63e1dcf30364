"""``pneumo stage ...``: the training flow's steps as DVC stages (see dvc.yaml).

They call the flow file's own functions (:func:`pneumo.flows.training_flow.train_and_evaluate`,
:func:`~pneumo.flows.training_flow.gate_and_promote`) and tasks, so the step order is written once,
and they write to fixed paths that DVC tracks: ``data/raw/pipeline``, ``data/processed/pipeline``,
``models/pipeline`` and ``reports/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import mlflow
import typer
import yaml

from pneumo.config import DEMO_PROFILE, PARAMS_FILE, apply_client_env, load_params, parse_overrides, workdir
from pneumo.contract import Recipe
from pneumo.processed import build_processed

app = typer.Typer(help="The training flow's steps, one per DVC stage (used by `dvc repro`).")
Profile = Annotated[str, typer.Option(help="Profile of params.yaml.")]
Overrides = Annotated[
    list[str] | None, typer.Option("--set", help="Override a parameter: section.key=value.")
]
# Prefect and TensorFlow (flows, tasks): imported inside the stages, once the clients point at the
# stack (see pneumo.cli).


def _paths() -> dict[str, Path]:
    root = workdir()
    return {
        "raw": root / "data" / "raw" / "pipeline",
        "processed": root / "data" / "processed" / "pipeline",
        "model": root / "models" / "pipeline",
        "reports": root / "reports",
    }


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


@app.command("ingest")
def ingest_stage(source: Annotated[str, typer.Option(help="s3:// URI of the data set.")]) -> None:
    """Download the data set from S3 into data/raw/pipeline."""
    apply_client_env()
    from pneumo.tasks.ingest import ingest

    ingest.fn(source, str(_paths()["raw"]))


@app.command("preprocess")
def preprocess_stage(profile: Profile = DEMO_PROFILE, set_: Overrides = None) -> None:
    """Split, resize and balance data/raw/pipeline into data/processed/pipeline."""
    apply_client_env()
    paths = _paths()
    build_processed(
        str(paths["raw"]),
        load_params(profile, parse_overrides(set_ or [])),
        "dvc-pipeline",
        str(paths["processed"]),
    )


@app.command("train")
def train_stage(profile: Profile = DEMO_PROFILE, set_: Overrides = None) -> None:
    """Train and evaluate; the model goes to MLflow and models/pipeline, metrics to reports/."""
    apply_client_env()
    from pneumo.flows.training_flow import train_and_evaluate

    paths, params = _paths(), load_params(profile, parse_overrides(set_ or []))
    run, results = train_and_evaluate(str(paths["processed"]), params, "dvc-pipeline", "dvc repro")
    paths["model"].mkdir(parents=True, exist_ok=True)
    mlflow.artifacts.download_artifacts(run["model_uri"], dst_path=str(paths["model"]))
    _write_json(paths["reports"] / "train.json", run)
    _write_json(paths["reports"] / "metrics.json", results)


def _pipeline_data() -> dict[str, str]:
    """The DVC version of ``data/raw/pipeline`` as dvc.lock recorded it when the ingest stage ran."""
    lock = workdir() / "dvc.lock"
    stages = yaml.safe_load(lock.read_text())["stages"] if lock.exists() else {}
    for out in stages.get("ingest", {}).get("outs", []):
        if out["path"] == "data/raw/pipeline":
            return {"data_version": out["md5"], "data_path": out["path"]}
    return {"data_version": "unversioned", "data_path": "data/raw/pipeline"}


@app.command("promote")
def promote_stage(profile: Profile = DEMO_PROFILE, set_: Overrides = None) -> None:
    """Register the trained model and promote it through the gate."""
    apply_client_env()
    from pneumo.flows.training_flow import gate_and_promote
    from pneumo.orchestration import training_slot

    paths, params = _paths(), load_params(profile, parse_overrides(set_ or []))
    run = json.loads((paths["reports"] / "train.json").read_text())
    results = json.loads((paths["reports"] / "metrics.json").read_text())
    source = yaml.safe_load(PARAMS_FILE.read_text())["dvc"]["source"]
    recipe = Recipe(source, profile, parse_overrides(set_ or []), "operator")
    with training_slot(params["registry"]["model_name"]):
        summary = gate_and_promote(str(paths["processed"]), run, results, params, _pipeline_data(), recipe)
    _write_json(paths["reports"] / "promotion.json", summary)
    typer.echo(json.dumps(summary, default=str))
