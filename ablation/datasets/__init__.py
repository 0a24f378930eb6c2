"""Image sources -> Splits(train, val, test) of uint8 (N, H, W, C) arrays plus class names.

`load(cfg)` dispatches on `cfg.name` to `load_<name>(**rest)`; `check(cfg)` vets every key without reading
images, so a bad config fails before anything slow happens. No Keras, no MLflow: the arrays are plain numpy,
so a test or a notebook can use them directly.

Decoded splits are cached (`cache: true`, the default) under runs/cache/<name>-<key>/ as .npy files and come back
as read-only memory maps, so the jobs of a sweep decode a dataset once between them; see `cache_key`.

One module per source (digits, shapes, folder, npz, csv, keras_datasets: the option's name), built on common
(types, errors, checks, splitting), images (decoding files) and cache; this module registers the sources and
re-exports the names other modules use, so `datasets.load_folder`, `datasets.Splits` and the like stay here.
"""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

from ablation.datasets import csv, digits, folder, keras_datasets, npz, shapes

# discard, publish, decode_into, images_in and read_image are re-exported for ablation.cli.expand, ablation.training.expansion,
# ablation.training.synthetic and ablation.cli.predict, which write their own folders and decode images exactly as the folder source does.
from ablation.datasets.cache import (  # noqa: F401
    CACHE_ENV,
    cache_root,
    discard,
    fill_cache,
    folder_name,
    key_of,
    open_cache,
    publish,
)
from ablation.datasets.common import (
    BAD_IMAGE_CHOICES,
    DECODE_CHUNK,
    MISSING,
    SPLIT_NAMES,
    DataError,
    Split,
    Splits,
    fail,
)
from ablation.datasets.csv import CSV_SPLITS, CsvSettings, check_csv, load_csv
from ablation.datasets.digits import load_digits
from ablation.datasets.folder import SPLIT_FOLDERS, load_folder
from ablation.datasets.images import (  # noqa: F401
    IMAGE_EXTENSIONS,
    MAGIC,
    BadImage,
    decode_into,
    images_in,
    read_image,
)
from ablation.datasets.keras_datasets import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    FASHION_CLASSES,
    FASHION_FILES,
    KERAS_DATASETS,
    check_keras_datasets,
    keras_datasets_dir,
    load_keras_datasets,
)
from ablation.datasets.npz import load_npz
from ablation.datasets.shapes import SHAPE_AXES, SHAPES, ShapesSettings, load_shapes

__all__ = [
    "load", "check", "cache_key", "cache_path", "Split", "Splits", "DataError", "LOADERS", "CHECKS", "LISTINGS",
    "load_digits", "load_shapes", "ShapesSettings", "CsvSettings", "load_folder", "load_npz", "load_csv",
    "load_keras_datasets", "SETTINGS",
    "check_csv", "check_keras_datasets", "keras_datasets_dir", "BadImage",
    "BAD_IMAGE_CHOICES", "CACHE_ENV", "CIFAR10_CLASSES", "CIFAR100_CLASSES", "CSV_SPLITS", "DECODE_CHUNK",
    "FASHION_CLASSES", "FASHION_FILES", "IMAGE_EXTENSIONS", "KERAS_DATASETS", "MAGIC", "MISSING",
    "SHAPES", "SHAPE_AXES", "SPLIT_FOLDERS", "SPLIT_NAMES",
]

# Option name (conf/dataset/<name>.yaml, dataset.name) -> the source's loader, its check, and what its cache key
# sees of the files it reads (sources generated in code have no listing: settings and code say everything).
def _load_shapes(**args) -> Splits:
    return load_shapes(ShapesSettings(**args))


def _load_csv(*, allocate=None, **args) -> Splits:
    return load_csv(CsvSettings(**args), allocate=allocate)


# Each dataset's loader, called with its settings as keyword arguments; those with many settings take them as one
# settings object (SETTINGS), whose fields are the dataset's keys.
LOADERS = {"digits": load_digits, "shapes": _load_shapes, "folder": load_folder, "npz": load_npz,
           "csv": _load_csv, "keras_datasets": load_keras_datasets}
