"""Accelerator settings: mixed precision, XLA compilation, data-parallel training over several devices (the CPU
split into two logical devices stands in for two GPUs), and the same training path on Keras' JAX backend."""
import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ablation.core import paths
from ablation.training import backend, config, models, reuse
from ablation.training.run import run
from conftest import CONF, ROOT


def _metrics(cfg, run_id):
    return MlflowClient(tracking_uri=f"{cfg.tracking.uri}").get_run(run_id).data


def _assert_float16_with_a_float32_head(model):
    """small_cnn's hidden layers compute in float16 on float32 weights; its head computes and outputs float32."""
    backbone = model.get_layer("small_cnn")
    hidden = [layer for layer in backbone.layers if layer.weights and layer.name != "head"]
    assert hidden, [layer.name for layer in backbone.layers]
    for layer in hidden:
        assert layer.compute_dtype == "float16", layer.name
        assert layer.output.dtype == "float16", layer.name
        assert {w.dtype for w in layer.weights} == {"float32"}, layer.name  # float32 master weights
    assert backbone.get_layer("head").compute_dtype == "float32"
    assert model.output.dtype == "float32"


def test_mixed_precision_trains_in_float16_with_a_float32_head(make_cfg, tmp_path):
    # float16 is emulated on CPUs (slow): a small set at 16 px, without the corruption lens.
    cfg = make_cfg("trainer.mixed_precision=true", "trainer.epochs=1", "tracking.log_model=true", "dataset.image_size=16", "dataset.train_size=96",
                   "lenses.corruptions=[]")
    reuse.release()  # the model kept after the run is then the one it trained
    out = run(cfg)
    assert 0.0 <= out["test/accuracy"] <= 1.0
    data = _metrics(cfg, out["run_id"])
    assert data.params["trainer.mixed_precision"] == "True"
    # The model the run trained (kept for the process's next run, ablation/training/reuse.py) ...
    [(trained, _)] = reuse._kept.values()
    reuse.release()
    _assert_float16_with_a_float32_head(trained)
    # ... and the model it logged, fetched from MLflow and loaded under the float32 policy: its layers keep theirs.
    logged = MlflowClient(tracking_uri=cfg.tracking.uri).download_artifacts(out["run_id"], "model.keras", str(tmp_path))
    model = keras.models.load_model(logged, compile=False)
    _assert_float16_with_a_float32_head(model)
    assert keras.ops.convert_to_numpy(model(np.zeros((2, 16, 16, 1), "uint8"))).dtype == np.float32
    # The global policy is restored for whatever runs next in this process.
    assert keras.config.dtype_policy().name == "float32"


def test_mixed_precision_model_layers():
    with backend.training_scope(config_node(mixed_precision="mixed_float16")):
        model = models.build(OmegaConf.create({"name": "small_cnn"}), (16, 16, 1), 3)
    conv = next(layer for layer in model.get_layer("small_cnn").layers if "conv" in layer.name)
    assert conv.compute_dtype == "float16"
    assert model.get_layer("small_cnn").get_layer("head").compute_dtype == "float32"
    assert model.output.dtype == "float32"


def test_jit_compile_run(make_cfg):
    """trainer.jit_compile=true reaches the model the run trains: XLA compiles its steps (Keras turns it off, with
    only a warning, for a model it cannot compile, and on a CPU-only machine `auto` means off)."""
    cfg = make_cfg("trainer.jit_compile=true", "trainer.epochs=1")
    reuse.release()  # the model kept after the run is then the one it trained
    out = run(cfg)
    assert _metrics(cfg, out["run_id"]).params["trainer.jit_compile"] == "True"
    [(trained, _)] = reuse._kept.values()
    reuse.release()
    assert trained.jit_compile is True


@pytest.mark.parametrize("override, message", [
    ("trainer.mixed_precision=half", "trainer.mixed_precision: expected false, true"),
    ("trainer.jit_compile=sometimes", "trainer.jit_compile: expected auto, true or false"),
    ("trainer.devices=0", "trainer.devices: expected a count >= 1 or all"),
    ("trainer.devices=64", "trainer.devices: 64 requested but"),
    ("trainer.resume=maybe", "trainer.resume: expected true, false or auto"),
])
def test_bad_accelerator_settings_are_one_line_errors(make_cfg, override, message):
    with pytest.raises(config.ConfigError, match=message.replace("(", r"\(")) as err:
        config.validate(make_cfg(override))
    assert "\n" not in str(err.value)


