"""A sweep's jobs: what every launcher runs for one combination (Job, in a fresh process where the launcher would
reuse one), the combination itself (run_job: a failure recorded, the sweep goes on), and the progress lines."""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time

from omegaconf import DictConfig

from ablation.core import guard
from ablation.sweep import packing

log = logging.getLogger(__name__)
START_ENV = "ABLATION_SWEEP_START"
SIZE_ENV = "ABLATION_SWEEP_SIZE"
SUBMITIT_ENV = "SUBMITIT_EXECUTOR"  # set in the process of a submitit job (slurm, local)

# What the sweep learned, for its finish (the sweeper, the jobs of the basic launcher and the callback all run in the
# sweep's main process; jobs elsewhere report through their runs).
failures: list[tuple[list[str], str]] = []


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress(name: str) -> None:
    """`[k/N] name  elapsed 0:01:10, ETA 0:03:30` when this run is a job of a sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    k = HydraConfig.get().job.num + 1
    total = os.environ.get(SIZE_ENV, "?")
    elapsed = time.time() - float(os.environ.get(START_ENV, time.time()))
    eta = f", ETA {_clock(elapsed / (k - 1) * (int(total) - k + 1))}" if k > 1 and total.isdigit() else ""
    log.info("[%s/%s] %s  elapsed %s%s", k, total, name, _clock(elapsed), eta)


class Job:
    """What every launcher runs for one job of a sweep (the ablation sweeper hands it to the launcher in place of
    the task function). It carries the sweep's environment (parent run id, progress) into the job's process
    itself, since a worker started before the sweep set it, or on another machine, would not inherit it. With
    fresh_process it runs the task in a new process of its own, so TensorFlow's state and the GPU memory it holds
    end with the job: joblib's workers otherwise take job after job in the same process. With devices (packed,
    on GPUs: ablation.sweep.packing.prepare) each worker takes one GPU before its first job and keeps it."""

    def __init__(self, task_function, fresh_process: bool, devices: packing.Devices | None = None):
        self.task_function = task_function
        self.fresh_process = fresh_process
        self.devices = devices
        self.env: dict[str, str] = {}

    def capture_env(self) -> None:
        """Take the sweep's environment along (called in the sweep's process before jobs are launched)."""
        from ablation import tracking

        self.env = {key: os.environ[key] for key in (tracking.PARENT_RUN_ENV, START_ENV, SIZE_ENV) if key in os.environ}

    def __call__(self, cfg: DictConfig):
        os.environ.update(self.env)
        if os.environ.get(SUBMITIT_ENV):
            _name_submitit_launch()
        if self.devices is not None:
            # CUDA_VISIBLE_DEVICES counts only before TensorFlow or JAX start, which the task imports: now.
            packing.take_gpu(self.devices)
        if os.environ.get(packing.PACKED_ENV) and multiprocessing.parent_process() is not None:
            # A packed worker (ablation/sweep/packing.py): loky's workers ignore Ctrl-C, which would leave the jobs
            # training while the sweep waits for them; here it interrupts the job, and the job stops the sweep.
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if not self.fresh_process:
            return self.task_function(cfg)
        from hydra.core.singleton import Singleton
        from joblib.externals.loky import ProcessPoolExecutor

        # joblib's own process engine (loky: fork+exec, so nothing is inherited but the environment; callables
        # travel by cloudpickle, so a task function defined in __main__ goes too). One worker for one task: the
        # process ends with the job. The job's exception comes back as raised; a process that dies (out of
        # memory, a signal) fails the job with BrokenProcessPool.
        with ProcessPoolExecutor(max_workers=1) as pool:
            return pool.submit(_run_fresh, self.task_function, cfg, Singleton.get_state()).result()


def _name_submitit_launch() -> None:
    """A submitit job's launch id for its run (tag `launch`): submitit's job id (SLURM's, with the array index),
    the same when SLURM requeues the job after a preemption or a lost node, so that the requeued job takes over
    the run its dead attempt left RUNNING (ablation.tracking.process.earlier_attempt)."""
    import submitit

    from ablation import tracking

    try:
        os.environ[tracking.LAUNCH_ENV] = f"submitit-{submitit.JobEnvironment().job_id}"
    except RuntimeError:  # not inside a submitit job after all
        pass


def _run_fresh(task_function, cfg: DictConfig, singleton_state: dict):
    """In the job's new process: Hydra's state as the launcher set it (job number, output dir), its job logging,
    then the task."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import configure_log, setup_globals

    setup_globals()
    Singleton.set_state(singleton_state)
    configure_log(HydraConfig.get().job_logging, HydraConfig.get().verbose)
    return task_function(cfg)


def fresh_by_default(launcher: DictConfig) -> bool:
    """Jobs get a process of their own unless told otherwise only under joblib: its (loky) workers are reused
    for job after job. Hydra's basic launcher runs the jobs one after another in the sweep's process, and
    submitit starts one process per job already."""
    return str(launcher.get("_target_", "")).endswith("JoblibLauncher")


_interrupted_once = False


def run_job(cfg: DictConfig, train) -> float:
    """One combination of a sweep, trained by train(cfg). A failure is recorded and the sweep goes on; it lists
    the failures at the end. The first Ctrl-C ends this job (its run KILLED) and the sweep goes on; the second
    stops the sweep."""
    global _interrupted_once
    from hydra.core.hydra_config import HydraConfig

    if not os.environ.get(SUBMITIT_ENV):
        # Under submitit its own handlers stay: SIGTERM passes (SLURM follows it with the preemption signal, or
        # SIGKILL), and the preemption signal checkpoints the job and requeues it (docs/cluster.md, preemption).
        guard.sigterm_interrupts()
    try:
        metrics = train(cfg, announce=progress)
    except KeyboardInterrupt as exc:
        _exit_for_retry(exc)
        if _interrupted_once or os.environ.get(packing.PACKED_ENV):  # packed: every worker got it; the sweep stops
            log.warning("interrupted: the run is marked KILLED")
            raise
        _interrupted_once = True
        failures.append((list(HydraConfig.get().overrides.task), "interrupted (marked KILLED)"))
        log.warning("interrupted: the run is marked KILLED; the sweep goes on (Ctrl-C again stops it)")
        return float("nan")
    return metrics.get("best/val_loss", float("nan"))


RETRY_EXIT = 143  # 128 + SIGTERM


def _exit_for_retry(interrupt: KeyboardInterrupt) -> None:
    """A job stopped by SIGTERM from outside (a node drained or preempted) under a launcher that runs a job again
    when its process dies (hydra/launcher=ray, which names each job's launch: tracking.LAUNCH_ENV): its run is
    closed KILLED by now; the process exits at once, so that the launcher retries the job, which continues the
    run from its last completed epoch (trainer.resume=auto). Returning would end the job as done."""
    from ablation import tracking

    if str(interrupt) != signal.Signals.SIGTERM.name or not os.environ.get(tracking.LAUNCH_ENV):
        return
    log.warning("stopped by SIGTERM: the run is marked KILLED; the job's process exits so that its launcher runs "
                "it again")
    logging.shutdown()
    os._exit(RETRY_EXIT)
