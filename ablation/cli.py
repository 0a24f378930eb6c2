"""Helpers for the side commands (report, ui): the same config and overrides as a run, without a Hydra job."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

CONF = Path(__file__).resolve().parent / "conf"


def compose_from_argv(overrides: list[str]) -> DictConfig:
    from ablation import paths

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    paths.configure(cfg.get("paths"))
    return cfg
