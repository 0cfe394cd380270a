"""What did the model get wrong? One pass over a loader (`predict`), then everything read from it:
misclassified and highest-loss examples, per-class accuracy, the confusion matrix, embeddings.

fastai's interpretation split: `predict` runs the model once and keeps what every analysis needs
(labels, predictions, probabilities, per-sample loss, positions; embeddings on request); the
functions here turn that into arrays or dataclasses, and `era_utils.plots` draws them. A loader is
anything that yields `(images, labels)` batches (or images alone): a torch DataLoader or
`era_utils.gpu_loader.GPULoader`.

    preds = predict(model, test_loader)            # the one pass
    wrong = preds.misclassified(10)                 # -> plots.plot_misclassified, gradcam.gradcam
    worst = preds.top_losses(10)                    # -> plots.plot_top_losses
    cm = confusion_matrix(preds)                    # -> plots.plot_confusion_matrix
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from era_utils.choices import TTA_MODES
from era_utils.engine import inference_pass
from era_utils.loaders import can_fetch_inputs, inputs_at
from era_utils.speed import resolve_amp
from era_utils.utils import model_device

__all__ = [
    "MAX_KEPT_CLASSES",
    "TTA_MODES",
    "Example",
    "PredictionCollector",
    "Predictions",
    "confusion_matrix",
    "denormalize",
    "get_misclassified",
    "most_confused",
    "per_class_accuracy",
    "predict",
]

# Full probability rows are kept up to this many classes: HW2P2's 35,000 dev images x 7000
# identities would be ~1 GB of float32. Above it only each prediction's own probability is kept.
MAX_KEPT_CLASSES = 100


# --------------------------------------------------------------------------- display helpers


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


def loader_stats(loader: object, mean=None, std=None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The mean/std a loader normalises with: explicit ones win; else its own `.mean`/`.std`
    (GPULoader); else the Normalize inside a DataLoader's dataset transform."""
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
    """Undo Normalize: `x` (..., C, H, W) -> float32 numpy (..., H, W, C) in [0, 1].

    Any number of leading dimensions (a batch, rows of batches) or none. With no mean/std the
    input is taken to be in [0, 1] already and only clipped.
    """
    t = torch.as_tensor(x).detach().to("cpu", torch.float32)
    if t.dim() < 3:
        raise ValueError(f"denormalize expects (C, H, W) images, optionally batched; got shape {tuple(t.shape)}")
    c = t.shape[-3]
    view = (-1, 1, 1)
    m, s = _as_stats(mean), _as_stats(std)
    if s is not None:
        if s.numel() not in (1, c):
            raise ValueError(f"std has {s.numel()} values but the images have {c} channels")
        t = t * s.view(view)
    if m is not None:
        if m.numel() not in (1, c):
            raise ValueError(f"mean has {m.numel()} values but the images have {c} channels")
        t = t + m.view(view)
    return t.clamp(0.0, 1.0).movedim(-3, -1).numpy()  # (..., H, W, C); never the caller's tensor


# --------------------------------------------------------------------------- the one pass


@dataclass
class Example:
    """One test image and what the model made of it: for galleries and GradCAM."""

    image: np.ndarray  # (H, W, C) float32 in [0, 1], de-normalised for display
    input: torch.Tensor  # (C, H, W) the normalised tensor the model saw (feed it to gradcam)
    true: int  # true class index (-1: unlabelled)
    pred: int  # predicted class index
    confidence: float  # softmax probability of the predicted class, in [0, 1]
    loss: float  # cross-entropy of the true class (nan when unlabelled)
    index: int  # position in the loader's order (= dataset index for an unshuffled loader)


