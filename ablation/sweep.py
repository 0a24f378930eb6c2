"""Sweeps: the ablation designs that the `ablation` Hydra sweeper expands, progress lines, and the Hydra
callback that opens one parent MLflow run per sweep and builds the report when the sweep ends."""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ablation import guard, packing

CONF = Path(__file__).resolve().parent / "conf"
DESIGNS = ("grid", "leave_one_out", "add_one_in", "strength")
log = logging.getLogger(__name__)
START_ENV = "ABLATION_SWEEP_START"
SIZE_ENV = "ABLATION_SWEEP_SIZE"

# What the sweeper learned, for the callback at the end of the sweep (both run in the sweep's main process).
failures: list[tuple[list[str], str]] = []


# ---------------------------------------------------------------------------------------------------------
# Designs

def _value(job: list[str], key: str) -> str | None:
    """The value a job's overrides give `key` (last one wins), without quotes."""
    value = None
    for override in job:
        name, _, rest = override.lstrip("+~").partition("=")
        if name == key:
            value = rest.strip("'\"")
    return value


def expand(jobs: list[list[str]], defaults: DictConfig, load=None) -> list[list[str]]:
    """Each job's overrides -> the jobs its design asks for. grid keeps the job; leave_one_out gives `none`, the
    full policy and the policy without each of its units; add_one_in gives `none` and each unit alone; strength
    gives `none` and the policy at each level of `strength` (augmentation.strength; level 0 is `none` itself).
    Units come from the policy as Hydra composes it for the job (augment.units): load(job) -> the job's config,
    from the sweeper's own config loader, so a policy found through hydra.searchpath counts like a packaged one.
    Without a loader the job is composed from the packaged configs. Jobs reached twice (the baseline of every
    policy) run once."""
    from ablation import augment
    from ablation.errors import ConfigError

    load = load or compose_job
    out: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for job in jobs:
        design = _value(job, "design") or defaults.get("design") or "grid"
        if design not in DESIGNS:
            raise ConfigError(f"design: expected one of {'|'.join(DESIGNS)}, got {design!r}")
        if design != "strength" and _value(job, "strength") is not None:
            raise ConfigError("strength: the levels of design=strength, which this sweep does not use; add "
                              "design=strength, or give one level to a policy with augmentation.strength=S")
        expanded = [job]
        if design != "grid":
            cfg = load(job)
            policy = cfg.hydra.runtime.choices.get("augmentation") or _value(job, "augmentation")
            units = augment.units(cfg.augmentation)
            base = [o for o in job if _name(o) not in ("augmentation", "design", "strength")]
            full = [*base, f"augmentation={policy}"]
            if design == "strength":
                variants = [[*full, f"++augmentation.strength={level:g}"] for level in levels(job, defaults)
                            if level != 0]
            elif design == "leave_one_out":
                variants = [full] + [[*full, f"++augmentation.variant='-{u}'"] for u in units]
            else:
                variants = [[*full, f"++augmentation.variant='+{u}'"] for u in units]
            # A policy with nothing to vary (none) is its one job, under the same overrides as the baseline.
            expanded = [[*base, "augmentation=none"], *variants] if units else [full]
        for one in expanded:
            if tuple(one) not in seen:
                seen.add(tuple(one))
                out.append(one)
    return out


def levels(job: list[str], defaults: DictConfig) -> list[float]:
    """The strength levels of a job: its own `strength=` (one level of a swept list, or a [list]), else the
    config's `strength` list."""
    import yaml

    from ablation.errors import ConfigError

    given = _value(job, "strength")
    value = yaml.safe_load(given) if given is not None else defaults.get("strength")
    value = [value] if value is None or isinstance(value, (int, float, str)) else list(value)
    if not value or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in value):
        raise ConfigError(f"strength: expected levels >= 0 such as strength=0,0.5,1,2 (1 = the policy as written), "
                          f"got {given if given is not None else value!r}")
    return sorted({float(v) for v in value})


