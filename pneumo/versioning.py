"""Data versions: DVC on the S3 remote. A raw snapshot is added and pushed once; any version recorded
with a model can be pulled back (:func:`restore_data`), which is how the gate rebuilds a champion's
test split.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from pneumo.config import RAW_DATA, Settings, workdir

DVC = str(Path(sys.executable).parent / "dvc")


class DvcError(RuntimeError):
    """A DVC command failed; the message carries DVC's own output."""


def dvc(*args: str, cwd: Path) -> str:
    """Run a DVC command (waiting for DVC's lock); its own message is in the error if it fails."""
    result = subprocess.run([DVC, "--wait-for-lock", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        output = (result.stderr + result.stdout).strip() or f"exit code {result.returncode}, no output"
        raise DvcError(f"dvc {' '.join(args)} failed in {cwd}: {output[-2000:]}")
    return result.stdout


def ensure_dvc_repo(root: Path, settings: Settings) -> None:
    """Make ``root`` a DVC project whose default remote is the DVC bucket on our S3."""
    if not (root / ".dvc").is_dir():
        dvc("init", *([] if (root / ".git").exists() else ["--no-scm"]), cwd=root)
    url = f"s3://{settings.dvc_bucket}/store"
    dvc("remote", "add", "--local", "--force", "--default", "storage", url, cwd=root)
    dvc("remote", "modify", "--local", "storage", "endpointurl", settings.s3_endpoint, cwd=root)


def _pointer(folder: Path) -> dict | None:
    path = folder.with_name(f"{folder.name}.dvc")
    return yaml.safe_load(path.read_text())["outs"][0] if path.exists() else None


def version_folder(raw_dir: str) -> str:
    """``dvc add`` the raw folder (once: snapshots never change) and ``dvc push`` it.

    Returns:
        Its DVC version (the directory md5).
    """
    root, folder = workdir(), Path(raw_dir)
    ensure_dvc_repo(root, Settings.from_env())
    relative = folder.relative_to(root).as_posix()
    pointer = _pointer(folder)
    if pointer is None:
        dvc("add", relative, cwd=root)
        pointer = _pointer(folder)
    dvc("push", f"{relative}.dvc", cwd=root)
    print(f"data version {pointer['md5']} ({pointer.get('nfiles', '?')} files) pushed to the DVC remote")
    return pointer["md5"]


def restore_data(data_version: str, data_path: str) -> str:
    """The raw folder of a recorded data version, pulled from the DVC remote if it is not here.

    Args:
        data_version: the DVC directory md5 recorded with a model version.
        data_path: the folder it was ingested into, relative to the workdir (``data/raw/...``).

    Returns:
        The local folder, complete.

    Raises:
        DvcError: the remote does not hold that version (or cannot be reached).
    """
    root = workdir()
    folder = root / data_path
    pointer = _pointer(folder)
    if pointer is not None and pointer["md5"] == data_version and (folder / "manifest.csv").exists():
        return str(folder)
    ensure_dvc_repo(root, Settings.from_env())
    if pointer is None or pointer["md5"] != data_version:
        folder = root / RAW_DATA / f"restored-{data_version.removesuffix('.dir')}"
        outs = {"outs": [{"md5": data_version, "hash": "md5", "path": folder.name}]}
        folder.with_name(f"{folder.name}.dvc").write_text(yaml.safe_dump(outs, sort_keys=False))
    dvc("pull", folder.relative_to(root).with_name(f"{folder.name}.dvc").as_posix(), cwd=root)
    print(f"restored data version {data_version} into {folder.relative_to(root)}")
    return str(folder)
