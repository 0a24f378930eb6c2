"""Device-side augmentation (ablation.augment.device): every policy in conf/augmentation/ either becomes Keras layers or is
refused in one line naming the key and the transform; the layers augment only in training, agree with the host
policy, leave a wrapped model's predictions unchanged, and survive a .keras round trip."""

import keras
import numpy as np
import pytest
from omegaconf import OmegaConf

from ablation import augment
from ablation.augment import PolicyError, device
from ablation.training.models import build_small_cnn
from conftest import CONF
from helpers import textured

POLICY_DIR = CONF / "augmentation"
POLICIES = sorted(p.stem for p in POLICY_DIR.glob("*.yaml"))
# Policies the device cannot run, and the transform each refusal must name. A new policy file either builds on
# the device or is listed here, so none goes untested.
REFUSED = {"clahe": "albumentations.CLAHE", "albu_mixed": "albumentations.CLAHE"}
# Batch mixing alone (augmentation.mix, no per-image transforms): no layers; the model's train step mixes
# (tests/test_mixing.py).
MIX_ONLY = [p.stem for p in POLICY_DIR.glob("*.yaml")
            if OmegaConf.load(p).get("mix") and not OmegaConf.load(p).get("transforms")]
# Generated images alone (augmentation.synthetic, no transform): no layers either; plan() refuses a generator with
# augmentation.placement=device (tests/test_generative.py).
GENERATED_ONLY = [p.stem for p in POLICY_DIR.glob("*.yaml") if OmegaConf.load(p).get("synthetic")
                  and not OmegaConf.load(p).get("transforms") and not OmegaConf.load(p).get("idg")]
BUILT = [name for name in POLICIES
         if name not in REFUSED and name != "none" and name not in MIX_ONLY and name not in GENERATED_ONLY]
SIZE = 32


def load(name: str):
    return OmegaConf.load(POLICY_DIR / f"{name}.yaml")


def batch_of(image: np.ndarray, n: int) -> np.ndarray:
    return np.repeat(image[None].astype("float32") / 255, n, axis=0)


def stack(transforms=None, idg=None, channels: int = 1, seed: int = 0):
    cfg = {"name": "test", "transforms": transforms or []}
    if idg is not None:
        cfg["idg"] = idg
    return device.layers_for(cfg, (SIZE, SIZE, channels), seed)


def tiny_model(channels: int) -> keras.Model:
    return keras.Sequential([keras.Input((SIZE, SIZE, channels)), keras.layers.Conv2D(4, 3),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")])


# ---- the registry

def test_every_required_policy_is_in_the_registry():
    assert {"mixup", "cutmix"} <= set(MIX_ONLY)
    assert {"none", "hflip", "vflip", "rotate", "shift", "zoom", "shear", "brightness", "brightness_contrast",
            "channel_shift", "clahe", "noise", "random_resized_crop", "color_jitter", "cutout", "idg_classic",
            "albu_mixed", "flowers", "crop_color"} <= set(POLICIES)
    assert set(REFUSED) <= set(POLICIES)


@pytest.mark.parametrize("name", POLICIES)
def test_policy_builds_or_is_refused_naming_the_transform(name):
    if name in REFUSED:
        with pytest.raises(PolicyError) as err:
            device.layers_for(load(name), (SIZE, SIZE, 1), seed=0)
        message = str(err.value)
        assert message.startswith("augmentation.") and REFUSED[name] in message, message
        assert "augmentation.placement=host" in message and "\n" not in message
    elif name == "none" or name in MIX_ONLY or name in GENERATED_ONLY:
        assert device.layers_for(load(name), (SIZE, SIZE, 1), seed=0) is None
    else:
        layers = device.layers_for(load(name), (SIZE, SIZE, 1), seed=0)
        assert isinstance(layers, keras.Sequential) and layers.layers


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", BUILT)
def test_layers_augment_in_training_only_and_keep_the_shape(name, channels):
    layers = device.layers_for(load(name), (SIZE, SIZE, channels), seed=0)
    x = batch_of(textured(channels), 8)
    trained = keras.ops.convert_to_numpy(layers(x, training=True))
    assert trained.shape == x.shape and trained.dtype == np.float32
    assert np.abs(trained - x).max() > 1e-3, "nothing changed in training"
    assert trained.min() >= 0 and trained.max() <= 1
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layers(x, training=False)), x)


