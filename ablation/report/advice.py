"""What the report tells a person to do next, in words and commands: train longer where training was unfinished,
rerun failed runs, look again where a policy underfits, and settle the open rows with a confirmatory sweep on
fresh seeds.

Why fresh seeds in a new experiment, and not more seeds added to this one: testing the same rows again after
seeing them is repeated testing (a single test at 0.05 becomes about 8% false positives after one round of
adding seeds). A confirmatory sweep whose report decides on its own seeds alone is a new fixed-sample test, with
the guarantees of docs/decision.md. Its size is planned from the measured spread and the margins, never from
the effect seen so far (which would take noise for an effect)."""
from __future__ import annotations

import math
import re

import pandas as pd

from ablation.core.names import BLOCK, KEYS
from ablation.core.paths import CONF
from ablation.report import decide, sequential

EXPERIMENTS = CONF / "experiment"
PLAIN = re.compile(r"^[A-Za-z0-9_]+$")  # a policy that is an augmentation option of its own


def lines(table: pd.DataFrame, experiment: str) -> list[str]:
    """One line per thing to do, each ending in the command that does it; empty when the answer is complete."""
    if table.empty:
        return []
    out = []
    several = table[["dataset", "model", "setting"]].drop_duplicates().shape[0] > 1
    for (dataset, model, setting), block in table.groupby(["dataset", "model", "setting"], sort=False):
        where = f" ({dataset}/{model}{' ' + setting if setting else ''})" if several else ""
        selector = [f"dataset={dataset}", f"model={model}"] if several else []
        out += _unfinished(block, experiment, where, selector) + _failed(block, experiment, where, selector)
        out += _underfits(block, where) + _seeds(block, experiment, where, selector)
    return out


def _command(experiment: str, overrides: list[str], others: bool = False) -> str:
    """The command that runs `overrides` on the experiment; others: the sweep's own overrides are needed too."""
    head = (f"python -m ablation -m experiment={experiment}" if (EXPERIMENTS / f"{experiment}.yaml").exists()
            else f"python -m ablation -m experiment_name={experiment}")
    if others or not (EXPERIMENTS / f"{experiment}.yaml").exists():
        head += " <the sweep's other overrides>"
    return " ".join([head, *overrides])


def _unfinished(block: pd.DataFrame, experiment: str, where: str, selector: list[str]) -> list[str]:
    late = block[block["unfinished"].astype(bool)]
    if late.empty:
        return []
    limit = block["epoch_limit"].max()
    longer = int(2 * limit) if math.isfinite(limit) else 100
    names = ", ".join(late["augmentation"])
    return [f"unfinished training{where}: {names} still improved when training stopped (best epoch at the end, or "
            f"the monitored metric still improving at the epoch limit), so their verdicts compare a model that is "
            f"not done. Train longer, with early stopping ending each run when it is done (a new config, so the "
            f"runs are trained afresh): {_command(experiment, [*selector, 'trainer.early_stopping.enabled=true', f'trainer.epochs={longer}'])}"]


def _underfits(block: pd.DataFrame, where: str) -> list[str]:
    low = block[block["underfits"].astype(bool)]
    if low.empty:
        return []
    metric = block["score_metric"].iloc[0]
    unit = {"points": " points", "dB": " dB"}.get(str(block["score_unit"].iloc[0]) if "score_unit" in block else "", "")
    parts = ", ".join(f"{r.augmentation} ({r.delta_train_clean_score:+.1f}{unit})" for r in low.itertuples())
    return [f"underfitting{where}: {parts} fit their own (clean) training data clearly worse than none at the best "
            f"epoch ({metric}); a smaller gap there comes from not fitting, not from generalising better. A milder "
            f"setting of the policy, or longer training, says whether it can fit."]


def _failed(block: pd.DataFrame, experiment: str, where: str, selector: list[str]) -> list[str]:
    lost = block[block["verdict"].astype(str).str.startswith("undecided: ") & (block["verdict"] != decide.UNFINISHED)]
    if lost.empty:
        return []
    names = ", ".join(f"{r.augmentation} ({r.failed})" for r in lost.itertuples())
    return [f"failed runs{where}: {names}; a policy that fails on a seed is never recommended, and its verdict "
            f"waits for those seeds. failed.csv says why each failed; once the cause is fixed, running the sweep "
            f"again retrains only what did not finish: {_command(experiment, selector, others=True)}"]


