"""The ablation designs the `ablation` sweeper expands (sweep.design): grid, leave_one_out, add_one_in, strength
(one policy at each of sweep.levels); and each job's config composed outside a running sweep."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from ablation.core.paths import CONF

DESIGNS = ("grid", "leave_one_out", "add_one_in", "strength")
DESIGN, LEVELS = "sweep.design", "sweep.levels"


def _value(job: list[str], key: str) -> str | None:
    """The value a job's overrides give `key` (last one wins), without quotes."""
    value = None
    for override in job:
        name, _, rest = override.lstrip("+~").partition("=")
        if name == key:
            value = rest.strip("'\"")
    return value


def jobs_of(jobs: list[list[str]], defaults: DictConfig, load=None) -> list[list[str]]:
    """Each job's overrides -> the jobs its design asks for. grid keeps the job; leave_one_out gives `none`, the
    full policy and the policy without each of its units; add_one_in gives `none` and each unit alone; strength
    gives `none` and the policy at each of sweep.levels (augmentation.strength; level 0 is `none` itself).
    Units come from the policy as Hydra composes it for the job (augment.units): load(job) -> the job's config,
    from the sweeper's own config loader, so a policy found through hydra.searchpath counts like a packaged one.
    Without a loader the job is composed from the packaged configs. Jobs reached twice (the baseline of every
    policy) run once."""
    from ablation import augment
    from ablation.core import renamed
    from ablation.core.errors import ConfigError

    load = load or compose_job
    out: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for job in jobs:
        renamed.check_overrides(job)  # design=, strength=, force= ... from before the sweep node
        design = _value(job, DESIGN) or OmegaConf.select(defaults, DESIGN, default=None) or "grid"
        if design not in DESIGNS:
            raise ConfigError(f"{DESIGN}: expected one of {'|'.join(DESIGNS)}, got {design!r}")
        if design != "strength" and _value(job, LEVELS) is not None:
            raise ConfigError(f"{LEVELS}: the levels of {DESIGN}=strength, which this sweep does not use; add "
                              f"{DESIGN}=strength, or give one level to a policy with augmentation.strength=S")
        expanded = [job]
        if design != "grid":
            cfg = load(job)
            policy = cfg.hydra.runtime.choices.get("augmentation") or _value(job, "augmentation")
            units = augment.units(cfg.augmentation)
            base = [o for o in job if _name(o) not in ("augmentation", DESIGN, LEVELS)]
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
    """The strength levels of a job: its own `sweep.levels=` (one level of a swept list, or a [list]), else the
    config's sweep.levels."""
    import yaml

    from ablation.core.errors import ConfigError

    given = _value(job, LEVELS)
    value = yaml.safe_load(given) if given is not None else OmegaConf.select(defaults, LEVELS, default=None)
    value = [value] if value is None or isinstance(value, (int, float, str)) else list(value)
    if not value or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in value):
        raise ConfigError(f"{LEVELS}: expected levels >= 0 such as {LEVELS}=0,0.5,1,2 (1 = the policy as written), "
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

    from ablation.core.errors import ConfigError

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
