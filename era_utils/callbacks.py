"""Hooks into `fit`: a small protocol a user implements in a few lines, and the loggers built on it.

`fit(..., callbacks=[...])` calls, on each callback:

    on_fit_start(info)            once, before the first epoch (info: FitInfo; resumed runs too)
    on_steps(step, values)        every `every_n_steps` optimizer steps (0: never); `step` counts
                                  from 1 over the whole run, `values` holds the epoch's running
                                  "loss" and "acc" and the step's "lr" (reading them waits for the
                                  device, so choose N in the tens or hundreds on a GPU; under
                                  several processes they are rank 0's own)
    on_epoch_end(epoch, history)  after each epoch's test pass; `epoch` counts from 1, `history`
                                  holds every finished epoch (its last entries are this epoch's)
    on_fit_end(history)           once, when training ends (not after an error)

and, for loggers, `log_figure(name, figure)` when a run writes a figure. Every method has a
default that does nothing. A hook that raises stops the run: `CallbackError` names the callback and
the hook and carries its message. The engine's own progress bars and checkpoints are untouched.

    class PrintBest(Callback):
        def on_epoch_end(self, epoch, history):
            print(f"best so far: {history.best_test_acc:.2f}%")
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import torch
from torch import nn

if TYPE_CHECKING:  # the engine imports this module; History is only a type here
    from era_utils.engine import History

__all__ = ["Callback", "CallbackError", "FitInfo", "call_hooks", "step_hooks_due"]


@dataclass
class FitInfo:
    """What `on_fit_start` is told about the run about to train."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    epochs: int  # the run's total
    start_epoch: int  # epochs already done (a resumed run), 0 for a new one
    steps_per_epoch: int | None  # None for a loader without a length
    device: torch.device


class Callback:
    """Base class of `fit`'s hooks; override the ones you need (see the module docstring)."""

    every_n_steps: int = 0  # on_steps every N optimizer steps; 0: never

    def on_fit_start(self, info: FitInfo) -> None:
        """Before the first epoch."""

    def on_steps(self, step: int, values: dict[str, float]) -> None:
        """Every `every_n_steps` steps: the running loss and accuracy of the epoch, the step's LR."""

    def on_epoch_end(self, epoch: int, history: "History") -> None:
        """After epoch `epoch` (1-based) and its test pass."""

    def on_fit_end(self, history: "History") -> None:
        """When training has finished."""

    def log_figure(self, name: str, figure: Any) -> None:
        """A figure the run has written (a matplotlib Figure): loggers keep it, others ignore it."""


class CallbackError(RuntimeError):
    """A callback's hook raised: the run stopped there."""


def call_hooks(callbacks: Sequence[Callback], hook: str, *args: Any) -> None:
    """Call `hook` on every callback in order; the first that raises stops the run with its message."""
    for callback in callbacks:
        try:
            getattr(callback, hook)(*args)
        except Exception as err:
            raise CallbackError(f"{type(callback).__name__}.{hook} failed, so the run stopped: "
                                f"{type(err).__name__}: {err}") from err


def step_hooks_due(callbacks: Iterable[Callback], step: int) -> list[Callback]:
    """The callbacks whose `on_steps` is due at global step `step` (1-based)."""
    return [c for c in callbacks if c.every_n_steps > 0 and step % c.every_n_steps == 0]
