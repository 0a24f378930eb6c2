"""RandAugment under one policy name: augment.RandAugment on the host mirrors keras.layers.RandAugment operation by
operation (the same results for the same magnitudes, the same magnitude ranges from `factor`), draws its
operations per image, reports bad settings in one line naming the key; on the device the policy becomes
keras.layers.RandAugment, which augments only in training; and a real run trains with it on either side."""
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


import albumentations as A
import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ablation import augment
from ablation.augment import PolicyError, RandAugment, device
from ablation.training.run import run
from conftest import CONF
from helpers import textured

POLICY = CONF / "augmentation" / "randaugment.yaml"
SIZE = 24
TARGET = "ablation.augment.RandAugment"


def policy(**args):
    return augment.build({"name": "ra", "transforms": [{"_target_": TARGET, **args}]})


def keras_rand_augment(factor=0.5) -> keras.layers.RandAugment:
    """Keras' own layer on 0-255 images: its sub-layers are the reference for each operation."""
    layer = keras.layers.RandAugment(value_range=(0, 255), factor=factor, seed=0)
    layer.build((None, SIZE, SIZE, 3))
    return layer


# ---- the host transform

@pytest.mark.parametrize("channels", [1, 3])
def test_policy_file_changes_images_and_keeps_shape_and_dtype(channels):
    image = textured(channels, SIZE)
    batch = np.repeat(image[None], 16, axis=0)
    out = augment.build(OmegaConf.load(POLICY)).augment_batch(batch, np.random.default_rng(0))
    assert out.shape == batch.shape and out.dtype == np.uint8
    # (an image may draw operations that leave it as it is: colour degeneration twice on a grey image)
    assert sum(not np.array_equal(o, image) for o in out) >= 14
    np.testing.assert_array_equal(batch[0], image)  # the input is left as it was


def test_reproducible_from_the_rng_and_serialized_like_albumentations():
    ra = policy(num_ops=2, factor=0.5)
    batch = np.stack([textured(3, SIZE)] * 8)
    first = ra.augment_batch(batch, np.random.default_rng(3))
    np.testing.assert_array_equal(first, ra.augment_batch(batch, np.random.default_rng(3)))
    assert not np.array_equal(first, ra.augment_batch(batch, np.random.default_rng(4)))
    # albumentations' JSON names the class and its arguments, and rebuilds the same transform.
    item = ra.to_dict()["transform"]["transforms"][0]
    assert item == {"__class_fullname__": TARGET, "num_ops": 2, "factor": 0.5, "interpolation": 1, "p": 1.0}
    rebuilt = A.from_dict(ra.to_dict())
    assert isinstance(rebuilt.transforms[0], RandAugment) and rebuilt.transforms[0].num_ops == 2
    assert policy(num_ops=2, factor=0.4).fingerprint != ra.fingerprint


def test_operations_are_drawn_per_image():
    """With factor 0 every operation is deterministic, so a batch of one image repeated shows how many different
    operations were drawn: per image, several; once per batch (Keras' own layer), one."""
    ra = policy(num_ops=1, factor=0.0)
    out = ra.augment_batch(np.stack([textured(3, SIZE)] * 64), np.random.default_rng(0))
    assert len({o.tobytes() for o in out}) >= 5
    ops = [name for _ in range(200) for name, _ in RandAugment(num_ops=3).sample_ops(np.random.default_rng(_))]
    assert set(ops) == set(RandAugment.OPS) and len(ops) == 600


# ---- each operation against its Keras sub-layer

def _keras_transformation(name: str, args: dict, images: np.ndarray):
    """The Keras sub-layer's transformation for the magnitudes the host takes (same numbers, Keras' units)."""
    f32, one = np.float32, (1, 1, 1, 1)  # one value per image
    if name == "random_shear":
        return {"shear_factor": np.array([[args["shear_x"], args["shear_y"]]], f32)}
    if name == "random_translation":
        return {"translations": np.array([[args["x"] * SIZE, args["y"] * SIZE]], f32)}
    if name == "random_rotation":  # a range of one angle: Keras' own rotation matrix for it
        fixed = args["angle"] / 360
        return keras.layers.RandomRotation(factor=(fixed, fixed)).get_random_transformation(images)
    if name == "random_brightness":
        return {"rgb_delta": np.full(one, args["delta"], f32)}
    if name == "random_color_degeneration":
        return {"factor": np.full(one, args["factor"], f32)}
    if name == "random_contrast":
        return {"contrast_factor": np.full(one, args["factor"], f32)}
    if name == "random_sharpness":
        return {"factor": np.array([args["factor"]], f32)}
    if name == "random_posterization":
        return {"shift_factor": np.array([8 - args["bits"]], np.uint8)}
    if name == "solarization":
        return {"additions": np.full(one, args["addition"], f32),
                "thresholds": np.full(one, args["threshold"], f32)}
    return None  # auto_contrast, equalization


