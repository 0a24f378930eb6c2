"""The batch path of ImageDataGenerator-vocabulary policies: used where it applies, and the same distributions as
the per-image albumentations path."""
import numpy as np
import pytest
from omegaconf import OmegaConf

from ablation import augment
from ablation.augment.fastpath import BatchPath
from conftest import CONF


def _policy(name):
    return augment.build(OmegaConf.load(CONF / "augmentation" / f"{name}.yaml"))


@pytest.mark.parametrize("name, expected", [("idg_classic", True), ("hflip", True), ("rotate", False),
                                            ("brightness_contrast", False)])
def test_batch_path_only_for_the_idg_vocabulary(name, expected):
    policy = _policy(name)
    assert (BatchPath.of(policy._compose((16, 16))) is not None) == expected


def _per_image(policy, images, rng):
    compose = policy._compose(images.shape[1:3])
    seed = int(rng.integers(2**63))
    import random

    compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return np.stack([compose(image=im)["image"].reshape(im.shape) for im in images])


@pytest.mark.parametrize("channels", [1, 3])
def test_batch_path_matches_the_per_image_distribution(channels):
    policy = _policy("idg_classic")
    image = np.zeros((15, 21, channels), np.uint8)
    image[2:7, 3:9] = 255  # an off-centre block: flips, shifts and rotations all move its mass
    images = np.repeat(image[None], 1500, axis=0)
    fast = policy.augment_batch(images, np.random.default_rng(1))
    slow = _per_image(policy, images, np.random.default_rng(2))
    assert fast.shape == images.shape and fast.dtype == np.uint8
    # Same distribution: the mean image over many draws agrees to within sampling noise...
    assert np.abs(fast.mean(0) - slow.mean(0)).max() < 12
    # ...and it is far from the un-augmented image (the transforms did act).
    assert np.abs(fast.mean(0) - image).max() > 100
    # Left/right balance of the flipped block, both paths.
    half = image.shape[1] // 2
    for out in (fast, slow):
        share_left = out[:, :, :half].sum() / out.sum()
        assert 0.4 < share_left < 0.6
    assert (policy.augment_batch(images[:8], np.random.default_rng(5)) ==
            policy.augment_batch(images[:8], np.random.default_rng(5))).all()


@pytest.mark.parametrize("fill_mode", ["nearest", "constant", "reflect"])
@pytest.mark.parametrize("channels", [1, 3])
def test_one_composed_warp_equals_warp_then_flip(fill_mode, channels):
    import albumentations as A

    affine = augment.KerasAffine(rotation_range=30, zoom_range=0.2, width_shift_range=0.1, fill_mode=fill_mode,
                                 cval=7)
    path = BatchPath.of(A.Compose([affine, A.HorizontalFlip(p=1.0)]))
    assert [kind for kind, _ in path.steps] == ["geometric"]  # one warp per image
    images = np.random.default_rng(0).integers(0, 256, (6, 13, 17, channels), dtype=np.uint8)
    got = path(images, np.random.default_rng(7))
    # The same draws, replayed: which images the warp applies to (p=1: all), their matrices, then the flips.
    replay = np.random.default_rng(7)
    replay.random(len(images))
    matrices = affine.sample_matrices(replay, len(images), 13, 17)[:, :2]
    expected = np.stack([affine.apply(im, m).reshape(im.shape)[:, ::-1] for im, m in zip(images, matrices)])
    assert got.shape == images.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_matrices_drawn_at_once_follow_the_one_at_a_time_formula():
    affine = augment.KerasAffine(rotation_range=40, shear_range=10, zoom_range=[0.8, 1.3], width_shift_range=3,
                                 height_shift_range=0.2)
    many = affine.sample_matrices(np.random.default_rng(1), 200, 20, 30)
    assert many.shape == (200, 3, 3) and np.allclose(many[:, 2], [0, 0, 1])
    # Parameters recovered from each matrix's linear part stay in range: |det| = zx * zy * cos(shear).
    det = np.abs(np.linalg.det(many[:, :2, :2]))
    assert det.min() >= 0.8 * 0.8 * np.cos(np.deg2rad(10)) - 1e-9 and det.max() <= 1.3 * 1.3 + 1e-9
    one = augment.keras_affine_matrix(25.0, 2.0, -3.0, 5.0, 1.1, 0.9, 20, 30)
    assert np.allclose(augment.keras_affine_matrices(*(np.array([v]) for v in (25.0, 2.0, -3.0, 5.0, 1.1, 0.9)),
                                                     20, 30)[0, :2], one)
