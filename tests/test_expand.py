"""Offline expansion (augmentation.placement=offline): the written folder, its reuse, an offline run end to end and a
sweep comparing online with offline, all on tiny data in temporary folders."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from ablation import augment, datasets, tracking
from ablation.training import config, expansion
from ablation.training.run import make_batches, run
from conftest import ROOT

N_TRAIN = 24


@pytest.fixture(autouse=True)
def _private_expansions(tmp_path_factory, monkeypatch):
    monkeypatch.setenv(expansion.EXPANDED_ENV, str(tmp_path_factory.getbasetemp() / "expanded"))


def _image_files(folder, ext=None):
    suffixes = (f".{ext}",) if ext else (".png", ".jpg")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in suffixes)


def _read(path):
    array = np.asarray(Image.open(path))
    return array[..., None] if array.ndim == 2 else array


def _expansion(make_cfg, *overrides):
    cfg = make_cfg(f"dataset.train_size={N_TRAIN}", "augmentation=rotate", *overrides)
    splits = datasets.load(cfg.dataset)
    policy = augment.build(cfg.augmentation, image_shape=splits.input_shape)
    return cfg, splits, policy, expansion.expand(cfg, splits, policy)


def test_expanded_folder_holds_the_originals_and_copies_with_prefix_and_format(make_cfg):
    cfg, splits, _, result = _expansion(make_cfg, "augmentation.copies=2", "augmentation.save_prefix=img")
    train = _image_files(result.folder / "train")
    assert len(train) == N_TRAIN * (1 + 2) == result.images == result.manifest["counts"]["train"]
    assert all(re.fullmatch(r"img_\d{3}_[0-2]\.png", p.name) for p in train), train[:3]
    assert sorted({p.parent.name for p in train}) == sorted(set(splits.class_names))
    assert len(_image_files(result.folder / "validation")) == len(splits.val) > 0
    assert len(_image_files(result.folder / "test")) == len(splits.test) > 0
    assert result.bytes == sum(p.stat().st_size for p in _image_files(result.folder)) > 0
    assert result.folder.parent == expansion.root() and result.created

    # Copy 0 is the original pixel for pixel, in the class folder of its label; copies are augmented versions.
    changed = 0
    for i, (image, label) in enumerate(zip(splits.train.x, splits.train.y)):
        folder = result.folder / "train" / splits.class_names[label]
        np.testing.assert_array_equal(_read(folder / f"img_{i:03d}_0.png"), image)
        changed += sum(not np.array_equal(_read(folder / f"img_{i:03d}_{c}.png"), image) for c in (1, 2))
    assert changed >= N_TRAIN  # rotate by up to 30 degrees moves almost every digit


def test_writing_an_expansion_reports_its_progress(make_cfg, monkeypatch, caplog):
    import logging

    from ablation.datasets import images

    monkeypatch.setattr(expansion, "CHUNK", 8)
    monkeypatch.setattr(images, "PROGRESS_EVERY_S", 0.0)
    caplog.set_level(logging.INFO, logger="ablation.training.expansion")
    _, splits, _, result = _expansion(make_cfg, "augmentation.copies=2")
    total = N_TRAIN * 3 + len(splits.val) + len(splits.test)
    lines = [r.getMessage() for r in caplog.records if r.name == "ablation.training.expansion"]
    assert len(lines) >= 5 and all(f" of {total} images (" in line for line in lines[:-1]), lines
    assert lines[-1].startswith(f"expansion: wrote {total} images in ")
    assert len(_image_files(result.folder)) == total


def test_jpg_format_applies_to_the_training_images_only(make_cfg):
    _, splits, _, result = _expansion(make_cfg, "augmentation.copies=1", "augmentation.save_format=jpg")
    assert len(_image_files(result.folder / "train", "jpg")) == N_TRAIN * 2
    assert not _image_files(result.folder / "train", "png")
    # Validation and test stay lossless: the same pixels an online run evaluates on.
    assert len(_image_files(result.folder / "validation", "png")) == len(splits.val)


def test_a_second_expansion_reuses_the_folder_without_rewriting(make_cfg):
    cfg, splits, policy, first = _expansion(make_cfg, "augmentation.copies=1", "seed=3")
    stamps = {p: p.stat().st_mtime_ns for p in first.folder.rglob("*")}
    again = expansion.expand(cfg, splits, policy)
    assert again.folder == first.folder and not again.created
    assert {p: p.stat().st_mtime_ns for p in again.folder.rglob("*")} == stamps
    assert not [p for p in expansion.root().iterdir() if p.name.endswith((".tmp", ".stale"))]
    # Another number of copies is another expansion.
    other = _expansion(make_cfg, "augmentation.copies=2", "seed=3")[3]
    assert other.folder != first.folder and other.created


def test_expanded_folder_reads_back_as_a_folder_dataset_in_the_datasets_class_order(make_cfg):
    # shapes' class order (circle, square, triangle, cross) is not the sorted folder order.
    cfg = make_cfg("dataset=shapes", "dataset.n_train=16", "dataset.n_val=8", "dataset.n_test=8",
                   "dataset.image_size=16", "augmentation=hflip", "augmentation.copies=1")
    splits = datasets.load(cfg.dataset)
    policy = augment.build(cfg.augmentation, image_shape=splits.input_shape)
    result = expansion.prepare(cfg, splits, policy)
    as_folder = datasets.load(result.dataset_config())
    assert (len(as_folder.train), len(as_folder.val), len(as_folder.test)) == (32, 8, 8)
    assert len(result.train) == 32
    labels = {image.tobytes(): label for image, label in zip(splits.train.x, splits.train.y)}
    found = [(labels[image.tobytes()], label) for image, label in zip(result.train.x, result.train.y)
             if image.tobytes() in labels]
    assert len(found) >= 16 and all(original == read for original, read in found)


def test_offline_run_trains_on_the_expansion_without_augmenting(make_cfg, tmp_path):
    cfg = make_cfg(f"dataset.train_size={N_TRAIN}", "augmentation=rotate", "augmentation.placement=offline",
                   "augmentation.copies=2", "trainer.epochs=1", "tracking.log_model=false")
    metrics = run(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    mlrun = client.get_run(metrics["run_id"])
    tags, logged = mlrun.data.tags, mlrun.data.metrics
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == "rotate@offline/small_cnn/s0"
    assert tags["augmentation"] == "rotate@offline" and tags["policy"] == "rotate"
    assert tags["augmentation_mode"] == "offline"
    assert tags["train_batches_policy"] == "none"  # the Batches fit trained on had no policy
    folder = Path(tags["expanded_dir"])
    assert logged["data/expanded_images"] == N_TRAIN * 3 == len(_image_files(folder / "train"))
    assert logged["data/expanded_bytes"] == expansion.read_manifest(folder)["bytes"] > 0
    assert logged["time/expand_s"] > 0 and logged["data/n_train"] == N_TRAIN
    online = make_cfg(f"dataset.train_size={N_TRAIN}", "augmentation=rotate")
    assert tags["config_hash"] != tracking.config_hash(online, augment.build(online.augmentation).fingerprint)

    # The training batches as run() makes them: no policy, and every image one of the written files.
    splits = datasets.load(cfg.dataset)
    policy = augment.build(cfg.augmentation, image_shape=splits.input_shape)
    result = expansion.prepare(cfg, splits, policy)
    assert result.folder == folder and not result.created
    batches = make_batches(cfg, splits, None, train=result.train)
    assert batches["train"].policy is None and len(batches["train"].x) == N_TRAIN * 3
    written = {_read(p).tobytes() for p in _image_files(folder / "train")}
    for index in range(len(batches["train"])):
        x, _ = batches["train"][index]
        assert all(image.tobytes() in written for image in x)
    # The clean-train subset is drawn from the originals, as in an online run.
    assert len(batches["train_clean"].x) == min(cfg.trainer.clean_train_size, N_TRAIN)


def test_online_keys_are_unchanged_and_offline_settings_are_part_of_the_combination(make_cfg):
    def key(*overrides):
        cfg = make_cfg("augmentation=hflip", *overrides)
        return tracking.config_hash(cfg, augment.build(cfg.augmentation).fingerprint)

    assert key() == key("augmentation.copies=7") == key("augmentation.save_format=jpg")
    offline = key("augmentation.placement=offline")
    assert offline != key() and offline != key("augmentation.placement=offline", "augmentation.copies=7")
    assert offline != key("augmentation.placement=offline", "augmentation.save_format=jpg")
    assert offline == key("augmentation.placement=offline", "augmentation.save_prefix=other")


@pytest.mark.parametrize("override, message", [
    ("augmentation.placement=sometimes",
     r"^augmentation\.placement: expected one of host\|device\|offline, got 'sometimes'$"),
    ("augmentation.copies=0", r"^augmentation\.copies: expected an integer >= 1, got 0$"),
    ("augmentation.copies=1.5", r"^augmentation\.copies: expected an integer, got 1\.5$"),
    ("augmentation.save_format=gif", r"^augmentation\.save_format: expected one of png\|jpg, got 'gif'$"),
    ("augmentation.save_prefix=../up", r"^augmentation\.save_prefix: expected the start of a file name"),
])
def test_bad_settings_name_their_key(make_cfg, override, message):
    with pytest.raises(config.ConfigError, match=message):
        config.validate(make_cfg(override))


@pytest.mark.slow
def test_command_line_expands_with_the_copies_shortcut(tmp_path):
    command = [sys.executable, "-m", "ablation.cli.expand", "dataset=digits", "augmentation=hflip", "copies=2",
               "dataset.train_size=16", f"hydra.run.dir={tmp_path}/hydra"]
    env = {**os.environ, expansion.EXPANDED_ENV: str(tmp_path / "expanded")}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    [folder] = [p for p in (tmp_path / "expanded").iterdir()]
    assert f"wrote {folder}" in result.stdout
    assert "16 originals x (1 + 2 copies of hflip) = 48 images" in result.stdout
    assert len(_image_files(folder / "train")) == 48

    bad = subprocess.run([*command[:5], "copies=none", *command[6:]], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == "error: augmentation.copies: expected an integer, got 'none'"


@pytest.mark.slow
def test_sweep_over_modes_reports_online_and_offline_side_by_side(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ablation", "-m", "augmentation=hflip", "augmentation.placement=host,offline",
         "augmentation.copies=1", "trainer=smoke", "trainer.epochs=1", "dataset.train_size=32",
         "tracking.log_model=false", "experiment_name=modes", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
         f"paths.reports={tmp_path}/reports", f"hydra.sweep.dir={tmp_path}/sweep"],
        cwd=ROOT, env={**os.environ}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = pd.read_csv(tmp_path / "reports" / "modes" / "summary.csv").set_index("augmentation")
    assert sorted(summary.index) == ["hflip", "hflip@offline"]
    assert summary.loc["hflip", "mode"] == "online" and summary.loc["hflip@offline", "mode"] == "offline"
    assert (summary["time_total_s_mean"] > 0).all()
    assert summary.loc["hflip@offline", "expanded_bytes_mean"] > 0
    assert np.isnan(summary.loc["hflip", "expanded_bytes_mean"])
    assert "hflip@offline" in result.stdout and "expanded_mb" in result.stdout  # the printed table
