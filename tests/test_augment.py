"""Augmentation policies: every file in conf/augmentation builds and augments, results follow the passed-in
generator only, the ImageDataGenerator vocabulary means what Keras documents, and bad settings name their key."""
import json
import os
import random
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
import matplotlib
import numpy as np
import pytest
from omegaconf import OmegaConf

from ablation import augment
from ablation.augment import KerasAffine, PolicyError, keras_affine_matrix
from ablation.training import figures as run_figures
from conftest import CONF
from helpers import textured

matplotlib.use("Agg")

POLICY_DIR = CONF / "augmentation"
POLICIES = sorted(p.stem for p in POLICY_DIR.glob("*.yaml"))
# Batch mixing alone (augmentation.mix: MixUp, CutMix): no per-image transform; tests/test_mixing.py covers them.
MIX_ONLY = {p.stem for p in POLICY_DIR.glob("*.yaml")
            if OmegaConf.load(p).get("mix") and not OmegaConf.load(p).get("transforms")}
# Generated training images (augmentation.synthetic), alone or beside a policy: tests/test_generative.py covers them.
GENERATIVE = {p.stem for p in POLICY_DIR.glob("*.yaml") if OmegaConf.load(p).get("synthetic")}
PER_IMAGE = [name for name in POLICIES if name not in MIX_ONLY | GENERATIVE]
REQUIRED = {"none", "hflip", "vflip", "rotate", "shift", "zoom", "shear", "brightness", "brightness_contrast",
            "channel_shift", "clahe", "noise", "random_resized_crop", "color_jitter", "cutout", "idg_classic",
            "albu_mixed", "flowers", "crop_color"}


def load(name: str):
    return OmegaConf.load(POLICY_DIR / f"{name}.yaml")


def idg(**kwargs):
    return augment.build({"name": "test", "idg": kwargs})


def draws(policy, image, n=20, seed=0):
    rng = np.random.default_rng(seed)
    return [policy(image, rng) for _ in range(n)]


# ---- the registry -----------------------------------------------------------------------------------------------

def test_policy_library_is_complete():
    assert REQUIRED <= set(POLICIES), f"missing: {sorted(REQUIRED - set(POLICIES))}"


@pytest.mark.parametrize("name", PER_IMAGE)
def test_policy_builds_and_augments_gray_and_colour(name):
    policy = augment.build(load(name))
    assert policy.name == name
    assert policy.is_identity == (name == "none")
    for channels in (1, 3):
        image = textured(channels)
        before = image.copy()
        outputs = draws(policy, image, n=8)
        np.testing.assert_array_equal(image, before)  # the input is never modified in place
        for out in outputs:
            assert out.shape == image.shape and out.dtype == np.uint8
        changed = any(not np.array_equal(out, image) for out in outputs)
        assert changed == (name != "none"), f"{name} on {channels} channel(s)"


def test_none_returns_the_batch_unchanged():
    batch = np.stack([textured(1)] * 3)
    assert augment.build(load("none")).augment_batch(batch, np.random.default_rng(0)) is batch


@pytest.mark.parametrize("name", PER_IMAGE)
def test_same_seed_same_batch_other_seed_other_batch(name):
    policy = augment.build(load(name))
    batch = np.stack([textured(3)] * 8)
    first = policy.augment_batch(batch, np.random.default_rng(1))
    np.testing.assert_array_equal(first, augment.build(load(name)).augment_batch(batch, np.random.default_rng(1)))
    if name != "none":
        assert not np.array_equal(first, policy.augment_batch(batch, np.random.default_rng(2)))


def test_results_ignore_global_random_state():
    policy = augment.build(load("albu_mixed"))
    batch = np.stack([textured(3)] * 4)
    np.random.seed(1), random.seed(1)
    first = policy.augment_batch(batch, np.random.default_rng(5))
    np.random.seed(2), random.seed(2)
    np.testing.assert_array_equal(first, policy.augment_batch(batch, np.random.default_rng(5)))


@pytest.mark.parametrize("name", ["idg_classic", "albu_mixed", "crop_color"])
def test_threads_give_the_serial_result(name):
    policy = augment.build(load(name))
    batch = np.stack([textured(3)] * 16)
    seeds = range(12)
    serial = [policy.augment_batch(batch, np.random.default_rng(s)) for s in seeds]
    with ThreadPoolExecutor(max_workers=2) as pool:
        threaded = list(pool.map(lambda s: policy.augment_batch(batch, np.random.default_rng(s)), seeds))
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a, b)


