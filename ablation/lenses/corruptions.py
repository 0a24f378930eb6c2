"""Robustness to common corruptions (Hendrycks and Dietterich, ICLR 2019: CIFAR-10-C / ImageNet-C): a fixed,
seeded suite of nine corruptions at five severities, built from albumentations' own transforms, each at one fixed
strength per severity. The strengths follow CIFAR-10-C's table where albumentations has the same operation
(Gaussian noise std, shot noise photons, impulse amount, contrast factor); brightness shifts, JPEG qualities and
pixelate scales are spaced further apart so that each severity changes a 32-px image more than the one below;
blur sizes are in pixels of 32-px images and scale with the image.

Each run's best model is scored on its test split under every (corruption, severity) of `lenses.corruptions` x
`lenses.severities`: metrics robust/<corruption>/<severity>/accuracy and robust/mean_accuracy. The same images get
the same corruption for a seed: the draw is default_rng([seed, corruption, severity])."""
from __future__ import annotations

import random

import albumentations as A
import numpy as np

SEVERITIES = (1, 2, 3, 4, 5)
# Which transform families a policy must contain to be "trained on" a corruption (Mintun et al., 2021: such
# overlap inflates robustness gains); matched against the policy's transform names.
FAMILIES = {
    "gaussian_noise": ("GaussNoise", "ISONoise", "MultiplicativeNoise", "ShotNoise", "SaltAndPepper"),
    "shot_noise": ("GaussNoise", "ISONoise", "MultiplicativeNoise", "ShotNoise", "SaltAndPepper"),
    "impulse_noise": ("SaltAndPepper", "PixelDropout", "GaussNoise", "ShotNoise"),
    "gaussian_blur": ("GaussianBlur", "Defocus", "Blur", "MedianBlur", "GlassBlur", "AdvancedBlur", "ZoomBlur"),
    "motion_blur": ("MotionBlur", "Blur", "GaussianBlur", "Defocus", "AdvancedBlur", "ZoomBlur"),
    "contrast": ("RandomBrightnessContrast", "ColorJitter", "RandomGamma", "CLAHE", "Equalize", "RandAugment"),
    "brightness": ("RandomBrightnessContrast", "ColorJitter", "RandomGamma", "KerasChannelShift",
                   "MultiplicativeNoise", "RandAugment"),
    "jpeg_compression": ("ImageCompression",),
    "pixelate": ("Downscale",),
}
CORRUPTIONS = tuple(FAMILIES)


def transform(name: str, severity: int, size: int) -> A.BasicTransform:
    """The corruption `name` at `severity` (1-5) for images of `size` px, always applied."""
    if name not in FAMILIES:
        raise ValueError(f"unknown corruption {name!r}; expected one of {', '.join(CORRUPTIONS)}")
    i = severity - 1
    scale = max(size / 32, 1.0)  # blur kernels grow with the image
    if name == "gaussian_noise":
        std = (0.04, 0.06, 0.08, 0.09, 0.10)[i]
        return A.GaussNoise(std_range=(std, std), p=1.0)
    if name == "shot_noise":  # Poisson noise of 1/scale photons per unit of intensity
        photons = (500, 250, 100, 75, 50)[i]
        return A.ShotNoise(scale_range=(1 / photons, 1 / photons), p=1.0)
    if name == "impulse_noise":
        amount = (0.01, 0.02, 0.03, 0.05, 0.07)[i]
        return A.SaltAndPepper(amount=(amount, amount), p=1.0)
    if name == "gaussian_blur":
        sigma = (0.4, 0.6, 0.8, 1.0, 1.5)[i] * scale
        return A.GaussianBlur(sigma_limit=(sigma, sigma), blur_limit=0, p=1.0)
    if name == "motion_blur":
        kernel = int(round((5, 7, 9, 11, 15)[i] * scale)) | 1
        # One direction (the diagonal), so a higher severity is only a longer streak.
        return A.MotionBlur(blur_limit=(kernel, kernel), allow_shifted=False, angle_range=(45, 45),
                            direction_range=(0, 0), p=1.0)
    if name == "contrast":
        factor = (0.75, 0.5, 0.4, 0.3, 0.15)[i]
        return A.RandomBrightnessContrast(brightness_limit=(0, 0), contrast_limit=(factor - 1, factor - 1), p=1.0)
    if name == "brightness":
        shift = (0.1, 0.2, 0.3, 0.4, 0.5)[i]
        return A.RandomBrightnessContrast(brightness_limit=(shift, shift), contrast_limit=(0, 0), p=1.0)
    if name == "jpeg_compression":
        quality = (80, 60, 40, 25, 12)[i]
        return A.ImageCompression(quality_range=(quality, quality), p=1.0)
    # pixelate: down to a fraction of the side with area averaging, back up with nearest neighbours.
    small = max(1, round(size * (0.5, 0.4, 0.3, 0.25, 0.2)[i]))
    return A.Sequential([A.Resize(small, small, interpolation=3, p=1.0),
                         A.Resize(size, size, interpolation=0, p=1.0)], p=1.0)


def corrupt(images: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """uint8 (B, H, W, C) -> the same images corrupted; the same for the same seed."""
    compose = A.Compose([transform(name, severity, images.shape[1])])
    draw = int(np.random.default_rng([seed, CORRUPTIONS.index(name), severity]).integers(2**63))
    compose.set_random_state(np.random.default_rng(draw), random.Random(draw))
    out = np.empty_like(images)
    for k, image in enumerate(images):
        out[k] = compose(image=image)["image"].reshape(image.shape)
    return out


def trained_on(name: str, transform_names: list[str]) -> bool:
    """True when the policy holds a transform of the corruption's family (noise trained, noise tested)."""
    return any(t in FAMILIES[name] for t in transform_names)


def evaluate(predict, images: np.ndarray, labels: np.ndarray, corruptions, severities, seed: int,
             limit: int | None = None) -> dict[str, float]:
    """robust/<corruption>/<severity>/accuracy for each pair, and robust/mean_accuracy over them all; predict
    maps uint8 images to their predicted classes. limit: score the first `limit` test images only."""
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    images = np.ascontiguousarray(images)
    out = {}
    for name in corruptions:
        predicted = predict(np.concatenate([corrupt(images, name, s, seed) for s in severities]))
        for k, severity in enumerate(severities):
            hits = predicted[k * len(images):(k + 1) * len(images)] == labels
            out[f"robust/{name}/{severity}/accuracy"] = float(np.mean(hits))
    if out:
        out["robust/mean_accuracy"] = float(np.mean(list(out.values())))
    return out