def config_node(**values):
    defaults = {"mixed_precision": False, "jit_compile": "auto", "devices": 1}
    return OmegaConf.create({**defaults, **values})


# Runs a tiny training in a fresh interpreter: the backend and the device layout are fixed when the process starts.
SCRIPT = textwrap.dedent("""
    import json, os, sys
    if os.environ["KERAS_BACKEND"] == "tensorflow":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from hydra import compose, initialize_config_dir
    from ablation.training.run import run
    with initialize_config_dir(config_dir=sys.argv[1], version_base="1.3"):
        cfg = compose("config", overrides=sys.argv[2:])
    out = run(cfg)
    print("RESULT " + json.dumps({k: v for k, v in out.items() if isinstance(v, (int, float, str))}))
""")


def _train_in_subprocess(tmp_path, backend_name, *overrides, env=None):
    overrides = ["trainer=smoke", "trainer.epochs=2", "trainer.batch_size=16", "dataset.train_size=96",
                 f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"tracking.artifact_root={tmp_path / 'art'}",
                 "tracking.log_model=false", *overrides]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(CONF), *overrides], cwd=ROOT,
                          env={**os.environ, "KERAS_BACKEND": backend_name, **(env or {})},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line.removeprefix("RESULT "))
    run_data = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(out["run_id"])
    return out, run_data


def _check_per_epoch(tmp_path, run_data, epochs=2):
    history = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_metric_history(
        run_data.info.run_id, "val/loss")
    assert sorted(m.step for m in history) == list(range(1, epochs + 1))
    assert run_data.info.status == "FINISHED"


@pytest.mark.slow
def test_tensorflow_data_parallel_over_two_logical_devices(tmp_path):
    # with MixUp mixed in the train step, which each replica runs on its share of the batch (ablation/augment/mixing.py)
    out, run_data = _train_in_subprocess(tmp_path, "tensorflow", "trainer.devices=2", "augmentation=mixup",
                                         "augmentation.placement=device")
    assert run_data.data.tags["devices"] == "2"
    assert run_data.data.tags["augmentation"] == "mixup"
    assert 0.0 <= out["test/accuracy"] <= 1.0
    _check_per_epoch(tmp_path, run_data)


jax_missing = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")


@pytest.mark.slow
@jax_missing
def test_a_generator_trains_on_the_jax_backend(tmp_path):
    """augmentation.synthetic: the class-conditional GAN (ablation/training/gan.py) trains and samples on JAX too."""
    out, run_data = _train_in_subprocess(
        tmp_path, "jax", "augmentation=synthetic", "dataset.image_size=16", "dataset.train_size=120",
        "augmentation.synthetic.epochs=2", "augmentation.synthetic.per_class=8", "augmentation.synthetic.width=8",
        "augmentation.synthetic.latent_dim=16", "lenses.corruptions=[]",
        env={paths.FOLDERS["synthetic"]: str(tmp_path / "synthetic")})
    assert run_data.data.tags["keras_backend"] == "jax"
    metrics = run_data.data.metrics
    assert metrics["time/generator_train_s"] > 0 and metrics["time/generator_sample_s"] > 0
    assert math.isfinite(metrics["synthetic/d_loss"]) and math.isfinite(metrics["synthetic/g_loss"])
    assert metrics["data/n_synthetic"] == 60  # half as many generated images as the 120 real ones
    assert list((tmp_path / "synthetic").glob("*/images.npz"))
    _check_per_epoch(tmp_path, run_data)


@pytest.mark.slow
@jax_missing
def test_the_same_run_on_the_jax_backend(tmp_path):
    out, run_data = _train_in_subprocess(tmp_path, "jax", "augmentation=idg_classic")
    assert run_data.data.tags["keras_backend"] == "jax"
    assert run_data.data.tags["devices"] == "1"
    _check_per_epoch(tmp_path, run_data)


@pytest.mark.slow
@jax_missing
def test_jax_data_parallel_over_two_host_devices(tmp_path):
    # with CutMix mixed in the model's train step (ablation/augment/mixing.py), which JAX runs as a pure function
    out, run_data = _train_in_subprocess(tmp_path, "jax", "trainer.devices=all", "augmentation=cutmix",
                                         "augmentation.placement=device",
                                         env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert run_data.data.tags["keras_backend"] == "jax"
    assert run_data.data.tags["devices"] == "2"
    assert run_data.data.tags["augmentation"] == "cutmix"
    _check_per_epoch(tmp_path, run_data)