def test_fingerprint_identifies_the_policy_and_to_dict_is_albumentations_json():
    fingerprints = {}
    for name in POLICIES:
        policy = augment.build(load(name))
        assert policy.fingerprint == augment.build(load(name)).fingerprint
        json.dumps(policy.to_dict())
        fingerprints[policy.fingerprint] = name
    assert len(fingerprints) == len(POLICIES)  # no two policies share one
    policy = augment.build(load("idg_classic"))
    restored = A.from_dict(policy.to_dict())  # the custom Keras transforms are registered too
    assert json.loads(json.dumps(A.to_dict(restored))) == policy.to_dict()


def test_built_from_the_composed_hydra_config(make_cfg):
    cfg = make_cfg("augmentation=idg_classic")
    assert augment.build(cfg.augmentation).fingerprint == augment.build(load("idg_classic")).fingerprint


# ---- sizes and channels -----------------------------------------------------------------------------------------

def test_size_follows_each_image_and_is_left_out_of_the_fingerprint():
    policy = augment.build(load("crop_color"))
    for shape in [(24, 40, 3), (32, 32, 1), (17, 9, 3)]:
        image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        assert policy(image, np.random.default_rng(0)).shape == shape
    assert policy.to_dict()["transform"]["transforms"][0]["size"] is None
    assert augment.build(load("crop_color"), image_shape=(32, 32, 3)).fingerprint == policy.fingerprint


def test_image_shape_at_build_catches_a_policy_that_resizes():
    cfg = {"name": "big", "transforms": [{"_target_": "albumentations.RandomResizedCrop", "size": [64, 64]}]}
    augment.build(cfg)  # nothing to compare with yet
    with pytest.raises(PolicyError, match=r"^augmentation: policy 'big' turned"):
        augment.build(cfg, image_shape=(32, 32, 1))


def test_rgb_only_transform_works_on_grayscale():
    policy = augment.build({"name": "fog", "transforms": [{"_target_": "albumentations.ISONoise", "p": 1.0,
                                                           "intensity": [0.5, 0.8]}]})
    gray = textured(1)
    out = policy(gray, np.random.default_rng(0))
    assert out.shape == gray.shape and not np.array_equal(out, gray)


# ---- the ImageDataGenerator vocabulary --------------------------------------------------------------------------

@pytest.mark.parametrize("key,flip", [("horizontal_flip", np.fliplr), ("vertical_flip", np.flipud)])
def test_idg_flips_mirror_exactly_half_the_time(key, flip):
    image = textured(3)
    outs = draws(idg(**{key: True}), image, n=24)
    flipped = [np.array_equal(out, flip(image)) for out in outs]
    assert all(f or np.array_equal(out, image) for f, out in zip(flipped, outs))
    assert 0 < sum(flipped) < len(outs)


def _ramp(width=32, height=8) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return (x * 7 + y).astype(np.uint8)[..., None]  # every pixel distinct


@pytest.mark.parametrize("fill_mode,pad", [("nearest", {"mode": "edge"}), ("reflect", {"mode": "symmetric"}),
                                           ("wrap", {"mode": "wrap"}),
                                           ("constant", {"mode": "constant", "constant_values": 99})])
def test_idg_fill_modes_fill_as_keras_documents(fill_mode, pad):
    # An int shift range moves by whole pixels (as in Keras), so the expected image is exact for each shift.
    image, margin = _ramp(), 12
    padded = np.pad(image, ((0, 0), (margin, margin), (0, 0)), **pad)
    expected = {s: padded[:, margin + s:margin + s + image.shape[1]] for s in range(-margin + 1, margin)}
    policy = idg(width_shift_range=margin, fill_mode=fill_mode, cval=99)
    shifts = []
    for out in draws(policy, image, n=12):
        matches = [s for s, e in expected.items() if np.array_equal(out, e)]
        assert matches, f"{fill_mode}: output matches no shifted, {fill_mode}-filled image"
        shifts.append(matches[0])
    assert max(map(abs, shifts)) >= 5  # a wide border was filled


