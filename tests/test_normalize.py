"""dataset.normalize (ablation/training/normalize.py): featurewise statistics from the training split only, cached with the
dataset and logged with the run; samplewise standardisation per image; both inside real Keras models that are
trained, recorded in a real (temporary) MLflow store, saved and loaded back."""
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ablation import datasets
from ablation.augment import device
from ablation.cli import predict
from ablation.training import config, models, normalize
from ablation.training.batches import Batches
from ablation.training.config import ConfigError
from ablation.training.run import run
from conftest import CONF, store_untouched
from helpers import random_images

# Per-channel pixel levels: the training images are dark, the validation and test images bright, so statistics
# taken from anything but the training split are far from the training split's own.
DARK, BRIGHT = (20, 40, 60), (200, 220, 240)


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    """A cache of this test's own, so what it finds there was written by this test."""
    monkeypatch.setenv("ABLATION_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def dark_bright_npz(tmp_path):
    """x_train dark, x_val and x_test bright; two classes in every split."""
    rng = np.random.default_rng(0)
    arrays = {"x_train": random_images(40, 8, around=DARK, rng=rng), "x_val": random_images(16, 8, around=BRIGHT, rng=rng), "x_test": random_images(16, 8, around=BRIGHT, rng=rng)}
    for split, x in list(arrays.items()):
        arrays[split.replace("x_", "y_")] = np.arange(len(x)) % 2
    path = tmp_path / "dark_bright.npz"
    np.savez(path, **arrays)
    return path, arrays


def _npz(make_cfg, path, *extra):
    return make_cfg("dataset=npz", f"dataset.path={path}", "dataset.normalize=featurewise", *extra)


def _reference(x):
    """Per-channel mean and std of uint8 images in [0, 1] units, straight from numpy."""
    pixels = x.reshape(-1, x.shape[-1]).astype(np.float64) / 255.0
    return pixels.mean(axis=0), pixels.std(axis=0)


# ------------------------------------------------------------------------------------------ featurewise statistics


def test_featurewise_statistics_come_from_the_training_split_only(make_cfg, dark_bright_npz):
    path, arrays = dark_bright_npz
    cfg = _npz(make_cfg, path)
    splits = datasets.load(cfg.dataset)
    stats = normalize.prepare(cfg.dataset, splits)
    mean, std = _reference(arrays["x_train"])
    np.testing.assert_allclose(stats.mean, mean, atol=1e-9)
    np.testing.assert_allclose(stats.std, std, atol=1e-9)
    # Nowhere near what validation or all splits together would give.
    assert max(stats.mean) < 0.3 < min(_reference(arrays["x_val"])[0])
    assert stats.n_images == 40
    assert stats.params() == {"data/normalize_mean": json.dumps([round(v, 6) for v in mean]),
                              "data/normalize_std": json.dumps([round(v, 6) for v in std])}


def test_statistics_are_summed_chunk_by_chunk_over_a_memory_map(tmp_path, monkeypatch):
    monkeypatch.setattr(normalize, "CHUNK", 7)  # several chunks and a short last one over 50 images
    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(50, 5, 6, 3))
    x[:] = np.random.default_rng(3).integers(0, 256, x.shape, dtype=np.uint8)
    x.flush()
    mean, std = normalize.channel_statistics(np.load(tmp_path / "x.npy", mmap_mode="r", allow_pickle=False))
    expected_mean, expected_std = _reference(np.asarray(x))
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-12)
    np.testing.assert_allclose(std, expected_std, rtol=1e-9)


def test_statistics_are_cached_with_the_dataset_and_read_back(make_cfg, dark_bright_npz):
    path, _ = dark_bright_npz
    cfg = _npz(make_cfg, path)
    splits = datasets.load(cfg.dataset)
    first = normalize.prepare(cfg.dataset, splits)
    file = datasets.cache_path(cfg.dataset) / normalize.STATS_FILE
    assert first.source == "computed" and file.is_file()
    stored = json.loads(file.read_text())
    assert stored["mean"] == list(first.mean) and stored["std"] == list(first.std) and stored["n_images"] == 40
    stamp = file.stat().st_mtime_ns
    second = normalize.prepare(cfg.dataset, datasets.load(cfg.dataset))
    assert second.source == str(file) and file.stat().st_mtime_ns == stamp
    assert (second.mean, second.std) == (first.mean, first.std)
    # A damaged file is recomputed and replaced, not trusted.
    file.write_text('{"mean": [0.5], "std": "x"}')
    third = normalize.prepare(cfg.dataset, splits)
    assert third.source == "computed" and json.loads(file.read_text())["mean"] == list(first.mean)


