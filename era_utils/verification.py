"""Face verification for HW2P2: embeddings, cosine pair scores, ROC AUC / EER / threshold.

The assignment's recipe: train a classifier, drop its last layer (every era_utils model returns
its pooled penultimate features with `forward(x, return_embedding=True)`), L2-normalise them (with
`tta="flip"` averaged with the mirror image's first), score each pair of a pairs file by the cosine
similarity of its two embeddings, measure ROC AUC on the labelled dev
pairs, pick a threshold, and score the test pairs for Kaggle (`era_utils.kaggle`).

    pairs = read_pairs("verification/dev_pairs.txt", root="verification")   # era_utils.data
    metrics = verify_pairs(model, pairs, transform)                           # AUC, EER, threshold
    plots.plot_roc(metrics)
    test = read_pairs("verification/test_pairs.txt", root="verification", labelled=False)
    scores = score_pairs(model, test, transform)
    kaggle.write_verification_csv("verification.csv", kaggle.ids_for_pairs(test), scores)

Embeddings come from the one inference pass (`analysis.predict(..., embeddings=True)`), so a
classification set's predictions and embeddings are one pass over it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn
from torch.utils.data import DataLoader

from era_utils.analysis import predict
from era_utils.data import ImageFiles, pair_label, pair_paths
from era_utils.face_losses import l2_normalise
from era_utils.utils import get_device

__all__ = [
    "VerificationMetrics",
    "accuracy_at_threshold",
    "class_pair_capacity",
    "class_pairs",
    "cosine_scores",
    "embed_paths",
    "equal_error_rate",
    "score_pairs",
    "verification_metrics",
    "verify_pairs",
]

PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------- embeddings


def _to_float_tensor(image: np.ndarray) -> torch.Tensor:
    """Default transform: uint8 (H, W, C) -> float32 (C, H, W) in [0, 1]."""
    array = np.array(image, dtype=np.uint8)  # a copy: arrays from PIL are read-only
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


class _TensorImageFiles(ImageFiles):
    """`data.ImageFiles` as (image tensor, -1): unlabelled images, and a clear error when the
    transform did not make a tensor."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, _ = super().__getitem__(index)
        if not isinstance(image, torch.Tensor):
            raise TypeError(
                f"the transform turned {self.paths[index]} into a {type(image).__name__}, not a (C, H, W) "
                "tensor: end it with v2.ToImage() + v2.ToDtype(torch.float32, scale=True) (torchvision) "
                "or ToTensorV2() (albumentations)"
            )
        return image, -1


def embed_paths(
    model: nn.Module,
    paths: Sequence[PathLike],
    transform: Optional[Callable] = None,
    *,
    loader: Optional[Callable[[list[Path]], Any]] = None,
    device: str | torch.device | None = None,
    batch_size: int = 128,
    num_workers: int = 0,
    amp: str = "auto",
    tta: str = "none",
    progress: bool = False,
) -> torch.Tensor:
    """L2-normalised penultimate-layer embeddings `(len(paths), D)` float32 of image files, in the given
    order (`tta="flip"`: each averaged with its mirror image's).

    Each image is read as RGB and handed to `transform` the way FaceFolder does (albumentations:
    image=ndarray; torchvision: a PIL image; default: scaled to [0, 1]); the model runs once over
    them (`analysis.predict`), in eval mode, with autocast on CUDA (`amp` as in fit). `loader`, instead
    of `transform`: builds the loader over the paths itself (e.g. a `face_loader.FaceLoader`, which
    decodes them on the device); it must keep their order.
    """
    if loader is not None and transform is not None:
        raise ValueError("give transform (per image, in a DataLoader) or loader (which reads the images itself), "
                         "not both")
    paths = [Path(p) for p in paths]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise FileNotFoundError(
            f"{len(missing)} of {len(paths)} images do not exist (e.g. {shown}). If the pairs file "
            "holds relative paths, pass root= (the folder they are relative to) to read_pairs."
        )
    device = get_device(device)
    if loader is not None:
        images = loader(paths)
    else:
        images = DataLoader(_TensorImageFiles(paths, transform if transform is not None else _to_float_tensor),
                            batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            pin_memory=device.type == "cuda")
    return l2_normalise(predict(model, images, device, embeddings=True, amp=amp, tta=tta, verbose=progress).embeddings)


