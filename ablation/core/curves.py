"""What one run's per-epoch curves say: the overfitting gap by several estimators, and whether training had
finished. The curves are the ones every run logs (train_clean/loss, val/loss and the monitored metric per epoch,
steps from 1); the report reads them back from MLflow.

Gap estimators (report.gap picks the one verdicts use, auc by default; docs/decision.md compares their signal
to noise):
- best:   val loss - clean train loss at the best epoch (one point of a noisy curve; what runs log as best/gap_loss);
- window: the mean gap over the 5 epochs centred on the best epoch;
- last5:  the mean gap over the last 5 epochs trained;
- auc:    the area under the gap curve per epoch (the mean gap over every epoch trained);
- test_loss: the test loss with the best weights (no gap, the loss that generalisation ends at);
- paired_auc: of a seed's policy run and baseline run, the mean gap over the epochs both trained (paired()).
  auc averages over every epoch a run trained, so with early stopping a policy that trains longer is charged
  for its later, wider epochs: the same gap curve stopped at 30 and at 60 epochs differs by as much as the
  effects the report finds. paired_auc compares the two runs over the same epochs."""
from __future__ import annotations

import numpy as np
from scipy import stats

RUN_ESTIMATORS = ("best", "window", "last5", "auc", "test_loss")  # one number per run
ESTIMATORS = ("paired_auc", *RUN_ESTIMATORS)
WINDOW = 5  # epochs that window and last5 average
TREND_EPOCHS = 10  # the last epochs (at most half of those trained) whose trend says "still improving"
TREND_P = 0.1  # one-sided evidence that counts as "still improving"


def gaps(train_clean_loss: np.ndarray, val_loss: np.ndarray, best_epoch: int, best_gap: float,
         test_loss: float) -> dict[str, float]:
    """Every estimator for one run. The loss curves are indexed by epoch - 1; best_epoch counts from 1."""
    gap = np.asarray(val_loss, dtype=float) - np.asarray(train_clean_loss, dtype=float)
    out = {"best": float(best_gap), "test_loss": float(test_loss)}
    if not len(gap) or not np.isfinite(gap).any():
        return {**out, "window": np.nan, "last5": np.nan, "auc": np.nan}
    at = int(np.clip(best_epoch - 1, 0, len(gap) - 1)) if np.isfinite(best_epoch) else len(gap) - 1
    low = max(0, min(at - WINDOW // 2, len(gap) - WINDOW))
    out["window"] = float(np.nanmean(gap[low:low + WINDOW]))
    out["last5"] = float(np.nanmean(gap[-WINDOW:]))
    out["auc"] = float(np.nanmean(gap))
    return out


def paired(policy_gap: np.ndarray, baseline_gap: np.ndarray) -> float:
    """paired_auc's difference for one seed: the mean gap of the policy run minus that of the baseline run, both
    over the epochs both trained (NaN when either has no curve)."""
    policy_gap, baseline_gap = np.asarray(policy_gap, dtype=float), np.asarray(baseline_gap, dtype=float)
    shared = min(len(policy_gap), len(baseline_gap))
    if not shared:
        return np.nan
    return float(np.nanmean(policy_gap[:shared]) - np.nanmean(baseline_gap[:shared]))


def unfinished(monitored: np.ndarray, best_epoch: float, epoch_limit: float, higher_is_better: bool) -> bool:
    """True when the comparison is not over yet: the best epoch is the last one trained, or training ran to the
    epoch limit (early stopping did not end it) while the monitored metric was still improving over its last
    epochs (a one-sided trend test that allows for correlated epochs, trend_p)."""
    monitored = np.asarray(monitored, dtype=float)
    monitored = monitored[np.isfinite(monitored)]
    trained = len(monitored)
    if not trained:
        return False
    if np.isfinite(best_epoch) and best_epoch >= trained:
        return True
    if not (np.isfinite(epoch_limit) and trained >= epoch_limit) or trained < 6:
        return False
    tail = monitored[-min(TREND_EPOCHS, trained // 2):]
    return bool(trend_p(tail if higher_is_better else -tail) < TREND_P)


def trend_p(y: np.ndarray) -> float:
    """One-sided p value that y rises, from a least-squares slope whose standard error allows for serially
    correlated epochs (AR(1) residuals: the effective number of epochs n (1 - r1) / (1 + r1), Santer et al. 2000).
    Consecutive epochs of one run are not independent draws; a plain regression test takes a slow wander for a
    trend. On 10 epochs the correction is partial: with lag-1 correlation 0.5 it holds the test near its level
    (11% at 10%, where the plain test gives 18%); at 0.8, 16% where the plain one gives 28%."""
    y = np.asarray(y, dtype=float)
    n = len(y)
    if n < 4:
        return 1.0
    fit = stats.linregress(np.arange(n), y)
    residuals = y - (fit.intercept + fit.slope * np.arange(n))
    denominator = float(np.sum(residuals ** 2))
    r1 = float(np.sum(residuals[1:] * residuals[:-1]) / denominator) if denominator > 0 else 0.0
    # r1 from a few residuals is biased low by about (1 + 3 r1) / n (Marriott and Pope 1954); negative
    # correlation is not used to sharpen the test.
    r1 = min(max(r1 + (1 + 3 * r1) / n, 0.0), 0.95)
    effective = n * (1 - r1) / (1 + r1)
    if effective <= 2 or not np.isfinite(fit.stderr) or fit.stderr == 0:
        return 0.0 if fit.slope > 0 and fit.stderr == 0 else 1.0
    se = fit.stderr * np.sqrt((n - 2) / (effective - 2))
    return float(stats.t.sf(fit.slope / se, effective - 2))