MAGNITUDES = {
    "random_shear": {"shear_x": 0.3, "shear_y": -0.2},
    "random_translation": {"x": 0.25, "y": 0.4},
    "random_rotation": {"angle": 50.0},
    "random_brightness": {"delta": 40.0},
    "random_color_degeneration": {"factor": 0.4},
    "random_contrast": {"factor": 1.4},
    "random_sharpness": {"factor": 0.1},
    "random_posterization": {"bits": 3},
    "solarization": {"addition": 30.0, "threshold": 100.0},
    "auto_contrast": {},
    "equalization": {},
}


def test_the_operations_are_keras_randaugments():
    assert RandAugment.OPS == tuple(keras.layers.RandAugment._AUGMENT_LAYERS) and set(MAGNITUDES) == set(RandAugment.OPS)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", RandAugment.OPS)
def test_each_operation_does_what_its_keras_layer_does(name, channels):
    image = textured(channels, SIZE)
    if name == "auto_contrast":  # the texture spans almost 0-255: squeeze it so the stretch shows
        image = (image // 2 + 40).astype(np.uint8)
    images = image[None].astype("float32")
    layer = getattr(keras_rand_augment(), name)
    expected = keras.ops.convert_to_numpy(
        layer.transform_images(keras.ops.convert_to_tensor(images), _keras_transformation(name, MAGNITUDES[name],
                                                                                          images)))[0]
    host = RandAugment().apply_op(image, name, **MAGNITUDES[name])
    assert host.shape == image.shape and host.dtype == np.uint8
    # The host rounds to uint8 where Keras keeps floats, and OpenCV's bilinear weights are 5-bit fixed point.
    assert np.abs(host - expected).max() <= 1.0, (name, np.abs(host - expected).max())
    if not (name == "random_color_degeneration" and channels == 1):  # grey is its own grey
        assert np.mean(host != image) > 0.3, f"{name} barely changed the image"


@pytest.mark.parametrize("factor", [0.5, [0.2, 0.7]])
def test_magnitude_ranges_are_the_ones_keras_derives_from_factor(factor):
    """Keras' sub-layers draw for a batch of n images; the host draws n images' magnitudes: the same ranges."""
    n = 2000
    images = keras.ops.zeros((n, SIZE, SIZE, 3))
    drawn = keras_rand_augment(factor).get_random_transformation(images)["transforms"]
    k = {name: {key: keras.ops.convert_to_numpy(v).reshape(n, -1) for key, v in value.items()
                if key not in ("input_shape", "rotation_matrix", "image_height", "image_width", "batch_size")}
         for name, value in drawn.items() if value is not None}
    reference = {
        "random_shear": {"shear_x": k["random_shear"]["shear_factor"][:, 0],
                         "shear_y": k["random_shear"]["shear_factor"][:, 1]},
        "random_translation": {"x": k["random_translation"]["translations"][:, 0] / SIZE,
                               "y": k["random_translation"]["translations"][:, 1] / SIZE},
        "random_rotation": {"angle": k["random_rotation"]["angle"]},
        "random_brightness": {"delta": k["random_brightness"]["rgb_delta"]},
        "random_color_degeneration": {"factor": k["random_color_degeneration"]["factor"]},
        "random_contrast": {"factor": k["random_contrast"]["contrast_factor"]},
        "random_sharpness": {"factor": k["random_sharpness"]["factor"]},
        "random_posterization": {"bits": 8 - k["random_posterization"]["shift_factor"]},
        "solarization": {"addition": k["solarization"]["additions"], "threshold": k["solarization"]["thresholds"]},
    }
    host = RandAugment(factor=factor)
    g = np.random.default_rng(0)
    for name, params in reference.items():
        samples = [host._sample(name, g) for _ in range(n)]
        for key, keras_values in params.items():
            ours = np.array([s[key] for s in samples], float)
            theirs = np.asarray(keras_values, float).ravel()
            if name == "random_posterization":
                assert set(ours) == set(theirs), (name, set(ours), set(theirs))
                continue
            span = max(theirs.max() - theirs.min(), 1e-9)
            for stat in (np.min, np.max, np.mean):
                assert abs(stat(ours) - stat(theirs)) < 0.05 * span, (name, key, stat.__name__, ours, theirs)
            if name == "random_shear":  # one sign for both axes, either with probability 1/2
                assert np.all(np.sign(ours) == np.sign([s["shear_y"] for s in samples]))
                assert 0.4 < np.mean(ours > 0) < 0.6


# ---- bad settings

@pytest.mark.parametrize("args, key", [
    ({"factor": 1.5}, "factor"), ({"factor": [0.6, 0.2]}, "factor"), ({"factor": "strong"}, "factor"),
    ({"num_ops": -1}, "num_ops"), ({"num_ops": 1.5}, "num_ops"), ({"num_ops": True}, "num_ops"),
    ({"interpolation": 3}, "interpolation"), ({"p": 2}, "p"), ({"magnitude": 9}, None)])
def test_bad_argument_names_its_key_in_one_line(args, key):
    with pytest.raises(PolicyError) as err:
        policy(**args)
    message = str(err.value)
    prefix = "augmentation.transforms[0]" + (f".{key}:" if key else ":")
    assert message.startswith(prefix) and "\n" not in message, message


def test_split_for_image_to_image_tasks_refuses_it_naming_the_key():
    with pytest.raises(PolicyError) as err:
        policy().split()
    message = str(err.value)
    assert message.startswith(f"augmentation.transforms[0]: {TARGET} ") and "\n" not in message, message


# ---- on the device

def test_device_policy_is_keras_randaugment_and_passes_images_through_at_inference():
    layers = device.layers_for(OmegaConf.load(POLICY), (SIZE, SIZE, 3), seed=0)
    (ra,) = layers.layers
    assert isinstance(ra, keras.layers.RandAugment)
    assert (tuple(ra.value_range), ra.num_ops, tuple(ra.factor), ra.interpolation) == ((0, 1), 2, (0, 0.5),
                                                                                     "bilinear")
    x = np.repeat(textured(3, SIZE)[None].astype("float32") / 255, 8, axis=0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layers(x, training=False)), x)
    trained = keras.ops.convert_to_numpy(layers(x, training=True))
    assert trained.shape == x.shape and trained.min() >= 0 and trained.max() <= 1
    assert np.abs(trained - x).max() > 0.05
    bare = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(2, 3),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    np.testing.assert_array_equal(device.wrap(bare, layers).predict(x, verbose=0), bare.predict(x, verbose=0))