def _seeds(block: pd.DataFrame, experiment: str, where: str, selector: list[str]) -> list[str]:
    open_rows = block[block["verdict"].isin([decide.UNDECIDED, decide.COST_UNCLEAR])]
    stopped = (block["stopped"] if "stopped" in block else pd.Series("", index=block.index)).fillna("").astype(str)
    going = open_rows[stopped[open_rows.index] == sequential.OPEN]
    open_rows = open_rows.drop(index=going.index)
    out = []
    if len(going):  # seeds on demand, stopped between its rounds: the same sweep goes on from its last look
        out.append(f"open{where}: {', '.join(going['augmentation'])} go on to the next look of the sequential design; "
                   f"the same sweep run again continues it (finished runs are skipped): "
                   f"{_command(experiment, [*selector, 'sweep.seeds=auto'], others=True)}")
    if open_rows.empty:
        return out
    needed = pd.to_numeric(open_rows["seeds_needed"], errors="coerce")
    decidable = open_rows[needed <= decide.MAX_SEEDS]
    beyond = open_rows[needed > decide.MAX_SEEDS]
    if len(beyond):
        out.append(f"open{where}: {', '.join(beyond['augmentation'])} would need more than {decide.MAX_SEEDS} seeds "
                   f"to be settled at this seed noise and these margins (report.margin)")
    unplanned = open_rows[needed.isna()]
    if len(unplanned):  # one seed: no spread to plan a confirmatory sweep from
        out.append(f"open{where}: {', '.join(unplanned['augmentation'])} ran on too few seeds to measure seed noise; "
                   f"run at least 3 seeds to plan from")
    if decidable.empty:
        return out
    target = int(needed[decidable.index].max())
    first = int(block["max_seed"].max()) + 1 if "max_seed" in block and block["max_seed"].notna().any() else 100
    names = ", ".join(f"{r.augmentation} ({int(r.seeds_needed)})" for r in decidable.itertuples())
    seeds = ",".join(str(s) for s in range(first, first + target))
    # Levels (<policy>@0.5), variants (<policy>-Rotate) and expansions (@offline) come from the sweep's design and
    # mode, not from an augmentation option: the sweep itself is run again with fresh seeds.
    plain = all(PLAIN.match(str(a)) for a in decidable["augmentation"])
    policies = [f"augmentation={','.join(['none', *decidable['augmentation']])}"] if plain else []
    confirm = [f"experiment_name={experiment}_confirm"]
    return out + [f"open{where}: {names} would be settled by a confirmatory sweep on the number of fresh seeds in "
                  f"brackets (80% power if the policy changed nothing, planned from the measured spread and the "
                  f"margins); its own report decides on those seeds alone, so looking again stays valid (adding "
                  f"seeds to this sweep and deciding again would not be; seeds on demand, sweep.seeds=auto, plan "
                  f"their looks in advance): "
                  f"{_command(experiment, [*selector, *policies, *confirm, f'seed={seeds}'], others=not plain)}"]


def harm_lines(effect_table: pd.DataFrame, summary_table: pd.DataFrame) -> list[str]:
    """For each policy that significantly hurts some class: its verdict, then the classes it hurts, worst first.
    A policy that helps on average reads `helps overall, hurts class 6 (-4.2 points [-6.1, -2.3])`."""
    if effect_table.empty:
        return []
    verdicts = {tuple(r[k] for k in KEYS): r["verdict"] for _, r in summary_table.iterrows()} if len(summary_table) else {}
    lines = []
    hurt = effect_table[effect_table["significant"].astype(bool) & (effect_table["delta_points"] < 0)]
    several_blocks = effect_table[BLOCK].astype(str).drop_duplicates().shape[0] > 1
    for key, group in hurt.groupby(KEYS, dropna=False, sort=False):
        verdict = verdicts.get(tuple(key), "")
        overall = "helps overall" if verdict == decide.HELPS else f"verdict {verdict}" if verdict else "overall"
        classes = ", ".join(f"class {r['class']} ({r['delta_points']:+.1f} points [{r['ci_low']:+.1f}, "
                            f"{r['ci_high']:+.1f}])" for _, r in group.sort_values("delta_points").iterrows())
        where = f" ({key[0]}, {key[1]}{', ' + key[2] if key[2] else ''})" if several_blocks else ""
        lines.append(f"{key[3]}{where}: {overall}, hurts {classes}")
    return lines
