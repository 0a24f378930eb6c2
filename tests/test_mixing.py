"""Batch mixing (augmentation.mix: MixUp, CutMix): the numbers drawn per batch, the pixels mixed on the host and
in the model's train step alike, the loss of a mixed batch, config errors, designs, and real runs."""
import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ablation import augment
from ablation.augment import PolicyError, mix_step, mixing
from ablation.training.batches import Batches, Draw
from ablation.training.config import ConfigError
from ablation.training.plan import plan
from ablation.training.run import run
from conftest import CONF
from helpers import random_images

MIXERS = {"mixup": keras.layers.MixUp(), "cutmix": keras.layers.CutMix()}


def _policy(name):
    return augment.build(OmegaConf.load(CONF / "augmentation" / f"{name}.yaml"))


@pytest.mark.parametrize("value, message", [
    ({"kind": "blend"}, "augmentation.mix.kind: expected one of mixup, cutmix"),
    ({"kind": "mixup", "alpha": 0}, "augmentation.mix.alpha: expected a number > 0"),
    ({"kind": "mixup", "alpha": "high"}, "augmentation.mix.alpha: expected a number > 0"),
    ({"kind": "cutmix", "alpha": 0.2}, "augmentation.mix.alpha: unknown for kind cutmix; its only setting is factor"),
    ("mixup", "augmentation.mix: expected a mapping"),
])
def test_bad_mix_settings_are_one_line_naming_the_key(value, message):
    with pytest.raises(PolicyError) as err:
        augment.build({"name": "p", "transforms": [], "mix": value})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_mix_needs_class_labels_and_online_batches(make_cfg):
    with pytest.raises(ConfigError, match=r"^augmentation.mix: MixUp mixes the class labels .* task reconstruct"):
        plan(make_cfg("augmentation=mixup", "task=reconstruct", "model=conv_autoencoder",
                                 "trainer.monitor=val_loss"))
    with pytest.raises(ConfigError, match=r"^augmentation.mix: CutMix mixes each training batch .* placement=host or device"):
        plan(make_cfg("augmentation=cutmix", "augmentation.placement=offline"))


def test_drawn_numbers_follow_keras_definitions():
    rng = np.random.default_rng(1)
    up = mixing.draw(mixing.Mix("mixup", 0.4), 500, 8, 12, rng)
    assert sorted(up["permutation"]) == list(range(500)) and up["permutation"].dtype == np.int32
    assert ((up["weight"] >= 0) & (up["weight"] <= 1)).all()
    assert abs(up["weight"].mean() - 0.5) < 0.05  # Beta(a, a) is symmetric about 1/2
    cut = mixing.draw(mixing.Mix("cutmix", 1.0), 500, 8, 12, rng)
    top, bottom, left, right = cut["box"].T
    assert ((0 <= top) & (top <= bottom) & (bottom <= 8) & (0 <= left) & (left <= right) & (right <= 12)).all()
    np.testing.assert_allclose(cut["weight"], 1 - (bottom - top) * (right - left) / 96, atol=1e-6)
    again = mixing.draw(mixing.Mix("cutmix", 1.0), 500, 8, 12, np.random.default_rng(1))
    assert not np.array_equal(again["box"], cut["box"])  # the stream moved on: fresh numbers per batch


def test_host_mixing_of_pixels():
    x, _ = random_images(12, 10, classes=4)
    up = mixing.draw(mixing.Mix("mixup", 1.0), len(x), 10, 10, np.random.default_rng(2))
    mixed = mixing.mix_images(x, up)
    w = up["weight"].reshape(-1, 1, 1, 1)
    expected = np.rint(w * x + (1 - w) * x[up["permutation"]])
    assert mixed.dtype == np.uint8 and np.abs(mixed - expected).max() <= 0
    cut = mixing.draw(mixing.Mix("cutmix", 1.0), len(x), 10, 10, np.random.default_rng(3))
    pasted = mixing.mix_images(x, cut)
    for i, (top, bottom, left, right) in enumerate(cut["box"]):
        inside = np.zeros((10, 10), bool)
        inside[top:bottom, left:right] = True
        np.testing.assert_array_equal(pasted[i][inside], x[cut["permutation"][i]][inside])
        np.testing.assert_array_equal(pasted[i][~inside], x[i][~inside])
        assert cut["weight"][i] == pytest.approx(1 - inside.mean())


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_the_device_mixes_pixels_as_the_host_does(name):
    x, y = random_images(16, 12, classes=4)
    policy = _policy(name)
    host = Batches(x, y, 8, draw=Draw(policy, seed=4, mix=policy.mix))
    device = Batches(x, y, 8, draw=Draw(policy, seed=4, mix=policy.mix, mix_images=False))
    for index in range(2):
        host_x, host_y = host.batch_at(0, index)
        raw_x, numbers = device.batch_at(0, index)
        assert set(host_y) == {"labels", "other", "weight"} and set(host_y) < set(numbers)
        assert not np.array_equal(host_x, raw_x)
        on_device, device_y = mix_step.mix_on_device(
            keras.ops.convert_to_tensor(raw_x), {k: keras.ops.convert_to_tensor(v) for k, v in numbers.items()}, MIXERS)
        on_device = keras.ops.convert_to_numpy(on_device)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(device_y["other"]), host_y["other"])
        assert on_device.dtype == np.uint8
        # MixUp rounds on both sides; float32 on the device may land on the other side of a .5 tie
        assert np.abs(on_device.astype(int) - host_x).max() <= 1
        assert (on_device == host_x).mean() > 0.99


