"""Image sources -> Splits(train, val, test) of uint8 (N, H, W, C) arrays plus class names.

`load(cfg)` dispatches on `cfg.name` to `load_<name>(**rest)`; `check(cfg)` vets every key without reading
images, so a bad config fails before anything slow happens. No Keras, no MLflow: the arrays are plain numpy,
so a test or a notebook can use them directly.

Decoded splits are cached (`cache: true`, the default) under runs/cache/<name>-<key>/ as .npy files and come back
as read-only memory maps, so the jobs of a sweep decode a dataset once between them; see `cache_key`.
"""
from __future__ import annotations

import colorsys
import hashlib
import inspect
import json
import logging
import math
import os
import shutil
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import PIL
import sklearn
from PIL import Image, ImageOps
from sklearn.model_selection import train_test_split

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
SHAPES = ("circle", "square", "triangle", "star", "cross")
# Axes that measurably hurt a CNN trained on the narrow range (brightness does not, so it is not among them).
SHAPE_AXES = ("shift", "rotate", "scale", "hue")
# Folder layout: split name -> accepted folder names ("valid" is what Roboflow exports).
SPLIT_FOLDERS = {"train": ("train",), "val": ("validation", "val", "valid"), "test": ("test",)}
SPLIT_NAMES = ("train", "val", "test")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
CACHE_ENV = "ABLATION_CACHE_DIR"
# Images decoded per round of the thread pool: bounds the pending tasks for folders far larger than memory.
DECODE_CHUNK = 512
MISSING = "???"  # OmegaConf's mark for a mandatory value nobody set
# folder datasets: an unreadable image stops the load (error) or is left out, counted and listed (skip).
BAD_IMAGE_CHOICES = ("error", "skip")


log = logging.getLogger(__name__)


class DataError(ValueError):
    """Unusable dataset config or data; the one-line message starts with the config key (usually dataset.path)."""


def _fail(key: str, message: str) -> DataError:
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
    # (file, reason) for each unreadable image left out with on_bad_image=skip (folder datasets).
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.train.x.shape[1:])


# ---------------------------------------------------------------------------------------------- entry points

def load(cfg) -> Splits:
    """cfg: the `dataset` node (DictConfig or dict). Checks it, then calls load_<cfg.name>(**the other keys),
    or, with `cache: true` (the default), reads its earlier result from `cache_path(cfg)` (writing it first if
    absent): arrays memory-mapped read-only, so index them (`x[idx]` copies) rather than write into them."""
    name, args, cached = _settings(cfg)
    if not cached:
        return LOADERS[name](**args)
    listing = _source_listing(name, args)
    target = _cache_root() / f"{name}-{_key(name, args, listing)}"
    splits = _open_cache(target)
    if splits is None:
        splits = _fill_cache(name, args, listing, target)
    return splits


def check(cfg) -> None:
    """Raise DataError for the first bad key, reading no image data (paths are only tested for existence)."""
    _settings(cfg)


def cache_key(cfg) -> str:
    """16 hex digits naming what load(cfg) returns: the loader's settings (path resolved), the source's listing
    (folder: every image's relative path, size and mtime_ns; npz: the file's size and mtime_ns), this module's
    source and the decoding libraries' versions. Any change gives a new key, so a stale cache is never read.
    Lists the folder but reads no image."""
    name, args, _ = _settings(cfg)
    return _key(name, args, _source_listing(name, args))


def cache_path(cfg) -> Path:
    """The folder load(cfg) reads from or writes to with `cache: true` (it may not exist yet)."""
    return _cache_root() / f"{_settings(cfg)[0]}-{cache_key(cfg)}"


def _settings(cfg) -> tuple[str, dict, bool]:
    """(name, the loader's keyword arguments, whether to use the cache)."""
    given = _as_dict(cfg)
    cached = given.pop("cache", True)
    if not isinstance(cached, bool):
        raise _fail("cache", f"expected true or false, got {cached!r}")
    # How the model normalises its input (ablation/normalize.py, validated there): not a loader setting, and the
    # arrays and their cache key are the same whatever it is.
    given.pop("normalize", None)
    args = _arguments(given)
    return args.pop("name"), args, cached


def _arguments(given: dict) -> dict:
    """The loader's keyword arguments: its defaults overlaid with the config, every value vetted."""
    name = given.get("name")
    if name not in LOADERS:
        raise _fail("name", f"unknown dataset {name!r} (choose {', '.join(LOADERS)})")
    # Keyword-only parameters take runtime values (where to decode to), never config keys.
    params = {k: p for k, p in inspect.signature(LOADERS[name]).parameters.items() if p.kind is not p.KEYWORD_ONLY}
    for key in given:
        if key != "name" and key not in params:
            raise _fail(key, f"not a setting of dataset {name} (settings: {', '.join([*params, 'cache'])})")
    args = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    args.update(given)
    CHECKS[name](args)
    return args


