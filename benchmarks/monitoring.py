"""Monitoring cost: the monitoring flow's work for 1k to 1,000,000 production records.

Times each step the flow runs on a window (read the records from SQL, the Evidently report, the
HTML file) on synthetic records, against a reference of 2,000 training rows, and prints seconds,
the growth per 10x records and the peak memory so far. Beyond ``monitoring.max_records`` the
report compares a uniform sample, so only reading grows (linearly) and memory stays flat.

    python benchmarks/monitoring.py [--sizes 1000,10000,100000,1000000]
"""

from __future__ import annotations

import itertools
import resource
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from pneumo.config import load_params
from pneumo.monitoring.features import EMBEDDING_COLUMNS, FEATURE_COLUMNS
from pneumo.monitoring.records import make_engine, predictions
from pneumo.tasks.monitor import load_production, run_report

app = typer.Typer(add_completion=False)


def fake_features(n: int, rng: np.random.Generator, shift: float = 0.0) -> pd.DataFrame:
    """Feature rows shaped like real ones (sizes, intensity statistics, probability, embedding)."""
    mean = rng.normal(110 + shift, 15, n)
    table = {
        "width": rng.choice([1024, 2048, 2500], n), "height": rng.choice([1024, 2048, 2048], n),
        "bit_depth": rng.choice([8, 16], n, p=[0.8, 0.2]), "mean": mean, "std": rng.normal(50, 8, n),
        "entropy": rng.normal(7.2, 0.3, n), "probability": rng.beta(2, 5, n),
    }  # fmt: skip
    table["aspect"] = table["width"] / table["height"]
    for offset, name in zip(
        (-90, -70, -40, 0, 30, 70, 90), ("p1", "p5", "p25", "p50", "p75", "p95", "p99"), strict=True
    ):
        table[name] = np.clip(mean + offset + rng.normal(0, 5, n), 0, 255)
    for name in EMBEDDING_COLUMNS:
        table[name] = rng.normal(0, 1, n)
    return pd.DataFrame(table)[list(FEATURE_COLUMNS)]


def write_records(url: str, n: int, rng: np.random.Generator, chunk: int = 50_000) -> None:
    """``n`` prediction rows over the last 7 days, inserted ``chunk`` at a time."""
    start = datetime.now(UTC) - timedelta(days=7)
    engine = make_engine(url)
    for first in range(0, n, chunk):
        features = fake_features(min(chunk, n - first), rng, shift=3.0)
        features["request_id"] = [f"bench-{i:08d}" for i in range(first, first + len(features))]
        offsets = rng.integers(0, 7 * 86400, len(features))
        features["created_at"] = [start + timedelta(seconds=int(s)) for s in offsets]
        features["model_name"], features["model_version"], features["label"] = "bench", "1", "NORMAL"
        features["threshold"], features["latency_ms"], features["mode"] = 0.5, 50.0, "L"
        with engine.begin() as connection:
            connection.execute(predictions.insert(), features.to_dict("records"))
    engine.dispose()


def peak_gb() -> float:
    """This process's peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


@app.command()
def main(
    sizes: Annotated[str, typer.Option(help="Comma-separated record counts.")] = "1000,10000,100000,1000000",
) -> None:
    """Print seconds per step and in all for each size."""
    rng = np.random.default_rng(0)
    limit = load_params()["monitoring"]["max_records"]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        reference = Path(scratch) / "reference.csv"
        fake_features(2000, rng).to_csv(reference, index=False)
        for n in (int(s) for s in sizes.split(",")):
            url = f"sqlite:///{scratch}/records-{n}.db"
            write_records(url, n, rng)
            now = datetime.now(UTC)
            before = peak_gb()
            started = time.perf_counter()
            current = load_production.fn(url, now - timedelta(days=8), now, scratch, "bench", "1", limit)[
                "path"
            ]
            loaded = time.perf_counter()
            html, summary = run_report.fn(str(reference), current, scratch, 0.3)
            done = time.perf_counter()
            rows.append((n, loaded - started, done - loaded, done - started, Path(html).stat().st_size,
                         summary["drift_share"], before, peak_gb()))  # fmt: skip
            print(f"{n} records: {done - started:.1f} s, peak {peak_gb():.2f} GB", flush=True)
    print(f"\nthe report compares at most {limit:,} records (monitoring.max_records)")
    print(f"{'records':>8} {'read s':>8} {'report s':>9} {'total s':>8} {'html MB':>8} {'drift':>6} "
          f"{'peak GB before/after':>21}")  # fmt: skip
    for n, read, report, total, size, share, before, after in rows:
        print(f"{n:>8} {read:>8.2f} {report:>9.2f} {total:>8.2f} {size / 1e6:>8.1f} {share:>6.2f} "
              f"{before:>10.2f} / {after:.2f}")  # fmt: skip
    for (n1, _, _, t1, *_), (n2, _, _, t2, *_) in itertools.pairwise(rows):
        print(f"{n1} -> {n2} records: time x{t2 / t1:.1f} for x{n2 / n1:.0f} records")
    fast = any(n >= 100_000 and total < 60 for n, _, _, total, *_ in rows)
    print(f"100k records under a minute: {'yes' if fast else 'no (or not measured)'}")


if __name__ == "__main__":
    app()
