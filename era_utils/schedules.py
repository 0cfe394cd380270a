"""Optimisers, the loss and the per-step LR schedules the assignments use.

- S10: Adam + One Cycle over 24 epochs, peak at epoch 5, no annihilation (`one_cycle`).
- HW2P2: SGD (momentum, weight decay) + label smoothing 0.2 + CosineAnnealingWarmRestarts
  (T_0=10, T_mult=2) counted in epochs but stepped per batch (`cosine_warm_restarts`).

Every scheduler built here is meant to be stepped once per batch, after `optimizer.step()`
(`era_utils.engine.fit` does exactly that).
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, OneCycleLR

__all__ = [
    "OPTIMIZERS",
    "make_optimizer",
    "make_criterion",
    "OneCycleSchedule",
    "one_cycle",
    "cosine_warm_restarts",
]

OPTIMIZERS = ("adam", "sgd")


def make_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter] | Iterable[dict],
    lr: float,
    *,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """Build "adam" (S10) or "sgd" (HW2P2: momentum, optional Nesterov, weight decay).

    `momentum` and `nesterov` only apply to SGD; `weight_decay` is L2 added to the gradient
    (torch's classic form) for both. `fused=None` (auto) uses torch's fused kernels (one launch
    updates every parameter) when all parameters already live on a CUDA GPU, so move the model
    to the GPU first; elsewhere torch's default implementation.
    """
    key = name.lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)}.")
    # May be generators: read twice below. A group's "params" becomes a list as torch would make it.
    params = [dict(p, params=[p["params"]] if isinstance(p["params"], torch.Tensor) else list(p["params"]))
              if isinstance(p, dict) else p for p in params]
    if fused is None:
        fused = _all_on_cuda(params)
    extra = {"fused": True} if fused else {}
    if key == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **extra)
    if nesterov and momentum <= 0:
        raise ValueError(f"Nesterov SGD needs momentum > 0, got momentum={momentum}.")
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, **extra
    )


def _all_on_cuda(params: list) -> bool:
    """True when every parameter (tensors, or param-group dicts with a list of them) is a CUDA float tensor."""
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    return bool(tensors) and all(t.is_cuda and t.is_floating_point() for t in tensors)


def make_criterion(label_smoothing: float = 0.0) -> nn.CrossEntropyLoss:
    """Cross-entropy on logits; HW2P2 uses label_smoothing=0.2 (the loss includes the smoothing)."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


class OneCycleSchedule(OneCycleLR):
    """torch's OneCycleLR with exact phase end points and no extrapolation past the last step.

    Stock OneCycleLR computes `(end - start) * pct + start`, which can miss `max_lr` by one ulp at
    the peak, and after the final `step()` (the one that follows the last batch) it extrapolates
    the last phase below `min_lr`. Here a phase that is complete (pct >= 1) returns its end value
    exactly, so the LR at the peak step is `max_lr` and the LR never goes below the final LR.
    """

    @staticmethod
    def _annealing_linear(start: float, end: float, pct: float) -> float:
        if pct >= 1.0:
            return end
        return (end - start) * pct + start

    @staticmethod
    def _annealing_cos(start: float, end: float, pct: float) -> float:
        if pct >= 1.0:
            return end
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _exact_pct_start(peak_steps: int, total_steps: int) -> float:
    """pct_start for which OneCycleLR's phase-1 end, float(pct * total) - 1, is exactly peak_steps - 1."""
    pct = peak_steps / total_steps
    # k / n * n rounds back to k for almost every pair; nudge by an ulp in the rare case it does not.
    for _ in range(4):
        got = float(pct * total_steps)
        if got == peak_steps:
            return pct
        pct = math.nextafter(pct, math.inf if got < peak_steps else -math.inf)
    return pct


def one_cycle(
    optimizer: torch.optim.Optimizer,
    max_lr: float,
    epochs: int,
    steps_per_epoch: int,
    peak_epoch: float = 5,
    *,
    div_factor: float = 10.0,
    final_div_factor: float = 1.0,
    anneal: str = "linear",
    cycle_momentum: bool = True,
) -> OneCycleSchedule:
    """One Cycle per step, two phases (no annihilation): S10's "24 epochs, peak at epoch 5".

    LR per step (index = number of optimizer steps taken before it):
    - starts at `max_lr / div_factor` and rises (linearly by default) to exactly `max_lr` at step
      `round(peak_epoch * steps_per_epoch) - 1`, the last batch of epoch `peak_epoch` (1-based;
      a fractional peak_epoch, for runs shorter than the recipe, is allowed);
    - then falls to the final LR `max_lr / (div_factor * final_div_factor)` at the last step,
      `epochs * steps_per_epoch - 1`, and stays there (never below it).
    With the defaults the final LR equals the starting LR, max_lr / 10: no annihilation below it.
    Pass final_div_factor=100 for seed 004's recipe (ends at max_lr / 1000).
    `cycle_momentum` (torch's default) cycles SGD momentum / Adam beta1 between 0.95 and 0.85;
    note it also sets momentum on an SGD built with momentum=0.
    Build it after `find_lr` (the LR finder refuses an optimizer that already has a scheduler).
    """
    if not (isinstance(epochs, int) and epochs > 0):
        raise ValueError(f"epochs must be a positive int, got {epochs!r}.")
    if not (isinstance(steps_per_epoch, int) and steps_per_epoch > 0):
        raise ValueError(
            f"steps_per_epoch must be a positive int (use len(train_loader)), got {steps_per_epoch!r}."
        )
    total_steps = epochs * steps_per_epoch
    if total_steps < 3:
        raise ValueError(
            f"One Cycle needs at least 3 optimizer steps (2 warm-up, 1 after the peak), but "
            f"{epochs} epoch(s) x {steps_per_epoch} step(s) per epoch = {total_steps}: train for more "
            "epochs, on more images, or with a smaller batch size."
        )
    if not 0 < peak_epoch < epochs:
        raise ValueError(
            f"peak_epoch must lie strictly between 0 and epochs = {epochs} (a fraction is allowed "
            f"for short runs), got {peak_epoch}."
        )
    if div_factor < 1 or final_div_factor < 1:
        raise ValueError(
            f"div_factor and final_div_factor must be >= 1 (got {div_factor}, {final_div_factor}): "
            "they divide max_lr to give the starting and final LRs."
        )
    peak_steps = int(round(peak_epoch * steps_per_epoch))  # steps up to and including the peak
    if not 2 <= peak_steps < total_steps:
        raise ValueError(
            f"peak_epoch={peak_epoch} x steps_per_epoch={steps_per_epoch} puts the peak at step "
            f"{peak_steps} of {total_steps}: One Cycle needs at least 2 warm-up steps and 1 step after "
            "the peak."
        )
    return OneCycleSchedule(
        optimizer,
        max_lr=max_lr,
        total_steps=total_steps,
        pct_start=_exact_pct_start(peak_steps, total_steps),
        anneal_strategy=anneal,
        three_phase=False,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        cycle_momentum=cycle_momentum,
    )


def cosine_warm_restarts(
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    T_0: int = 10,
    T_mult: int = 2,
    eta_min: float = 0.0,
) -> CosineAnnealingWarmRestarts:
    """CosineAnnealingWarmRestarts with T_0 given in epochs, for stepping once per batch.

    T_0 is converted to steps (T_0 * steps_per_epoch), so with T_0=10, T_mult=2 the LR jumps back
    to the optimizer's LR at the first batch of epochs 10, 30, 70, ... (0-based epoch index),
    i.e. at step indices 10*spe, 30*spe, 70*spe. Call `scheduler.step()` with no argument.
    """
    if not (isinstance(steps_per_epoch, int) and steps_per_epoch > 0):
        raise ValueError(
            f"steps_per_epoch must be a positive int (use len(train_loader)), got {steps_per_epoch!r}."
        )
    if not (isinstance(T_0, int) and T_0 > 0):
        raise ValueError(f"T_0 must be a positive int number of epochs, got {T_0!r}.")
    return CosineAnnealingWarmRestarts(
        optimizer, T_0=T_0 * steps_per_epoch, T_mult=T_mult, eta_min=eta_min
    )
