"""ablation.datasets' decode cache: one decode per sweep, memory-mapped afterwards, never stale, safe in parallel.

Real folders of PNGs under tmp_path; the cache root is a tmp folder too (ABLATION_CACHE_DIR)."""
import logging
import os
import threading

import numpy as np
import pytest
from PIL import Image
from test_datasets import SOURCES, class_folder, compose, write_image

from ablation import augment, datasets
from ablation.datasets import DataError
from conftest import options

FILES = ("train_x.npy", "train_y.npy", "val_x.npy", "val_y.npy", "test_x.npy", "test_y.npy", "meta.json")


@pytest.fixture(autouse=True)
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATION_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def folder(tmp_path):
    """300 small PNGs in 3 class folders: enough for a visible decode, still quick to write."""
    class_folder(tmp_path / "d", per_class=100)
    return tmp_path / "d"


def folder_cfg(make_cfg, root, *extra):
    return make_cfg("dataset=folder", f"dataset.path={root}", "dataset.image_size=8", *extra).dataset


def assert_same(a, b):
    assert a.class_names == b.class_names
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, name).x, getattr(b, name).x)
        np.testing.assert_array_equal(getattr(a, name).y, getattr(b, name).y)


def assert_mapped(splits):
    for name in ("train", "val", "test"):
        x = getattr(splits, name).x
        assert isinstance(x, np.memmap) and not x.flags.writeable


def corrupt_keeping_stamp(file):
    """Garbage of the same size with the same mtime: invisible to the key, fatal to any decoder."""
    before = file.stat()
    file.write_bytes(b"\0" * before.st_size)
    os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (file.stat().st_size, file.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_second_load_maps_the_cache_and_reads_no_image(make_cfg, folder, cache_root):
    cfg = folder_cfg(make_cfg, folder)
    first = datasets.load(cfg)
    target = datasets.cache_path(cfg)
    assert target.parent == cache_root and target.name == f"folder-{datasets.cache_key(cfg)}"
    assert sorted(os.listdir(cache_root)) == [target.name]  # published whole: no temporary sibling left
    assert sorted(os.listdir(target)) == sorted(FILES)
    assert target.stat().st_mode & 0o777 == cache_root.stat().st_mode & 0o777  # not mkdtemp's private 0700
    assert_mapped(first)

    victim = folder / "dog" / "150.png"
    corrupt_keeping_stamp(victim)
    with pytest.raises(DataError, match="150.png: cannot decode"):  # the corruption would be caught if read
        datasets.load(folder_cfg(make_cfg, folder, "dataset.cache=false"))
    second = datasets.load(cfg)
    assert_same(second, first)
    assert_mapped(second)

    write_image(victim, 250)  # rewritten: new size/mtime, a new key, decoded afresh
    assert datasets.cache_path(cfg) != target
    third = datasets.load(cfg)
    assert 250 in [int(v) for s in (third.train, third.val, third.test) for v in s.x[:, 0, 0, 0]]
    assert len(os.listdir(cache_root)) == 2


def test_any_change_to_settings_or_files_gives_a_new_key(make_cfg, folder, tmp_path, monkeypatch):
    base = datasets.cache_key(folder_cfg(make_cfg, folder))
    assert datasets.cache_key(folder_cfg(make_cfg, folder)) == base
    assert datasets.cache_key(folder_cfg(make_cfg, folder, "dataset.cache=false")) == base  # same arrays either way
    monkeypatch.chdir(tmp_path)
    assert datasets.cache_key(folder_cfg(make_cfg, "d")) == base  # the same folder however it is spelled
    for override in ("dataset.image_size=9", "dataset.channels=1", "seed=1", "dataset.validation_split=0.3",
                     "dataset.test_split=0.1", "dataset.train_size=50"):
        assert datasets.cache_key(folder_cfg(make_cfg, folder, override)) != base, override

    file = folder / "cat" / "0.png"
    stamp = file.stat()
    os.utime(file, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1000))  # touched, content unchanged
    touched = datasets.cache_key(folder_cfg(make_cfg, folder))
    assert touched != base
    (folder / "cat" / "0.png").rename(folder / "dog" / "0.png")  # moved to another class
    moved = datasets.cache_key(folder_cfg(make_cfg, folder))
    write_image(folder / "owl" / "new.png", 1)  # added
    added = datasets.cache_key(folder_cfg(make_cfg, folder))
    (folder / "readme.txt").write_text("not an image")  # not part of the dataset
    assert len({base, touched, moved, added, datasets.cache_key(folder_cfg(make_cfg, folder))}) == 4


@pytest.mark.parametrize("option", options("dataset"))
def test_settings_are_in_every_sources_key(option, make_cfg, tmp_path):
    base = datasets.cache_key(compose(make_cfg, option, tmp_path).dataset)
    assert datasets.cache_key(compose(make_cfg, option, tmp_path, "seed=7").dataset) != base
    assert datasets.cache_key(compose(make_cfg, option, tmp_path, "dataset.image_size=24").dataset) != base


