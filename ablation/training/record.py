"""What a run records in MLflow besides its per-epoch rows: what it trained on and with (before fit), and what
came out (after the best weights are restored). The run's shape is in ablation.training.run; this is its paperwork."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ablation import datasets, tracking
from ablation.lenses import corruptions, per_class
from ablation.training import figures, normalize, tasks
from ablation.training.plan import RunPlan


def inputs(tracker: tracking.Tracker, cfg: DictConfig, plan: RunPlan, splits: datasets.Splits,
           normalization: normalize.Normalization, scratch: Path, metrics: dict) -> None:
    """The resolved config, the policy, a preview of it, the data's sizes, the label mapping, skipped files."""
    tracker.log_params(tracking.flatten(cfg))
    tracker.log_params(normalization.params())  # the statistics the model's normalisation layer applies
    tracker.log_text(json.dumps(normalization.to_dict(), indent=1), "normalization.json")
    tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    tracker.log_text(json.dumps(plan.policy.to_dict(), indent=2), "policy.json")
    tracker.log_figure(figures.preview_grid(splits.train.x[0], plan.policy, n=8, seed=plan.seed,
                                          partners=splits.train.x[1:9]), "augmentation_preview.png")
    tracker.log_metrics({"data/n_train": len(splits.train.y), "data/n_val": len(splits.val.y),
                         "data/n_test": len(splits.test.y), "data/num_classes": splits.num_classes,
                         "data/skipped_images": len(splits.skipped), **metrics})
    # The label mapping the model's outputs follow, fixed by the training split.
    tracker.log_text(json.dumps({"class_names": splits.class_names,
                                 "class_indices": {n: i for i, n in enumerate(splits.class_names)}}, indent=1),
                     "labels.json")
    # The Dataset column: each split as an MLflow dataset, its digest from the data's cache key.
    tracker.log_inputs(tracking.dataset_records(
        cfg.dataset.name, datasets.cache_key(cfg.dataset), data_source(cfg.dataset),
        {"train": splits.train, "validation": splits.val, "test": splits.test}))
    if splits.skipped:  # dataset.on_bad_image=skip: which files were left out, and why
        pd.DataFrame(splits.skipped, columns=["file", "reason"]).to_csv(scratch / "skipped_images.csv", index=False)
        tracker.log_file(scratch / "skipped_images.csv")


def data_source(dataset_cfg) -> str:
    """Where a dataset's images come from: its files' path, or the loader that generates or ships them."""
    path = dataset_cfg.get("path")
    return str(path) if path else f"ablation.datasets.load_{dataset_cfg.name}"


def results(tracker: tracking.Tracker, plan: RunPlan, scores: dict, history: pd.DataFrame, best: dict,
            times: dict, scratch: Path) -> dict:
    """test/* from the best weights, best/* at the best epoch, the history and its learning curves; returns the
    final metrics."""
    # The loss and the task's metrics (accuracy; or mae and psnr): test/*, and best/* at the best epoch.
    gaps = [m for m in ("accuracy", "loss") if m in scores]
    final = {**{f"test/{m}": v for m, v in scores.items()}, "best_epoch": best["epoch"],
             **{f"best/gap_{m}": best.get(f"gap/{m}") for m in gaps},
             **{f"best/val_{m}": best.get(f"val/{m}") for m in scores},
             **{f"best/train_clean_{m}": best.get(f"train_clean/{m}") for m in scores if m != "loss"}, **times}
    tracker.log_metrics(final)
    history.to_csv(scratch / "history.csv", index=False)
    tracker.log_file(scratch / "history.csv")
    tracker.log_figure(figures.learning_curves(history, best_epoch=best["epoch"], title=plan.name),
                       "learning_curves.png")
    return final


def classes(tracker: tracking.Tracker, plan: RunPlan, model, test: datasets.Split, class_names: list[str],
            scratch: Path) -> dict:
    """A classifier's per-class test accuracy (test_class/<class>/accuracy, per_class.csv) and its confusion
    matrix (confusion.csv, confusion.png), from the best weights (model: models.for_inference)."""
    started = time.perf_counter()
    matrix = per_class.confusion(np.asarray(test.y, int), per_class.predict(model, test.x), len(class_names))
    scores = per_class.metrics(matrix, class_names)
    pd.DataFrame({"class": class_names, "images": matrix.sum(axis=1), "correct": matrix.diagonal(),
                  "accuracy": per_class.accuracies(matrix)}).to_csv(scratch / "per_class.csv", index=False)
    pd.DataFrame(matrix, index=pd.Index(class_names, name="true class"),
                 columns=class_names).to_csv(scratch / "confusion.csv")
    for file in ("per_class.csv", "confusion.csv"):
        tracker.log_file(scratch / file)
    tracker.log_figure(figures.confusion(matrix, class_names, title=plan.name), "confusion.png")
    scores["time/per_class_s"] = time.perf_counter() - started
    tracker.log_metrics(scores)
    return scores


def robustness(tracker: tracking.Tracker, plan: RunPlan, model, test: datasets.Split, lenses_cfg) -> dict:
    """The best model on its test split under every corruption and severity of lenses_cfg (robust/*), and how long
    that took (time/robust_s)."""
    started = time.perf_counter()
    scores = corruptions.evaluate(lambda images: per_class.predict(model, images), test.x, test.y,
                                  list(lenses_cfg.corruptions), list(lenses_cfg.severities), seed=plan.seed,
                                  limit=lenses_cfg.get("corruption_images"))
    scores["time/robust_s"] = time.perf_counter() - started
    tracker.log_metrics(scores)
    return scores


def headline(plan: RunPlan, final: dict) -> str:
    """The line a run ends with: its test score and its gap at the best epoch."""
    metric = tasks.KINDS[plan.task].headline
    gap = final["best/gap_loss"]
    return (f"{plan.name}: test {metric} {final[f'test/{metric}']:.3f}, gap (loss) at best epoch {final['best_epoch']}: "
            f"{gap if gap is not None else float('nan'):.3f}")
