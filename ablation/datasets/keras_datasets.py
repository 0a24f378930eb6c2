"""The `keras_datasets` source: mnist, fashion_mnist, cifar10 and cifar100 read from the files Keras keeps in its
on-disk dataset cache, in Keras' own formats (npz, gzipped IDX, pickled CIFAR batches, extracted or as the
downloaded .tar.gz); nothing is downloaded.

Resized, converted and split with the helpers every source shares. No Keras, no MLflow: the files are parsed here.
"""
from __future__ import annotations

import gzip
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from ablation.datasets.common import (
    DataError,
    Splits,
    common_args,
    fail,
    fill_splits,
    make_splits,
    resize_images,
    stamp,
    to_channels,
)

KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
FASHION_FILES = ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# which -> (folder inside the archive, origin, training files, test file, label key per label_mode, classes)
CIFAR = {
    "cifar10": ("cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", {"fine": b"labels"}),
    "cifar100": ("cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                 ("train",), "test", {"fine": b"fine_labels", "coarse": b"coarse_labels"}),
}
KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")
CIFAR100_CLASSES = {"fine": 100, "coarse": 20}
# The pickled CIFAR batches hold numpy arrays and plain lists; nothing else may be constructed from them.
PICKLE_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                  ("numpy._core.multiarray", "_reconstruct")}


def load_keras_datasets(which: str, label_mode: str = "fine", keras_home: str | None = None,
                        image_size: int | None = None, channels: int | None = None, validation_split: float = 0.1,
                        train_size: int | None = None, split_seed: int = 0) -> Splits:
    """The image sets keras.datasets downloads (mnist, fashion_mnist: 28x28 gray; cifar10, cifar100: 32x32 RGB),
    read from the files Keras keeps in <keras_home>/datasets/ (keras_home null: $KERAS_HOME or ~/.keras, as
    Keras resolves it), in the format Keras' own loaders read. Nothing is downloaded: a missing file stops with
    the URL and the place to put it. Keras' test split is the test split; validation is taken from its training
    split. label_mode (cifar100 only): fine (100 classes) or coarse (20 superclasses).

    The files are parsed here rather than through keras.datasets.<which>.load_data(), which would try to
    download when a file is missing or its checksum differs (hanging without network), and fixes the CIFAR-10
    batch size, so only the full official files would load."""
    sources = _keras_sources(which, keras_home)
    if which == "mnist":
        (x_train, y_train), (x_test, y_test) = _read_mnist(sources[0])
        class_names = [str(k) for k in range(10)]
    elif which == "fashion_mnist":
        (x_train, y_train), (x_test, y_test) = _read_fashion(sources)
        class_names = list(FASHION_CLASSES)
    else:
        (x_train, y_train), (x_test, y_test), class_names = _read_cifar(which, sources[0], label_mode)
    if len(x_train) == 0 or len(x_test) == 0:
        raise fail("which", f"{which}: {sources[0]} holds {len(x_train)} training and {len(x_test)} test images; "
                             "expected both")
    y = np.concatenate([y_train, y_test]).astype(np.int64)
    if y.min() < 0 or y.max() >= len(class_names):
        raise fail("which", f"{which}: {sources[0]}: labels must lie in 0..{len(class_names) - 1}, found "
                             f"{y.min()}..{y.max()}")
    x = np.concatenate([x_train, x_test])
    x = to_channels(resize_images(x if x.ndim == 4 else x[..., None], image_size), channels)
    pools = {"train": np.arange(len(x_train)), "test": np.arange(len(x_train), len(x))}
    train, val, test = fill_splits(y, pools, validation_split, 0.0, split_seed)
    return make_splits(x, y, class_names, train, val, test, train_size, split_seed)


