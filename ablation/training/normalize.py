"""Input normalisation (`dataset.normalize`), the choices ImageDataGenerator users know:

  rescale      pixels / 255, nothing more (the model's first layer always does this)
  featurewise  then (x - mean) / std per channel, with mean and std of the training split (featurewise_center +
               featurewise_std_normalization after `fit` on the training images)
  samplewise   then each image minus its own mean, divided by its own std (samplewise_center +
               samplewise_std_normalization)

The normalisation is a layer inside the model (models.build), so validation, test, the clean training subset,
a logged model.keras and `python -m ablation.cli.predict` all see exactly the same transform. Both layers are Keras'
own (Normalization, LayerNormalization), so a saved model loads with keras.models.load_model and nothing to
register. Statistics are in [0, 1] pixel units, the scale after the rescale.

Featurewise statistics depend only on the training split, which the dataset's cache key already names; with
`dataset.cache: true` they are kept as normalization.json in the dataset's cache folder (datasets.cache_path), so
later runs of a sweep read them instead of passing over the training images again.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from ablation import datasets
from ablation.core.errors import ConfigError

MODES = ("rescale", "featurewise", "samplewise")
DEFAULT = "rescale"
STATS_FILE = "normalization.json"
# Training images summed per step: bounds the float64 working copy when the split is a memory map larger than RAM.
CHUNK = 256
# samplewise: added to each image's variance; its square root, 1e-6, is the floor ImageDataGenerator adds to the std.
SAMPLEWISE_EPSILON = 1e-12

log = logging.getLogger(__name__)


def mode_of(dataset_cfg) -> str:
    return dataset_cfg.get("normalize", DEFAULT)


def check(dataset_cfg) -> None:
    """ConfigError naming dataset.normalize for anything but one of MODES."""
    value = mode_of(dataset_cfg)
    if value not in MODES:
        raise ConfigError(f"dataset.normalize: expected one of {'|'.join(MODES)}, got {value!r}")


def channel_statistics(x: np.ndarray) -> tuple[list[float], list[float]]:
    """(mean, std) per channel of uint8 images (N, H, W, C), in [0, 1] units. Sums in float64 a chunk at a time,
    so a memory-mapped split is streamed from disk rather than loaded whole."""
    channels = x.shape[-1]
    total, squares, count = np.zeros(channels), np.zeros(channels), 0
    for start in range(0, len(x), CHUNK):
        chunk = np.asarray(x[start:start + CHUNK], dtype=np.float64).reshape(-1, channels)
        total += chunk.sum(axis=0)
        squares += np.square(chunk).sum(axis=0)
        count += len(chunk)
    if count == 0:
        raise datasets.DataError("dataset.normalize: featurewise needs training images; the training split is empty")
    mean = total / count
    # Integer-valued pixels summed in float64 are exact, so E[x^2] - E[x]^2 loses nothing worth a two-pass method.
    variance = np.maximum(squares / count - np.square(mean), 0.0)
    return (mean / 255.0).tolist(), (np.sqrt(variance) / 255.0).tolist()


@dataclass(frozen=True)
class Normalization:
    """The chosen normalisation and, for featurewise, its per-channel statistics ([0, 1] units)."""

    mode: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    n_images: int | None = None   # training images the statistics were computed on
    source: str | None = None     # "computed" or the statistics file they were read from

    def layer(self) -> keras.layers.Layer | None:
        """A new layer applying it to [0, 1] images (None for rescale); new on every call, so it can be built in
        the training scope (backend.training_scope) of each model."""
        if self.mode == "featurewise":
            return keras.layers.Normalization(axis=-1, mean=list(self.mean), variance=[s * s for s in self.std],
                                              name="normalize")
        if self.mode == "samplewise":
            # Per image over height, width and channels, as ImageDataGenerator.standardize does on one image.
            # center/scale off: no trainable offset or gain, only the standardisation itself.
            return keras.layers.LayerNormalization(axis=(-3, -2, -1), epsilon=SAMPLEWISE_EPSILON, center=False,
                                                   scale=False, name="normalize")
        return None

    def params(self) -> dict[str, str]:
        """MLflow params beside the config's dataset.normalize: the statistics a featurewise model applies."""
        if self.mode != "featurewise":
            return {}
        return {"data/normalize_mean": json.dumps([round(v, 6) for v in self.mean]),
                "data/normalize_std": json.dumps([round(v, 6) for v in self.std])}

    def to_dict(self) -> dict:
        """The normalization.json artifact of a run."""
        out: dict = {"mode": self.mode, "rescale": "1/255"}
        if self.mode == "featurewise":
            out.update(mean=list(self.mean), std=list(self.std), units="[0, 1]", computed_on="train",
                       n_images=self.n_images, source=self.source)
        elif self.mode == "samplewise":
            out.update(axes="height, width, channels of each image", epsilon=SAMPLEWISE_EPSILON)
        return out


def prepare(dataset_cfg, splits: datasets.Splits) -> Normalization:
    """The run's normalisation: featurewise statistics from the training split only (never val/test), read from
    the dataset cache's normalization.json when present, computed (and stored there) otherwise."""
    check(dataset_cfg)
    mode = mode_of(dataset_cfg)
    if mode != "featurewise":
        return Normalization(mode)
    file = _stats_file(dataset_cfg)
    channels = splits.input_shape[-1]
    if file is not None:
        stored = _read(file, channels, len(splits.train))
        if stored is not None:
            return Normalization(mode, tuple(stored["mean"]), tuple(stored["std"]), stored["n_images"], str(file))
    mean, std = channel_statistics(splits.train.x)
    stats = Normalization(mode, tuple(mean), tuple(std), len(splits.train), "computed")
    if file is not None:
        _write(file, {"mean": mean, "std": std, "n_images": len(splits.train), "computed_on": "train",
                      "units": "[0, 1]"})
    return stats


def _stats_file(dataset_cfg) -> Path | None:
    """normalization.json in the dataset's cache folder; None with dataset.cache=false or when that folder is not
    there (a copy that was not cached because its files changed while decoding)."""
    if not dataset_cfg.get("cache", True):
        return None
    folder = datasets.cache_path(dataset_cfg)
    return folder / STATS_FILE if folder.is_dir() else None


def _read(file: Path, channels: int, n_images: int) -> dict | None:
    """The stored statistics if they fit this training split; None (recompute) when absent or not usable."""
    try:
        stored = json.loads(file.read_text())
        ok = (stored.get("n_images") == n_images
              and all(isinstance(stored.get(k), list) and len(stored[k]) == channels
                      and all(isinstance(v, (int, float)) and np.isfinite(v) for v in stored[k]) for k in ("mean", "std")))
    except (OSError, ValueError, AttributeError):
        return None
    if not ok:
        log.warning("%s: statistics do not fit this training split; recomputing them", file)
        return None
    return stored


def _write(file: Path, stats: dict) -> None:
    """Written beside, then renamed into place: parallel jobs of a sweep never read a half-written file. A cache
    folder that cannot be written to costs only the recomputation next time."""
    scratch = None
    try:
        handle, scratch = tempfile.mkstemp(prefix=f".{STATS_FILE}.", dir=file.parent)
        with os.fdopen(handle, "w") as out:
            json.dump(stats, out, indent=1)
        os.replace(scratch, file)
    except OSError as exc:
        if scratch is not None:
            Path(scratch).unlink(missing_ok=True)
        log.warning("%s: cannot store the normalisation statistics (%s); they are recomputed next time", file, exc)
