"""What every image source shares: the Split/Splits types, DataError, the checks of common settings, splitting
(fractions, stratification, train_size), resizing and channel conversion.

Plain numpy, OpenCV and scikit-learn; no Keras, no MLflow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from sklearn.model_selection import train_test_split

from ablation.core import errors

SPLIT_NAMES = ("train", "val", "test")
# Images decoded per round of the thread pool: bounds the pending tasks for folders far larger than memory.
DECODE_CHUNK = 512
MISSING = "???"  # OmegaConf's mark for a mandatory value nobody set
# folder and csv datasets: an unreadable image stops the load (error) or is left out, counted and listed (skip).
BAD_IMAGE_CHOICES = ("error", "skip")


DataError = errors.DataError  # raised by every source; defined with the other user errors


def fail(key: str, message: str) -> DataError:
    return DataError(f"dataset.{key}: {message}".replace("\n", " "))


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # (N, H, W, C) uint8
    y: np.ndarray  # (N,) int64 class indices

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Splits:
    train: Split
    val: Split
    test: Split
    class_names: list[str]  # index -> name, fixed by the training split
    # (file, reason) for each unreadable image left out with on_bad_image=skip (folder and csv datasets).
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.train.x.shape[1:])


def stamp(file: Path) -> tuple[int, int]:
    """(size, mtime_ns): what a cache key sees of a file, without opening it."""
    stat = file.stat()
    return stat.st_size, stat.st_mtime_ns


# ---------------------------------------------------------------------------------------------- resize, channels

def resize_images(x: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or x.shape[1:3] == (size, size):
        return x
    # Area averaging when shrinking avoids aliasing; bilinear when enlarging.
    method = cv2.INTER_AREA if x.shape[1] > size else cv2.INTER_LINEAR
    out = np.empty((len(x), size, size, x.shape[3]), np.uint8)
    for i, image in enumerate(x):
        out[i] = cv2.resize(image, (size, size), interpolation=method).reshape(size, size, x.shape[3])
    return out


def to_channels(x: np.ndarray, channels: int | None) -> np.ndarray:
    if channels is None or x.shape[-1] == channels:
        return x
    if channels == 3:
        return np.repeat(x, 3, axis=-1)
    n, h, w, _ = x.shape
    # cvtColor accepts one tall image, which converts the whole batch in one call (ITU-R 601 weights, like PIL's "L").
    return cv2.cvtColor(np.ascontiguousarray(x).reshape(n * h, w, 3), cv2.COLOR_RGB2GRAY).reshape(n, h, w, 1)


# ---------------------------------------------------------------------------------------------- splitting

def _count(n: int, fraction: float) -> int:
    """Images a fraction takes from n: at least one when the fraction is positive, so rounding empties no split."""
    return 0 if fraction <= 0 or n == 0 else max(1, int(round(n * fraction)))


def _take(y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions into y split as (kept, taken) with n taken, stratified by class when every class allows it."""
    positions = np.arange(len(y))
    if n <= 0:
        return positions, positions[:0]
    if n >= len(y):
        return positions[:0], positions
    try:
        kept, taken = train_test_split(positions, test_size=n, random_state=seed, stratify=y)
    except ValueError:  # a class too small to appear on both sides: a plain random split still works
        kept, taken = train_test_split(positions, test_size=n, random_state=seed)
    return kept, taken


def three_way(y: np.ndarray, val_fraction: float, test_fraction: float, seed: int, blame: str = "path"):
    """Positions (train, val, test) into y; both fractions are of len(y)."""
    n_test, n_val = _count(len(y), test_fraction), _count(len(y), val_fraction)
    if len(y) - n_test - n_val < 1:
        raise fail(blame, f"{len(y)} images are too few to take validation ({val_fraction:g}) "
                           f"and test ({test_fraction:g}) fractions from")
    rest, test = _take(y, n_test, seed)
    train, val = _take(y[rest], n_val, seed)
    return rest[train], rest[val], test