def test_batches_carry_the_numbers_and_pad_them_for_devices():
    x, y = random_images(10, 10, classes=4)
    policy = _policy("cutmix")
    bx, by, weights = Batches(x, y, 4, draw=Draw(policy, mix=policy.mix, mix_images=False), pad_to=3).batch_at(0, 2)
    assert len(bx) == 3 and weights.tolist() == [1, 1, 0]  # 2 images + 1 zero-weighted copy
    assert set(by) == {"labels", "other", "weight", "permutation", "box"}
    assert all(len(v) == 3 for v in by.values()) and by["permutation"].max() < 2
    plain_x, plain_y = Batches(x, y, 4).batch_at(0, 0)
    assert isinstance(plain_y, np.ndarray)


def test_the_loss_of_a_mixed_batch_is_the_weighted_loss_of_both_labels():
    inputs = keras.Input((4, 4, 1), dtype="uint8")
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs)))
    model = mix_step.MixingModel(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", weighted_metrics=["accuracy"])
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (6, 4, 4, 1), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    numbers = mixing.draw(mixing.Mix("mixup", 1.0), 6, 4, 4, rng)
    y_pred = keras.ops.convert_to_numpy(model(x))
    loss = float(keras.ops.convert_to_numpy(model.compute_loss(
        x=x, y=mixing.targets(labels, numbers), y_pred=keras.ops.convert_to_tensor(y_pred))))
    w, other = numbers["weight"], labels[numbers["permutation"]]
    rows = np.arange(6)
    expected = np.mean(-w * np.log(y_pred[rows, labels]) - (1 - w) * np.log(y_pred[rows, other]))
    assert loss == pytest.approx(expected, rel=1e-5)
    plain = mix_step.plain(model)
    assert type(plain) is not mix_step.MixingModel
    np.testing.assert_allclose(keras.ops.convert_to_numpy(plain(x)), y_pred, rtol=1e-6)


def test_leave_one_out_separates_the_mix_from_the_transforms():
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "augmentation" / "hflip_mixup.yaml"))
    assert augment.units(cfg) == ["HorizontalFlip", "MixUp"]
    without = augment.build({**cfg, "variant": "-MixUp"})
    assert without.mix is None and without.transform_names == ["HorizontalFlip"]
    alone = augment.build({**cfg, "variant": "+MixUp"})
    assert alone.mix == mixing.Mix("mixup", 0.2) and alone.is_identity
    assert len({without.fingerprint, alone.fingerprint, augment.build(cfg).fingerprint}) == 3


def _train_losses(make_cfg, *overrides):
    cfg = make_cfg("tracking.log_model=true", *overrides)
    out = run(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    data = client.get_run(out["run_id"])
    assert data.info.status == "FINISHED"
    losses = [m.value for m in sorted(client.get_metric_history(out["run_id"], "train/loss"), key=lambda m: m.step)]
    return out, data, losses, client


def test_mixup_runs_on_the_host_and_on_the_device_alike(make_cfg, tmp_path):
    base = ["trainer.epochs=2", "dataset.train_size=128"]
    _, _, plain_losses, _ = _train_losses(make_cfg, *base, "augmentation=none")
    out, data, host_losses, client = _train_losses(make_cfg, *base, "augmentation=mixup")
    _, device_data, device_losses, _ = _train_losses(make_cfg, *base, "augmentation=mixup",
                                                     "augmentation.placement=device")
    assert len(host_losses) == 2 and not np.allclose(host_losses, plain_losses)  # the batches were mixed
    # the same numbers, the same pixels: the same training, wherever the pixels are mixed
    np.testing.assert_allclose(device_losses, host_losses, rtol=2e-2)
    assert 0 <= out["test/accuracy"] <= 1
    policy_json = client.download_artifacts(out["run_id"], "policy.json", str(tmp_path))
    assert '"mix": {\n    "kind": "mixup",\n    "alpha": 0.2' in open(policy_json).read()
    assert data.data.tags["policy_fingerprint"] == device_data.data.tags["policy_fingerprint"]
    model_file = client.download_artifacts(out["run_id"], "model.keras", str(tmp_path))
    loaded = keras.saving.load_model(model_file)  # a plain Keras model: no custom class to import
    assert type(loaded) is not mix_step.MixingModel and loaded.output_shape[-1] == 10


def test_the_preview_shows_the_mixing():
    from ablation.training import figures as run_figures

    x, _ = random_images(9, 16, classes=4)
    fig = run_figures.preview_grid(x[0], _policy("cutmix"), n=8, seed=0, partners=x[1:])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "original" and all(t.endswith("own)") for t in titles[1:9])
    assert any(not t.endswith("(100% own)") for t in titles[1:9])  # some tiles carry a pasted box


def test_a_replica_with_part_of_the_batch_pairs_within_its_share():
    """TensorFlow's MirroredStrategy gives each replica a share of the batch: the permutation is taken modulo it."""
    x, y = random_images(8, 6, classes=4)
    numbers = mixing.draw(mixing.Mix("cutmix", 1.0), 8, 6, 6, np.random.default_rng(7))
    share = {k: v[4:] for k, v in mixing.targets(y, numbers, on_device=True).items()}
    mixed, share_y = mix_step.mix_on_device(keras.ops.convert_to_tensor(x[4:]),
                                          {k: keras.ops.convert_to_tensor(v) for k, v in share.items()}, MIXERS)
    local = share["permutation"] % 4
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(share_y["other"]), y[4:][local])
    mixed = keras.ops.convert_to_numpy(mixed)
    for i, (top, bottom, left, right) in enumerate(share["box"]):
        np.testing.assert_array_equal(mixed[i, top:bottom, left:right], x[4:][local[i], top:bottom, left:right])
