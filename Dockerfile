# pneumo image, on CPU: the prediction API by default; also the CLI, the Prefect flows and the
# servers of the stack (compose.yaml runs them all from this one image).
#   docker build -t pneumo .          (or: make image, with buildah, no registry needed)
#   docker run -p 8085:8085 -e MLFLOW_TRACKING_URI=... -e PNEUMO_S3_ENDPOINT=... pneumo
# The model is pulled from the registry (alias champion) at start, never baked in. The default
# command honours the settings of `pneumo serve`: PNEUMO_HOST, PNEUMO_PORT, PNEUMO_WORKERS, ...
# Any Debian-based image with Python 3.11 and its venv module will do as the base: make image
# passes a debootstrapped bookworm (BASE=localhost/pneumo-base).
ARG BASE=python:3.11.14-slim-bookworm
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=true \
    MLFLOW_DISABLE_TELEMETRY=true \
    DVC_NO_ANALYTICS=1 \
    ITERATIVE_DO_NOT_TRACK=1 \
    PNEUMO_HOME=/app \
    PNEUMO_STATE_DIR=/var/lib/pneumo \
    PNEUMO_HOST=0.0.0.0 \
    PNEUMO_PORT=8085 \
    PATH=/opt/venv/bin:$PATH

ARG GIT_COMMIT=unknown
ENV PNEUMO_GIT_COMMIT=$GIT_COMMIT

RUN useradd --create-home --uid 10001 pneumo \
    && mkdir -p /var/lib/pneumo \
    && chown pneumo /var/lib/pneumo

WORKDIR /app
COPY requirements.txt constraints.txt ./
# Only what runs (requirements.txt): no test or lint tools in the image. TENSORFLOW picks the build:
# CPU by default; the GPU training work pool (deploy/kubernetes/gpu-work-pool.json) runs
#   docker build --build-arg TENSORFLOW='tensorflow[and-cuda]' -t pneumo:gpu .
ARG TENSORFLOW=tensorflow-cpu
RUN python3 -m venv /opt/venv \
    && sed -i "s/^tensorflow-cpu==/${TENSORFLOW}==/" requirements.txt \
    && pip install -r requirements.txt -c constraints.txt

# The package is installed from /src, which then goes: a pneumo/ folder in the working directory
# would shadow the installed package (gunicorn puts the working directory first on sys.path).
COPY pyproject.toml README.md /src/
COPY pneumo /src/pneumo
COPY flows /src/flows
COPY tasks /src/tasks
COPY serving /src/serving
COPY monitoring /src/monitoring
RUN pip install --no-deps /src && rm -rf /src
# PNEUMO_HOME (/app): the parameters, the deployments' file and the flow files they point at.
COPY params.yaml dvc.yaml prefect.yaml ./
COPY flows ./flows
RUN chown -R pneumo /app

USER 10001
EXPOSE 8085
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen(f\"http://127.0.0.1:{os.environ.get('PNEUMO_PORT', '8085')}/health\", timeout=4)"]
ENTRYPOINT ["pneumo"]
CMD ["serve"]
