"""Checkpoints that let a dead Colab session carry on exactly where it stopped.

One file holds the model, optimizer, scheduler, GradScaler, the number of finished epochs, the
History so far (as a plain dict) and every RNG the next epoch draws from: torch (CPU and CUDA),
numpy, python's `random`, and the loader's own generator when it has one. Restoring all of them
makes a resumed run repeat an unbroken one (bit for bit on the CPU).

Files are written atomically (a temporary file in the same folder, then `os.replace`), so a
session killed mid-save leaves the previous checkpoint intact. Everything stored is plain
tensors, numbers, strings, lists and dicts, so `torch.load(weights_only=True)` reads it.
"""
from __future__ import annotations

import functools

import os
import pickle
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tqdm.auto import tqdm

from era_utils.files import atomic_write

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpointing",
    "unwrap_model",
    "save_checkpoint",
    "read_checkpoint",
    "restore_checkpoint",
    "load_checkpoint",
    "check_settings",
    "rng_state",
    "set_rng_state",
]

CHECKPOINT_FORMAT = "era_utils.checkpoint/1"


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module under a torch.compile wrapper (its `_orig_mod`), else the model itself."""
    return getattr(model, "_orig_mod", model)


def _loader_generator(loader: Any) -> torch.Generator | None:
    """The torch.Generator a loader shuffles with, if it exposes one: its sampler's (dataset_loader's
    EpochSeededSampler, DataLoader(shuffle=True, generator=g)), else its own (GPULoader)."""
    for owner in (getattr(loader, "sampler", None), loader):
        gen = getattr(owner, "generator", None)
        if isinstance(gen, torch.Generator):
            return gen
    return None


def rng_state(loader: Any = None) -> dict[str, Any]:
    """Every RNG state the next epoch depends on, as weights_only-safe objects."""
    np_state = np.random.get_state()  # ('MT19937', uint32[624], pos, has_gauss, cached_gaussian)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": str(np_state[0]),
            "keys": [int(k) for k in np_state[1]],
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loader": None,
    }
    if loader is not None:
        if callable(getattr(loader, "state_dict", None)) and callable(
            getattr(loader, "load_state_dict", None)
        ):
            state["loader"] = {"kind": "state_dict", "state": loader.state_dict()}
        else:
            gen = _loader_generator(loader)
            if gen is not None:
                state["loader"] = {"kind": "generator", "state": gen.get_state()}
    return state


def set_rng_state(state: dict[str, Any], loader: Any = None) -> None:
    """Restore what `rng_state` captured (CUDA states only when the same number of GPUs is present)."""
    random.setstate(_as_tuple(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["bit_generator"],
            np.asarray(np_state["keys"], dtype=np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    saved = state.get("loader")
    if loader is None or saved is None:
        return
    if saved["kind"] == "state_dict" and callable(getattr(loader, "load_state_dict", None)):
        loader.load_state_dict(saved["state"])
    elif saved["kind"] == "generator":
        gen = _loader_generator(loader)
        if gen is not None:
            gen.set_state(saved["state"].cpu())  # a ByteTensor on the CPU, whatever the generator's device


def _as_tuple(obj: Any) -> Any:
    """python's random state is nested tuples; keep them tuples whatever the loader turned them into."""
    if isinstance(obj, (list, tuple)):
        return tuple(_as_tuple(o) for o in obj)
    return obj


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    scheduler: Any = None,
    scaler: Any = None,
    epoch: int = 0,
    history: Any = None,
    loader: Any = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically; `epoch` is the number of finished epochs.

    `history` may be a History (its `to_dict()` is stored) or a dict. A torch.compile'd model is
    unwrapped, so the keys load into a plain model. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if history is not None and hasattr(history, "to_dict"):
        history = history.to_dict()
    payload = {
        "format": CHECKPOINT_FORMAT,
        "epoch": int(epoch),
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "history": history,
        "rng": rng_state(loader),
        "torch_version": str(torch.__version__),
        "kit": kit_version(),  # which era_utils wrote it: named when a resume finds other settings
        "extra": extra or {},
    }
    with atomic_write(path, "wb") as f:  # a session killed mid-save keeps the previous checkpoint
        torch.save(payload, f)
    return path


