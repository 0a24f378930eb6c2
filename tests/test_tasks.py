"""Image-to-image tasks (ablation/training/tasks.py): targets and masks of the batches, paired augmentation, the conv
autoencoder, config errors, and real tiny reconstruct and inpaint runs recorded in MLflow and reported."""
import math
import re

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from PIL import Image

from ablation import augment
from ablation.report import build as report
from ablation.training import config, models, tasks
from ablation.training.batches import Batches, Draw
from ablation.training.config import ConfigError, user_error
from ablation.training.plan import plan
from ablation.training.run import run
from conftest import CONF
from helpers import random_images

AUTOENCODER = ["model=conv_autoencoder"]
# Few images and epochs: each run takes seconds.
TINY_DIGITS = ["dataset.train_size=48", "trainer.clean_train_size=16"]
TINY_SHAPES = ["dataset=shapes", "dataset.n_train=48", "dataset.n_val=32", "dataset.n_test=32",
               "trainer.clean_train_size=16"]
# A fixed region off the vertical axis: a horizontal flip moves it to the other side.
LEFT_REGION = ["task.center_y=0.5", "task.center_x=0.25", "task.height=0.5", "task.width=0.25"]
FLIP_AND_BRIGHTEN = [{"_target_": "albumentations.HorizontalFlip", "p": 1.0},
                     {"_target_": "albumentations.RandomBrightnessContrast", "brightness_limit": [0.2, 0.2],
                      "contrast_limit": [0.0, 0.0], "p": 1.0}]


def _history(client, run_id, key):
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


# --------------------------------------------------------------------------------------------------------------
# Loss, metrics, model

def test_psnr_mae_and_mse_are_per_image():
    y_true = np.zeros((2, 4, 4, 1), np.float32)
    y_pred = np.stack([np.full((4, 4, 1), 0.1), np.full((4, 4, 1), 0.01)]).astype(np.float32)
    np.testing.assert_allclose(np.asarray(tasks.psnr(y_true, y_pred)), [20.0, 40.0], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(tasks.mae(y_true, y_pred)), [0.1, 0.01], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(tasks.mse(y_true, y_pred)), [0.01, 0.0001], rtol=1e-5)
    assert float(np.asarray(tasks.psnr(y_true, y_true))[0]) == pytest.approx(100.0)  # capped, not infinite


@pytest.mark.parametrize("channels", [1, 3])
def test_conv_autoencoder_outputs_an_image_in_0_1_with_the_input_channels(channels):
    cfg = OmegaConf.load(CONF / "model" / "conv_autoencoder.yaml")
    model = models.build(cfg, (32, 32, channels), 10, task="reconstruct")
    assert model.output_shape == (None, 32, 32, channels)
    assert model.layers[-1].layers[-1].dtype_policy.compute_dtype == "float32"  # the head
    out = np.asarray(model(random_images(3, 32, channels, high=200), training=False))
    assert out.shape == (3, 32, 32, channels) and np.all((out >= 0) & (out <= 1))


def test_classifier_models_refuse_image_tasks():
    cfg = OmegaConf.load(CONF / "model" / "small_cnn.yaml")
    with pytest.raises(ConfigError, match=r"^model\.name: small_cnn outputs class probabilities; task inpaint"):
        models.build(cfg, (32, 32, 1), 10, task="inpaint")


# --------------------------------------------------------------------------------------------------------------
# Batches: targets and masks

def test_reconstruct_target_is_the_augmented_input(make_cfg):
    task = tasks.build(make_cfg("task=reconstruct", *AUTOENCODER))
    policy = augment.build({"name": "flip", "transforms": [FLIP_AND_BRIGHTEN[0]]})
    x = random_images(6, 16, high=200)
    batches = Batches(x, np.zeros(len(x)), 4, draw=Draw(policy), task=task)
    inputs, targets = batches[0]
    np.testing.assert_array_equal(inputs, x[batches._order[:4], :, ::-1])  # flipped
    assert targets.dtype == np.float32
    np.testing.assert_allclose(targets, inputs / 255, atol=1e-6)
    # Evaluation batches: the images as they are, and themselves as targets.
    inputs, targets = Batches(x, np.zeros(len(x)), 4, task=task)[1]
    np.testing.assert_array_equal(inputs, x[4:])
    np.testing.assert_allclose(targets, x[4:] / 255, atol=1e-6)


