"""A small class-conditional DCGAN, in the shape of keras.io's conditional GAN example (a generator from noise and
a one-hot class to an image, a discriminator from an image and its class to one logit), written against the
Keras 3 API only, so TensorFlow and JAX train it alike. There is no backend-specific train_step: the
discriminator and the combined model (generator -> frozen discriminator) are two compiled Keras models, trained
in turn with train_on_batch, the classic Keras GAN loop.

    train(images, labels, num_classes, settings, seed, on_epoch) -> Generator, its losses per epoch
    Generator.sample(per_class, seed) -> (uint8 images, labels), per_class of each class
    spread(images, labels, real_images, real_labels) -> per class, how much the samples vary against the real ones

A generator that diverges (a non-finite loss) or collapses (a class's samples nearly one image) raises
GeneratorFailed, so no run trains its classifier on noise."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
from keras import layers

from ablation.core.errors import GeneratorFailed

# The random draws of training (shuffles, noise) and of sampling: default_rng([seed, DRAW]), fixed per seed.
TRAIN_DRAW, SAMPLE_DRAW = 2_000_003, 2_000_029
# Real images are shown to the discriminator as 0.9, not 1 (one-sided label smoothing, Salimans et al. 2016):
# a discriminator that is never fully sure keeps giving the generator gradients.
REAL_TARGET = 0.9
# A class whose samples vary less than this fraction of its real images' variation has collapsed to one image
# (a generator that ignores its noise); the worst class of the default generators measured 0.47-0.71 on digits
# and shapes (docs/generative.md).
COLLAPSE_SPREAD = 0.05
# Images per generator call when sampling: one traced shape for every call.
SAMPLE_CHUNK = 256
# The generator upsamples twice (x2, x2) from a quarter of the image: both sides must divide by this.
SIDE_MULTIPLE = 4


@dataclass(frozen=True)
class Settings:
    epochs: int
    batch_size: int = 32
    latent_dim: int = 64
    width: int = 32               # filters of the first layers; the keras.io example's 128 is slow on CPUs
    learning_rate: float = 2e-4   # Adam, beta_1 0.5 (Radford et al. 2016), for both models


@dataclass
class Generator:
    model: keras.Model
    num_classes: int
    latent_dim: int
    losses: list[dict] = field(default_factory=list)  # per epoch: {"epoch", "d_loss", "g_loss"}
    train_s: float = 0.0

    def sample(self, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """per_class images of every class, class by class, as uint8; the same for the same seed."""
        rng = np.random.default_rng([seed, SAMPLE_DRAW])
        labels = np.repeat(np.arange(self.num_classes), per_class)
        noise = rng.normal(size=(len(labels), self.latent_dim)).astype("float32")
        onehot = np.eye(self.num_classes, dtype="float32")[labels]
        out = []
        for start in range(0, len(labels), SAMPLE_CHUNK):
            z, c = noise[start:start + SAMPLE_CHUNK], onehot[start:start + SAMPLE_CHUNK]
            pad = SAMPLE_CHUNK - len(z)
            if pad:
                z, c = np.pad(z, ((0, pad), (0, 0))), np.pad(c, ((0, pad), (0, 0)))
            out.append(keras.ops.convert_to_numpy(self.model.predict_on_batch([z, c]))[:SAMPLE_CHUNK - pad])
        images = np.concatenate(out)
        if not np.isfinite(images).all():
            raise GeneratorFailed("augmentation.synthetic: the generator outputs NaN; lower "
                                  "augmentation.synthetic.learning_rate")
        return to_uint8(images), labels


def to_uint8(images: np.ndarray) -> np.ndarray:
    """The generator's tanh output in [-1, 1] -> uint8 pixels."""
    return np.clip(np.rint((images + 1) * 127.5), 0, 255).astype(np.uint8)


def from_uint8(images: np.ndarray) -> np.ndarray:
    return (np.asarray(images, np.float32) / 127.5 - 1).astype("float32")