@pytest.mark.parametrize("name", BUILT)
def test_device_and_host_policies_agree(name):
    """Same policy, same effect: the mean intensity, the per-image contrast and how far the images move from
    the original agree between albumentations on the host and the layers on the device."""
    image, n = textured(3), 256
    host = augment.build(load(name)).augment_batch(np.repeat(image[None], n, 0), np.random.default_rng(0)) / 255
    dev = keras.ops.convert_to_numpy(device.layers_for(load(name), image.shape, seed=0)(batch_of(image, n)))
    original = image / 255

    def summary(out):
        return out.mean(), out.std(axis=(1, 2, 3)).mean(), np.abs(out - original).mean()

    (h_mean, h_std, h_move), (d_mean, d_std, d_move) = summary(host), summary(dev)
    # Bounds a few sampling standard errors wide: the two sides draw different random numbers.
    assert abs(h_mean - d_mean) < 0.025 and abs(h_std - d_std) < 0.02, (summary(host), summary(dev))
    assert abs(h_move - d_move) < 0.15 * h_move + 0.005, (summary(host), summary(dev))


@pytest.mark.parametrize("name", BUILT)
def test_wrapped_model_predicts_like_the_bare_model_and_round_trips(name, tmp_path):
    bare = tiny_model(1)
    model = device.wrap(bare, device.layers_for(load(name), (SIZE, SIZE, 1), seed=0))
    x = batch_of(textured(1), 4)
    expected = bare.predict(x, verbose=0)
    np.testing.assert_array_equal(model.predict(x, verbose=0), expected)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
    # The loaded augmentation is still live in training, not an identity left by a lost config.
    assert np.abs(keras.ops.convert_to_numpy(loaded(x, training=True)) - expected).max() > 1e-6


def test_wrap_without_augmentation_is_the_model():
    bare = tiny_model(1)
    assert device.wrap(bare, None) is bare


# ---- the semantics of single transforms

def test_flip_with_p1_mirrors_exactly():
    x = batch_of(textured(3), 4)
    horizontal = stack([{"_target_": "albumentations.HorizontalFlip", "p": 1.0}], channels=3)
    vertical = stack([{"_target_": "albumentations.VerticalFlip", "p": 1.0}], channels=3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(horizontal(x, training=True)), x[:, :, ::-1])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(vertical(x, training=True)), x[:, ::-1])


def test_flip_probability_other_than_half():
    x = batch_of(textured(1), 400)
    out = keras.ops.convert_to_numpy(stack([{"_target_": "albumentations.HorizontalFlip", "p": 0.2}])(x))
    flipped = np.all(out == x[:, :, ::-1], axis=(1, 2, 3))
    kept = np.all(out == x, axis=(1, 2, 3))
    assert np.all(flipped | kept)
    assert 0.13 < flipped.mean() < 0.27


def line_angles(images: np.ndarray) -> np.ndarray:
    """The orientation (degrees, counter-clockwise from horizontal) of the bright line in each image."""
    angles = []
    for image in images[..., 0]:
        ys, xs = np.nonzero(image > 0.5)
        cov = np.cov(np.stack([xs, -ys]))  # image rows grow downwards
        evals, evecs = np.linalg.eigh(cov)
        vx, vy = evecs[:, np.argmax(evals)]
        angle = np.degrees(np.arctan2(vy, vx))
        angles.append((angle + 90) % 180 - 90)
    return np.array(angles)


