"""What a loader must yield and what a model must return: the checks the engine, the LR range test
and the inference pass share.

A training batch is `(images, labels)`: images a float tensor (B, C, H, W), labels an integer tensor
(B,) of class indices. An inference batch may also be images alone, or carry extra items after the
labels (a dataset that returns file ids); its labels may be -1 (an unlabelled test image). Every
check here reads only shapes and dtypes (no device sync), except `check_label_range`, which is
called once per pass and where a loss has already failed.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = [
    "BATCH_FORMAT",
    "check_label_range",
    "check_logits",
    "describe",
    "label_range_error",
    "loader_length",
    "loss_or_label_error",
    "to_device",
    "unpack_batch",
    "unpack_inference_batch",
]

BATCH_FORMAT = (
    "(images, labels) pairs: images a float tensor (B, C, H, W) and labels an integer tensor (B,) "
    "of class indices"
)


def describe(obj: Any) -> str:
    """A short description of what a loader yielded or a model returned, for error messages."""
    if isinstance(obj, torch.Tensor):
        return f"Tensor{tuple(obj.shape)} {str(obj.dtype).replace('torch.', '')}"
    if isinstance(obj, (tuple, list)):
        inner = ", ".join(describe(o) for o in obj[:4]) + (", ..." if len(obj) > 4 else "")
        return f"a {type(obj).__name__} of {len(obj)} items ({inner})"
    if isinstance(obj, dict):
        return f"a dict with keys {list(obj)[:6]}"
    return f"a {type(obj).__name__}"


def _check_labels(images: torch.Tensor, labels: torch.Tensor, step: int) -> None:
    if labels.ndim != 1 or images.ndim == 0 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"Batch {step + 1}: labels must have shape (B,) with B = images.shape[0], but got images "
            f"{tuple(images.shape)} and labels {tuple(labels.shape)}. One-hot labels are not "
            "supported: pass class indices."
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(
            f"Batch {step + 1}: labels must be integer class indices, got dtype "
            f"{str(labels.dtype).replace('torch.', '')}. Convert them with labels.long()."
        )


def unpack_batch(batch: Any, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch split into (images, labels), or a ValueError saying what the loader gave."""
    if not (
        isinstance(batch, (tuple, list))
        and len(batch) == 2
        and all(isinstance(t, torch.Tensor) for t in batch)
    ):
        raise ValueError(
            f"The loader must yield {BATCH_FORMAT}, but batch {step + 1} was {describe(batch)}. "
            "If the dataset returns extra items or a dict, map each sample to (image, label) first."
        )
    images, labels = batch
    _check_labels(images, labels, step)
    return images, labels


def unpack_inference_batch(batch: Any, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of an inference batch: images alone get labels -1 (unlabelled); items after
    the labels (ids, paths) are ignored."""
    if isinstance(batch, torch.Tensor):
        images, labels = batch, None
    elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        images = batch[0]
        labels = torch.as_tensor(batch[1]) if len(batch) > 1 else None
    else:
        raise ValueError(
            f"The loader must yield image tensors or {BATCH_FORMAT}, but batch {step + 1} was "
            f"{describe(batch)}."
        )
    if labels is None:
        labels = torch.full((images.shape[0],), -1, dtype=torch.long)
    _check_labels(images, labels, step)
    return images, labels


def check_logits(logits: Any, labels: torch.Tensor) -> int:
    """Check the model's output against the batch and return its number of classes."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(
            f"The model returned {describe(logits)}; the engine expects logits, one tensor "
            "(B, num_classes)."
        )
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"The model's output has shape {tuple(logits.shape)}; expected logits (B, num_classes) "
            f"with B = {labels.shape[0]} (the batch size)."
        )
    return int(logits.shape[1])


def label_range_error(lo: int, hi: int, num_outputs: int, where: str) -> ValueError:
    """The error for labels outside [0, num_outputs): says which end is wrong and what to change."""
    if lo < 0:
        problem = f"has a negative label ({lo}); -1 marks unlabelled images, which cannot be scored"
    else:
        problem = (
            f"has labels up to {hi} (max label {hi}); build the model with num_classes={hi + 1} "
            "or more, or fix the dataset's labels"
        )
    return ValueError(
        f"Labels must be class indices in [0, {num_outputs - 1}] for a model with {num_outputs} "
        f"outputs, but {where} {problem}."
    )


def check_label_range(labels: torch.Tensor, num_outputs: int, where: str, *,
                      allow_unlabelled: bool = False) -> None:
    """Eager range check (one device sync): labels in [0, num_outputs), or -1 when allowed."""
    if labels.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.stack([labels.min(), labels.max()]).tolist())
    if (lo < (-1 if allow_unlabelled else 0)) or hi >= num_outputs:
        raise label_range_error(lo, hi, num_outputs, where)


def loss_or_label_error(criterion: nn.Module, logits: torch.Tensor, labels: torch.Tensor,
                        num_outputs: int, where: str, embeddings: torch.Tensor | None = None) -> torch.Tensor:
    """criterion(logits, labels) (with `embeddings` too, for a loss that reads them: face_losses),
    turning an out-of-range-label failure into a readable error."""
    try:
        return criterion(logits, labels) if embeddings is None else criterion(logits, labels, embeddings)
    except (IndexError, RuntimeError) as err:
        # On the CPU cross_entropy raises for a bad label before any sync point could see it.
        check_label_range(labels, num_outputs, where)
        raise err


def loader_length(loader: Any) -> int | None:
    """len(loader), or None for a loader (or iterator) without a length."""
    try:
        return len(loader)
    except TypeError:
        return None


def to_device(images: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """Move a batch of images to `device` (a no-op for the GPU-resident loader), channels_last if asked."""
    images = images.to(device, non_blocking=True)
    if channels_last and images.ndim == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images