@dataclass
class Predictions:
    """Everything one pass over a loader produced, on the CPU, in the loader's order.

    Images are not kept (10k CIFAR inputs are 120 MB; a face dev set many GB): the examples a
    gallery shows are fetched again from the loader by position (`loaders.inputs_at`), or taken
    from `inputs` when predict was asked to keep them.
    """

    labels: torch.Tensor  # (N,) int64 true labels, -1 = unlabelled
    preds: torch.Tensor  # (N,) int64 argmax of the logits
    confidence: torch.Tensor  # (N,) float32 softmax probability of the prediction
    losses: torch.Tensor  # (N,) float32 per-sample cross-entropy (no label smoothing); nan if unlabelled
    indices: torch.Tensor  # (N,) int64 position in the loader's order
    num_classes: int
    probs: torch.Tensor | None = None  # (N, K) float32, kept up to MAX_KEPT_CLASSES classes
    embeddings: torch.Tensor | None = None  # (N, D) float32 penultimate features, with embeddings=True
    inputs: torch.Tensor | None = field(default=None, repr=False)  # (N, C, H, W), with keep_inputs=True
    mean: torch.Tensor | None = None  # (C,) the loader's normalisation, for display
    std: torch.Tensor | None = None
    loader: Any = field(default=None, repr=False)  # where `examples` fetches images from

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def correct(self) -> torch.Tensor:
        """(N,) bool: prediction equals the true label (False for unlabelled images)."""
        return self.preds == self.labels

    @property
    def accuracy(self) -> float:
        """Accuracy in % over the labelled images (the unit History uses); nan with none."""
        labelled = self.labels >= 0
        if not bool(labelled.any()):
            return float("nan")
        return 100.0 * float(self.correct[labelled].double().mean())

    def _inputs(self, index: torch.Tensor) -> torch.Tensor:
        if self.inputs is not None:
            return self.inputs[index]
        if self.loader is None:
            raise ValueError("No images to show: predict(..., keep_inputs=True), or keep the loader.")
        return inputs_at(self.loader, index)

    def images(self, index: int | Sequence[int] | torch.Tensor | slice | None = None) -> np.ndarray:
        """De-normalised images (k, H, W, C) float32 in [0, 1] (all, or those at `index`)."""
        if index is None:
            index = slice(None)
        if isinstance(index, slice):
            index = self.indices[index]
        index = torch.as_tensor(np.asarray(index), dtype=torch.long).reshape(-1)
        return denormalize(self._inputs(index), self.mean, self.std)

    def examples(self, index: Sequence[int] | np.ndarray | torch.Tensor) -> list[Example]:
        """The images at positions `index`, with their labels, predictions, confidence and loss."""
        index = torch.as_tensor(np.asarray(index), dtype=torch.long).reshape(-1)
        if not index.numel():
            return []
        inputs = self._inputs(index).clone()  # a normal tensor, not an inference one: GradCAM needs autograd
        images = denormalize(inputs, self.mean, self.std)  # (k, H, W, C)
        return [
            Example(image=images[k], input=inputs[k], true=int(self.labels[i]), pred=int(self.preds[i]),
                    confidence=float(self.confidence[i]), loss=float(self.losses[i]), index=int(i))
            for k, i in enumerate(index.tolist())
        ]

    def misclassified(self, n: int | None = 10, *, most_confident: bool = False) -> list[Example]:
        """The first `n` wrong predictions in the loader's order (or, with `most_confident`, the `n`
        the model was surest of, surest first); fewer, with a warning, if fewer exist."""
        if n is not None and n < 0:
            raise ValueError(f"n must be >= 0 (or None for all); got {n}")
        wrong = ((self.preds != self.labels) & (self.labels >= 0)).nonzero().flatten()
        if most_confident:
            wrong = wrong[self.confidence[wrong].argsort(descending=True, stable=True)]
        picked = wrong if n is None else wrong[:n]
        if n is not None and len(picked) < n:
            warnings.warn(f"Only {len(picked)} misclassified images in {len(self)} (asked for {n}); "
                          f"returning {len(picked)}.", stacklevel=2)
        return self.examples(picked)

    def top_losses(self, n: int = 10) -> list[Example]:
        """The `n` labelled images with the highest loss, highest first (fastai's plot_top_losses):
        the confident mistakes, and the right answers the model was least sure of."""
        labelled = (self.labels >= 0).nonzero().flatten()
        order = self.losses[labelled].argsort(descending=True, stable=True)
        return self.examples(labelled[order[:n]])


def predict(
    model: nn.Module,
    loader: Iterable,
    device: str | torch.device | None = None,
    *,
    embeddings: bool = False,
    tta: str = "none",
    keep_inputs: bool | str = "auto",
    amp: str = "auto",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    verbose: bool = False,
) -> Predictions:
    """Run `model` once over `loader` (eval mode, no autograd; its train/eval flags restored) and keep
    what every analysis reads: labels, predictions, confidences, per-sample losses, positions, the
    probabilities (up to MAX_KEPT_CLASSES classes) and, with `embeddings`, the penultimate features
    (`tta="flip"`: averaged with the mirror image's, L2-normalised; the predictions stay the image's own).

    `device` defaults to where the model is; `amp` as in fit ("auto": autocast on CUDA only).
    The few examples a gallery shows are fetched again from the loader by position (an unshuffled
    GPULoader or DataLoader); `keep_inputs=True` keeps every input instead (memory: 120 MB for 10k
    CIFAR images), "auto" does so only for a loader that cannot give its images back. mean/std
    (else the loader's own, or the Normalize in its dataset's transform) de-normalise for display.
    """
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES} (flip: average each embedding with its mirror image's), "
                         f"got {tta!r}")
    device = model_device(model) if device is None else torch.device(device)
    model.to(device)
    amp_dtype, _ = resolve_amp(device, amp)
    collector = PredictionCollector(embeddings=embeddings)
    if keep_inputs == "auto":
        keep_inputs = not can_fetch_inputs(loader)
    source = _Recording(loader, collector.inputs) if keep_inputs else loader
    inference_pass(model, source, collector, device, amp_dtype=amp_dtype, embeddings=embeddings, flip=tta == "flip",
                   labelled=False, desc="predict", verbose=verbose)
    return collector.predictions(loader, mean, std)