def _as_dict(cfg) -> dict:
    if isinstance(cfg, dict):
        return dict(cfg)
    from omegaconf import OmegaConf  # ships with Hydra; imported late so plain-dict callers need nothing else

    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


# ---------------------------------------------------------------------------------------------- digits

def load_digits(image_size: int = 32, channels: int = 1, train_size: int | None = 500, validation_split: float = 0.2,
                test_split: float = 0.2, split_seed: int = 0) -> Splits:
    """scikit-learn's bundled 8x8 handwritten digits (values 0-16), scaled to 0-255 and upscaled smoothly."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = bunch.images.astype(np.float32) * (255.0 / 16.0)
    if image_size != images.shape[1]:
        # Cubic keeps strokes round when blowing 8 px up 4x; it overshoots a little, hence the clip.
        images = np.stack([cv2.resize(im, (image_size, image_size), interpolation=cv2.INTER_CUBIC) for im in images])
    x = _to_channels(np.clip(np.rint(images), 0, 255).astype(np.uint8)[..., None], channels)
    y = bunch.target.astype(np.int64)
    train, val, test = _three_way(y, validation_split, test_split, split_seed, blame="validation_split")
    return _splits(x, y, [str(i) for i in range(10)], train, val, test, train_size, split_seed)


# ---------------------------------------------------------------------------------------------- shapes

def load_shapes(image_size: int = 32, channels: int = 3, classes: list[str] = ("circle", "square", "triangle", "cross"),
                n_train: int = 600, n_val: int = 300, n_test: int = 300,
                train_shift: float = 0.1, train_rotate_range: list[float] = (-10.0, 10.0),
                train_scale_range: list[float] = (0.3, 0.34), train_brightness_range: list[float] = (0.8, 1.0),
                train_hue_range: list[float] = (0.0, 40.0),
                eval_shift: float = 1.0, eval_rotate_range: list[float] = (-180.0, 180.0),
                eval_scale_range: list[float] = (0.18, 0.42), eval_brightness_range: list[float] = (0.2, 1.0),
                eval_hue_range: list[float] = (0.0, 360.0), eval_wide_axes: int = 1, split_seed: int = 0) -> Splits:
    """Coloured shapes drawn on the fly. Training images vary little along four axes (centred, upright, one size,
    warm colours); each validation/test image leaves that range on `eval_wide_axes` of them, chosen at random,
    so a model trained without augmentation fails on part of them and each geometric or photometric
    augmentation wins back the part it covers. Brightness is narrow in training and always wide in evaluation,
    though a CNN hardly notices it (measured: accuracy 1.00 on brightness-only shifted images without augmentation).

    shift: how far the centre may move, as a fraction of the room that keeps the shape inside the frame.
    rotate: degrees. scale: circumradius as a fraction of image_size. brightness: factor on the whole image.
    hue: the shape's colour on the colour wheel, in degrees (0 red, 120 green, 240 blue).
    """
    narrow = dict(shift=train_shift, rotate=train_rotate_range, scale=train_scale_range,
                  brightness=train_brightness_range, hue=train_hue_range)
    wide = dict(shift=eval_shift, rotate=eval_rotate_range, scale=eval_scale_range,
                brightness=eval_brightness_range, hue=eval_hue_range)
    parts = []
    for index, (n, wide_axes) in enumerate([(n_train, 0), (n_val, eval_wide_axes), (n_test, eval_wide_axes)]):
        # One stream per split, so the validation and test images stay the same when n_train changes.
        rng = np.random.default_rng([split_seed, index])
        x, y = _draw_shapes(rng, n, list(classes), image_size, narrow, wide, wide_axes)
        parts.append(Split(_to_channels(x, channels), y))
    return Splits(*parts, class_names=list(classes))


def _draw_shapes(rng, n, classes, size, narrow, wide, wide_axes):
    y = rng.permutation(np.arange(n) % len(classes)).astype(np.int64)  # balanced classes
    # Exactly `wide_axes` axes per image take the wide range. All at once would leave a model that lacks any
    # one augmentation near chance, hiding what each augmentation contributes.
    is_wide = rng.random((n, len(SHAPE_AXES))).argsort(axis=1) < wide_axes
    is_wide = np.concatenate([is_wide, np.full((n, 1), wide_axes > 0)], axis=1)  # brightness: wide in evaluation

    def sample(axis, draw):
        return np.where(is_wide[:, (*SHAPE_AXES, "brightness").index(axis)], draw(wide[axis]), draw(narrow[axis]))

    uniform = lambda bounds: rng.uniform(*bounds, n)  # noqa: E731
    radius = sample("scale", uniform) * size
    middle = (size - 1) / 2
    room = np.maximum(middle - radius, 0.0)
    centre = middle + (sample("shift", lambda v: np.full(n, float(v))) * room)[:, None] * rng.uniform(-1, 1, (n, 2))
    angle = np.deg2rad(sample("rotate", uniform))
    factor = sample("brightness", uniform).astype(np.float32)
    hues = (sample("hue", uniform) / 360.0) % 1.0
    colour = [colorsys.hsv_to_rgb(h, s, 1.0) for h, s in zip(hues, rng.uniform(0.6, 1.0, n))]
    background = rng.uniform(0, 60, n)
    noise = rng.normal(0, 6, (n, size, size, 3)).astype(np.float32)

    canvas = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        canvas[i] = int(background[i])
        rgb = tuple(int(255 * c) for c in colour[i])
        shape = classes[y[i]]
        if shape == "circle":
            centre_fixed = tuple(int(round(c * 16)) for c in centre[i])
            cv2.circle(canvas[i], centre_fixed, int(round(radius[i] * 16)), rgb, -1, cv2.LINE_AA, shift=4)
        else:
            points = _outline(shape) @ _rotation(angle[i]).T * radius[i] + centre[i]
            cv2.fillPoly(canvas[i], [np.rint(points * 16).astype(np.int32)], rgb, cv2.LINE_AA, shift=4)
    # Noise and brightness apply to the whole image, as a camera's would.
    images = (canvas.astype(np.float32) + noise) * factor[:, None, None, None]
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), y


def _outline(shape: str) -> np.ndarray:
    """Upright polygon with circumradius 1, (x, y) in image coordinates (y grows downwards)."""
    def ring(count, start_deg, radii=(1.0,)):
        t = np.deg2rad(start_deg + np.arange(count) * 360 / count)
        r = np.resize(np.asarray(radii), count)
        return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)

    if shape == "square":
        return ring(4, 45)
    if shape == "triangle":
        return ring(3, -90)
    if shape == "star":
        return ring(10, -90, radii=(1.0, 0.42))
    if shape == "cross":
        w, a = 0.3, math.sqrt(1 - 0.3 ** 2)  # arm half-width and length, so the corners touch the unit circle
        return np.array([(w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a),
                         (-w, a), (-w, w), (-a, w), (-a, -w), (-w, -w), (-w, -a)])
    raise ValueError(shape)


def _rotation(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


# ---------------------------------------------------------------------------------------------- folder

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
    indices = _fill_splits(y, {split: np.flatnonzero(owner == split) for split in present},
                           validation_split, test_split, split_seed)
    indices = _subsample(y, *indices, train_size, split_seed)
    allocate = allocate or (lambda split, shape: np.empty(shape, np.uint8))
    root = Path(path).expanduser()
    parts, skipped = [], []
    for split, idx in zip(SPLIT_NAMES, indices):
        x = allocate(split, (len(idx), image_size, image_size, channels))
        bad = _decode_into(x, [files[i] for i in idx], image_size, channels, stop=on_bad_image == "error")
        if bad:
            skipped += [(_listed(root, files[idx[i]]), reason) for i, reason in bad]
            keep = np.setdiff1d(np.arange(len(idx)), [i for i, _ in bad])
            for new, old in enumerate(keep):  # rows move forward in place: no second copy of the split
                if new != old:
                    x[new] = x[old]
            x, idx = x[:len(keep)], idx[keep]
        parts.append(Split(x, y[idx]))
    if skipped:
        _check_skips(parts[0], class_names, y[indices[0]], skipped)
        log.warning("dataset.path: skipped %d unreadable image(s) (dataset.on_bad_image=skip), first: %s (%s)",
                    len(skipped), *skipped[0])
    return Splits(*parts, class_names=class_names, skipped=tuple(skipped))


def _listed(root: Path, file: Path) -> str:
    """The path a skip list names: absolute with the folder resolved, as the cache key resolves it."""
    return (root.resolve() / file.relative_to(root)).as_posix()


def _check_skips(train: Split, class_names: list[str], labels_before: np.ndarray, skipped) -> None:
    """A class whose every training image was skipped would silently never be learnt: an error instead."""
    emptied = np.setdiff1d(np.unique(labels_before), np.unique(train.y))
    if len(emptied):
        raise _fail("path", f"class {class_names[emptied[0]]!r} has no readable training images left after skipping "
                            f"{len(skipped)} unreadable file(s) (first: {skipped[0][0]}: {skipped[0][1]})")


def _folder_index(path) -> tuple[list[Path], np.ndarray, np.ndarray, list[str], list[str]]:
    """(image files, their labels, the split each came from, the splits the folder has, class names), checking
    the layout; reads no image."""
    root = Path(path).expanduser()
    layout = _folder_layout(root)
    if "train" not in layout:
        layout = {"train": root}
    found = {split: _class_files(folder) for split, folder in layout.items()}
    if not found["train"]:
        raise _fail("path", f"{layout['train']} has no class folders with images ({' '.join(IMAGE_EXTENSIONS)})")
    for split, folder in layout.items():
        for sub in _subfolders(folder):
            if sub.name not in found[split]:
                # Left out, it would silently shift every later class's label index.
                raise _fail("path", f"{sub}: empty class folder (no {' '.join(IMAGE_EXTENSIONS)} files); add images "
                                    f"or remove the folder")
    class_names = sorted(found["train"])
    if len(class_names) < 2:
        raise _fail("path", f"{layout['train']} has only one class folder ({class_names[0]}); "
                            "a classifier needs two or more")
    for split, classes in found.items():
        for name in classes:
            if name not in found["train"]:
                raise _fail("path", f"{layout[split] / name}: class {name!r} has no images in {layout['train']}")

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
            raise _fail("path", f"{root} has both {present[0].name}/ and {present[1].name}/; keep one")
        if present:
            layout[split] = present[0]
    known = {p.name for p in layout.values()}
    for other in (p for p in _subfolders(root) if p.name not in known):
        if _class_files(other) or _images_in(other):
            # Silently ignoring it would hide a misspelt split (e.g. "validaton") and shrink the data.
            raise _fail("path", f"{other}: unexpected folder beside train/ (expected validation/ or val/, and test/)")
    return layout


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_files(folder: Path) -> dict[str, list[Path]]:
    """Class folder name -> its image files, recursive and sorted as Keras does; folders without images left out."""
    classes = {}
    for sub in _subfolders(folder):
        files = _images_in(sub)
        if files:
            classes[sub.name] = files
    return classes


def _images_in(folder: Path) -> list[Path]:
    """Image files under folder. Other files (notes, .DS_Store) are not data; hidden ones (macOS' ._x.jpg
    resource forks, .ipynb_checkpoints/) are copies or metadata, not images of the class."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


