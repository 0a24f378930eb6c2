"""Generative augmentation (augmentation.synthetic): the generator's data, its cached images, its failures, the
refusals, and a tiny sweep of none and synthetic through the report, on 16 px digits in temporary folders."""
import json
import math
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ablation import datasets, tracking
from ablation.core.errors import ConfigError, GeneratorFailed
from ablation.report import build as report
from ablation.training import config, gan, synthetic
from ablation.training.plan import plan
from ablation.training.run import run
from conftest import CONF, options

# 16 px digits, 12 training images of each class, a generator trained for one epoch: seconds per run.
TINY = ("dataset.image_size=16", "dataset.train_size=120", "augmentation.synthetic.epochs=1",
        "augmentation.synthetic.per_class=8", "augmentation.synthetic.width=8", "augmentation.synthetic.latent_dim=16",
        "lenses.corruptions=[]")


@pytest.fixture(autouse=True)
def _private_synthetic(tmp_path, monkeypatch):
    monkeypatch.setenv(synthetic.paths.FOLDERS["synthetic"], str(tmp_path / "synthetic"))


@pytest.fixture
def tiny(make_cfg):
    def _make(*overrides):
        return make_cfg(*TINY, *overrides)
    return _make


@pytest.mark.parametrize("option", options("synthetic"))
def test_every_synthetic_option_composes_and_passes_the_config_check(option, make_cfg):
    cfg = make_cfg(f"synthetic={option}", "augmentation.synthetic.ratio=0.5")
    assert cfg.augmentation.synthetic.model == option, f"conf/synthetic/{option}.yaml: model must be the file's name"
    config.validate(cfg)
    assert plan(cfg).name.startswith("synthetic:0.5/")


@pytest.mark.parametrize("option", [o for o in options("augmentation")
                                    if OmegaConf.load(CONF / "augmentation" / f"{o}.yaml").get("synthetic")])
def test_every_generative_policy_option_names_its_row_by_ratio(option, make_cfg):
    cfg = make_cfg(f"augmentation={option}")
    planned, without = plan(cfg), plan(make_cfg(f"augmentation={option}", "augmentation.synthetic.ratio=0"))
    assert planned.name.split("/")[0].endswith(f"synthetic:{cfg.augmentation.synthetic.ratio:g}")
    assert "@" not in planned.name  # '@' is a strength level's (the report's dose section reads it)
    assert planned.policy.fingerprint != without.policy.fingerprint and planned.key != without.key


def test_rows_are_named_by_ratio_and_policy_and_keyed_by_the_generator(make_cfg):
    def planned(*overrides):
        return plan(make_cfg(*overrides))

    none, off = planned("augmentation=none"), planned("augmentation=synthetic", "augmentation.synthetic.ratio=0")
    half, equal = planned("augmentation=synthetic"), planned("augmentation=synthetic_equal")
    shifted = planned("augmentation=shift_synthetic")
    rotated = planned("augmentation=rotate", "augmentation.synthetic.ratio=0.5")
    assert [p.name.split("/")[0] for p in (none, half, equal, shifted, rotated)] == [
        "none", "synthetic:0.5", "synthetic:1", "shift+synthetic:0.5", "rotate+synthetic:0.5"]
    assert off.key == none.key  # ratio 0 trains on the real images only: none itself
    assert len({p.key for p in (none, half, equal, shifted, rotated)}) == 5
    assert planned("augmentation=synthetic", "augmentation.synthetic.epochs=7").key != half.key


def test_generator_is_given_the_training_split_only(tiny, monkeypatch, tmp_path):
    given = []
    real_train = gan.train

    def spy(images, labels, *args, **kwargs):  # the real training, its inputs kept
        given.append((np.array(images), np.array(labels)))
        return real_train(images, labels, *args, **kwargs)

    monkeypatch.setattr(gan, "train", spy)
    cfg = tiny("augmentation=synthetic")
    splits = datasets.load(cfg.dataset)
    with tracking.run(cfg, "t", {}) as tracker:
        made = synthetic.prepare(cfg, splits, tracker, tmp_path)
    (images, labels), = given
    np.testing.assert_array_equal(images, splits.train.x)
    np.testing.assert_array_equal(labels, splits.train.y)
    seen = {image.tobytes() for image in images}
    assert not seen & {image.tobytes() for image in (*splits.val.x, *splits.test.x)}
    # The training set the classifier gets: the real images, then half as many generated ones, class by class.
    half = np.rint(np.bincount(splits.train.y) * 0.5).astype(int)
    np.testing.assert_array_equal(made.train.x[:len(splits.train)], splits.train.x)
    assert np.bincount(made.train.y[len(splits.train):]).tolist() == half.tolist()
    assert len(made.train) == len(splits.train) + half.sum()
    assert made.images.shape == (8 * splits.num_classes, 16, 16, 1) and made.images.dtype == np.uint8


