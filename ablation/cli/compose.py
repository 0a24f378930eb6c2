"""The side commands' configs composed without a Hydra job (for callers in Python: tests, scripts): the same
config files and overrides as the command line, a bad override as one ConfigError line, paths applied."""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from ablation.core import guard, paths, renamed

CONF = paths.CONF


def compose_app(config_name: str, overrides: list[str]) -> DictConfig:
    """The config a command composes (config_name: config, report, predict, ui, expand, preview)."""
    from hydra.errors import HydraException

    from ablation.core.errors import ConfigError

    renamed.check_overrides(overrides)
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name, overrides=list(overrides))
    except HydraException as exc:  # an override the config does not have, a missing option
        raise ConfigError(str(exc).splitlines()[0]) from None
    paths.configure(cfg.get("paths"))
    return cfg


def renamed_refused(hydra_main: Callable) -> Callable:
    """A command's Hydra entry (put it above @hydra.main) that first refuses a key renamed since (design=,
    inpaint.mask=, augmentation.where= ...) on its command line with one line naming the new key, where Hydra
    would only say the config lacks the old one."""
    @functools.wraps(hydra_main)
    def main(*args, **kwargs):
        if not args and not kwargs:  # the console entry: the overrides are the command line's
            with guard.guard():
                renamed.check_overrides(sys.argv[1:])
        return hydra_main(*args, **kwargs)
    return main


def compose_from_argv(overrides: list[str]) -> DictConfig:
    """The run config (config.yaml) with these overrides."""
    return compose_app("config", overrides)