class BadImage(Exception):
    """An image file that cannot be decoded; the message is the reason, e.g. "truncated JPEG"."""


def _decode_into(out: np.ndarray, files: list[Path], size: int, channels: int, stop: bool = True) -> list:
    """Decode files[i] into out[i]. stop: raise DataError at the first unreadable file (in file order); otherwise
    return [(i, reason)] for the unreadable ones, whose rows are left unwritten."""
    mode = "L" if channels == 1 else "RGB"

    def decode(i):
        try:
            out[i] = _read_image(files[i], size, mode)
        except BadImage as exc:
            return i, str(exc)
        return None

    bad = []
    # PIL releases the GIL while decoding, so threads use every core.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, len(files), DECODE_CHUNK):
            for result in pool.map(decode, range(start, min(start + DECODE_CHUNK, len(files)))):
                if result is not None and stop:
                    raise _fail("path", f"{files[result[0]]}: cannot decode image ({result[1]}); fix or remove the "
                                        f"file, or set dataset.on_bad_image=skip to leave such files out")
                if result is not None:
                    bad.append(result)
    return bad


# What a file's first bytes say it is, for naming the problem when PIL cannot even open it.
MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"BM", "BMP"))


def _read_image(file: Path, size: int, mode: str) -> np.ndarray:
    """One image as uint8 (size, size, 1 or 3). Raises BadImage with a short reason.

    Conversions: grayscale is repeated into R, G and B; colour becomes gray by ITU-R 601 luma; alpha is dropped
    (the stored colour is kept, as Keras' load_img does); CMYK becomes RGB as (1 - C)(1 - K) per channel (no ICC
    profile); 16-bit images are scaled to 8 bits (value / 257), not clipped."""
    try:
        with open(file, "rb") as stream:
            head = stream.read(8)
    except OSError as exc:
        raise BadImage(f"cannot read the file: {exc.strerror or exc}") from None
    if not head:
        raise BadImage("empty file (0 bytes)")
    kind = next((name for magic, name in MAGIC if head.startswith(magic)), None)
    try:
        with Image.open(file) as image:
            kind = image.format or kind
            image.draft(mode, (size, size))  # JPEG decodes at 1/2..1/8 scale when that is still big enough
            image = _to_8bit(ImageOps.exif_transpose(image)).convert(mode)
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except Image.UnidentifiedImageError:
        raise BadImage(f"truncated {kind}" if kind else "not an image (no JPEG, PNG or BMP data)") from None
    except Image.DecompressionBombError as exc:
        raise BadImage(f"too large: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        if "truncated" in detail.lower():
            raise BadImage(f"truncated {kind or 'image'}") from None
        raise BadImage(f"broken {kind or 'image'}: {detail}") from None
    return array[..., None] if array.ndim == 2 else array


def _to_8bit(image: Image.Image) -> Image.Image:
    # PIL's own I;16 -> L conversion clips everything above 255 to white; scale the 16-bit range instead. PNG
    # stores 16-bit gray as I;16 (or I in older Pillow); 16-bit colour PNGs already arrive as 8-bit RGB(A).
    if image.mode.startswith("I;16") or image.mode == "I":
        wide = np.asarray(image).astype(np.float64)
        return Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8))
    return image


