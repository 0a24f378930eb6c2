"""Sweeps: the ablation designs that the `ablation` Hydra sweeper expands, progress lines, and the Hydra
callback that opens one parent MLflow run per sweep and builds the report when the sweep ends."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"
DESIGNS = ("grid", "leave_one_out", "add_one_in")
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


def expand(jobs: list[list[str]], defaults: DictConfig) -> list[list[str]]:
    """Each job's overrides -> the jobs its design asks for. grid keeps the job; leave_one_out gives `none`, the
    full policy and the policy without each of its units; add_one_in gives `none` and each unit alone. Units come
    from the policy file itself (augment.units). Jobs reached twice (the baseline of every policy) run once."""
    from ablation import augment
    from ablation.config import ConfigError

    out: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for job in jobs:
        design = _value(job, "design") or defaults.get("design") or "grid"
        if design not in DESIGNS:
            raise ConfigError(f"design: expected one of {'|'.join(DESIGNS)}, got {design!r}")
        expanded = [job]
        policy = _value(job, "augmentation") or defaults.augmentation.name
        path = CONF / "augmentation" / f"{policy}.yaml"
        if design != "grid" and path.exists():
            units = augment.units(OmegaConf.load(path))
            base = [o for o in job if _name(o) not in ("augmentation", "design")]
            full = [*base, f"augmentation={policy}"]
            if design == "leave_one_out":
                variants = [full] + [[*full, f"++augmentation.variant='-{u}'"] for u in units]
            else:
                variants = [[*full, f"++augmentation.variant='+{u}'"] for u in units]
            expanded = [[*base, "augmentation=none"], *variants] if units else [job]
        for one in expanded:
            if tuple(one) not in seen:
                seen.add(tuple(one))
                out.append(one)
    return out


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
    print(f"[{k}/{total}] {name}  elapsed {_clock(elapsed)}{eta}", flush=True)


# ---------------------------------------------------------------------------------------------------------
# The parent run

class SweepCallback(Callback):
    """Registered in conf/config.yaml under hydra.callbacks."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from ablation import tracking

        failures.clear()
        os.environ[START_ENV] = str(time.time())
        overrides = list(config.hydra.overrides.task)
        params = {"overrides": " ".join(overrides) or "(none)", "sweep_dir": str(Path(config.hydra.sweep.dir).resolve()),
                  "design": config.get("design", "grid")}
        from ablation.config import ConfigError

        try:
            os.environ[tracking.PARENT_RUN_ENV] = tracking.open_parent(config, params)
        except ConfigError as exc:  # e.g. the tracking server does not answer: nothing may train
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        finish(config)


def finish(config: DictConfig, interrupted: BaseException | None = None) -> None:
    """Close the sweep's parent run (FAILED when a job failed, KILLED when interrupted), after building the
    report from what MLflow holds and logging it to the parent. Exits non-zero when any combination failed."""
    from ablation import report, tracking

    parent = os.environ.pop(tracking.PARENT_RUN_ENV, None)
    if parent is None:
        return
    status = "KILLED" if isinstance(interrupted, KeyboardInterrupt) else "FAILED" if interrupted or failures else "FINISHED"
    try:
        size = int(os.environ.get(SIZE_ENV, 0))
        trained = tracking.count_children(config, parent)
        counts = {"sweep/jobs": size, "sweep/trained": trained, "sweep/failed": len(failures),
                  "sweep/skipped": max(size - trained - len(failures), 0)}
        tracking.log_to_run(config, parent, metrics=counts, params={"sweep_size": size})
        if interrupted is None and trained + counts["sweep/skipped"] > 0:
            tracking.log_to_run(config, parent, folder=report.main(config, parent))
        print(f"sweep: {size} combinations: {trained} trained, {counts['sweep/skipped']} skipped (finished before), "
              f"{len(failures)} failed", flush=True)
    finally:
        reason = "; ".join(f"[{' '.join(job)}] {error}" for job, error in failures) or (
            f"{type(interrupted).__name__}: {interrupted}" if interrupted else None)
        tracking.close_parent(config, parent, status, reason)
    if failures:
        print(f"{len(failures)} combination(s) failed:", file=sys.stderr)
        for job, error in failures:
            print(f"  {' '.join(job)}: {error}", file=sys.stderr)
        raise SystemExit(1)
