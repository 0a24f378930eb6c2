"""A run's figures, logged with the run: its augmentation preview, its learning curves and its confusion matrix.
Built with matplotlib.figure.Figure, not pyplot, so nothing is registered globally, nothing leaks between runs and
no display is needed."""
from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure


def preview_grid(image: np.ndarray, policy, n: int, seed: int, columns: int = 9,
                 partners: np.ndarray | None = None) -> Figure:
    """The source image and n augmented versions of it (policy.augment_batch, seeded), left to right. A policy
    with batch mixing (MixUp, CutMix) mixes version i with `partners[i]` (other training images, augmented too),
    titled with the share the source image keeps."""
    rng = np.random.default_rng(seed)
    augmented = policy.augment_batch(np.repeat(image[None], n, axis=0), rng)
    titles = [f"#{i + 1}" for i in range(n)]
    if policy.mix is not None and partners is not None and len(partners):
        from ablation.augment import mixing

        others = policy.augment_batch(partners[np.arange(n) % len(partners)], rng)
        numbers = mixing.draw(policy.mix, 2 * n, *image.shape[:2], rng)
        numbers["permutation"] = np.concatenate([np.arange(n, 2 * n), np.arange(n)]).astype(np.int32)
        augmented = mixing.mix_images(np.concatenate([augmented, others]), numbers)[:n]
        titles = [f"#{i + 1} ({w:.0%} own)" for i, w in enumerate(numbers["weight"][:n])]
    panels = [("original", image)] + list(zip(titles, augmented))
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
    """Loss and accuracy (image tasks: PSNR) per epoch: Keras' augmented-batch training curve, the clean training
    evaluation and validation. The distance between clean-train and validation is the overfitting gap."""
    fig = Figure(figsize=(10, 4), constrained_layout=True)
    axes = fig.subplots(1, 2)
    styles = {"train": ("augmented train batches", ":", "tab:gray"), "train_clean": ("train (clean)", "-", "tab:blue"),
              "val": ("validation", "-", "tab:orange")}
    second = next((m for m in ("accuracy", "psnr", "mae") if f"val/{m}" in history), "accuracy")
    for ax, metric in zip(axes, ("loss", second)):
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


def confusion(matrix: np.ndarray, class_names: list[str], title: str = "") -> Figure:
    """A run's confusion matrix as row shares (each true class sums to 1), with the counts written in."""
    matrix = np.asarray(matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = matrix / matrix.sum(axis=1, keepdims=True)
    k = len(class_names)
    fig = Figure(figsize=(2.5 + 0.45 * k, 2.0 + 0.4 * k), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(np.nan_to_num(shares), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=60 if k > 12 else 0, fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 30:
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=6,
                        color="white" if shares[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, label="share of the true class")
    ax.set_title(title or "test confusion matrix", fontsize=9)
    return fig
