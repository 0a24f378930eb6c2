"""Offline expansion (`augmentation.placement=offline`): the training split written once as image files, the
originals plus `copies` augmented versions of each, in Keras' folder layout. Training then reads these fixed
images and augments nothing itself (the same images every epoch), as when a dataset is grown ahead of time
with ImageDataGenerator's save_to_dir.

    <root>/<key>/train/<class>/<save_prefix>_<index>_<copy>.<save_format>   copy 0 = the original, 1..copies augmented
    <root>/<key>/validation/<class>/<save_prefix>_<index>_0.png             the dataset's own validation split
    <root>/<key>/test/<class>/<save_prefix>_<index>_0.png                   and test split, never augmented
    <root>/<key>/manifest.json                                              inputs, counts, bytes

<root> is runs/expanded/ (or $ABLATION_EXPANDED_DIR). The folder is a `folder` dataset of its own
(dataset=folder dataset.path=<root>/<key>). Its key names everything the images depend on (the dataset's cache
key, the policy's fingerprint, copies, seed, format, prefix), so it is written once and then reused; it is built
in a private temporary folder and renamed into place, so a reader never sees half of one.

Run takes this through prepare(); `ablation-expand` (ablation.cli.expand) writes one on its own.
"""
from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ablation import augment, datasets
from ablation.core import paths
from ablation.core.errors import ConfigError
from ablation.datasets.images import Progress

FORMATS = ("png", "jpg")
# save_prefix: a plain file-name start (no folders, not hidden, which the folder loader would skip).
PREFIX_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
EXPANDED_ENV = paths.FOLDERS["expanded"]
# Split -> folder name in the written layout (the names the folder loader reads back).
SPLIT_FOLDERS = {"train": "train", "val": "validation", "test": "test"}
# Images augmented per draw of the generator: the images of copy c, chunk k come from default_rng([seed, c, k]).
# Part of the key, as is LAYOUT, which changes whenever the written files would.
CHUNK = 256
LAYOUT = 1
JPEG_QUALITY = 95


def offline(cfg: DictConfig) -> bool:
    return cfg.augmentation.get("placement", "host") == "offline"


def label(cfg: DictConfig, policy_name: str) -> str:
    """The policy's name in run names, the `augmentation` tag and the report: `<policy>@offline` when offline, so
    online and offline runs of one policy are separate rows."""
    return f"{policy_name}@offline" if offline(cfg) else policy_name


def root() -> Path:
    return paths.folder("expanded")


def key(cfg: DictConfig, policy: augment.Policy) -> str:
    """The folder name: readable parts, then a hash of everything the written images depend on."""
    aug = cfg.augmentation
    identity = {"layout": [LAYOUT, CHUNK], "dataset": datasets.cache_key(cfg.dataset),
                "policy": policy.fingerprint, "copies": aug.copies, "seed": cfg.seed,
                "save_format": aug.save_format, "save_prefix": aug.save_prefix}
    return datasets.folder_name(f"{cfg.dataset.name}-{policy.name}-x{aug.copies}-s{cfg.seed}", identity)


@dataclass(frozen=True)
class Expansion:
    folder: Path
    manifest: dict
    created: bool         # False: an earlier expansion was reused
    seconds: float        # writing it (or finding it), plus reading the training images back when loaded
    train: datasets.Split | None = None  # the expanded training split, once loaded (load_train)

    @property
    def images(self) -> int:
        return self.manifest["counts"]["train"]

    @property
    def bytes(self) -> int:
        return self.manifest["bytes"]

    @property
    def metrics(self) -> dict[str, float]:
        return {"data/expanded_images": self.images, "data/expanded_bytes": self.bytes, "time/expand_s": self.seconds}

    def dataset_config(self, cache: bool = True) -> dict:
        """The `dataset` node that reads this folder back: python -m ablation dataset=folder dataset.path=..."""
        size, _, channels = self.manifest["image_shape"]
        return {"name": "folder", "path": str(self.folder), "image_size": size, "channels": channels,
                "train_size": None, "split_seed": self.manifest["seed"], "on_bad_image": "error", "cache": cache}


# ---------------------------------------------------------------------------------------------- for run()

def prepare(cfg: DictConfig, splits: datasets.Splits, policy: augment.Policy) -> Expansion:
    """Expand (or reuse) and read the expanded training images back through the folder loader, labelled in the
    dataset's own class order. Validation and test stay the dataset's in-memory splits."""
    started = time.perf_counter()
    expansion = expand(cfg, splits, policy)
    train = load_train(expansion, splits.class_names, cache=cfg.dataset.get("cache", True))
    return replace(expansion, train=train, seconds=time.perf_counter() - started)


def load_train(expansion: Expansion, class_names: list[str], cache: bool = True) -> datasets.Split:
    loaded = datasets.load(expansion.dataset_config(cache))
    if len(loaded.train) != expansion.images:
        raise datasets.DataError(f"augmentation.placement: {expansion.folder} holds {len(loaded.train)} training images, "
                                 f"its manifest.json says {expansion.images}; delete the folder to write it again")
    # The folder's labels follow its sorted class folders; mapped back to the dataset's order, the model's outputs
    # mean the same classes as in an online run.
    order = np.array([class_names.index(name) for name in loaded.class_names], np.int64)
    return datasets.Split(loaded.train.x, order[loaded.train.y])


