"""Checks of single config values, each failing with one line that names the key, what it expects and what it got."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from ablation.core.errors import ConfigError


def number(cfg: DictConfig, key: str, *, minimum: float, integer: bool = False, optional: bool = False,
            strict: bool = False) -> None:
    """cfg.<key> must be a number >= minimum (> minimum when strict); null allowed when optional."""
    value = OmegaConf.select(cfg, key, throw_on_missing=False)
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise ConfigError(f"{key}: expected {kind}{' or null' if optional else ''}, got {value!r}")
    if value < minimum or (strict and value == minimum):
        raise ConfigError(f"{key}: expected {kind} {'>' if strict else '>='} {minimum}, got {value!r}")


def choice(cfg: DictConfig, key: str, allowed) -> None:
    """cfg.<key> must be one of allowed."""
    value = OmegaConf.select(cfg, key, throw_on_missing=False)
    if value not in allowed:
        raise ConfigError(f"{key}: expected one of {'|'.join(map(str, allowed))}, got {value!r}")