def build(image_shape: tuple[int, int, int], num_classes: int, settings: Settings):
    """(generator, discriminator, combined): the discriminator compiled on its own, the combined model compiled
    with the discriminator frozen, so its train_on_batch moves the generator only."""
    height, width, channels = image_shape
    w = settings.width
    noise, label = keras.Input((settings.latent_dim,), name="noise"), keras.Input((num_classes,), name="label")
    x = layers.Concatenate()([noise, label])
    x = layers.Dense(height // 4 * (width // 4) * 2 * w)(x)
    x = layers.LeakyReLU(0.2)(x)
    x = layers.Reshape((height // 4, width // 4, 2 * w))(x)
    for filters in (2 * w, w):
        x = layers.Conv2DTranspose(filters, 4, strides=2, padding="same")(x)
        x = layers.LeakyReLU(0.2)(x)
    image = layers.Conv2D(channels, 5, padding="same", activation="tanh")(x)
    generator = keras.Model([noise, label], image, name="generator")

    shown, its_label = keras.Input(image_shape, name="image"), keras.Input((num_classes,), name="label")
    # The class as constant planes beside the image's channels, as in the keras.io example.
    planes = layers.UpSampling2D((height, width))(layers.Reshape((1, 1, num_classes))(its_label))
    x = layers.Concatenate()([shown, planes])
    for filters in (w, 2 * w):
        x = layers.Conv2D(filters, 3, strides=2, padding="same")(x)
        x = layers.LeakyReLU(0.2)(x)
    # Flatten, not the example's global max pooling: where a stroke is tells a class apart on small images.
    logit = layers.Dense(1)(layers.Flatten()(x))
    discriminator = keras.Model([shown, its_label], logit, name="discriminator")

    def optimizer():
        return keras.optimizers.Adam(settings.learning_rate, beta_1=0.5)

    loss = keras.losses.BinaryCrossentropy(from_logits=True)
    discriminator.compile(optimizer=optimizer(), loss=loss)
    discriminator.trainable = False
    combined = keras.Model([noise, label], discriminator([generator([noise, label]), label]), name="combined")
    combined.compile(optimizer=optimizer(), loss=loss)
    return generator, discriminator, combined


def train(images: np.ndarray, labels: np.ndarray, num_classes: int, settings: Settings, seed: int,
          on_epoch: Callable[[dict], None] | None = None) -> Generator:
    """Train on these images (uint8, N x H x W x C) and labels; on_epoch gets each epoch's losses as it ends.
    Raises GeneratorFailed at the first epoch whose losses are not finite."""
    started = time.perf_counter()
    keras.utils.set_random_seed(seed)  # the same initial weights for the same seed
    generator, discriminator, combined = build(tuple(images.shape[1:]), num_classes, settings)
    rng = np.random.default_rng([seed, TRAIN_DRAW])
    x, onehot = from_uint8(images), np.eye(num_classes, dtype="float32")[np.asarray(labels)]
    # Full batches only: one traced shape per model (a short last batch would compile the steps again).
    batch = min(settings.batch_size, len(x))
    targets = np.concatenate([np.full((batch, 1), REAL_TARGET), np.zeros((batch, 1))]).astype("float32")
    fooled = np.ones((batch, 1), "float32")
    result = Generator(generator, num_classes, settings.latent_dim)
    for epoch in range(settings.epochs):
        order = rng.permutation(len(x))
        d_losses, g_losses = [], []
        for start in range(0, len(x) - batch + 1, batch):
            pick = order[start:start + batch]
            real, classes = x[pick], onehot[pick]
            fake = generator.predict_on_batch([rng.normal(size=(batch, settings.latent_dim)).astype("float32"),
                                               classes])
            # Flipped on for its own step only: the combined model must leave the discriminator as it is.
            discriminator.trainable = True
            d_losses.append(_loss(discriminator.train_on_batch(
                [np.concatenate([real, keras.ops.convert_to_numpy(fake)]), np.concatenate([classes, classes])],
                targets)))
            discriminator.trainable = False
            asked = onehot[rng.integers(0, len(x), batch)]  # classes in the data's proportions
            g_losses.append(_loss(combined.train_on_batch(
                [rng.normal(size=(batch, settings.latent_dim)).astype("float32"), asked], fooled)))
        row = {"epoch": epoch, "d_loss": float(np.mean(d_losses)), "g_loss": float(np.mean(g_losses))}
        result.losses.append(row)
        if on_epoch is not None:
            on_epoch(row)
        check_losses(row)
    result.train_s = time.perf_counter() - started
    return result


def _loss(value) -> float:
    return float(value[0] if isinstance(value, (list, tuple)) else value)


def check_losses(row: dict) -> None:
    """GeneratorFailed when an epoch's losses are not finite: the generator diverged."""
    if not (math.isfinite(row["d_loss"]) and math.isfinite(row["g_loss"])):
        raise GeneratorFailed(f"augmentation.synthetic: the generator diverged at epoch {row['epoch'] + 1} "
                              f"(discriminator loss {row['d_loss']:.4g}, generator loss {row['g_loss']:.4g}); lower "
                              f"augmentation.synthetic.learning_rate")


def spread(images: np.ndarray, labels: np.ndarray, real: np.ndarray, real_labels: np.ndarray) -> dict[int, float]:
    """Per class: the mean per-pixel standard deviation over its generated images, as a fraction of the same over
    its real images. Near 0: every sample of the class is nearly the same image."""
    out = {}
    for c in np.unique(labels):
        generated = images[labels == c].astype(np.float32).std(axis=0).mean()
        reference = np.asarray(real)[np.asarray(real_labels) == c].astype(np.float32).std(axis=0).mean()
        out[int(c)] = float(generated / reference) if reference > 0 else math.inf
    return out


def check_collapse(spreads: dict[int, float], class_names: list[str]) -> None:
    """GeneratorFailed naming the class whose samples collapsed to (nearly) one image."""
    worst = min(spreads, key=spreads.get)
    if spreads[worst] < COLLAPSE_SPREAD:
        raise GeneratorFailed(f"augmentation.synthetic: the generator collapsed: its images of class "
                              f"{class_names[worst]!r} vary {spreads[worst]:.3f} as much as the real ones (under "
                              f"{COLLAPSE_SPREAD}: nearly one image); train it longer "
                              f"(augmentation.synthetic.epochs) or lower augmentation.synthetic.learning_rate")