# ---------------------------------------------------------------------------------------------- npz

def load_npz(path: str, image_size: int | None = None, channels: int | None = None, validation_split: float = 0.2,
             test_split: float = 0.2, train_size: int | None = None, split_seed: int = 0) -> Splits:
    """x_train, y_train and optionally x_val, y_val, x_test, y_test (missing ones are taken from train by the
    fractions) and class_names. x: (N, H, W[, C]) uint8 or float in [0, 1]; y: integer labels or one-hot."""
    file = Path(path).expanduser()
    with open(file, "rb") as stream:
        magic = stream.read(6)
    if magic == b"\x93NUMPY":
        raise _fail("path", f"{file} holds a single array (.npy); expected an .npz with x_train and y_train (np.savez)")
    if not magic.startswith(b"PK"):  # np.load would blame pickling for any non-zip file
        raise _fail("path", f"{file} is not an .npz file (write one with np.savez(path, x_train=..., y_train=...))")
    try:
        data = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _fail("path", f"{file}: cannot read as .npz ({exc})") from None
    with data:
        present = set(data.files)
        for name in ("x_train", "y_train"):
            if name not in present:
                raise _fail("path", f"{file} has no array {name!r} (found: {', '.join(sorted(present)) or 'none'})")
        images, labels, widths = {}, {}, {}
        for split in ("train", "val", "test"):
            if (f"x_{split}" in present) != (f"y_{split}" in present):
                has, lacks = (f"x_{split}", f"y_{split}") if f"x_{split}" in present else (f"y_{split}", f"x_{split}")
                raise _fail("path", f"{file} has {has} but no {lacks}")
            if f"x_{split}" in present:
                images[split] = _npz_images(file, data, f"x_{split}")
                labels[split], widths[split] = _npz_labels(file, data, f"y_{split}", len(images[split]))
        names = _npz_array(file, data, "class_names") if "class_names" in present else None

    first = images["train"]
    for split, x in images.items():
        if image_size is None and x.shape[1:3] != first.shape[1:3]:
            raise _fail("path", f"{file}: x_{split} images are {x.shape[1]}x{x.shape[2]} but x_train's are "
                                f"{first.shape[1]}x{first.shape[2]}; set dataset.image_size to resize them all")
        if channels is None and x.shape[3] != first.shape[3]:
            raise _fail("path", f"{file}: x_{split} has {x.shape[3]} channel(s) but x_train has {first.shape[3]}; "
                                "set dataset.channels to convert them all")

    num_classes = max(max(int(labels[s].max(initial=-1)) + 1, widths[s]) for s in labels)
    if names is not None:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names.ravel()]
        for split in labels:
            top = max(int(labels[split].max(initial=-1)), widths[split] - 1)
            if top >= len(names):
                raise _fail("path", f"{file}: y_{split}: labels go up to {top} but class_names has {len(names)} "
                                    f"names (labels must be 0..{len(names) - 1})")
    class_names = names if names is not None else [str(i) for i in range(num_classes)]

    # One pool of every image, so the index-based split helpers serve every layout.
    x = np.concatenate([_to_channels(_resize(images[s], image_size), channels) for s in images])
    y = np.concatenate([labels[s] for s in images])
    ends = np.cumsum([len(labels[s]) for s in images])
    pools = {s: np.arange(end - len(labels[s]), end) for s, end in zip(images, ends)}
    indices = _fill_splits(y, pools, validation_split, test_split, split_seed)
    return _splits(x, y, class_names, *indices, train_size, split_seed)


