"""Every figure of the assignments: sample images, augmentations, loss/accuracy curves, the LR
schedule and LR range test, the misclassified gallery, GradCAM overlays, per-class accuracy and the
confusion matrix.

Each function takes arrays or result objects (computed in `era_utils.analysis`, `engine`,
`gradcam`, `lr_finder`, `verification`, `loaders.augment_examples`), never a loader, and returns a
`matplotlib.figure.Figure`; none calls `plt.show()`. Figures are built with `Figure(...)`, not
pyplot, so a loop that draws hundreds of them keeps no references behind; in a notebook a returned
Figure displays as the cell's last expression. `save_figure(fig, "results/x.png")` writes a PNG.

Images may come as uint8 (H, W, C), float (H, W, C) in [0, 1], or normalised (C, H, W) tensors
(pass mean/std to undo the normalisation); they are always shown clipped to [0, 1], grayscale
with a gray colour map, titled with class names rather than indices.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import Formatter, MaxNLocator

from era_utils.analysis import denormalize
from era_utils.files import atomic_write

__all__ = [
    "DistinctFormatter",
    "plot_augmentations",
    "plot_confusion_matrix",
    "plot_gradcam",
    "plot_history",
    "plot_lr",
    "plot_lr_finder",
    "plot_misclassified",
    "plot_per_class_accuracy",
    "plot_roc",
    "plot_samples",
    "plot_top_losses",
    "save_figure",
    "to_display_image",
]

PANEL_INCHES = 2.0  # one image panel: 2 rows of 5 make a 10 x ~5 inch figure, readable in Colab
TITLE_INCHES = 0.22  # height of one line of panel title


# --------------------------------------------------------------------------- image helpers


def to_display_image(
    image: np.ndarray | torch.Tensor,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> np.ndarray:
    """Any one image -> float32 (H, W, C) in [0, 1] (C = 1 or 3), ready for imshow.

    uint8 is scaled by 1/255; a (C, H, W) tensor or array is transposed; mean/std undo Normalize.
    """
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]  # a batch of one, e.g. from a batched augmentation
        if t.dim() == 2:
            t = t.unsqueeze(0)
        if t.dim() != 3:
            raise ValueError(f"an image must be (C, H, W), (H, W, C) or (H, W); got shape {tuple(t.shape)}")
        if t.dtype == torch.uint8:
            t = t.float() / 255.0
        if t.shape[0] not in (1, 3) and t.shape[-1] in (1, 3):
            t = t.permute(2, 0, 1)  # an HWC tensor (e.g. straight from the uint8 arrays)
        return denormalize(t, mean, std)  # (H, W, C) in [0, 1]
    a = np.asarray(image)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise ValueError(f"an image must be (H, W, C), (C, H, W) or (H, W); got shape {a.shape}")
    if a.shape[-1] not in (1, 3, 4) and a.shape[0] in (1, 3):
        a = a.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if a.shape[-1] == 4:
        a = a[..., :3]  # drop alpha
    a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
    if mean is not None or std is not None:
        s = np.ones(1, np.float32) if std is None else np.asarray(std, np.float32).ravel()
        m = np.zeros(1, np.float32) if mean is None else np.asarray(mean, np.float32).ravel()
        a = a * s + m
    return np.clip(a, 0.0, 1.0)


def _images_list(images: Any, n: int | None, mean=None, std=None) -> list[np.ndarray]:
    """A batch ((N, H, W, C) uint8/float, (N, C, H, W) tensor, or a list) -> list of display images."""
    # A 3-d array is a batch of grayscale (N, H, W) images here, never one image.
    batch = images[:n] if isinstance(images, (torch.Tensor, np.ndarray)) else list(images)[:n]
    return [to_display_image(im, mean, std) for im in batch]


def _clear(ax: Axes) -> None:
    """No ticks, no frame; unlike axis('off') a y-label (row name) still shows."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _show(ax: Axes, image: np.ndarray) -> None:
    """imshow a display image; one channel in gray with a fixed 0..1 range (no auto-contrast)."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    _clear(ax)


def _name(classes: Sequence[str] | None, index: int) -> str:
    index = int(index)
    if classes is not None and 0 <= index < len(classes):
        return str(classes[index])
    return str(index)


def _grid(n: int, ncols: int, title_lines: int = 1, panel: float = PANEL_INCHES,
          rows_per_item: int = 1) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure with rows of `ncols` image panels; spare panels removed."""
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols)) * rows_per_item
    fig = Figure(
        figsize=(ncols * panel, nrows * (panel + title_lines * TITLE_INCHES) + 0.4),
        layout="constrained",
    )
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _attr(item: Any, name: str) -> Any:
    """item.name, or item[name] for dict-like items."""
    return item[name] if isinstance(item, Mapping) else getattr(item, name)


