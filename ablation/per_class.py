"""Per-class test scores of a classifier: which classes its mistakes fall on. Averages hide them (Balestriero,
Bottou and LeCun, NeurIPS 2022: random crops take one ImageNet class from 68% to 46% accuracy while the mean
barely moves), so every classification run records its per-class accuracy and confusion matrix, and the report
compares each class against `none` (ablation.class_effects)."""
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


def predict(model: keras.Model, batches) -> tuple[np.ndarray, np.ndarray]:
    """(true class, predicted class) for every image of an evaluation Batches, in its order. Padding copies that
    make short batches a multiple of the devices (their weight is 0) are left out."""
    true, predicted = [], []
    for index in range(len(batches)):
        item = batches[index]
        x, y = item[0], np.asarray(item[1])
        keep = np.asarray(item[2]) > 0 if len(item) == 3 else np.ones(len(y), bool)
        scores = keras.ops.convert_to_numpy(model.predict_on_batch(x))
        true.append(y[keep])
        predicted.append(scores.argmax(axis=-1)[keep])
    return np.concatenate(true).astype(int), np.concatenate(predicted).astype(int)


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
