"""The `folder` source: images in Keras' directory layout, DIR/<class>/* or DIR/{train, validation|val|valid,
test}/<class>/*, checked, split and decoded (unreadable images: on_bad_image=error|skip).

No Keras, no MLflow.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ablation.datasets.common import (
    Splits,
    bad_image_policy,
    common_args,
    fail,
    fill_splits,
    path_arg,
    stamp,
    subsample,
)
from ablation.datasets.images import IMAGE_EXTENSIONS, decode_splits, images_in

# Folder layout: split name -> accepted folder names ("valid" is what Roboflow exports).
SPLIT_FOLDERS = {"train": ("train",), "val": ("validation", "val", "valid"), "test": ("test",)}


def load_folder(path: str, image_size: int = 64, channels: int = 3, validation_split: float = 0.2,
                test_split: float = 0.2, train_size: int | None = None, split_seed: int = 0,
                on_bad_image: str = "error", *, allocate=None) -> Splits:
    """Keras' directory layout: DIR/<class>/* split here, or DIR/{train, validation|val|valid, test}/<class>/*.

    Class names are the sorted class folder names of train (the label mapping); splits the folder lacks are taken
    from train by the fractions. Images are resized to image_size x image_size (aspect ratio not kept, as Keras
    does). Files without an image extension and hidden files (.DS_Store, macOS' ._ copies) are not read.
    Every kept image is decoded here, so a broken file stops the load (on_bad_image="error") or is left out and
    listed in Splits.skipped (on_bad_image="skip"); training never meets one.
    allocate(split, shape) -> the uint8 array that split's images are decoded into (default np.empty); load()
    passes memory-mapped files, so a folder larger than memory never has to fit in it.
    """
    files, y, owner, present, class_names = _folder_index(path)
    # The file list is split first, so only the images a split keeps are decoded, straight into its array.
    indices = fill_splits(y, {split: np.flatnonzero(owner == split) for split in present},
                           validation_split, test_split, split_seed)
    indices = subsample(y, *indices, train_size, split_seed)
    root = Path(path).expanduser()
    return decode_splits(files, y, indices, class_names, image_size, channels, on_bad_image, allocate,
                          where=lambda i: str(files[i]), listed=lambda i, reason: (_listed(root, files[i]), reason))


def _listed(root: Path, file: Path) -> str:
    """The path a skip list names: absolute with the folder resolved, as the cache key resolves it."""
    return (root.resolve() / file.relative_to(root)).as_posix()


def _folder_index(path) -> tuple[list[Path], np.ndarray, np.ndarray, list[str], list[str]]:
    """(image files, their labels, the split each came from, the splits the folder has, class names), checking
    the layout; reads no image."""
    root = Path(path).expanduser()
    layout = _folder_layout(root)
    if "train" not in layout:
        layout = {"train": root}
    found = {split: _class_files(folder) for split, folder in layout.items()}
    if not found["train"]:
        raise fail("path", f"{layout['train']} has no class folders with images ({' '.join(IMAGE_EXTENSIONS)})")
    for split, folder in layout.items():
        for sub in _subfolders(folder):
            if sub.name not in found[split]:
                # Left out, it would silently shift every later class's label index.
                raise fail("path", f"{sub}: empty class folder (no {' '.join(IMAGE_EXTENSIONS)} files); add images "
                                    f"or remove the folder")
    class_names = sorted(found["train"])
    if len(class_names) < 2:
        raise fail("path", f"{layout['train']} has only one class folder ({class_names[0]}); "
                            "a classifier needs two or more")
    for split, classes in found.items():
        for name in classes:
            if name not in found["train"]:
                raise fail("path", f"{layout[split] / name}: class {name!r} has no images in {layout['train']}")

    files, labels, owner = [], [], []
    for split, classes in found.items():
        for name, paths in sorted(classes.items()):
            files += paths
            labels += [class_names.index(name)] * len(paths)
            owner += [split] * len(paths)
    return files, np.asarray(labels, np.int64), np.asarray(owner), list(found), class_names


def _folder_layout(root: Path) -> dict[str, Path]:
    """Split name -> folder when root holds train/ (and maybe validation/, test/); empty for the one-folder layout."""
    if not (root / "train").is_dir():
        return {}
    layout = {}
    for split, names in SPLIT_FOLDERS.items():
        present = [root / name for name in names if (root / name).is_dir()]
        if len(present) > 1:
            raise fail("path", f"{root} has both {present[0].name}/ and {present[1].name}/; keep one")
        if present:
            layout[split] = present[0]
    known = {p.name for p in layout.values()}
    for other in (p for p in _subfolders(root) if p.name not in known):
        if _class_files(other) or images_in(other):
            # Silently ignoring it would hide a misspelt split (e.g. "validaton") and shrink the data.
            raise fail("path", f"{other}: unexpected folder beside train/ (expected validation/ or val/, and test/)")
    return layout


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_files(folder: Path) -> dict[str, list[Path]]:
    """Class folder name -> its image files, recursive and sorted as Keras does; folders without images left out."""
    classes = {}
    for sub in _subfolders(folder):
        files = images_in(sub)
        if files:
            classes[sub.name] = files
    return classes


def check_folder(args):
    path_arg(args, "folder", "/data/flowers")
    common_args(args, ("validation_split", "test_split"))
    bad_image_policy(args)


def folder_listing(args):
    """Every image's path relative to the folder, with its size and mtime; stat() only, no image is opened."""
    root = Path(args["path"]).expanduser()
    return [(f.relative_to(root).as_posix(), *stamp(f)) for f in _folder_index(root)[0]]