def _npz_array(file: Path, data, name: str) -> np.ndarray:
    try:
        return data[name]
    except ValueError as exc:  # object arrays need pickle, which is refused for safety
        raise _fail("path", f"{file}: {name}: cannot read ({exc})") from None


def _npz_images(file: Path, data, name: str) -> np.ndarray:
    x = _npz_array(file, data, name)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise _fail("path", f"{file}: {name}: expected images shaped (N, H, W) or (N, H, W, C) with C 1 or 3, "
                            f"got {x.shape}")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        low, high = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if 0.0 <= low and high <= 1.0:  # NaN fails both comparisons
            return np.rint(x * 255.0).astype(np.uint8)
        raise _fail("path", f"{file}: {name}: float images must lie in [0, 1], found [{low:g}, {high:g}] "
                            "(divide by 255, or store uint8)")
    raise _fail("path", f"{file}: {name}: expected uint8, or float in [0, 1]; got {x.dtype}")


def _npz_labels(file: Path, data, name: str, count: int) -> tuple[np.ndarray, int]:
    """(int64 labels, one-hot width or 0)."""
    y = _npz_array(file, data, name)
    numeric = np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)
    if y.ndim not in (1, 2) or not (numeric or (y.ndim == 2 and y.dtype == np.bool_)):
        raise _fail("path", f"{file}: {name}: expected integer labels (N,) or one-hot (N, K), got {y.dtype} {y.shape}")
    if np.issubdtype(y.dtype, np.floating) and not np.isfinite(y).all():
        where = np.argwhere(~np.isfinite(y))[0]
        raise _fail("path", f"{file}: {name}: labels must be finite, found {y[tuple(where)]} at row {where[0]}")
    width = 0
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2:
        width = y.shape[1]
        blank = np.flatnonzero(y.max(axis=1, initial=0) <= 0)
        if len(blank):  # argmax would quietly call such a row class 0
            raise _fail("path", f"{file}: {name}: one-hot row {blank[0]} has no positive entry")
        y = y.argmax(axis=1)
    if np.issubdtype(y.dtype, np.floating) and not np.all(y == np.round(y)):
        raise _fail("path", f"{file}: {name}: labels must be whole numbers")
    if len(y) != count:
        raise _fail("path", f"{file}: {name} has {len(y)} labels for {count} images")
    if len(y) and y.min() < 0:
        raise _fail("path", f"{file}: {name}: labels must be >= 0, found {y.min()} at row {int(y.argmin())}")
    return y.astype(np.int64), width