def test_inpaint_input_is_the_target_outside_the_mask_and_filled_inside(make_cfg):
    task = tasks.build(make_cfg("task=inpaint", *AUTOENCODER, "task.fill=255"))
    x = random_images(10, 16, high=200)
    val = Batches(x, np.zeros(len(x)), 4, task=task)
    inputs, targets = val[1]
    masks = task.masks(4, x.shape[1:3], np.arange(4, 8), None)
    assert masks.any(axis=(1, 2)).all() and not masks.all(axis=(1, 2)).any()
    np.testing.assert_allclose(targets, x[4:8] / 255, atol=1e-6)  # the clean image, never augmented
    inside = masks.astype(bool)
    assert np.all(inputs[inside] == 255)
    np.testing.assert_array_equal(inputs[~inside], x[4:8][~inside])
    # Evaluation masks are fixed per image: the same every epoch.
    val.on_epoch_end()
    np.testing.assert_array_equal(val[1][0], inputs)


def test_inpaint_training_masks_are_drawn_afresh_each_epoch(make_cfg):
    task = tasks.build(make_cfg("task=inpaint", *AUTOENCODER))
    x = np.full((8, 16, 16, 1), 200, np.uint8)
    train = Batches(x, np.zeros(8), 8, draw=Draw(seed=0), task=task)
    first = train[0][0] == 0
    train.on_epoch_end()
    assert not np.array_equal(first, train[0][0] == 0)
    assert first.any()


def test_spatial_transforms_move_mask_and_target_alike_photometric_ones_change_the_input_only(make_cfg):
    task = tasks.build(make_cfg("task=inpaint", *AUTOENCODER, *LEFT_REGION))
    policy = augment.build({"name": "flip_brighten", "transforms": FLIP_AND_BRIGHTEN})
    spatial, photometric = policy.split()
    assert spatial.transform_names == ["HorizontalFlip"]
    assert photometric.transform_names == ["RandomBrightnessContrast"]
    x = random_images(4, 16, high=200)
    unmoved = task.masks(4, (16, 16), np.arange(4), None)
    assert unmoved[:, :, :8].any() and not unmoved[:, :, 8:].any()  # the region lies on the left half

    inputs, targets, masks = task.pairs(x, np.arange(4), policy, np.random.default_rng(0))
    np.testing.assert_array_equal(targets, x[:, :, ::-1])  # flipped, not brightened
    np.testing.assert_array_equal(masks, unmoved[:, :, ::-1])  # flipped with it: now on the right
    inside = masks.astype(bool)
    assert np.all(inputs[inside] == 0)
    # Outside the mask the input is the flipped image brightened (+0.2 of the range: +51, clipped).
    brightened = np.clip(targets.astype(int) + 51, 0, 255)
    np.testing.assert_allclose(inputs[~inside].astype(int), brightened[~inside], atol=1)


@pytest.mark.parametrize("dropout", [
    {"_target_": "albumentations.CoarseDropout", "num_holes_range": [3, 3], "hole_height_range": [4, 4],
     "hole_width_range": [4, 4], "fill": 255, "p": 1.0},
    {"_target_": "albumentations.PixelDropout", "dropout_prob": 0.3, "drop_value": 255, "p": 1.0},
])
def test_dropouts_blank_the_input_only_never_the_target(make_cfg, dropout):
    """CoarseDropout and its kin are DualTransforms but move nothing: holes are an input corruption, so the
    target stays the clean (flipped) image and the mask is the task's own."""
    task = tasks.build(make_cfg("task=inpaint", *AUTOENCODER, *LEFT_REGION))
    policy = augment.build({"name": "flip_holes", "transforms": [FLIP_AND_BRIGHTEN[0], dropout]})
    spatial, photometric = policy.split()
    assert spatial.transform_names == ["HorizontalFlip"]
    assert photometric.transform_names == [dropout["_target_"].split(".")[1]]
    x = random_images(4, 16, high=200)  # values below 200: a 255 can only be a hole
    inputs, targets, masks = task.pairs(x, np.arange(4), policy, np.random.default_rng(0))
    np.testing.assert_array_equal(targets, x[:, :, ::-1])
    np.testing.assert_array_equal(masks, task.masks(4, (16, 16), np.arange(4), None)[:, :, ::-1])
    holes = np.all(inputs == 255, axis=-1) & (masks == 0)
    assert holes.any()  # the input has holes outside the task's region; elsewhere it is the target
    np.testing.assert_array_equal(inputs[~holes & (masks == 0)], targets[~holes & (masks == 0)])


