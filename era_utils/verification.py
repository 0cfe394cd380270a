"""Face verification for HW2P2: embeddings, cosine scores, ROC AUC / EER, Kaggle CSV writers.

The assignment's recipe: train a classifier, drop its last layer (every era_utils model has
`embed(x) -> (B, D)`, the pooled penultimate features), score each pair of a pairs file by the
cosine similarity of its two embeddings, measure ROC AUC on the labelled dev pairs, pick a
threshold, and write the test pairs' scores as a Kaggle CSV.

    pairs = read_pairs("verification/dev_pairs.txt", root="verification")   # era_utils.data
    metrics = verify_pairs(model, pairs, transform)                           # AUC, EER, threshold
    fig = plot_roc(metrics)
    test = read_pairs("verification/test_pairs.txt", root="verification", labelled=False)
    submit_pairs(model, test, transform, "results/verification.csv")       # Id,Category

Compute and draw stay apart: `verification_metrics` returns numbers, `plot_roc` a Figure.
"""
from __future__ import annotations

import contextlib
import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from era_utils.data import ImageFiles
from era_utils.engine import resolve_amp
from era_utils.utils import eval_mode, get_device

__all__ = [
    "class_pairs",
    "embed",
    "embed_paths",
    "cosine_scores",
    "score_pairs",
    "VerificationMetrics",
    "verification_metrics",
    "equal_error_rate",
    "accuracy_at_threshold",
    "plot_roc",
    "verify_pairs",
    "submit_pairs",
    "ids_for_pairs",
    "write_classification_csv",
    "write_verification_csv",
    "CLASSIFICATION_HEADER",
    "VERIFICATION_HEADER",
]

PathLike = Union[str, "os.PathLike[str]"]
AmpArg = Union[bool, str, torch.dtype, None]

# The headers HW2P2's two Kaggle competitions expect (their sample submissions).
CLASSIFICATION_HEADER = ("id", "label")
VERIFICATION_HEADER = ("Id", "Category")


# --------------------------------------------------------------------------- embeddings


def _autocast(device: torch.device, amp: AmpArg) -> contextlib.AbstractContextManager:
    """autocast for inference on CUDA, with the engine's choice of dtype; nothing elsewhere.

    `amp` is the engine's "auto" | "bf16" | "fp16" | "off" ("auto": bf16 on GPUs that run it
    natively, fp16 on older ones such as the T4), True (= "auto"), False/None (= "off") or a
    dtype. On the CPU and MPS embeddings are computed in float32 whatever `amp` says.
    """
    if isinstance(amp, torch.dtype):
        if amp not in (torch.float16, torch.bfloat16):
            raise ValueError(f"amp dtype must be torch.float16 or torch.bfloat16; got {amp}")
        dtype: Optional[torch.dtype] = amp
    else:
        if amp is True:
            mode = "auto"
        elif amp is False or amp is None:
            mode = "off"
        else:
            mode = amp
        if device.type != "cuda" and mode in ("bf16", "fp16"):
            mode = "off"  # inference on the CPU: float32 (CPU autocast is slower here, not faster)
        dtype, _ = resolve_amp(device, mode)  # raises for an unknown mode, listing the valid ones
    if device.type != "cuda" or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def _images_of(batch: Any) -> torch.Tensor:
    """The image tensor of a loader batch: `(images, labels, ...)` or the images alone."""
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        raise TypeError(
            f"the loader must yield image tensors or (images, labels) tuples; got {type(batch).__name__}"
        )
    return batch


