"""python -m ablation [overrides]  (-m for a Hydra multirun sweep)."""
import sys

import hydra
from omegaconf import DictConfig

from ablation.config import user_error


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from ablation.run import run

    try:
        metrics = run(cfg)
    except Exception as exc:
        if not user_error(exc):
            raise
        # A bad config or bad data: one line naming the key or file, no traceback.
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    return metrics["best/val_loss"]


if __name__ == "__main__":
    main()