def horizontal_line(n: int) -> np.ndarray:
    image = np.zeros((n, SIZE, SIZE, 1), np.float32)
    image[:, SIZE // 2 - 1:SIZE // 2 + 1, 4:SIZE - 4] = 1.0
    return image


def test_rotation_stays_within_its_limit_and_covers_it():
    rotate = device.layers_for(load("rotate"), (SIZE, SIZE, 1), seed=0)
    angles = line_angles(keras.ops.convert_to_numpy(rotate(horizontal_line(200))))
    assert np.abs(angles).max() <= 30 + 2
    assert angles.min() < -22 and angles.max() > 22


def test_rotation_direction_matches_albumentations():
    """An asymmetric limit turns the same way on both sides (albumentations: positive = counter-clockwise)."""
    transforms = [{"_target_": "albumentations.Rotate", "limit": [10, 20], "p": 1.0}]
    dev = line_angles(keras.ops.convert_to_numpy(stack(transforms)(horizontal_line(100))))
    assert dev.min() >= 10 - 2 and dev.max() <= 20 + 2
    lines = (horizontal_line(20) * 255).astype(np.uint8)
    host = line_angles(augment.build({"name": "t", "transforms": transforms}).augment_batch(
        lines, np.random.default_rng(0)) / 255)
    assert host.min() >= 10 - 2 and host.max() <= 20 + 2


def square(n: int) -> np.ndarray:
    image = np.zeros((n, SIZE, SIZE, 1), np.float32)
    image[:, 8:24, 8:24] = 1.0
    return image


def test_zoom_above_one_shows_a_smaller_image_as_on_the_host():
    idg = {"zoom_range": [1.5, 1.5], "fill_mode": "constant"}
    dev = keras.ops.convert_to_numpy(stack(idg=idg)(square(2)))
    host = augment.build({"name": "t", "idg": idg}).augment_batch((square(2) * 255).astype(np.uint8),
                                                                  np.random.default_rng(0)) / 255
    dev_area, host_area = (dev > 0.5).sum(axis=(1, 2, 3)), (host > 0.5).sum(axis=(1, 2, 3))
    assert np.all(dev_area < 16 * 16 * 0.6)
    assert np.all(np.abs(dev_area - host_area) <= 0.1 * host_area)


def test_shear_keeps_the_centre_where_it_is():
    """ImageDataGenerator shears about the image centre; Keras' own RandomShear would move it."""
    image = np.zeros((50, SIZE + 1, SIZE + 1, 1), np.float32)
    image[:, 12:21, 12:21] = 1.0
    layers = device.layers_for({"name": "t", "idg": {"shear_range": 30, "fill_mode": "constant"}},
                               (SIZE + 1, SIZE + 1, 1), seed=0)
    out = keras.ops.convert_to_numpy(layers(image))[..., 0]
    ys, xs = np.mgrid[0:SIZE + 1, 0:SIZE + 1]
    mass = out.sum(axis=(1, 2))
    assert np.abs((out * xs).sum(axis=(1, 2)) / mass - 16).max() < 0.5
    assert np.abs((out * ys).sum(axis=(1, 2)) / mass - 16).max() < 0.5
    assert np.abs(out - image[..., 0]).max() > 0.5  # and it did shear


@pytest.mark.parametrize("policy", [
    {"idg": {"rotation_range": 45, "fill_mode": "constant", "cval": 255}},
    {"transforms": [{"_target_": "albumentations.Rotate", "limit": 45, "border_mode": 0, "fill": 255, "p": 1.0}]},
])
def test_constant_fill_is_in_the_layers_0_to_1_units(policy):
    """cval / fill are pixel values on the host; the device layers see images already divided by 255."""
    layers = device.layers_for({"name": "t", **policy}, (SIZE, SIZE, 1), seed=0)
    out = keras.ops.convert_to_numpy(layers(np.zeros((16, SIZE, SIZE, 1), np.float32)))
    assert out.max() == pytest.approx(1.0)
    assert (out[:, 0, 0] > 0.5).mean() > 0.5  # the corners rotate out of the image and are filled


def test_one_of_and_some_of_pick_per_image():
    x = batch_of(textured(1), 64)
    flips = [{"_target_": "albumentations.HorizontalFlip", "p": 1.0},
             {"_target_": "albumentations.VerticalFlip", "p": 1.0}]
    for compose in ({"_target_": "albumentations.OneOf", "transforms": flips, "p": 1.0},
                    {"_target_": "albumentations.SomeOf", "transforms": flips, "n": 1}):
        out = keras.ops.convert_to_numpy(stack([compose])(x))
        horizontal = np.all(out == x[:, :, ::-1], axis=(1, 2, 3))
        vertical = np.all(out == x[:, ::-1], axis=(1, 2, 3))
        assert np.all(horizontal ^ vertical) and horizontal.any() and vertical.any(), compose["_target_"]
    both = keras.ops.convert_to_numpy(stack([{"_target_": "albumentations.SomeOf", "transforms": flips, "n": 2}])(x))
    np.testing.assert_array_equal(both, x[:, ::-1, ::-1])


def test_a_seed_reproduces_the_augmentation():
    x = batch_of(textured(1), 8)
    first, again, other = (keras.ops.convert_to_numpy(device.layers_for(load("idg_classic"), x.shape[1:], seed)(x))
                           for seed in (3, 3, 4))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3


# ---- variants and errors

def test_variants_keep_the_same_units_as_on_the_host():
    cfg = OmegaConf.to_container(load("idg_classic"))
    without_rotation = device.layers_for({**cfg, "variant": "-rotation_range"}, (SIZE, SIZE, 1), seed=0)
    names = [type(layer).__name__ for layer in without_rotation.layers]
    assert "RandomRotation" not in names and "RandomZoom" in names
    only_flip = device.layers_for({**cfg, "variant": "+horizontal_flip"}, (SIZE, SIZE, 1), seed=0)
    assert [type(layer).__name__ for layer in only_flip.layers] == ["RandomFlip"]

    mixed = OmegaConf.to_container(load("albu_mixed"))
    assert device.layers_for({**mixed, "variant": "-CLAHE"}, (SIZE, SIZE, 1), seed=0) is not None
    with pytest.raises(PolicyError, match=r"^augmentation\.transforms\[4\]: albumentations\.CLAHE"):
        device.layers_for({**mixed, "variant": "+CLAHE"}, (SIZE, SIZE, 1), seed=0)


@pytest.mark.parametrize("transform, key", [
    ({"_target_": "albumentations.Affine", "rotate": 10, "shear": 10}, "augmentation.transforms[0].shear"),
    ({"_target_": "albumentations.Rotate", "limit": 10, "interpolation": 2},
     "augmentation.transforms[0].interpolation"),
    ({"_target_": "albumentations.GaussNoise", "noise_scale_factor": 0.5},
     "augmentation.transforms[0].noise_scale_factor"),
    ({"_target_": "albumentations.CoarseDropout", "fill": "random"}, "augmentation.transforms[0].fill"),
    ({"_target_": "albumentations.SomeOf", "replace": True, "n": 2,
      "transforms": [{"_target_": "albumentations.HorizontalFlip"}]}, "augmentation.transforms[0].replace"),
    ({"_target_": "albumentations.OneOf", "transforms": [{"_target_": "albumentations.HorizontalFlip"},
                                                         {"_target_": "albumentations.Posterize"}]},
     "augmentation.transforms[0].transforms[1]"),
])
def test_what_has_no_layer_is_refused_naming_key_and_transform(transform, key):
    with pytest.raises(PolicyError) as err:
        stack([transform])
    message = str(err.value)
    assert message.startswith(f"{key}: albumentations.") and "augmentation.placement=host" in message, message


def test_host_validation_runs_first():
    with pytest.raises(PolicyError, match=r"^augmentation\.transforms\[0\]\.p: expected a probability"):
        stack([{"_target_": "albumentations.HorizontalFlip", "p": 1.5}])


# ---- a run

def test_small_cnn_trains_one_epoch_with_device_augmentation():
    """fit runs the augmentation inside the compiled train step: every custom layer, in graph mode."""
    rng = np.random.default_rng(0)
    library = ("cutout", "noise", "random_resized_crop", "color_jitter", "brightness_contrast", "flowers")
    flips = [{"_target_": "albumentations.HorizontalFlip", "p": 1.0},
             {"_target_": "albumentations.VerticalFlip", "p": 0.3}]
    transforms = [OmegaConf.to_container(load(name).transforms[0]) for name in library] + [
        {"_target_": "albumentations.OneOf", "transforms": flips},
        {"_target_": "albumentations.SomeOf", "transforms": flips, "n": 1}]
    idg = {"shear_range": 10, "channel_shift_range": 20, "brightness_range": [0.8, 1.2]}
    layers = stack(transforms, idg=idg, channels=1)
    state_before = [keras.ops.convert_to_numpy(layer.generator.state) for layer in layers.layers]
    model = device.wrap(build_small_cnn((SIZE, SIZE, 1), 10), layers)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(rng.random((16, SIZE, SIZE, 1), dtype=np.float32), rng.integers(0, 10, 16),
                        batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    state_after = [keras.ops.convert_to_numpy(layer.generator.state) for layer in layers.layers]
    assert all(np.any(a != b) for a, b in zip(state_before, state_after)), "an augmentation layer did not run"
