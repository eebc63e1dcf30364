"""``pneumo predict``: batch predictions over files or folders, for audits (:mod:`pneumo.batch`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pneumo.batch import files_to_predict, load_batch_model, predict_files
from pneumo.cli.common import fail
from pneumo.config import apply_client_env, load_params
from pneumo.contract import check_site
from pneumo.services import http_ok


def predict_cmd(
    inputs: Annotated[
        list[Path], typer.Argument(help="Image files (PNG, JPEG, DICOM) and/or folders of them.")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Write the CSV here (default: to standard output).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="models:/NAME@ALIAS or models:/NAME/VERSION (default: the champion).")
    ] = None,
    site: Annotated[
        str | None, typer.Option(help="Decide at this site's threshold (pneumo calibrate).")
    ] = None,
) -> None:
    """Predict every image as the service would: one CSV row per file, with the reason for any file
    the service would refuse. Exits 1 when no file could be predicted."""
    settings = apply_client_env()
    if not http_ok(f"{settings.mlflow_uri}/health"):
        fail(f"the registry at {settings.mlflow_uri} is not answering: run `pneumo stack up` first")
    if site is not None:
        try:
            check_site(site)
        except ValueError as error:
            fail(str(error))
    try:
        paths = files_to_predict(inputs)
        batch_model = load_batch_model(model, load_params()["registry"]["model_name"], site)
    except (FileNotFoundError, LookupError, ValueError) as error:
        fail(str(error))
    if not paths:
        fail("no image files (.png, .jpg, .jpeg, .dcm) found in the folders given")
    log = lambda message: print(message, file=sys.stderr)  # noqa: E731  (progress never mixes with the CSV)
    whose = f"site {batch_model.site}" if batch_model.site else "the version's own"
    log(f"predicting {len(paths)} files with {batch_model.name} v{batch_model.version} "
        f"at threshold {batch_model.threshold:.4f} ({whose})")  # fmt: skip
    table = predict_files(paths, batch_model, log)
    refused = int(table["error"].notna().sum())
    if out is None:
        table.to_csv(sys.stdout, index=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False)
    counts = table["label"].value_counts().to_dict()
    written = f"; written to {out}" if out else ""
    log(f"{len(table) - refused} predicted ({counts.get('PNEUMONIA', 0)} PNEUMONIA, "
        f"{counts.get('NORMAL', 0)} NORMAL), {refused} refused{written}")  # fmt: skip
    if refused == len(table):
        raise typer.Exit(1)
