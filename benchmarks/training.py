"""Training throughput: the real tf.data input pipeline against in-memory tensors.

Builds the project's Keras model, trains it for the same number of steps once fed by
``pneumo.network.make_dataset`` over a real processed train split (synthetic images run through
``pneumo.processed``) and once fed by one pre-built float32 batch, and prints images per second and
the pipeline's overhead. Numbers only, no assertions; the target is an overhead under 10%.

Steps are timed by a callback from the first batch's start to the last batch's end, not around
``fit``: when ``fit`` returns it destroys the half-read ``.repeat()`` iterator, and that waits for
the next wake-up of the tf.data autotune thread (about 2.55 s, 5.11 s, ... after the iterator started),
which would add up to seconds of teardown unrelated to the per-step cost.

    python benchmarks/training.py [--profile demo] [--steps 30] [--warmup 5]
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from pneumo.config import load_params
from pneumo.processed import build_processed, load_split
from pneumo.synth import generate

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported (in main)
app = typer.Typer(add_completion=False)


def timed_fit(model: Any, dataset: Any, steps: int) -> float:
    """Seconds spent in the ``steps`` training steps of one silent one-epoch ``model.fit``."""
    import keras

    class StepClock(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            if batch == 0:
                self.started = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.ended = time.perf_counter()

    clock = StepClock()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[clock])
    return clock.ended - clock.started


def prepare_data(params: dict[str, Any], n_images: int, root: Path) -> tuple[Any, Any]:
    """Generate a synthetic NIH-layout set below ``root`` and return its processed train split."""
    raw = root / "raw" / "synthetic"
    generate(raw, n=n_images, seed=0, size=max(256, params["data"]["image_size"]))
    processed = build_processed(str(raw), params, data_version="benchmark")
    return load_split(processed, "train")


@app.command()
def main(
    profile: Annotated[str, typer.Option(help="params.yaml profile")] = "demo",
    backbone: Annotated[str | None, typer.Option(help="override train.backbone")] = None,
    image_size: Annotated[int | None, typer.Option(help="override data.image_size")] = None,
    batch_size: Annotated[int | None, typer.Option(help="override train.batch_size")] = None,
    steps: Annotated[int, typer.Option(help="timed training steps per repetition")] = 30,
    warmup: Annotated[int, typer.Option(help="untimed steps per mode before timing")] = 5,
    repeats: Annotated[int, typer.Option(help="alternating repetitions per mode (median kept)")] = 5,
    n_images: Annotated[int, typer.Option(help="synthetic images to generate")] = 300,
) -> None:
    """Print training images/s with the real input pipeline and with in-memory tensors."""
    overrides: dict[str, Any] = {}
    if backbone:
        overrides.setdefault("train", {})["backbone"] = backbone
    if batch_size:
        overrides.setdefault("train", {})["batch_size"] = batch_size
    if image_size:
        overrides["data"] = {"image_size": image_size}

    with tempfile.TemporaryDirectory(prefix="pneumo-bench-") as tmp:
        os.environ["PNEUMO_WORKDIR"] = tmp
        import keras
        import numpy as np
        import tensorflow as tf

        from pneumo.network import build_network, make_dataset

        params = load_params(profile, overrides)
        cfg, size, batch = params["train"], params["data"]["image_size"], params["train"]["batch_size"]
        x, y = prepare_data(params, n_images, Path(tmp))

        print(
            f"profile {profile}, backbone {cfg['backbone']}, image size {size}, batch {batch}, "
            f"train images {len(y)}, tf {tf.__version__}, keras {keras.__version__}, "
            f"cpus {os.cpu_count()}, gpus {len(tf.config.list_physical_devices('GPU'))}"
        )
        keras.utils.set_random_seed(cfg["seed"])
        model = build_network(size, cfg)

        pipeline = make_dataset(x, y, batch, cfg["seed"]).repeat()
        idx = np.arange(batch) % len(y)
        xb = tf.constant(x[idx, ..., np.newaxis].astype(np.float32))
        yb = tf.constant(y[idx].astype(np.float32))
        in_memory = tf.data.Dataset.from_tensors((xb, yb)).repeat()
        modes = {"pipeline": pipeline, "in-memory": in_memory}

        for dataset in modes.values():  # trace the train function, fill caches
            timed_fit(model, dataset, warmup)
        times: dict[str, list[float]] = {name: [] for name in modes}
        for _ in range(repeats):
            for name, dataset in modes.items():
                times[name].append(timed_fit(model, dataset, steps))

    print(f"\n{'mode':<10} {'steps':>6} {'batch':>6} {'seconds':>9} {'images/s':>9}  runs (s)")
    median = {name: statistics.median(runs) for name, runs in times.items()}
    for name, runs in times.items():
        rate, shown = steps * batch / median[name], " ".join(f"{t:.2f}" for t in runs)
        print(f"{name:<10} {steps:>6} {batch:>6} {median[name]:>9.2f} {rate:>9.1f}  {shown}")
    overhead = 100.0 * (median["pipeline"] / median["in-memory"] - 1.0)
    best = 100.0 * (min(times["pipeline"]) / min(times["in-memory"]) - 1.0)
    print(f"\npipeline overhead: {overhead:.1f}% (target < 10%)")
    print(f"best-run overhead: {best:.1f}% (less sensitive to other load on the machine)")


if __name__ == "__main__":
    app()
