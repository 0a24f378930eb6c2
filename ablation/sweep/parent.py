"""A sweep's parent MLflow run: opened by the Hydra callback before the first job, given the sweep's definition
once the sweeper has checked every job, and closed by finish, after the report is built from what MLflow holds."""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ablation.core import guard
from ablation.sweep.jobs import SIZE_ENV, START_ENV, failures

log = logging.getLogger(__name__)


class SweepCallback(Callback):
    """Registered in ablation/conf/config.yaml under hydra.callbacks."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from ablation import tracking
        from ablation.core import paths

        paths.configure(config.get("paths"))  # the parent run's store, and every job's outputs (they inherit it)
        failures.clear()
        os.environ[START_ENV] = str(time.time())
        overrides = list(config.hydra.overrides.task)
        params = {"overrides": " ".join(overrides) or "(none)", "sweep_dir": str(Path(config.hydra.sweep.dir).resolve()),
                  "sweep.design": OmegaConf.select(config, "sweep.design", default="grid")}
        with guard.guard():  # e.g. the tracking server does not answer: one line, and nothing trains
            os.environ[tracking.PARENT_RUN_ENV] = tracking.open_parent(config, params)
        # SIGTERM (`kill`, a scheduler) stops the sweep like Ctrl-C, so the parent run is closed KILLED; this is
        # for the sweep's process when the jobs run elsewhere (joblib, submitit).
        guard.sigterm_interrupts()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        finish(config)


def record_definition(config: DictConfig, jobs: list[list[str]], keys: list[str], design: dict | None = None) -> None:
    """Once the sweeper has expanded and checked every job: the sweep's definition on its parent run (tag
    sweep_hash, artifact sweep.json), so that its report counts exactly its combinations and, for seeds on demand
    (design: the looks), decides them as the sweep did."""
    from ablation import tracking

    parent = os.environ.get(tracking.PARENT_RUN_ENV)
    if parent is None:  # the parent is opened by SweepCallback; a config without it records nothing
        return
    with guard.guard():
        digest = tracking.describe_sweep(config, parent, keys, [list(job) for job in jobs], design)
    log.info("sweep %s: %s combinations (sweep_hash %s)", parent, len(set(keys)), digest)


def finish(config: DictConfig, interrupted: BaseException | None = None) -> None:
    """Close the sweep's parent run, after building the report from what MLflow holds and logging it to the
    parent (outcome() decides the status). Exits non-zero when any combination failed or the report could not be
    built."""
    from ablation import tracking

    parent = os.environ.pop(tracking.PARENT_RUN_ENV, None)
    if parent is None:
        return
    report_error = None
    try:
        counts = _count(config, parent, interrupted)
        if interrupted is None and counts["sweep/trained"] + counts["sweep/skipped"] > 0:
            report_error = _report(config, parent)
    finally:
        tracking.close_parent(config, parent, *outcome(interrupted, report_error))
    if report_error:
        print(f"error: {report_error}; every run is recorded: rebuild it with ablation-report "
              f"+parent_run_id={parent}", file=sys.stderr)
        raise SystemExit(1)
    if failures:
        print(f"{len(failures)} combination(s) failed:", file=sys.stderr)
        for job, error in failures:
            print(f"  {' '.join(job)}: {error}", file=sys.stderr)
        raise SystemExit(1)


def outcome(interrupted: BaseException | None, report_error: str | None) -> tuple[str, str | None]:
    """The parent run's status and reason, decided in one place: KILLED when interrupted by Ctrl-C or SIGTERM,
    FAILED when the sweep broke, a combination failed or the report could not be built, else FINISHED."""
    if isinstance(interrupted, KeyboardInterrupt):
        status = "KILLED"
    elif interrupted is not None or failures or report_error:
        status = "FAILED"
    else:
        status = "FINISHED"
    reason = "; ".join(f"[{' '.join(job)}] {error}" for job, error in failures) or report_error or (
        f"{type(interrupted).__name__}: {interrupted}" if interrupted else None)
    return status, reason


def _count(config: DictConfig, parent: str, interrupted: BaseException | None) -> dict[str, int]:
    """The sweep's counts on its parent run (jobs, trained, failed and, when it ran to its end, skipped); an
    interrupted sweep first closes the runs of jobs whose processes died."""
    from ablation import tracking

    if interrupted is not None:
        for name in tracking.close_dead_children(config, parent):
            log.warning("%s: its process ended before closing the run; marked KILLED", name)
    size = int(os.environ.get(SIZE_ENV, 0))
    trained = tracking.count_children(config, parent)
    counts = {"sweep/jobs": size, "sweep/trained": trained, "sweep/failed": len(failures)}
    if interrupted is None:
        counts["sweep/skipped"] = max(size - trained - len(failures), 0)
        log.info(f"sweep: {size} combinations: {trained} trained, {counts['sweep/skipped']} skipped (finished "
                 f"before, or running in another process), {len(failures)} failed")
    else:  # the jobs that had not started yet are neither trained nor skipped
        log.warning("sweep interrupted: %s of %s combinations started training", trained, size)
    tracking.log_to_run(config, parent, metrics=counts, params={"sweep_size": size})
    return counts


def _report(config: DictConfig, parent: str) -> str | None:
    """Build the sweep's report, log it to the parent and register the run it recommends when asked; the error
    when it cannot be built (the runs stand; the sweep did not end in its answer)."""
    from ablation import tracking
    from ablation.report import build as report

    try:
        out_dir = report.make(config, parent)
        tracking.log_to_run(config, parent, folder=out_dir)
        if config.tracking.get("register_model"):
            report.register_best(config, parent, out_dir)
    except Exception as exc:
        return f"the report could not be built: {type(exc).__name__}: {exc}"
    return None


def finish_detached(config: DictConfig, parent_id: str | None, who: str) -> bool:
    """Finish a sweep whose own process has ended (killed after submitting its jobs, a closed login): when its parent
    run is orphaned (tracking.orphan) and every combination has ended, build the report, log it to the parent and
    close it, as finish would have. Called by each job at its end (the last one does it) and by `ablation-report
    +parent_run_id=...`; who names the caller in the parent's tag finished_by. A sequential sweep
    (sweep.seeds=auto) needs its own process to launch the next round: it is left for the sweep run again. True
    when this call closed the sweep."""
    from ablation import tracking

    parent = tracking.find_run(config.tracking, parent_id) if parent_id else None
    if parent is None or not tracking.orphan.orphaned(config.tracking, parent):
        return False
    definition = tracking.sweep_definition(config.tracking, parent_id)
    if definition is None or definition.get("sequential"):
        return False
    counts = tracking.orphan.progress(config.tracking, parent, definition["keys"])
    if counts["left"] or not tracking.orphan.claim(config.tracking, parent_id, who):
        return False
    log.warning("sweep %s: its own process has ended; %s builds its report and closes its parent run", parent_id, who)
    size = len(definition.get("jobs") or definition["keys"])
    tracking.log_to_run(config, parent_id, params={"sweep_size": size}, metrics={
        "sweep/jobs": size, "sweep/trained": counts["trained"], "sweep/failed": counts["failed"],
        "sweep/skipped": max(size - counts["trained"], 0)})
    # No combination finished: nothing to report on (the report would end the process with its error line).
    report_error = _report(config, parent_id) if counts["finished"] else "no combination finished: no report"
    failed = f"{counts['failed']} combination(s) failed" if counts["failed"] else None
    tracking.close_parent(config, parent_id, "FAILED" if report_error or failed else "FINISHED", report_error or failed)
    return True


def end_of_job(config: DictConfig) -> None:
    """At the end of each job of a sweep, wherever it ran: finish_detached when the sweep's own process has ended. A
    store that cannot be read here is a warning: the job's run stands, and `ablation-report` finishes the sweep."""
    from ablation import tracking

    parent_id = os.environ.get(tracking.PARENT_RUN_ENV)
    if not parent_id:
        return
    try:
        finish_detached(config, parent_id, who=f"the job on {tracking.host_name()} (pid {os.getpid()})")
    except Exception as exc:
        log.warning("sweep %s: could not look whether this was its last job: %s: %s (ablation-report "
                    "+parent_run_id=%s finishes it)", parent_id, type(exc).__name__, exc, parent_id)
