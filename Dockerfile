# pneumo image, on CPU: the prediction API by default; also the CLI, the Prefect flows and the
# servers of the stack (compose.yaml runs them all from this one image).
#   docker build -t pneumo .
#   docker run -p 8085:8085 -e MLFLOW_TRACKING_URI=... -e PNEUMO_S3_ENDPOINT=... pneumo
# The model is pulled from the registry (alias champion) at start, never baked in.
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
COPY serving ./serving
COPY monitoring ./monitoring
RUN pip install --no-deps . && chown -R pneumo /app

USER 10001
EXPOSE 8085
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8085/health', timeout=4)"]
ENTRYPOINT ["pneumo"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8085"]