def test_device_draws_operations_per_image_like_the_host():
    cfg = {"name": "ra", "transforms": [{"_target_": TARGET, "num_ops": 1, "factor": 0.0, "interpolation": 0}]}
    layers = device.layers_for(cfg, (SIZE, SIZE, 3), seed=0)
    assert layers.layers[0].interpolation == "nearest"
    x = np.repeat(textured(3, SIZE)[None].astype("float32") / 255, 64, axis=0)
    out = np.round(keras.ops.convert_to_numpy(layers(x, training=True)), 4)
    assert len({o.tobytes() for o in out}) >= 5


def test_device_refuses_an_interpolation_keras_lacks():
    cfg = {"name": "ra", "transforms": [{"_target_": TARGET, "interpolation": 2}]}
    with pytest.raises(PolicyError) as err:
        device.layers_for(cfg, (SIZE, SIZE, 3), seed=0)
    message = str(err.value)
    assert message.startswith("augmentation.transforms[0].interpolation:") and "augmentation.placement=host" in message
    assert "\n" not in message


# ---- real runs

@pytest.mark.parametrize("where", ["host", "device"])
def test_a_run_with_randaugment_finishes_and_is_recorded(make_cfg, where):
    cfg = make_cfg("augmentation=randaugment", f"augmentation.placement={where}", "dataset.train_size=48",
                   "trainer.epochs=1")
    metrics = run(cfg)
    mlrun = MlflowClient(tracking_uri=cfg.tracking.uri).get_run(metrics["run_id"])
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.tags["augmentation"] == "randaugment"
    assert mlrun.data.params["augmentation.placement"] == where
    assert np.isfinite(mlrun.data.metrics["test/loss"]) and "gap/loss" in mlrun.data.metrics


def test_inpainting_with_randaugment_stops_before_training_naming_the_key(make_cfg):
    cfg = make_cfg("task=inpaint", "model=conv_autoencoder", "augmentation=randaugment")
    with pytest.raises(ValueError) as err:
        run(cfg)
    message = str(err.value)
    assert message.startswith(f"augmentation.transforms[0]: {TARGET} ") and "\n" not in message, message
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert not experiments or not client.search_runs(experiments), "a run was opened"


@pytest.mark.parametrize("channels", [1, 3])
def test_device_equalization_counts_each_image_on_its_own(channels):
    """A batch of a textured image, a dark low-contrast one and a flat one: each comes out as the host equalizes
    it alone (Keras' Equalization would spread one histogram over all three, changing each by its neighbours)."""
    textured_image = textured(channels, SIZE)
    dark = (textured_image // 8 + 10).astype(np.uint8)
    flat = np.full_like(textured_image, 77)
    batch = np.stack([textured_image, dark, flat])
    layer = device.RandAugment(value_range=(0, 1), num_ops=1, factor=0.5, seed=0)
    images = keras.ops.convert_to_tensor(batch.astype("float32") / 255)
    transformation = layer.get_random_transformation(images)
    equalization = list(transformation["transforms"]).index("equalization")
    transformation["layer_idxes"] = keras.ops.full((1, 3), equalization, dtype="int32")
    out = keras.ops.convert_to_numpy(layer.transform_images(images, transformation)) * 255
    host = RandAugment()
    for image, result in zip(batch, out):
        expected = host.apply_op(image, "equalization")
        assert np.abs(result - expected).max() <= 1.0, np.abs(result - expected).max()
    np.testing.assert_allclose(out[2], flat, atol=1e-3)  # one value: nothing to spread
    whole_batch = keras.ops.convert_to_numpy(layer.equalization.transform_images(images, None)) * 255
    assert np.abs(whole_batch[1] - host.apply_op(dark, "equalization")).max() > 20  # what per image avoids
