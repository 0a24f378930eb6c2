"""The `csv` source (tables of image paths) and `keras_datasets` (read from Keras' on-disk cache).

Every test writes small files in the real formats (PNGs and a CSV table; mnist.npz, Fashion-MNIST's gzipped IDX
files, CIFAR's pickled batches, extracted or as the downloaded .tar.gz) and loads them through datasets.load."""
import gzip
import os
import pickle
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from ablation import datasets
from ablation.datasets import DataError
from conftest import ROOT

# ------------------------------------------------------------------------------------------ csv files


def write_png(path, value, size=(12, 10)):
    """A solid RGB image whose red channel is `value`, so a loaded pixel tells which file it came from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, (value * 7) % 256, 200)).save(path)
    return path


def write_table(file, rows, header=("filename", "class")):
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text("\n".join(",".join(map(str, row)) for row in [header, *rows]) + "\n")
    return file


def labelled_images(root, labels=("dog", "cat", "owl"), per_class=10):
    """root/images/<label>/<value>.png; returns table rows (relative path, label) and value -> label."""
    rows, truth = [], {}
    for c, label in enumerate(labels):
        for i in range(per_class):
            value = 10 + c * per_class + i
            write_png(root / "images" / label / f"{value}.png", value)
            rows.append((f"images/{label}/{value}.png", label))
            truth[value] = label
    return rows, truth


def csv_dataset(tmp_path):
    """Registry entry for test_datasets.SOURCES: 30 PNGs of three classes and their table."""
    rows, _ = labelled_images(tmp_path / "table")
    return [f"dataset.path={write_table(tmp_path / 'table' / 'labels.csv', rows)}", "dataset.image_size=16"]


def values(split):
    return [int(v) for v in split.x[:, 0, 0, 0]]


def load_csv(make_cfg, table, *overrides):
    return datasets.load(make_cfg("dataset=csv", f"dataset.path={table}", "dataset.image_size=16", *overrides).dataset)


# ------------------------------------------------------------------------------------------ csv


def test_csv_labels_follow_the_sorted_class_names(make_cfg, tmp_path):
    rows, truth = labelled_images(tmp_path / "t")
    # One path absolute and one in a folder above the table's: both resolve.
    rows[0] = (str(tmp_path / "t" / rows[0][0]), rows[0][1])
    write_png(tmp_path / "elsewhere" / "99.png", 99)
    rows.append(("../elsewhere/99.png", "owl"))
    truth[99] = "owl"
    splits = load_csv(make_cfg, write_table(tmp_path / "t" / "labels.csv", rows))

    assert splits.class_names == ["cat", "dog", "owl"]
    assert splits.input_shape == (16, 16, 3)
    seen = []
    for split in (splits.train, splits.val, splits.test):
        assert split.x.dtype == np.uint8 and split.y.dtype == np.int64
        for value, label in zip(values(split), split.y):
            assert splits.class_names[label] == truth[value]
        seen += values(split)
    assert sorted(seen) == sorted(truth)  # every row once, in exactly one split
    assert (len(splits.train), len(splits.val), len(splits.test)) == (19, 6, 6)


def test_csv_integer_labels_are_class_indices(make_cfg, tmp_path):
    rows, truth = labelled_images(tmp_path, labels=("2", "0", "1"))
    splits = load_csv(make_cfg, write_table(tmp_path / "labels.csv", rows))
    assert splits.class_names == ["0", "1", "2"]
    for split in (splits.train, splits.val, splits.test):
        assert [str(label) for label in split.y] == [truth[v] for v in values(split)]


def test_csv_other_column_names_and_a_grayscale_load(make_cfg, tmp_path):
    rows, _ = labelled_images(tmp_path, per_class=6)
    table = write_table(tmp_path / "t.csv", [(label, "x", path) for path, label in rows], header=("kind", "note", "file"))
    splits = load_csv(make_cfg, table, "dataset.x_col=file", "dataset.y_col=kind", "dataset.channels=1")
    assert splits.input_shape == (16, 16, 1) and splits.class_names == ["cat", "dog", "owl"]
    assert sum(map(len, (splits.train, splits.val, splits.test))) == 18


def test_csv_split_column_is_honoured(make_cfg, tmp_path):
    rows, truth = labelled_images(tmp_path)
    assigned = ["train", "Validation", "test", "train", "train", "val", "train", "TEST", "train", "train"] * 3
    table = write_table(tmp_path / "labels.csv", [(*row, split) for row, split in zip(rows, assigned)],
                        header=("filename", "class", "subset"))
    splits = load_csv(make_cfg, table, "dataset.split_col=subset")
    value = [int(p.split("/")[-1][:-4]) for p, _ in rows]
    expect = {name: sorted(v for v, s in zip(value, assigned) if s.lower() in aliases)
              for name, aliases in (("train", ("train",)), ("val", ("validation", "val")), ("test", ("test",)))}
    for name in ("train", "val", "test"):
        assert sorted(values(getattr(splits, name))) == expect[name], name

    # Without test rows, test is taken from the training rows by test_split; validation stays as marked.
    no_test = [s if s.lower() != "test" else "train" for s in assigned]
    table = write_table(tmp_path / "two.csv", [(*row, split) for row, split in zip(rows, no_test)],
                        header=("filename", "class", "subset"))
    splits = load_csv(make_cfg, table, "dataset.split_col=subset", "dataset.test_split=0.25")
    marked_val = sorted(v for v, s in zip(value, no_test) if s.lower() in ("validation", "val"))
    assert sorted(values(splits.val)) == marked_val
    assert len(splits.test) == round(0.25 * 24) and not set(values(splits.test)) & set(marked_val)
    assert sorted(values(splits.train) + values(splits.test)) == sorted(set(value) - set(marked_val))


@pytest.mark.parametrize("case, key, words", [
    ("no_column", "x_col", "has no column 'path' (columns: filename, class)"),
    ("missing_image", "path", "line 4: image file images/gone.png not found"),
    ("unknown_label", "path", "line 5: label 'fox' of a validation row is not among the training rows' classes "
                              "(cat, dog, owl)"),
    ("unknown_integer", "path", "line 3: label '7' of a test row is not among the training rows' classes (0, 1)"),
    ("empty_file", "path", "is empty; expected a header line (filename,class)"),
    ("header_only", "path", "has a header but no rows"),
    ("bad_split", "split_col", "line 2: subset is 'holdout'; expected train, validation"),
    ("no_train_rows", "split_col", "no row has subset=train"),
    ("one_class", "path", "only one class (cat)"),
    ("empty_label", "path", "line 3: empty 'class'"),
    ("broken_image", "path", "line 2: image file"),
])
def test_csv_errors_name_the_key_the_file_and_the_line(make_cfg, tmp_path, case, key, words):
    rows, _ = labelled_images(tmp_path, per_class=3)
    table, extra = tmp_path / "labels.csv", []
    with_split = [(*row, "train") for row in rows]
    if case == "no_column":
        write_table(table, rows)
        extra = ["dataset.x_col=path"]
    elif case == "missing_image":
        write_table(table, [*rows[:2], ("images/gone.png", "cat"), *rows[2:]])
    elif case == "unknown_label":
        with_split[3] = (rows[3][0], "fox", "validation")
        write_table(table, with_split, header=("filename", "class", "subset"))
        extra = ["dataset.split_col=subset"]
    elif case == "unknown_integer":
        write_table(table, [(rows[0][0], 0, "train"), (rows[1][0], 7, "test"), (rows[2][0], 1, "train")],
                    header=("filename", "class", "subset"))
        extra = ["dataset.split_col=subset"]
    elif case == "empty_file":
        table.write_text("")
    elif case == "header_only":
        write_table(table, [])
    elif case == "bad_split":
        with_split[0] = (*rows[0], "holdout")
        write_table(table, with_split, header=("filename", "class", "subset"))
        extra = ["dataset.split_col=subset"]
    elif case == "no_train_rows":
        write_table(table, [(*row, "test") for row in rows], header=("filename", "class", "subset"))
        extra = ["dataset.split_col=subset"]
    elif case == "one_class":
        write_table(table, [(path, "cat") for path, _ in rows])
    elif case == "empty_label":
        write_table(table, [rows[0], (rows[1][0], ""), *rows[2:]])
    elif case == "broken_image":
        (tmp_path / rows[0][0]).write_bytes(b"\x89PNG\r\n\x1a\n but cut short")
        write_table(table, rows)
    with pytest.raises(DataError) as err:
        load_csv(make_cfg, table, *extra, "dataset.cache=false")
    message = str(err.value)
    assert message.startswith(f"dataset.{key}: ") and "\n" not in message, message
    assert words in message, message
    if key == "path" and case not in ("empty_file", "header_only"):
        assert str(table) in message


@pytest.mark.parametrize("overrides, key, words", [
    ([], "path", "required, e.g. dataset.path=/data/labels.csv"),
    (["dataset.path=/no/such.csv"], "path", "table /no/such.csv does not exist"),
    (["dataset.path={tmp}"], "path", "is a folder; expected a CSV table"),
    (["dataset.path={tmp}/t.csv", "dataset.y_col=filename"], "y_col", "must name different columns"),
    (["dataset.path={tmp}/t.csv", "dataset.x_col="], "x_col", "expected a column name"),
    (["dataset.path={tmp}/t.csv", "dataset.test_split=0.9"], "test_split", "must be < 1"),
])
def test_csv_check_reads_no_image(make_cfg, tmp_path, overrides, key, words):
    (tmp_path / "t.csv").write_text("filename,class\nnot/there.png,cat\n")
    cfg = make_cfg("dataset=csv", *(o.format(tmp=tmp_path) for o in overrides))
    with pytest.raises(DataError) as err:
        datasets.check(cfg.dataset)
    assert str(err.value).startswith(f"dataset.{key}: ") and words in str(err.value)


def test_csv_cache_key_follows_the_table_and_its_images(make_cfg, tmp_path):
    rows, _ = labelled_images(tmp_path, per_class=3)
    table = write_table(tmp_path / "labels.csv", rows)
    cfg = make_cfg("dataset=csv", f"dataset.path={table}").dataset
    base = datasets.cache_key(cfg)
    assert datasets.cache_key(cfg) == base
    image = tmp_path / rows[0][0]
    stamp = image.stat()
    os.utime(image, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1000))  # an image touched
    touched = datasets.cache_key(cfg)
    write_table(table, [(rows[0][0], "owl"), *rows[1:]])  # a label edited
    edited = datasets.cache_key(cfg)
    assert len({base, touched, edited}) == 3
    first = datasets.load(cfg)
    assert datasets.load(cfg).class_names == first.class_names == ["cat", "dog", "owl"]


# ------------------------------------------------------------------------------------------ Keras' file formats


def write_mnist(datadir, n_train=60, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    arrays = dict(x_train=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
                  y_train=(np.arange(n_train) % 10).astype(np.uint8),
                  x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
                  y_test=(np.arange(n_test) % 10).astype(np.uint8))
    datadir.mkdir(parents=True, exist_ok=True)
    np.savez(datadir / "mnist.npz", **arrays)
    return arrays


def keras_mnist_dataset(tmp_path):
    """Registry entry for test_datasets.SOURCES: a small mnist.npz in a private Keras home."""
    write_mnist(tmp_path / "keras" / "datasets")
    return ["dataset.which=mnist", f"dataset.keras_home={tmp_path / 'keras'}"]


def write_idx(file, array):
    """IDX as Fashion-MNIST ships it, gzipped: magic (0, 0, uint8 type 8, number of dimensions), sizes, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    file.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(file, "wb") as stream:
        stream.write(header + array.astype(np.uint8).tobytes())