def _line(size=41, horizontal=True) -> np.ndarray:
    image = np.zeros((size, size, 1), np.uint8)
    image[size // 2] = 255
    return image if horizontal else image.transpose(1, 0, 2).copy()


def _orientation(image: np.ndarray) -> float:
    """Angle of the bright line from horizontal, in degrees, from its intensity-weighted second moments."""
    y, x = np.nonzero(image[..., 0] > 0)
    w = image[y, x, 0].astype(float)
    x, y = x - np.average(x, weights=w), y - np.average(y, weights=w)
    cov = np.cov(np.stack([x, y]), aweights=w)
    return np.degrees(0.5 * np.arctan2(2 * cov[0, 1], cov[0, 0] - cov[1, 1]))


def test_idg_rotation_stays_within_its_range():
    angles = [_orientation(out) for out in draws(idg(rotation_range=20, fill_mode="constant"), _line(), n=40)]
    assert max(map(abs, angles)) <= 20.5
    assert max(map(abs, angles)) > 14 and min(angles) < 0 < max(angles)


@pytest.mark.parametrize("key,horizontal", [("width_shift_range", True), ("height_shift_range", False)])
def test_idg_shift_fraction_moves_the_axis_its_name_says(key, horizontal):
    # A vertical line moves only under a horizontal shift, by at most 25% of 40 = 10 pixels.
    size = 40
    line = _line(size, horizontal=not horizontal)
    axis = 1 if horizontal else 0
    moves = []
    for out in draws(idg(**{key: 0.25}, fill_mode="constant"), line, n=30):
        profile = out[..., 0].astype(float).sum(axis=1 - axis)
        moves.append(np.average(np.arange(size), weights=profile) - size // 2)
    assert max(map(abs, moves)) <= 10.01 and max(map(abs, moves)) > 6
    other = idg(**{"height_shift_range" if horizontal else "width_shift_range": 0.25}, fill_mode="nearest")
    for out in draws(other, line, n=5):
        np.testing.assert_array_equal(out, line)  # the other axis's shift leaves this line where it is


@pytest.mark.parametrize("zoom,area", [([2.0, 2.0], (8 * 8, 9 * 9)), ([0.5, 0.5], (32 * 32, 32 * 32))])
def test_idg_zoom_above_one_shows_a_smaller_image(zoom, area):
    image = np.zeros((32, 32, 1), np.uint8)
    image[8:24, 8:24] = 255
    out = idg(zoom_range=zoom, fill_mode="constant")(image, np.random.default_rng(0))
    assert area[0] <= np.count_nonzero(out > 127) <= area[1]


@pytest.mark.parametrize("params", [(20, 0, 0, 0, 1, 1), (0, 5, -3, 0, 1, 1), (0, 0, 0, 25, 1, 1),
                                    (0, 0, 0, 0, 1.3, 0.8), (35, 3.5, -2.2, 15, 0.7, 1.2)])
@pytest.mark.parametrize("fill_mode", ["nearest", "reflect", "constant"])
def test_idg_warp_matches_keras_apply_affine_transform(params, fill_mode):
    from keras.src.legacy.preprocessing.image import apply_affine_transform

    image = textured(3)
    theta, tx, ty, shear, zx, zy = params
    keras_out = apply_affine_transform(image.astype(np.float64), theta, tx, ty, shear, zx, zy, row_axis=0,
                                       col_axis=1, channel_axis=2, fill_mode=fill_mode, cval=77.0, order=1)
    ours = KerasAffine(fill_mode=fill_mode, cval=77).apply(image, keras_affine_matrix(*params, 32, 32))
    diff = np.abs(np.rint(keras_out) - ours)
    # Bilinear weights: scipy in float, OpenCV in 1/32 steps.
    assert diff.max() <= 2 and diff.mean() < 0.1


def test_idg_brightness_multiplies_by_one_factor_in_range():
    image = np.clip(textured(3), 20, 150)  # x 1.5 stays below 255: no clipping to account for
    factors = []
    for out in draws(idg(brightness_range=[0.5, 1.5]), image, n=12):
        factor = out.astype(float).sum() / image.astype(float).sum()
        assert np.abs(out - image * factor).max() <= 1.5
        factors.append(factor)
    assert 0.5 <= min(factors) < 0.8 and 1.2 < max(factors) <= 1.5


def test_idg_channel_shift_adds_one_intensity_clipped_to_the_image_range():
    image = np.clip(textured(3), 50, 200)
    assert image.min() == 50 and image.max() == 200
    clipped = 0
    for out in draws(idg(channel_shift_range=100), image, n=12):
        assert out.min() >= 50 and out.max() <= 200
        inside = (out > 50) & (out < 200)
        shift = np.median((out.astype(int) - image)[inside])
        assert abs(shift) <= 100
        np.testing.assert_allclose(out, np.clip(image + shift, 50, 200), atol=1)  # same shift on every channel
        clipped += np.count_nonzero((out == 50) | (out == 200)) > np.count_nonzero((image == 50) | (image == 200))
    assert clipped


# ---- errors -----------------------------------------------------------------------------------------------------

def _rotate(**kwargs):
    return {"_target_": "albumentations.Rotate", **kwargs}


ERRORS = [
    ({"transforms": [_rotate(), _rotate(), _rotate(p=1.5)]},
     "augmentation.transforms[2].p: expected a probability in [0, 1], got 1.5"),
    ({"idg": {"rotation_range": -5}}, "augmentation.idg.rotation_range: expected a number >= 0, got -5"),
    ({"transforms": [_rotate(limt=10)]}, "augmentation.transforms[0]: albumentations.Rotate: unexpected argument 'limt'"),
    ({"transforms": [_rotate(), {"_target_": "albumentations.Nope"}]},
     "augmentation.transforms[1]._target_: 'albumentations.Nope' does not exist"),
    ({"idg": {"fill_mode": "mirror"}},
     "augmentation.idg.fill_mode: expected one of nearest|constant|reflect|wrap, got 'mirror'"),
    ({"transforms": [{"_target_": "albumentations.OneOf", "transforms": [_rotate(limit="abc")]}]},
     "augmentation.transforms[0].transforms[0].limit: albumentations.Rotate:"),
    ({"transforms": [{"_target_": "os.system"}]}, "augmentation.transforms[0]._target_:"),
    ({"idg": {"zoom_range": 1.5}}, "augmentation.idg.zoom_range:"),
    ({"idg": {"brightness_range": 0.5}}, "augmentation.idg.brightness_range:"),
    ({"idg": {"rescale": 0.5}}, "augmentation.idg.rescale: not a supported ImageDataGenerator argument"),
    ({"transforms": [{"_target_": "albumentations.CenterCrop"}]},
     "augmentation.transforms[0]: albumentations.CenterCrop: missing required argument 'height'"),
    ({"transforms": [{"_target_": "albumentations.GaussNoise", "std_range": [0.5, 0.1]}]},
     "augmentation.transforms[0].std_range: albumentations.GaussNoise:"),
    ({"transform": []}, "augmentation.transform: unknown key"),
]


@pytest.mark.parametrize("cfg,message", ERRORS, ids=[m.split(":")[0] for _, m in ERRORS])
def test_bad_setting_names_its_key_in_one_line(cfg, message):
    with pytest.raises(PolicyError) as info:
        augment.build({"name": "bad", **cfg})
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text and isinstance(info.value, ValueError)


# ---- preview ----------------------------------------------------------------------------------------------------

def test_preview_grid_shows_the_source_and_n_augmented_images():
    fig = run_figures.preview_grid(textured(1), augment.build(load("idg_classic")), n=5, seed=0)
    assert sum(len(ax.images) for ax in fig.axes) == 6
    shown = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    np.testing.assert_array_equal(shown[0], textured(1)[..., 0])
    assert not any(np.array_equal(img, shown[0]) for img in shown[1:])


@pytest.mark.parametrize("n", [5, 10])
def test_ablation_preview_writes_a_png_of_the_original_and_n_augmented_tiles(n, tmp_path, monkeypatch):
    """write_preview (ablation-preview) on a config composed as the command composes it: its PNG is preview_grid's
    layout of 1 + n tiles (at most 9 a row), a tile drawn in each of the first 1 + n cells and nothing after them.
    Rows and columns are read off the PNG's size: preview_grid's figure is 1.4 in a column and 1.5 in a row plus
    0.4 in for its title, saved at 120 dpi."""
    import math

    import matplotlib.image

    from ablation.cli.compose import compose_app
    from ablation.cli.preview import write_preview

    monkeypatch.setenv("ABLATION_HOME", str(tmp_path / "home"))  # compose_app applies `paths` to the environment
    cfg = compose_app("preview", ["augmentation=rotate"])
    path = write_preview(cfg, tmp_path / "previews", n=n)
    assert path == tmp_path / "previews" / "rotate.png"
    image = matplotlib.image.imread(path)[..., :3]
    height, width = image.shape[:2]
    dpi, columns = 120, min(9, n + 1)
    assert width / (1.4 * dpi) == pytest.approx(columns, abs=0.02)
    assert (height / dpi - 0.4) / 1.5 == pytest.approx(math.ceil((n + 1) / columns), abs=0.02)
    cell_w, cell_h, top = width / columns, 1.5 * dpi, 0.4 * dpi
    drawn = []
    for row in range(math.ceil((n + 1) / columns)):
        for column in range(columns):
            # The middle of the cell's image (its title sits above it): a digit tile is mostly dark there, an empty
            # cell white.
            y0, x0 = int(top + (row + 0.35) * cell_h), int((column + 0.3) * cell_w)
            middle = image[y0:y0 + int(0.4 * cell_h), x0:x0 + int(0.4 * cell_w)]
            drawn.append(float((middle.min(axis=-1) < 0.5).mean()))
    tiles = [share > 0.1 for share in drawn]
    assert tiles == [True] * (n + 1) + [False] * (len(tiles) - n - 1), drawn
    assert all(share == 0 for share in drawn[n + 1:])  # nothing at all in the cells after the last tile
