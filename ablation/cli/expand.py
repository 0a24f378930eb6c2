"""`ablation-expand dataset=NAME augmentation=POLICY [copies=4]` (or `python -m ablation.cli.expand`): an offline
expansion (ablation.training.expansion) written on its own, and where it went."""
from __future__ import annotations

from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from ablation.cli.compose import renamed_refused
from ablation.core import guard, paths

if TYPE_CHECKING:
    from ablation.training.expansion import Expansion

# Top-level shortcuts for these augmentation keys: `copies=4` is augmentation.copies=4.
SHORTCUTS = ("copies", "save_format", "save_prefix")


def from_config(cfg: DictConfig) -> Expansion:
    """Check, load the dataset, build the policy, expand: what `ablation-expand` does."""
    # Imported here, not at the top: --help and --cfg job answer without loading Keras.
    from ablation import augment, datasets
    from ablation.training.expansion import expand
    from ablation.training.plan import plan

    plan(cfg)
    splits = datasets.load(cfg.dataset)
    policy = augment.build(cfg.augmentation, image_shape=splits.input_shape)
    return expand(cfg, splits, policy)


def describe(expansion: Expansion) -> str:
    m = expansion.manifest
    counts = m["counts"]
    size, _, channels = m["image_shape"]
    return "\n".join([
        f"{'wrote' if expansion.created else 'reused'} {expansion.folder}",
        f"  train: {counts['train_originals']} originals x (1 + {m['copies']} copies of {m['policy']}) = "
        f"{counts['train']} images ({m['save_format']}); validation: {counts['validation']}, test: {counts['test']} "
        f"(png, un-augmented)",
        f"  {expansion.bytes / 1e6:.1f} MB in {expansion.seconds:.1f} s",
        f"  train on it: python -m ablation dataset=folder dataset.path={expansion.folder} "
        f"dataset.image_size={size} dataset.channels={channels}"])


def shortcuts(cfg: DictConfig) -> DictConfig:
    """`copies=4` -> augmentation.copies=4 (likewise save_format, save_prefix): conf/expand.yaml's top-level keys."""
    for name in SHORTCUTS:
        if cfg.get(name) is not None:
            cfg.augmentation[name] = cfg[name]
    return cfg


@renamed_refused
@hydra.main(config_path="../conf", config_name="expand", version_base="1.3")
@guard.command
def main(cfg: DictConfig) -> None:
    """`ablation-expand dataset=NAME augmentation=POLICY [copies=4]`: the expansion alone."""
    paths.configure(cfg.get("paths"))
    print(describe(from_config(shortcuts(cfg))), flush=True)


if __name__ == "__main__":
    main()