def keras_datasets_dir(keras_home: str | None = None) -> Path:
    """The folder keras.utils.get_file keeps datasets in. keras_home null: $KERAS_HOME, else ~/.keras (/tmp/.keras
    when the home folder is not writable), and /tmp/.keras when that folder is not writable, exactly as Keras
    decides; read at every call (Keras reads $KERAS_HOME once, at import)."""
    if keras_home is not None:
        return Path(keras_home).expanduser() / "datasets"
    if "KERAS_HOME" in os.environ:
        base = os.environ["KERAS_HOME"]
    else:
        home = os.path.expanduser("~")
        base = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    base = os.path.expanduser(base)
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp", ".keras")
    return Path(base) / "datasets"


def _keras_sources(which: str, keras_home: str | None) -> list[Path]:
    """The cached file(s) load_keras_datasets reads for `which`, or DataError saying what to download and where.
    CIFAR: the extracted folder or the downloaded archive, in any layout Keras 3 has used for them."""
    datadir = keras_datasets_dir(keras_home)
    if which == "mnist":
        file = datadir / "mnist.npz"
        if not file.is_file():
            raise _missing(which, file, KERAS_ORIGIN + "mnist.npz", file)
        return [file]
    if which == "fashion_mnist":
        files = [datadir / "fashion-mnist" / name for name in FASHION_FILES]
        absent = [f for f in files if not f.is_file()]
        if absent:
            urls = " ".join(KERAS_ORIGIN + f.name for f in absent)
            raise _missing(which, absent[0], urls, absent[0].parent, several=len(absent) > 1)
        return files
    inner, origin, train_files, test_file, _ = CIFAR[which]
    # Extracted by Keras >= 3.8 (<name>-target/<name>), by 3.6-3.7 (<name>/<name>), or by earlier ones (<name>).
    for folder in (datadir / f"{inner}-target" / inner, datadir / inner / inner, datadir / inner):
        if all((folder / name).is_file() for name in (*train_files, test_file)):
            return [folder]
    archives = [datadir / f"{inner}-target_archive", datadir / f"{inner}_archive", datadir / f"{inner}.tar.gz"]
    for archive in archives:
        if archive.is_file():
            return [archive]
    raise _missing(which, archives[0], origin, archives[0])


def _missing(which, path, url, place, several=False) -> DataError:
    what = "them in" if several else "it at"
    return DataError(f"dataset.which={which}: Keras' cache has no {path}; download {url} on a machine with network "
                     f"access and place {what} {place} (or point dataset.keras_home or $KERAS_HOME at the folder "
                     "that holds datasets/)")


