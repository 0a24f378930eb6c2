"""The `npz` source: arrays saved with np.savez (x_train, y_train and optionally x_val, y_val, x_test, y_test,
class_names), checked (shapes, dtypes, label ranges, no pickles) and split like the other sources.

No Keras, no MLflow.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ablation.datasets.common import (
    Splits,
    common_args,
    fail,
    fill_splits,
    make_splits,
    path_arg,
    resize_images,
    stamp,
    to_channels,
)


def load_npz(path: str, image_size: int | None = None, channels: int | None = None, validation_split: float = 0.2,
             test_split: float = 0.2, train_size: int | None = None, split_seed: int = 0) -> Splits:
    """x_train, y_train and optionally x_val, y_val, x_test, y_test (missing ones are taken from train by the
    fractions) and class_names. x: (N, H, W[, C]) uint8 or float in [0, 1]; y: integer labels or one-hot."""
    file = Path(path).expanduser()
    with open(file, "rb") as stream:
        magic = stream.read(6)
    if magic == b"\x93NUMPY":
        raise fail("path", f"{file} holds a single array (.npy); expected an .npz with x_train and y_train (np.savez)")
    if not magic.startswith(b"PK"):  # np.load would blame pickling for any non-zip file
        raise fail("path", f"{file} is not an .npz file (write one with np.savez(path, x_train=..., y_train=...))")
    try:
        data = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise fail("path", f"{file}: cannot read as .npz ({exc})") from None
    with data:
        present = set(data.files)
        for name in ("x_train", "y_train"):
            if name not in present:
                raise fail("path", f"{file} has no array {name!r} (found: {', '.join(sorted(present)) or 'none'})")
        images, labels, widths = {}, {}, {}
        for split in ("train", "val", "test"):
            if (f"x_{split}" in present) != (f"y_{split}" in present):
                has, lacks = (f"x_{split}", f"y_{split}") if f"x_{split}" in present else (f"y_{split}", f"x_{split}")
                raise fail("path", f"{file} has {has} but no {lacks}")
            if f"x_{split}" in present:
                images[split] = _npz_images(file, data, f"x_{split}")
                labels[split], widths[split] = _npz_labels(file, data, f"y_{split}", len(images[split]))
        names = _npz_array(file, data, "class_names") if "class_names" in present else None

    first = images["train"]
    for split, x in images.items():
        if image_size is None and x.shape[1:3] != first.shape[1:3]:
            raise fail("path", f"{file}: x_{split} images are {x.shape[1]}x{x.shape[2]} but x_train's are "
                                f"{first.shape[1]}x{first.shape[2]}; set dataset.image_size to resize them all")
        if channels is None and x.shape[3] != first.shape[3]:
            raise fail("path", f"{file}: x_{split} has {x.shape[3]} channel(s) but x_train has {first.shape[3]}; "
                                "set dataset.channels to convert them all")

    num_classes = max(max(int(labels[s].max(initial=-1)) + 1, widths[s]) for s in labels)
    if names is not None:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names.ravel()]
        for split in labels:
            top = max(int(labels[split].max(initial=-1)), widths[split] - 1)
            if top >= len(names):
                raise fail("path", f"{file}: y_{split}: labels go up to {top} but class_names has {len(names)} "
                                    f"names (labels must be 0..{len(names) - 1})")
    class_names = names if names is not None else [str(i) for i in range(num_classes)]

    # One pool of every image, so the index-based split helpers serve every layout.
    x = np.concatenate([to_channels(resize_images(images[s], image_size), channels) for s in images])
    y = np.concatenate([labels[s] for s in images])
    ends = np.cumsum([len(labels[s]) for s in images])
    pools = {s: np.arange(end - len(labels[s]), end) for s, end in zip(images, ends)}
    indices = fill_splits(y, pools, validation_split, test_split, split_seed)
    return make_splits(x, y, class_names, *indices, train_size, split_seed)


def _npz_array(file: Path, data, name: str) -> np.ndarray:
    try:
        return data[name]
    except ValueError as exc:  # object arrays need pickle, which is refused for safety
        raise fail("path", f"{file}: {name}: cannot read ({exc})") from None


def _npz_images(file: Path, data, name: str) -> np.ndarray:
    x = _npz_array(file, data, name)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise fail("path", f"{file}: {name}: expected images shaped (N, H, W) or (N, H, W, C) with C 1 or 3, "
                            f"got {x.shape}")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        low, high = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if 0.0 <= low and high <= 1.0:  # NaN fails both comparisons
            return np.rint(x * 255.0).astype(np.uint8)
        raise fail("path", f"{file}: {name}: float images must lie in [0, 1], found [{low:g}, {high:g}] "
                            "(divide by 255, or store uint8)")
    raise fail("path", f"{file}: {name}: expected uint8, or float in [0, 1]; got {x.dtype}")


def _npz_labels(file: Path, data, name: str, count: int) -> tuple[np.ndarray, int]:
    """(int64 labels, one-hot width or 0)."""
    y = _npz_array(file, data, name)
    numeric = np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)
    if y.ndim not in (1, 2) or not (numeric or (y.ndim == 2 and y.dtype == np.bool_)):
        raise fail("path", f"{file}: {name}: expected integer labels (N,) or one-hot (N, K), got {y.dtype} {y.shape}")
    if np.issubdtype(y.dtype, np.floating) and not np.isfinite(y).all():
        where = np.argwhere(~np.isfinite(y))[0]
        raise fail("path", f"{file}: {name}: labels must be finite, found {y[tuple(where)]} at row {where[0]}")
    width = 0
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2:
        width = y.shape[1]
        blank = np.flatnonzero(y.max(axis=1, initial=0) <= 0)
        if len(blank):  # argmax would quietly call such a row class 0
            raise fail("path", f"{file}: {name}: one-hot row {blank[0]} has no positive entry")
        y = y.argmax(axis=1)
    if np.issubdtype(y.dtype, np.floating) and not np.all(y == np.round(y)):
        raise fail("path", f"{file}: {name}: labels must be whole numbers")
    if len(y) != count:
        raise fail("path", f"{file}: {name} has {len(y)} labels for {count} images")
    if len(y) and y.min() < 0:
        raise fail("path", f"{file}: {name}: labels must be >= 0, found {y.min()} at row {int(y.argmin())}")
    return y.astype(np.int64), width


def check_npz(args):
    path_arg(args, "file", "/data/mnist.npz")
    common_args(args, ("validation_split", "test_split"), size_optional=True, channels_optional=True)


def npz_listing(args):
    """The file's size and mtime."""
    return stamp(Path(args["path"]).expanduser())