def test_without_the_dataset_cache_statistics_are_computed_every_time(make_cfg, dark_bright_npz, cache_in_tmp):
    path, arrays = dark_bright_npz
    cfg = _npz(make_cfg, path, "dataset.cache=false")
    splits = datasets.load(cfg.dataset)
    for _ in range(2):
        stats = normalize.prepare(cfg.dataset, splits)
        assert stats.source == "computed"
        np.testing.assert_allclose(stats.mean, _reference(arrays["x_train"])[0], atol=1e-9)
    assert not cache_in_tmp.exists() or not list(cache_in_tmp.rglob(normalize.STATS_FILE))


def test_val_and_test_go_through_the_layer_holding_the_training_statistics(make_cfg, dark_bright_npz):
    path, arrays = dark_bright_npz
    cfg = _npz(make_cfg, path)
    splits = datasets.load(cfg.dataset)
    stats = normalize.prepare(cfg.dataset, splits)
    model = models.build(cfg.model, splits.input_shape, splits.num_classes, normalization=stats.layer())
    layer = model.get_layer("small_cnn").get_layer("normalize")
    assert isinstance(layer, keras.layers.Normalization)
    np.testing.assert_allclose(np.ravel(layer.mean), stats.mean, rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(np.ravel(layer.variance)), stats.std, rtol=1e-6)
    # What the backbone sees of a validation image: (x / 255 - train mean) / train std, whatever batch carries it.
    val = Batches(splits.val.x, splits.val.y, 8)[0][0]
    inner = model.get_layer("small_cnn")
    seen = keras.Model(inner.input, inner.get_layer("normalize").output)(val.astype("float32") / 255.0)
    mean, std = _reference(arrays["x_train"])
    np.testing.assert_allclose(np.asarray(seen), (val / 255.0 - mean) / std, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------ samplewise


def test_samplewise_standardises_each_image_on_its_own():
    rng = np.random.default_rng(5)
    # Images of very different brightness and contrast in one batch.
    x = np.stack([rng.uniform(lo, hi, (12, 12, 3)) for lo, hi in ((0, 0.1), (0.4, 0.6), (0.2, 1.0))]).astype("float32")
    out = np.asarray(normalize.Normalization("samplewise").layer()(x))
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1, atol=1e-4)
    # ImageDataGenerator(samplewise_center=True, samplewise_std_normalization=True).standardize, image by image.
    idg = np.stack([(im - im.mean()) / (im.std() + 1e-6) for im in x.astype(np.float64)])
    np.testing.assert_allclose(out, idg, atol=1e-4)
    # A blank image stays finite (zero), not NaN.
    assert np.all(np.asarray(normalize.Normalization("samplewise").layer()(np.full((1, 4, 4, 1), 0.3, "float32"))) == 0)


# ------------------------------------------------------------------------------------------ in the model


@pytest.mark.parametrize("mode", normalize.MODES)
def test_a_saved_model_loads_and_gives_the_same_outputs(mode, tmp_path):
    stats = normalize.Normalization(mode, (0.2, 0.3, 0.4), (0.1, 0.2, 0.3), 10, "computed")
    model = models.build(OmegaConf.load(CONF / "model" / "small_cnn.yaml"), (16, 16, 3), 3,
                         normalization=stats.layer())
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    x = np.random.default_rng(2).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-7)
    names = [layer.name for layer in loaded.get_layer("small_cnn").layers]
    assert ("normalize" in names) == (mode != "rescale")


def test_normalisation_follows_device_augmentation():
    """rescale -> device augmentation -> normalisation -> backbone: the augmentation layers see [0, 1] images."""
    aug_cfg = OmegaConf.load(CONF / "augmentation" / "hflip.yaml")
    augmentation = device.layers_for(aug_cfg, (16, 16, 1), 0)
    model = models.build(OmegaConf.create({"name": "small_cnn"}), (16, 16, 1), 3, augmentation=augmentation,
                         normalization=normalize.Normalization("samplewise").layer())
    wrapped = model.get_layer("small_cnn")
    order = [layer.name for layer in wrapped.layers]
    assert order.index(augmentation.name) < order.index("small_cnn")
    assert [layer.name for layer in wrapped.get_layer("small_cnn").layers][:2] == ["features", "normalize"]


# ------------------------------------------------------------------------------------------ whole runs


def _recorded(cfg, run_id, tmp_path):
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    mlrun = client.get_run(run_id)
    document = json.loads(Path(client.download_artifacts(run_id, "normalization.json", str(tmp_path))).read_text())
    return mlrun, document


@pytest.mark.parametrize("mode", normalize.MODES)
def test_a_run_with_each_mode_finishes_logs_the_statistics_and_its_model_reloads(mode, make_cfg, tmp_path):
    cfg = make_cfg(f"dataset.normalize={mode}", "dataset.train_size=48", "trainer.epochs=1", "tracking.log_model=true")
    result = run(cfg)
    mlrun, document = _recorded(cfg, result["run_id"], tmp_path)
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.params["dataset.normalize"] == mode
    assert document["mode"] == mode
    splits = datasets.load(cfg.dataset)
    if mode == "featurewise":
        mean, std = _reference(splits.train.x)
        assert json.loads(mlrun.data.params["data/normalize_mean"]) == pytest.approx(mean, abs=1e-6)
        assert json.loads(mlrun.data.params["data/normalize_std"]) == pytest.approx(std, abs=1e-6)
        assert document["mean"] == pytest.approx(mean) and document["computed_on"] == "train"
    else:
        assert "data/normalize_mean" not in mlrun.data.params
    # The logged model.keras, loaded the way `python -m ablation.cli.predict` loads it, scores the test split as the
    # run recorded.
    model, _, _ = predict.load_run(cfg.tracking, result["run_id"], tmp_path / "download")
    model.compile(loss=models.loss_for(splits.num_classes), metrics=["accuracy"])
    scores = model.evaluate(Batches(splits.test.x, splits.test.y, 64), verbose=0, return_dict=True)
    assert scores["accuracy"] == pytest.approx(mlrun.data.metrics["test/accuracy"], abs=1e-6)


def test_a_second_run_reads_the_cached_statistics(make_cfg, dark_bright_npz, tmp_path):
    path, arrays = dark_bright_npz
    first_cfg = _npz(make_cfg, path, "trainer.epochs=1")
    first = run(first_cfg)
    file = datasets.cache_path(first_cfg.dataset) / normalize.STATS_FILE
    assert file.is_file()
    stamp = file.stat().st_mtime_ns
    second_cfg = _npz(make_cfg, path, "trainer.epochs=1", "augmentation=hflip")
    second = run(second_cfg)
    assert file.stat().st_mtime_ns == stamp
    (run1, doc1), (run2, doc2) = (_recorded(first_cfg, first["run_id"], tmp_path / "1"),
                                  _recorded(second_cfg, second["run_id"], tmp_path / "2"))
    for key in ("data/normalize_mean", "data/normalize_std"):
        assert run1.data.params[key] == run2.data.params[key]
    assert json.loads(run1.data.params["data/normalize_mean"]) == pytest.approx(_reference(arrays["x_train"])[0],
                                                                                abs=1e-6)
    assert doc1["source"] == "computed" and doc2["source"] == str(file)


def test_normalize_is_part_of_the_combination(make_cfg):
    from ablation import augment, tracking

    keys = {tracking.config_hash(cfg, augment.build(cfg.augmentation).fingerprint)
            for cfg in (make_cfg(f"dataset.normalize={mode}") for mode in normalize.MODES)}
    assert len(keys) == 3


def test_a_bad_value_is_a_one_line_config_error_before_any_run(make_cfg, tmp_path):
    cfg = make_cfg("dataset.normalize=zscore")
    with pytest.raises(ConfigError) as info:
        run(cfg)
    message = str(info.value)
    assert message == "dataset.normalize: expected one of rescale|featurewise|samplewise, got 'zscore'"
    assert config.user_error(info.value)
    assert store_untouched(tmp_path)
