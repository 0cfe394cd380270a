"""The training engine every notebook uses: train_one_epoch, evaluate, fit -> History, and the one
loop that runs a model over a loader for inference (`inference_pass`).

Built for speed on a GPU without changing what is computed:
- mixed precision (bf16 where the GPU has it, else fp16 with a GradScaler; off on the CPU),
  channels_last on CUDA and on CPUs with AVX2 kernels in fp32, optional torch.compile (all decided by
  `era_utils.speed`);
- no host-device sync per batch: loss sum, correct count, label range and "first NaN step" are
  accumulated as device tensors and read every `sync_every` steps (progress bar, NaN check) and
  once at the end of the epoch;
- any loader yielding (images, labels): a DataLoader (copied with non_blocking=True) or the
  GPU-resident loader (tensors already on the device, the copies are no-ops).
Every scheduler is stepped once per batch, after optimizer.step(). Checkpoints (written
atomically by `era_utils.checkpoint`) let `fit(..., checkpoint=Checkpointing(path, resume=True))` carry
on after a crash. The optimizer and schedule come from the recipe (`Recipe.configure_optimizers`).
"""
from __future__ import annotations

import inspect
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from era_utils.batches import (
    check_label_range,
    check_logits,
    label_range_error,
    loader_length,
    loss_or_label_error,
    to_device,
    unpack_batch,
    unpack_inference_batch,
)
from era_utils.callbacks import Callback, FitInfo, call_hooks, step_hooks_due
from era_utils.checkpoint import Checkpointing
from era_utils.distributed import all_reduce_, is_main, wrap_model, world_size
from era_utils.face_losses import l2_normalise, uses_embeddings
from era_utils.files import write_json
from era_utils.speed import FastPath, autocast, fast_path, resolve_amp
from era_utils.utils import eval_mode, get_device, keep_modes, model_device

__all__ = [
    "DEFAULT_SYNC_EVERY",
    "EmptyLoaderError",
    "History",
    "TrainingInterrupted",
    "evaluate",
    "fit",
    "inference_pass",
    "train_one_epoch",
]

# Steps between device reads (progress-bar postfix, NaN and label checks). Each read waits for
# the GPU queue to drain; once per 50 steps costs ~1-2% on a small model, once per step ~10-30%.
DEFAULT_SYNC_EVERY = 50

# What sees each batch of a pass: on_batch(step, logits (B, K), labels (B,), embedding (B, D) or None).
OnBatch = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor | None], None]


# ----------------------------------------------------------------------------- History


