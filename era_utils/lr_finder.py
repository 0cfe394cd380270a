"""LR range test (Smith 2015; fastai's lr_find) on torch-lr-finder, with a suggestion that survives noise.

`find_lr` runs torch-lr-finder's `LRFinder.range_test` (the LR grows exponentially from
`start_lr` to `end_lr` over `num_iter` batches), then `reset()` puts the model and optimizer back
exactly as they were. It returns an `LRFinderResult`: the LR and raw loss of every batch, a
smoothed curve, and a suggested LR taken from the smoothed curve, never from the raw one.

Why not the library's own suggestion: its `plot()` takes the steepest gradient of the raw curve,
which lands on whichever batch happened to be noisy, and it calls `plt.show()` unless given an
axis. Here the curve is smoothed with a centred Gaussian (no lag, unlike an EMA, which shifts the
curve to higher LRs) and the steepest descent is searched only before the smoothed minimum.
S10: `steps.range_test` runs it with the recipe's settings, then the recipe builds One Cycle with
max_lr = the suggestion (`Recipe.configure_optimizers`).
"""
from __future__ import annotations

import contextlib
import functools
import io
import math
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Sequence
from unittest import mock

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import nn
import torch_lr_finder.lr_finder as _lr_finder_lib
from torch_lr_finder import LRFinder, TrainDataLoaderIter
from tqdm.auto import tqdm

from era_utils.batches import (
    check_label_range,
    check_logits,
    loader_length,
    loss_or_label_error,
    unpack_batch,
)
from era_utils.choices import LR_RULES
from era_utils.speed import grad_scaler, resolve_amp
from era_utils.utils import get_device, keep_modes

__all__ = ["LRFinderResult", "MIN_LR_METHODS", "RULES", "SUGGESTION_METHODS", "find_lr", "smooth_losses",
           "suggest_lr", "suggest_min_lr"]

SUGGESTION_METHODS = LR_RULES  # rules for the max LR (`--lr-rule`)
MIN_LR_METHODS = ("tenth", "descent")  # rules for One Cycle's starting (min) LR
# Each rule in words, for figures and reports.
RULES = {
    "steepest": "the steepest descent of the smoothed loss, before its minimum",
    "valley": "fastai's valley: two thirds of the way down the longest falling stretch",
    "minimum": "a tenth of the LR at the smoothed loss's minimum",
    "tenth": "a tenth of the max LR",
    "descent": "where the smoothed loss has fallen a tenth of the way to its minimum (Smith's lower bound)",
}
MIN_POINTS = 10  # fewer recorded batches than this cannot support a suggestion


# ----------------------------------------------------------------------------- suggestion


def smooth_losses(losses: Sequence[float], sigma: float | None = None) -> np.ndarray:
    """Centred Gaussian smoothing over batch index (= log-LR for an exponential ramp).

    sigma defaults to len/25 batches (4 for the usual 100), at least 1. Weights are renormalised
    at the ends, so the curve is not pulled towards zero there.
    """
    y = np.asarray(losses, dtype=np.float64)
    n = len(y)
    if n == 0:
        return y
    sigma = max(1.0, n / 25) if sigma is None else float(sigma)
    idx = np.arange(n)
    weights = np.exp(-0.5 * ((idx[:, None] - idx[None, :]) / sigma) ** 2)  # (n, n)
    return weights @ y / weights.sum(axis=1)


