"""python -m ablation [overrides]  (-m for a Hydra multirun sweep)."""
import signal
import sys

import hydra
from omegaconf import DictConfig

from ablation.errors import user_error

_interrupted_once = False


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    global _interrupted_once
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from ablation import paths, sweep
    from ablation.run import run

    paths.configure(cfg.get("paths"))  # before anything is written: the store, caches, backups
    # SIGTERM (a scheduler, `kill`) ends a run like Ctrl-C: the run is closed KILLED, never left RUNNING.
    signal.signal(signal.SIGTERM, _interrupt)
    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        metrics = run(cfg)
    except KeyboardInterrupt:
        if not in_sweep or _interrupted_once:
            print("interrupted: the run is marked KILLED", file=sys.stderr)
            if in_sweep:
                raise  # the second Ctrl-C stops the sweep
            sys.exit(130)
        _interrupted_once = True
        sweep.failures.append((list(HydraConfig.get().overrides.task), "interrupted (marked KILLED)"))
        print("interrupted: the run is marked KILLED; the sweep goes on (Ctrl-C again stops it)", file=sys.stderr)
        return float("nan")
    except Exception as exc:
        # In a sweep the job is recorded as failed and the sweep goes on; it lists the failures at the end.
        if not user_error(exc) or in_sweep:
            raise
        # A bad config or bad data: one line naming the key or file, no traceback.
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    return metrics.get("best/val_loss", float("nan"))


if __name__ == "__main__":
    main()