@dataclass
class History:
    """What fit() measured: per-epoch loss/accuracy (accuracy in %), per-step LR, epoch times.

    `test_loss`/`test_acc` stay empty when fit ran without a test loader.
    """

    train_loss: list[float] = field(default_factory=list)  # mean over samples, per epoch
    train_acc: list[float] = field(default_factory=list)  # %, per epoch
    test_loss: list[float] = field(default_factory=list)  # mean over samples, per epoch
    test_acc: list[float] = field(default_factory=list)  # %, per epoch
    lrs: list[float] = field(default_factory=list)  # LR of param group 0 used at each optimizer step
    epoch_times: list[float] = field(default_factory=list)  # s, wall time of train + evaluate
    train_times: list[float] = field(default_factory=list)  # s, the training pass alone (ends on a device read)
    skipped_steps: list[float] = field(default_factory=list)  # fp16 only: steps GradScaler skipped (inf/NaN grads)

    def __post_init__(self) -> None:
        # Not a measurement, so not a field (neither saved nor compared): the last epoch's test pass as
        # `steps.train` kept it (analysis.Predictions), which the analysis reads instead of a pass of its own.
        self.last_test_pass: Any = None

    @property
    def epochs(self) -> int:
        """Number of finished epochs."""
        return len(self.train_loss)

    @property
    def best_test_acc(self) -> float | None:
        """Highest test accuracy (%) over the epochs, None without test metrics."""
        return max(self.test_acc) if self.test_acc else None

    def to_dict(self) -> dict[str, list[float]]:
        """Plain lists of floats, ready for JSON."""
        return {f.name: [float(v) for v in getattr(self, f.name)] for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "History":
        """Rebuild from `to_dict()` output; keys this version does not know are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: [float(v) for v in data[k]] for k in names if k in data})

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write the history as strict JSON, atomically (parent folders are created); returns the path."""
        return write_json(path, self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "History":
        """Read a history written by `to_json`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


# ----------------------------------------------------------------------------- device-side sums


class _CountingScaler:
    """A GradScaler (fp16) that also counts the optimizer steps it skips (gradients with inf/NaN, after which
    it halves its scale), on the device: no sync per step. Everything else is the scaler's own."""

    def __init__(self, scaler: Any, device: torch.device) -> None:
        self.scaler = scaler
        self.skipped = torch.zeros((), dtype=torch.long, device=device)

    def update(self) -> None:
        scale = getattr(self.scaler, "_scale", None)  # torch keeps the scale in this tensor, updated in place
        before = scale.clone() if scale is not None else None
        self.scaler.update()
        if before is not None:
            self.skipped += (self.scaler._scale < before).long()  # a skip, and only a skip, lowers the scale

    def take(self) -> int:
        """The steps skipped since the last call (a device read: call it where the epoch syncs anyway)."""
        count, self.skipped = int(self.skipped.item()), torch.zeros_like(self.skipped)
        return count

    def __getattr__(self, name: str) -> Any:  # scale, step, state_dict, load_state_dict, ...
        return getattr(self.scaler, name)


class _Running:
    """Sums over one pass of a loader, kept on the device: updating them never syncs."""

    def __init__(self, device: torch.device) -> None:
        long = dict(dtype=torch.long, device=device)
        self.loss_sum = torch.zeros((), dtype=torch.float32, device=device)  # sum of per-sample loss
        self.correct = torch.zeros((), **long)
        self.label_min = torch.full((), torch.iinfo(torch.long).max, **long)
        self.label_max = torch.full((), torch.iinfo(torch.long).min, **long)
        self.step = torch.zeros((), **long)  # device copy of the step index
        self.first_bad = torch.full((), -1, **long)  # first step whose loss was NaN/inf, -1: none
        self.bad_value = torch.zeros((), dtype=torch.float32, device=device)
        self.seen = 0  # samples, counted on the host from shapes (no sync)
        self.num_outputs = 0  # classes the model scores (from the logits' shape)

    def update(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        loss = loss.detach().float()
        batch = labels.shape[0]
        self.loss_sum += loss * batch  # criterion returns the batch mean
        self.correct += (logits.detach().argmax(dim=1) == labels).sum()
        self.label_min = torch.minimum(self.label_min, labels.min())
        self.label_max = torch.maximum(self.label_max, labels.max())
        newly_bad = (self.first_bad < 0) & ~torch.isfinite(loss)
        self.first_bad = torch.where(newly_bad, self.step, self.first_bad)
        self.bad_value = torch.where(newly_bad, loss, self.bad_value)
        self.step += 1
        self.seen += batch
        self.num_outputs = int(logits.shape[1])

    def read(self, over_ranks: bool = True) -> dict[str, float]:
        """Copy the sums to the host: the one place that waits for the device. In a process group
        the sums are added up over every rank first (every rank reads at the same steps);
        `over_ranks=False` reads this rank's own, for what one rank alone asks (callbacks)."""
        loss_sum, correct, seen = self.loss_sum.item(), self.correct.item(), self.seen
        label_min, label_max, first_bad = self.label_min, self.label_max, self.first_bad
        if over_ranks and world_size() > 1:
            sums = torch.stack([self.loss_sum.double(), self.correct.double(),
                                torch.tensor(float(self.seen), dtype=torch.float64, device=self.loss_sum.device)])
            loss_sum, correct, seen = all_reduce_(sums).tolist()
            label_min = all_reduce_(self.label_min.clone(), "min")
            label_max = all_reduce_(self.label_max.clone(), "max")
            first_bad = all_reduce_(self.first_bad.clone(), "max")
        seen = max(seen, 1)
        return {
            "loss": loss_sum / seen,
            "acc": 100.0 * correct / seen,
            "label_min": label_min.item(),
            "label_max": label_max.item(),
            "first_bad": first_bad.item(),
            "bad_value": self.bad_value.item(),
        }


def _check_read(vals: dict[str, float], num_outputs: int, where: str) -> None:
    if vals["label_min"] < 0 or vals["label_max"] >= num_outputs:
        raise label_range_error(int(vals["label_min"]), int(vals["label_max"]), num_outputs, where)


def _progress(loader: Iterable, desc: str, verbose: bool) -> tqdm:
    """A batch progress bar (a widget in notebooks) that iterates `loader` exactly once.

    tqdm.auto's class calls iter() on a plain iterable in __init__ and again when looped over
    (tqdm/tqdm#1598), which starts a DataLoader's worker processes twice per epoch and draws an
    extra shuffle seed. Handing it an iterator avoids both.
    """
    return tqdm(iter(loader), total=loader_length(loader), desc=desc, disable=not verbose,
                leave=False, unit="batch", dynamic_ncols=True)


# ----------------------------------------------------------------------------- train / evaluate


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    device: str | torch.device | None = None,
    *,
    scheduler: Any = None,
    scaler: Any = None,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    epoch: int = 0,
    verbose: bool = True,
    sync_every: int = DEFAULT_SYNC_EVERY,
    callbacks: Sequence[Callback] = (),
    step_offset: int = 0,
) -> tuple[float, float, list[float]]:
    """One pass over `loader` in train mode; returns (mean loss, accuracy %, LR of each step).

    `scheduler` is stepped after every optimizer step. `scaler` is a GradScaler (fp16 AMP).
    `epoch` (0-based) only labels the progress bar and error messages. `channels_last` converts
    the inputs; converting the model is the caller's job (fit does it).
    Raises FloatingPointError naming the epoch, step and LR if the loss becomes NaN/inf.
    `callbacks`' `on_steps` run every their `every_n_steps` steps, counted from `step_offset`.
    """
    device = model_device(model) if device is None else torch.device(device)
    sync_every = max(int(sync_every), 1)
    wants_embeddings = uses_embeddings(criterion)  # ArcFace, CosFace, center loss: the loss reads them
    model.train()
    run = _Running(device)
    lrs: list[float] = []
    num_outputs = 0

    def check(vals: dict[str, float]) -> None:
        if vals["first_bad"] >= 0:
            step = int(vals["first_bad"])
            raise FloatingPointError(
                f"The training loss became {vals['bad_value']} at epoch {epoch + 1}, step {step + 1} "
                f"(lr {lrs[step]:.3g}). Lower the LR (see find_lr), check the inputs are normalised, "
                "or use amp='bf16'/'off' if fp16 overflowed."
            )
        _check_read(vals, num_outputs, f"epoch {epoch + 1} (training)")

    step = -1
    try:
        with _progress(loader, f"epoch {epoch + 1} train", verbose) as bar:
            for step, batch in enumerate(bar):
                images, labels = unpack_batch(batch, step)
                images = to_device(images, device, channels_last)
                labels = labels.to(device, dtype=torch.long, non_blocking=True)
                lrs.append(float(optimizer.param_groups[0]["lr"]))  # the LR this step uses
                optimizer.zero_grad(set_to_none=True)
                with autocast(device, amp_dtype):
                    logits, embeddings = _forward(model, images, wants_embeddings)  # (B, num_classes), (B, D) or None
                    if step == 0:
                        num_outputs = check_logits(logits, labels)
                        check_label_range(labels, num_outputs, f"batch 1 of epoch {epoch + 1}")
                    loss = loss_or_label_error(criterion, logits, labels, num_outputs,
                                               f"batch {step + 1} of epoch {epoch + 1}", embeddings)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)  # skipped when the fp16 gradients overflowed
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                if scheduler is not None:
                    if scaler is not None:
                        with warnings.catch_warnings():
                            # A skipped first fp16 step makes torch think the scheduler ran first.
                            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler")
                            scheduler.step()
                    else:
                        scheduler.step()
                with torch.no_grad():
                    run.update(loss, logits, labels)
                if (step + 1) % sync_every == 0:
                    vals = run.read()
                    check(vals)
                    bar.set_postfix(loss=f"{vals['loss']:.4f}", acc=f"{vals['acc']:.2f}%",
                                    lr=f"{lrs[-1]:.2e}", refresh=False)
                due = step_hooks_due(callbacks, step_offset + step + 1) if callbacks else []
                if due:
                    # Callbacks live on rank 0 only, so this read must not wait for the other ranks:
                    # its running numbers are rank 0's (the epoch's History is the global one).
                    vals = run.read(over_ranks=False)
                    call_hooks(due, "on_steps", step_offset + step + 1,
                               {"loss": vals["loss"], "acc": vals["acc"], "lr": lrs[-1]})
    except KeyboardInterrupt as err:
        err.step = step + 1  # where it stopped, for fit's message (Ctrl-C, a session that died)
        raise

    if run.seen == 0:
        raise EmptyLoaderError("The training loader yielded no batches (is the dataset empty, or "
                               "drop_last=True with fewer samples than one batch?).")
    vals = run.read()
    check(vals)
    return vals["loss"], vals["acc"], lrs


class EmptyLoaderError(ValueError):
    """A training loader that yielded no batch in an epoch."""


class TrainingInterrupted(KeyboardInterrupt):
    """fit stopped by Ctrl-C: where it stopped and what a --resume carries on from, in its message."""

    def __init__(self, epoch: int, step: int | None, epochs: int, checkpoint_path: Any, saved: int) -> None:
        where = f"epoch {epoch} of {epochs}" + (f", step {step}" if step else " (evaluating)")
        if checkpoint_path is not None and saved:
            then = (f"carry on with --resume (RESUME = True in a notebook): it repeats the run from the checkpoint of "
                    f"epoch {saved} ({checkpoint_path})")
        elif checkpoint_path is not None:
            then = "no checkpoint was written yet (the first is after epoch 1): --resume starts the run over"
        else:
            then = "no checkpoint is kept in this run (checkpoint=None)"
        super().__init__(f"interrupted at {where}; {then}")
        self.epoch, self.step, self.saved = epoch, step, saved


def _check_optimizer_holds(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """An optimizer built for another model (or before the model was rebuilt) would train nothing."""
    own = {id(p) for p in model.parameters()}
    held = [p for group in optimizer.param_groups for p in group["params"]]
    if own and not any(id(p) in own for p in held):
        raise ValueError(f"the optimizer holds none of this {type(model).__name__}'s parameters ({len(held)} "
                         "others), so training would change nothing: build it from this model, e.g. "
                         "recipe.configure_optimizers(model, ...), or your optimizer class given model.parameters(), "
                         "after the model was (re)created")


def _unwrapped(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel and torch.compile's wrappers (whose forward takes *args)."""
    while True:
        inner = getattr(model, "_orig_mod", None) or (model.module if isinstance(model, DDP) else None)
        if inner is None:
            return model
        model = inner


def _check_float32(model: nn.Module) -> None:
    """The kit feeds float32 images (autocast lowers the precision inside): a float64 or float16 model would
    fail in torch with a dtype error that names neither the model nor the fix."""
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if dtypes - {torch.float32}:
        found = ", ".join(sorted(str(d).replace("torch.", "") for d in dtypes))
        raise ValueError(f"this {type(model).__name__}'s parameters are {found}, and fit trains float32 models on "
                         "float32 images: call model.float() (build_model makes float32 models); for lower precision "
                         "use amp='bf16' or 'fp16', which autocasts inside the float32 model")


def _accepts_return_embedding(model: nn.Module) -> bool:
    try:
        return "return_embedding" in inspect.signature(_unwrapped(model).forward).parameters
    except (TypeError, ValueError):
        return False


def _forward(model: nn.Module, images: torch.Tensor, embeddings: bool) -> tuple[Any, torch.Tensor | None]:
    """(logits, embedding or None): one forward pass when the model can return both (through its
    wrappers, so DistributedDataParallel and torch.compile see the pass)."""
    if not embeddings:
        return model(images), None
    if _accepts_return_embedding(model):
        return model(images, return_embedding=True)  # every era_utils model: (logits, (B, D))
    embed = getattr(_unwrapped(model), "embed", None)
    if not callable(embed):
        raise TypeError(
            f"{type(model).__name__} has no embed(x) method. Every era_utils model has one "
            "(create_model(...)); for your own classifier add `def embed(self, x)` returning the "
            "pooled features that feed the last Linear layer, shape (B, D)."
        )
    return model(images), embed(images)


def inference_pass(
    model: nn.Module,
    loader: Iterable,
    on_batch: OnBatch,
    device: str | torch.device | None = None,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    embeddings: bool = False,
    flip: bool = False,
    labelled: bool = True,
    desc: str = "evaluate",
    verbose: bool = False,
) -> int:
    """Run `model` once over `loader` in eval and inference mode; `on_batch(step, logits, labels,
    embedding)` receives each batch's (B, K) logits, (B,) labels on the device and, with
    `embeddings`, the (B, D) penultimate features; with `flip` too, those of each image and its mirror
    image, each L2-normalised, averaged and normalised again (test-time augmentation for verification;
    the logits stay the image's own). Returns the number of images.

    `labelled=True`: every batch is (images, labels) with labels in [0, K) (evaluate); False: images
    alone or labels of -1 are accepted too (predictions on an unlabelled test split). The model's
    train/eval flags are put back afterwards, errors included.
    """
    device = model_device(model) if device is None else torch.device(device)
    unpack = unpack_batch if labelled else unpack_inference_batch
    seen = 0
    with eval_mode(model), torch.inference_mode(), _progress(loader, desc, verbose) as bar:
        for step, batch in enumerate(bar):
            images, labels = unpack(batch, step)
            images = to_device(images, device, channels_last)
            labels = labels.to(device, dtype=torch.long, non_blocking=True)
            with autocast(device, amp_dtype):
                logits, embedding = _forward(model, images, embeddings)  # (B, K), (B, D) or None
                if flip and embedding is not None:
                    mirrored = _forward(model, images.flip(-1), True)[1]
                    embedding = l2_normalise(l2_normalise(embedding) + l2_normalise(mirrored))
            if step == 0:
                num_outputs = check_logits(logits, labels)
                check_label_range(labels, num_outputs, f"batch 1 of the {desc} loader",
                                  allow_unlabelled=not labelled)
            on_batch(step, logits, labels, embedding)
            seen += labels.shape[0]
    if seen == 0:
        raise ValueError(f"The {desc} loader yielded no batches: is the dataset empty?")
    return seen


def evaluate(
    model: nn.Module,
    loader: Iterable,
    criterion: nn.Module | None = None,
    device: str | torch.device | None = None,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    verbose: bool = False,
    also: OnBatch | None = None,
) -> tuple[float, float]:
    """(mean loss, accuracy %) over `loader`, under model.eval() and torch.inference_mode().

    Every submodule's train/eval flag is put back afterwards. criterion=None: cross-entropy.
    `also(step, logits, labels, embedding)` sees every batch too (an `analysis.PredictionCollector`).
    """
    device = model_device(model) if device is None else torch.device(device)
    criterion = nn.CrossEntropyLoss() if criterion is None else criterion
    run = _Running(device)

    def add(step: int, logits: torch.Tensor, labels: torch.Tensor, embedding: Any) -> None:
        where = f"batch {step + 1} of the evaluation loader"
        with autocast(device, amp_dtype):
            loss = loss_or_label_error(criterion, logits, labels, logits.shape[1], where, embedding)
        run.update(loss, logits, labels)
        if also is not None:
            also(step, logits, labels, embedding)

    inference_pass(model, loader, add, device, amp_dtype=amp_dtype, channels_last=channels_last,
                   embeddings=uses_embeddings(criterion), desc="evaluation", verbose=verbose)
    vals = run.read()
    _check_read(vals, run.num_outputs, "the evaluation loader")
    return vals["loss"], vals["acc"]


# ----------------------------------------------------------------------------- fit


def _check_scheduler(scheduler: Any, optimizer: torch.optim.Optimizer, epochs: int,
                     loader: Any) -> None:
    if scheduler is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        raise TypeError(
            "fit steps the scheduler once per batch with no metric; ReduceLROnPlateau needs a "
            "validation metric per epoch and is not supported here."
        )
    if getattr(scheduler, "optimizer", optimizer) is not optimizer:
        raise ValueError("The scheduler was built on a different optimizer than the one passed to fit.")
    total = getattr(scheduler, "total_steps", None)  # OneCycleLR
    steps = loader_length(loader)
    if not isinstance(total, int) or steps is None or total == epochs * steps:
        return
    message = (
        f"The scheduler was built for {total} steps, but fit will take {epochs} epochs x "
        f"{steps} batches = {epochs * steps} steps. Build it with epochs={epochs} and "
        f"steps_per_epoch=len(train_loader) (= {steps})."
    )
    if total < epochs * steps:  # OneCycleLR would raise in the middle of training
        raise ValueError(message)
    warnings.warn(message + " Training will stop before the schedule ends.", stacklevel=3)


def _summary(epoch: int, epochs: int, history: History, seconds: float) -> str:
    line = (f"epoch {epoch + 1:>3}/{epochs}  train loss {history.train_loss[-1]:.4f} "
            f"acc {history.train_acc[-1]:6.2f}%")
    if history.test_loss:
        line += f"  test loss {history.test_loss[-1]:.4f} acc {history.test_acc[-1]:6.2f}%"
    lr = f"{history.lrs[-1]:.3g}" if history.lrs else "-"
    return line + f"  lr {lr}  {seconds:.1f}s"


@dataclass
class _Epochs:
    """What every epoch of one `fit` uses, decided before the first: the models (the one trained may be
    DDP/compiled), the loaders, optimizer, loss, schedule and precision."""

    model: nn.Module
    train_model: nn.Module
    train_loader: Iterable
    test_loader: Iterable | None
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    scheduler: Any
    scaler: Any
    amp_dtype: torch.dtype | None
    path: FastPath
    callbacks: list[Callback]
    verbose: bool
    last_test_pass: OnBatch | None = None

    def run(self, epoch: int, epochs: int, history: History) -> None:
        """Train epoch `epoch` and test after it, recording both in `history`."""
        t0 = time.perf_counter()
        loss, acc, lrs = train_one_epoch(
            self.train_model, self.train_loader, self.optimizer, self.criterion, self.path.device,
            scheduler=self.scheduler, scaler=self.scaler, amp_dtype=self.amp_dtype,
            channels_last=self.path.channels_last, epoch=epoch, verbose=self.verbose, callbacks=self.callbacks,
            step_offset=len(history.lrs))
        history.train_times.append(time.perf_counter() - t0)  # ends on a device read: all work done
        if self.scaler is not None:
            history.skipped_steps.append(self.scaler.take())
        history.train_loss.append(loss)
        history.train_acc.append(acc)
        history.lrs.extend(lrs)
        if self.test_loader is not None:
            test_loss, test_acc = evaluate(self.model, self.test_loader, self.criterion, self.path.device,
                                           amp_dtype=self.amp_dtype, channels_last=self.path.channels_last,
                                           verbose=self.verbose,
                                           also=self.last_test_pass if epoch == epochs - 1 else None)
            history.test_loss.append(test_loss)
            history.test_acc.append(test_acc)
            if not math.isfinite(test_loss) and math.isfinite(loss):
                warnings.warn(f"epoch {epoch + 1}: the test loss is {test_loss} while the training loss is "
                              f"{loss:.4f}: the test images or labels hold something the training set does "
                              "not (NaN pixels, another normalisation?)", UserWarning, stacklevel=3)
        history.epoch_times.append(time.perf_counter() - t0)
        if self.verbose:
            tqdm.write(_summary(epoch, epochs, history, history.epoch_times[-1]))


def _training_model(model: nn.Module, path: FastPath, verbose: bool) -> nn.Module:
    """The model the training pass runs: DistributedDataParallel in a process group (the model itself in one
    process), compiled when the path says so (evaluation runs the plain model: a compiled eval graph would cost
    more compile time than it saves on a test set; checkpoints hold the plain model too)."""
    ddp_model = wrap_model(model, path.device, path.sync_batchnorm)
    if not path.compile:
        return ddp_model
    if verbose:
        tqdm.write("torch.compile: the first epoch includes compiling the model (tens of seconds).")
    return torch.compile(ddp_model, mode=path.compile if isinstance(path.compile, str) else None)


def _one_shot_loader_spent(err: EmptyLoaderError, epoch: int, start: int, epochs: int, loader: Iterable) -> None:
    """A loader empty after giving batches before is a spent one-shot iterator: say so (the epochs done are
    kept); an empty first epoch is the loader's own fault and raises."""
    if epoch == start or iter(loader) is not loader:
        raise err
    warnings.warn(
        f"train_loader gave no batches in epoch {epoch + 1} after giving them before: it is a one-shot iterator (a "
        f"generator, or iter(loader)), spent after one pass. Training stopped with {epoch} of {epochs} epochs done "
        "(their history is returned); pass the loader itself (a DataLoader, a GPULoader or a list) so every epoch "
        "can go over it again.", UserWarning, stacklevel=3)


def fit(
    model: nn.Module,
    train_loader: Iterable,
    test_loader: Iterable | None,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    *,
    criterion: nn.Module | None = None,
    scheduler: Any = None,
    path: FastPath | None = None,
    checkpoint: Checkpointing | None = None,
    callbacks: Sequence[Callback] = (),
    verbose: bool = True,
    last_test_pass: OnBatch | None = None,
) -> History:
    """Train for `epochs` epochs, evaluating on `test_loader` (None: no test metrics) after each.

    - `path`: how the run uses the hardware, decided once by `era_utils.speed.fast_path` (device, autocast,
      channels_last, torch.compile of the training pass, SyncBatchNorm); default: the best device's fast path.
      Give a compiled run's training loader drop_last=True (GPULoader) so a short last batch does not compile
      a second graph.
    - `scheduler`: stepped per batch after optimizer.step() (build One Cycle with
      steps_per_epoch=len(train_loader)); ReduceLROnPlateau is refused.
    - `checkpoint`: `era_utils.checkpoint.Checkpointing(path, interval, resume, settings)`: where the
      checkpoint is kept, how often, and whether the run carries on from it.
    - `callbacks`: `era_utils.callbacks.Callback`s (loggers among them), called at fit start, every
      N steps, each epoch's end and fit end; one that raises stops the run (CallbackError).
    - In a torch.distributed process group (torchrun; `era_utils.distributed`), the model trains
      as DistributedDataParallel, each rank on the shard of data its loaders give it; losses and accuracies
      are summed over the ranks, so the History is the global one; only rank 0 writes the checkpoint and
      calls `callbacks`.
    - `last_test_pass(step, logits, labels, embedding)` sees every batch of the last epoch's test pass (an
      `analysis.PredictionCollector`: the analysis reads that pass instead of making one more).
    Returns the History (`epoch_times`: each epoch's wall time, `train_times`: its training pass). Prints
    progress bars and one summary line per epoch unless verbose=False; the model's train/eval flags are put
    back at the end.
    """
    path = path if path is not None else fast_path(get_device())
    _check_fit(model, optimizer, scheduler, epochs, train_loader)
    amp_dtype, scaler = resolve_amp(path.device, path.amp)
    scaler = _CountingScaler(scaler, path.device) if scaler is not None else None
    model.to(path.device, memory_format=torch.channels_last if path.channels_last else torch.preserve_format)
    done, start = checkpoint.restore(model, optimizer, scheduler, scaler, train_loader, epochs, verbose) \
        if checkpoint is not None else ({}, 0)
    history = History.from_dict(done)
    callbacks = list(callbacks) if is_main() else []  # loggers write once, from rank 0
    epochs_of = _Epochs(model, _training_model(model, path, verbose and start < epochs), train_loader, test_loader,
                        optimizer, nn.CrossEntropyLoss() if criterion is None else criterion, scheduler, scaler,
                        amp_dtype, path, callbacks, verbose, last_test_pass)
    call_hooks(callbacks, "on_fit_start", FitInfo(model, optimizer, epochs, start, loader_length(train_loader),
                                                  path.device))
    epoch = start
    try:
        with keep_modes(model):
            for epoch in range(start, epochs):
                try:
                    epochs_of.run(epoch, epochs, history)
                except EmptyLoaderError as err:
                    _one_shot_loader_spent(err, epoch, start, epochs, train_loader)
                    break
                if checkpoint is not None and is_main():
                    checkpoint.after_epoch(epoch + 1, epoch in (start, epochs - 1), model, optimizer, scheduler,
                                           scaler, history, train_loader)
                call_hooks(callbacks, "on_epoch_end", epoch + 1, history)
    except KeyboardInterrupt as err:  # Ctrl-C, or a notebook's "interrupt the kernel"
        raise TrainingInterrupted(epoch + 1, getattr(err, "step", None), epochs,
                                  checkpoint.path if checkpoint else None, checkpoint.saved if checkpoint else 0) from err
    call_hooks(callbacks, "on_fit_end", history)
    return history


def _check_fit(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, epochs: int,
               train_loader: Iterable) -> None:
    """What fit refuses before it starts: no epochs, an optimizer of another model, a model not in float32,
    a schedule built for another length or for another optimizer."""
    if not (isinstance(epochs, int) and epochs > 0):
        raise ValueError(f"epochs must be a positive int, got {epochs!r}.")
    _check_optimizer_holds(model, optimizer)
    _check_float32(model)
    _check_scheduler(scheduler, optimizer, epochs, train_loader)
