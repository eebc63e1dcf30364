"""Cost per 1,000 images of each step as the data set grows: 2,000, 20,000, 100,000 images.

Runs the real steps on synthetic NIH-layout sets (``pneumo data synth``, 256 px) against a real
stack this script starts (its own state folder and ports): push and ingest (S3 behind a proxy that
adds ``--latency-ms`` to every request, one object at a time and with the transfer pool, side by
side), DVC versioning of the snapshot, preprocessing, and one training epoch of the ``test`` recipe.
Every step runs in a process of its own, so its peak memory (max RSS) is its own. Prints one table:
seconds, seconds per 1,000 images and peak memory of each step at each size, and the
extrapolation to NIH ChestX-ray14's 112,120 images. Numbers only, no assertions.

    python benchmarks/scale.py --sizes 2000,20000              # ~45 min, most of it one at a time
    python benchmarks/scale.py --sizes 100000 \\
        --steps push,ingest,dvc,preprocess,train_epoch,reference,monitoring   # ~1 hour

Generated sets are kept in ``--work`` (default ``.pneumo/bench-scale``) and reused, and so are
the results of earlier runs (``results.json``): the table shows every size measured.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

ROOT = Path(__file__).resolve().parents[1]
NIH_IMAGES = 112_120
PORTS = {"PNEUMO_S3_PORT": 48333, "PNEUMO_MLFLOW_PORT": 45000, "PNEUMO_PREFECT_PORT": 44200}
STEPS = ("push_serial", "push", "ingest_serial", "ingest", "dvc", "preprocess", "train_epoch", "reference",
         "monitoring")  # fmt: skip


def bench_env(work: Path) -> dict[str, str]:
    """The environment of this benchmark's stack and steps (nothing shared with a running stack)."""
    own = {
        "PNEUMO_STATE_DIR": str(work / "state"),
        "PNEUMO_WORKDIR": str(work / "project"),
        "PNEUMO_DB": "sqlite",
    }
    return {**os.environ, **own, "TF_CPP_MIN_LOG_LEVEL": "2", **{k: str(v) for k, v in PORTS.items()}}