@functools.lru_cache(maxsize=1)
def kit_version() -> str:
    """This kit as a checkpoint records it, e.g. "era_utils 0.1.0 (5bd508c)"."""
    from era_utils import __version__
    from era_utils.report import git_commit  # here: report imports what a checkpoint does not need

    return f"era_utils {__version__} ({git_commit()})"


@functools.lru_cache(maxsize=1)
def _recipe_defaults() -> dict[str, Any]:
    """Each Recipe field's default, as a run's settings hold it (plain JSON values)."""
    import dataclasses
    import json

    from era_utils.files import json_safe
    from era_utils.recipes import Recipe  # here: recipes imports the models' world, a checkpoint does not

    return {f.name: json.loads(json.dumps(json_safe(f.default))) for f in dataclasses.fields(Recipe)
            if f.default is not dataclasses.MISSING and isinstance(f.default, (int, float, str, bool, tuple, type(None)))}


def check_settings(ckpt: dict[str, Any], settings: dict[str, Any] | None, path: str | os.PathLike) -> None:
    """Refuse to resume from `ckpt` with other settings than the run that wrote it (its
    extra["settings"]): every differing setting is listed. A checkpoint without settings (written by
    `fit` without them) or no `settings` given: nothing to compare. A recipe setting the checkpoint does
    not hold (a kit older than the setting) is fine while it is at its default, which is what that kit did."""
    stored = (ckpt.get("extra") or {}).get("settings")
    if stored is None or settings is None:
        return
    defaults = _recipe_defaults()
    differ = [f"{key}: {stored.get(key, '(not set)')!r} in the checkpoint, {settings.get(key, '(not set)')!r} now"
              for key in sorted(set(stored) | set(settings)) if stored.get(key) != settings.get(key)
              and not (key not in stored and key in defaults and settings.get(key) == defaults[key])]
    if differ:
        written_by, this = ckpt.get("kit"), kit_version()
        if written_by != this:  # another kit: a setting no option sets may be what changed
            advice = (f"It was written by {written_by or 'an older era_utils'}, and this is {this}: where an option "
                      "sets what differs, resume with the option as it was; where the recipe itself changed between "
                      "the two, resume with the kit that wrote it (pip install 'git+REPOSITORY@COMMIT'), or start a "
                      "new run in another folder (--out).")
        else:
            advice = ("Resume with the settings it was started with (the options that differ, as they were), or "
                      "start a new run in another folder (--out).")
        raise ValueError(f"{path} was written by a run with other settings, so this run cannot carry on from it: "
                         + "; ".join(differ) + ". " + advice)