# ---------------------------------------------------------------------------------------------- shared helpers

def _resize(x: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or x.shape[1:3] == (size, size):
        return x
    # Area averaging when shrinking avoids aliasing; bilinear when enlarging.
    method = cv2.INTER_AREA if x.shape[1] > size else cv2.INTER_LINEAR
    out = np.empty((len(x), size, size, x.shape[3]), np.uint8)
    for i, image in enumerate(x):
        out[i] = cv2.resize(image, (size, size), interpolation=method).reshape(size, size, x.shape[3])
    return out


def _to_channels(x: np.ndarray, channels: int | None) -> np.ndarray:
    if channels is None or x.shape[-1] == channels:
        return x
    if channels == 3:
        return np.repeat(x, 3, axis=-1)
    n, h, w, _ = x.shape
    # cvtColor accepts one tall image, which converts the whole batch in one call (ITU-R 601 weights, like PIL's "L").
    return cv2.cvtColor(np.ascontiguousarray(x).reshape(n * h, w, 3), cv2.COLOR_RGB2GRAY).reshape(n, h, w, 1)


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


def _three_way(y: np.ndarray, val_fraction: float, test_fraction: float, seed: int, blame: str = "path"):
    """Positions (train, val, test) into y; both fractions are of len(y)."""
    n_test, n_val = _count(len(y), test_fraction), _count(len(y), val_fraction)
    if len(y) - n_test - n_val < 1:
        raise _fail(blame, f"{len(y)} images are too few to take validation ({val_fraction:g}) "
                           f"and test ({test_fraction:g}) fractions from")
    rest, test = _take(y, n_test, seed)
    train, val = _take(y[rest], n_val, seed)
    return rest[train], rest[val], test


def _fill_splits(y, pools: dict[str, np.ndarray], val_fraction, test_fraction, seed):
    """Index arrays (train, val, test) into y: the splits the source lacks are taken from its train pool."""
    pool = pools["train"]
    if "val" not in pools and "test" not in pools:
        train, val, test = _three_way(y[pool], val_fraction, test_fraction, seed)
        return pool[train], pool[val], pool[test]
    taken = dict(pools)
    for split, fraction in (("val", val_fraction), ("test", test_fraction)):
        if split not in pools:
            keep, take = _take(y[pool], _count(len(pool), fraction), seed)
            if len(keep) == 0:
                raise _fail("path", f"{len(pool)} training images are too few to take a {split} fraction "
                                    f"of {fraction:g} from")
            taken[split], pool = pool[take], pool[keep]
    return pool, taken["val"], taken["test"]


def _subsample(y, train, val, test, train_size, seed):
    if train_size is not None and train_size < len(train):
        # Fewer training images make overfitting, and what augmentation does about it, visible.
        _, kept = _take(y[train], train_size, seed)
        train = train[kept]
    return train, val, test


def _splits(x, y, class_names, train, val, test, train_size, seed) -> Splits:
    part = lambda idx: Split(x[idx], y[idx].astype(np.int64))  # noqa: E731
    train, val, test = _subsample(y, train, val, test, train_size, seed)
    return Splits(part(train), part(val), part(test), list(class_names))


# ---------------------------------------------------------------------------------------------- cache

def _cache_root() -> Path:
    # Read at every call, so a test's monkeypatched environment takes effect without reloading the module.
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else PROJECT_ROOT / "runs" / "cache"


def _source_listing(name: str, args: dict):
    """What the key must see of the files a loader reads; stat() only, no image is opened."""
    if name == "folder":
        root = Path(args["path"]).expanduser()
        files = _folder_index(root)[0]
        return [(f.relative_to(root).as_posix(), *_stamp(f)) for f in files]
    if name == "npz":
        return _stamp(Path(args["path"]).expanduser())
    if name in sources.LISTINGS:  # csv: the table and every image it names; keras_datasets: the cached files
        return sources.LISTINGS[name](args)
    return None  # generated in code: the settings and the code fingerprint say everything


def _stamp(file: Path) -> tuple[int, int]:
    stat = file.stat()
    return stat.st_size, stat.st_mtime_ns


@cache
def _code_fingerprint() -> str:
    # The decoded pixels depend on this module and on how these libraries decode, resize and split; a change in
    # any of them must not serve arrays made by the old one.
    versions = [np.__version__, cv2.__version__, PIL.__version__, sklearn.__version__]
    code = Path(__file__).read_bytes() + Path(sources.__file__).read_bytes()
    return hashlib.sha256(code + json.dumps(versions).encode()).hexdigest()


def _canonical(args: dict) -> dict:
    settings = dict(args)
    if "path" in settings:  # the same files whatever the working directory or spelling
        settings["path"] = str(Path(settings["path"]).expanduser().resolve())
    return settings


def _key(name: str, args: dict, listing) -> str:
    identity = {"name": name, "settings": _canonical(args), "source": listing, "code": _code_fingerprint()}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _open_cache(folder: Path) -> Splits | None:
    """The cached splits, images memory-mapped read-only; None when absent or unreadable."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        parts = [Split(np.load(folder / f"{split}_x.npy", mmap_mode="r", allow_pickle=False),
                       np.load(folder / f"{split}_y.npy", allow_pickle=False))
                 for split in SPLIT_NAMES]
        skipped = tuple((str(file), str(reason)) for file, reason in meta.get("skipped", ()))
        return Splits(*parts, class_names=list(meta["class_names"]), skipped=skipped)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _fill_cache(name: str, args: dict, listing, target: Path) -> Splits:
    """Build the cache in a private sibling folder and rename it into place: readers only ever see a complete
    folder, and parallel jobs that raced to build it each publish a whole copy or none."""
    if target.exists():
        splits = _open_cache(target)
        if splits is not None:
            return splits  # a parallel job published it a moment ago
        _discard(target, rename=True)  # unreadable (half deleted by hand, disk full): make room for a fresh copy
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    # mkdtemp's folder is private (0700); the published copy should be as readable as the cache root.
    scratch.chmod(target.parent.stat().st_mode & 0o777)
    try:
        loader = LOADERS[name]
        if "allocate" in inspect.signature(loader).parameters:
            def allocate(split, shape):
                return np.lib.format.open_memmap(scratch / f"{split}_x.npy", mode="w+", dtype=np.uint8, shape=shape)
            splits = loader(**args, allocate=allocate)
        else:
            splits = loader(**args)
        for split in SPLIT_NAMES:
            part = getattr(splits, split)
            _store(scratch / f"{split}_x.npy", part.x)
            np.save(scratch / f"{split}_y.npy", np.asarray(part.y, np.int64))
        meta = {"name": name, "key": target.name.rsplit("-", 1)[-1], "class_names": splits.class_names,
                "sizes": {split: len(getattr(splits, split)) for split in SPLIT_NAMES},
                "settings": _canonical(args), "skipped": [list(entry) for entry in splits.skipped]}
        (scratch / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        del splits, part  # closes the writable maps; callers get read-only ones, opened below
        if _source_listing(name, args) != listing:
            # Files changed while decoding: this copy may match neither listing, so it serves this run only.
            # Its maps outlive the folder's removal below (POSIX keeps unlinked mapped files readable).
            log.warning("dataset.path: files changed while decoding; this copy is not cached")
            return _open_cache(scratch)
        try:
            os.rename(scratch, target)
        except OSError as exc:
            if not target.exists():
                raise _fail("cache", f"cannot move {scratch} to {target} ({exc})") from None
            # Another job of the sweep published first; its copy is as good as this one, which goes.
            log.debug("%s: another job published first; discarding this copy", target)
        splits = _open_cache(target)
        if splits is None:
            raise _fail("cache", f"cannot read the cache folder {target} just written; delete it and run again")
        return splits
    finally:
        if scratch.exists():
            _discard(scratch)


def _store(file: Path, x: np.ndarray) -> None:
    """Write a split's images to file, which may already hold them: the loader decoded into its memory map."""
    if not file.exists():
        np.save(file, x)
        return
    if isinstance(x, np.memmap):
        x.flush()
        if np.load(file, mmap_mode="r", allow_pickle=False).shape == x.shape:
            return
    # The map holds more rows than are kept (skipped images): copy the kept ones, a chunk at a time, into a file of
    # the right shape, so a folder larger than memory still never has to fit in it.
    part = file.with_name(f"{file.name}.part")
    out = np.lib.format.open_memmap(part, mode="w+", dtype=x.dtype, shape=x.shape)
    for start in range(0, len(x), DECODE_CHUNK):
        out[start:start + DECODE_CHUNK] = x[start:start + DECODE_CHUNK]
    out.flush()
    del out
    os.replace(part, file)


def _discard(folder: Path, rename: bool = False) -> None:
    if rename:  # out of the cache's name first, so no reader sees it half deleted
        aside = folder.with_name(f".{folder.name}.{os.getpid()}.{os.urandom(4).hex()}.stale")
        try:
            os.rename(folder, aside)
        except OSError:
            return  # someone else moved it already
        folder = aside
    shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- checks

def _integer(args, key, minimum, optional=False):
    value = args.get(key)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(key, f"expected an integer >= {minimum}{' or null' if optional else ''}, got {value!r}")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fraction(args, key):
    value = args.get(key)
    if not _number(value) or not 0 <= value < 1:
        raise _fail(key, f"expected a fraction in [0, 1), got {value!r}")


def _common(args, split_keys=None, size_optional=False, channels_optional=False, train_size=True):
    _integer(args, "image_size", 8, optional=size_optional)
    channels = args.get("channels")
    if not (channels in (1, 3) and not isinstance(channels, bool)) and not (channels is None and channels_optional):
        raise _fail("channels", f"expected 1 or 3{' or null' if channels_optional else ''}, got {channels!r}")
    _integer(args, "split_seed", 0)
    if train_size:
        _integer(args, "train_size", 1, optional=True)
    if split_keys:
        for key in split_keys:
            _fraction(args, key)
        total = sum(args[key] for key in split_keys)
        if total >= 1:
            raise _fail(split_keys[-1], f"{' + '.join(split_keys)} = {total:g} leaves no training images (must be < 1)")


def _path(args, kind, example):
    value = args.get("path")
    if value in (None, "", MISSING):
        raise _fail("path", f"required, e.g. dataset.path={example}")
    path = Path(str(value)).expanduser()
    if not path.exists():
        raise _fail("path", f"{kind} {path} does not exist")
    if kind == "folder" and not path.is_dir():
        raise _fail("path", f"{path} is a file; expected a folder of class folders")
    if kind == "file" and path.is_dir():
        raise _fail("path", f"{path} is a folder; expected an .npz file")


def _interval(args, key, low, high, positive=False):
    value = args.get(key)
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(_number(v) for v in value)
    ok = ok and low <= value[0] <= value[1] <= high and not (positive and value[0] <= 0)
    if not ok:
        bounds = f"{'(' if positive else '['}{low:g}, {high:g}]"
        raise _fail(key, f"expected [low, high] with low <= high within {bounds}, got {value!r}")


def _check_digits(args):
    _common(args, ("validation_split", "test_split"))


def _check_shapes(args):
    _common(args, train_size=False)
    classes = args.get("classes")
    if (not isinstance(classes, (list, tuple)) or len(classes) < 2 or len(set(classes)) != len(classes)
            or any(c not in SHAPES for c in classes)):
        raise _fail("classes", f"expected two or more distinct shapes from {', '.join(SHAPES)}, got {classes!r}")
    _integer(args, "n_train", 1)
    _integer(args, "n_val", 0)
    _integer(args, "n_test", 0)
    _integer(args, "eval_wide_axes", 0)
    if args["eval_wide_axes"] > len(SHAPE_AXES):
        raise _fail("eval_wide_axes", f"expected 0..{len(SHAPE_AXES)} ({', '.join(SHAPE_AXES)}), "
                                      f"got {args['eval_wide_axes']}")
    for prefix in ("train", "eval"):
        shift = args.get(f"{prefix}_shift")
        if not _number(shift) or not 0 <= shift <= 1:
            raise _fail(f"{prefix}_shift", f"expected a fraction in [0, 1] of the room around the shape, got {shift!r}")
        _interval(args, f"{prefix}_rotate_range", -360, 360)
        _interval(args, f"{prefix}_scale_range", 0, 0.5, positive=True)
        _interval(args, f"{prefix}_brightness_range", 0, 4, positive=True)
        _interval(args, f"{prefix}_hue_range", -360, 720)


def _check_folder(args):
    _path(args, "folder", "/data/flowers")
    _common(args, ("validation_split", "test_split"))
    if args.get("on_bad_image") not in BAD_IMAGE_CHOICES:
        raise _fail("on_bad_image", f"expected one of {'|'.join(BAD_IMAGE_CHOICES)}, got {args.get('on_bad_image')!r}")


def _check_npz(args):
    _path(args, "file", "/data/mnist.npz")
    _common(args, ("validation_split", "test_split"), size_optional=True, channels_optional=True)


# More sources, built on the helpers above (imported here, at the end, because they import those helpers).
from ablation import sources  # noqa: E402

LOADERS = {"digits": load_digits, "shapes": load_shapes, "folder": load_folder, "npz": load_npz,
           "csv": sources.load_csv, "keras_datasets": sources.load_keras_datasets}
CHECKS = {"digits": _check_digits, "shapes": _check_shapes, "folder": _check_folder, "npz": _check_npz,
          "csv": sources.check_csv, "keras_datasets": sources.check_keras_datasets}