def run_step(step: str, n: int, work: Path, env: dict[str, str]) -> dict[str, float]:
    """One step in a child process: the seconds of its work, its peak RSS (GB) and the cores the
    work kept busy (CPU seconds over seconds)."""
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, __file__, "step", step, str(n), str(work)], env=env)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"step {step} at {n} images failed (exit {process.returncode})")
    done = json.loads((work / "step.json").read_text())  # the work itself, without imports and setup
    return {"seconds": done["seconds"], "process_seconds": time.monotonic() - started,
            "peak_gb": usage.ru_maxrss / 1024**2, "cores": done["cpu"] / done["seconds"]}  # fmt: skip


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (DVC runs as one)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def step(name: str, n: int, work: Path) -> None:
    """Run one step (in a child process of :func:`main`); writes the work's own seconds and CPU
    seconds, imports and setup left out, to ``work/step.json``."""
    from pneumo.config import apply_client_env, load_params, state_dir, workdir

    settings = apply_client_env()  # before Prefect is imported: it reads its API address once
    from pneumo.flows.preprocess_flow import preprocess
    from pneumo.storage import s3_client, sync_dir
    from pneumo.tasks.ingest import ingest
    from pneumo.versioning import version_folder

    data, uri = work / "sets" / f"nih-{n}", f"s3://{settings.raw_bucket}/scale-{n}"
    client, bucket = s3_client(settings), settings.raw_bucket
    if name.startswith("push"):  # from an empty prefix: every file is uploaded
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"scale-{n}/"):
            if keys := [{"Key": o["Key"]} for o in page.get("Contents", [])]:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    elif name.startswith("ingest"):  # with an empty cache: every object is downloaded
        shutil.rmtree(state_dir() / "cache" / "objects", ignore_errors=True)
        shutil.rmtree(workdir() / "data" / "raw", ignore_errors=True)
    elif name == "dvc":  # from nothing: no DVC cache, no remembered hashes, an empty remote
        from dvc.repo import Repo

        snapshot(work, n).with_suffix(".dvc").unlink(missing_ok=True)
        project = workdir()
        if (project / ".dvc").exists():
            shutil.rmtree(Repo(str(project)).site_cache_dir, ignore_errors=True)
            for folder in ("cache", "tmp"):
                shutil.rmtree(project / ".dvc" / folder, ignore_errors=True)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=settings.dvc_bucket):
            if keys := [{"Key": o["Key"]} for o in page.get("Contents", [])]:
                client.delete_objects(Bucket=settings.dvc_bucket, Delete={"Objects": keys, "Quiet": True})
    elif name == "preprocess":  # with an empty cache of prepared images: every film is decoded
        shutil.rmtree(state_dir() / "cache" / "prepared", ignore_errors=True)
        shutil.rmtree(work / "processed" / str(n), ignore_errors=True)
    elif name in ("train_epoch", "reference"):  # TensorFlow only here: the others' memory is their own
        import keras

        from pneumo.images import model_input
        from pneumo.network import build_network, training_data
        from pneumo.tasks.reference import reference_paths, reference_table
    elif name == "monitoring":  # n production records in the window (written before the clock starts)
        import importlib.util
        from datetime import UTC, datetime, timedelta

        import numpy as np

        from pneumo.tasks.monitor import load_production, run_report

        spec = importlib.util.spec_from_file_location(
            "monitoring_benchmark", Path(__file__).with_name("monitoring.py")
        )
        sibling = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sibling)  # the sibling benchmark writes the records
        write_records = sibling.write_records

        records = work / f"records-{n}.db"
        if not records.exists():
            write_records(f"sqlite:///{records}.part", n, np.random.default_rng(n))
            os.replace(f"{records}.part", records)
    params = load_params("test", {"train": {"epochs": 1}})
    processed, model_file = str(work / "processed" / str(n)), work / f"model-{n}.keras"
    started, cpu = time.monotonic(), _cpu_seconds()
    if name.startswith("push"):
        sync_dir(client, data, uri)
    elif name.startswith("ingest"):
        ingest.fn(uri)
    elif name == "dvc":
        version_folder(str(snapshot(work, n)))
    elif name == "preprocess":
        preprocess(str(snapshot(work, n)), params, out=processed)
    elif name == "train_epoch":
        dataset, _ = training_data(processed, params)
        model = build_network(params["data"]["image_size"], params["train"])
        model.fit(dataset, epochs=1, verbose=0)
        model.save(model_file)
    elif name == "reference":
        from pneumo.monitoring.features import with_embedding

        embed = with_embedding(keras.models.load_model(model_file))
        table, _ = reference_table(
            reference_paths(processed, params), params["data"]["image_size"], params["data"]["square"],
            lambda x: embed.predict(model_input(x), batch_size=32, verbose=0),
        )  # fmt: skip
        table.to_csv(work / f"reference-{n}.csv", index=False)
    elif name == "monitoring":
        now, limit = datetime.now(UTC), params["monitoring"]["max_records"]
        scratch = work / "monitoring"
        scratch.mkdir(exist_ok=True)
        window = (now - timedelta(days=8), now + timedelta(days=1))
        current = load_production.fn(f"sqlite:///{records}", *window, str(scratch), "bench", "1", limit)
        run_report.fn(str(work / f"reference-{n}.csv"), current["path"], str(scratch), 0.3)
    seconds = time.monotonic() - started
    (work / "step.json").write_text(json.dumps({"seconds": seconds, "cpu": _cpu_seconds() - cpu}))


def snapshot(work: Path, n: int) -> Path:
    """The raw snapshot the last ingest of ``n`` images made."""
    found = sorted(
        p for p in (work / "project" / "data" / "raw").glob(f"pneumo-raw-scale-{n}-*") if p.is_dir()
    )
    if not found:
        raise SystemExit(f"no snapshot of {n} images: run the ingest step first")
    return found[-1]


