"""matplotlib figures used by tracking and report. Figures are built with matplotlib.figure.Figure, not pyplot,
so nothing is registered globally, nothing leaks between runs and no display is needed."""
from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure


def preview_grid(image: np.ndarray, policy, n: int, seed: int, columns: int = 9) -> Figure:
    """The source image and n augmented versions of it (policy.augment_batch, seeded), left to right."""
    rng = np.random.default_rng(seed)
    augmented = policy.augment_batch(np.repeat(image[None], n, axis=0), rng)
    panels = [("original", image)] + [(f"#{i + 1}", img) for i, img in enumerate(augmented)]
    cols = min(columns, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(1.4 * cols, 1.5 * rows + 0.4), layout="constrained")
    fig.suptitle(f"augmentation: {policy.name}")
    for ax, (title, img) in zip(fig.subplots(rows, cols, squeeze=False).flat, panels):
        gray = img.shape[-1] == 1
        ax.imshow(img[..., 0] if gray else img, cmap="gray" if gray else None, vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_title(title, fontsize=8)
    for ax in fig.axes:
        ax.set_axis_off()
    return fig


def learning_curves(history, best_epoch: int | None = None, title: str = "") -> Figure:
    """Loss and accuracy per epoch: Keras' augmented-batch training curve, the clean training evaluation and
    validation. The distance between clean-train and validation is the overfitting gap."""
    fig = Figure(figsize=(10, 4), constrained_layout=True)
    axes = fig.subplots(1, 2)
    styles = {"train": ("augmented train batches", ":", "tab:gray"), "train_clean": ("train (clean)", "-", "tab:blue"),
              "val": ("validation", "-", "tab:orange")}
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for prefix, (label, line, color) in styles.items():
            key = f"{prefix}/{metric}"
            if key in history and history[key].notna().any():
                ax.plot(history["epoch"], history[key], line, color=color, label=label, marker=".")
        if f"train_clean/{metric}" in history and f"val/{metric}" in history:
            ax.fill_between(history["epoch"], history[f"train_clean/{metric}"], history[f"val/{metric}"],
                            color="tab:red", alpha=0.12, label="gap")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="black", linewidth=0.8, linestyle="--", label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig
