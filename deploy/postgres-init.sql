-- One database each for MLflow, Prefect and the prediction records (compose.yaml mounts this into the postgres image).
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
CREATE DATABASE predictions;
