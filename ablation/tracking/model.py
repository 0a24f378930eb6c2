"""A run's model as an MLflow Model (MLflow 3's LoggedModel, Keras flavour): logged with its signature and an
input example and linked to its run, found again from a run or a `models:/` URI, and registered in the Model
Registry. The logged model is the inference model (models.for_inference): it takes uint8 HxWxC images, as a user
would post them, and rescales and normalises them itself."""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from importlib import metadata

from ablation.core.errors import ConfigError
from ablation.tracking.connect import client
from ablation.tracking.journal import Journal
from ablation.tracking.store import server_down, store

log = logging.getLogger(__name__)

MODEL_NAME = "model"  # the LoggedModel's name within its run
# The packages a served model needs, given outright: MLflow would otherwise infer them by loading the model in a
# subprocess, which costs a TensorFlow import (seconds) per run.
BACKEND_PACKAGES = {"tensorflow": ("tensorflow", "tensorflow-cpu"), "jax": ("jax", "jaxlib"), "torch": ("torch",)}


def _use(uri: str) -> None:
    """MLflow's model functions read the process-wide tracking URI (there is no client-level log_model), as
    tracking.load_runs does."""
    import mlflow

    mlflow.set_tracking_uri(uri)


class _KerasFlavor:
    """mlflow.keras as Model.log's flavour, with its model folder created first: mlflow.keras.save_model writes
    the input example before it creates the folder (FileNotFoundError in mlflow 3.x with an input_example)."""

    @staticmethod
    def save_model(path, keras_model, **kwargs):
        import mlflow.keras

        os.makedirs(path, exist_ok=True)
        mlflow.keras.save_model(keras_model, path, **kwargs)


def requirements() -> list[str]:
    import keras
    import mlflow

    found = [f"mlflow=={mlflow.__version__}", f"keras=={keras.__version__}"]
    for package in BACKEND_PACKAGES.get(keras.backend.backend(), ()):
        try:
            found.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return found


def log_model(tracker, model, example) -> str | None:
    """Log `model` (uint8 images in) into the tracker's run as the MLflow Model `model`, with the signature
    inferred from `example` (a few of the run's own uint8 images) and that example; returns its `models:/<id>`
    URI. When the store has stopped answering (the run goes on in its journal) the MLflow Model is left out and
    None returned: the journal keeps model.keras."""
    import mlflow
    from mlflow.models import Model, infer_signature

    if tracker.journal is not None:
        log.warning("warning: run %s: the MLflow Model is not logged while the store is away (model.keras is kept "
                    "in %s)", tracker.run_id, tracker.journal.folder)
        return None
    uri = tracker.uri or mlflow.get_tracking_uri()
    signature = infer_signature(example, model.predict(example, verbose=0))
    try:
        # Created here, in the run's experiment: Model.log alone would file it under the process's current
        # experiment (Default), as it knows no other without a fluent active run.
        run = tracker.client.get_run(tracker.run_id)
        logged = tracker.client.create_logged_model(run.info.experiment_id, name=MODEL_NAME,
                                                    source_run_id=tracker.run_id, params=run.data.params)
        _use(uri)
        with _quiet_keras():  # MLflow checks the input example through the pyfunc: no progress bar
            info = Model.log(artifact_path=None, name=MODEL_NAME, flavor=_KerasFlavor, keras_model=model,
                             run_id=tracker.run_id, model_id=logged.model_id, signature=signature,
                             input_example=example, pip_requirements=requirements())
    except Exception as exc:
        if not server_down(tracker.uri):
            raise
        tracker.journal = Journal(tracker.uri, tracker.run_id, exc)
        return None
    tracker.set_tag("model_uri", info.model_uri)
    return info.model_uri


@contextmanager
def _quiet_keras():
    """Keras' progress bar of MLflow's input example check kept off the console. The check runs in a thread of
    its own, where Keras' (thread-local) interactive logging switch does not reach: stdout is set aside."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        yield


def run_model_uri(tracking_cfg, run_id: str) -> str | None:
    """The `models:/<model_id>` URI of the MLflow Model a run logged (its last), or None."""
    outputs = client(tracking_cfg).get_run(run_id).outputs
    models = [m.model_id for m in (outputs.model_outputs if outputs else None) or []]
    return f"models:/{models[-1]}" if models else None


def load_model(tracking_cfg, model_uri: str, folder):
    """(the Keras model, the id of the run that logged it) for a `models:/...` URI (models:/<model_id>,
    models:/NAME/VERSION, models:/NAME/latest, models:/NAME@ALIAS), downloaded into folder."""
    import mlflow.keras
    from mlflow.exceptions import MlflowException

    if not str(model_uri).startswith("models:/"):
        raise ConfigError(f"model_uri: expected a models:/ URI (models:/NAME/latest, models:/NAME/VERSION, "
                          f"models:/<model_id>), got {model_uri!r}")
    client(tracking_cfg)  # the store prepared (SQLite) or checked (server)
    os.makedirs(folder, exist_ok=True)
    uri, _ = store(tracking_cfg)
    try:
        _use(uri)
        info = mlflow.models.get_model_info(model_uri)
        model = mlflow.keras.load_model(model_uri, dst_path=str(folder), load_model_kwargs={"compile": False})
    except MlflowException as exc:
        raise ConfigError(f"model_uri: cannot load {model_uri} from the MLflow store {uri} ({exc.message.splitlines()[0]}); "
                          "registered models are listed in the MLflow UI's Models tab") from None
    return model, info.run_id


def register_model(tracking_cfg, run_id: str, name: str, description: str = "",
                   tags: dict | None = None) -> tuple[object, bool]:
    """Register run `run_id`'s MLflow Model as a new version of registered model `name` (created when new);
    returns (the ModelVersion, True), or (the newest version, False) when that already holds this run's model
    (a resumed sweep that recommends the same run again)."""
    from mlflow.exceptions import MlflowException

    model_uri = run_model_uri(tracking_cfg, run_id)
    if model_uri is None:
        raise ConfigError(f"tracking.register_model: run {run_id} logged no MLflow Model; train it with "
                          "tracking.log_model=true")
    mlflow_client = client(tracking_cfg)
    try:
        mlflow_client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    versions = mlflow_client.search_model_versions(f"name = '{name}'")
    newest = max(versions, key=lambda v: int(v.version), default=None)
    if newest is not None and newest.run_id == run_id and newest.source == model_uri:
        return newest, False
    return mlflow_client.create_model_version(name, model_uri, run_id=run_id, description=description,
                                              tags={k: str(v) for k, v in (tags or {}).items()},
                                              model_id=model_uri.removeprefix("models:/")), True
