"""ablation-preview augmentation=NAME [n=8] (or python -m ablation.cli.preview; config: conf/preview.yaml): one
training image of the configured dataset and n augmented versions, written to <paths.previews>/<name>.png (the
path is printed)."""
from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from ablation.cli.compose import renamed_refused
from ablation.core import guard, paths

N_AUGMENTED = 8


def write_preview(cfg: DictConfig, out_dir: Path | None = None, n: int = N_AUGMENTED) -> Path:
    # Imported here, not at the top: --help and --cfg job answer without loading Keras.
    from ablation import augment, datasets
    from ablation.training import figures

    policy = augment.build(cfg.augmentation)  # before loading data: a bad policy fails fast
    train = datasets.load(cfg.dataset).train.x
    fig = figures.preview_grid(train[0], policy, n=n, seed=cfg.seed, partners=train[1:n + 1])
    out_dir = paths.folder("previews") if out_dir is None else out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{policy.name}.png"
    fig.savefig(path, dpi=120)
    return path


@renamed_refused
@hydra.main(config_path="../conf", config_name="preview", version_base="1.3")
@guard.command
def main(cfg: DictConfig) -> None:
    paths.configure(cfg.get("paths"))
    print(write_preview(cfg, n=int(cfg.get("n", N_AUGMENTED))))


if __name__ == "__main__":
    main()
