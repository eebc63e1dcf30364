"""``pneumo calibrate``: a site's own decision threshold, chosen on a labelled sample of its images.

A model's ranking travels between hospitals better than its threshold: another scanner or export
pipeline shifts the scores, and the threshold chosen at home costs many false alarms there, or
misses pneumonia. The threshold is stored on the model version as the tag ``site.<NAME>``
(:class:`pneumo.contract.SiteThreshold`); the service started with ``PNEUMO_SITE=NAME`` decides
with it, ``pneumo evaluate --site NAME`` measures with it, and the monitoring report checks it
against the confirmed diagnoses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import mlflow
import typer

from pneumo.cli.common import fail
from pneumo.config import apply_client_env, load_params
from pneumo.contract import SiteThreshold, check_site
from pneumo.datasets import DataError
from pneumo.services import http_ok


def describe(result: SiteThreshold, own: float | None) -> list[str]:
    """What the site's threshold is expected to do, for the terminal."""
    sens, spec = result.intervals["sensitivity"], result.intervals["specificity"]
    lines = [
        f"site {result.site}: threshold {result.threshold:.4f}"
        + ("" if own is None else f" (the version's own: {own:.4f})"),
        f"sample {result.data}: {result.images} images, {result.positives} pneumonia",
        f"expected sensitivity {result.sensitivity:.3f} [{sens[0]:.3f}, {sens[1]:.3f}], "
        f"specificity {result.specificity:.3f} [{spec[0]:.3f}, {spec[1]:.3f}] "
        "(95% intervals, bootstrap over patients)",
    ]
    if result.confidence is not None:
        lines.append(
            f"lower {result.confidence:.0%} confidence bound of sensitivity {result.sensitivity_bound:.3f} "
            f">= target {result.target_sensitivity}"
        )
    else:
        lines.append(
            f"target sensitivity {result.target_sensitivity} met on the sample (estimate, not a bound: "
            "--confidence 0.95 asks for the bound)"
        )
    return lines


def calibrate_cmd(
    data: Annotated[
        Path,
        typer.Option(
            help="Labelled images of the site: NIH CSV or NORMAL/ and PNEUMONIA/ folders.",
            exists=True,
            file_okay=False,
        ),
    ],
    site: Annotated[str, typer.Option(help="The site's name (letters, digits, - and _).")],
    model: Annotated[
        str | None,
        typer.Option(
            help="Registered version: models:/NAME/VERSION or models:/NAME@ALIAS (default: champion)."
        ),
    ] = None,
    target_sensitivity: Annotated[
        float | None,
        typer.Option(help="Sensitivity to reach (default: gate.target_sensitivity).", min=0.5, max=0.999),
    ] = None,
    confidence: Annotated[
        float | None,
        typer.Option(
            help="Require the lower confidence bound of sensitivity, not its estimate, to reach the target.",
            min=0.5,
            max=0.999,
        ),
    ] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.", min=10)] = 1000,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the threshold, store nothing.")] = False,
    json_file: Annotated[Path | None, typer.Option("--json", help="Also write the result here.")] = None,
) -> None:
    """Choose a site's decision threshold on its own labelled images and store it on the model version."""
    settings = apply_client_env()
    try:
        check_site(site)
    except ValueError as error:
        fail(str(error))
    if not http_ok(f"{settings.mlflow_uri}/health"):
        fail(
            f"MLflow {settings.mlflow_uri} is not reachable: run `pneumo stack up` or set MLFLOW_TRACKING_URI"
        )
    # TensorFlow (assessment) and Prefect (the registry's audit): imported only here (see pneumo.cli).
    from pneumo.assessment import calibrate_site, resolve_model
    from pneumo.tasks.registry import audit

    params = load_params()
    target = target_sensitivity or params["gate"]["target_sensitivity"]
    try:
        spec = resolve_model(model, params["registry"]["model_name"])
        if spec.version is None or spec.name is None:
            fail(f"{spec.uri} is not a registered version: give models:/NAME/VERSION or models:/NAME@ALIAS")
        result = calibrate_site(data, spec, params["data"], site, target, confidence, resamples)
    except (DataError, LookupError, ValueError) as error:  # ValueError: a sample too small, among others
        fail(str(error))
    typer.echo(f"model {spec.name} version {spec.version}")
    for line in describe(result, spec.threshold):
        typer.echo(line)
    if json_file:
        json_file.parent.mkdir(parents=True, exist_ok=True)
        json_file.write_text(
            json.dumps({"model": spec.name, "version": spec.version, **vars(result)}, indent=2)
        )
    if dry_run:
        typer.echo("dry run: nothing stored")
        return
    mlflow.MlflowClient().set_model_version_tag(spec.name, spec.version, result.tag, result.to_tag_value())
    try:
        reason = f"site {site}: threshold {result.threshold:.4f} for sensitivity {target}"
        audit(spec.name, spec.version, "calibrated", reason, **vars(result))
    except Exception as error:  # the threshold is stored: a missing audit record must not hide that
        typer.secho(f"warning: the audit record was not written: {error}", fg=typer.colors.YELLOW, err=True)
    typer.echo(
        f"stored on {spec.name} version {spec.version} as tag {result.tag}: a service started with "
        f"PNEUMO_SITE={site} decides with it (within its reload interval)"
    )