def test_keras_affine_transforms_masks_as_it_transforms_images(make_cfg):
    """Whole-pixel shifts (ImageDataGenerator's integer ranges): an image that is the mask must move exactly
    as the mask does, so target and mask stay aligned."""
    task = tasks.build(make_cfg("task=inpaint", *AUTOENCODER, *LEFT_REGION))
    policy = augment.build({"name": "shift", "idg": {"width_shift_range": 4, "height_shift_range": 3,
                                                     "fill_mode": "constant", "cval": 0}})
    assert policy.transform_names == ["KerasAffine"]
    masks = task.masks(8, (16, 16), np.arange(8), None)
    as_images = np.repeat(masks[..., None] * 255, 3, axis=-1).astype(np.uint8)
    _, targets, moved = task.pairs(as_images, np.arange(8), policy, np.random.default_rng(1))
    assert not np.array_equal(moved, masks)  # something moved
    np.testing.assert_array_equal(targets[..., 0], moved * 255)


def test_a_mask_image_file_masks_its_white_pixels_resized_to_the_images(make_cfg, tmp_path):
    file = tmp_path / "nose.png"
    drawing = np.zeros((64, 64), np.uint8)
    drawing[32:48, 8:24] = 255  # rows 8..11, columns 2..5 at 16 px
    Image.fromarray(drawing).save(file)
    cfg = make_cfg("task=inpaint", *AUTOENCODER, f"task.mask={file}")
    config.validate(cfg)
    task = tasks.build(cfg)
    x = np.full((5, 16, 16, 3), 100, np.uint8)
    inputs, targets = Batches(x, np.zeros(5), 5, task=task)[0]
    expected = np.zeros((16, 16), bool)
    expected[8:12, 2:6] = True
    for image in inputs:
        np.testing.assert_array_equal(image[..., 0] == 0, expected)
    np.testing.assert_allclose(targets, x / 255, atol=1e-6)


# --------------------------------------------------------------------------------------------------------------
# Config errors: one line naming the key, before any data is read

def _not_an_image(tmp_path):
    path = tmp_path / "mask.png"
    path.write_bytes(b"not a png")
    return str(path)