def compose_job(job: list[str]) -> DictConfig:
    """A job's config composed from the packaged configs, with its hydra node (outside a running sweep)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return missing_config_is_user_error(lambda: compose("config", overrides=list(job), return_hydra_config=True))


def missing_config_is_user_error(compose_it):
    """compose_it(), with Hydra's "Could not find 'augmentation/my_policy'" turned into a ConfigError (one
    `error:` line naming the option, where it was looked for and the options there are)."""
    from hydra.errors import MissingConfigException

    from ablation.errors import ConfigError

    try:
        return compose_it()
    except MissingConfigException as exc:
        text, _, searched = str(exc).partition("Config search path:")
        first, _, available = text.strip().partition("\n")
        first = first.removeprefix("In 'config': ")
        options = " ".join(available.replace("Available options in", "options in").split())
        folders = ", ".join(word[5:] for word in searched.split()
                            if word.startswith("path=") and "hydra.conf" not in word and "structured://" not in word)
        raise ConfigError(f"{first}; {options}; searched {folders} (a folder of your own configs: "
                          "hydra.searchpath=[file://DIR])") from None


def _name(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


# ---------------------------------------------------------------------------------------------------------
# Progress

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


# ---------------------------------------------------------------------------------------------------------
# Jobs

class Job:
    """What every launcher runs for one job of a sweep (the ablation sweeper hands it to the launcher in place of
    the task function). It carries the sweep's environment (parent run id, progress) into the job's process
    itself, since a worker started before the sweep set it, or on another machine, would not inherit it. With
    fresh_process it runs the task in a new process of its own, so TensorFlow's state and the GPU memory it holds
    end with the job: joblib's workers otherwise take job after job in the same process."""

    def __init__(self, task_function, fresh_process: bool):
        self.task_function = task_function
        self.fresh_process = fresh_process
        self.env: dict[str, str] = {}

    def capture_env(self) -> None:
        """Take the sweep's environment along (called in the sweep's process before jobs are launched)."""
        from ablation import tracking

        self.env = {key: os.environ[key] for key in (tracking.PARENT_RUN_ENV, START_ENV, SIZE_ENV) if key in os.environ}

    def __call__(self, cfg: DictConfig):
        os.environ.update(self.env)
        if os.environ.get(packing.PACKED_ENV) and multiprocessing.parent_process() is not None:
            # A packed worker (ablation/packing.py): loky's workers ignore Ctrl-C, which would leave the jobs
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


# ---------------------------------------------------------------------------------------------------------
# A job

_interrupted_once = False


def job(cfg: DictConfig, train) -> float:
    """One combination of a sweep, trained by train(cfg). A failure is recorded and the sweep goes on; it lists
    the failures at the end. The first Ctrl-C ends this job (its run KILLED) and the sweep goes on; the second
    stops the sweep."""
    global _interrupted_once
    from hydra.core.hydra_config import HydraConfig

    guard.sigterm_interrupts()
    try:
        metrics = train(cfg, announce=progress)
    except KeyboardInterrupt:
        if _interrupted_once or os.environ.get(packing.PACKED_ENV):  # packed: every worker got it; the sweep stops
            log.warning("interrupted: the run is marked KILLED")
            raise
        _interrupted_once = True
        failures.append((list(HydraConfig.get().overrides.task), "interrupted (marked KILLED)"))
        log.warning("interrupted: the run is marked KILLED; the sweep goes on (Ctrl-C again stops it)")
        return float("nan")
    return metrics.get("best/val_loss", float("nan"))


# ---------------------------------------------------------------------------------------------------------
# The parent run

