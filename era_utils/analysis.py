"""What did the model get wrong? Predictions over a loader, misclassified examples, per-class accuracy
and the confusion matrix.

Compute here, draw in `era_utils.plots` (fastai's interpretation split): every function returns
arrays or dataclasses, never a figure. A loader is anything that yields `(images, labels)` batches:
a torch DataLoader or `era_utils.gpu_loader.GPULoader`.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from era_utils.utils import eval_mode

__all__ = [
    "Misclassified",
    "Predictions",
    "confusion_matrix",
    "denormalize",
    "get_misclassified",
    "most_confused",
    "per_class_accuracy",
    "predict",
]


# --------------------------------------------------------------------------- helpers


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); cpu for a parameter-free model."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _logits_of(output: torch.Tensor | tuple | list) -> torch.Tensor:
    # forward(x, return_embedding=True) gives (logits, embedding); plain forward gives logits.
    return output[0] if isinstance(output, (tuple, list)) else output


def _split_batch(batch: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(
            "The loader must yield (images, labels) batches; got "
            f"{type(batch).__name__}. Wrap your dataset so __getitem__ returns (image, label)."
        )
    images, labels = batch[0], batch[1]
    return images, torch.as_tensor(labels)


def _as_stats(values: Sequence[float] | torch.Tensor | np.ndarray | None) -> torch.Tensor | None:
    """Mean or std in any form (tuple, (C,), (1,C,1,1) tensor) -> (C,) float32 CPU tensor in [0,1] units."""
    if values is None:
        return None
    stats = torch.as_tensor(values).detach().to("cpu", torch.float32).flatten()
    if stats.numel() and float(stats.max()) > 1.0:
        stats = stats / 255.0  # given in pixel units (e.g. 125.3): the kit works in [0, 1] units
    return stats


def _normalize_in(loader: object) -> object | None:
    """The Normalize step (albumentations or torchvision) inside a DataLoader's dataset transform."""
    dataset = getattr(loader, "dataset", None)
    for _ in range(5):  # look through Subset and similar wrappers
        if dataset is None:
            return None
        transform = getattr(dataset, "transform", None)
        for step in getattr(transform, "transforms", None) or ([transform] if transform else []):
            if type(step).__name__ == "Normalize" and hasattr(step, "mean") and hasattr(step, "std"):
                return step
        dataset = getattr(dataset, "dataset", None)
    return None


