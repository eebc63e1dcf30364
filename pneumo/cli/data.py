"""``pneumo data ...``: make synthetic data sets and mirror folders to the raw-data bucket."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pneumo.cli.common import fail
from pneumo.config import apply_client_env
from pneumo.storage import s3_client, sync_dir
from pneumo.synth import LAYOUTS, generate

app = typer.Typer(help="Make and upload data sets.", no_args_is_help=True)


@app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the data set into.")],
    n: Annotated[int, typer.Option(help="Number of images.", min=10)] = 400,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 0,
    size: Annotated[int, typer.Option(help="Image side in pixels.", min=32)] = 256,
    layout: Annotated[
        str, typer.Option(help="nih (CSV + images/) or folders (NORMAL/, PNEUMONIA/).")
    ] = "nih",
) -> None:
    """Write a deterministic synthetic chest X-ray set (NIH layout or class folders)."""
    if layout not in LAYOUTS:
        fail(f"--layout must be one of {', '.join(LAYOUTS)}")
    rows = generate(out, n=n, seed=seed, size=size, layout=layout)
    positives = sum("Pneumonia" in str(r["Finding Labels"]) for r in rows)
    typer.echo(f"wrote {len(rows)} images ({positives} with pneumonia) to {out}")


@app.command("push")
def data_push(
    folder: Annotated[Path, typer.Argument(help="Local data set folder.", exists=True, file_okay=False)],
    to: Annotated[
        str | None, typer.Option(help="Target s3:// URI (default s3://<raw bucket>/<folder name>).")
    ] = None,
) -> None:
    """Mirror a folder to the raw-data bucket: upload its files, remove objects no longer in it."""
    typer.echo(push_folder(folder, to))


def push_folder(folder: Path, to: str | None = None) -> str:
    """Mirror ``folder`` to S3 (objects no longer in it are removed) and return the URI."""
    settings = apply_client_env()
    uri = to or f"s3://{settings.raw_bucket}/{folder.resolve().name}"
    if not any(path.is_file() for path in folder.rglob("*")):
        fail(f"{folder} holds no files")

    def progress(done: int, total: int) -> None:
        if done % 1000 == 0 or (done == total and total >= 1000):
            typer.echo(f"{done}/{total} files uploaded", err=True)

    count, removed = sync_dir(s3_client(settings), folder, uri, progress)
    gone = f"; removed {removed} objects no longer in {folder}" if removed else ""
    typer.echo(f"uploaded {count} files to {uri}{gone}", err=True)
    return uri