# ---------------------------------------------------------------------------------------------- writing

def expand(cfg: DictConfig, splits: datasets.Splits, policy: augment.Policy) -> Expansion:
    """The expanded folder for (dataset, policy, copies, seed, format, prefix): reused when it exists, otherwise
    written into a private temporary folder and renamed into place (parallel jobs each publish a whole copy or
    none; the first rename wins)."""
    started = time.perf_counter()
    _check(splits)
    target = root() / key(cfg, policy)
    manifest = read_manifest(target)
    if manifest is not None:
        return Expansion(target, manifest, created=False, seconds=time.perf_counter() - started)

    def write(scratch: Path) -> None:
        counts, size = _write(cfg, splits, policy, scratch)
        aug = cfg.augmentation
        manifest = {"key": target.name, "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
                    "dataset_cache_key": datasets.cache_key(cfg.dataset), "policy": policy.name,
                    "policy_fingerprint": policy.fingerprint, "policy_transforms": policy.to_dict(),
                    "copies": aug.copies, "seed": cfg.seed, "save_format": aug.save_format,
                    "save_prefix": aug.save_prefix, "image_shape": list(splits.input_shape),
                    "class_names": list(splits.class_names), "counts": counts, "bytes": size,
                    "write_s": round(time.perf_counter() - started, 3)}
        (scratch / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))

    manifest = datasets.publish(target, write, read_manifest, "augmentation.placement")
    return Expansion(target, manifest, created=True, seconds=time.perf_counter() - started)


def _check(splits: datasets.Splits) -> None:
    height, width, _ = splits.input_shape
    if height != width:
        # The folder loader reads images back as image_size x image_size.
        raise ConfigError(f"augmentation.placement: offline expansion writes square images, the dataset's are "
                          f"{height}x{width}; set dataset.image_size")
    for split in ("val", "test"):
        if len(getattr(splits, split)) == 0:
            # Read back as a folder, a missing split would be carved out of the expanded training images.
            raise ConfigError(f"augmentation.placement: offline expansion needs the dataset's {split} split, which is "
                              f"empty")
    for name in splits.class_names:
        if not name or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\\0"):
            raise ConfigError(f"augmentation.placement: class name {name!r} cannot be a folder name, which offline "
                              f"expansion writes one of per class")


def _write(cfg: DictConfig, splits: datasets.Splits, policy: augment.Policy, folder: Path) -> tuple[dict, int]:
    """Write every image; returns (counts, bytes of the image files)."""
    aug = cfg.augmentation
    copies, fmt, prefix = int(aug.copies), str(aug.save_format), str(aug.save_prefix)
    index_width = len(str(max(len(splits.train), len(splits.val), len(splits.test)) - 1))
    copy_width = len(str(copies))
    for split, sub in SPLIT_FOLDERS.items():
        for label in np.unique(getattr(splits, split).y):
            (folder / sub / splits.class_names[label]).mkdir(parents=True)

    def write(split: str, start: int, copy: int) -> int:
        part = getattr(splits, split)
        x = np.asarray(part.x[start:start + CHUNK])
        if copy:
            x = policy.augment_batch(x, np.random.default_rng([cfg.seed, copy, start // CHUNK]))
        # Validation and test are stored losslessly whatever save_format is: they must stay the dataset's pixels.
        ext = fmt if split == "train" else "png"
        written = 0
        for offset, (image, label) in enumerate(zip(x, part.y[start:start + CHUNK])):
            name = f"{prefix}_{start + offset:0{index_width}d}_{copy:0{copy_width}d}.{ext}"
            written += _save(image, folder / SPLIT_FOLDERS[split] / splits.class_names[label] / name, ext)
        return written

    jobs = [("train", start, copy) for copy in range(copies + 1) for start in range(0, len(splits.train), CHUNK)]
    jobs += [(split, start, 0) for split in ("val", "test") for start in range(0, len(getattr(splits, split)), CHUNK)]
    # albumentations (OpenCV) and PIL's encoders release the GIL; the policy keeps one pipeline per thread.
    images = [min(CHUNK, len(getattr(splits, split)) - start) for split, start, _ in jobs]
    progress = Progress(sum(images), "expansion: wrote", logging.getLogger(__name__))
    size = 0
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for count, written in zip(images, pool.map(lambda job: write(*job), jobs)):
            size += written
            progress.add(count)
    progress.end()
    counts = {"train_originals": len(splits.train), "train": len(splits.train) * (copies + 1),
              "validation": len(splits.val), "test": len(splits.test)}
    return counts, size


def _save(image: np.ndarray, path: Path, ext: str) -> int:
    from PIL import Image

    picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    if ext == "jpg":
        picture.save(path, format="JPEG", quality=JPEG_QUALITY)
    else:
        picture.save(path, format="PNG")
    return path.stat().st_size


def read_manifest(folder: Path) -> dict | None:
    """The folder's manifest when it is a complete expansion of this key; None otherwise."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("key") == folder.name else None