class PredictionCollector:
    """What `predict` keeps of each batch of a pass, called as the pass's `on_batch(step, logits, labels,
    embedding)`, and the Predictions made of it. `fit(last_test_pass=...)` takes one too, so the last epoch's
    test pass can be the analysis' (`steps.final_predictions`). Batches stay on the device until `predictions`:
    no host sync per batch."""

    def __init__(self, embeddings: bool = False) -> None:
        self.embeddings = embeddings
        self.chunks: dict[str, list[torch.Tensor]] = {k: [] for k in ("labels", "preds", "confidence", "losses",
                                                                       "probs", "embeddings")}
        self.inputs: list[torch.Tensor] = []  # filled by _Recording where the loader cannot give images back
        self.num_classes = 0

    def __call__(self, step: int, logits: torch.Tensor, labels: torch.Tensor, embedding: torch.Tensor | None) -> None:
        logits = logits.float()  # (B, K)
        self.num_classes = logits.shape[1]
        probs = logits.softmax(dim=1)
        confidence, preds = probs.max(dim=1)
        losses = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
        losses = torch.where(labels >= 0, losses, torch.full_like(losses, float("nan")))
        for name, value in (("labels", labels), ("preds", preds), ("confidence", confidence),
                            ("losses", losses)):
            self.chunks[name].append(value)
        if logits.shape[1] <= MAX_KEPT_CLASSES:
            self.chunks["probs"].append(probs)
        if self.embeddings and embedding is not None:
            self.chunks["embeddings"].append(embedding.float())

    @property
    def filled(self) -> bool:
        """Has a pass gone through it?"""
        return bool(self.chunks["labels"])

    def predictions(self, loader: Iterable, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None) -> "Predictions":
        """The pass's Predictions; `loader` is the one it went over (galleries fetch their images from it)."""
        # clone(): tensors made in inference mode cannot enter autograd later (GradCAM).
        out = {k: torch.cat(v).cpu().clone() if v else None for k, v in {**self.chunks, "inputs": self.inputs}.items()}
        m, s = loader_stats(loader, mean, std)
        return Predictions(
            labels=out["labels"], preds=out["preds"], confidence=out["confidence"], losses=out["losses"],
            indices=torch.arange(len(out["labels"])), num_classes=self.num_classes, probs=out["probs"],
            embeddings=out["embeddings"], inputs=out["inputs"], mean=m, std=s, loader=loader,
        )


class _Recording:
    """A loader that also copies each batch's images to the CPU as they pass (predict's keep_inputs)."""

    def __init__(self, loader: Iterable, sink: list[torch.Tensor]) -> None:
        self.loader, self.sink = loader, sink

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self):
        for batch in self.loader:
            images = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
            if isinstance(images, torch.Tensor):  # anything else: the pass names the problem
                self.sink.append(images.detach().to("cpu", torch.float32))
            yield batch


def get_misclassified(
    model: nn.Module,
    loader: Iterable,
    n: int | None = 10,
    *,
    device: str | torch.device | None = None,
    most_confident: bool = False,
) -> list[Example]:
    """`predict(model, loader).misclassified(n)`: the first `n` wrong predictions (or the `n` the
    model was surest of), for a notebook that needs nothing else from the pass."""
    return predict(model, loader, device).misclassified(n, most_confident=most_confident)


# --------------------------------------------------------------------------- per class


def _preds_targets(
    preds: Predictions | torch.Tensor | np.ndarray | Sequence[int], targets
) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(preds, Predictions):
        preds, targets = preds.preds, preds.labels
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
        num_classes = preds.num_classes
    p, t = _preds_targets(preds, targets)
    if num_classes is None:
        num_classes = int(max(p.max(initial=-1), t.max(initial=-1))) + 1
    for name, values in (("labels", t), ("predictions", p)):
        outside = values[(values < 0) | (values >= num_classes)]
        if outside.size:
            raise ValueError(f"confusion_matrix: {name} hold {sorted(set(outside.tolist()))[:5]}, outside 0.."
                             f"{num_classes - 1} for num_classes={num_classes}: pass the right num_classes, or "
                             "drop unlabelled (-1) samples first")
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
