"""Generative augmentation (`augmentation.synthetic`, settings in ablation/conf/synthetic/): a class-conditional
GAN (ablation/training/gan.py) trained on the run's training split only, whose generated images join the real ones in the
classifier's training set, `ratio` generated images per real one, class by class. Validation, test and the
clean-train subset stay the dataset's own; a classic policy, when the run has one, augments the real and the
generated training images alike.

The generated images are written once and reused, as an offline expansion is (ablation/training/expansion.py):

    <root>/<key>/images.npz      x: uint8 (classes x per_class, H, W, C), y: their classes, class by class
    <root>/<key>/samples.png     a grid of the first samples of every class
    <root>/<key>/manifest.json   the generator's settings, its losses per epoch, how long it took, the spread

<root> is runs/synthetic/ (or $ABLATION_SYNTHETIC_DIR). The key names everything the images depend on (the
dataset's cache key, the generator's settings but the ratio, the seed), so the runs of every ratio and policy of
a seed share one generator; the folder is built privately and renamed into place, so no reader sees half of one.

Each run logs the generator's cost and quality: time/generator_train_s and time/generator_sample_s (when it was
made), synthetic/d_loss and synthetic/g_loss per epoch, synthetic/spread (how much its images vary against the
real ones, the worst class), synthetic_samples.png, and synthetic/affinity: the accuracy of the same seed's `none`
classifier on the generated images (ablation/lenses/affinity.py; low: they do not look like their class)."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ablation import datasets
from ablation.core import paths
from ablation.core.errors import ConfigError
from ablation.lenses import affinity

log = logging.getLogger(__name__)

KEY = "augmentation.synthetic"
MODELS = ("cgan",)
SETTINGS = ("model", "ratio", "per_class", "epochs", "batch_size", "learning_rate", "latent_dim", "width")
# A generator learns a class from its images: below this many, it learns nothing worth adding.
MIN_CLASS_IMAGES = 10
# Part of the key: changes whenever the written files or the generator's code would.
LAYOUT = 1
GRID_COLUMNS = 8
PROGRESS_EVERY_S = 10.0


def settings(cfg: DictConfig) -> dict:
    node = cfg.augmentation.get("synthetic")
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def active(cfg: DictConfig) -> bool:
    ratio = settings(cfg).get("ratio") or 0
    return not isinstance(ratio, bool) and isinstance(ratio, (int, float)) and ratio > 0


def label(cfg: DictConfig, policy_is_identity: bool, name: str) -> str:
    """The row's name: `synthetic:<ratio>` alone, `<policy>+synthetic:<ratio>` on top of a policy; the policy's
    own name when no generator is used."""
    if not active(cfg):
        return name
    # ':' and not '@', which marks a strength level (<policy>@<s>, read back by the report's dose section) and
    # offline mode.
    tail = f"synthetic:{settings(cfg)['ratio']:g}"
    return tail if policy_is_identity else f"{name}+{tail}"


def check(cfg: DictConfig) -> None:
    """The settings' meaning (their types are checked by ablation.training.config): the model and the image size."""
    given = settings(cfg)
    for name in given:
        if name not in SETTINGS:
            raise ConfigError(f"{KEY}.{name}: unknown key; expected {', '.join(SETTINGS)}")
    if given.get("model") not in MODELS:
        raise ConfigError(f"{KEY}.model: expected one of {'|'.join(MODELS)}, got {given.get('model')!r}")
    size = cfg.dataset.get("image_size")
    if active(cfg) and isinstance(size, int) and size % 4:
        raise ConfigError(f"{KEY}: the generator doubles its images' size twice, so dataset.image_size must divide "
                          f"by 4, got {size}")