def per_image_table(results: dict[int, dict[str, dict[str, float]]]) -> str:
    """The README's table: seconds (s per 1,000 images, peak GB, cores busy) of each step at each
    size, the cost per 1,000 at the largest size over that at the smallest, and the extrapolation
    to NIH's 112,120 images from the largest size measured."""
    sizes = sorted(results)
    head = "| step | " + " | ".join(f"{n:,} images" for n in sizes) + " | s/1k largest / smallest | 112,120 |"
    lines = [head, "|---|" + "---|" * (len(sizes) + 2)]
    for name in [step for step in STEPS if any(step in results[n] for n in sizes)]:
        measured = [n for n in sizes if name in results[n]]
        cells = []
        for n in sizes:
            r = results[n].get(name)
            cells.append(
                f"{r['seconds']:.1f} ({1000 * r['seconds'] / n:.2f}, {r['peak_gb']:.2f}, {r['cores']:.1f})"
                if r else "-"
            )  # fmt: skip
        per = [results[n][name]["seconds"] / n for n in measured]
        ratio = f"{per[-1] / per[0]:.2f}" if len(per) > 1 else "-"
        minutes = per[-1] * NIH_IMAGES / 60
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio} | {minutes:.0f} min |")
    return "\n".join(lines)


def main(
    sizes: Annotated[str, typer.Option(help="comma-separated numbers of images")] = "2000,20000",
    latency_ms: Annotated[float, typer.Option(help="delay added to every S3 request")] = 20.0,
    steps: Annotated[str, typer.Option(help="comma-separated steps to run")] = ",".join(STEPS),
    work: Annotated[Path, typer.Option(help="where sets, stack and outputs go")] = ROOT
    / ".pneumo"
    / "bench-scale",
) -> None:
    """Print each step's cost per 1,000 images and peak memory at each size."""
    from latency_proxy import LatencyProxy  # the sibling module: benchmarks run as scripts

    from pneumo.storage import transfer_concurrency
    from pneumo.synth import generate

    work = work.resolve()
    env = bench_env(work)
    os.environ.update(env)
    from pneumo import stack
    from pneumo.config import Settings

    settings = Settings.from_env()
    (work / "project").mkdir(parents=True, exist_ok=True)
    started = stack.up(settings)
    results: dict[int, dict[str, dict[str, float]]] = {}
    try:
        with LatencyProxy(settings.s3_port, latency_ms / 1000) as proxy:
            far = {**env, "PNEUMO_S3_ENDPOINT": f"http://127.0.0.1:{proxy.port}"}
            for n in [int(part) for part in sizes.split(",")]:
                folder = work / "sets" / f"nih-{n}"
                if not (folder / "Data_Entry_2017.csv").exists():
                    generate(folder, n=n, seed=n, size=256)
                results[n] = {}
                for name in [part for part in STEPS if part in steps.split(",")]:
                    step_env = far if name.startswith(("push", "ingest")) else env
                    if name.endswith("_serial"):
                        step_env = {**step_env, "PNEUMO_S3_CONCURRENCY": "1"}
                    results[n][name] = run_step(name, n, work, step_env)
                    r = results[n][name]
                    print(f"{n} images, {name}: {r['seconds']:.1f} s, peak {r['peak_gb']:.2f} GB, "
                          f"{r['cores']:.1f} cores", flush=True)  # fmt: skip
    finally:
        stack.down(settings, only=started)
    pool = transfer_concurrency()
    print(f"\nS3 requests delayed by {latency_ms:.0f} ms (serial: PNEUMO_S3_CONCURRENCY=1; else {pool})\n")
    kept = work / "results.json"  # other sizes' and steps' results of earlier runs stay
    earlier = {int(n): steps for n, steps in json.loads(kept.read_text()).items()} if kept.exists() else {}
    for n, measured in results.items():
        earlier[n] = {**earlier.get(n, {}), **measured}
    kept.write_text(json.dumps(earlier, indent=2))
    print(per_image_table(earlier))
    print(f"\nmax RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GB")


if __name__ == "__main__":
    if sys.argv[1:2] == ["step"]:  # a child process of main: one step
        step(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
    else:
        typer.run(main)