def test_generated_images_are_cached_and_reused_and_keyed_by_what_makes_them(tiny, tmp_path):
    cfg = tiny("augmentation=synthetic")
    splits = datasets.load(cfg.dataset)
    with tracking.run(cfg, "first", {}) as tracker:
        first = synthetic.prepare(cfg, splits, tracker, tmp_path)
    stamp = (first.folder / "images.npz").stat().st_mtime_ns
    more = tiny("augmentation=synthetic", "augmentation.synthetic.ratio=0.6")  # another ratio: the same images
    with tracking.run(cfg, "second", {}) as tracker:
        second = synthetic.prepare(more, splits, tracker, tmp_path)
        run_id = tracker.run_id
    assert first.created and not second.created and second.folder == first.folder
    assert (second.folder / "images.npz").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(second.images, first.images)
    assert len(second.train) == len(splits.train) + np.rint(np.bincount(splits.train.y) * 0.6).sum()
    manifest = json.loads((first.folder / "manifest.json").read_text())
    assert manifest["train_s"] > 0 and len(manifest["losses"]) == 1 and (first.folder / "samples.png").is_file()
    client = MlflowClient(tracking.store(cfg.tracking)[0])
    logged = client.get_run(run_id).data
    assert logged.metrics["synthetic/reused"] == 1 and logged.metrics["time/generator_train_s"] == manifest["train_s"]
    assert [m.step for m in client.get_metric_history(run_id, "synthetic/d_loss")] == [0]
    assert logged.tags["synthetic_dir"] == str(first.folder)
    assert {a.path for a in client.list_artifacts(run_id)} >= {"synthetic_samples.png", "synthetic.json"}

    key = synthetic.key(cfg)
    assert synthetic.key(more) == key
    for other in ("seed=1", "augmentation.synthetic.epochs=2", "augmentation.synthetic.per_class=9",
                  "augmentation.synthetic.learning_rate=0.001", "dataset.train_size=130"):
        assert synthetic.key(tiny("augmentation=synthetic", other)) != key, other


def test_a_collapsed_generator_and_nan_losses_are_caught(tiny):
    cfg = tiny()
    splits = datasets.load(cfg.dataset)
    noise, label = keras.Input((4,)), keras.Input((10,))
    # A real Keras generator that ignores its noise and class: one image, whatever it is asked.
    constant = keras.layers.Dense(16 * 16, kernel_initializer="zeros", bias_initializer="ones", activation="tanh")(
        keras.layers.Concatenate()([noise, label]))
    model = keras.Model([noise, label], keras.layers.Reshape((16, 16, 1))(constant))
    images, labels = gan.Generator(model, 10, 4).sample(5, seed=0)
    assert images.shape == (50, 16, 16, 1) and len(np.unique(images)) == 1
    spreads = gan.spread(images, labels, splits.train.x, splits.train.y)
    with pytest.raises(GeneratorFailed, match=r"^augmentation\.synthetic: the generator collapsed: its images of "
                                              r"class '0' vary 0\.000 as much as the real ones"):
        gan.check_collapse(spreads, splits.class_names)
    with pytest.raises(GeneratorFailed, match=r"diverged at epoch 3 \(discriminator loss nan.*learning_rate$"):
        gan.check_losses({"epoch": 2, "d_loss": math.nan, "g_loss": 0.7})
    gan.check_losses({"epoch": 2, "d_loss": 0.6, "g_loss": 0.7})  # finite: no complaint


def test_a_generator_that_fails_fails_its_run(tiny, monkeypatch):
    real_train = gan.train

    def diverging(*args, **kwargs):  # the real training, then a non-finite loss reported for its last epoch
        generator = real_train(*args, **kwargs)
        gan.check_losses({**generator.losses[-1], "g_loss": math.inf})
        return generator

    monkeypatch.setattr(gan, "train", diverging)
    cfg = tiny("augmentation=synthetic", "experiment_name=diverges")
    with pytest.raises(GeneratorFailed, match="diverged at epoch 1"):
        run(cfg)
    client = MlflowClient(tracking.store(cfg.tracking)[0])
    failed, = client.search_runs([client.get_experiment_by_name("diverges").experiment_id])
    assert failed.info.status == "FAILED" and "GeneratorFailed" in failed.data.tags["error"]
    assert not list((synthetic.root()).glob(f"{synthetic.key(cfg)}*"))  # nothing cached from it


