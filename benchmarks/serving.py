"""Serving speed: our gunicorn service against the bare model and ``mlflow models serve``.

One run on one machine: the champion's bare ``tf.function`` on one prepared image (timed before and after
our service, as a shared VM's speed drifts) and the graph the service runs (float or int8 ONNX), alone;
our service under gunicorn, fed a 1024x1024 8-bit PNG (or
JPEG) as multipart; then ``mlflow models serve``, fed the prepared ``(1, S, S, 1)`` tensor as JSON. Both
servers run in their own process group on a free port of 127.0.0.1 and get concurrency 1 and 8. Prints
p50/p99 latency, throughput, worker memory and the ratios to the targets: throughput at c=8 >= 10x MLflow's,
p50 at c=1 <= 1.15x the bare model's; then the first explained request (``?explain=1``, target <= 1 s)
and 50 more at c=1 (explain p50 <= 3x predict p50), and RSS per worker after the predictions and
after the explanations (target <= 300 MB). Default 1 worker x 8 threads: on 2 cores
TensorFlow's intra-op pool already spreads one image over both; 2 workers with TF_NUM_INTRAOP_THREADS=1
gain ~15% throughput at c=8 but double the memory and slow down c=1.

    python benchmarks/serving.py [--model-name pneumonia-classifier] [--requests 200] [--workers 1]
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import mlflow
import numpy as np
import psutil
import requests
import typer
from PIL import Image
from urllib3 import encode_multipart_formdata

from pneumo.config import apply_client_env
from pneumo.contract import CHAMPION, VersionSpec
from pneumo.images import decode, prepare
from pneumo.runtime import onnx_session_runtime
from pneumo.stack import gunicorn_command, terminate_group
from pneumo.synth import generate

app = typer.Typer(add_completion=False)
HOST = "127.0.0.1"
LEVELS = (1, 8)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def summarise(times: list[float], seconds: float, errors: int = 0, last: bytes = b"{}") -> dict[str, Any]:
    """Count, nearest-rank p50/p99 (ms) and rate (per second) of successful calls taking ``times`` ms."""
    ordered = sorted(times) or [math.nan]
    rank = lambda q: ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]  # noqa: E731
    return {"ok": len(times), "errors": errors, "p50": rank(0.5), "p99": rank(0.99),
            "rps": len(times) / seconds, "times": times, "last": last}  # fmt: skip


def bare_model(uri: str, size: int, dst: Path) -> Callable[[Any], float]:
    """The model alone (downloaded into ``dst``), wrapped and called as ``serving/model.py`` does."""
    import tensorflow as tf

    dst.mkdir()
    model = mlflow.tensorflow.load_model(uri, dst_path=str(dst))
    spec = tf.TensorSpec((None, size, size, 1), tf.float32)
    predict_fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    to_batch = lambda prepared: tf.constant(prepared[np.newaxis, :, :, np.newaxis], tf.float32)  # noqa: E731
    return lambda prepared: float(predict_fn(to_batch(prepared)).numpy().reshape(-1)[0])


def bare_graph(run_id: str, path: str) -> Callable[[Any], float]:
    """The graph the service runs (``path``: float or int8 ONNX), alone in ONNX Runtime."""
    graph = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)).read_bytes()
    run = onnx_session_runtime(graph)
    return lambda prepared: float(
        run(np.asarray(prepared, np.float32)[np.newaxis, :, :, np.newaxis])[0].reshape(-1)[0]
    )


def time_calls(predict: Callable[[Any], float], prepared: Any, calls: int) -> dict[str, Any]:
    """``calls`` timed single-image calls, after 5 untimed ones."""
    times = []
    for _ in range(calls + 5):
        started = time.perf_counter()
        predict(prepared)
        times.append((time.perf_counter() - started) * 1000)
    return summarise(times[5:], sum(times[5:]) / 1000)


def hammer(url: str, body: bytes, headers: dict[str, str], clients: int, total: int, limit_s: float) -> dict:
    """POST ``body`` ``total`` times from ``clients`` threads (one Session each) within ``limit_s``."""
    tickets, latencies, errors, last = itertools.count(), [], [], [b"{}"]
    deadline = time.monotonic() + limit_s

    def client() -> None:
        with requests.Session() as session:
            while next(tickets) < total and time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    response = session.post(url, data=body, headers=headers, timeout=limit_s)
                    status = response.status_code
                except requests.RequestException as error:
                    status = type(error).__name__
                (latencies if status == 200 else errors).append((time.perf_counter() - started) * 1000)
                if status == 200:
                    last[0] = response.content
                elif len(errors) == 1:
                    print(f"  first error from {url}: {status}", file=sys.stderr)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return summarise(latencies, time.perf_counter() - started, len(errors), last[0])


def measure(url: str, body: bytes, headers: dict[str, str], opts: dict[str, Any]) -> dict[int, dict]:
    """``hammer`` at each concurrency level, after an untimed warm-up of two requests per client."""
    results = {}
    for clients in LEVELS:
        hammer(url, body, headers, clients, 2 * clients, opts["time_limit"])
        results[clients] = hammer(url, body, headers, clients, opts["n_requests"], opts["time_limit"])
    return results


def start(argv: list[str], env: dict, log: Path, procs: list, ready: Callable[[], bool], timeout_s: float):
    """Start ``argv`` in a new process group (remembered in ``procs``) and wait until ``ready()``.

    Raises:
        RuntimeError: with the tail of ``log`` when the process exits or ``timeout_s`` runs out first.
    """
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(proc)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if ready():
                return proc
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{argv[0]} did not come up (exit code {proc.poll()}):\n{tail}")
        time.sleep(0.5)


def worker_memory(server: subprocess.Popen) -> list[tuple[float, float]]:
    """(RSS, USS) in MB of each gunicorn worker of ``server``."""
    infos = [worker.memory_full_info() for worker in psutil.Process(server.pid).children()]
    return [(info.rss / 2**20, info.uss / 2**20) for info in infos]


def serve_ours(name: str, image: bytes, tmp: Path, opts: dict[str, Any], procs: list) -> tuple[dict, dict]:
    """Measure our service under gunicorn: predictions at each level, then the first explained
    request, then ``explains`` more at c=1. Returns the results by level (and ``"explain"``) and
    the workers' (RSS, USS) in MB after the predictions (``"predict"``) and after the explanations."""
    port = opts["port"] or free_port()
    argv, service_env = gunicorn_command(HOST, port, opts["workers"], opts["threads"])
    env = {**os.environ, **service_env, "PNEUMO_MODEL_NAME": name, "PNEUMO_RELOAD_INTERVAL": "0"}
    env.update(PNEUMO_RECORDS_URL=f"sqlite:///{tmp / 'predictions.db'}", TMPDIR=str(tmp))
    env.pop("PNEUMO_API_TOKEN", None)

    def all_loaded() -> bool:  # each worker sets its Prometheus model gauge once it holds the model,
        gauges = list(tmp.glob("pneumo-metrics-*/gauge_liveall_*.db"))  # in gunicorn.conf.py's TMPDIR dir
        ready = requests.get(f"http://{HOST}:{port}/ready", timeout=5).status_code == 200
        return len(gauges) >= opts["workers"] and ready

    server = start(argv, env, tmp / "gunicorn.log", procs, all_loaded, opts["startup_timeout"])
    kind = "png" if image.startswith(b"\x89PNG") else "jpeg"
    body, content_type = encode_multipart_formdata({"file": (f"xray.{kind}", image, f"image/{kind}")})
    headers = {"Content-Type": content_type}
    results = measure(f"http://{HOST}:{port}/predict", body, headers, opts)
    memory = {"predict": worker_memory(server)}
    explain_url = f"http://{HOST}:{port}/predict?explain=1"
    results["first_explain"] = hammer(explain_url, body, headers, 1, 1, opts["time_limit"])  # no warm-up
    results["explain"] = hammer(explain_url, body, headers, 1, opts["explains"], opts["time_limit"])
    assert json.loads(results["explain"]["last"]).get("gradcam_png"), "the explained answer has no heat map"
    memory["explain"] = worker_memory(server)
    results["gradcam"] = requests.get(f"http://{HOST}:{port}/ready", timeout=5).json().get("gradcam")
    terminate_group(server.pid)
    return results, memory


