"""Hydra's basic sweeper, plus what an ablation sweep needs: the design expansion (leave_one_out, add_one_in),
every job's config validated before the first one trains, failing jobs recorded instead of stopping the
sweep (the callback in ablation.sweep.parent lists them and exits non-zero at the end), and each job handed to the
launcher as an ablation.sweep.jobs.Job (the sweep's environment, and a fresh process per job under joblib)."""

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from ablation.core import compat


@dataclass
class AblationSweeperConf:
    _target_: str = "hydra_plugins.ablation_sweeper.ablation_sweeper.AblationSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None
    # Run every job in a new process of its own, so TensorFlow's state and GPU memory end with the job.
    # null: only under hydra/launcher=joblib, whose workers otherwise take job after job (ablation.sweep.jobs.Job);
    # hydra/launcher=packed keeps them, so each worker keeps its compiled model (ablation/sweep/packing.py).
    fresh_process: bool | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="ablation", node=AblationSweeperConf, provider="ablation")


def _jobs() -> int:
    from ablation.sweep import packing

    return packing.jobs()


# hydra/launcher=packed (ablation/conf/hydra/launcher/packed.yaml): n_jobs from the device, resolved in the sweep's
# process when the launcher is set up.
OmegaConf.register_new_resolver("ablation_jobs", _jobs, replace=True)


BasicSweeper = compat.basic_sweeper()


def _or_exit(step):
    """step()'s value; a user's error (a bad setting) is printed as one line and ends the sweep with status 2."""
    from ablation.core.errors import user_error

    try:
        return step()
    except Exception as exc:
        if not user_error(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


class AblationSweeper(BasicSweeper):
    def __init__(self, max_batch_size: int | None, params: dict[str, str] | None = None,
                 fresh_process: bool | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.fresh_process = fresh_process

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from ablation.sweep import jobs, packing

        packed = config.hydra.runtime.choices.get("hydra/launcher") == packing.LAUNCHER
        devices = packing.prepare(int(config.hydra.launcher.n_jobs)) if packed else None
        fresh = (jobs.fresh_by_default(config.hydra.launcher) and not packed) if self.fresh_process is None \
            else self.fresh_process
        self.job = jobs.Job(task_function, fresh_process=fresh, devices=devices)
        super().setup(hydra_context=hydra_context, task_function=self.job, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        from ablation.sweep import designs, parent
        from ablation.sweep import rounds as sweep_rounds

        params = self._parse_config()
        params.extend(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        grid = [job for batch in BasicSweeper.split_arguments(parser.parse_overrides(params), None) for job in batch]
        try:
            # A design or policy that cannot be expanded, seeds on demand that cannot be planned: one line, exit 2.
            jobs = _or_exit(lambda: designs.jobs_of(grid, self.config, load=self._load))
            keys = self._validate(jobs)
            rounds = _or_exit(lambda: sweep_rounds.Rounds.of(self.config, jobs, keys)
                              if sweep_rounds.auto(self.config) else None)
            parent.record_definition(self.config, jobs, keys, rounds.definition() if rounds else None)
            if rounds:
                print(rounds.plan_line(), flush=True)
            sweep_dir = Path(self.config.hydra.sweep.dir)
            sweep_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
            returns: list = []
            first = 0
            todo = rounds.batch() if rounds else jobs
            while todo:
                first = self._launch(todo, first, returns)
                todo = self._look(rounds) if rounds else []
            return returns
        except BaseException as exc:
            parent.finish(self.config, interrupted=exc)
            raise

    def _launch(self, jobs: list[list[str]], first: int, returns: list) -> int:
        """Launch jobs in batches of max_batch_size, numbered from `first`; failures recorded, not raised.
        Returns the next job number."""
        from ablation.sweep import jobs as sweep_jobs

        os.environ[sweep_jobs.SIZE_ENV] = str(first + len(jobs))  # [k/N] progress: every job launched so far
        self.job.capture_env()
        size = self.max_batch_size or len(jobs)
        self.overrides = [jobs[i:i + size] for i in range(0, len(jobs), size)]
        self.batch_index = 0
        while not self.is_done():
            batch = self.get_job_batch()
            results = self.launcher.launch(batch, initial_job_idx=first)
            for job, result in zip(batch, results):
                if result.status == JobStatus.FAILED:
                    error = compat.job_error(result)
                    sweep_jobs.failures.append((list(job), f"{type(error).__name__}: {error}".splitlines()[0]))
            first += len(batch)
            returns.append(results)
        return first

    def _look(self, rounds) -> list[list[str]]:
        """Seeds on demand, after a round: the report's rule looks at what the round added; the next round's jobs
        ([] when every policy is decided or has every seed)."""
        from ablation import tracking
        from ablation.report import build

        table, finished = build.look(self.config, os.environ[tracking.PARENT_RUN_ENV], rounds.schedule,
                                     rounds.look + 1)
        more = rounds.decide(table, finished)
        print(rounds.line(), flush=True)
        rounds.record(self.config, os.environ[tracking.PARENT_RUN_ENV])
        return rounds.batch() if more else []

    def _load(self, job: list[str]) -> DictConfig:
        """A job's config as its launcher will compose it: the same loader, so the same search path
        (hydra.searchpath) finds a user's own policies, datasets and experiments."""
        from ablation.sweep import designs

        return designs.missing_config_is_user_error(lambda: self.hydra_context.config_loader.load_sweep_config(
            master_config=self.config, sweep_overrides=list(job)))

    def _validate(self, jobs: list[list[str]]) -> list[str]:
        """Compose and check every job before any trains: a bad combination stops the sweep up front. Returns the
        jobs' keys (config_hash), the sweep's definition."""
        from ablation.core.errors import user_error
        from ablation.report.settings import check as check_report_settings
        from ablation.training.plan import plan

        bad, keys = [], []
        for job in jobs:
            try:
                cfg = self._load(job)
                cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])  # as the job will see it
                keys.append(plan(cfg).key)  # every setting and every rule between settings
                check_report_settings(cfg)  # the sweep ends in its report: a bad report setting stops it here
            except Exception as exc:
                if not user_error(exc):
                    raise
                bad.append(f"error: [{' '.join(job)}] {exc}")
        if bad:
            print("\n".join(bad), file=sys.stderr)
            raise SystemExit(2)
        return keys
