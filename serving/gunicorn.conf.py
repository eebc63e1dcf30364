"""gunicorn settings for the prediction service: ``gunicorn -c serving/gunicorn.conf.py``.

Workers and threads come from the environment. No ``preload_app``: TensorFlow loaded in the master
deadlocks forked workers, so each worker loads the model itself.
"""

import os
import shutil
import sys
import tempfile

from pneumo.config import exposure_refusal, is_loopback

wsgi_app = "pneumo.serving:create_app()"
_host = os.environ.get("PNEUMO_HOST", "127.0.0.1")
bind = f"{_host}:{os.environ.get('PNEUMO_PORT', '8085')}"
if (_refusal := exposure_refusal(_host)) is not None:  # closed by default, however it is started
    print(f"error: {_refusal}", file=sys.stderr)
    raise SystemExit(2)
if not os.environ.get("PNEUMO_API_TOKEN", "").strip():
    print(f"WARNING: serving on {_host} WITHOUT AN API TOKEN: whoever reaches it can predict, label"
          " and read reports" + ("" if is_loopback(_host) else " (PNEUMO_ALLOW_ANONYMOUS=1)"),
          file=sys.stderr)  # fmt: skip
workers = int(os.environ.get("PNEUMO_WORKERS", "1"))
threads = int(os.environ.get("PNEUMO_THREADS", "4"))
worker_class = "gthread"
timeout = int(os.environ.get("PNEUMO_TIMEOUT", "120"))  # loading DenseNet on a slow disk takes a while
graceful_timeout = 30
preload_app = False
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("PNEUMO_LOG_LEVEL", "info")
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'

body_timeout = float(os.environ.get("PNEUMO_BODY_TIMEOUT", "10"))


def pre_request(worker, req):
    """Read the rest of the request with a timeout: a client that announces a body and stalls gets
    408 after ``PNEUMO_BODY_TIMEOUT`` idle seconds instead of holding a thread for ever."""
    sock = getattr(req.unreader, "sock", None)
    if sock is not None:
        sock.settimeout(body_timeout)


# Prometheus: each worker writes its own files, /metrics merges them. The variable must be set
# before prometheus_client is first imported.
_metrics_dir = tempfile.mkdtemp(prefix="pneumo-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir

from prometheus_client import multiprocess  # noqa: E402


def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    shutil.rmtree(_metrics_dir, ignore_errors=True)
