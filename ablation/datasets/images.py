"""Image files -> uint8 arrays, for the sources that read files (folder, csv) and for ablation.cli.predict: finding
image files, decoding one (`read_image`, naming what is wrong with a broken one), decoding many in threads, and
decoding a source's train/val/test files into their arrays with on_bad_image=error|skip (`decode_splits`).

Pillow and numpy only; no Keras, no MLflow.
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ablation.datasets.common import DECODE_CHUNK, SPLIT_NAMES, Split, Splits, fail

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# What a file's first bytes say it is, for naming the problem when PIL cannot even open it.
MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"BM", "BMP"))

log = logging.getLogger(__name__)
# Decoding a large folder takes minutes on its first load (later runs read the cache): a line this often.
PROGRESS_EVERY_S = 10.0


class BadImage(Exception):
    """An image file that cannot be decoded; the message is the reason, e.g. "truncated JPEG"."""


def images_in(folder: Path) -> list[Path]:
    """Image files under folder. Other files (notes, .DS_Store) are not data; hidden ones (macOS' ._x.jpg
    resource forks, .ipynb_checkpoints/) are copies or metadata, not images of the class."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def decode_splits(files: list[Path], y: np.ndarray, indices, class_names: list[str], image_size: int, channels: int,
                   on_bad_image: str, allocate, where, listed) -> Splits:
    """Splits whose images are files[idx] for each index array of indices (train, val, test), every image decoded
    here straight into its split's array: allocate(split, shape) -> uint8 array (default np.empty; the cache
    passes memory-mapped files, so data larger than memory never has to fit in it).

    An unreadable file stops the load (on_bad_image="error"), the message naming it as where(i) (i into files);
    or (on_bad_image="skip") it is left out, counted in a warning and listed in Splits.skipped as
    listed(i, reason) -> (file, reason). A class whose every training image was skipped is an error."""
    allocate = allocate or (lambda split, shape: np.empty(shape, np.uint8))
    parts, skipped = [], []
    progress = Progress(sum(len(idx) for idx in indices))
    for split, idx in zip(SPLIT_NAMES, indices):
        x = allocate(split, (len(idx), image_size, image_size, channels))
        bad = decode_into(x, [files[i] for i in idx], image_size, channels, stop=on_bad_image == "error",
                           where=lambda i, idx=idx: where(idx[i]), progress=progress)
        if bad:
            skipped += [listed(idx[i], reason) for i, reason in bad]
            keep = np.setdiff1d(np.arange(len(idx)), [i for i, _ in bad])
            for new, old in enumerate(keep):  # rows move forward in place: no second copy of the split
                if new != old:
                    x[new] = x[old]
            x, idx = x[:len(keep)], idx[keep]
        parts.append(Split(x, y[idx]))
    progress.end()
    if skipped:
        _check_skips(parts[0], class_names, y[indices[0]], skipped)
        log.warning("dataset.path: skipped %d unreadable image(s) (dataset.on_bad_image=skip), first: %s (%s)",
                    len(skipped), *skipped[0])
    return Splits(*parts, class_names=class_names, skipped=tuple(skipped))


def _check_skips(train: Split, class_names: list[str], labels_before: np.ndarray, skipped) -> None:
    """A class whose every training image was skipped would silently never be learnt: an error instead."""
    emptied = np.setdiff1d(np.unique(labels_before), np.unique(train.y))
    if len(emptied):
        raise fail("path", f"class {class_names[emptied[0]]!r} has no readable training images left after skipping "
                            f"{len(skipped)} unreadable file(s) (first: {skipped[0][0]}: {skipped[0][1]})")


class Progress:
    """INFO lines while many images are decoded (or written: ablation.cli.expand): how many, for how long, about how
    long is left. The first comes after PROGRESS_EVERY_S, so work that ends quickly prints nothing."""

    def __init__(self, total: int, label: str = "dataset: decoded", logger: logging.Logger = log):
        self.total, self.label, self.log, self.done, self.shown = total, label, logger, 0, False
        self.started = self.last = time.monotonic()

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.done < self.total and now - self.last >= PROGRESS_EVERY_S:
            elapsed = now - self.started
            self.log.info("%s %s of %s images (%d%%) in %.0f s, about %.0f s left", self.label, f"{self.done:,}",
                     f"{self.total:,}", 100 * self.done // self.total, elapsed,
                     elapsed / self.done * (self.total - self.done))
            self.last, self.shown = now, True

    def end(self) -> None:
        if self.shown:
            self.log.info("%s %s images in %.0f s", self.label, f"{self.done:,}", time.monotonic() - self.started)


def decode_into(out: np.ndarray, files: list[Path], size: int, channels: int, stop: bool = True,
                 where=None, progress: Progress | None = None) -> list:
    """Decode files[i] into out[i]. stop: raise DataError at the first unreadable file (in file order), naming it
    as where(i) (default: its path); otherwise return [(i, reason)] for the unreadable ones, whose rows are left
    unwritten. progress: told of every chunk decoded."""
    mode = "L" if channels == 1 else "RGB"
    where = where or (lambda i: str(files[i]))

    def decode(i):
        try:
            out[i] = read_image(files[i], size, mode)
        except BadImage as exc:
            return i, str(exc)
        return None

    bad = []
    # PIL releases the GIL while decoding, so threads use every core.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, len(files), DECODE_CHUNK):
            for result in pool.map(decode, range(start, min(start + DECODE_CHUNK, len(files)))):
                if result is not None and stop:
                    raise fail("path", f"{where(result[0])}: cannot decode image ({result[1]}); fix or remove the "
                                        f"file, or set dataset.on_bad_image=skip to leave such files out")
                if result is not None:
                    bad.append(result)
            if progress is not None:
                progress.add(min(DECODE_CHUNK, len(files) - start))
    return bad


def read_image(file: Path, size: int, mode: str) -> np.ndarray:
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