def cosine_scores(emb_a: torch.Tensor | np.ndarray, emb_b: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Row-wise cosine similarity of two `(N, D)` embedding matrices -> `(N,)` in [-1, 1].

    A zero row scores 0 (its norm is clamped at 1e-8, as in `F.cosine_similarity`).
    """
    a = torch.as_tensor(emb_a).float()
    b = torch.as_tensor(emb_b).float()
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            "cosine_scores needs two (N, D) matrices of the same shape; "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return F.cosine_similarity(a, b, dim=1, eps=1e-8)


def _classes_of(labels: Sequence[int] | np.ndarray | torch.Tensor) -> list[np.ndarray]:
    """Indices of each labelled class with at least two images (unlabelled -1 left out)."""
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels) if c >= 0]
    return [members for members in by_class if len(members) >= 2]


def class_pair_capacity(labels: Sequence[int] | np.ndarray | torch.Tensor) -> int:
    """The most balanced pairs `class_pairs` can draw from these labels without repeating a pair."""
    by_class = _classes_of(labels)
    sizes = np.array([len(m) for m in by_class], dtype=np.int64)
    same = int((sizes * (sizes - 1) // 2).sum())
    different = int((sizes.sum() ** 2 - (sizes**2).sum()) // 2)
    return 2 * min(same, different)


def class_pairs(labels: Sequence[int] | np.ndarray | torch.Tensor, n: int, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`n` balanced index pairs from class labels, for verification on a classification set
    (Fashion-MNIST classes standing in for identities): (a, b, same) with even k the same class
    (same=1) and odd k two different classes (same=0). No pair is drawn twice (a Kaggle id is one
    pair); asking for more than `class_pair_capacity(labels)` is an error that says how many exist."""
    by_class = _classes_of(labels)
    if len(by_class) < 2:
        raise ValueError("class_pairs needs at least two classes with two or more images each")
    capacity = class_pair_capacity(labels)
    if n > capacity:
        raise ValueError(f"{n} pairs asked for, but these labels give at most {capacity} distinct balanced "
                         "pairs: ask for fewer, or use more images")
    rng = np.random.default_rng(seed)
    a, b = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    seen: set[tuple[int, int]] = set()
    for k in range(n):
        while True:  # redraw a pair already taken; capacity above guarantees there are others
            if k % 2 == 0:
                i, j = rng.choice(by_class[rng.integers(len(by_class))], size=2, replace=False)
            else:
                c1, c2 = rng.choice(len(by_class), size=2, replace=False)
                i, j = rng.choice(by_class[c1]), rng.choice(by_class[c2])
            key = (int(min(i, j)), int(max(i, j)))
            if key not in seen:
                break
        seen.add(key)
        a[k], b[k] = i, j
    same = (np.arange(n) % 2 == 0).astype(np.int64)
    return a, b, same


def score_pairs(
    model: nn.Module,
    pairs: Sequence[Any],
    transform: Optional[Callable] = None,
    *,
    loader: Optional[Callable[[list[Path]], Any]] = None,
    device: str | torch.device | None = None,
    batch_size: int = 128,
    num_workers: int = 0,
    amp: str = "auto",
    tta: str = "none",
    progress: bool = False,
) -> np.ndarray:
    """Cosine similarity `(P,)` float32 of each pair (`data.Pair` or `(a, b[, label])`).

    Each distinct image is read and embedded once, however many pairs it appears in
    (HW2P2's pairs files reuse images many times), then the pairs index the embeddings. `transform`
    or `loader`: how the images are read, as in `embed_paths`.
    """
    if len(pairs) == 0:
        raise ValueError("no pairs to score: the pairs list is empty")
    index: dict[Path, int] = {}  # unique path -> row of the embedding matrix, first-seen order
    rows_a: list[int] = []
    rows_b: list[int] = []
    for pair in pairs:
        a, b = pair_paths(pair)
        rows_a.append(index.setdefault(a, len(index)))
        rows_b.append(index.setdefault(b, len(index)))
    emb = embed_paths(
        model,
        list(index),
        transform,
        loader=loader,
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
        amp=amp,
        tta=tta,
        progress=progress,
    )  # (U, D)
    ia = torch.as_tensor(rows_a)
    ib = torch.as_tensor(rows_b)
    scores = torch.empty(len(pairs), dtype=torch.float32)
    chunk = 16384  # pairs per step: each (chunk, D) gather is 128 MiB at D = 2048 (float32)
    for start in range(0, len(pairs), chunk):
        sl = slice(start, start + chunk)
        scores[sl] = cosine_scores(emb[ia[sl]], emb[ib[sl]])
    return scores.numpy()


# --------------------------------------------------------------------------- metrics


@dataclass
class VerificationMetrics:
    """ROC AUC, equal error rate and accuracy of similarity scores on labelled pairs.

    `fpr`, `tpr`, `thresholds` are scikit-learn's ROC curve (a pair is "same" when
    score >= threshold); `threshold` is the one `accuracy` was measured at (the EER
    threshold unless another was asked for).
    """

    auc: float
    eer: float  # where the false-positive rate equals the false-negative rate (1 - TPR)
    eer_threshold: float  # the score at which that happens (interpolated on the ROC curve)
    threshold: float
    accuracy: float  # fraction of pairs right at `threshold`
    n_pairs: int
    n_positive: int  # pairs labelled 1 ("same identity")
    fpr: np.ndarray = field(repr=False)
    tpr: np.ndarray = field(repr=False)
    thresholds: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, float | int]:
        """The scalar metrics, ready for `json.dump` (results/metrics.json)."""
        return {
            "auc": self.auc,
            "eer": self.eer,
            "eer_threshold": self.eer_threshold,
            "threshold": self.threshold,
            "accuracy": self.accuracy,
            "n_pairs": self.n_pairs,
            "n_positive": self.n_positive,
        }


