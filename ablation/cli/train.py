"""`ablation [overrides]` (`-m` for a sweep): compose the config with Hydra, train one combination, or each
combination of a sweep. How the command ends (Ctrl-C, SIGTERM, a user error) is ablation.core.guard's."""
import importlib.util
import json
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ablation.cli.compose import renamed_refused
from ablation.core import guard


@renamed_refused
@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def app(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from ablation.core import paths
    from ablation.sweep import jobs, parent
    from ablation.training.run import run

    paths.configure(cfg.get("paths"))  # before anything is written: the store, caches, backups
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        # A job of a sweep: a failure is recorded and the sweep goes on; the first Ctrl-C ends only this job. The
        # last job to end finishes the sweep when the sweep's own process has ended (parent.end_of_job).
        try:
            value = jobs.run_job(cfg, run)
        except Exception:
            parent.end_of_job(cfg)
            raise
        parent.end_of_job(cfg)
        return value
    with guard.guard("interrupted: the run is marked KILLED"):
        metrics = run(cfg)
    return metrics.get("best/val_loss", float("nan"))


def keras_backend() -> str:
    """The backend Keras will load: KERAS_BACKEND, else keras.json's (KERAS_HOME or ~/.keras), else tensorflow."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    try:
        home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
        return json.loads((home / "keras.json").read_text()).get("backend") or "tensorflow"
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def require_keras_backend() -> None:
    """One line, before Keras is imported, when the backend Keras would load is not installed (TensorFlow and
    JAX are extras of the package); Keras itself would end in a traceback."""
    name = keras_backend()
    if importlib.util.find_spec(name) is None:
        guard.fail(f"no Keras backend: {name} (KERAS_BACKEND) is not installed; pip install "
                   f"'augment-ablation[tensorflow]' (or [jax], with KERAS_BACKEND=jax)")


def main() -> None:
    """The `ablation` command. An interrupted sweep has said so and closed its runs by the time the interrupt
    leaves Hydra (ablation.sweep.parent.finish): it ends with the interrupt's exit status, without a traceback."""
    with guard.guard("interrupted"):
        require_keras_backend()
        app()


if __name__ == "__main__":
    main()
