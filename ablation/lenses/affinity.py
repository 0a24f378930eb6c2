"""Affinity and diversity of each policy (Gontijo-Lopes, Smullin, Cubuk and Dyer, "Tradeoffs in Data
Augmentation: An Empirical Study", ICLR 2021), per policy run, against the `none` run of the same dataset, model,
setting and seed:

    affinity  = accuracy of the none model on the validation split augmented once by the policy (one fixed draw
                per image) / its accuracy on the clean validation split. How far off the data's distribution the
                augmented images lie: 1 for the identity, near chance / clean accuracy for a policy that destroys
                the images.
    diversity = the policy run's final training loss on its augmented batches / the none run's final training
                loss. How much harder the augmented data is to fit.

The paper's finding: neither alone predicts the gain; the policies that help score high on both.

Both come from what runs log (the none run's model.keras and config.yaml, the policy run's config.yaml, the
training loss) and are computed when the report is built; each is then logged to its run as the metrics
`affinity` and `diversity`, so a rebuilt report reads them back instead of computing them again. Batch mixing
(MixUp, CutMix) is not applied to the validation images: a mixed image has no single label to score; the
policy's per-image transforms are."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from ablation import augment, datasets, tracking
from ablation.core import renamed
from ablation.core.names import BASELINE, BLOCK
from ablation.lenses import per_class

log = logging.getLogger(__name__)
METRICS = ("affinity", "diversity")
DRAW = 1_000_003  # the augmentation draw of the validation images: default_rng([seed, DRAW]), fixed per seed


def of_runs(cfg, runs: pd.DataFrame) -> pd.DataFrame:
    """run_id, affinity, diversity for every classification run with a `none` run of its block and seed (none
    itself: 1, 1). Computes and logs what a run does not hold yet."""
    rows = []
    if runs.empty:
        return pd.DataFrame(columns=["run_id", *METRICS])
    classify = runs.get("tags.task", pd.Series("classify", index=runs.index)).fillna("classify") == "classify"
    with tracking.scratch_dir() as scratch:
        for (_, seed), group in runs[classify].groupby([runs[BLOCK].astype(str).agg("|".join, axis=1), "seed"]):
            base = group[group["augmentation"] == BASELINE]
            if base.empty:
                continue
            base = base.iloc[0]
            others = group[group["augmentation"] != BASELINE]
            rows.append({"run_id": base["run_id"], "affinity": 1.0, "diversity": 1.0})
            todo = others[~np.isfinite(others.get("metrics.affinity", pd.Series(np.nan, index=others.index))
                                       .astype(float))]
            scorer = _Scorer(cfg.tracking, base, Path(scratch)) if len(todo) else None
            for _, r in others.iterrows():
                affinity = r.get("metrics.affinity", math.nan)
                if not np.isfinite(affinity) and scorer is not None:
                    affinity = scorer.affinity(r, int(seed))
                diversity = _ratio(r.get("metrics.train/loss"), base.get("metrics.train/loss"))
                rows.append({"run_id": r["run_id"], "affinity": affinity, "diversity": diversity})
                fresh = {k: v for k, v in (("affinity", affinity), ("diversity", diversity))
                         if np.isfinite(v) and not np.isfinite(r.get(f"metrics.{k}", math.nan))}
                if fresh:
                    tracking.log_to_run(cfg, r["run_id"], metrics=fresh)
    return pd.DataFrame(rows, columns=["run_id", *METRICS])


def of_samples(cfg, images: np.ndarray, labels: np.ndarray, scratch: Path) -> float | None:
    """Sample affinity of generated training images (ablation/training/synthetic.py): the accuracy of the `none` classifier
    of the same dataset, model, settings and seed on them; low when they do not look like their class. None, with a
    line saying why, when that run has not finished in this experiment or kept no model."""
    none_key = tracking.config_hash(cfg, augment.build({"name": BASELINE, "transforms": []}).fingerprint)
    base = tracking.finished_run(cfg, none_key)
    if base is None:
        log.info("synthetic: no finished %s run of seed %s with these settings in experiment %s: the sample "
                 "affinity is not measured", BASELINE, cfg.seed, cfg.experiment_name)
        return None
    model_file = tracking.download(cfg.tracking, base.info.run_id, "model.keras", scratch / "baseline")
    if model_file is None:
        log.info("synthetic: run %s has no model.keras (tracking.log_model=false): the sample affinity is not "
                 "measured", base.info.run_id)
        return None
    return float(np.mean(per_class.predict(_load_model(model_file), images) == np.asarray(labels)))


def _load_model(path: Path):
    import keras

    from ablation.augment import device  # noqa: F401  registers the in-model augmentation layers

    return keras.models.load_model(path, compile=False)


def _ratio(a, b) -> float:
    a, b = float(a) if a is not None else math.nan, float(b) if b is not None else math.nan
    return a / b if np.isfinite(a) and np.isfinite(b) and b > 0 else math.nan


class _Scorer:
    """The none model of one seed and its validation split, loaded once for that seed's policies."""

    def __init__(self, tracking_cfg, base: pd.Series, scratch: Path):
        self.tracking_cfg = tracking_cfg
        self.scratch = scratch / base["run_id"]
        self.model = None
        model_file = tracking.download(tracking_cfg, base["run_id"], "model.keras", self.scratch)
        config_file = tracking.download(tracking_cfg, base["run_id"], "config.yaml", self.scratch)
        if model_file is None or config_file is None:
            log.info("affinity: run %s has no model.keras (tracking.log_model=false); its seed gets none",
                     base["run_id"])
            return
        self.model = _load_model(model_file)
        self.val = datasets.load(OmegaConf.load(config_file).dataset).val
        self.clean = self._accuracy(self.val.x)

    def _accuracy(self, images: np.ndarray) -> float:
        return float(np.mean(per_class.predict(self.model, images) == self.val.y))

    def affinity(self, run: pd.Series, seed: int) -> float:
        if self.model is None or not self.clean:
            return math.nan
        config_file = tracking.download(self.tracking_cfg, run["run_id"], "config.yaml", self.scratch / run["run_id"])
        if config_file is None:
            return math.nan
        policy = augment.build(recorded_policy(OmegaConf.load(config_file)), image_shape=self.val.x.shape[1:])
        augmented = policy.augment_batch(np.ascontiguousarray(self.val.x), np.random.default_rng([seed, DRAW]))
        return self._accuracy(augmented) / self.clean


def recorded_policy(config) -> dict:
    """The augmentation node of a run's logged config.yaml, without how the policy was placed under keys since
    renamed (augmentation.where, augmentation.mode: runs recorded before augmentation.placement)."""
    node = OmegaConf.to_container(config.augmentation, resolve=True)
    return {k: v for k, v in node.items() if renamed.new_key(f"{augment.ROOT_KEY}.{k}") is None}