class SweepCallback(Callback):
    """Registered in ablation/conf/config.yaml under hydra.callbacks."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from ablation import paths, tracking

        paths.configure(config.get("paths"))  # the parent run's store, and every job's outputs (they inherit it)
        failures.clear()
        os.environ[START_ENV] = str(time.time())
        overrides = list(config.hydra.overrides.task)
        params = {"overrides": " ".join(overrides) or "(none)", "sweep_dir": str(Path(config.hydra.sweep.dir).resolve()),
                  "design": config.get("design", "grid")}
        with guard.guard():  # e.g. the tracking server does not answer: one line, and nothing trains
            os.environ[tracking.PARENT_RUN_ENV] = tracking.open_parent(config, params)
        # SIGTERM (`kill`, a scheduler) stops the sweep like Ctrl-C, so the parent run is closed KILLED; this is
        # for the sweep's process when the jobs run elsewhere (joblib, submitit).
        guard.sigterm_interrupts()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        finish(config)


def record_definition(config: DictConfig, jobs: list[list[str]], keys: list[str]) -> None:
    """Once the sweeper has expanded and checked every job: the sweep's definition on its parent run (tag
    sweep_hash, artifact sweep.json), so that its report counts exactly its combinations."""
    from ablation import tracking

    parent = os.environ.get(tracking.PARENT_RUN_ENV)
    if parent is None:  # the parent is opened by SweepCallback; a config without it records nothing
        return
    with guard.guard():
        digest = tracking.describe_sweep(config, parent, keys, [list(job) for job in jobs])
    log.info("sweep %s: %s combinations (sweep_hash %s)", parent, len(set(keys)), digest)


def finish(config: DictConfig, interrupted: BaseException | None = None) -> None:
    """Close the sweep's parent run (FAILED when a job failed, KILLED when interrupted), after building the
    report from what MLflow holds and logging it to the parent. Exits non-zero when any combination failed."""
    from ablation import report, tracking

    parent = os.environ.pop(tracking.PARENT_RUN_ENV, None)
    if parent is None:
        return
    status = "KILLED" if isinstance(interrupted, KeyboardInterrupt) else "FAILED" if interrupted or failures else "FINISHED"
    report_error = None
    try:
        if interrupted is not None:
            for name in tracking.close_dead_children(config, parent):
                log.warning("%s: its process ended before closing the run; marked KILLED", name)
        size = int(os.environ.get(SIZE_ENV, 0))
        trained = tracking.count_children(config, parent)
        counts = {"sweep/jobs": size, "sweep/trained": trained, "sweep/failed": len(failures)}
        if interrupted is None:
            counts["sweep/skipped"] = max(size - trained - len(failures), 0)
        tracking.log_to_run(config, parent, metrics=counts, params={"sweep_size": size})
        if interrupted is not None:
            # The jobs that had not started yet are neither trained nor skipped.
            log.warning("sweep interrupted: %s of %s combinations started training", trained, size)
        else:
            if trained + counts["sweep/skipped"] > 0:
                try:
                    out_dir = report.main(config, parent)
                    tracking.log_to_run(config, parent, folder=out_dir)
                    if config.tracking.get("register_model"):  # the run the report recommends, to the registry
                        report.register_best(config, parent, out_dir)
                except Exception as exc:  # the runs stand; the sweep did not end in its answer
                    report_error = f"the report could not be built: {type(exc).__name__}: {exc}"
                    status = "FAILED"
            log.info(f"sweep: {size} combinations: {trained} trained, {counts['sweep/skipped']} skipped (finished "
                  f"before), {len(failures)} failed")
    finally:
        reason = "; ".join(f"[{' '.join(job)}] {error}" for job, error in failures) or report_error or (
            f"{type(interrupted).__name__}: {interrupted}" if interrupted else None)
        tracking.close_parent(config, parent, status, reason)
    if report_error:
        print(f"error: {report_error}; every run is recorded: rebuild it with ablation-report "
              f"+parent_run_id={parent}", file=sys.stderr)
        raise SystemExit(1)
    if failures:
        print(f"{len(failures)} combination(s) failed:", file=sys.stderr)
        for job, error in failures:
            print(f"  {' '.join(job)}: {error}", file=sys.stderr)
        raise SystemExit(1)
