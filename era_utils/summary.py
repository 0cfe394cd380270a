"""Model summary table (torchinfo): input/output shapes, kernel shapes, params and mult-adds per layer.

`summary(model, (3, 32, 32))` returns torchinfo's `ModelStatistics`; its str() is the table, so
as the last expression of a notebook cell it displays, and `print(summary(...))` works headless.
The model is summarised in eval mode (batch 1 would upset BatchNorm statistics in train mode),
on its own device, and left exactly as it was: every module's train/eval flag and its device.
"""
from __future__ import annotations

import inspect
import re
from typing import Any, Sequence

import torch
import torch.nn as nn
from torchinfo import ModelStatistics
from torchinfo import summary as _torchinfo_summary
from torchinfo.enums import Units

from era_utils.utils import get_device

__all__ = ["summary", "SummaryStatistics", "DEFAULT_COLUMNS"]

# The columns the course asks for (S10: "model summary with input/output/kernel shapes").
DEFAULT_COLUMNS: tuple[str, ...] = ("input_size", "output_size", "kernel_size", "num_params", "mult_adds")

# Keyword arguments torchinfo.summary names; anything else it would silently hand to model.forward.
_TORCHINFO_KW = frozenset(
    p.name
    for p in inspect.signature(_torchinfo_summary).parameters.values()
    if p.kind is not inspect.Parameter.VAR_KEYWORD
) - {"model", "input_size", "input_data", "device"}


class SummaryStatistics(ModelStatistics):
    """torchinfo's ModelStatistics, with the mult-adds unit shown as "(G)" again.

    torchinfo 1.8.0 (its last release) prints "Total mult-adds (Units.GIGABYTES)" on Python >= 3.11,
    where f-strings format a str-Enum by its name (TylerYep/torchinfo#350).
    """

    def __repr__(self) -> str:
        return re.sub(r"\(Units\.(\w+)\)", lambda m: f"({Units[m.group(1)].value})", super().__repr__())


def _model_device(model: nn.Module) -> torch.device | None:
    p = next(model.parameters(), None)
    return None if p is None else p.device


def summary(
    model: nn.Module,
    input_size: Sequence[int] | None = None,
    device: str | torch.device | None = None,
    **kw: Any,
) -> ModelStatistics:
    """torchinfo summary of `model` on a zero input of `input_size` (C, H, W) or (B, C, H, W).

    `input_size` None means (model.in_channels or 3, 32, 32). `device` None means the model's own
    device. `kw` go to torchinfo.summary (e.g. depth=4, col_names=..., verbose=1); an unknown
    keyword raises TypeError instead of being passed to `model.forward`.
    """
    unknown = sorted(set(kw) - _TORCHINFO_KW)
    if unknown:
        raise TypeError(f"summary() got unknown keyword(s) {unknown}; torchinfo accepts: {sorted(_TORCHINFO_KW)}.")
    if input_size is None:
        input_size = (getattr(model, "in_channels", 3), 32, 32)
    size = tuple(int(s) for s in input_size)
    if len(size) == 3:
        size = (1, *size)  # add the batch dimension
    elif len(size) != 4:
        raise ValueError(f"input_size must be (C, H, W) or (B, C, H, W), got {tuple(input_size)}.")

    original_device = _model_device(model)
    # torchinfo's own default moves a CPU model to CUDA when one exists; stay where the model is.
    run_device = get_device(device) if device is not None else (original_device or torch.device("cpu"))
    kw.setdefault("col_names", DEFAULT_COLUMNS)
    # Default: return the table, don't print it (notebooks display the return value). We print
    # ourselves when asked, so the printed table is the corrected one.
    verbose = int(kw.pop("verbose", 0) or 0)
    kw.setdefault("mode", "eval")
    modes = {m: m.training for m in model.modules()}  # torchinfo would reset them all to the root's flag
    try:
        stats = _torchinfo_summary(model, input_size=size, device=run_device, verbose=0, **kw)
        stats.__class__ = SummaryStatistics
        stats.formatting.verbose = verbose  # 2 lists weights and biases in the table
        if verbose:
            print(stats)
        return stats
    finally:
        for m, training in modes.items():
            m.training = training
        if original_device is not None and _model_device(model) != original_device:
            model.to(original_device)
