"""The decode cache under runs/cache/ (or $ABLATION_CACHE_DIR): a load's splits saved once as .npy files in
<name>-<key>/ and memory-mapped read-only afterwards, so the jobs of a sweep decode a dataset once between them.

The key (`cache_key`) hashes the loader's settings, the source's listing (sizes and mtimes, see ablation.datasets'
LISTINGS), every file of this package and the decoding libraries' versions, so a stale copy is never read. A copy
is built in a private folder and renamed into place, so parallel jobs each publish a whole copy or none.
No Keras, no MLflow.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import PIL
import sklearn

from ablation.core import paths
from ablation.datasets.common import DECODE_CHUNK, SPLIT_NAMES, DataError, Split, Splits, fail

CACHE_ENV = paths.FOLDERS["cache"]

log = logging.getLogger(__name__)


def cache_root() -> Path:
    return paths.folder("cache")


@cache
def _code_fingerprint() -> str:
    # The decoded pixels depend on this package's code and on how these libraries decode, resize and split; a
    # change in any of them must not serve arrays made by the old one. Every file, in sorted order: stable.
    versions = [np.__version__, cv2.__version__, PIL.__version__, sklearn.__version__]
    digest = hashlib.sha256(json.dumps(versions).encode())
    for file in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def _canonical(args: dict) -> dict:
    settings = dict(args)
    if "path" in settings:  # the same files whatever the working directory or spelling
        settings["path"] = str(Path(settings["path"]).expanduser().resolve())
    return settings


def key_of(name: str, args: dict, listing) -> str:
    identity = {"name": name, "settings": _canonical(args), "source": listing, "code": _code_fingerprint()}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def open_cache(folder: Path) -> Splits | None:
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


def fill_cache(name: str, loader, args: dict, target: Path, unchanged) -> Splits:
    """Build the cache with loader(**args) in a private sibling folder and rename it into place: readers only ever
    see a complete folder, and parallel jobs that raced to build it each publish a whole copy or none.
    unchanged() -> whether the source's files still match the listing the key was made from."""
    if target.exists():
        splits = open_cache(target)
        if splits is not None:
            return splits  # a parallel job published it a moment ago
        discard(target, rename=True)  # unreadable (half deleted by hand, disk full): make room for a fresh copy
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    # mkdtemp's folder is private (0700); the published copy should be as readable as the cache root.
    scratch.chmod(target.parent.stat().st_mode & 0o777)
    try:
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
        if not unchanged():
            # Files changed while decoding: this copy may match neither listing, so it serves this run only.
            # Its maps outlive the folder's removal below (POSIX keeps unlinked mapped files readable).
            log.warning("dataset.path: files changed while decoding; this copy is not cached")
            return open_cache(scratch)
        try:
            os.rename(scratch, target)
        except OSError as exc:
            if not target.exists():
                raise fail("cache", f"cannot move {scratch} to {target} ({exc})") from None
            # Another job of the sweep published first; its copy is as good as this one, which goes.
            log.debug("%s: another job published first; discarding this copy", target)
        splits = open_cache(target)
        if splits is None:
            raise fail("cache", f"cannot read the cache folder {target} just written; delete it and run again")
        return splits
    finally:
        if scratch.exists():
            discard(scratch)


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


T = TypeVar("T")


def folder_name(readable: str, identity: dict) -> str:
    """A written folder's name: its readable start (made safe as a file name), then 12 hex digits of a hash of
    everything its contents depend on."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return f"{re.sub(r'[^A-Za-z0-9_.+-]', '_', readable)}-{digest}"


def publish(target: Path, write: Callable[[Path], None], read: Callable[[Path], T | None], key: str) -> T:
    """A folder made whole or not at all (offline expansions, synthetic images): read(target) when it holds a
    complete copy; otherwise write(scratch) fills a private sibling folder that is renamed to target, and
    read(target) is returned. A target that read() rejects (interrupted, edited by hand) is set aside first; when a
    parallel job publishes the same folder first, its copy wins and this one goes. key: the config key that errors
    name."""
    if target.exists():
        found = read(target)
        if found is not None:
            return found
        discard(target, rename=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    scratch.chmod(target.parent.stat().st_mode & 0o777)  # mkdtemp's 0700 -> as readable as its parent
    try:
        write(scratch)
        try:
            os.rename(scratch, target)
        except OSError as exc:
            if read(target) is None:
                raise DataError(f"{key}: cannot move {scratch} to {target} ({exc})") from None
            # A parallel job published the same folder first; its copy is identical, this one goes.
        found = read(target)
        if found is None:
            raise DataError(f"{key}: cannot read {target} just written; delete it and run again")
        return found
    finally:
        if scratch.exists():
            discard(scratch)


def discard(folder: Path, rename: bool = False) -> None:
    if rename:  # out of the cache's name first, so no reader sees it half deleted
        aside = folder.with_name(f".{folder.name}.{os.getpid()}.{os.urandom(4).hex()}.stale")
        try:
            os.rename(folder, aside)
        except OSError:
            return  # someone else moved it already
        folder = aside
    shutil.rmtree(folder, ignore_errors=True)
