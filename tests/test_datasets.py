"""ablation.datasets: every option in conf/dataset/ composed through Hydra and loaded from real files."""

import numpy as np
import pytest
from PIL import Image
from test_sources import csv_dataset, keras_mnist_dataset

from ablation import datasets
from ablation.datasets import DataError
from conftest import options


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    """Every load here goes through the cache (the default), kept out of the repository."""
    monkeypatch.setenv("ABLATION_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ------------------------------------------------------------------------------------------ small real datasets


def write_image(path, value, size=(12, 10), mode="RGB"):
    """A solid image whose colour encodes `value`, so a loaded pixel tells which file it came from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (value % 256, (value * 7) % 256, 200) if mode == "RGB" else value % 256
    Image.new(mode, size, colour).save(path)
    return path


def class_folder(root, classes=("cat", "dog", "owl"), per_class=10, start=0):
    """root/<class>/<i>.png with distinct red values; returns the values written per class."""
    written = {}
    for c, name in enumerate(classes):
        values = [start + c * per_class + i for i in range(per_class)]
        for v in values:
            write_image(root / name / f"{v}.png", v)
        written[name] = values
    return written


def folder_dataset(tmp_path):
    class_folder(tmp_path / "flowers")
    return [f"dataset.path={tmp_path / 'flowers'}", "dataset.image_size=16"]


def npz_dataset(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 20, 20, 3), dtype=np.uint8)
    np.savez(tmp_path / "data.npz", x_train=x, y_train=np.arange(60) % 3)
    return [f"dataset.path={tmp_path / 'data.npz'}"]


# Option -> the extra overrides (writing the files it needs). A new conf/dataset/*.yaml must be added here.
SOURCES = {
    "digits": lambda tmp_path: [],
    "shapes": lambda tmp_path: ["dataset.n_train=60", "dataset.n_val=30", "dataset.n_test=30"],
    "folder": folder_dataset,
    "npz": npz_dataset,
    "csv": csv_dataset,
    "keras_datasets": keras_mnist_dataset,
}


def test_every_dataset_option_is_tested():
    assert {"digits", "shapes", "folder", "npz"} <= set(options("dataset"))
    assert set(options("dataset")) == set(SOURCES), "add the new option to SOURCES"
    assert set(options("dataset")) == set(datasets.LOADERS)


def compose(make_cfg, option, tmp_path, *extra):
    return make_cfg(f"dataset={option}", *SOURCES[option](tmp_path), *extra)


# ------------------------------------------------------------------------------------------ registry-driven


@pytest.mark.parametrize("option", options("dataset"))
def test_option_loads_uint8_splits(option, make_cfg, tmp_path):
    cfg = compose(make_cfg, option, tmp_path)
    assert cfg.dataset.name == option and cfg.dataset.split_seed == cfg.seed
    datasets.check(cfg.dataset)
    splits = datasets.load(cfg.dataset)

    assert splits.num_classes == len(splits.class_names) >= 2
    h, w, c = splits.input_shape
    assert c in (1, 3) and h >= 8 and w >= 8
    if cfg.dataset.get("image_size") is not None:
        assert (h, w) == (cfg.dataset.image_size, cfg.dataset.image_size)
    if cfg.dataset.get("channels") is not None:
        assert c == cfg.dataset.channels
    for split in (splits.train, splits.val, splits.test):
        assert split.x.dtype == np.uint8 and split.y.dtype == np.int64
        assert split.x.shape == (len(split.y), h, w, c) and len(split) > 0
        assert split.y.min() >= 0 and split.y.max() < splits.num_classes
    assert splits.train.x.max() > splits.train.x.min()


@pytest.mark.parametrize("option", options("dataset"))
def test_split_is_deterministic_per_seed(option, make_cfg, tmp_path):
    first = datasets.load(compose(make_cfg, option, tmp_path, "seed=3").dataset)
    again = datasets.load(compose(make_cfg, option, tmp_path, "seed=3").dataset)
    other = datasets.load(compose(make_cfg, option, tmp_path, "seed=4").dataset)
    for name in ("train", "val", "test"):
        a, b, o = (getattr(s, name) for s in (first, again, other))
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(first.val.x, other.val.x)
    if option != "keras_datasets":  # whose test split is Keras' own, the same for every seed
        assert not np.array_equal(first.test.x, other.test.x)


def test_load_accepts_a_plain_dict():
    splits = datasets.load({"name": "digits", "image_size": 8, "train_size": None, "split_seed": 0})
    assert splits.input_shape == (8, 8, 1)


# ------------------------------------------------------------------------------------------ check()


@pytest.mark.parametrize("overrides, key, words", [
    (["dataset.name=mnist"], "name", "unknown dataset 'mnist'"),
    (["dataset.image_size=4"], "image_size", ">= 8"),
    (["dataset.channels=2"], "channels", "1 or 3"),
    (["dataset.validation_split=1.0"], "validation_split", "[0, 1)"),
    (["dataset.test_split=-0.1"], "test_split", "[0, 1)"),
    (["dataset.validation_split=0.5", "dataset.test_split=0.5"], "test_split", "must be < 1"),
    (["dataset.train_size=0"], "train_size", ">= 1"),
    (["seed=-2"], "split_seed", ">= 0"),
    (["+dataset.colour=1"], "colour", "not a setting"),
    (["dataset.cache=maybe"], "cache", "expected true or false, got 'maybe'"),
    (["dataset=folder"], "path", "required, e.g. dataset.path=/data/flowers"),
    (["dataset=folder", "dataset.path=/no/such/dir"], "path", "folder /no/such/dir does not exist"),
    (["dataset=folder", "dataset.path=/no/such/dir", "dataset.image_size=4"], "path", "does not exist"),
    (["dataset=npz"], "path", "required, e.g. dataset.path="),
    (["dataset=npz", "dataset.path=/no/such.npz"], "path", "file /no/such.npz does not exist"),
    (["dataset=shapes", "dataset.classes=[circle]"], "classes", "two or more"),
    (["dataset=shapes", "dataset.classes=[circle,blob]"], "classes", "circle, square"),
    (["dataset=shapes", "dataset.train_shift=1.5"], "train_shift", "[0, 1]"),
    (["dataset=shapes", "dataset.eval_scale_range=[0.4,0.2]"], "eval_scale_range", "low <= high"),
    (["dataset=shapes", "dataset.n_train=0"], "n_train", ">= 1"),
    (["dataset=shapes", "dataset.eval_wide_axes=5"], "eval_wide_axes", "0..4"),
    (["dataset=shapes", "dataset.train_hue_range=[90]"], "train_hue_range", "[low, high]"),
])
def test_check_names_the_bad_key(make_cfg, overrides, key, words):
    cfg = make_cfg(*overrides)
    with pytest.raises(DataError) as err:
        datasets.check(cfg.dataset)
    message = str(err.value)
    assert message.startswith(f"dataset.{key}: ") and words in message and "\n" not in message


def test_check_reads_no_images(make_cfg, tmp_path, cache_in_tmp):
    class_folder(tmp_path / "d")
    write_image(tmp_path / "d" / "cat" / "broken.png", 0).write_bytes(b"not a png")
    cfg = make_cfg("dataset=folder", f"dataset.path={tmp_path / 'd'}").dataset
    datasets.check(cfg)  # no error until load
    assert datasets.cache_key(cfg) and not cache_in_tmp.exists()  # the key only lists the files
    with pytest.raises(DataError, match="broken.png: cannot decode"):
        datasets.load(cfg)


# ------------------------------------------------------------------------------------------ digits


def class_share(y, k=10):
    return np.bincount(y, minlength=k) / len(y)


def test_digits_sizes_stratification_and_subsampling(make_cfg):
    splits = datasets.load(make_cfg("dataset=digits").dataset)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (500, 359, 359)
    overall = class_share(np.concatenate([splits.val.y, splits.test.y]))
    for split in (splits.train, splits.val, splits.test):
        assert np.abs(class_share(split.y) - 0.1).max() < 0.015  # digits are ~balanced; stratified splits stay so
    assert np.abs(class_share(splits.val.y) - overall).max() < 0.01

    full = datasets.load(make_cfg("dataset.train_size=null").dataset)
    assert len(full.train) == 1797 - 359 - 359
    np.testing.assert_array_equal(full.test.x, splits.test.x)  # subsampling never touches the held-out sets
    assert datasets.load(make_cfg("dataset.validation_split=0.1").dataset).val.x.shape[0] == 180


def test_digits_values_and_channels(make_cfg):
    gray = datasets.load(make_cfg("dataset.image_size=16").dataset)
    assert gray.input_shape == (16, 16, 1) and gray.train.x.max() == 255 and gray.train.x.min() == 0
    rgb = datasets.load(make_cfg("dataset.image_size=16", "dataset.channels=3").dataset)
    assert rgb.input_shape == (16, 16, 3)
    np.testing.assert_array_equal(rgb.train.x[..., 0], gray.train.x[..., 0])
    np.testing.assert_array_equal(rgb.train.x[..., 2], gray.train.x[..., 0])


# ------------------------------------------------------------------------------------------ shapes


def object_stats(x):
    """Per image: centroid (row, col) of the shape's pixels and their mean brightest-channel value."""
    v = x.max(axis=-1).astype(np.float32)
    mask = v > (v.min(axis=(1, 2), keepdims=True) + v.max(axis=(1, 2), keepdims=True)) / 2
    rows, cols = np.indices(v.shape[1:])
    count = mask.sum(axis=(1, 2))
    centroid = np.stack([(mask * rows).sum(axis=(1, 2)) / count, (mask * cols).sum(axis=(1, 2)) / count], axis=1)
    return centroid, (mask * v).sum(axis=(1, 2)) / count


def test_shapes_train_is_narrow_and_eval_wide(make_cfg):
    splits = datasets.load(make_cfg("dataset=shapes").dataset)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (600, 300, 300)
    assert splits.input_shape == (32, 32, 3) and splits.class_names == ["circle", "square", "triangle", "cross"]
    assert np.bincount(splits.train.y).tolist() == [150] * 4

    # Every axis wide at once: every eval image is off the training distribution.
    every = datasets.load(make_cfg("dataset=shapes", "dataset.eval_wide_axes=4").dataset)
    train_centre, train_light = object_stats(every.train.x)
    test_centre, test_light = object_stats(every.test.x)
    assert train_centre.std(axis=0).max() < 1.0 < 3.0 < test_centre.std(axis=0).min()
    assert train_light.std() * 2 < test_light.std()
    assert train_light.min() > 180 > 120 > test_light.min()
    np.testing.assert_array_equal(every.train.x, splits.train.x)

    # The default moves each eval image off on one axis of four: about a quarter of them are shifted.
    def off_centre(x):
        return (np.abs(object_stats(x)[0] - 15.5).max(axis=1) > 2).mean()
    assert off_centre(splits.train.x) == 0 and 0.12 < off_centre(splits.test.x) < 0.35 < 0.6 < off_centre(every.test.x)

    # The knobs drive it: a wide training distribution loses the narrowness.
    wide = datasets.load(make_cfg("dataset=shapes", "dataset.train_shift=1.0",
                                  "dataset.train_scale_range=[0.18,0.42]").dataset)
    assert object_stats(wide.train.x)[0].std(axis=0).min() > 3.0


def test_shapes_test_set_ignores_n_train_and_converts_channels(make_cfg):
    gray = ["dataset=shapes", "dataset.channels=1", "dataset.classes=[star,cross,circle]"]
    base = datasets.load(make_cfg(*gray).dataset)
    varied = datasets.load(make_cfg(*gray, "dataset.n_train=50").dataset)
    assert varied.input_shape == (32, 32, 1) and len(varied.train) == 50 and varied.num_classes == 3
    np.testing.assert_array_equal(varied.test.x, base.test.x)
    np.testing.assert_array_equal(varied.val.y, base.val.y)
    # With every axis wide, the eval images do not depend on the training ranges either.
    every = [*gray, "dataset.eval_wide_axes=4"]
    np.testing.assert_array_equal(datasets.load(make_cfg(*every).dataset).test.x, datasets.load(
        make_cfg(*every, "dataset.train_rotate_range=[-90,90]").dataset).test.x)
    colour = datasets.load(make_cfg("dataset=shapes", "dataset.classes=[star,cross,circle]").dataset)
    assert colour.test.x.shape == (300, 32, 32, 3) and not (colour.test.x[..., 0] == colour.test.x[..., 1]).all()


# ------------------------------------------------------------------------------------------ folder


def ids(split):
    """The red value each image was written with (solid PNGs survive decoding exactly)."""
    return sorted(int(v) for v in split.x[:, 0, 0, 0])


def test_folder_single_layout_split_by_fractions(make_cfg, tmp_path):
    written = class_folder(tmp_path / "d", per_class=20)
    (tmp_path / "d" / "notes.txt").write_text("ignored")
    (tmp_path / "d" / "cat" / "readme.md").write_text("ignored")
    cfg = make_cfg("dataset=folder", f"dataset.path={tmp_path / 'd'}", "dataset.image_size=8")
    splits = datasets.load(cfg.dataset)
    assert splits.class_names == ["cat", "dog", "owl"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (36, 12, 12)
    for split in (splits.val, splits.test):
        assert np.bincount(split.y).tolist() == [4, 4, 4]  # stratified
    everything = ids(splits.train) + ids(splits.val) + ids(splits.test)
    assert sorted(everything) == sorted(v for values in written.values() for v in values)  # disjoint, complete
    for split in (splits.train, splits.val, splits.test):  # each label matches the folder its file was in
        for image, label in zip(split.x, split.y):
            assert int(image[0, 0, 0]) in written[splits.class_names[label]]

    fewer = datasets.load(make_cfg("dataset=folder", f"dataset.path={tmp_path / 'd'}", "dataset.train_size=9").dataset)
    assert np.bincount(fewer.train.y).tolist() == [3, 3, 3]


def test_a_long_decode_reports_its_progress(make_cfg, tmp_path, monkeypatch, caplog):
    """Lines with how many images are decoded and about how long is left; the cached second load decodes nothing."""
    import logging

    from ablation.datasets import images

    class_folder(tmp_path / "d", per_class=20)  # 60 images, decoded 8 at a time, a line after every chunk
    monkeypatch.setattr(images, "DECODE_CHUNK", 8)
    monkeypatch.setattr(images, "PROGRESS_EVERY_S", 0.0)
    caplog.set_level(logging.INFO, logger="ablation.datasets")
    cfg = make_cfg("dataset=folder", f"dataset.path={tmp_path / 'd'}", "dataset.image_size=8")
    datasets.load(cfg.dataset)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dataset: decoded")]
    counts = [int(line.split()[2].replace(",", "")) for line in lines[:-1]]
    assert counts == sorted(counts) and counts[0] == 8 and len(counts) >= 6, lines
    assert all(" of 60 images (" in line and "s left" in line for line in lines[:-1])
    assert lines[-1].startswith("dataset: decoded 60 images in ")
    caplog.clear()
    datasets.load(cfg.dataset)
    assert not [r for r in caplog.records if r.getMessage().startswith("dataset: decoded")]


@pytest.mark.parametrize("val_name", ["validation", "val"])
def test_folder_split_layout(make_cfg, tmp_path, val_name):
    root = tmp_path / "d"
    train = class_folder(root / "train", per_class=5)
    val = class_folder(root / val_name, classes=("cat", "owl"), per_class=2, start=100)  # no dog: fine
    test = class_folder(root / "test", per_class=3, start=150)
    splits = datasets.load(make_cfg("dataset=folder", f"dataset.path={root}", "dataset.image_size=8").dataset)
    assert splits.class_names == ["cat", "dog", "owl"]
    assert ids(splits.train) == sorted(sum(train.values(), []))
    assert ids(splits.val) == sorted(sum(val.values(), []))
    assert ids(splits.test) == sorted(sum(test.values(), []))
    assert sorted(splits.val.y.tolist()) == [0, 0, 2, 2]  # owl keeps index 2 though dog is absent


def test_folder_missing_validation_is_taken_from_train(make_cfg, tmp_path):
    root = tmp_path / "d"
    class_folder(root / "train", per_class=10)
    test = class_folder(root / "test", per_class=2, start=200)
    splits = datasets.load(make_cfg("dataset=folder", f"dataset.path={root}", "dataset.validation_split=0.3").dataset)
    assert (len(splits.train), len(splits.val)) == (21, 9)
    assert ids(splits.test) == sorted(sum(test.values(), []))
    assert not set(ids(splits.train)) & set(ids(splits.val))


def test_folder_extensions_and_channels(make_cfg, tmp_path):
    root = tmp_path / "d"
    write_image(root / "a" / "1.JPG", 10, size=(40, 30))
    write_image(root / "a" / "2.jpeg", 20, mode="L")
    write_image(root / "a" / "nested" / "3.Png", 30)
    write_image(root / "b" / "4.bmp", 40)
    write_image(root / "b" / "5.png", 50, mode="L")
    Image.new("RGBA", (9, 9), (60, 60, 60, 128)).save(root / "b" / "6.PNG")
    for channels in (1, 3):
        splits = datasets.load(make_cfg("dataset=folder", f"dataset.path={root}", f"dataset.channels={channels}",
                                        "dataset.image_size=12", "dataset.validation_split=0",
                                        "dataset.test_split=0").dataset)
        assert splits.input_shape == (12, 12, channels) and len(splits.train) == 6
        assert len(splits.val) == 0 and splits.val.x.shape == (0, 12, 12, channels)
    gray = splits.train.x[splits.train.x[:, 0, 0, 0] == 50]  # 5.png, stored as 'L'
    assert len(gray) == 1 and (gray == 50).all()  # grayscale files come out as equal R, G, B


@pytest.mark.parametrize("make_tree, words", [
    (lambda root: (root / "empty" / "x").mkdir(parents=True),
     "has no class folders with images (.jpg .jpeg .png .bmp)"),
    (lambda root: class_folder(root, classes=("only",)), "only one class folder (only)"),
    (lambda root: (class_folder(root / "train"), class_folder(root / "val", classes=("cat", "yak"))),
     "class 'yak' has no images in"),
    (lambda root: (class_folder(root / "train"), class_folder(root / "val"), class_folder(root / "validation")),
     "has both validation/ and val/"),
    (lambda root: (class_folder(root / "train"), class_folder(root / "validaton")), "validaton: unexpected folder"),
])
def test_folder_errors_name_the_problem(make_cfg, tmp_path, make_tree, words):
    root = tmp_path / "d"
    root.mkdir()
    make_tree(root)
    with pytest.raises(DataError) as err:
        datasets.load(make_cfg("dataset=folder", f"dataset.path={root}").dataset)
    assert str(err.value).startswith("dataset.path: ") and words in str(err.value)


def test_folder_undecodable_file_is_named(make_cfg, tmp_path):
    class_folder(tmp_path / "d")
    bad = tmp_path / "d" / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is no jpeg")
    with pytest.raises(DataError) as err:
        datasets.load(make_cfg("dataset=folder", f"dataset.path={tmp_path / 'd'}").dataset)
    message = str(err.value)
    assert message.startswith(f"dataset.path: {bad}: cannot decode image (") and "\n" not in message


# ------------------------------------------------------------------------------------------ npz


def npz_cfg(make_cfg, file, *extra):
    return make_cfg("dataset=npz", f"dataset.path={file}", *extra).dataset


def test_npz_given_splits_grayscale_float_and_one_hot(make_cfg, tmp_path):
    rng = np.random.default_rng(1)
    x_train = rng.random((40, 10, 10))  # float in [0, 1], no channel axis
    y_train = np.eye(4)[np.arange(40) % 4]  # one-hot
    x_val, y_val = rng.random((8, 10, 10)), np.arange(8) % 4
    x_test, y_test = rng.random((6, 10, 10)), np.arange(6) % 4
    names = np.array(["ant", "bee", "cow", "doe"])
    file = tmp_path / "d.npz"
    np.savez(file, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test,
             class_names=names)
    splits = datasets.load(npz_cfg(make_cfg, file, "dataset.train_size=null"))
    assert splits.class_names == ["ant", "bee", "cow", "doe"] and splits.input_shape == (10, 10, 1)
    assert sorted(splits.train.y.tolist()) == sorted((np.arange(40) % 4).tolist())
    np.testing.assert_array_equal(splits.test.x[..., 0], np.rint(x_test * 255).astype(np.uint8))
    np.testing.assert_array_equal(splits.val.y, y_val)

    converted = datasets.load(npz_cfg(make_cfg, file, "dataset.image_size=16", "dataset.channels=3"))
    assert converted.input_shape == (16, 16, 3) and len(converted.test) == 6


def test_npz_missing_splits_are_taken_from_train(make_cfg, tmp_path):
    file = tmp_path / "d.npz"
    x = np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1).repeat(8, 1).repeat(8, 2).repeat(3, 3)
    np.savez(file, x_train=x, y_train=np.arange(100) % 2, x_test=x[:10], y_test=np.zeros(10, np.int64))
    splits = datasets.load(npz_cfg(make_cfg, file, "dataset.validation_split=0.25"))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (75, 25, 10)
    assert splits.class_names == ["0", "1"] and sorted(np.bincount(splits.val.y)) == [12, 13]
    assert not set(ids(splits.train)) & set(ids(splits.val))
    assert ids(splits.test) == list(range(10))


@pytest.mark.parametrize("arrays, words", [
    (dict(x_train=np.zeros((4, 8, 8), np.uint8)), "has no array 'y_train'"),
    (dict(x_train=np.full((4, 8, 8), 3.0), y_train=np.arange(4)), "x_train: float images must lie in [0, 1]"),
    (dict(x_train=np.zeros((4, 8, 8), np.int32), y_train=np.arange(4)), "x_train: expected uint8, or float in [0, 1]"),
    (dict(x_train=np.zeros((4, 8, 8, 4), np.uint8), y_train=np.arange(4)), "x_train: expected images shaped"),
    (dict(x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.arange(5)), "y_train has 5 labels for 4 images"),
    (dict(x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.arange(4), x_val=np.zeros((2, 8, 8), np.uint8)),
     "has x_val but no y_val"),
    (dict(x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.arange(4), x_test=np.zeros((2, 9, 9), np.uint8),
          y_test=np.arange(2)), "x_test images are 9x9 but x_train's are 8x8"),
    (dict(x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.arange(4), class_names=np.array(["a", "b"])),
     "labels go up to 3 but class_names has 2 names"),
])
def test_npz_errors_name_the_array(make_cfg, tmp_path, arrays, words):
    file = tmp_path / "bad.npz"
    np.savez(file, **arrays)
    with pytest.raises(DataError) as err:
        datasets.load(npz_cfg(make_cfg, file))
    assert str(err.value).startswith(f"dataset.path: {file}") and words in str(err.value)


def test_npz_rejects_other_files(make_cfg, tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(DataError, match="is not an .npz file"):
        datasets.load(npz_cfg(make_cfg, text))
    single = tmp_path / "x.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(DataError, match="holds a single array"):
        datasets.load(npz_cfg(make_cfg, single))