def _embedding_fn(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    embed_fn = getattr(model, "embed", None)
    if not callable(embed_fn):
        raise TypeError(
            f"{type(model).__name__} has no embed(x) method. Every era_utils model has one "
            "(create_model(...)); for your own classifier add `def embed(self, x)` returning the "
            "pooled features that feed the last Linear layer, shape (B, D)."
        )
    return embed_fn


def embed(
    model: nn.Module,
    loader: Iterable,
    device: str | torch.device | None = None,
    normalize: bool = True,
    amp: AmpArg = "auto",
    *,
    progress: bool = False,
) -> torch.Tensor:
    """Penultimate-layer embeddings `(N, D)` float32 on the CPU, in the loader's order.

    Runs `model.embed` under eval + inference mode (the model's mode is restored afterwards)
    and autocast on CUDA. `normalize=True` divides each row by its L2 norm, so a dot product
    of two rows is their cosine similarity. The model is moved to `device`.
    """
    device = get_device(device)
    embed_fn = _embedding_fn(model)
    model.to(device)
    chunks: list[torch.Tensor] = []
    # eval_mode gives every module its own flag back (e.g. frozen BatchNorm layers).
    with eval_mode(model), torch.inference_mode(), _autocast(device, amp):
        # iter() first: tqdm.auto would otherwise call iter(loader) twice (tqdm issue #1598).
        total = len(loader) if hasattr(loader, "__len__") else None
        for batch in tqdm(iter(loader), total=total, desc="embed", disable=not progress, leave=False):
            images = _images_of(batch).to(device, non_blocking=True)  # (B, C, H, W)
            features = embed_fn(images)  # (B, D), bf16/fp16 under autocast
            # Normalise in float32: bf16 norms are only good to ~3 significant digits.
            features = features.float()
            if normalize:
                features = F.normalize(features, dim=1)
            chunks.append(features.cpu())
    if not chunks:
        raise ValueError("the loader yielded no batches: nothing to embed")
    return torch.cat(chunks)


def _to_float_tensor(image: np.ndarray) -> torch.Tensor:
    """Default transform: uint8 (H, W, C) -> float32 (C, H, W) in [0, 1]."""
    array = np.array(image, dtype=np.uint8)  # a copy: arrays from PIL are read-only
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


class _TensorImageFiles(ImageFiles):
    """`data.ImageFiles` (path -> (image, index)) that insists the transform made a tensor."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, index = super().__getitem__(index)
        if not isinstance(image, torch.Tensor):
            raise TypeError(
                f"the transform turned {self.paths[index]} into a {type(image).__name__}, not a (C, H, W) "
                "tensor: end it with v2.ToImage() + v2.ToDtype(torch.float32, scale=True) (torchvision) "
                "or ToTensorV2() (albumentations)"
            )
        return image, index


def embed_paths(
    model: nn.Module,
    paths: Sequence[PathLike],
    transform: Optional[Callable] = None,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 128,
    num_workers: int = 0,
    normalize: bool = True,
    amp: AmpArg = "auto",
    progress: bool = False,
) -> torch.Tensor:
    """Embeddings `(len(paths), D)` of image files, in batches (see `embed`)."""
    paths = [Path(p) for p in paths]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise FileNotFoundError(
            f"{len(missing)} of {len(paths)} images do not exist (e.g. {shown}). If the pairs file "
            "holds relative paths, pass root= (the folder they are relative to) to read_pairs."
        )
    device = get_device(device)
    # Images are read as RGB by data.load_image and handed to the transform the way FaceFolder
    # does (albumentations: image=ndarray; torchvision: a PIL image; other callables: the ndarray).
    loader = DataLoader(
        _TensorImageFiles(paths, transform if transform is not None else _to_float_tensor),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    return embed(model, loader, device=device, normalize=normalize, amp=amp, progress=progress)


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


def class_pairs(labels: Sequence[int] | np.ndarray | torch.Tensor, n: int, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`n` balanced index pairs from class labels, for verification on a classification set
    (Fashion-MNIST classes standing in for identities): (a, b, same) with even k the same class
    (same=1) and odd k two different classes (same=0)."""
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    by_class = [members for members in by_class if len(members) >= 2]
    if len(by_class) < 2:
        raise ValueError("class_pairs needs at least two classes with two or more images each")
    rng = np.random.default_rng(seed)
    a, b = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    for k in range(n):
        if k % 2 == 0:
            a[k], b[k] = rng.choice(by_class[rng.integers(len(by_class))], size=2, replace=False)
        else:
            c1, c2 = rng.choice(len(by_class), size=2, replace=False)
            a[k], b[k] = rng.choice(by_class[c1]), rng.choice(by_class[c2])
    same = (np.arange(n) % 2 == 0).astype(np.int64)
    return a, b, same


def _pair_paths(pair: Any) -> tuple[Path, Path]:
    """(a, b) of a `data.Pair` or of a plain `(a, b[, label])` tuple."""
    if hasattr(pair, "a") and hasattr(pair, "b"):
        return Path(pair.a), Path(pair.b)
    a, b = pair[0], pair[1]
    return Path(a), Path(b)


def _pair_label(pair: Any) -> Optional[int]:
    if hasattr(pair, "label"):
        return pair.label
    return pair[2] if len(pair) > 2 else None


def score_pairs(
    model: nn.Module,
    pairs: Sequence[Any],
    transform: Optional[Callable] = None,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 128,
    num_workers: int = 0,
    amp: AmpArg = "auto",
    progress: bool = False,
) -> np.ndarray:
    """Cosine similarity `(P,)` float32 of each pair (`data.Pair` or `(a, b[, label])`).

    Each distinct image is read and embedded once, however many pairs it appears in
    (HW2P2's pairs files reuse images many times), then the pairs index the embeddings.
    """
    if len(pairs) == 0:
        raise ValueError("no pairs to score: the pairs list is empty")
    index: dict[Path, int] = {}  # unique path -> row of the embedding matrix, first-seen order
    rows_a: list[int] = []
    rows_b: list[int] = []
    for pair in pairs:
        a, b = _pair_paths(pair)
        rows_a.append(index.setdefault(a, len(index)))
        rows_b.append(index.setdefault(b, len(index)))
    emb = embed_paths(
        model,
        list(index),
        transform,
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
        normalize=True,
        amp=amp,
        progress=progress,
    )  # (U, D), unit rows
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


def plot_roc(
    metrics: VerificationMetrics,
    *,
    ax: Axes | None = None,
    title: str = "Verification ROC",
    label: str = "ROC",
) -> Figure:
    """The ROC curve with its AUC in the legend and the EER point marked; returns the Figure."""
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


# --------------------------------------------------------------------------- end to end


def verify_pairs(
    model: nn.Module,
    pairs: Sequence[Any],
    transform: Optional[Callable] = None,
    *,
    threshold: float | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 128,
    num_workers: int = 0,
    amp: AmpArg = "auto",
    progress: bool = False,
) -> VerificationMetrics:
    """Labelled (dev) pairs -> scores -> `VerificationMetrics` (AUC, EER, threshold, accuracy)."""
    labels = [_pair_label(p) for p in pairs]
    unlabelled = sum(label is None for label in labels)
    if unlabelled:
        raise ValueError(
            f"{unlabelled} of {len(pairs)} pairs have no label: verify_pairs needs the labelled dev "
            "pairs (three columns: a b label); for test pairs use submit_pairs"
        )
    scores = score_pairs(
        model, pairs, transform, device=device, batch_size=batch_size, num_workers=num_workers,
        amp=amp, progress=progress,
    )
    return verification_metrics(labels, scores, threshold=threshold)


def submit_pairs(
    model: nn.Module,
    pairs: Sequence[Any],
    transform: Optional[Callable],
    path: PathLike,
    *,
    root: PathLike | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 128,
    num_workers: int = 0,
    amp: AmpArg = "auto",
    progress: bool = False,
) -> np.ndarray:
    """(Test) pairs -> scores -> the Kaggle verification CSV at `path`; returns the scores."""
    scores = score_pairs(
        model, pairs, transform, device=device, batch_size=batch_size, num_workers=num_workers,
        amp=amp, progress=progress,
    )
    write_verification_csv(path, ids_for_pairs(pairs, root=root), scores)
    return scores


# --------------------------------------------------------------------------- Kaggle CSVs


def _relative(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return path.as_posix()


def ids_for_pairs(pairs: Sequence[Any], root: PathLike | None = None) -> list[str]:
    """Kaggle ids of pairs: the two paths of the pairs-file line, `"a b"`.

    A `data.Pair` carries them as written in the file (`pair_id`); for plain `(a, b)` tuples
    the paths are made relative to `root` (the folder they were joined to) when given.
    """
    root_path = Path(root) if root is not None else None
    ids = []
    for pair in pairs:
        written = getattr(pair, "pair_id", "")
        if written:
            ids.append(written)
            continue
        a, b = _pair_paths(pair)
        ids.append(f"{_relative(a, root_path)} {_relative(b, root_path)}")
    return ids


def _as_list(values: Any, what: str) -> list:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            hint = " (logits? pass logits.argmax(1))" if values.ndim == 2 and what == "labels" else ""
            raise ValueError(f"{what} must be 1-D, one per row; got shape {values.shape}{hint}")
        return values.tolist()
    return list(values)


def _check_lengths(ids: list, values: list, what: str) -> None:
    if len(ids) != len(values):
        raise ValueError(
            f"{len(ids)} ids but {len(values)} {what}: each CSV row needs one id and one value "
            "(did the loader drop the last batch, or shuffle?)"
        )


def _open_csv(path: PathLike) -> Any:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("w", newline="", encoding="utf-8")  # newline="": the csv module writes \r\n itself


def write_classification_csv(
    path: PathLike,
    ids: Sequence[Any],
    labels: Any,
    classes: Sequence[str] | None = None,
) -> Path:
    """Kaggle classification CSV: header `id,label`, one row per test image.

    `ids` are image paths or file names (written as the file name: `test/0001.jpg` -> `0001.jpg`);
    `labels` are predicted class indices, written as `classes[index]` (the identity folder
    names, e.g. `FaceFolder(...).classes`) when `classes` is given, else as the indices.
    """
    id_list = [os.path.basename(os.fspath(i)) if isinstance(i, (str, os.PathLike)) else str(i) for i in ids]
    label_list = _as_list(labels, "labels")
    _check_lengths(id_list, label_list, "labels")
    if classes is not None:
        classes = list(classes)
        bad = [v for v in label_list if not (isinstance(v, (int, np.integer)) and 0 <= v < len(classes))]
        if bad:
            raise ValueError(
                f"labels must be class indices in [0, {len(classes)}) to map through classes; found {bad[:5]}"
            )
        label_list = [classes[v] for v in label_list]
    path = Path(path)
    with _open_csv(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CLASSIFICATION_HEADER)
        writer.writerows(zip(id_list, label_list))
    return path


def write_verification_csv(
    path: PathLike,
    pair_ids: Sequence[Any],
    scores: Any,
    *,
    precision: int = 6,
) -> Path:
    """Kaggle verification CSV: header `Id,Category`, one row per pair: its id and its similarity score.

    Use `ids_for_pairs(pairs, root)` for the ids HW2P2 expects (the pairs file's `a b` line).
    """
    id_list = [str(i) for i in pair_ids]
    score_list = [float(s) for s in _as_list(scores, "scores")]
    _check_lengths(id_list, score_list, "scores")
    path = Path(path)
    with _open_csv(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(VERIFICATION_HEADER)
        writer.writerows((i, f"{s:.{precision}f}") for i, s in zip(id_list, score_list))
    return path