def _valley_index(smoothed: np.ndarray) -> int:
    """fastai's `valley`: the longest decreasing run of the curve, 2/3 of the way down it."""
    n = len(smoothed)
    run = [1] * n  # length of the longest decreasing subsequence ending at i
    best_start, best_end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if smoothed[i] < smoothed[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[best_end] < run[i]:
            best_end, best_start = i, i - run[i]
    sections = (best_end - best_start) / 3
    return min(best_start + int(sections) + int(sections / 2), n - 1)


def _suggest(lrs: np.ndarray, smoothed: np.ndarray, method: str) -> float:
    if method not in SUGGESTION_METHODS:
        raise ValueError(f"method must be one of {list(SUGGESTION_METHODS)}, got {method!r}.")
    lowest = int(np.argmin(smoothed))
    if method == "minimum":
        return float(lrs[lowest] / 10)  # the classic "an order of magnitude below the minimum"
    if method == "valley":
        return float(lrs[_valley_index(smoothed)])
    if lowest < 2:
        warnings.warn(
            "The smoothed loss never falls (its minimum is at the first LRs): no steepest descent "
            "to suggest; using the minimum / 10. Lower start_lr or check the model.",
            stacklevel=3,
        )
        return float(lrs[lowest] / 10)
    slope = np.gradient(smoothed, np.log10(lrs))  # loss per decade of LR
    return float(lrs[int(np.argmin(slope[: lowest + 1]))])


def suggest_min_lr(lrs: Sequence[float], smoothed: Sequence[float], max_lr: float, method: str = "tenth") -> float:
    """One Cycle's starting LR from a range test: "tenth" = max_lr / 10; "descent" = the LR where
    the smoothed loss has fallen a tenth of the way from its start to its minimum (where training
    starts to work: Smith's lower bound), at most half of max_lr so the cycle still rises."""
    if method not in MIN_LR_METHODS:
        raise ValueError(f"min LR method must be one of {list(MIN_LR_METHODS)}, got {method!r}.")
    if method == "tenth":
        return float(max_lr / 10)
    curve = np.asarray(smoothed, dtype=np.float64)
    lowest = int(np.argmin(curve))
    threshold = curve[0] - 0.1 * (curve[0] - curve[lowest])
    start = int(np.argmax(curve[: lowest + 1] <= threshold))  # the first LR at or past it
    return float(min(lrs[start], max_lr / 2))


def suggest_lr(lrs: Sequence[float], losses: Sequence[float], method: str = "steepest") -> float:
    """Suggested LR from raw range-test losses (they are smoothed first).

    "steepest": steepest descent of the smoothed loss before its minimum (default);
    "valley": fastai's longest-valley rule; "minimum": the LR at the smoothed minimum / 10.
    """
    lrs_arr = np.asarray(lrs, dtype=np.float64)
    if len(lrs_arr) != len(losses) or len(lrs_arr) < 3:
        raise ValueError(f"Need matching lrs and losses with at least 3 points, got {len(lrs_arr)} "
                         f"and {len(losses)}.")
    return _suggest(lrs_arr, smooth_losses(losses), method)


# ----------------------------------------------------------------------------- result


@dataclass
class LRFinderResult:
    """One range test: per-batch LRs and raw losses, the smoothed curve, the suggested LR."""

    lrs: list[float]
    losses: list[float]  # raw training loss of each batch
    smoothed: list[float]  # smooth_losses(losses)
    suggestion: float  # the max LR, by `method`
    method: str = "steepest"
    stopped_early: bool = False  # the loss diverged (or became NaN/inf) before num_iter batches
    min_lr: float | None = None  # One Cycle's starting LR, by `min_method` (S10: LRMIN = FIND)
    min_method: str = "tenth"

    @property
    def loss_min_lr(self) -> float:
        """The LR at the smoothed loss's minimum."""
        return float(self.lrs[int(np.argmin(self.smoothed))])

    def to_dict(self) -> dict[str, Any]:
        """The curve, both suggestions and their rules as plain lists and numbers, ready for JSON."""
        return {"lrs": self.lrs, "losses": self.losses, "smoothed": self.smoothed,
                "suggestion": self.suggestion, "method": self.method, "rule": RULES[self.method],
                "min_lr": self.min_lr, "min_method": self.min_method, "min_rule": RULES[self.min_method],
                "loss_min_lr": self.loss_min_lr, "stopped_early": self.stopped_early}

    def plot(self, ax: Axes | None = None, title: str = "LR range test") -> Figure:
        """Loss against LR (log axis): the loss minimum, the chosen max LR and min LR marked, each
        with its rule; never calls plt.show()."""
        from era_utils.plots import plot_lr_finder  # one drawing of this figure, shared with plots.py

        return plot_lr_finder(self.lrs, self.losses, self.suggestion, self.smoothed, ax=ax, title=title,
                              min_lr=self.min_lr, rule=RULES[self.method],
                              min_rule=RULES[self.min_method] if self.min_lr is not None else None)


# ----------------------------------------------------------------------------- range test


class _NonFinite(Exception):
    """Raised by the watched criterion to stop the test at the first NaN/inf loss."""


class _WatchedLoss(nn.Module):
    """Wraps the criterion: checks the first batch, records each raw loss, stops on NaN/inf.

    torch-lr-finder records an exponentially smoothed loss and keeps going after a NaN (a NaN
    never exceeds its divergence threshold); reading the loss here costs nothing extra, as the
    library already calls `loss.item()` on every batch.
    """

    def __init__(self, criterion: Any) -> None:
        super().__init__()
        self.criterion = criterion
        self.losses: list[float] = []
        self.num_outputs = 0

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        where = f"batch {len(self.losses) + 1} of the range test"
        if not self.losses:
            self.num_outputs = check_logits(logits, labels)
            check_label_range(labels, self.num_outputs, where)
        loss = loss_or_label_error(self.criterion, logits, labels, self.num_outputs, where)
        value = float(loss.detach())
        self.losses.append(value)
        if not math.isfinite(value):
            raise _NonFinite(value)
        return loss


class _Batches(TrainDataLoaderIter):
    """Feeds the range test from any loader yielding (images, labels), restarting it when it ends."""

    def __init__(self, loader: Iterable, num_iter: int) -> None:
        super().__init__(loader, auto_reset=True)  # calls iter(loader) once
        self.num_iter = num_iter
        self.count = 0  # batches given out in all
        self.count_this_pass = 0

    def inputs_labels_from_batch(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = unpack_batch(batch, self.count)
        return images, labels.long()

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            batch = next(self._iterator)
        except StopIteration:
            if self.count == 0:
                raise ValueError("The loader yielded no batches.") from None
            self._iterator = iter(self.data_loader)  # a DataLoader starts a new epoch
            self.count_this_pass = 0
            try:
                batch = next(self._iterator)
            except StopIteration:
                raise ValueError(
                    f"The loader ran out after {self.count} batches and yields nothing when "
                    f"iterated again (a generator?), but the range test needs num_iter="
                    f"{self.num_iter}: pass a DataLoader or another re-iterable loader, or lower "
                    "num_iter."
                ) from None
        self.count += 1
        self.count_this_pass += 1
        return self.inputs_labels_from_batch(batch)


def _finder_amp(device: torch.device, amp: str) -> dict[str, Any]:
    """LRFinder's mixed-precision arguments: amp_backend="torch" needs amp_config AND a GradScaler."""
    amp_dtype, scaler = resolve_amp(device, amp)
    if amp_dtype is None:
        return {}
    if scaler is None:  # bf16: no scaling, but the library insists on a scaler object
        scaler = grad_scaler(device.type, enabled=False)
    return {
        "amp_backend": "torch",
        "amp_config": {"device_type": device.type, "dtype": amp_dtype},
        "grad_scaler": scaler,
    }


def find_lr(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: Any,
    loader: Iterable,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_iter: int = 100,
    *,
    device: str | torch.device | None = None,
    amp: str = "auto",
    step_mode: str = "exp",
    smooth_f: float = 0.05,
    diverge_th: float = 5.0,
    method: str = "steepest",
    min_method: str = "tenth",
    verbose: bool = True,
) -> LRFinderResult:
    """Run the LR range test and return the curve and a suggested LR; model and optimizer are restored.

    Trains one batch per LR on `loader` (a DataLoader or the GPU-resident loader; restarted if
    shorter than num_iter). `method` picks the max LR (`suggestion`), `min_method` One Cycle's
    starting LR (`min_lr`); RULES says each in words. Stops early when torch-lr-finder's smoothed loss (EMA with
    `smooth_f`) exceeds `diverge_th` x its best, or at the first NaN/inf loss. `amp` as in fit.
    Afterwards the weights (and BatchNorm statistics), the optimizer state and LR, and every
    module's train/eval flag are what they were before; gradients are cleared.
    Build the LR scheduler only after this call: the library refuses an optimizer that has one.
    """
    if num_iter < MIN_POINTS:
        raise ValueError(f"num_iter={num_iter} is too few for a range test: use at least "
                         f"{MIN_POINTS} (100 is usual).")
    if not 0 < start_lr < end_lr:
        raise ValueError(f"Need 0 < start_lr < end_lr, got start_lr={start_lr}, end_lr={end_lr}.")
    if method not in SUGGESTION_METHODS:
        raise ValueError(f"method must be one of {list(SUGGESTION_METHODS)}, got {method!r}.")
    if min_method not in MIN_LR_METHODS:
        raise ValueError(f"min_method must be one of {list(MIN_LR_METHODS)}, got {min_method!r}.")
    if any("initial_lr" in group for group in optimizer.param_groups):
        raise ValueError(
            "The optimizer already has an LR scheduler attached (e.g. one_cycle). Run find_lr on a "
            "fresh optimizer first, then build the scheduler with the suggested LR."
        )
    if loader_length(loader) == 0:
        raise ValueError("The loader is empty: the range test needs batches.")
    device = get_device(device)

    watched = _WatchedLoss(criterion)
    finder = LRFinder(model, optimizer, watched, device=device, **_finder_amp(device, amp))
    try:
        # The library prints "Stopping early..." and a hint naming a variable the caller does not
        # have; the summary below says the same things.
        # verbose=False: the library's own progress bar too (it has no switch for it).
        quiet_bar = mock.patch.object(_lr_finder_lib, "tqdm", functools.partial(tqdm, disable=not verbose))
        with contextlib.redirect_stdout(io.StringIO()), quiet_bar, keep_modes(model):
            finder.range_test(
                _Batches(loader, num_iter), start_lr=start_lr, end_lr=end_lr, num_iter=num_iter,
                step_mode=step_mode, smooth_f=smooth_f, diverge_th=diverge_th,
            )
    except _NonFinite:
        pass  # the batches before the NaN are in finder.history
    finally:
        finder.reset()  # weights, BN statistics, optimizer state and LR
        optimizer.zero_grad(set_to_none=True)

    lrs = [float(lr) for lr in finder.history["lr"]]
    raw = watched.losses[: len(lrs)]
    stopped_early = len(lrs) < num_iter
    if len(lrs) < MIN_POINTS:
        last = watched.losses[-1] if watched.losses else float("nan")
        raise RuntimeError(
            f"The loss diverged after {len(watched.losses)} of {num_iter} batches (reaching "
            f"{last:.3g} at lr {lrs[-1] if lrs else start_lr:.2g}), too soon to suggest an LR. "
            f"Start lower (start_lr={start_lr:g}, try {start_lr / 100:g}), or check the model and "
            "data: a loss that explodes at tiny LRs usually means unnormalised inputs or wrong labels."
        )
    smoothed = smooth_losses(raw)
    suggestion = _suggest(np.asarray(lrs), smoothed, method)
    min_lr = suggest_min_lr(lrs, smoothed, suggestion, min_method)
    if verbose:
        note = " (stopped early: the loss diverged)" if stopped_early else ""
        tqdm.write(f"LR range test: {len(lrs)} batches, lr {lrs[0]:.1e} to {lrs[-1]:.1e}{note}; "
                   f"max LR {suggestion:.2e} ({method}), min LR {min_lr:.2e} ({min_method}).")
    return LRFinderResult(lrs=lrs, losses=raw, smoothed=smoothed.tolist(), suggestion=suggestion,
                          method=method, stopped_early=stopped_early, min_lr=min_lr, min_method=min_method)
