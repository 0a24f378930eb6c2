"""`ablation-report [experiment_name=NAME | +parent_run_id=ID] [tracking.uri=...] [report.*=...]` (config:
conf/report.yaml): rebuild an experiment's report, or one sweep's, from what MLflow holds."""
import hydra
from omegaconf import DictConfig

from ablation.cli.compose import renamed_refused
from ablation.core import guard, paths


@renamed_refused
@hydra.main(config_path="../conf", config_name="report", version_base="1.3")
@guard.command
def main(cfg: DictConfig) -> None:
    """The `ablation-report` command."""
    from ablation.report import build
    from ablation.sweep import parent

    paths.configure(cfg.get("paths"))
    # A sweep whose own process ended before its last job, left unclosed: built and closed here, as its end would have.
    if parent.finish_detached(cfg, cfg.get("parent_run_id"), who="ablation-report"):
        return
    build.make(cfg)


if __name__ == "__main__":
    main()
