"""The `csv` source: a table of image paths and labels, as Keras' flow_from_dataframe reads it, checked row by
row (errors name the table's line), split and decoded like a folder's images (on_bad_image=error|skip).

No Keras, no MLflow; pandas is imported only when a table is read.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ablation.datasets.common import (
    MISSING,
    SPLIT_NAMES,
    Splits,
    bad_image_policy,
    common_args,
    fail,
    fill_splits,
    stamp,
    subsample,
)
from ablation.datasets.images import decode_splits

# Values of the split column (case-insensitive) -> split; the same names the folder layout accepts.
CSV_SPLITS = {"train": "train", "validation": "val", "val": "val", "valid": "val", "test": "test"}
INTEGER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class CsvSettings:
    """The `dataset=csv` settings (conf/dataset/csv.yaml); see load_csv."""
    path: str
    x_col: str = "filename"
    y_col: str = "class"
    split_col: str | None = None
    image_size: int = 64
    channels: int = 3
    validation_split: float = 0.2
    test_split: float = 0.2
    train_size: int | None = None
    split_seed: int = 0
    on_bad_image: str = "error"


def load_csv(settings: CsvSettings, *, allocate=None) -> Splits:
    """A table with one row per image, as Keras' flow_from_dataframe reads it: x_col holds the image's path
    (relative to the table's folder, or absolute), y_col its label. Labels are class names (sorted, then
    numbered) or integer class indices; the training rows fix the classes. split_col, when set, assigns each
    row to train, validation (val, valid) or test; splits it leaves empty are taken from train by the fractions,
    as are all three without it. Images are decoded like a folder's (resized to image_size, `channels`): a broken
    file stops the load naming its line (on_bad_image="error") or is left out and listed in Splits.skipped with
    its line (on_bad_image="skip"). allocate: as for load_folder."""
    o = settings
    files, y, owner, class_names = _csv_index(o.path, o.x_col, o.y_col, o.split_col)
    pools = {split: np.flatnonzero(owner == split) for split in SPLIT_NAMES if np.any(owner == split)}
    indices = fill_splits(y, pools, o.validation_split, o.test_split, o.split_seed)
    indices = subsample(y, *indices, o.train_size, o.split_seed)
    table = Path(o.path).expanduser()
    # Row i is line i + 2 of the table (the header is line 1), as in _csv_index's messages.
    return decode_splits(files, y, indices, class_names, o.image_size, o.channels, o.on_bad_image, allocate,
                          where=lambda i: f"{table} line {i + 2}: image file {files[i]}",
                          listed=lambda i, reason: (os.path.abspath(files[i]), f"{table.name} line {i + 2}: {reason}"))


def _csv_index(path, x_col, y_col, split_col) -> tuple[list[Path], np.ndarray, np.ndarray, list[str]]:
    """(image files, labels, the split of each row, class names), checking the table and that every image file
    exists; opens no image. Line numbers in errors count the header as line 1, as an editor or spreadsheet does."""
    import pandas as pd  # imported here: only this source needs it, and it is slow to import

    table_file = Path(path).expanduser()
    try:
        # Every cell as text: integer labels are recognised below, never turned into floats by an empty cell.
        table = pd.read_csv(table_file, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise fail("path", f"{table_file} is empty; expected a header line ({x_col},{y_col}) and one row per "
                            "image") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise fail("path", f"{table_file}: cannot read as CSV ({exc})") from None
    columns = [str(c) for c in table.columns]
    for key, column in (("x_col", x_col), ("y_col", y_col), ("split_col", split_col)):
        if column is not None and column not in columns:
            raise fail(key, f"{table_file} has no column {column!r} (columns: {', '.join(columns)})")
    if table.empty:
        raise fail("path", f"{table_file} has a header but no rows")

    paths, labels = table[x_col].str.strip(), table[y_col].str.strip()
    if split_col is None:
        owner = np.full(len(table), "train", dtype=object)
    else:
        owner = np.asarray([_csv_split(table_file, split_col, i, v) for i, v in enumerate(table[split_col])],
                           dtype=object)
        if not np.any(owner == "train"):
            raise fail("split_col", f"{table_file}: no row has {split_col}=train; the training rows fix the "
                                     "classes")
    files = []
    for i, (value, label) in enumerate(zip(paths, labels)):
        if not value:
            raise fail("path", f"{table_file} line {i + 2}: empty {x_col!r}")
        if not label:
            raise fail("path", f"{table_file} line {i + 2}: empty {y_col!r}")
        file = Path(value).expanduser()
        file = file if file.is_absolute() else table_file.parent / file
        if not file.is_file():
            raise fail("path", f"{table_file} line {i + 2}: image file {value} not found ({file})")
        files.append(file)

    train = owner == "train"
    if all(INTEGER.fullmatch(v) for v in labels):
        y = labels.astype(np.int64).to_numpy()
        if y.min() < 0:
            raise fail("path", f"{table_file} line {int(np.argmin(y)) + 2}: integer labels are class indices "
                                f">= 0, got {y.min()}")
        class_names = [str(k) for k in range(int(y[train].max()) + 1)]
        known = y < len(class_names)
    else:
        class_names = sorted(set(labels[train]))
        known = labels.isin(class_names).to_numpy()
        y = np.asarray([class_names.index(v) if ok else -1 for v, ok in zip(labels, known)], np.int64)
    if not known.all():
        i = int(np.flatnonzero(~known)[0])
        shown = ", ".join(class_names[:10]) + (", ..." if len(class_names) > 10 else "")
        split = {"val": "validation", "test": "test"}[owner[i]]
        raise fail("path", f"{table_file} line {i + 2}: label {labels.iloc[i]!r} of a {split} row is not among "
                            f"the training rows' classes ({shown})")
    if len(set(y[train])) < 2:
        raise fail("path", f"{table_file}: the training rows have only one class ({class_names[y[train][0]]}); "
                            "a classifier needs two or more")
    return files, y, owner.astype(str), class_names


def _csv_split(table_file, split_col, i, value) -> str:
    split = CSV_SPLITS.get(str(value).strip().lower())
    if split is None:
        raise fail("split_col", f"{table_file} line {i + 2}: {split_col} is {value!r}; expected train, "
                                 "validation (or val, valid) or test")
    return split


def check_csv(args):
    value = args.get("path")
    if value in (None, "", MISSING):
        raise fail("path", "required, e.g. dataset.path=/data/labels.csv")
    table = Path(str(value)).expanduser()
    if not table.exists():
        raise fail("path", f"table {table} does not exist")
    if table.is_dir():
        raise fail("path", f"{table} is a folder; expected a CSV table")
    for key in ("x_col", "y_col", "split_col"):
        column = args.get(key)
        if not (isinstance(column, str) and column.strip()) and not (key == "split_col" and column is None):
            raise fail(key, f"expected a column name{' or null' if key == 'split_col' else ''}, got {column!r}")
    if args["x_col"] == args["y_col"] or args["split_col"] in (args["x_col"], args["y_col"]):
        raise fail("y_col" if args["x_col"] == args["y_col"] else "split_col",
                    f"x_col, y_col and split_col must name different columns, got {args['x_col']!r}, "
                    f"{args['y_col']!r}, {args['split_col']!r}")
    common_args(args, ("validation_split", "test_split"))
    bad_image_policy(args)


def csv_listing(args):
    """The table's size and mtime, and every image file it names with its own."""
    table = Path(args["path"]).expanduser()
    files = _csv_index(table, args["x_col"], args["y_col"], args["split_col"])[0]
    return [stamp(table), [(str(f), *stamp(f)) for f in files]]