def _read_mnist(file: Path):
    try:
        with np.load(file, allow_pickle=False) as data:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in data.files]
            if missing:
                raise fail("which", f"mnist: {file} has no array {missing[0]!r} (found: "
                                     f"{', '.join(data.files) or 'none'})")
            arrays = {k: data[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise fail("which", f"mnist: {file}: cannot read as .npz ({exc})") from None
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 3 or y.shape != (len(x),):
            raise fail("which", f"mnist: {file}: expected uint8 x_{split} (N, H, W) and y_{split} (N,), got "
                                 f"{x.dtype} {x.shape} and {y.shape}")
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def _read_fashion(files: list[Path]):
    """The four gzipped IDX files: labels after an 8-byte header, 28x28 images after a 16-byte one."""
    def read(file, header):
        try:
            with gzip.open(file, "rb") as stream:
                return np.frombuffer(stream.read(), np.uint8, offset=header)
        except (OSError, EOFError, ValueError) as exc:
            raise fail("which", f"fashion_mnist: {file}: cannot read as a gzipped IDX file ({exc})") from None

    splits = []
    for labels_file, images_file in (files[:2], files[2:]):
        y, pixels = read(labels_file, 8), read(images_file, 16)
        if pixels.size != len(y) * 28 * 28:
            raise fail("which", f"fashion_mnist: {images_file} holds {pixels.size} pixels, not the 28x28 images "
                                 f"for the {len(y)} labels of {labels_file.name}")
        splits.append((pixels.reshape(len(y), 28, 28), y))
    return splits


def _read_cifar(which: str, source: Path, label_mode: str):
    inner, _, train_files, test_file, label_keys = CIFAR[which]
    batches = _cifar_pickles(which, source, inner, (*train_files, test_file, "meta"))
    for name in (*train_files, test_file):
        if name not in batches:
            raise fail("which", f"{which}: {source} has no {inner}/{name}")
    label_key = label_keys[label_mode]
    parts = []
    for names in (train_files, (test_file,)):
        xs, ys = [], []
        for name in names:
            batch = batches[name]
            data, labels = batch.get(b"data"), batch.get(label_key)
            if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 \
                    or labels is None or len(labels) != len(data):
                raise fail("which", f"{which}: {source}: {name} is not a CIFAR batch (b'data' (N, 3072) uint8 and "
                                     f"{label_key!r} with N labels)")
            xs.append(data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(labels, np.int64))
        parts.append((np.concatenate(xs), np.concatenate(ys)))
    if which == "cifar10":
        class_names = list(CIFAR10_CLASSES)
    else:
        stored = batches.get("meta", {}).get(f"{label_mode}_label_names".encode())
        count = CIFAR100_CLASSES[label_mode]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in stored or ()]
        class_names = names if len(names) == count else [str(k) for k in range(count)]
    return parts[0], parts[1], class_names


def _cifar_pickles(which: str, source: Path, inner: str, wanted) -> dict[str, dict]:
    """File name -> unpickled dict, from an extracted folder or straight from the downloaded .tar.gz."""
    found = {}
    try:
        if source.is_dir():
            for name in wanted:
                if (source / name).is_file():
                    with open(source / name, "rb") as stream:
                        found[name] = _unpickle(stream)
            return found
        with tarfile.open(source) as archive:
            for member in archive:  # one pass: a .tar.gz reads slowly out of order
                folder, _, name = member.name.rpartition("/")
                if folder.endswith(inner) and name in wanted and member.isfile():
                    found[name] = _unpickle(archive.extractfile(member))
        return found
    except (OSError, EOFError, tarfile.TarError, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise fail("which", f"{which}: {source}: cannot read the CIFAR files ({exc})") from None


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to construct {module}.{name} from a dataset file")


def _unpickle(stream) -> dict:
    # The batches were pickled by Python 2: bytes keys, read as bytes (as keras.datasets.cifar does).
    value = _ArraysOnly(stream, encoding="bytes").load()
    if not isinstance(value, dict):
        raise ValueError(f"expected a pickled dict, got {type(value).__name__}")
    return value


def check_keras_datasets(args):
    which = args.get("which")
    if which not in KERAS_DATASETS:
        raise fail("which", f"expected one of {', '.join(KERAS_DATASETS)}, got {which!r}")
    if args.get("label_mode") not in ("fine", "coarse"):
        raise fail("label_mode", f"expected fine or coarse, got {args.get('label_mode')!r}")
    if args["label_mode"] != "fine" and which != "cifar100":
        raise fail("label_mode", f"{args['label_mode']} applies to cifar100 only (dataset.which={which})")
    home = args.get("keras_home")
    if home is not None and not (isinstance(home, str) and home.strip()):
        raise fail("keras_home", f"expected a folder or null ($KERAS_HOME or ~/.keras), got {home!r}")
    common_args(args, ("validation_split",), size_optional=True, channels_optional=True)
    _keras_sources(which, home)  # a missing download is reported now, before anything slow


def keras_listing(args):
    """Every cached file read (for an extracted CIFAR folder, each file in it) with its size and mtime."""
    files = []
    for source in _keras_sources(args["which"], args["keras_home"]):
        files += sorted(p for p in source.iterdir() if p.is_file()) if source.is_dir() else [source]
    return [(str(f.resolve()), *stamp(f)) for f in files]
