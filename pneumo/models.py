"""Finding and loading registered models with mlflow: the one helper training, the gate, monitoring
and the CLI use to reach the registry. (The prediction service reads it through
:mod:`pneumo.registry`, so its workers never import mlflow.)"""

from __future__ import annotations

import tempfile
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from pneumo.registry import NOT_FOUND_CODES
from pneumo.runtime import release_free_memory


def load_keras(model_uri: str) -> Any:
    """Download an MLflow TensorFlow/Keras model and load it for inference only.

    The download goes to a private folder removed once the weights are in memory (MLflow's default
    leaves a copy in /tmp per load), and the optimizer state is not restored (``compile=False``).
    """
    with tempfile.TemporaryDirectory(prefix="pneumo-model-") as folder:
        model = mlflow.tensorflow.load_model(
            model_uri, dst_path=folder, keras_model_kwargs={"compile": False}
        )
    release_free_memory()
    return model


def alias_version(name: str, alias: str) -> Any | None:
    """The model version holding ``alias``, or None when the alias (or the model) does not exist.

    Raises:
        Exception: anything else, e.g. the registry cannot be reached.
    """
    try:
        return mlflow.MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code in NOT_FOUND_CODES:
            return None
        raise


def registered_version(uri: str) -> Any:
    """The ``ModelVersion`` behind ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``.

    Raises:
        ValueError: ``uri`` names no registered version.
        LookupError: the model, alias or version does not exist.
    """
    if not uri.startswith("models:/"):
        raise ValueError(f"{uri} is not a registered version: use models:/NAME@ALIAS or models:/NAME/VERSION")
    name, _, ref = uri.removeprefix("models:/").partition("/")
    try:
        if "@" in name:
            name, alias = name.split("@", 1)
            version = alias_version(name, alias)
            if version is None:
                raise LookupError(f"model {name} has no version with the alias {alias!r}")
            return version
        return mlflow.MlflowClient().get_model_version(name, ref)
    except MlflowException as error:
        if error.error_code not in NOT_FOUND_CODES:
            raise
        raise LookupError(f"model {uri} not found in {mlflow.get_tracking_uri()}: {error.message}") from error