SETTINGS = {"shapes": ShapesSettings, "csv": CsvSettings}
CHECKS = {"digits": digits.check_digits, "shapes": shapes.check_shapes, "folder": folder.check_folder,
          "npz": npz.check_npz, "csv": check_csv, "keras_datasets": check_keras_datasets}
LISTINGS = {"folder": folder.folder_listing, "npz": npz.npz_listing, "csv": csv.csv_listing,
            "keras_datasets": keras_datasets.keras_listing}


def load(cfg) -> Splits:
    """cfg: the `dataset` node (DictConfig or dict). Checks it, then calls load_<cfg.name>(**the other keys),
    or, with `cache: true` (the default), reads its earlier result from `cache_path(cfg)` (writing it first if
    absent): arrays memory-mapped read-only, so index them (`x[idx]` copies) rather than write into them."""
    name, args, cached = _settings(cfg)
    if not cached:
        return LOADERS[name](**args)
    listing = _source_listing(name, args)
    target = cache_root() / f"{name}-{key_of(name, args, listing)}"
    splits = open_cache(target)
    if splits is None:
        splits = fill_cache(name, LOADERS[name], args, target, lambda: _source_listing(name, args) == listing)
    return splits


def check(cfg) -> None:
    """Raise DataError for the first bad key, reading no image data (paths are only tested for existence)."""
    _settings(cfg)


def cache_key(cfg) -> str:
    """16 hex digits naming what load(cfg) returns: the loader's settings (path resolved), the source's listing
    (folder: every image's relative path, size and mtime_ns; npz: the file's size and mtime_ns), this package's
    source and the decoding libraries' versions. Any change gives a new key, so a stale cache is never read.
    Lists the folder but reads no image."""
    name, args, _ = _settings(cfg)
    return key_of(name, args, _source_listing(name, args))


def cache_path(cfg) -> Path:
    """The folder load(cfg) reads from or writes to with `cache: true` (it may not exist yet)."""
    return cache_root() / f"{_settings(cfg)[0]}-{cache_key(cfg)}"


def _source_listing(name: str, args: dict):
    """What the key must see of the files a loader reads; stat() only, no image is opened."""
    return LISTINGS[name](args) if name in LISTINGS else None


def _settings(cfg) -> tuple[str, dict, bool]:
    """(name, the loader's keyword arguments, whether to use the cache)."""
    given = _as_dict(cfg)
    cached = given.pop("cache", True)
    if not isinstance(cached, bool):
        raise fail("cache", f"expected true or false, got {cached!r}")
    # How the model normalises its input (ablation/training/normalize.py, validated there): not a loader setting, and the
    # arrays and their cache key are the same whatever it is.
    given.pop("normalize", None)
    args = _arguments(given)
    return args.pop("name"), args, cached


def _arguments(given: dict) -> dict:
    """The loader's keyword arguments: its defaults overlaid with the config, every value vetted."""
    name = given.get("name")
    if name not in LOADERS:
        raise fail("name", f"unknown dataset {name!r} (choose {', '.join(LOADERS)})")
    params = _parameters(name)
    for key in given:
        if key != "name" and key not in params:
            raise fail(key, f"not a setting of dataset {name} (settings: {', '.join([*params, 'cache'])})")
    args = {k: default for k, default in params.items() if default is not inspect.Parameter.empty}
    args.update(given)
    CHECKS[name](args)
    return args


def _parameters(name: str) -> dict:
    """A dataset's settings and their defaults (inspect.Parameter.empty: required): the fields of its settings
    object, or its loader's parameters. Keyword-only parameters take runtime values (where to decode to), never
    config keys."""
    if name in SETTINGS:
        return {f.name: f.default if f.default is not dataclasses.MISSING else inspect.Parameter.empty
                for f in dataclasses.fields(SETTINGS[name])}
    return {k: p.default for k, p in inspect.signature(LOADERS[name]).parameters.items()
            if p.kind is not p.KEYWORD_ONLY}


def _as_dict(cfg) -> dict:
    if isinstance(cfg, dict):
        return dict(cfg)
    from omegaconf import OmegaConf  # ships with Hydra; imported late so plain-dict callers need nothing else

    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
