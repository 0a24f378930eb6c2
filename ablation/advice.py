"""What the report tells a person to do next, in words and commands: train longer where training was unfinished,
look again where a policy underfits, and add the seeds that would decide the undecided rows (a resumable sweep
trains only the new seeds)."""
from __future__ import annotations

import math
import re

import pandas as pd

from ablation import decide
from ablation.paths import CONF

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
        out += _unfinished(block, experiment, where, selector) + _underfits(block, where)
        out += _seeds(block, experiment, where, selector)
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
    parts = ", ".join(f"{r.augmentation} ({r.delta_train_clean_score:+.3f})" for r in low.itertuples())
    return [f"underfitting{where}: {parts} fit their own (clean) training data clearly worse than none at the best "
            f"epoch ({metric}); a smaller gap there comes from not fitting, not from generalising better. A milder "
            f"setting of the policy, or longer training, says whether it can fit."]


def _seeds(block: pd.DataFrame, experiment: str, where: str, selector: list[str]) -> list[str]:
    open_rows = block[block["verdict"].isin([decide.NO_EFFECT, decide.COST_UNCLEAR])]
    needed = pd.to_numeric(open_rows["seeds_needed"], errors="coerce")
    have = int(block["n_seeds"].max())
    decidable = open_rows[(needed > have) & (needed <= decide.MAX_SEEDS)]
    if decidable.empty:
        return []
    target = int(needed[decidable.index].max())
    names = ", ".join(f"{r.augmentation} ({int(r.seeds_needed)})" for r in decidable.itertuples())
    seeds = ",".join(str(s) for s in range(target))
    # Levels (<policy>@0.5), variants (<policy>-Rotate) and expansions (@offline) come from the sweep's design and
    # mode, not from an augmentation option: the sweep itself is run again with more seeds.
    plain = all(PLAIN.match(str(a)) for a in decidable["augmentation"])
    policies = [f"augmentation={','.join(['none', *decidable['augmentation']])}"] if plain else []
    return [f"undecided{where}: {names} would be decided at the number of seeds in brackets, if the effect seen so "
            f"far is real (80% power). Finished seeds are skipped, so this trains only the new ones: "
            f"{_command(experiment, [*selector, *policies, f'seed={seeds}'], others=not plain)}"]