def check_data(cfg: DictConfig, splits: datasets.Splits) -> None:
    """Before anything trains: every class has enough images to learn from, and per_class holds what the ratio
    takes of each class."""
    s = settings(cfg)
    height, width, _ = splits.input_shape
    if height % 4 or width % 4:
        raise ConfigError(f"{KEY}: the generator doubles its images' size twice, so the images' sides must divide "
                          f"by 4, got {height}x{width} (set dataset.image_size)")
    counts = np.bincount(np.asarray(splits.train.y), minlength=splits.num_classes)
    fewest = int(np.argmin(counts))
    if counts[fewest] < MIN_CLASS_IMAGES:
        raise ConfigError(f"{KEY}: class {splits.class_names[fewest]!r} has {counts[fewest]} training images; a "
                          f"generator needs at least {MIN_CLASS_IMAGES} of every class (more training images, or "
                          f"{KEY}.ratio=0)")
    needed = int(np.max(_takes(counts, s["ratio"])))
    if needed > s["per_class"]:
        raise ConfigError(f"{KEY}.per_class: ratio {s['ratio']:g} takes up to {needed} generated images of a class, "
                          f"per_class is {s['per_class']}; set {KEY}.per_class={needed} or lower the ratio")


def _takes(counts: np.ndarray, ratio: float) -> np.ndarray:
    return np.rint(counts * ratio).astype(int)


def root() -> Path:
    return paths.folder("synthetic")


def key(cfg: DictConfig) -> str:
    """The folder name: readable parts, then a hash of everything the generated images depend on. The ratio is not
    one of them: it only chooses how many of them a run takes."""
    generator = {k: v for k, v in settings(cfg).items() if k != "ratio"}
    identity = {"layout": LAYOUT, "dataset": datasets.cache_key(cfg.dataset), "generator": generator,
                "seed": cfg.seed}
    return datasets.folder_name(f"{cfg.dataset.name}-{generator['model']}-e{generator['epochs']}-s{cfg.seed}",
                                identity)


@dataclass(frozen=True)
class Synthetic:
    folder: Path
    manifest: dict
    created: bool          # False: an earlier generator's images were reused
    seconds: float         # training and sampling it, or finding and reading it
    images: np.ndarray     # every generated image of the folder
    labels: np.ndarray
    train: datasets.Split  # the real training split plus the generated images the ratio takes


def prepare(cfg: DictConfig, splits: datasets.Splits, tracker, scratch: Path) -> Synthetic:
    """The generated images for this run (made, or reused), mixed into the training split at the ratio; logs the
    generator's cost and quality to the run (tracker). Raises GeneratorFailed for a generator that diverged or
    collapsed, so the run fails instead of training on noise."""
    started = time.perf_counter()
    check_data(cfg, splits)
    target = root() / key(cfg)
    trained = []

    def write(folder: Path) -> None:
        log.info("synthetic: training a %s generator on %d images of %d classes (%s)", settings(cfg)["model"],
                 len(splits.train), splits.num_classes, target.name)
        _write(cfg, splits, folder, tracker)
        trained.append(folder)

    manifest = datasets.publish(target, write, read_manifest, KEY)
    if not trained:  # an earlier run's generator: its losses, as that run logged them while it trained
        log.info("synthetic: reusing %s (its generator trained in %.0f s)", target, manifest["train_s"])
        for row in manifest["losses"]:
            tracker.log_metrics({"synthetic/d_loss": row["d_loss"], "synthetic/g_loss": row["g_loss"]},
                                step=row["epoch"])
    with np.load(target / "images.npz", allow_pickle=False) as stored:
        images, labels = stored["x"], stored["y"]
    train = combine(splits.train, images, labels, settings(cfg)["ratio"])
    made = Synthetic(target, manifest, bool(trained), time.perf_counter() - started, images, labels, train)
    record(tracker, cfg, made, scratch)
    return made


def combine(real: datasets.Split, images: np.ndarray, labels: np.ndarray, ratio: float) -> datasets.Split:
    """The real images, then round(ratio x its real images) generated images of each class (the first ones)."""
    counts = np.bincount(np.asarray(real.y), minlength=int(labels.max()) + 1)
    chosen = np.concatenate([np.flatnonzero(labels == c)[:n] for c, n in enumerate(_takes(counts, ratio))])
    return datasets.Split(np.concatenate([np.asarray(real.x), images[chosen]]),
                          np.concatenate([np.asarray(real.y), labels[chosen]]).astype(np.asarray(real.y).dtype))


