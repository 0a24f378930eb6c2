"""The generator feeding fit: per-epoch reshuffle from the seed, fresh augmentation on train only."""
import numpy as np
import pytest

from ablation import augment, datasets
from ablation.training.batches import Batches, Draw
from ablation.training.run import make_batches
from conftest import CONF
from helpers import random_images


def _epoch(batches):
    xs, ys = zip(*(batches[i] for i in range(len(batches))))
    batches.on_epoch_end()
    return np.concatenate(xs), np.concatenate(ys)


def test_evaluation_batches_are_untouched_and_in_order():
    x, y = random_images(20, 16, 1, classes=3)
    batches = Batches(x, y, batch_size=6)
    bx, by = _epoch(batches)
    assert len(batches) == 4
    assert bx.dtype == np.uint8
    np.testing.assert_array_equal(bx, x)
    np.testing.assert_array_equal(by, y)
    np.testing.assert_array_equal(_epoch(batches)[0], bx)  # same every epoch


def test_training_batches_reshuffle_every_epoch_from_the_seed():
    x, y = random_images(20, 16, 1, classes=3)
    first = Batches(x, y, batch_size=6, draw=Draw(seed=3))
    e1, e2 = _epoch(first), _epoch(first)
    assert sorted(e1[1].tolist()) == sorted(y.tolist())  # one pass: each image once
    assert not np.array_equal(e1[1], e2[1]) or not np.array_equal(e1[0], e2[0])
    assert not np.array_equal(e1[0], x)
    again = Batches(x, y, batch_size=6, draw=Draw(seed=3))
    np.testing.assert_array_equal(_epoch(again)[0], e1[0])
    other = Batches(x, y, batch_size=6, draw=Draw(seed=4))
    assert not np.array_equal(_epoch(other)[0], e1[0])


def test_extra_steps_draw_more_samples_covering_every_image():
    x, _ = random_images(10, 16, 1, classes=3)
    batches = Batches(x, np.arange(10), batch_size=4, draw=Draw(steps=7))
    bx, by = _epoch(batches)
    assert len(batches) == 7 and len(bx) == 28 and batches.images_per_epoch == 28
    # Whole permutations back to back: every image before any repeats.
    assert sorted(by[:10]) == list(range(10)) and sorted(by[10:20]) == list(range(10))


def test_training_images_are_augmented_afresh_each_epoch():
    x, y = random_images(8, 16, 1, classes=3)
    policy = augment.build({"name": "rot", "transforms": [
        {"_target_": "albumentations.Rotate", "limit": 90, "p": 1.0}]})
    batches = Batches(x, y, batch_size=8, draw=Draw(policy, seed=0))
    e1, e2 = _epoch(batches), _epoch(batches)
    order1, order2 = np.argsort(e1[1], kind="stable"), np.argsort(e2[1], kind="stable")
    # Same underlying images, different augmentations.
    assert not np.allclose(e1[0][order1], e2[0][order2])
    assert not np.allclose(e1[0][order1], x[np.argsort(y, kind="stable")])


def test_run_gives_the_policy_to_training_batches_only(make_cfg):
    cfg = make_cfg("augmentation=rotate", "dataset.train_size=40")
    splits = datasets.load(cfg.dataset)
    policy = augment.build(cfg.augmentation)
    batches = make_batches(cfg, splits, policy)
    assert batches["train"].policy is policy
    for name, split in (("val", splits.val), ("test", splits.test)):
        bx, by = _epoch(batches[name])
        np.testing.assert_array_equal(bx, split.x)
        np.testing.assert_array_equal(by, split.y)
    clean_x, _ = _epoch(batches["train_clean"])
    assert len(clean_x) == min(cfg.trainer.clean_train_size, len(splits.train.y))
    train_rows = {bytes(img) for img in splits.train.x}
    assert all(bytes(img) in train_rows for img in clean_x)


def test_mismatched_lengths_are_refused():
    x, y = random_images(20, 16, 1, classes=3)
    with pytest.raises(ValueError, match="differ in length"):
        Batches(x, y[:-1], batch_size=4)


def test_padding_to_a_device_multiple_weighs_the_padding_zero():
    x = np.arange(7 * 4 * 4, dtype=np.uint8).reshape(7, 4, 4, 1)
    batches = Batches(x, np.arange(7), batch_size=4, pad_to=2)
    xb, yb, wb = batches[1]  # the short batch: 3 images -> 4
    assert xb.shape == (4, 4, 4, 1) and xb.dtype == np.uint8
    assert yb.tolist() == [4, 5, 6, 4]
    assert wb.tolist() == [1.0, 1.0, 1.0, 0.0]
    assert batches[0][2].tolist() == [1.0] * 4


def test_any_epoch_and_batch_can_be_asked_for_in_any_order():
    """The tf.data feed asks for (epoch, index) pairs ahead of the fit loop, in parallel: a batch depends on its
    numbers only, the same as when Keras walks the PyDataset epoch by epoch."""
    from omegaconf import OmegaConf

    policy = augment.build(OmegaConf.load(CONF / "augmentation" / "idg_classic.yaml"))
    x = np.random.default_rng(0).integers(0, 256, (40, 12, 12, 3), dtype=np.uint8)
    walked = Batches(x, np.arange(40), 16, draw=Draw(policy, seed=3))
    expected = {}
    for epoch in range(3):
        for i in range(len(walked)):
            expected[epoch, i] = walked[i]
        walked.on_epoch_end()
    fresh = Batches(x, np.arange(40), 16, draw=Draw(policy, seed=3))
    for epoch, i in [(2, 1), (0, 2), (1, 0), (2, 0), (0, 0), (1, 2)]:
        got = fresh.batch_at(epoch, i)
        assert all(np.array_equal(a, b) for a, b in zip(got, expected[epoch, i])), (epoch, i)
    assert (2, 1) in fresh.ready


@pytest.mark.parametrize("policy_name", ["none", "idg_classic", "rotate"])
def test_batches_come_in_aligned_buffers(policy_name, make_cfg):
    """TensorFlow takes a 64-byte aligned array as a tensor without copying it (backend.fit_input)."""
    from omegaconf import OmegaConf

    x, y = random_images(13, 24, 1, classes=3)
    policy = augment.build(OmegaConf.load(CONF / "augmentation" / f"{policy_name}.yaml"))
    batches = Batches(x, y, batch_size=5, draw=Draw(policy, seed=1))
    for index in range(len(batches)):
        bx, by = batches.batch_at(0, index)
        assert bx.ctypes.data % augment.BATCH_ALIGNMENT == 0
        assert bx.dtype == np.uint8 and bx.shape[1:] == x.shape[1:] and len(bx) == len(by)
    for shape, dtype in [((3, 7, 5, 1), np.uint8), ((2, 3), np.float32), ((1, 1), np.uint8)]:
        empty = augment.empty_batch(shape, dtype)
        assert empty.shape == shape and empty.dtype == dtype and empty.ctypes.data % augment.BATCH_ALIGNMENT == 0


def test_unaugmented_batches_keep_their_images_and_order():
    x, y = random_images(11, 16, 1, classes=3)
    batches = Batches(x, y, batch_size=4, draw=Draw(seed=2))
    order = batches._epoch_order(0)
    bx, by = batches.batch_at(0, 1)
    np.testing.assert_array_equal(bx, x[order[4:8]])
    np.testing.assert_array_equal(by, y[order[4:8]])