def test_refusals_name_the_key_and_the_reason(tiny, make_cfg):
    few = tiny("augmentation=synthetic", "dataset.train_size=60", "experiment_name=few")
    with pytest.raises(ConfigError, match=r"^augmentation\.synthetic: class '\d' has [0-9] training images; a "
                                          r"generator needs at least 10 of every class"):
        run(few)
    client = MlflowClient(tracking.store(few.tracking)[0])
    assert client.get_experiment_by_name("few") is None  # refused before any run was opened
    with pytest.raises(ConfigError, match=r"^augmentation\.synthetic\.ratio: .*task reconstruct has no classes"):
        plan(make_cfg("augmentation=synthetic", "task=reconstruct", "model=conv_autoencoder"))
    with pytest.raises(ConfigError, match=r"^augmentation\.synthetic\.ratio: .*augmentation\.placement=device"):
        plan(make_cfg("augmentation=shift_synthetic", "augmentation.placement=device"))
    with pytest.raises(ConfigError, match=r"^augmentation\.synthetic\.epochs: expected an integer >= 1, got 0"):
        plan(make_cfg("augmentation=synthetic", "augmentation.synthetic.epochs=0"))
    with pytest.raises(ConfigError, match=r"^augmentation\.synthetic\.per_class: ratio 1 takes up to 1\d generated"):
        synthetic.check_data(tiny("augmentation=synthetic_equal"), datasets.load(tiny().dataset))


def _recognisable_generator_folder(cfg, tmp_path) -> np.ndarray:
    """Seed cfg.seed's generator folder, made as a run makes it (a real generator, trained for one epoch), with its
    images then swapped for real validation images, 8 of each class as the generator made them: images the none
    classifier tells apart. A generator this small makes noise that the classifier puts in one class, so on its
    own images any images scored would give the same sample affinity. Returns the images now in the folder."""
    splits = datasets.load(cfg.dataset)
    with tracking.run(cfg, "generator", {}) as tracker:
        made = synthetic.prepare(cfg, splits, tracker, tmp_path)
    chosen = np.concatenate([np.flatnonzero(splits.val.y == c)[:8] for c in range(splits.num_classes)])
    images, labels = splits.val.x[chosen], splits.val.y[chosen]
    assert images.shape == made.images.shape and (labels == made.labels).all()
    np.savez(made.folder / "images.npz", x=images, y=labels)
    return images


@pytest.mark.slow
def test_a_sweep_of_none_and_synthetic_reports_the_generator_columns(tiny, tmp_path):
    # Seed 1's synthetic run reuses a generator folder holding real images (_recognisable_generator_folder).
    prepared = tiny("augmentation=synthetic", "seed=1", "experiment_name=generator")
    assert synthetic.key(prepared) == synthetic.key(tiny("augmentation=synthetic", "seed=1",
                                                         "experiment_name=generative"))
    recognisable = _recognisable_generator_folder(prepared, tmp_path)
    for augmentation in ("none", "synthetic"):
        for seed in (0, 1):
            # Models logged: each seed's none classifier scores the generated images.
            run(tiny(f"augmentation={augmentation}", f"seed={seed}", "experiment_name=generative",
                     "tracking.log_model=true"))
    cfg = tiny("experiment_name=generative")
    out = report.build(cfg, out_root=tmp_path / "reports")
    table = pd.read_csv(out / "summary.csv")
    row = table.set_index("augmentation").loc["synthetic:0.5"]
    assert row["n_seeds"] == 2 and isinstance(row["verdict"], str)
    assert row["time_generator_s_mean"] > 0
    # The none classifier of each seed had finished: it scored the generated images. Each synthetic run's sample
    # affinity is that classifier's accuracy on its generator's images: the none run's logged model, fetched from
    # MLflow and scored here on the images the run's synthetic_dir holds.
    client = MlflowClient(tracking.store(cfg.tracking)[0])
    experiment = client.get_experiment_by_name("generative").experiment_id
    scores = []
    for seed in (0, 1):
        def one(augmentation, seed=seed):
            [found] = client.search_runs([experiment], f"tags.augmentation = '{augmentation}' and tags.seed = '{seed}'")
            return found
        base, made = one("none"), one("synthetic:0.5")
        model = keras.models.load_model(client.download_artifacts(base.info.run_id, "model.keras",
                                                                  str(tmp_path / f"none-{seed}")), compile=False)
        with np.load(Path(made.data.tags["synthetic_dir"]) / "images.npz") as stored:
            images, labels = stored["x"], stored["y"]
        assert len(images) == 8 * 10  # per_class x classes: every generated image, not the share trained on
        predicted = model.predict(images, verbose=0).argmax(-1)
        if seed == 1:  # the real images: predictions that differ, so scoring any other images would show
            np.testing.assert_array_equal(images, recognisable)
            assert len(np.unique(predicted)) > 2
        expected = float(np.mean(predicted == labels))
        assert made.data.metrics["synthetic/affinity"] == pytest.approx(expected, rel=1e-9), seed
        scores.append(expected)
    assert row["sample_affinity_mean"] == pytest.approx(np.mean(scores))
    text = (out / "summary.md").read_text()
    assert "| generator s | sample affinity |" in text and "synthetic:0.5" in text
    assert "sample affinity" in (out / "report.html").read_text()
    assert not (out / "strength.csv").exists()  # a ratio is no strength level: no dose-and-response section