def write_fashion(datadir, n_train=40, n_test=10):
    rng = np.random.default_rng(1)
    x_train, x_test = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for n in (n_train, n_test))
    y_train, y_test = (np.arange(n) % 10 for n in (n_train, n_test))
    folder = datadir / "fashion-mnist"
    for name, array in zip(datasets.FASHION_FILES, (y_train, x_train, y_test, x_test)):
        write_idx(folder / name, array)
    return x_train, y_train, x_test, y_test


def cifar_rows(images):
    """(N, 32, 32, 3) -> CIFAR's (N, 3072) rows: the red plane, then green, then blue, each row by row."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def write_pickle(file, value):
    # CIFAR's files come from Python 2, whose strings read back as bytes with encoding="bytes"; protocol 3 and
    # later write bytes directly (protocol 2 from Python 3 would need codecs.encode, which Keras refuses too).
    file.parent.mkdir(parents=True, exist_ok=True)
    with open(file, "wb") as stream:
        pickle.dump(value, stream, protocol=3)


def write_cifar10(folder, per_batch=4, seed=2):
    """data_batch_1..5 and test_batch as CIFAR-10's python version holds them; returns the images and labels."""
    rng = np.random.default_rng(seed)
    written = {}
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        images = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        write_pickle(folder / name, {b"batch_label": name.encode(), b"labels": labels, b"data": cifar_rows(images),
                                     b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)]})
        written[name] = (images, labels)
    write_pickle(folder / "batches.meta", {b"label_names": [n.encode() for n in datasets.CIFAR10_CLASSES],
                                           b"num_cases_per_batch": per_batch, b"num_vis": 3072})
    return written