BAD = [
    (["task.name=segment"], r"task\.name: expected one of classify\|reconstruct\|inpaint \(task=NAME picks .*got 'segment'"),
    (["+task.mask=ellipse"], r"task\.mask: a setting of task=inpaint; task classify has none"),
    (["task=reconstruct"], r"model\.name: small_cnn outputs class probabilities; task reconstruct needs an "
                           r"image-to-image model"),
    (["task=reconstruct", *AUTOENCODER, "trainer.monitor=val_accuracy"],
     r"trainer\.monitor: task reconstruct has no accuracy; expected val_loss"),
    (["task=reconstruct", *AUTOENCODER, "augmentation=hflip", "augmentation.placement=device"],
     r"augmentation\.placement: device augments inside the model"),
    (["task=reconstruct", *AUTOENCODER, "dataset.image_size=20"],
     r"dataset\.image_size: model conv_autoencoder halves the image 3 times .* multiple of 8, got 20x20"),
    (["task=inpaint", *AUTOENCODER, "augmentation=hflip", "augmentation.placement=offline"],
     r"augmentation\.placement: offline writes photometric changes"),
    (["task=inpaint", *AUTOENCODER, "task.mask=hexagon"],
     r"task\.mask: expected rectangle\|ellipse or the path of a mask image; no file 'hexagon'"),
    (["task=inpaint", *AUTOENCODER, "task.mask={bad_file}"], r"task\.mask: .*mask\.png: cannot decode"),
    (["task=inpaint", *AUTOENCODER, "task.height=1.5"], r"task\.height: expected a fraction of the image in"),
    (["task=inpaint", *AUTOENCODER, "task.center_x=[0.8,0.2]"], r"task\.center_x: .*with low <= high"),
    (["task=inpaint", *AUTOENCODER, "task.fill=300"], r"task\.fill: expected .* in \[0, 255\], got 300"),
    (["task=inpaint", *AUTOENCODER, "+task.colour=red"], r"task\.colour: unknown key"),
    (["task=inpaint", *AUTOENCODER, "~task.width"], r"task\.width: required for a rectangle mask"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_task_settings_are_one_line_errors(make_cfg, tmp_path, overrides, message):
    cfg = make_cfg(*[o.format(bad_file=_not_an_image(tmp_path)) for o in overrides])
    with pytest.raises(ConfigError) as info:
        plan(cfg)
    assert user_error(info.value)
    assert "\n" not in str(info.value)
    assert re.match(message, str(info.value)), str(info.value)


def test_a_container_mixing_spatial_and_photometric_transforms_is_an_error_for_inpaint(make_cfg):
    cfg = make_cfg("task=inpaint", *AUTOENCODER)
    cfg.augmentation.transforms = [{"_target_": "albumentations.OneOf", "transforms": FLIP_AND_BRIGHTEN}]
    with pytest.raises(augment.PolicyError, match=r"^augmentation\.transforms\[0\]: albumentations\.OneOf mixes "
                                                  r"spatial and photometric transforms"):
        plan(cfg)
    cfg.task = {"name": "reconstruct"}  # the whole policy goes to input and target alike: nothing to split
    plan(cfg)


# --------------------------------------------------------------------------------------------------------------
# Whole runs

def test_reconstruct_runs_record_loss_gap_and_image_metrics_and_report_without_accuracy(make_cfg, tmp_path):
    results = {}
    for policy in ("none", "hflip"):
        cfg = make_cfg("task=reconstruct", *AUTOENCODER, *TINY_DIGITS, f"augmentation={policy}",
                       "experiment_name=recon", f"paths.reports={tmp_path}/reports")
        results[policy] = run(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    metrics = results["hflip"]
    mlrun = client.get_run(metrics["run_id"])
    assert mlrun.info.status == "FINISHED" and mlrun.data.tags["task"] == "reconstruct"
    for key in ("gap/loss", "val/loss", "val/mae", "val/psnr", "train_clean/psnr", "train/mae"):
        assert sorted(_history(client, mlrun.info.run_id, key)) == [1, 2], key
    assert not [k for k in mlrun.data.metrics if "accuracy" in k]
    val, clean, gap = (_history(client, mlrun.info.run_id, k) for k in ("val/loss", "train_clean/loss", "gap/loss"))
    for epoch in (1, 2):
        assert gap[epoch] == pytest.approx(val[epoch] - clean[epoch], abs=1e-6)
    assert {"test/loss", "test/mae", "test/psnr", "best/gap_loss", "best/val_psnr"} <= set(metrics)
    assert 5 < metrics["test/psnr"] < 60 and 0 < metrics["test/mae"] < 0.5

    out = report.build(cfg)
    table = pd.read_csv(out / "summary.csv")
    assert list(table.columns[:len(report.COLUMNS)]) == report.COLUMNS
    table = table.set_index("augmentation")
    assert set(table.index) == {"none", "hflip"} and set(table["task"]) == {"reconstruct"}
    assert table["test_accuracy_mean"].isna().all() and table["delta_test_accuracy"].isna().all()
    assert table.loc["hflip", "test_psnr_mean"] == pytest.approx(metrics["test/psnr"])
    assert table.loc["hflip", "gap_loss_mean"] == pytest.approx(metrics["best/gap_loss"])
    assert table.loc["hflip", "delta_test_psnr"] == pytest.approx(metrics["test/psnr"] - results["none"]["test/psnr"])
    assert table.loc["hflip", "verdict"] in report.VERDICTS
    assert math.isnan(table.loc["hflip", "delta_gap_ci_low"])  # one seed: no interval
    assert "psnr" in (out / "report.html").read_text()


def test_inpaint_run_end_to_end_on_rgb_shapes(make_cfg):
    cfg = make_cfg("task=inpaint", *AUTOENCODER, *TINY_SHAPES, "augmentation=idg_classic", "task.mask=ellipse")
    metrics = run(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    mlrun = client.get_run(metrics["run_id"])
    assert mlrun.info.status == "FINISHED" and mlrun.data.tags["task"] == "inpaint"
    assert mlrun.data.params["task.mask"] == "ellipse"
    assert sorted(_history(client, mlrun.info.run_id, "val/psnr")) == [1, 2]
    assert "best/gap_accuracy" not in mlrun.data.metrics and "test/psnr" in mlrun.data.metrics
    assert np.isfinite(metrics["best/gap_loss"])


def test_learning_curves_show_psnr_for_image_tasks():
    import pandas as pd

    from ablation.training import figures as run_figures

    history = pd.DataFrame({"epoch": [1, 2], "train/loss": [0.1, 0.05], "train_clean/loss": [0.09, 0.04],
                            "val/loss": [0.1, 0.08], "train_clean/psnr": [12.0, 15.0], "val/psnr": [11.0, 13.0]})
    fig = run_figures.learning_curves(history, best_epoch=2)
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "psnr"]
    assert len(fig.axes[1].get_lines()) >= 2  # clean-train and validation PSNR drawn
