"""Config keys that were renamed, old -> new, in one table: an old key on the command line or in a config file is
refused with one line naming its replacement, and the params of runs recorded under the old names are read under
the new ones (ablation.tracking.runs)."""
from __future__ import annotations

from ablation.core.errors import ConfigError

# old key: new key. `inpaint` stands for every key under it (inpaint.mask -> task.mask).
RENAMED = {
    "design": "sweep.design",
    "strength": "sweep.levels",
    "force": "sweep.rerun",
    "inpaint": "task",
    "augmentation.where": "augmentation.placement",
    "augmentation.mode": "augmentation.placement",
}
# Old values that the new key spells otherwise (augmentation.mode=online is placement host).
VALUES = {"augmentation.mode": {"online": "host", "offline": "offline"}}


def new_key(key: str) -> str | None:
    """The key that replaced `key` (inpaint.mask -> task.mask), or None when `key` was not renamed."""
    if key in RENAMED:
        return RENAMED[key]
    head, dot, rest = key.partition(".")
    return f"{RENAMED[head]}.{rest}" if dot and head == "inpaint" else None


def new_value(key: str, value: str) -> str:
    """An old key's value as its new key spells it (each item of a swept list: online,offline -> host,offline)."""
    table = VALUES.get(key, {})
    return ",".join(table.get(v.strip(), v.strip()) for v in value.split(","))


def message(key: str, value: str | None = None) -> str:
    """The one line that refuses old `key`, naming its replacement."""
    new = new_key(key)
    if value is None:
        return f"{key}: renamed to {new}"
    hint = " with task=inpaint" if key.startswith("inpaint.") else ""
    return f"{key}: renamed to {new}; use {new}={new_value(key, value)}{hint}"


def check_overrides(overrides) -> None:
    """Raise ConfigError for the first command-line override (key=value, +key=value, ~key) of a renamed key."""
    for override in overrides:
        if override.startswith("-"):  # a flag of Hydra's (-m, --config-dir ...), not an override
            continue
        key, eq, value = override.lstrip("+~").partition("=")
        if new_key(key.strip()) is not None:
            raise ConfigError(message(key.strip(), value.strip("'\"") if eq else None))


def check_config(cfg) -> None:
    """Raise ConfigError for a renamed key in the composed config (a user's config file written before the
    rename, or a key added with `+`): Hydra merges a file's keys whether or not the config has them."""
    present = [key for key in ("design", "strength", "force", "inpaint") if key in cfg]
    augmentation = cfg.get("augmentation")
    if augmentation is not None and hasattr(augmentation, "keys"):
        present += [f"augmentation.{key}" for key in ("where", "mode") if key in augmentation]
    if present:
        raise ConfigError(f"{message(present[0])} (ablation/conf/config.yaml and docs/configuration.md: the "
                          f"current keys)")
