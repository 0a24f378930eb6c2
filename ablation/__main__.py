"""python -m ablation [overrides]  (-m for a Hydra multirun sweep)."""
import sys

import hydra
from omegaconf import DictConfig

from ablation.config import user_error


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from ablation.run import run

    try:
        metrics = run(cfg)
    except Exception as exc:
        # In a sweep the job is recorded as failed and the sweep goes on; it lists the failures at the end.
        if not user_error(exc) or HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        # A bad config or bad data: one line naming the key or file, no traceback.
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    return metrics.get("best/val_loss", float("nan"))


if __name__ == "__main__":
    main()