def serve_mlflow(name: str, prepared: Any, tmp: Path, opts: dict, procs: list) -> tuple[dict, float]:
    """Measure ``mlflow models serve``; returns the results and its largest process's RSS (MB)."""
    port, bin_dir = opts["mlflow_port"] or free_port(), str(Path(sys.executable).parent)
    argv = [f"{bin_dir}/mlflow", "models", "serve", "-m", f"models:/{name}@{CHAMPION}"]
    argv += ["--env-manager", "local", "--host", HOST, "-p", str(port)]
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "TMPDIR": str(tmp)}
    ping = lambda: requests.get(f"http://{HOST}:{port}/ping", timeout=5).status_code == 200  # noqa: E731
    server = start(argv, env, tmp / "mlflow.log", procs, ping, opts["startup_timeout"])
    body = json.dumps({"inputs": prepared[None, :, :, None].astype("float32").tolist()}).encode()
    results = measure(f"http://{HOST}:{port}/invocations", body, {"Content-Type": "application/json"}, opts)
    family = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
    rss = max(process.memory_info().rss for process in family) / 2**20
    terminate_group(server.pid)
    return results, rss


def report(rows: list[tuple[str, int, dict]], ours: dict, theirs: dict, bare: list, memory: dict) -> None:
    """Print the table and the ratios to the targets."""
    print(f"\n{'':<28} {'c':>3} {'ok':>5} {'err':>4} {'p50 ms':>9} {'p99 ms':>9} {'req/s':>8}")
    for name, clients, r in rows:
        numbers = f"{r['ok']:>5} {r['errors']:>4} {r['p50']:>9.1f} {r['p99']:>9.1f} {r['rps']:>8.2f}"
        print(f"{name:<28} {clients:>3} {numbers}")
    throughput = ours[8]["rps"] / theirs[8]["rps"] if theirs[8]["rps"] else math.inf
    latency = ours[1]["p50"] / statistics.median(bare)
    verdict = {True: "met", False: "MISSED"}
    explain = ours["explain"]["p50"] / ours[1]["p50"]
    first = ours["first_explain"]["p50"] / 1000
    print(
        f"\nthroughput c=8, ours / mlflow: {throughput:6.2f}x (target >= 10x)   {verdict[throughput >= 10]}"
    )
    print(f"p50 c=1, ours / bare model:    {latency:6.2f}x (target <= 1.15x) {verdict[latency <= 1.15]}")
    print(f"explain p50 / predict p50:     {explain:6.2f}x (target <= 3x)    {verdict[explain <= 3]}"
          f"   (Grad-CAM by {ours['gradcam']})")  # fmt: skip
    print(f"first explained request:       {first:6.2f} s (target <= 1 s)    {verdict[first <= 1]}")
    for phase, label in (
        ("predict", "predictions"),
        ("explain", f"{ours['explain']['ok']} explained requests"),
    ):
        rss, uss = (", ".join(f"{mb[i]:.0f} MB" for mb in memory[phase]) for i in (0, 1))
        met = verdict[bool(memory[phase]) and max(mb[0] for mb in memory[phase]) <= 300]
        print(f"RSS per worker after {label}: {rss} (target <= 300 MB) {met}; USS {uss}")


