"""Seeds on demand (sweep.seeds=auto): a sweep's jobs launched in rounds of seeds. Every policy and `none` start at
the first look's seeds; after each round the report's own rule looks (ablation/report/sequential.py: that look's
share of report.alpha, over the rows still open) and only the policies whose verdict is still open get the next
look's seeds, with their baseline, until each is decided or has every seed the sweep lists.

A job is a template (its overrides but the seed) at a seed. The seeds are the sweep's `seed` values in increasing
order; look k runs the first schedule.seeds[k] of them. Finished runs are skipped as in any sweep, so a sweep
stopped between rounds (Ctrl-C, kill -9) and started again reaches the same round without training anything twice.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from ablation.core.errors import ConfigError
from ablation.core.names import BASELINE
from ablation.core.values import choice, number

log = logging.getLogger(__name__)

MODE, AUTO, FIXED = "sweep.seeds", "auto", "fixed"


def auto(config: DictConfig) -> bool:
    """Whether the sweep asks for seeds on demand; ConfigError naming sweep.seeds for anything but fixed|auto."""
    mode = OmegaConf.select(config, MODE, default=FIXED)
    if mode not in (FIXED, AUTO):
        raise ConfigError(f"{MODE}: expected fixed or auto, got {mode!r}")
    return mode == AUTO


def _seed_of(job: list[str]) -> tuple[tuple[str, ...], int | None]:
    """(the job's overrides but its seed, its seed)."""
    rest, seed = [], None
    for override in job:
        name, _, value = override.partition("=")
        if name == "seed":
            seed = int(value)
        else:
            rest.append(override)
    return tuple(rest), seed


@dataclass
class Rounds:
    """The sweep's jobs by template and seed, and where the sequence stands."""
    jobs: dict[tuple[str, ...], dict[int, list[str]]]  # template -> seed -> the job's overrides
    keys: dict[tuple[str, ...], set[str]]  # template -> its jobs' config_hash
    schedule: object  # ablation.report.sequential.Schedule
    seeds: list[int]
    look: int = 0
    open: set = field(default_factory=set)  # the templates still open
    history: list = field(default_factory=list)  # per look: {template label: (seeds, verdict, why stopped)}
    launched: set = field(default_factory=set)  # the jobs this sweep has launched (tuples of overrides)

    @classmethod
    def of(cls, config: DictConfig, jobs: list[list[str]], keys: list[str]) -> Rounds:
        from ablation.report import sequential

        by_template: dict[tuple[str, ...], dict[int, list[str]]] = {}
        template_keys: dict[tuple[str, ...], set[str]] = {}
        for job, key in zip(jobs, keys):
            template, seed = _seed_of(job)
            if seed is None:
                raise ConfigError(f"{MODE}: auto adds seeds in rounds, so the sweep must list its seeds (seed=range(10) "
                                  f"or seed=0,1,2,...); job [{' '.join(job)}] has none")
            by_template.setdefault(template, {})[seed] = list(job)
            template_keys.setdefault(template, set()).add(key)
        seeds = sorted({s for per_seed in by_template.values() for s in per_seed})
        if OmegaConf.select(config, "sweep.sequential") is not None:
            number(config, "sweep.sequential.start", minimum=2, integer=True)
            number(config, "sweep.sequential.step", minimum=1, integer=True)
            choice(config, "sweep.sequential.spending", sequential.SPENDING)
        start = OmegaConf.select(config, "sweep.sequential.start", default=3)
        step = OmegaConf.select(config, "sweep.sequential.step", default=2)
        kind = OmegaConf.select(config, "sweep.sequential.spending", default=sequential.KIND)
        alpha = float(OmegaConf.select(config, "report.alpha", default=0.05))
        if len(seeds) < start:
            raise ConfigError(f"sweep.sequential.start: the first round runs {start} seeds, but the sweep lists "
                              f"{len(seeds)} (list at least {start}, e.g. seed=range(10))")
        try:
            schedule = sequential.schedule(start, len(seeds), step, alpha, kind)
        except ValueError as exc:
            raise ConfigError(f"sweep.sequential: {exc}") from None
        return cls(by_template, template_keys, schedule, seeds, open=set(by_template))

    def definition(self) -> dict:
        """What the parent run's sweep.json records, so that the report decides the rows as the sweep did."""
        return {"sequential": {"seeds": list(self.schedule.seeds), "alphas": list(self.schedule.alphas),
                               "kind": self.schedule.kind, "seed_values": self.seeds}}

    def plan_line(self) -> str:
        """What the sweep will do, said before its first round."""
        looks = ", ".join(f"{n} (alpha {a:.4f})" for n, a in zip(self.schedule.seeds, self.schedule.alphas))
        most = sum(len(per_seed) for per_seed in self.jobs.values())
        return (f"seeds on demand: looks at {looks} seeds; each round adds seeds only to the policies still open "
                f"(at most {most} runs)")

    def record(self, config: DictConfig, parent: str) -> None:
        """The looks so far on the parent run: metrics sequential/open and sequential/seeds (one point per look)
        and sequential/rounds.json (per look: each policy's seeds, verdict and why it stopped or goes on)."""
        import json
        import tempfile
        from pathlib import Path

        from ablation import tracking

        made = self.history[-1]
        going = sum(why == "open" for _, _, why, _ in made["rows"].values())
        with tempfile.TemporaryDirectory(prefix="ablation-") as tmp:
            folder = Path(tmp) / "sequential"
            folder.mkdir()
            looks = [{"look": i + 1, "seeds": h["seeds"], "alpha": h["alpha"],
                      "rows": {a: {"seeds": n, "verdict": v, "stopped": why, "look": at}
                               for a, (n, v, why, at) in h["rows"].items()}}
                     for i, h in enumerate(self.history)]
            (folder / "rounds.json").write_text(json.dumps(looks, indent=1) + "\n")
            tracking.log_to_run(config, parent, metrics={"sequential/open": going, "sequential/seeds": made["seeds"]},
                                folder=folder, step=len(self.history))

    def batch(self) -> list[list[str]]:
        """The jobs the current look adds: the open templates at its seeds that this sweep has not launched yet
        (runs finished by an earlier sweep are skipped by their jobs, as in any sweep)."""
        seeds = self.seeds[:self.schedule.seeds[self.look]]
        jobs = [self.jobs[t][s] for t in self.jobs if t in self.open for s in seeds if s in self.jobs[t]]
        jobs = [job for job in jobs if tuple(job) not in self.launched]
        self.launched |= {tuple(job) for job in jobs}
        return jobs

    def decide(self, table, finished) -> bool:
        """After the current look's round: the report's table (summary rows with a `stopped` column) and the
        finished runs it was built from -> which templates go on; True while a next round is due."""
        from ablation.report import sequential

        going = set()
        said = {}
        for row in table.to_dict("records"):
            if row["augmentation"] == BASELINE:
                continue
            same = finished
            for column in ("dataset", "model", "setting", "augmentation"):
                same = same[same[column].astype(str) == ("" if row[column] != row[column] else str(row[column]))]
            hashes = set(same["tags.config_hash"])
            templates = {t for t, keys in self.keys.items() if keys & hashes}
            label = row["augmentation"]
            said[label] = (int(row["n_seeds"]), str(row["verdict"]), str(row.get("stopped", "")),
                           int(row["look"]) if row.get("look") == row.get("look") else 0)
            if row.get("stopped") == sequential.OPEN:
                going |= templates
        self.history.append({"seeds": self.schedule.seeds[self.look], "alpha": self.schedule.alphas[self.look],
                             "rows": said})
        if not going or self.look + 1 >= len(self.schedule.seeds):
            self.open = set()
            return False
        # The baseline of every block with a policy still open: every seed a policy runs, the baseline runs too.
        blocks = {self._block(t) for t in going}
        going |= {t for t in self.jobs if self._is_baseline(t) and self._block(t) in blocks}
        self.open = going
        self.look += 1
        return True

    def line(self) -> str:
        """One line on the look just made: what is decided, what goes on and why."""
        made = self.history[-1]
        now = len(self.history)  # the rows decided at an earlier look were said then
        decided = [f"{a} {v}" for a, (_, v, why, at) in made["rows"].items() if why != "open" and at == now]
        going = [f"{a} ({v})" for a, (_, v, why, _) in made["rows"].items() if why == "open"]
        after = (f"; {len(going)} go on to {self.schedule.seeds[self.look]} seeds: {', '.join(going)}" if self.open
                 else "; done")
        return (f"look {len(self.history)}/{len(self.schedule.seeds)} at {made['seeds']} seeds (alpha "
                f"{made['alpha']:.4f}): decided: {', '.join(decided) or 'none'}{after}")

    @staticmethod
    def _is_baseline(template: tuple[str, ...]) -> bool:
        return f"augmentation={BASELINE}" in template

    @staticmethod
    def _block(template: tuple[str, ...]) -> tuple[str, ...]:
        """What ties a policy to its baseline: the template's overrides but those of the policy (its name,
        variant, strength)."""
        return tuple(o for o in template if not o.lstrip("+~").startswith("augmentation"))
