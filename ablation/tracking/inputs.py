"""The data a run trained and was scored on, as MLflow datasets (mlflow.log_input's records, the runs table's
Dataset column): one per split, named after the dataset, with a digest from the data's cache key and the split,
its source (the files' path, or the package that generates the set) and the split as context. Only metadata is
recorded (shape, digest, source), never the images."""
from __future__ import annotations

import hashlib
from pathlib import Path

from ablation.tracking import compat

CONTEXT_TAG = "mlflow.data.context"  # MLflow's own: what the UI shows beside the dataset's name


def records(name: str, key: str, source: str, splits: dict) -> list[dict]:
    """JSON-able dataset records, one per split (name -> an object with .x images and .y labels): what a run's
    journal keeps while its server is away, and what entities() turns into MLflow's DatasetInputs."""
    import numpy as np
    from mlflow.data import from_numpy

    path = Path(source).expanduser()
    origin = str(path.resolve()) if path.exists() else compat.code_source(source)
    out = []
    for split, data in splits.items():
        digest = hashlib.sha256(f"{key}:{split}".encode()).hexdigest()[:16]
        # Schema and profile (shapes, sizes) come from the arrays' dtype and shape; the digest is given, so no
        # image is hashed.
        entity = compat.dataset_entity(from_numpy(np.asarray(data.x), targets=np.asarray(data.y), source=origin,
                                                  name=name, digest=digest))
        out.append({"name": entity.name, "digest": entity.digest, "source_type": entity.source_type,
                    "source": entity.source, "schema": entity.schema, "profile": entity.profile, "context": split})
    return out


def entities(found: list[dict]) -> list:
    """records() -> MLflow DatasetInputs, each tagged with its split."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    return [DatasetInput(Dataset(r["name"], r["digest"], r["source_type"], r["source"], r["schema"], r["profile"]),
                         tags=[InputTag(CONTEXT_TAG, r["context"])]) for r in found]