def record(tracker, cfg: DictConfig, made: Synthetic, scratch: Path) -> None:
    m = made.manifest
    tracker.set_tag("synthetic_dir", str(made.folder))
    tracker.log_metrics({"time/generator_train_s": m["train_s"], "time/generator_sample_s": m["sample_s"],
                         "time/synthetic_s": made.seconds, "synthetic/reused": float(not made.created),
                         "synthetic/spread": min(m["spread"].values()),
                         "data/n_synthetic": len(made.train) - m["counts"]["real"]})
    tracker.log_text(json.dumps(m, indent=1), "synthetic.json")
    grid = scratch / "synthetic_samples.png"
    grid.write_bytes((made.folder / "samples.png").read_bytes())
    tracker.log_file(grid)
    # How recognisable the images are: the same seed's `none` classifier, when one has finished, labels them.
    score = affinity.of_samples(cfg, made.images, made.labels, scratch)
    if score is not None:
        tracker.log_metrics({"synthetic/affinity": score})


# ---------------------------------------------------------------------------------------------- writing

def _write(cfg: DictConfig, splits: datasets.Splits, folder: Path, tracker) -> None:
    from ablation.training import gan

    s = settings(cfg)
    progress = _Progress(s["epochs"])

    def on_epoch(row: dict) -> None:
        tracker.log_metrics({"synthetic/d_loss": row["d_loss"], "synthetic/g_loss": row["g_loss"]}, step=row["epoch"])
        progress.epoch(row)

    # The training split only: the generator never sees a validation or test image.
    real = datasets.Split(np.asarray(splits.train.x), np.asarray(splits.train.y))
    generator = gan.train(real.x, real.y, splits.num_classes, gan.Settings(
        epochs=s["epochs"], batch_size=s["batch_size"], latent_dim=s["latent_dim"], width=s["width"],
        learning_rate=s["learning_rate"]), cfg.seed, on_epoch=on_epoch)
    sample_started = time.perf_counter()
    images, labels = generator.sample(s["per_class"], cfg.seed)
    sample_s = time.perf_counter() - sample_started
    spreads = gan.spread(images, labels, real.x, real.y)
    gan.check_collapse(spreads, splits.class_names)
    np.savez(folder / "images.npz", x=images, y=labels)
    save_grid(images, labels, folder / "samples.png")
    manifest = {"key": key(cfg), "model": s["model"],
                "settings": {k: v for k, v in s.items() if k != "ratio"}, "seed": cfg.seed,
                "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
                "dataset_cache_key": datasets.cache_key(cfg.dataset), "class_names": list(splits.class_names),
                "image_shape": list(splits.input_shape), "counts": {"real": len(real), "generated": len(labels)},
                "train_s": round(generator.train_s, 3), "sample_s": round(sample_s, 3),
                "losses": generator.losses, "spread": {splits.class_names[c]: v for c, v in spreads.items()}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))


def save_grid(images: np.ndarray, labels: np.ndarray, path: Path, columns: int = GRID_COLUMNS) -> None:
    """One row per class, its first `columns` images, enlarged so small images stay visible."""
    from PIL import Image

    blank = np.zeros_like(images[:1])
    rows = []
    for c in np.unique(labels):
        picks = list(images[labels == c][:columns])
        rows.append(np.concatenate(picks + [blank[0]] * (columns - len(picks)), axis=1))
    grid = np.concatenate(rows, axis=0)
    picture = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    scale = max(1, 64 // images.shape[1])
    picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST).save(path)


def read_manifest(folder: Path) -> dict | None:
    """The folder's manifest when it holds a complete set of generated images; None otherwise."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    complete = isinstance(manifest, dict) and manifest.get("key") == folder.name and (folder / "images.npz").is_file()
    return manifest if complete else None


class _Progress:
    """INFO lines while the generator trains: every PROGRESS_EVERY_S at most, and when it ends."""

    def __init__(self, epochs: int):
        self.epochs, self.started = epochs, time.monotonic()
        self.last = self.started

    def epoch(self, row: dict) -> None:
        now, done = time.monotonic(), row["epoch"] + 1
        if done == self.epochs or now - self.last >= PROGRESS_EVERY_S:
            elapsed = now - self.started
            left = elapsed / done * (self.epochs - done)
            log.info("synthetic: generator epoch %d/%d, discriminator loss %.3f, generator loss %.3f, %.0f s%s",
                     done, self.epochs, row["d_loss"], row["g_loss"], elapsed,
                     f", about {left:.0f} s left" if done < self.epochs else "")
            self.last = now