def _to_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


# --------------------------------------------------------------------------- saving


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Write `fig` as a PNG at `path` (parent folders created; ".png" added if no suffix); return the path."""
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    # bbox "tight": a safety net for figures a student has added labels to after layout.
    with atomic_write(path, "wb") as f:
        fig.savefig(f, dpi=dpi, format="png", facecolor="white", bbox_inches="tight", pad_inches=0.1)
    return path


# --------------------------------------------------------------------------- data


def plot_samples(
    images: Any,
    labels: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    classes: Sequence[str] | None = None,
    *,
    n: int = 10,
    ncols: int = 5,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    title: str = "Sample training images",
) -> Figure:
    """A grid of the first `n` images titled with their class names.

    `images`: (N, H, W, C) uint8/float arrays, a normalised (N, C, H, W) tensor (give mean/std), or
    an `ImageArrays` (its labels and classes are used when not given).
    """
    if hasattr(images, "images") and hasattr(images, "labels"):  # ImageArrays
        labels = images.labels if labels is None else labels
        classes = (getattr(images, "classes", None) or None) if classes is None else classes
        images = images.images
    shown = _images_list(images, n, mean, std)
    if not shown:
        raise ValueError("plot_samples: no images to show")
    lab = None if labels is None else _to_numpy(labels).ravel()
    if lab is not None and len(lab) < len(shown):
        raise ValueError(f"plot_samples: {len(shown)} images to show but only {len(lab)} labels; pass one label "
                         f"per image (or n={len(lab)}, or labels=None)")
    fig, axes = _grid(len(shown), ncols)
    for i, ax in enumerate(axes.flat):
        if i >= len(shown):
            ax.remove()
            continue
        _show(ax, shown[i])
        if lab is not None:
            ax.set_title(_name(classes, lab[i]), fontsize=10)
    fig.suptitle(title, fontsize=13)
    return fig


def plot_augmentations(
    images: Any,
    augmented: Any,
    labels: Sequence[int] | np.ndarray | None = None,
    classes: Sequence[str] | None = None,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    title: str = "Augmentation: originals (top) and augmented",
) -> Figure:
    """Before and after: the originals in the top row, the same images augmented in the rows below.

    `images`: the raw originals, uint8 (N, H, W, C) or an `ImageArrays` (its labels and classes are
    used when not given). `augmented`: the same images augmented, one row or several: what
    `loaders.augment_examples` returns, normalised (rows, n, C, H, W) (give the loader's mean/std),
    or display images (n, H, W, C) in [0, 1] / uint8. Only the first n originals are shown.
    """
    if hasattr(images, "images") and hasattr(images, "labels"):  # ImageArrays
        labels = images.labels if labels is None else labels
        classes = (getattr(images, "classes", None) or None) if classes is None else classes
        images = images.images
    rows_in = augmented if isinstance(augmented, (torch.Tensor, np.ndarray)) else np.asarray(augmented)
    if isinstance(rows_in, torch.Tensor) and rows_in.dim() == 5:
        augmented_rows = [_images_list(row, None, mean, std) for row in rows_in]  # (rows, n, C, H, W)
    elif isinstance(rows_in, np.ndarray) and rows_in.ndim == 5:
        augmented_rows = [_images_list(row, None, mean, std) for row in rows_in]
    else:
        augmented_rows = [_images_list(rows_in, None, mean, std)]
    ncols = len(augmented_rows[0])
    raw = list(images[:ncols])
    if len(raw) != ncols:
        raise ValueError(f"{len(raw)} originals but {ncols} augmented images per row")
    originals = [to_display_image(im) for im in raw]  # raw images: not normalised
    lab = None if labels is None else _to_numpy(labels).ravel()
    fig = Figure(
        figsize=(ncols * PANEL_INCHES + 0.4, (1 + len(augmented_rows)) * (PANEL_INCHES + TITLE_INCHES) + 0.4),
        layout="constrained",
    )
    axes = fig.subplots(1 + len(augmented_rows), ncols, squeeze=False)
    for j in range(ncols):
        _show(axes[0, j], originals[j])
        if lab is not None:
            axes[0, j].set_title(_name(classes, lab[j]), fontsize=10)
        for r, row in enumerate(augmented_rows, start=1):
            _show(axes[r, j], row[j])
    axes[0, 0].set_ylabel("original", fontsize=11)
    for r in range(1, 1 + len(augmented_rows)):
        axes[r, 0].set_ylabel("augmented" if len(augmented_rows) == 1 else f"augmented #{r}", fontsize=11)
    fig.suptitle(title, fontsize=13)
    return fig


# --------------------------------------------------------------------------- training curves


def _series(history: Any, name: str) -> list[float]:
    values = history.get(name, []) if isinstance(history, Mapping) else getattr(history, name, [])
    return [float(v) for v in (values or [])]


class DistinctFormatter(Formatter):
    """Tick labels in scientific notation ("4.5e-04") with as many digits as it takes for no two
    ticks to read the same (a One Cycle axis at 3e-3 otherwise shows "3.0e-03" five times)."""

    def __call__(self, value: float, pos: int | None = None) -> str:
        return self.format_ticks([value])[0]

    def format_ticks(self, values) -> list[str]:
        for digits in range(1, 7):
            labels = [f"{v:.{digits}e}" if v else "0" for v in values]
            if len(set(labels)) == len(labels):
                return labels
        return labels


def plot_history(history: Any, title: str = "Training history", *, augmented: bool | str = False) -> Figure:
    """Loss and accuracy per epoch, train and test, from a `History` (or a dict with its keys:
    train_loss, train_acc, test_loss, test_acc; accuracy in %). Empty test lists are skipped.

    A run of one or two epochs has its values written beside its points (two dots are not a
    curve). `augmented`: the training images were augmented (a string: how, e.g. the recipe's
    `augment.describe()`), so where the test accuracy ends above the training accuracy a note says why
    that is expected.
    """
    fig = Figure(figsize=(11, 4.3), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, key, label in ((ax_loss, "loss", "Loss"), (ax_acc, "acc", "Accuracy (%)")):
        n_epochs = max((len(_series(history, f"{s}_{key}")) for s in ("train", "test")), default=0)
        for split, style in (("train", "-o"), ("test", "-s")):
            values = _series(history, f"{split}_{key}")
            if not values:
                continue
            epochs = np.arange(1, len(values) + 1)
            legend = f"{split}"
            if key == "acc":
                legend += f" (best {max(values):.2f}%)"
            line, = ax.plot(epochs, values, style, markersize=3 if n_epochs > 12 else 5, label=legend)
            if n_epochs <= 2:  # a value per point: the figure must say what it shows
                for x, y in zip(epochs, values):
                    ax.annotate(f"{y:.2f}" + ("%" if key == "acc" else ""), (x, y), xytext=(6, 0),
                                textcoords="offset points", va="center", fontsize=9, color=line.get_color())
        ax.set_xlabel("epoch")
        # Epochs are whole numbers; one or two points sit in the middle, not on a 0.96..1.04 axis.
        if 0 < n_epochs <= 12:
            ax.set_xticks(np.arange(1, n_epochs + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if n_epochs <= 2:
            ax.set_xlim(0.5, n_epochs + 0.9)
        ax.set_ylabel(label)
        ax.set_title(label.split(" (")[0] + " per epoch")
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    train_acc, test_acc = _series(history, "train_acc"), _series(history, "test_acc")
    if augmented and train_acc and test_acc and test_acc[-1] > train_acc[-1]:
        how = f" ({augmented})" if isinstance(augmented, str) else ""
        fig.text(0.5, -0.02, "Test accuracy above training accuracy is expected here: the training accuracy "
                 f"is measured on augmented images{how}, while the weights change, and the test images are not "
                 "augmented.", ha="center", va="top", fontsize=9, wrap=True)
    fig.suptitle(title, fontsize=13)
    return fig


def plot_lr(
    history_or_lrs: Any,
    steps_per_epoch: int | None = None,
    title: str = "Learning rate per step",
) -> Figure:
    """The learning rate of every optimizer step, numbered from 1 (One Cycle's ramp up and down),
    with epochs on the top axis when `steps_per_epoch` is known (given, or len(lrs) / epochs of a
    History): step k ends at epoch k / steps_per_epoch, so the peak of "epoch 5" sits at 5.0."""
    lrs = _series(history_or_lrs, "lrs") if not isinstance(history_or_lrs, (list, tuple, np.ndarray, torch.Tensor)) \
        else [float(v) for v in _to_numpy(history_or_lrs).ravel()]
    if steps_per_epoch is None and not isinstance(history_or_lrs, (list, tuple, np.ndarray, torch.Tensor)):
        epochs = len(_series(history_or_lrs, "train_loss"))
        if epochs and lrs and len(lrs) % epochs == 0:
            steps_per_epoch = len(lrs) // epochs
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    if not lrs:
        ax.text(0.5, 0.5, "no learning rates recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        return fig
    steps = np.arange(1, len(lrs) + 1)  # lrs[k - 1] is the LR step k trained with
    ax.plot(steps, lrs, color="tab:blue")
    peak = int(np.argmax(lrs)) + 1
    where = f"step {peak}" + (f" (end of epoch {peak / steps_per_epoch:.2f})" if steps_per_epoch else "")
    ax.plot([peak], [lrs[peak - 1]], "o", color="tab:red", label=f"peak {lrs[peak - 1]:.2e} at {where}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    # Each tick written out ("4.5e-04"): a shared "1e-4" offset label collides with the epoch axis.
    ax.yaxis.set_major_formatter(DistinctFormatter())
    if steps_per_epoch:
        spe = float(steps_per_epoch)
        top = ax.secondary_xaxis("top", functions=(lambda s: s / spe, lambda e: e * spe))
        top.set_xlabel("epoch")
    ax.set_title(title)
    return fig


def _mark_lr(ax: Axes, lrs: np.ndarray, curve: np.ndarray, lr: float, colour: str, style: str, label: str) -> None:
    """A vertical line at `lr` and a dot where it meets the curve: on the line, the curve read between
    the two sampled LRs around it (log scale), not at the nearest sample."""
    ax.axvline(lr, color=colour, linestyle=style, linewidth=1.5, label=label)
    xs, ys = np.log(lrs[: curve.size]), curve[: lrs.size]
    finite = np.isfinite(xs) & np.isfinite(ys)
    if finite.sum() and xs[finite][0] <= np.log(lr) <= xs[finite][-1]:  # the range test's LRs only grow
        ax.plot([lr], [float(np.interp(np.log(lr), xs[finite], ys[finite]))], "o", color=colour, markersize=7)


def plot_lr_finder(
    lrs: Sequence[float],
    losses: Sequence[float],
    suggestion: float | None = None,
    smoothed: Sequence[float] | None = None,
    *,
    ax: Axes | None = None,
    title: str = "LR range test",
    min_lr: float | None = None,
    rule: str | None = None,
    min_rule: str | None = None,
) -> Figure:
    """Loss against learning rate (log x) from an LR range test: the smoothed loss's minimum, the
    chosen max LR (`suggestion`) and, when given, One Cycle's min LR, each labelled with its rule.

    Draws into `ax` when given (LRFinderResult.plot(ax=...)) and returns its Figure. The y range
    stops a little above the starting loss, so the final blow-up does not flatten the curve.
    """
    lrs_a = _to_numpy(lrs).astype(float).ravel()
    loss_a = _to_numpy(losses).astype(float).ravel()
    smooth_a = None if smoothed is None else _to_numpy(smoothed).astype(float).ravel()
    if ax is None:
        fig = Figure(figsize=(8.5, 5), layout="constrained")
        ax = fig.subplots()
    else:
        fig = ax.figure
    if smooth_a is not None:
        ax.plot(lrs_a, loss_a, color="tab:blue", alpha=0.3, linewidth=1, label="loss")
        ax.plot(lrs_a[: len(smooth_a)], smooth_a, color="tab:blue", linewidth=2, label="smoothed loss")
    else:
        ax.plot(lrs_a, loss_a, color="tab:blue", linewidth=2, label="loss")
    ax.set_xscale("log")
    curve = smooth_a if smooth_a is not None else loss_a
    finite = curve[np.isfinite(curve)]
    if finite.size:
        low, start = float(finite.min()), float(finite[: max(1, finite.size // 10)].max())
        top = max(start, low) + 0.25 * max(abs(start - low), 0.1 * abs(start), 1e-3)
        ax.set_ylim(low - 0.05 * (top - low), min(top, float(finite.max()) + 0.05 * (top - low)))
        lowest = int(np.nanargmin(curve))
        ax.plot([lrs_a[lowest]], [curve[lowest]], "v", color="black", markersize=8,
                label=f"loss minimum at LR {lrs_a[lowest]:.2e}")
    if suggestion is not None and np.isfinite(suggestion):
        _mark_lr(ax, lrs_a, curve, suggestion, "tab:red", "--",
                 f"max LR {suggestion:.2e}" + (f": {rule}" if rule else ""))
    if min_lr is not None and np.isfinite(min_lr):
        _mark_lr(ax, lrs_a, curve, min_lr, "tab:green", ":",
                 f"min LR {min_lr:.2e}" + (f": {min_rule}" if min_rule else ""))
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    # Below the axes: the rules are sentences, and inside they would cover the curve.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8.5, frameon=False)
    return fig


# --------------------------------------------------------------------------- misclassified / GradCAM


def _item_title(item: Any, classes: Sequence[str] | None, with_loss: bool = False) -> str:
    title = (
        f"true: {_name(classes, _attr(item, 'true'))}\n"
        f"pred: {_name(classes, _attr(item, 'pred'))} ({float(_attr(item, 'confidence')):.2f})"
    )
    return title + (f"\nloss {float(_attr(item, 'loss')):.2f}" if with_loss else "")


def _nothing_to_show(message: str, title: str) -> Figure:
    """A small figure that says why a gallery is empty (a run must not fail for a perfect model)."""
    fig = Figure(figsize=(6, 1.6), layout="constrained")
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, wrap=True)
    fig.suptitle(title, fontsize=13)
    return fig


def _gallery(items: Sequence[Any], classes: Sequence[str] | None, ncols: int, title: str,
             with_loss: bool) -> Figure:
    lines = 3 if with_loss else 2
    fig, axes = _grid(len(items), ncols, title_lines=lines)
    for i, ax in enumerate(axes.flat):
        if i >= len(items):
            ax.remove()
            continue
        _show(ax, to_display_image(_attr(items[i], "image")))
        ax.set_title(_item_title(items[i], classes, with_loss), fontsize=9.5)
    fig.suptitle(title, fontsize=13)
    return fig


def plot_misclassified(
    items: Sequence[Any],
    classes: Sequence[str] | None = None,
    *,
    ncols: int = 5,
    title: str | None = None,
) -> Figure:
    """Gallery of misclassified images (`Predictions.misclassified`), each titled
    "true: cat / pred: dog (0.87)" (the confidence is the softmax probability of the prediction).
    With no items the figure says the model made no mistakes on these images."""
    if not items:
        return _nothing_to_show("The model classified every one of these images correctly:\n"
                                "no misclassified image to show.", title or "Misclassified images")
    return _gallery(items, classes, ncols, title or f"{len(items)} misclassified images", with_loss=False)


def plot_top_losses(
    items: Sequence[Any],
    classes: Sequence[str] | None = None,
    *,
    ncols: int = 5,
    title: str | None = None,
) -> Figure:
    """Gallery of the highest-loss images (`Predictions.top_losses`, as fastai's plot_top_losses),
    each titled with the true and predicted class, the confidence and the loss."""
    if not items:
        return _nothing_to_show("No labelled images to rank by loss.", title or "Highest-loss images")
    return _gallery(items, classes, ncols, title or f"The {len(items)} highest-loss images", with_loss=True)


def plot_gradcam(
    items: Sequence[Any],
    cams: np.ndarray | Sequence[np.ndarray],
    classes: Sequence[str] | None = None,
    *,
    alpha: float = 0.5,
    ncols: int = 5,
    explained: str = "pred",
    layer: str | None = None,
    method: str = "GradCAM",
    title: str | None = None,
) -> Figure:
    """GradCAM overlays (`method`: the name the maps were made with, e.g. "GradCAM++") beside the originals: for every row of images, the originals (titled true /
    pred) and below them the same images with the heat map of the explained class ("pred" or
    "true", as passed to `gradcam(targets=...)`). `cams`: (N, H, W) in [0, 1], one per item."""
    # Imported here so that plots stays importable where grad-cam is not installed.
    from era_utils.gradcam import overlay_cam

    cams = list(cams)
    if len(cams) != len(items):
        raise ValueError(f"{len(items)} items but {len(cams)} CAMs: compute one CAM per item")
    if not items:
        raise ValueError("plot_gradcam: no items")
    if explained not in ("pred", "true"):
        raise ValueError(f"explained must be 'pred' or 'true'; got {explained!r}")
    ncols = max(1, min(ncols, len(items)))
    fig, axes = _grid(len(items), ncols, title_lines=2, rows_per_item=2)
    for i in range(axes.shape[0] // 2 * ncols):
        r, c = 2 * (i // ncols), i % ncols
        if i >= len(items):
            axes[r, c].remove()
            axes[r + 1, c].remove()
            continue
        image = to_display_image(_attr(items[i], "image"))
        _show(axes[r, c], image)
        axes[r, c].set_title(_item_title(items[i], classes), fontsize=9.5)
        _show(axes[r + 1, c], overlay_cam(image, np.asarray(cams[i]), alpha=alpha))
        axes[r + 1, c].set_title(f"{method}: {_name(classes, _attr(items[i], explained))}", fontsize=9.5)
    where = f" at {layer}" if layer else ""
    fig.suptitle(title or f"{method}{where} for the {'predicted' if explained == 'pred' else 'true'} class",
                 fontsize=13)
    return fig


# --------------------------------------------------------------------------- per class


def plot_per_class_accuracy(
    acc: Sequence[float] | np.ndarray,
    classes: Sequence[str] | None = None,
    title: str = "Test accuracy per class",
) -> Figure:
    """Bar per class, value on each bar, the mean as a dashed line. `acc` in % (fractions in [0, 1]
    are scaled to %)."""
    a = _to_numpy(acc).astype(float).ravel()
    if np.nanmax(a, initial=0.0) <= 1.0:
        a = 100.0 * a  # fractions -> %
    names = [_name(classes, i) for i in range(a.size)]
    fig = Figure(figsize=(max(6.0, 0.75 * a.size + 2), 4.5), layout="constrained")
    ax = fig.subplots()
    bars = ax.bar(names, np.nan_to_num(a), color="tab:blue", zorder=2)
    # White boxes behind the values keep the mean line from striking through them.
    ax.bar_label(bars, labels=[f"{v:.1f}" if np.isfinite(v) else "n/a" for v in a], fontsize=8, padding=2,
                 bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5}, zorder=4)
    mean = float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")
    if np.isfinite(mean):
        ax.axhline(mean, color="tab:red", linestyle="--", linewidth=1, zorder=3, label=f"mean {mean:.1f}%")
        # named at the right end, outside the bars, instead of a legend box covering a bar
        ax.annotate(f"mean\n{mean:.1f}%", xy=(1.0, mean), xycoords=("axes fraction", "data"),
                    xytext=(4, 0), textcoords="offset points", va="center", ha="left",
                    color="tab:red", fontsize=9)
    ax.set_ylim(0, 109)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=35 if a.size > 5 else 0)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right" if a.size > 5 else "center")
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_confusion_matrix(
    cm: np.ndarray,
    classes: Sequence[str] | None = None,
    normalize: bool = False,
    title: str | None = None,
) -> Figure:
    """Confusion matrix (rows = true class, columns = predicted) with counts, or with `normalize`
    the fraction of each true class, written in every cell."""
    counts = _to_numpy(cm).astype(float)
    k = counts.shape[0]
    if counts.ndim != 2 or counts.shape[1] != k:
        raise ValueError(f"cm must be square (K, K); got shape {counts.shape}")
    if normalize:
        totals = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    else:
        values = counts
    names = [_name(classes, i) for i in range(k)]
    side = max(5.0, 0.6 * k + 2.5)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else max(values.max(), 1))
    # shrink, not fraction/pad: those two throw constrained layout off and clip the y label.
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of true class" if normalize else "images")
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    threshold = 0.5 * (1 if normalize else values.max())
    fontsize = 9 if k <= 10 else max(5, 9 - (k - 10) // 3)
    for i in range(k):
        for j in range(k):
            text = f"{values[i, j]:.2f}" if normalize else f"{round(values[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                    color="white" if values[i, j] > threshold else "black")
    ax.set_title(title or ("Confusion matrix (normalised by true class)" if normalize else "Confusion matrix"))
    return fig


# --------------------------------------------------------------------------- verification


def plot_roc(
    metrics: Any,
    *,
    ax: Axes | None = None,
    title: str = "Verification ROC",
    label: str = "ROC",
) -> Figure:
    """The ROC curve of `verification.VerificationMetrics`, its AUC in the legend and the EER point marked."""
    if ax is None:
        fig = Figure(figsize=(5, 5), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ax.plot(metrics.fpr, metrics.tpr, lw=2, label=f"{label} (AUC = {metrics.auc:.4f})")
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color="grey", label="chance")
    ax.plot([0, 1], [1, 0], ls=":", lw=1, color="grey")  # FPR = FNR: the EER lies on this line
    ax.plot(
        [metrics.eer],
        [1.0 - metrics.eer],
        "o",
        color="tab:red",
        label=f"EER = {metrics.eer:.3f} (threshold {metrics.eer_threshold:.3f})",
    )
    ax.set_xlim(-0.01, 1.01)  # a little margin so curves along the axes stay visible
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.legend(loc="lower right")
    return fig
