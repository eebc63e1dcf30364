# pneumo image: the CLI, the Prefect flows and (once serving lands) the API, on CPU.
# Build: docker build -t pneumo .   Run a flow worker: see compose.yaml.
FROM python:3.11-slim

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
    PNEUMO_STATE_DIR=/var/lib/pneumo

ARG GIT_COMMIT=unknown
ENV PNEUMO_GIT_COMMIT=$GIT_COMMIT

RUN useradd --create-home --uid 10001 pneumo \
    && mkdir -p /var/lib/pneumo \
    && chown pneumo /var/lib/pneumo

WORKDIR /app
COPY requirements.txt constraints.txt ./
RUN pip install -r requirements.txt -c constraints.txt

COPY pyproject.toml params.yaml dvc.yaml prefect.yaml README.md ./
COPY pneumo ./pneumo
COPY flows ./flows
COPY tasks ./tasks
RUN pip install --no-deps . && chown -R pneumo /app

USER 10001
ENTRYPOINT ["pneumo"]
CMD ["--help"]