def test_npz_key_follows_the_file(make_cfg, tmp_path):
    cfg = compose(make_cfg, "npz", tmp_path).dataset
    base = datasets.cache_key(cfg)
    file = tmp_path / "data.npz"
    stamp = file.stat()
    os.utime(file, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1000))
    assert datasets.cache_key(cfg) != base


@pytest.mark.parametrize("option", options("dataset"))
def test_cache_false_writes_nothing_and_equals_the_cached_arrays(option, make_cfg, tmp_path, cache_root):
    assert set(options("dataset")) == set(SOURCES)
    plain = datasets.load(compose(make_cfg, option, tmp_path, "dataset.cache=false").dataset)
    assert not cache_root.exists()
    for name in ("train", "val", "test"):
        x = getattr(plain, name).x
        assert not isinstance(x, np.memmap) and x.flags.writeable
    cached = datasets.load(compose(make_cfg, option, tmp_path).dataset)
    assert len(os.listdir(cache_root)) == 1
    assert_mapped(cached)
    assert_same(cached, plain)


def test_folder_decodes_each_file_into_its_split(make_cfg, tmp_path):
    """Images of varied sizes, decoded straight into the memmaps, each equal to its own file decoded alone."""
    rng = np.random.default_rng(0)
    reference = {}
    for label, name in enumerate(("ant", "bee")):
        for i in range(30):
            file = tmp_path / "d" / name / f"{i}.png"
            file.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (rng.integers(9, 40), rng.integers(9, 40), 3), np.uint8)).save(file)
            decoded = np.asarray(Image.open(file).convert("RGB").resize((12, 12), Image.Resampling.BILINEAR))
            reference[decoded.tobytes()] = label
    settings = ["dataset=folder", f"dataset.path={tmp_path / 'd'}", "dataset.image_size=12", "dataset.train_size=30"]
    splits = datasets.load(make_cfg(*settings).dataset)
    assert_mapped(splits)
    seen = [(image.tobytes(), int(label))
            for split in (splits.train, splits.val, splits.test) for image, label in zip(split.x, split.y)]
    assert len(seen) == 30 + 12 + 12 and len({image for image, _ in seen}) == len(seen)  # disjoint splits
    assert all(reference[image] == label for image, label in seen)  # every image is its file, under its class
    assert_same(datasets.load(make_cfg(*settings).dataset), splits)
    assert_same(datasets.load(make_cfg(*settings, "dataset.cache=false").dataset), splits)


def test_parallel_loads_of_an_uncached_folder_publish_one_copy(make_cfg, folder, cache_root, caplog):
    caplog.set_level(logging.DEBUG, logger="ablation.datasets")
    cfg = folder_cfg(make_cfg, folder)
    start = threading.Barrier(4)
    results, errors = [], []

    def job():
        start.wait()
        try:
            results.append(datasets.load(cfg))
        except Exception as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=job) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 4
    for other in results[1:]:
        assert_same(other, results[0])
    assert sorted(os.listdir(cache_root)) == [datasets.cache_path(cfg).name]  # one copy; the losers' went
    assert any("published first" in r.getMessage() for r in caplog.records)  # the race did happen


def test_an_unreadable_cache_is_rebuilt(make_cfg, folder, cache_root):
    cfg = folder_cfg(make_cfg, folder)
    first = datasets.load(cfg)
    (datasets.cache_path(cfg) / "train_x.npy").unlink()
    assert_same(datasets.load(cfg), first)
    assert sorted(os.listdir(cache_root)) == [datasets.cache_path(cfg).name]
    assert sorted(os.listdir(datasets.cache_path(cfg))) == sorted(FILES)


def test_cache_root_is_under_the_home_unless_set(make_cfg, monkeypatch, cache_root, tmp_path):
    cfg = make_cfg("dataset=digits").dataset
    assert datasets.cache_path(cfg).parent == cache_root
    monkeypatch.delenv("ABLATION_CACHE_DIR")
    monkeypatch.delenv("ABLATION_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert datasets.cache_path(cfg).parent == tmp_path / "runs" / "cache"  # the working directory's runs/
    monkeypatch.setenv("ABLATION_HOME", str(tmp_path / "home"))
    assert datasets.cache_path(cfg).parent == tmp_path / "home" / "cache"


def test_memmapped_splits_feed_every_policy(make_cfg, tmp_path):
    """Read-only maps in, fresh arrays out: what Batches (x[idx]) and the preview (x[0]) hand to a policy."""
    splits = datasets.load(compose(make_cfg, "shapes", tmp_path).dataset)
    assert_mapped(splits)
    for option in options("augmentation"):
        policy = augment.build(make_cfg(f"augmentation={option}").augmentation, image_shape=splits.input_shape)
        for batch in (splits.train.x[np.array([3, 1, 2])], splits.train.x[:3], splits.train.x[0][None]):
            out = policy.augment_batch(batch, np.random.default_rng(0))
            assert out.shape == batch.shape and out.dtype == np.uint8
