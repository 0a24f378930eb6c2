"""Per-class test scores of a classifier: which classes its mistakes fall on. Averages hide them (Balestriero,
Bottou and LeCun, NeurIPS 2022: random crops take one ImageNet class from 68% to 46% accuracy while the mean
barely moves), so every classification run records its per-class accuracy and confusion matrix, and the report
compares each class against `none` (ablation.lenses.class_effects)."""
from __future__ import annotations

import re

import keras
import numpy as np

PREFIX = "test_class/"
# Characters MLflow accepts in a metric key; anything else in a class name becomes "_".
KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. :]")


def metric_key(class_name: str) -> str:
    """test_class/<class>/accuracy: the MLflow UI groups these keys into one chart section."""
    return f"{PREFIX}{KEY_UNSAFE.sub('_', str(class_name))}/accuracy"


# Images per predict call. Every call gets this many (the last chunk padded), so the model's predict function is
# traced once per run and not again for a short last batch or another caller's batch size.
CHUNK = 256


def predict(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """The predicted class of each uint8 image, for a model that takes uint8 images (models.for_inference)."""
    out = []
    for start in range(0, len(images), CHUNK):
        chunk = images[start:start + CHUNK]
        if len(chunk) < CHUNK:
            chunk = np.concatenate([chunk, np.zeros((CHUNK - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        scores = keras.ops.convert_to_numpy(model.predict_on_batch(chunk))
        out.append(scores.argmax(axis=-1)[:min(CHUNK, len(images) - start)])
    return np.concatenate(out).astype(int) if out else np.zeros(0, int)


def confusion(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """matrix[i, j]: images of class i predicted as class j."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (true, predicted), 1)
    return matrix


def accuracies(matrix: np.ndarray) -> np.ndarray:
    """Per class: the share of its images predicted as it (recall); NaN for a class with no test image."""
    counts = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.diag(matrix) / counts, np.nan)


def metrics(matrix: np.ndarray, class_names: list[str]) -> dict[str, float]:
    return {metric_key(name): float(value) for name, value in zip(class_names, accuracies(matrix))
            if np.isfinite(value)}
