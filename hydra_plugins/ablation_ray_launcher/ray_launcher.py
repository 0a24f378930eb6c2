"""hydra/launcher=ray: every job of a sweep a Ray task on a Ray cluster (or a local Ray instance), each with the
CPUs and GPUs (fractions included) it asks for; the work is in ablation.sweep.ray_cluster, imported with Ray only
when a sweep launches. A thin launcher over Ray's own API, so it installs beside any current Ray (Hydra's
hydra-ray-launcher holds cloudpickle below 3 and brings the AWS autoscaler along)."""
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


@dataclass
class RayLauncherConf:
    _target_: str = "hydra_plugins.ablation_ray_launcher.ray_launcher.RayLauncher"
    # ray.init's address: null = $RAY_ADDRESS, else the cluster `ray start` started on this machine, else a new
    # local Ray instance; `auto`: a running cluster or an error; `<head>:6379` or `ray://<head>:10001`: that one.
    address: str | None = None
    # GPUs per job: null = 1 when the cluster has GPUs (one job per GPU), else 0; a fraction packs several jobs
    # on one GPU (0.25: four). CPUs per job, as Ray counts them for scheduling.
    num_gpus: float | None = None
    num_cpus: float = 1
    # Jobs a Ray worker process runs before it exits: 1 = a fresh process per job (TensorFlow's state and GPU
    # memory end with it); 0 = no limit (a worker keeps its compiled model between jobs, as packed workers do).
    max_calls: int = 1
    # How often Ray runs a job again whose worker process or node died (a lost or preempted node): the new attempt
    # takes over the run the dead one left RUNNING and continues it from its last completed epoch
    # (trainer.resume=auto). 0: such a job fails; the sweep started again trains it.
    max_retries: int = 3
    # The sweep's environment variables that every job gets (names, or prefixes ending in `_`): a job on another
    # node does not inherit the sweep's environment. ABLATION_HOST and ABLATION_NODE never travel.
    env: list[str] = field(default_factory=lambda: ["ABLATION_", "MLFLOW_", "KERAS_", "TF_", "XLA_",
                                                    "NO_ALBUMENTATIONS_UPDATE"])
    # More keyword arguments of ray.init (+hydra.launcher.init.include_dashboard=false, ...).
    init: dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/launcher", name="ray", node=RayLauncherConf, provider="ablation")


class RayLauncher(Launcher):
    def __init__(self, address: str | None = None, num_gpus: float | None = None, num_cpus: float = 1,
                 max_calls: int = 1, max_retries: int = 3, env: Sequence[str] = (),
                 init: dict[str, Any] | None = None) -> None:
        self.settings = {"address": address, "num_gpus": num_gpus, "num_cpus": num_cpus, "max_calls": max_calls,
                         "max_retries": max_retries,
                         "env": list(env), "init": OmegaConf.to_container(init) if isinstance(init, DictConfig)
                         else dict(init or {})}
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from ablation.sweep import ray_cluster

        return ray_cluster.launch(self, job_overrides, initial_job_idx)