def _loader_stats(loader: object, mean, std) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Explicit mean/std win; else the loader's own `.mean`/`.std` (GPULoader has them); else the
    Normalize inside a DataLoader's dataset transform (make_loader's albumentations pipeline)."""
    if mean is None and std is None:
        normalize = None if hasattr(loader, "mean") else _normalize_in(loader)
        source = normalize if normalize is not None else loader
        mean, std = getattr(source, "mean", None), getattr(source, "std", None)
    return _as_stats(mean), _as_stats(std)


def denormalize(
    x: torch.Tensor | np.ndarray,
    mean: Sequence[float] | torch.Tensor | None = None,
    std: Sequence[float] | torch.Tensor | None = None,
) -> np.ndarray:
    """Undo Normalize: `x` (B, C, H, W) or (C, H, W) -> float32 numpy (B, H, W, C) or (H, W, C) in [0, 1].

    With no mean/std the input is taken to be in [0, 1] already and only clipped.
    """
    t = torch.as_tensor(x).detach().to("cpu", torch.float32)
    single = t.dim() == 3
    if single:
        t = t.unsqueeze(0)
    if t.dim() != 4:
        raise ValueError(f"denormalize expects (B, C, H, W) or (C, H, W); got shape {tuple(t.shape)}")
    c = t.shape[1]
    m, s = _as_stats(mean), _as_stats(std)
    if s is not None:
        if s.numel() not in (1, c):
            raise ValueError(f"std has {s.numel()} values but the images have {c} channels")
        t = t * s.view(1, -1, 1, 1)
    if m is not None:
        if m.numel() not in (1, c):
            raise ValueError(f"mean has {m.numel()} values but the images have {c} channels")
        t = t + m.view(1, -1, 1, 1)
    out = t.clamp_(0.0, 1.0).permute(0, 2, 3, 1).numpy()  # (B, H, W, C)
    return out[0] if single else out


# --------------------------------------------------------------------------- predictions


@dataclass
class Predictions:
    """Everything one pass over a loader produced, on the CPU, in the loader's order.

    `inputs` (the normalised model inputs) is kept only with `predict(..., keep_inputs=True)`:
    10k CIFAR images are 120 MB as float32.
    """

    logits: torch.Tensor  # (N, K) float32
    probs: torch.Tensor  # (N, K) softmax of the logits
    preds: torch.Tensor  # (N,) int64 argmax
    targets: torch.Tensor  # (N,) int64 true labels
    inputs: torch.Tensor | None = None  # (N, C, H, W) normalised, only if kept
    mean: torch.Tensor | None = None  # (C,) used by images()
    std: torch.Tensor | None = None  # (C,)

    def __len__(self) -> int:
        return int(self.targets.numel())

    @property
    def correct(self) -> torch.Tensor:
        """(N,) bool: prediction equals the true label."""
        return self.preds == self.targets

    @property
    def accuracy(self) -> float:
        """Overall accuracy in % (the unit History uses)."""
        return 100.0 * float(self.correct.float().mean()) if len(self) else float("nan")

    @property
    def confidence(self) -> torch.Tensor:
        """(N,) probability the model gave its own prediction."""
        return self.probs.max(dim=1).values

    def images(self, index: int | Sequence[int] | torch.Tensor | slice | None = None) -> np.ndarray:
        """De-normalised images (N, H, W, C) float32 in [0, 1] (all, or those at `index`)."""
        if self.inputs is None:
            raise ValueError("No images kept: call predict(model, loader, keep_inputs=True).")
        x = self.inputs if index is None else self.inputs[index]
        return denormalize(x, self.mean, self.std)


def predict(
    model: nn.Module,
    loader: Iterable,
    device: str | torch.device | None = None,
    *,
    keep_inputs: bool = False,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Predictions:
    """One pass over `loader` in eval mode without autograd; the model's train/eval mode is restored.

    `device` defaults to where the model already is. mean/std (else the loader's `.mean`/`.std`, or
    the Normalize in its dataset's transform) only de-normalise images later, in `Predictions.images()`.
    """
    device = model_device(model) if device is None else torch.device(device)
    model.to(device)
    logits, targets, inputs = [], [], []
    with eval_mode(model), torch.inference_mode():
        for batch in loader:
            x, y = _split_batch(batch)
            out = _logits_of(model(x.to(device, non_blocking=True))).float()  # (B, K)
            logits.append(out.cpu())
            targets.append(y.detach().cpu().long())
            if keep_inputs:
                inputs.append(x.detach().to("cpu", torch.float32))
    if not logits:
        raise ValueError("The loader yielded no batches: is the dataset empty?")
    # clone() outside inference mode: inference tensors cannot enter autograd later (GradCAM).
    all_logits = torch.cat(logits).clone()
    m, s = _loader_stats(loader, mean, std)
    return Predictions(
        logits=all_logits,
        probs=all_logits.softmax(dim=1),
        preds=all_logits.argmax(dim=1),
        targets=torch.cat(targets).clone(),
        inputs=torch.cat(inputs).clone() if keep_inputs else None,
        mean=m,
        std=s,
    )


# --------------------------------------------------------------------------- misclassified


@dataclass
class Misclassified:
    """One wrong prediction, ready for the gallery and for GradCAM."""

    image: np.ndarray  # (H, W, C) float32 in [0, 1], de-normalised for display
    input: torch.Tensor  # (C, H, W) the normalised tensor the model saw (feed it to gradcam)
    true: int  # true class index
    pred: int  # predicted class index
    confidence: float  # softmax probability of the predicted class, in [0, 1]
    index: int  # position in the loader's iteration order (a shuffled loader has no fixed order)


def get_misclassified(
    model: nn.Module,
    loader: Iterable,
    n: int | None = 10,
    *,
    device: str | torch.device | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    most_confident: bool = False,
) -> list[Misclassified]:
    """The first `n` wrong predictions (or, with `most_confident`, the `n` wrong ones the model was
    surest of, most confident first). Exactly `n`, fewer only if fewer exist (with a warning).

    Memory stays O(n): only the kept candidates' inputs are stored. `n=None` keeps every mistake.
    mean/std (else the loader's `.mean`/`.std`, or the Normalize in its dataset's transform)
    de-normalise the images; without any, the inputs are shown as they are, clipped to [0, 1].
    """
    if n is not None and n < 0:
        raise ValueError(f"n must be >= 0 (or None for all); got {n}")
    device = model_device(model) if device is None else torch.device(device)
    model.to(device)
    m, s = _loader_stats(loader, mean, std)

    # Candidates so far, on the CPU: normalised inputs (k, C, H, W), true, pred, confidence, index.
    kept_x: torch.Tensor | None = None
    kept = {
        "true": torch.empty(0, dtype=torch.long),
        "pred": torch.empty(0, dtype=torch.long),
        "conf": torch.empty(0),
        "index": torch.empty(0, dtype=torch.long),
    }
    seen = 0
    with eval_mode(model), torch.inference_mode():
        for batch in loader:
            x, y = _split_batch(batch)
            probs = _logits_of(model(x.to(device, non_blocking=True))).float().softmax(dim=1).cpu()
            conf, pred = probs.max(dim=1)  # (B,), (B,)
            y = y.detach().cpu().long()
            wrong = (pred != y) & (y >= 0)  # label -1 = unlabelled test image, never "wrong"
            idx = wrong.nonzero().flatten()
            if idx.numel():
                new_x = x.detach()[idx.to(x.device)].to("cpu", torch.float32)
                kept_x = new_x if kept_x is None else torch.cat([kept_x, new_x])
                kept["true"] = torch.cat([kept["true"], y[idx]])
                kept["pred"] = torch.cat([kept["pred"], pred[idx]])
                kept["conf"] = torch.cat([kept["conf"], conf[idx]])
                kept["index"] = torch.cat([kept["index"], idx + seen])
                if n is not None and kept_x.shape[0] > n:
                    if most_confident:
                        order = kept["conf"].argsort(descending=True, stable=True)[:n]
                    else:
                        order = torch.arange(n)
                    kept_x = kept_x[order]
                    kept = {k: v[order] for k, v in kept.items()}
            seen += int(y.numel())
            if n is not None and not most_confident and kept_x is not None and kept_x.shape[0] >= n:
                break  # the first n mistakes are found; no need to run the rest of the data

    count = 0 if kept_x is None else kept_x.shape[0]
    if n is not None and count < n:
        warnings.warn(
            f"Only {count} misclassified images in {seen} (asked for {n}); returning {count}.",
            stacklevel=2,
        )
    if count == 0:
        return []
    if most_confident:
        order = kept["conf"].argsort(descending=True, stable=True)
        kept_x = kept_x[order]
        kept = {k: v[order] for k, v in kept.items()}
    kept_x = kept_x.clone()  # a normal tensor, not an inference tensor: GradCAM needs autograd
    images = denormalize(kept_x, m, s)  # (k, H, W, C)
    return [
        Misclassified(
            image=images[i],
            input=kept_x[i],
            true=int(kept["true"][i]),
            pred=int(kept["pred"][i]),
            confidence=float(kept["conf"][i]),
            index=int(kept["index"][i]),
        )
        for i in range(count)
    ]


# --------------------------------------------------------------------------- per class


def _preds_targets(
    preds: Predictions | torch.Tensor | np.ndarray | Sequence[int], targets
) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(preds, Predictions):
        preds, targets = preds.preds, preds.targets
    if targets is None:
        raise ValueError("Pass a Predictions object, or both preds and targets.")
    p = np.asarray(torch.as_tensor(preds).cpu()).astype(np.int64).ravel()
    t = np.asarray(torch.as_tensor(targets).cpu()).astype(np.int64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"preds ({p.size}) and targets ({t.size}) differ in length")
    keep = t >= 0  # unlabelled (-1) images have no right answer
    return p[keep], t[keep]


def confusion_matrix(
    preds: Predictions | torch.Tensor | np.ndarray | Sequence[int],
    targets: torch.Tensor | np.ndarray | Sequence[int] | None = None,
    num_classes: int | None = None,
) -> np.ndarray:
    """(K, K) int64 counts: row = true class, column = predicted class."""
    if num_classes is None and isinstance(preds, Predictions):
        num_classes = preds.logits.shape[1]
    p, t = _preds_targets(preds, targets)
    if num_classes is None:
        num_classes = int(max(p.max(initial=-1), t.max(initial=-1))) + 1
    flat = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def per_class_accuracy(
    preds: Predictions | torch.Tensor | np.ndarray | Sequence[int],
    targets: torch.Tensor | np.ndarray | Sequence[int] | None = None,
    num_classes: int | None = None,
) -> np.ndarray:
    """(K,) accuracy in % for each true class (nan for a class with no images)."""
    cm = confusion_matrix(preds, targets, num_classes)
    totals = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, 100.0 * np.diag(cm) / totals, np.nan)


def most_confused(
    cm: np.ndarray, classes: Sequence[str] | None = None, k: int = 5, min_count: int = 1
) -> list[tuple[str | int, str | int, int]]:
    """The `k` most frequent (true, predicted, count) mistakes, off the diagonal, largest first."""
    cm = np.asarray(cm)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:k]
    pairs = []
    for f in flat:
        t, p = np.unravel_index(f, off.shape)
        count = int(off[t, p])
        if count < min_count:
            break
        name = (lambda i: classes[i]) if classes is not None else (lambda i: int(i))
        pairs.append((name(t), name(p), count))
    return pairs