def fill_splits(y, pools: dict[str, np.ndarray], val_fraction, test_fraction, seed):
    """Index arrays (train, val, test) into y: the splits the source lacks are taken from its train pool."""
    pool = pools["train"]
    if "val" not in pools and "test" not in pools:
        train, val, test = three_way(y[pool], val_fraction, test_fraction, seed)
        return pool[train], pool[val], pool[test]
    taken = dict(pools)
    for split, fraction in (("val", val_fraction), ("test", test_fraction)):
        if split not in pools:
            keep, take = _take(y[pool], _count(len(pool), fraction), seed)
            if len(keep) == 0:
                raise fail("path", f"{len(pool)} training images are too few to take a {split} fraction "
                                    f"of {fraction:g} from")
            taken[split], pool = pool[take], pool[keep]
    return pool, taken["val"], taken["test"]


def subsample(y, train, val, test, train_size, seed):
    if train_size is not None and train_size < len(train):
        # Fewer training images make overfitting, and what augmentation does about it, visible.
        _, kept = _take(y[train], train_size, seed)
        train = train[kept]
    return train, val, test


def make_splits(x, y, class_names, train, val, test, train_size, seed) -> Splits:
    part = lambda idx: Split(x[idx], y[idx].astype(np.int64))
    train, val, test = subsample(y, train, val, test, train_size, seed)
    return Splits(part(train), part(val), part(test), list(class_names))


# ---------------------------------------------------------------------------------------------- checks

def integer_arg(args, key, minimum, optional=False):
    value = args.get(key)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise fail(key, f"expected an integer >= {minimum}{' or null' if optional else ''}, got {value!r}")


def number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fraction(args, key):
    value = args.get(key)
    if not number(value) or not 0 <= value < 1:
        raise fail(key, f"expected a fraction in [0, 1), got {value!r}")


def common_args(args, split_keys=None, size_optional=False, channels_optional=False, train_size=True):
    integer_arg(args, "image_size", 8, optional=size_optional)
    channels = args.get("channels")
    if not (channels in (1, 3) and not isinstance(channels, bool)) and not (channels is None and channels_optional):
        raise fail("channels", f"expected 1 or 3{' or null' if channels_optional else ''}, got {channels!r}")
    integer_arg(args, "split_seed", 0)
    if train_size:
        integer_arg(args, "train_size", 1, optional=True)
    if split_keys:
        for key in split_keys:
            _fraction(args, key)
        total = sum(args[key] for key in split_keys)
        if total >= 1:
            raise fail(split_keys[-1], f"{' + '.join(split_keys)} = {total:g} leaves no training images (must be < 1)")


def bad_image_policy(args):
    if args.get("on_bad_image") not in BAD_IMAGE_CHOICES:
        raise fail("on_bad_image", f"expected one of {'|'.join(BAD_IMAGE_CHOICES)}, got {args.get('on_bad_image')!r}")


def path_arg(args, kind, example):
    value = args.get("path")
    if value in (None, "", MISSING):
        raise fail("path", f"required, e.g. dataset.path={example}")
    path = Path(str(value)).expanduser()
    if not path.exists():
        raise fail("path", f"{kind} {path} does not exist")
    if kind == "folder" and not path.is_dir():
        raise fail("path", f"{path} is a file; expected a folder of class folders")
    if kind == "file" and path.is_dir():
        raise fail("path", f"{path} is a folder; expected an .npz file")


def interval(args, key, low, high, positive=False):
    value = args.get(key)
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(number(v) for v in value)
    ok = ok and low <= value[0] <= value[1] <= high and not (positive and value[0] <= 0)
    if not ok:
        bounds = f"{'(' if positive else '['}{low:g}, {high:g}]"
        raise fail(key, f"expected [low, high] with low <= high within {bounds}, got {value!r}")