def write_cifar100(folder, n_train=30, n_test=10, seed=3):
    rng = np.random.default_rng(seed)
    written = {}
    for name, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        coarse = [v // 5 for v in fine]
        write_pickle(folder / name, {b"filenames": [b"x.png"] * n, b"batch_label": name.encode(),
                                     b"fine_labels": fine, b"coarse_labels": coarse, b"data": cifar_rows(images)})
        written[name] = (images, fine, coarse)
    write_pickle(folder / "meta", {b"fine_label_names": [f"fine{k}".encode() for k in range(100)],
                                   b"coarse_label_names": [f"coarse{k}".encode() for k in range(20)]})
    return written


def tar_gz(archive, folder):
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def load_keras(make_cfg, home, which, *overrides):
    cfg = make_cfg("dataset=keras_datasets", f"dataset.which={which}", f"dataset.keras_home={home}", *overrides)
    datasets.check(cfg.dataset)
    return datasets.load(cfg.dataset)


# ------------------------------------------------------------------------------------------ keras_datasets


def test_mnist_test_split_is_keras_own_and_validation_comes_from_train(make_cfg, tmp_path):
    written = write_mnist(tmp_path / "datasets")
    splits = load_keras(make_cfg, tmp_path, "mnist")
    assert splits.class_names == [str(k) for k in range(10)]
    assert splits.input_shape == (28, 28, 1)
    for split in (splits.train, splits.val, splits.test):
        assert split.x.dtype == np.uint8 and split.y.dtype == np.int64
    np.testing.assert_array_equal(splits.test.x[..., 0], written["x_test"])
    np.testing.assert_array_equal(splits.test.y, written["y_test"])
    assert (len(splits.train), len(splits.val)) == (54, 6)
    # Train and validation together are exactly Keras' training images, each with its own label.
    rows = {written["x_train"][i].tobytes(): written["y_train"][i] for i in range(60)}
    pooled = np.concatenate([splits.train.x, splits.val.x])[..., 0]
    labels = np.concatenate([splits.train.y, splits.val.y])
    assert sorted(rows) == sorted(x.tobytes() for x in pooled)
    assert all(rows[x.tobytes()] == y for x, y in zip(pooled, labels))

    resized = load_keras(make_cfg, tmp_path, "mnist", "dataset.image_size=32", "dataset.channels=3",
                         "dataset.train_size=20")
    assert resized.input_shape == (32, 32, 3) and len(resized.train) == 20 and len(resized.test) == 20


def test_keras_home_defaults_to_the_environment_as_keras_does(make_cfg, tmp_path, monkeypatch):
    written = write_mnist(tmp_path / "home" / "datasets")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    assert datasets.keras_datasets_dir() == tmp_path / "home" / "datasets"
    cfg = make_cfg("dataset=keras_datasets", "dataset.which=mnist")
    assert cfg.dataset.keras_home is None
    np.testing.assert_array_equal(datasets.load(cfg.dataset).test.x[..., 0], written["x_test"])


@pytest.mark.slow
def test_fashion_mnist_equals_what_keras_own_loader_reads(make_cfg, tmp_path):
    x_train, y_train, x_test, y_test = write_fashion(tmp_path / "datasets")
    splits = load_keras(make_cfg, tmp_path, "fashion_mnist")
    assert splits.class_names[0] == "T-shirt/top" and len(splits.class_names) == 10
    np.testing.assert_array_equal(splits.test.x[..., 0], x_test)
    np.testing.assert_array_equal(splits.test.y, y_test)
    assert len(splits.train) + len(splits.val) == 40

    # keras.datasets.fashion_mnist.load_data() on the same cache (it verifies no checksum, so it reads these files).
    script = ("import sys, numpy as np, keras\n"
              "(a, b), (c, d) = keras.datasets.fashion_mnist.load_data()\n"
              "np.savez(sys.argv[1], x_train=a, y_train=b, x_test=c, y_test=d)\n")
    out = tmp_path / "keras_read.npz"
    result = subprocess.run([sys.executable, "-c", script, str(out)], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "KERAS_HOME": str(tmp_path)}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    with np.load(out) as keras_read:
        np.testing.assert_array_equal(keras_read["x_test"], splits.test.x[..., 0])
        np.testing.assert_array_equal(keras_read["y_train"], y_train)
        pooled = sorted(x.tobytes() for x in np.concatenate([splits.train.x, splits.val.x])[..., 0])
        assert pooled == sorted(x.tobytes() for x in keras_read["x_train"])


@pytest.mark.parametrize("layout", ["target_folder", "older_folder", "archive", "older_archive"])
def test_cifar10_from_every_layout_keras_leaves(make_cfg, tmp_path, layout):
    datadir = tmp_path / "datasets"
    extracted = tmp_path / "build" / "cifar-10-batches-py"
    written = write_cifar10(extracted)
    place = {"target_folder": datadir / "cifar-10-batches-py-target", "older_folder": datadir,
             "archive": datadir / "cifar-10-batches-py-target_archive",
             "older_archive": datadir / "cifar-10-batches-py.tar.gz"}[layout]
    if layout.endswith("folder"):
        place.mkdir(parents=True)
        extracted.rename(place / "cifar-10-batches-py")
    else:
        tar_gz(place, extracted)
    splits = load_keras(make_cfg, tmp_path, "cifar10", "dataset.validation_split=0.2")

    assert splits.class_names == list(datasets.CIFAR10_CLASSES) and splits.input_shape == (32, 32, 3)
    test_images, test_labels = written["test_batch"]
    np.testing.assert_array_equal(splits.test.x, test_images)  # channels last, pixel for pixel
    np.testing.assert_array_equal(splits.test.y, test_labels)
    train = {}
    for i in range(1, 6):
        images, labels = written[f"data_batch_{i}"]
        train.update({x.tobytes(): y for x, y in zip(images, labels)})
    loaded = np.concatenate([splits.train.x, splits.val.x])
    assert (len(splits.train), len(splits.val)) == (16, 4)
    assert sorted(train) == sorted(x.tobytes() for x in loaded)
    assert all(train[x.tobytes()] == y for x, y in zip(loaded, np.concatenate([splits.train.y, splits.val.y])))


def test_cifar_batches_written_here_parse_the_same_with_keras_own_reader(tmp_path):
    from keras.src.datasets.cifar import load_batch  # the parser keras.datasets.cifar10 uses

    written = write_cifar10(tmp_path / "cifar-10-batches-py")
    data, labels = load_batch(str(tmp_path / "cifar-10-batches-py" / "test_batch"))
    images, expected = written["test_batch"]
    np.testing.assert_array_equal(data.transpose(0, 2, 3, 1), images)
    assert list(labels) == expected


def test_cifar100_fine_and_coarse_labels(make_cfg, tmp_path):
    written = write_cifar100(tmp_path / "build" / "cifar-100-python")
    tar_gz(tmp_path / "datasets" / "cifar-100-python-target_archive", tmp_path / "build" / "cifar-100-python")
    fine = load_keras(make_cfg, tmp_path, "cifar100")
    coarse = load_keras(make_cfg, tmp_path, "cifar100", "dataset.label_mode=coarse")
    images, fine_labels, coarse_labels = written["test"]
    assert fine.class_names == [f"fine{k}" for k in range(100)]
    assert coarse.class_names == [f"coarse{k}" for k in range(20)]
    np.testing.assert_array_equal(fine.test.x, images)
    np.testing.assert_array_equal(fine.test.y, fine_labels)
    np.testing.assert_array_equal(coarse.test.y, coarse_labels)
    assert len(fine.train) + len(fine.val) == 30


@pytest.mark.parametrize("which, missing, url", [
    ("mnist", "datasets/mnist.npz", "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"),
    ("fashion_mnist", "datasets/fashion-mnist/train-labels-idx1-ubyte.gz",
     "https://storage.googleapis.com/tensorflow/tf-keras-datasets/t10k-images-idx3-ubyte.gz"),
    ("cifar10", "datasets/cifar-10-batches-py-target_archive", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    ("cifar100", "datasets/cifar-100-python-target_archive",
     "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
])
def test_an_empty_cache_names_the_file_to_download_and_where(make_cfg, tmp_path, which, missing, url):
    cfg = make_cfg("dataset=keras_datasets", f"dataset.which={which}", f"dataset.keras_home={tmp_path}")
    with pytest.raises(DataError) as err:
        datasets.check(cfg.dataset)  # before anything is read
    message = str(err.value)
    assert message.startswith(f"dataset.which={which}: Keras' cache has no {tmp_path / missing}; download ")
    assert url in message and "on a machine with network access" in message and "\n" not in message


def test_a_cifar10_folder_missing_a_batch_is_not_used(make_cfg, tmp_path):
    folder = tmp_path / "datasets" / "cifar-10-batches-py-target" / "cifar-10-batches-py"
    write_cifar10(folder)
    (folder / "data_batch_3").unlink()  # an interrupted extraction
    with pytest.raises(DataError, match="Keras' cache has no .*cifar-10-batches-py-target_archive"):
        load_keras(make_cfg, tmp_path, "cifar10")


def test_a_corrupt_cached_file_is_named(make_cfg, tmp_path):
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "mnist.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"^dataset.which: mnist: .*mnist.npz: cannot read as .npz"):
        load_keras(make_cfg, tmp_path, "mnist")
    tar = tmp_path / "datasets" / "cifar-10-batches-py-target_archive"
    tar.write_bytes(b"\x1f\x8b broken gzip")
    with pytest.raises(DataError, match=r"^dataset.which: cifar10: .*cannot read the CIFAR files"):
        load_keras(make_cfg, tmp_path, "cifar10")


def test_a_pickle_that_builds_anything_but_arrays_is_refused(make_cfg, tmp_path):
    folder = tmp_path / "datasets" / "cifar-10-batches-py-target" / "cifar-10-batches-py"
    write_cifar10(folder)
    write_pickle(folder / "test_batch", {b"data": np.zeros((1, 3072), np.uint8), b"labels": [os.getpid]})
    with pytest.raises(DataError, match="refusing to construct posix.getpid"):
        load_keras(make_cfg, tmp_path, "cifar10")


@pytest.mark.parametrize("overrides, key, words", [
    (["dataset.which=svhn"], "which", "expected one of mnist, fashion_mnist, cifar10, cifar100, got 'svhn'"),
    (["dataset.which=mnist", "dataset.label_mode=coarse"], "label_mode", "applies to cifar100 only"),
    (["dataset.which=cifar100", "dataset.label_mode=medium"], "label_mode", "expected fine or coarse"),
    (["dataset.which=mnist", "dataset.validation_split=1"], "validation_split", "[0, 1)"),
    (["dataset.which=mnist", "dataset.channels=2"], "channels", "1 or 3 or null"),
    (["+dataset.test_split=0.2"], "test_split", "not a setting of dataset keras_datasets"),
])
def test_keras_datasets_check_names_the_key(make_cfg, tmp_path, overrides, key, words):
    write_mnist(tmp_path / "datasets")
    cfg = make_cfg("dataset=keras_datasets", f"dataset.keras_home={tmp_path}", *overrides)
    with pytest.raises(DataError) as err:
        datasets.check(cfg.dataset)
    assert str(err.value).startswith(f"dataset.{key}: ") and words in str(err.value)


def test_keras_cache_key_follows_the_cached_file(make_cfg, tmp_path):
    write_mnist(tmp_path / "a" / "datasets")
    write_mnist(tmp_path / "b" / "datasets")
    key = lambda home: datasets.cache_key(make_cfg(
        "dataset=keras_datasets", "dataset.which=mnist", f"dataset.keras_home={home}").dataset)
    base = key(tmp_path / "a")
    assert key(tmp_path / "a") == base and key(tmp_path / "b") != base
    file = tmp_path / "a" / "datasets" / "mnist.npz"
    stamp = file.stat()
    os.utime(file, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1000))
    assert key(tmp_path / "a") != base


# ------------------------------------------------------------------------------------------ whole runs


def finished_run(cfg):
    from ablation.training.run import run

    metrics = run(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    mlrun = client.get_run(metrics["run_id"])
    assert mlrun.info.status == "FINISHED"
    assert 0 <= mlrun.data.metrics["test/accuracy"] <= 1
    assert [m.step for m in client.get_metric_history(mlrun.info.run_id, "val/loss")] == [1, 2]
    return mlrun


def test_a_csv_dataset_runs_end_to_end(make_cfg, tmp_path):
    cfg = make_cfg("dataset=csv", *csv_dataset(tmp_path), "tracking.log_model=false")
    mlrun = finished_run(cfg)
    assert mlrun.data.tags["dataset"] == "csv"
    assert mlrun.data.params["dataset.path"] == str(tmp_path / "table" / "labels.csv")


def test_keras_mnist_runs_end_to_end(make_cfg, tmp_path):
    cfg = make_cfg("dataset=keras_datasets", *keras_mnist_dataset(tmp_path), "tracking.log_model=false")
    mlrun = finished_run(cfg)
    assert mlrun.data.tags["dataset"] == "keras_datasets"
    assert mlrun.data.params["dataset.which"] == "mnist"
