"""The report's settings (report.*: correction, gap estimator, alpha, power, margins, underfit thresholds), checked
before a sweep trains anything and again before a report is built."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from ablation.core import curves, stats
from ablation.core.errors import ConfigError
from ablation.core.values import choice, number


def check(cfg: DictConfig) -> None:
    """report.*: how the report decides (ablation/report/decide.py)."""

    if cfg.get("report") is None:
        return
    choice(cfg, "report.correction", stats.CORRECTIONS)
    choice(cfg, "report.gap", curves.ESTIMATORS)
    for key in ("report.alpha", "report.power"):
        number(cfg, key, minimum=0, strict=True)
        if OmegaConf.select(cfg, key) >= 1:
            raise ConfigError(f"{key}: expected a number in (0, 1), got {OmegaConf.select(cfg, key)!r}")
    for key in ("margin.relative", "margin.psnr", "margin.gap", "underfit.accuracy", "underfit.psnr"):
        number(cfg, f"report.{key}", minimum=0)
    if OmegaConf.select(cfg, "report.margin.accuracy", default=None) is not None:
        number(cfg, "report.margin.accuracy", minimum=0)
