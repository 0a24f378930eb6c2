"""The batch path of ImageDataGenerator-vocabulary policies: used where it applies, and the same distributions as
the per-image albumentations path."""
import numpy as np
import pytest
from omegaconf import OmegaConf

from ablation import augment
from ablation.fastpath import BatchPath
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
    rng = np.random.default_rng(0)
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
