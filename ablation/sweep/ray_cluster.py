"""A sweep's jobs on a Ray cluster (`hydra/launcher=ray`, hydra_plugins/ablation_ray_launcher): each job a Ray
task that asks for its CPUs and GPUs (a fraction packs several jobs on one GPU; by default one job per GPU), runs
on whichever node has them free, and trains through the same path as under every launcher (Hydra's run_job
around the sweeper's ablation.sweep.jobs.Job). The sweep's process composes each job's config, waits for the
tasks and builds the report at the end.

What a node does not have, the job takes along: the sweep's environment variables it needs (the tracking store's
address and credentials, the output folders; `hydra.launcher.env`) travel in the task's runtime environment, and
the task names its node in ABLATION_NODE, which the run records as its `node` tag."""
from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, open_dict

from ablation.sweep import packing

log = logging.getLogger(__name__)
CANCEL_WAIT_S = 15  # after Ctrl-C, how long the sweep waits for its jobs to close their runs KILLED


def shipped_env(names: Sequence[str], environ=os.environ) -> dict[str, str]:
    """The variables of environ that every job gets: those named, or starting with a name that ends in `_`. Never
    the host name or node a run records (each job's own), nor the GPUs Ray gives the task."""
    from ablation import tracking

    own = {tracking.HOST_ENV, tracking.NODE_ENV, tracking.LAUNCH_ENV, packing.VISIBLE}
    return {key: value for key, value in environ.items() if key not in own
            and any(key.startswith(name) if name.endswith("_") else key == name for name in names)}


def connect(settings: dict) -> tuple[dict, int]:
    """ray.init, once per process: the cluster at settings' address (null: Ray's own search, else a new local
    instance), with the shipped environment for every task. Returns the cluster's resources and its live nodes."""
    import ray

    if not ray.is_initialized():
        env = shipped_env(settings["env"])
        ray.init(address=settings["address"], runtime_env={"env_vars": env}, **settings["init"])
    return ray.cluster_resources(), sum(1 for node in ray.nodes() if node["Alive"])


def job_options(settings: dict, resources: dict) -> dict:
    """The Ray options of every job's task: its CPUs, its GPUs (null: one when the cluster has any), how many
    jobs a worker process runs, how often Ray retries a job whose worker or node died, and on GPUs, memory taken
    as used (a value the sweep's environment sets wins)."""
    gpus = settings["num_gpus"]
    if gpus is None:
        gpus = 1 if resources.get("GPU", 0) > 0 else 0
    # A retried job takes over the run its dead attempt left RUNNING (the run's `launch` tag is the job's) and,
    # with trainer.resume (auto: on under Ray), continues it from its last completed epoch.
    options = {"num_cpus": settings["num_cpus"], "num_gpus": gpus, "max_calls": settings["max_calls"],
               "max_retries": settings["max_retries"]}
    if gpus:
        options["runtime_env"] = {"env_vars": {key: value for key, value in packing.GPU_SHARING.items()
                                               if key not in os.environ}}
    return options


def describe(address: str | None, resources: dict, nodes: int, options: dict) -> str:
    """`2 node(s) (2 CPUs, 0 GPUs) at 127.0.0.1:6379, each job num_cpus=1 num_gpus=0 (...)`."""
    return (f"{nodes} node(s) ({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs) at "
            f"{address or 'the local Ray instance'}, each job num_cpus={options['num_cpus']:g} "
            f"num_gpus={options['num_gpus']:g} (hydra.launcher.num_cpus, num_gpus)")


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
    """Hydra's Launcher.launch: one Ray task per job, numbered from initial_job_idx; each job's JobReturn in
    order. A job whose task fails outside the job itself (its worker died, its node was lost) comes back FAILED,
    so the sweeper records it and the sweep goes on."""
    import ray
    from hydra.core.singleton import Singleton
    from hydra.core.utils import configure_log, filter_overrides, setup_globals

    setup_globals()
    config = launcher.config
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    # The sweep's folder as this process sees it: a job on another node has another working directory and clock.
    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    resources, nodes = connect(launcher.settings)
    options = job_options(launcher.settings, resources)
    log.info("ray: %d jobs on %s", len(job_overrides),
             describe(launcher.settings["address"], resources, nodes, options))
    task = ray.remote(**options)(_run_on_node)
    singleton_state = Singleton.get_state()
    sweep_launch = uuid.uuid4().hex[:12]  # each job's launch id: this launch's, and the job's number
    refs = []
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        sweep_config = launcher.hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
            sweep_config.hydra.job.num = idx
            sweep_config.hydra.sweep.dir = str(sweep_dir)
        refs.append(task.remote(launcher.hydra_context, sweep_config, launcher.task_function, singleton_state,
                                f"{sweep_launch}-{idx}"))
    try:
        return [_returned(ref, overrides) for ref, overrides in zip(refs, job_overrides)]
    except KeyboardInterrupt:
        # Ctrl-C: a KeyboardInterrupt in every job still running, so each closes its run KILLED.
        for ref in refs:
            ray.cancel(ref)
        ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT_S)
        raise


def _returned(ref, overrides: Sequence[str]):
    """The job's JobReturn, or a FAILED one holding the error when its task did not return one."""
    import ray
    from hydra.core.utils import JobReturn, JobStatus

    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        result = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
        result.return_value = getattr(exc, "cause", None) or exc
        return result


def _run_on_node(hydra_context, sweep_config: DictConfig, task_function, singleton_state: dict, launch: str):
    """In the Ray task, on whichever node runs it: the node's name and the job's launch id (the same for every
    attempt at it) for the run, Hydra's state as the sweep set it, then Hydra's run_job (the job's folder, its
    logging, the callbacks, the task; a failure in the task comes back as a FAILED JobReturn)."""
    import ray
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals

    from ablation import tracking

    os.environ[tracking.NODE_ENV] = ray.get_runtime_context().get_node_id()
    os.environ[tracking.LAUNCH_ENV] = launch
    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
