"""`ablation [overrides]` (`-m` for a sweep): compose the config with Hydra, train one combination, or each
combination of a sweep. How the command ends (Ctrl-C, SIGTERM, a user error) is ablation.core.guard's."""
import hydra
from omegaconf import DictConfig

from ablation.core import guard


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def app(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from ablation.core import paths
    from ablation.sweep import jobs
    from ablation.training.run import run

    paths.configure(cfg.get("paths"))  # before anything is written: the store, caches, backups
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        # A job of a sweep: a failure is recorded and the sweep goes on; the first Ctrl-C ends only this job.
        return jobs.run_job(cfg, run)
    with guard.guard("interrupted: the run is marked KILLED"):
        metrics = run(cfg)
    return metrics.get("best/val_loss", float("nan"))


def main() -> None:
    """The `ablation` command. An interrupted sweep has said so and closed its runs by the time the interrupt
    leaves Hydra (ablation.sweep.parent.finish): it ends with the interrupt's exit status, without a traceback."""
    with guard.guard("interrupted"):
        app()


if __name__ == "__main__":
    main()
