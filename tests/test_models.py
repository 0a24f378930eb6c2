"""Every model under conf/model/ builds with the right head and trains a step on tiny data."""
import numpy as np
import pytest
from omegaconf import OmegaConf

from ablation.training import models
from ablation.training.config import ConfigError
from conftest import CONF, options

EXPECTED = {"small_cnn", "lambda_cnn", "resnet", "mobilenet_v2"}


def test_every_model_has_a_config():
    assert EXPECTED <= set(options("model"))


def _check_output(out, n, classes):
    assert out.shape == (n, 1 if classes == 2 else classes)
    assert np.all((out >= 0) & (out <= 1))
    if classes > 2:
        np.testing.assert_allclose(out.sum(axis=1), 1, rtol=1e-4)


@pytest.mark.parametrize("name", options("model"))
def test_model_trains_a_step_on_grayscale_multiclass(name):
    cfg = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    model = models.build(cfg, (32, 32, 1), 10)
    # Keras' own MobileNetV2 takes one step eagerly: tracing its train step takes ten times the step (20 s against
    # 2 s on one core). The models of this package's own code train as graphs.
    model.compile(optimizer="adam", loss=models.loss_for(10), metrics=["accuracy"], run_eagerly=name == "mobilenet_v2")
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 1), dtype=np.uint8)
    history = model.fit(x, np.arange(4), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    _check_output(model.predict(x, verbose=0), 4, 10)


@pytest.mark.parametrize("name", options("model"))
def test_two_classes_get_one_sigmoid_unit_on_rgb(name):
    cfg = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    model = models.build(cfg, (32, 32, 3), 2)
    x = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    _check_output(np.asarray(model(x, training=False)), 3, 2)
    assert models.loss_for(2) == "binary_crossentropy"


def test_unknown_hyperparameter_names_the_key():
    cfg = OmegaConf.create({"name": "small_cnn", "filtres": [8]})
    with pytest.raises(ConfigError, match=r"^model\.filtres: not an argument of build_small_cnn"):
        models.check(cfg)


def test_imagenet_weights_missing_locally_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    cfg = OmegaConf.create({"name": "mobilenet_v2", "weights": "imagenet", "alpha": 0.35})
    with pytest.raises(ConfigError, match=r"^model\.weights: ImageNet weights not found at .*mobilenet_v2_weights"):
        models.check_input(cfg, (32, 32, 3))


def test_models_take_uint8_images_and_rescale_them_first():
    cfg = OmegaConf.load(CONF / "model" / "small_cnn.yaml")
    model = models.build(cfg, (16, 16, 1), 3)
    assert model.input.dtype == "uint8"
    x = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 1), dtype=np.uint8)
    backbone = model.layers[-1]
    np.testing.assert_allclose(model.predict(x, verbose=0), backbone.predict(x / 255.0, verbose=0), rtol=1e-5, atol=1e-6)