def read_checkpoint(
    path: str | os.PathLike,
    *,
    map_location: str | torch.device = "cpu",
    weights_only: bool = True,
    mmap: bool = False,
) -> dict[str, Any]:
    """Read a checkpoint file into its dict without restoring anything; `mmap=True` maps the tensors
    instead of reading them (for a look at its metadata)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path.resolve()}.")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {path} is empty (a save that never got going): delete it and start the "
                         "run again, or resume from a copy.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=weights_only, mmap=mmap)
    except pickle.UnpicklingError as err:  # the weights-only unpickler met an object it does not admit
        raise ValueError(
            f"{path} is not a checkpoint era_utils wrote: it holds objects beyond tensors and plain values "
            f"({str(err).splitlines()[0]}), which the kit's checkpoints never do, and loading those would run "
            "code from the file. Resume from the run's own checkpoint.pt, or start a new run in another folder."
        ) from err
    except (RuntimeError, EOFError, OSError) as err:  # a torch.save cut short, or not a torch file at all
        raise ValueError(
            f"checkpoint {path} cannot be read ({str(err).splitlines()[0]}): it is truncated (a copy or "
            "save cut short) or not a torch checkpoint. Delete it and start the run again, or resume from a "
            "good copy."
        ) from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not an era_utils checkpoint (expected format {CHECKPOINT_FORMAT!r}); "
            "for a bare state_dict use model.load_state_dict(torch.load(path))."
        )
    return ckpt


def restore_checkpoint(
    ckpt: dict[str, Any],
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    scheduler: Any = None,
    scaler: Any = None,
    loader: Any = None,
    restore_rng: bool = True,
) -> None:
    """Load a checkpoint dict (from `read_checkpoint`) into whatever objects are given."""
    if model is not None:
        try:
            unwrap_model(model).load_state_dict(ckpt["model"])
        except RuntimeError as err:  # missing / unexpected keys, other shapes: another model's weights
            raise ValueError(
                f"the checkpoint's weights do not fit this {type(unwrap_model(model)).__name__}: it was written "
                f"for another model or recipe ({str(err).splitlines()[0]} ...). Resume with the recipe that "
                "wrote it, or start a new run in another folder (--out)."
            ) from err
    # The optimizer before the scheduler: the optimizer's param_groups carry the LRs the
    # scheduler's state refers to (initial_lr, max_lr, ...).
    if optimizer is not None and ckpt.get("optimizer") is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    if restore_rng and ckpt.get("rng") is not None:
        set_rng_state(ckpt["rng"], loader)


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    scheduler: Any = None,
    scaler: Any = None,
    loader: Any = None,
    restore_rng: bool = True,
    map_location: str | torch.device = "cpu",
    weights_only: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint into whatever objects are given and return the raw dict.

    The dict has "epoch" (finished epochs), "history" (a dict; `History.from_dict` rebuilds it),
    "extra" and the state dicts. Only the objects passed are restored, so
    `load_checkpoint(path, model)` just loads weights. `restore_rng` also resets python, numpy,
    torch (and the loader's generator) to their state at save time.
    """
    ckpt = read_checkpoint(path, map_location=map_location, weights_only=weights_only)
    restore_checkpoint(ckpt, model, optimizer, scheduler=scheduler, scaler=scaler,
                       loader=loader, restore_rng=restore_rng)
    return ckpt


@dataclass
class Checkpointing:
    """Where `fit` keeps its checkpoint and when: written atomically after an epoch once `interval` seconds have
    passed since the last write (0: every epoch; the first and the last epoch always, so a run killed early loses
    at most one epoch). With `resume` and the file there, training carries on from it (the scheduler built the
    same way) and repeats an unbroken run on the same seed. `settings` (plain values: batch size, seed, data,
    ...) are kept in it; resuming with other settings is refused, each difference named."""

    path: str | os.PathLike
    interval: float = 0.0
    resume: bool = False
    settings: dict[str, Any] | None = None
    saved: int = field(default=0, init=False)  # epochs the file holds
    _last_write: float = field(default=0.0, init=False, repr=False)

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any, loader: Any,
                epochs: int, verbose: bool) -> tuple[dict[str, Any], int]:
        """(the history dict, epochs done) of the checkpoint this run resumes from, its state loaded into the
        objects given; ({}, 0) for a run that starts from the beginning."""
        self._last_write = time.perf_counter()
        if not (self.resume and Path(self.path).is_file()):
            if self.resume and verbose:
                tqdm.write(f"No checkpoint at {self.path} yet: starting from epoch 1.")
            return {}, 0
        ckpt = read_checkpoint(self.path)
        check_settings(ckpt, self.settings, self.path)
        if (ckpt.get("scheduler") is None) != (scheduler is None):
            have = "has" if ckpt.get("scheduler") is not None else "has no"
            raise ValueError(
                f"The checkpoint {self.path} {have} scheduler state but fit was called "
                f"{'without' if scheduler is None else 'with'} a scheduler: resume with the same "
                "set-up as the run that wrote it."
            )
        restore_checkpoint(ckpt, model, optimizer, scheduler=scheduler, scaler=scaler, loader=loader)
        self.saved = int(ckpt["epoch"])
        if verbose:
            tqdm.write(f"Resumed from {self.path}: {self.saved} of {epochs} epochs done.")
        return ckpt.get("history") or {}, self.saved

    def after_epoch(self, done: int, due: bool, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    scaler: Any, history: Any, loader: Any) -> None:
        """Write the checkpoint after `done` epochs if it is `due` (the first or last epoch) or the interval passed."""
        if due or time.perf_counter() - self._last_write >= self.interval:
            save_checkpoint(self.path, model, optimizer, scheduler=scheduler, scaler=scaler, epoch=done,
                            history=history, loader=loader, extra={"settings": self.settings} if self.settings else None)
            self._last_write, self.saved = time.perf_counter(), done
