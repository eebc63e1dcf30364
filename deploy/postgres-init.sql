-- One database each for MLflow and Prefect (compose.yaml mounts this into the postgres image).
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