def _check_labels_scores(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels as int64 0/1 and scores as float64, both 1-D and the same length, or a clear error."""
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D (one per pair); got shapes {y.shape} and {s.shape}")
    if len(y) != len(s):
        raise ValueError(f"{len(y)} labels but {len(s)} scores: there must be one score per labelled pair")
    if len(y) == 0:
        raise ValueError("no pairs: labels and scores are empty")
    if y.dtype == object or not np.all(np.isin(y, (0, 1))):
        bad = sorted({str(v) for v in y.tolist() if v not in (0, 1)})[:5]
        raise ValueError(f"labels must be 0 (different) or 1 (same); found {bad}")
    y = y.astype(np.int64)
    if np.unique(y).size < 2:
        raise ValueError(
            f"only one class in the labels (all {int(y[0])}): ROC AUC and EER need both same (1) and "
            "different (0) pairs"
        )
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{int((~np.isfinite(s)).sum())} scores are NaN or infinite; check the embeddings")
    return y, s


def _eer_from_roc(fpr: np.ndarray, tpr: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """(EER, threshold) where FPR = FNR, linearly interpolated between ROC points."""
    fnr = 1.0 - tpr
    diff = fpr - fnr  # non-decreasing along the curve: -1 at the first point, +1 at the last
    i = int(np.argmax(diff >= 0))  # first point at or past the crossing (>= 1, as diff[0] = -1)
    if diff[i] == 0 or i == 0:
        return float(fpr[i]), float(thresholds[i])
    t = diff[i - 1] / (diff[i - 1] - diff[i])  # fraction of the segment (i-1, i) before the crossing
    eer = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    lo, hi = thresholds[i - 1], thresholds[i]
    # scikit-learn's first threshold is +inf (above every score): take the segment's finite end.
    thr = hi + (1.0 - t) * (lo - hi) if np.isfinite(lo) else hi
    return float(eer), float(thr)


def equal_error_rate(labels: Any, scores: Any) -> tuple[float, float]:
    """(EER, threshold): the error rate where FPR equals FNR, and the score where it happens."""
    y, s = _check_labels_scores(labels, scores)
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    return _eer_from_roc(fpr, tpr, thresholds)


def accuracy_at_threshold(labels: Any, scores: Any, threshold: float) -> float:
    """Fraction of pairs right when "same" means score >= threshold (scikit-learn's convention)."""
    y, s = _check_labels_scores(labels, scores)
    return float(np.mean((s >= threshold).astype(np.int64) == y))


def verification_metrics(labels: Any, scores: Any, threshold: float | None = None) -> VerificationMetrics:
    """AUC (`roc_auc_score`), ROC curve, EER and its threshold, accuracy at `threshold` (default: EER's)."""
    y, s = _check_labels_scores(labels, scores)
    # Every threshold kept, so the EER interpolates between neighbouring scores, not across gaps.
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    eer, eer_threshold = _eer_from_roc(fpr, tpr, thresholds)
    threshold = eer_threshold if threshold is None else float(threshold)
    return VerificationMetrics(
        auc=float(roc_auc_score(y, s)),
        eer=eer,
        eer_threshold=eer_threshold,
        threshold=threshold,
        accuracy=float(np.mean((s >= threshold).astype(np.int64) == y)),
        n_pairs=int(len(y)),
        n_positive=int(y.sum()),
        fpr=fpr,
        tpr=tpr,
        thresholds=thresholds,
    )


# --------------------------------------------------------------------------- end to end


def verify_pairs(
    model: nn.Module,
    pairs: Sequence[Any],
    transform: Optional[Callable] = None,
    *,
    loader: Optional[Callable[[list[Path]], Any]] = None,
    threshold: float | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 128,
    num_workers: int = 0,
    amp: str = "auto",
    tta: str = "none",
    progress: bool = False,
) -> VerificationMetrics:
    """Labelled (dev) pairs -> scores -> `VerificationMetrics` (AUC, EER, threshold, accuracy);
    `tta="flip"`: each image's embedding averaged with its mirror image's."""
    labels = [pair_label(p) for p in pairs]
    unlabelled = sum(label is None for label in labels)
    if unlabelled:
        raise ValueError(
            f"{unlabelled} of {len(pairs)} pairs have no label: verify_pairs needs the labelled dev "
            "pairs (three columns: a b label); for the unlabelled test pairs use score_pairs"
        )
    scores = score_pairs(
        model, pairs, transform, loader=loader, device=device, batch_size=batch_size, num_workers=num_workers,
        amp=amp, tta=tta, progress=progress,
    )
    return verification_metrics(labels, scores, threshold=threshold)