@app.command()
def main(
    model_name: Annotated[str, typer.Option(help="registered model")] = "pneumonia-classifier",
    n_requests: Annotated[int, typer.Option("--requests", min=10, max=5000, help="per level")] = 200,
    workers: Annotated[int, typer.Option(min=1, help="gunicorn workers of our service")] = 1,
    threads: Annotated[int, typer.Option(min=1, help="threads per gunicorn worker")] = 8,
    image_format: Annotated[str, typer.Option(help="upload: png, or jpeg (quality 95)")] = "png",
    port: Annotated[int, typer.Option(help="our service's port; 0 picks a free one")] = 0,
    mlflow_port: Annotated[int, typer.Option(help="mlflow models serve's port; 0: free one")] = 0,
    bare_calls: Annotated[int, typer.Option(min=5, help="timed bare-model calls, before and after")] = 50,
    explains: Annotated[int, typer.Option(min=1, help="explained requests at c=1, after the first")] = 50,
    time_limit: Annotated[float, typer.Option(help="seconds allowed per concurrency level")] = 300.0,
    startup_timeout: Annotated[float, typer.Option(help="seconds allowed for a server to load")] = 600.0,
) -> None:
    """Print latency, throughput and memory of the bare model, our service and mlflow models serve."""
    opts = dict(locals())  # the options, by name
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up on SIGTERM as on Ctrl-C
    apply_client_env()
    version = mlflow.MlflowClient().get_model_version_by_alias(model_name, CHAMPION)
    spec = VersionSpec.of(version).required(f"{model_name}@{CHAMPION}")
    size, square = spec.image_size, spec.square
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="pneumo-serving-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            generate(tmp / "synth", n=1, seed=0, size=1024)
            image = next((tmp / "synth" / "images").glob("*.png")).read_bytes()
            if image_format.lower() in ("jpeg", "jpg"):
                buffer = io.BytesIO()
                Image.open(io.BytesIO(image)).save(buffer, "JPEG", quality=95)
                image = buffer.getvalue()
            prepared = prepare(decode(image), size, square)
            predict = bare_model(f"models:/{model_name}/{version.version}", size, tmp / "bare")
            before = time_calls(predict, prepared, bare_calls)
            graph = time_calls(bare_graph(version.run_id, spec.graph), prepared, bare_calls)
            ours, memory = serve_ours(model_name, image, tmp, opts, procs)
            after = time_calls(predict, prepared, bare_calls)
            theirs, mlflow_rss = serve_mlflow(model_name, prepared, tmp, opts, procs)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    terminate_group(proc.pid)

    kind = "JPEG" if image.startswith(b"\xff\xd8") else "PNG"
    print(f"\nmodel {model_name} v{version.version} (champion), input {size}x{size}, {os.cpu_count()} CPUs")
    print(f"served graph: {spec.graph} (the bare model is the float Keras model, as MLflow serves it)")
    print(f"upload: 1024x1024 8-bit {kind} of {len(image) / 1024:.0f} KiB; {n_requests} requests per level")
    name = f"ours (gunicorn {workers}w x {threads}t)"
    rows = [("bare model, before ours", 1, before), ("bare model, after ours", 1, after)]
    rows += [(f"bare {Path(spec.graph).name}", 1, graph)]
    rows += [(name, c, ours[c]) for c in LEVELS] + [("mlflow models serve", c, theirs[c]) for c in LEVELS]
    rows += [("ours, first explained", 1, ours["first_explain"]), ("ours, explained", 1, ours["explain"])]
    report(rows, ours, theirs, before["times"] + after["times"], memory)
    print(f"mlflow models serve, largest process RSS: {mlflow_rss:.0f} MB")
    drift = max(before["p50"], after["p50"]) / min(before["p50"], after["p50"])
    if drift > 1.1:
        print(f"warning: the bare model's p50 moved {drift:.2f}x during the run (shared CPU?); rerun")
    p_ours = json.loads(ours[1]["last"]).get("probability", math.nan)
    p_mlflow = float(np.ravel(json.loads(theirs[1]["last"]).get("predictions", [math.nan]))[0])
    print(f"probability of the image: bare {predict(prepared):.6f}, ours {p_ours:.6f}, mlflow {p_mlflow:.6f}")


if __name__ == "__main__":
    app()
