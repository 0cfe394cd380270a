"""Training speed of the S10 and S7 recipes: the classic path against the kit's fast path, airbench beside them.

Times full training epochs on CIFAR-shaped synthetic data (N x 32 x 32 x 3 uint8 and random labels:
speed does not depend on the pixels) through the kit's own `era_utils.engine.fit`:

    classic  albumentations per image in DataLoader workers (num_workers=2, as on Colab), fp32,
             eager, NCHW, cudnn.benchmark off (torch's defaults; note cuDNN still runs fp32
             convolutions as TF32 on Ampere/Hopper unless torch.backends.cudnn.allow_tf32 is off)
    fast     era_utils.gpu_loader.GPULoader (dataset on the device, augmentation as batched tensor
             ops, short last batch dropped), amp="auto" (bf16 autocast; fp16 + GradScaler on GPUs
             without bf16; off on the CPU), channels_last (CUDA), torch.compile, fused optimizer
             (CUDA), cudnn.benchmark on; the engine reads the device only every `sync_every`
             steps, never per step: what `era-utils run` does on a GPU

for the S10 recipe (custom_resnet, batch 512, Adam + One Cycle, S10 augmentation) and the S7 recipe
(resnet18, batch 128, SGD + One Cycle, S7 augmentation), with the recipes' numbers read from
`era_utils.recipes`. Per path it reports images/s, seconds per epoch (training only; evaluation on
the test set timed apart), the projected training time of the recipe's full schedule on 50,000
images, the achieved TFLOP/s and its share of the device's bf16 matrix-product rate, measured in the
same run (fp32 and a smaller size on the CPU).

FLOPs are counted, not assumed: `torch.utils.flop_counter.FlopCounterMode` on one forward pass
(convolutions and matrix products; 1 multiply-add = 2 FLOPs). Training FLOPs per image are taken as
3 x forward (forward, then gradients w.r.t. activations and w.r.t. weights: the usual convention;
it reproduces airbench's README figure, 0.709 GFLOP x 487,424 images = 0.35 of its 0.36 PFLOPs). The forward+backward count measured the same way is
printed beside it: slightly under 3x, because the first layer needs no gradient for its input.

Peer (--peer airbench, CUDA only): Keller Jordan's airbench 0.1.8 (`train94`, PyPI `airbench`) trained
on the same synthetic tensors. Its `CifarLoader` reads `<path>/train.pt` and `train94` builds its
test loader from the relative folder `cifar10`, so the tensors are saved in airbench's own format to a
temporary folder `<tmp>/cifar10/{train,test}.pt` and the call runs with that folder's parent as the
working directory (no monkeypatching of its training). Its FLOPs are counted the same way, on a CPU
copy of its network (`make_net94` hard-codes `.cuda()`, so that one call is patched to a no-op).
Its time is a synchronised host clock around the whole `train94` call, so besides airbench's own
timer (whitening init + training) it covers the test-set load and network construction (tens of ms).
Importing airbench sets cudnn.benchmark=True globally; this script sets the flag before every run.

    # CPU smoke run (tiny sizes, no compile):
    python benchmarks/train_speed.py --device cpu --train-size 1024 --test-size 256 --epochs 1 \\
        --no-compile --out benchmarks/train_speed_cpu.md
    # On a lent GPU: benchmarks/gpu_session.sh
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence
from unittest import mock

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from era_utils import steps  # noqa: E402
from era_utils.data import CIFAR10_MEAN, CIFAR10_STD, ImageArrays  # noqa: E402
from era_utils.engine import evaluate  # noqa: E402
from era_utils.gpu_loader import GPULoader  # noqa: E402
from era_utils.models import create_model  # noqa: E402
from era_utils.plan import plan_run  # noqa: E402
from era_utils.recipes import get_recipe  # noqa: E402
from era_utils.speed import precision_name  # noqa: E402
from era_utils.utils import device_name, get_device  # noqa: E402

# ----------------------------------------------------------------------------- settings

MODEL_RECIPES = {"custom_resnet": "s10", "resnet18": "s7"}  # model -> the assignment recipe it trains in
PATHS = ("classic", "fast")
PEERS = ("airbench",)
FULL_TRAIN_SIZE = 50_000  # CIFAR-10's training set: projections are for this many images per epoch
IMAGE_SHAPE = (32, 32, 3)  # (H, W, C) CIFAR-shaped
TRAIN_FLOPS_PER_FORWARD = 3  # training = forward + backward (activation grads + weight grads)
# Targets from the issue, checked only on CUDA at full size.
TARGET_S10_SECONDS = 10.0  # S10's 24 epochs on 50,000 images, fast path, training time
TARGET_SPEEDUP = 15.0  # fast path images/s over the classic path's, per model


# ----------------------------------------------------------------------------- FLOPs


def _flop_counter() -> Any:
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False)


def forward_flops_per_image(model: nn.Module, input_size: Sequence[int] = (3, 32, 32), batch: int = 2) -> float:
    """FLOPs of one forward pass per image (FlopCounterMode: conv/matmul, 1 multiply-add = 2 FLOPs).

    Counted on a (batch, *input_size) random input in eval mode under no_grad, on the model's
    device; the model's train/eval flags are put back.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.dtype.is_floating_point else torch.float32
    x = torch.randn(batch, *input_size, device=device, dtype=dtype)  # (B, C, H, W)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        counter = _flop_counter()
        with torch.no_grad(), counter:
            model(x)
    finally:
        for m, training in modes:
            m.training = training
    return counter.get_total_flops() / batch


def fwd_bwd_flops_per_image(model: nn.Module, input_size: Sequence[int] = (3, 32, 32), batch: int = 2) -> float:
    """FLOPs of one forward + backward pass per image, as counted (train mode; grads of a throwaway model).

    Mutates BatchNorm running statistics and .grad: call it on a fresh copy, not the model you train.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.randn(batch, *input_size, device=device)  # (B, C, H, W); no grad w.r.t. the input
    model.train()
    counter = _flop_counter()
    with counter:
        model(x).float().sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


@dataclass
class FlopCount:
    """FLOPs per image of one network (GFLOP = 1e9 FLOPs)."""

    name: str
    params: int
    forward: float  # FLOPs, one forward pass
    counted_train: float  # FLOPs, forward + backward as counted

    @property
    def train(self) -> float:
        """Training FLOPs per image by the 3 x forward convention (used for every TFLOP/s figure)."""
        return TRAIN_FLOPS_PER_FORWARD * self.forward


def count_model_flops(name: str, model: nn.Module, input_size: Sequence[int] = (3, 32, 32)) -> FlopCount:
    """Forward and forward+backward FLOPs per image of `model` (a fresh CPU copy is best)."""
    params = sum(p.numel() for p in model.parameters())
    forward = forward_flops_per_image(model, input_size)
    counted = fwd_bwd_flops_per_image(model, input_size)
    return FlopCount(name, params, forward, counted)


def airbench_net_cpu() -> nn.Module:
    """airbench94's network built on the CPU in fp32, for counting FLOPs (its builder calls .cuda())."""
    from airbench import lib_airbench94

    with mock.patch.object(nn.Module, "cuda", lambda self, *args, **kwargs: self):
        net = lib_airbench94.make_net94()
    return net.float()


def import_airbench() -> Any:
    """Import airbench without letting its import-time `cudnn.benchmark = True` leak into our runs."""
    before = torch.backends.cudnn.benchmark
    try:
        import airbench
    finally:
        torch.backends.cudnn.benchmark = before
    return airbench


# ----------------------------------------------------------------------------- device rates


def sync(device: torch.device) -> None:
    """Wait for queued device work so that a host clock covers it (CUDA kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class MatmulRate:
    """Measured dense matrix-product rate: the ceiling the achieved TFLOP/s are compared with."""

    tflops: float  # median over timed groups, 1e12 FLOP/s
    n: int  # square size: (n, n) @ (n, n), 2 n^3 FLOPs
    dtype: str
    groups: list[float] = field(default_factory=list)  # TFLOP/s of each timed group


def matmul_rate(device: torch.device, n: int | None = None, dtype: torch.dtype | None = None,
                reps: int | None = None, groups: int = 5) -> MatmulRate:
    """Time (n, n) @ (n, n) products on random data: bf16 n=8192 on CUDA, fp32 n=2048 on the CPU.

    Each group runs `reps` products back to back between two synchronisations (so launch and sync
    overheads are amortised); inputs alternate between two pairs; the median group is reported.
    """
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if n is None:
        n = 8192 if device.type == "cuda" else 2048
    if reps is None:
        reps = 10 if device.type == "cuda" else 2
    gen = torch.Generator(device="cpu").manual_seed(0)
    pairs = [(torch.randn(n, n, generator=gen).to(device, dtype), torch.randn(n, n, generator=gen).to(device, dtype))
             for _ in range(2)]  # random data: zeros can run faster than real values
    out = torch.empty(n, n, device=device, dtype=dtype)
    for a, b in pairs * 2:  # warm-up: library handles, kernel selection, clocks
        torch.mm(a, b, out=out)
    sync(device)
    rates = []
    for _ in range(groups):
        start = time.perf_counter()
        for i in range(reps):
            a, b = pairs[i % 2]
            torch.mm(a, b, out=out)
        sync(device)
        seconds = time.perf_counter() - start
        rates.append(2 * n ** 3 * reps / seconds / 1e12)
    if not torch.isfinite(out.float()).all():
        raise RuntimeError("the matrix-product check produced non-finite values")
    return MatmulRate(statistics.median(rates), n, str(dtype).replace("torch.", ""), rates)


# ----------------------------------------------------------------------------- data


def synthetic_cifar(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 32, 32, 3) uint8 random images and (n,) int64 labels in 0..9: CIFAR-10's shapes and dtypes."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *IMAGE_SHAPE), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.int64)
    return images, labels


# ----------------------------------------------------------------------------- one path


@dataclass
class Row:
    """One (model, path) measurement."""

    model: str
    recipe: str
    path: str
    config: str
    batch_size: int
    images_per_epoch: int
    steps_per_epoch: int
    recipe_epochs: int
    warmup_seconds: list[float]  # s, warm-up epochs (the first includes compilation / worker start-up)
    epoch_seconds: list[float]  # s, timed epochs (training only)
    train_flops_per_image: float  # FLOPs, 3 x forward
    eval_seconds: float | None = None  # s, one pass over the test set (after a warm-up pass)
    eval_warmup_seconds: float | None = None
    eval_images: int = 0
    host_syncs: int | None = None  # counted over every epoch of fit (CUDA, --count-syncs)
    error: str | None = None

    @property
    def seconds_per_epoch(self) -> float:
        return statistics.median(self.epoch_seconds)

    @property
    def images_per_second(self) -> float:
        return self.images_per_epoch / self.seconds_per_epoch

    @property
    def compile_seconds(self) -> float:
        """First warm-up epoch over a steady epoch: compilation (fast) or worker start-up (classic)."""
        return self.warmup_seconds[0] - self.seconds_per_epoch if self.warmup_seconds else float("nan")

    @property
    def projected_seconds(self) -> float:
        """Training time of the recipe's full schedule on 50,000 images at the measured rate."""
        return self.recipe_epochs * FULL_TRAIN_SIZE / self.images_per_second

    @property
    def achieved_tflops(self) -> float:
        return self.train_flops_per_image * self.images_per_second / 1e12


@contextlib.contextmanager
def count_host_syncs(device: torch.device, enabled: bool) -> Iterator[dict]:
    """Count synchronising CUDA calls (torch's sync debug mode) inside the block: result["count"]."""
    result: dict[str, int | None] = {"count": None}
    if not enabled or device.type != "cuda":
        yield result
        return
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield result
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    result["count"] = sum("synchroniz" in str(w.message) for w in caught)
    for w in caught:  # let every other warning through
        if "synchroniz" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def run_path(model_name: str, path: str, images: np.ndarray, labels: np.ndarray, test_images: np.ndarray,
             test_labels: np.ndarray, device: torch.device, *, epochs: int, warmup_epochs: int,
             compile: bool | str, amp: str, num_workers: int, drop_last: bool, evaluate_test: bool,
             count_syncs: bool, train_flops: float, seed: int = 0) -> Row:
    """Train `model_name` with its recipe for warmup_epochs + epochs through the run's own steps
    (era_utils.steps: the loaders, model, optimizer and schedule `era-utils run` builds); time each epoch."""
    fast = path == "fast"
    total = warmup_epochs + epochs
    recipe = get_recipe(MODEL_RECIPES[model_name]).override(epochs=total, seed=seed)
    plan = plan_run(recipe, device=str(device), fast=fast, amp=amp if fast else None,
                    compile=compile if fast else False, num_workers=num_workers, verbose=False, checkpoints=False)
    # drop_last: what `era-utils run` does on CUDA (one batch shape, one compiled graph); here on
    # every device unless --keep-last, and only when the data holds a full batch (tiny smoke runs).
    drop = fast and drop_last and len(images) >= recipe.batch_size
    plan = dataclasses.replace(plan, fast=dataclasses.replace(plan.fast, drop_last=drop))
    classes = [f"class{i}" for i in range(10)]  # the model's head is sized from the data's classes
    data = steps.Data("synthetic CIFAR-shaped", ImageArrays(images, labels, classes),
                      ImageArrays(test_images, test_labels, classes), CIFAR10_MEAN, CIFAR10_STD)
    steps.start(plan)  # seeds; cuDNN autotuning on the fast path (airbench turns it on), off on the classic
    train_loader, test_loader = steps.build_loaders(plan, data)
    if isinstance(train_loader, GPULoader):
        images_per_epoch = len(train_loader) * recipe.batch_size if drop else train_loader.dataset_size
        loader_text = f"GPULoader on {device.type}{', drop_last' if drop else ''}"
    else:
        images_per_epoch = len(images)
        loader_text = f"workers DataLoader (albumentations), num_workers={num_workers}"
    fast_path = plan.fast
    compile_text = ("torch.compile" + (f"({fast_path.compile})" if isinstance(fast_path.compile, str) else "")
                    if fast_path.compile else "eager")
    config = (f"{loader_text}; {precision_name(fast_path.amp_dtype)}; "
              f"{'channels_last' if fast_path.channels_last else 'NCHW'}; {compile_text}; "
              f"cudnn.benchmark {'on' if torch.backends.cudnn.benchmark else 'off'}")

    model = steps.build_model(plan, data)
    optimizer, scheduler = steps.optimizer_and_schedule(plan, model, train_loader)  # the recipe's LR, fused on CUDA
    sync(device)
    with count_host_syncs(device, count_syncs) as syncs:
        history = steps.train(plan, model, train_loader, None, optimizer, scheduler)
    sync(device)  # fit's epochs end on a device read; this makes sure nothing is left queued
    row = Row(model_name, recipe.name, path, config, recipe.batch_size, images_per_epoch, len(train_loader),
              get_recipe(recipe.name).epochs, history.epoch_times[:warmup_epochs], history.epoch_times[warmup_epochs:],
              train_flops, host_syncs=syncs["count"])

    if evaluate_test:
        # The same call fit makes per epoch: eager (fit compiles only the training pass).
        seconds = []
        for _ in range(2):  # warm-up pass (cuDNN autotuning, workers), then the timed pass
            sync(device)
            start = time.perf_counter()
            evaluate(model, test_loader, recipe.criterion(), device, amp_dtype=fast_path.amp_dtype,
                     channels_last=fast_path.channels_last)
            sync(device)
            seconds.append(time.perf_counter() - start)
        row.eval_warmup_seconds, row.eval_seconds = seconds
        row.eval_images = len(test_images)
    del model, optimizer, scheduler, train_loader, test_loader
    if fast_path.compile:
        torch._dynamo.reset()  # free the compiled graphs before the next model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


# ----------------------------------------------------------------------------- airbench


@dataclass
class PeerRow:
    """One airbench training run (its own recipe and loader)."""

    name: str
    config: str
    images: int  # images trained over the whole run
    epochs: float
    seconds: list[float]  # s, whole training run, each timed run
    train_flops_per_image: float
    error: str | None = None

    @property
    def run_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def images_per_second(self) -> float:
        return self.images / self.run_seconds

    @property
    def achieved_tflops(self) -> float:
        return self.train_flops_per_image * self.images_per_second / 1e12


def run_airbench(images: np.ndarray, labels: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray,
                 device: torch.device, train_flops: float, runs: int = 2) -> PeerRow:
    """Train airbench94 (its defaults: 9.9 epochs, batch 1024) on our tensors: warm-up run, then `runs` timed."""
    airbench = import_airbench()
    from airbench import lib_airbench94

    hyp = lib_airbench94.hyp
    torch.backends.cudnn.benchmark = True  # what airbench's import sets: its recipe as published
    with tempfile.TemporaryDirectory(prefix="airbench_data_") as tmp:
        folder = Path(tmp) / "cifar10"  # train94 builds its test loader from the relative path 'cifar10'
        folder.mkdir()
        classes = [f"class{i}" for i in range(10)]
        torch.save({"images": torch.from_numpy(images), "labels": torch.from_numpy(labels), "classes": classes},
                   folder / "train.pt")
        torch.save({"images": torch.from_numpy(test_images), "labels": torch.from_numpy(test_labels),
                    "classes": classes}, folder / "test.pt")
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            with torch.cuda.device(device):  # airbench loads to GPU 0 (its `gpu=0`) and the current device
                loader = airbench.CifarLoader("cifar10", train=True, batch_size=hyp["opt"]["batch_size"],
                                              aug=hyp["aug"], altflip=True)
                steps = math.ceil(len(loader) * hyp["opt"]["train_epochs"])
                seconds = []
                for i in range(runs + 1):  # run 0 warms up (cuDNN autotuning, first kernels)
                    sync(device)
                    start = time.perf_counter()
                    airbench.train94(loader, verbose=False)
                    sync(device)
                    if i > 0:
                        seconds.append(time.perf_counter() - start)
        finally:
            os.chdir(cwd)
            torch.backends.cudnn.benchmark = False
    config = (f"airbench {_dist_version('airbench')} train94 defaults: batch "
              f"{hyp['opt']['batch_size']}, {hyp['opt']['train_epochs']} epochs, fp16, channels_last, eager, "
              "its GPU loader (flip + translate 2), cudnn.benchmark on")
    return PeerRow("airbench94", config, steps * loader.batch_size, hyp["opt"]["train_epochs"], seconds, train_flops)


# ----------------------------------------------------------------------------- report


def _dist_version(name: str) -> str:
    """An installed distribution's version, or 'unknown' (e.g. imported from an unpacked source tree)."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown version"




def _versions() -> str:
    parts = [f"torch {torch.__version__}"]
    if torch.version.cuda:
        parts.append(f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    try:
        import albumentations

        parts.append(f"albumentations {albumentations.__version__}")
    except ImportError:
        parts.append("albumentations not installed")
    parts += [f"numpy {np.__version__}", f"python {platform.python_version()}",
              f"torch threads {torch.get_num_threads()}"]
    return ", ".join(parts)


def _rate(tflops: float) -> str:
    """TFLOP/s with enough digits for both a CPU (0.1) and a GPU (800)."""
    return f"{tflops:,.1f}" if tflops >= 10 else f"{tflops:.3g}"


def _fmt(value: float | None, spec: str = ",.1f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def render(header: dict, rate: MatmulRate | None, flops: list[FlopCount], rows: list[Row],
           peers: list[PeerRow | str], device: torch.device) -> str:
    """The markdown report: conditions, FLOP counts, one row per (model, path), peers, targets."""
    lines = ["# Training speed: classic path vs the kit's fast path (S10 and S7 recipes)", ""]
    lines += [f"- {key}: {value}" for key, value in header.items()]
    if rate is not None:
        lines.append(f"- measured matrix-product rate: **{_rate(rate.tflops)} TFLOP/s** ({rate.dtype}, "
                     f"{rate.n}x{rate.n}x{rate.n}, median of {len(rate.groups)} groups; groups "
                     f"{', '.join(_rate(g) for g in rate.groups)})")
    lines += ["", "## FLOPs per image (counted with torch.utils.flop_counter.FlopCounterMode)", "",
              "| network | parameters | forward GFLOP | training GFLOP (3 x forward, used below) | "
              "forward+backward as counted GFLOP |",
              "|---|---:|---:|---:|---:|"]
    for f in flops:
        lines.append(f"| {f.name} | {f.params:,} | {f.forward / 1e9:.3f} | {f.train / 1e9:.3f} | "
                     f"{f.counted_train / 1e9:.3f} |")

    share_head = f"% of {rate.dtype} matmul" if rate is not None else "% of matmul"
    lines += ["", "## Training epochs", "",
              "| model (recipe) | path | configuration | batch | images/epoch | warm-up epoch s | "
              "compile / start-up s | s/epoch | images/s | projected s, full schedule | eval s (test set) | "
              f"TFLOP/s | {share_head} | host syncs |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.error:
            lines.append(f"| {r.model} ({r.recipe}) | {r.path} | failed: {r.error} |" + " - |" * 11)
            continue
        share = 100 * r.achieved_tflops / rate.tflops if rate is not None else None
        eval_text = f"{r.eval_seconds:.2f} ({r.eval_images:,} img)" if r.eval_seconds is not None else "-"
        syncs = (f"{r.host_syncs} in {len(r.warmup_seconds) + len(r.epoch_seconds)} epochs x {r.steps_per_epoch} steps"
                 if r.host_syncs is not None else "-")
        lines.append(
            f"| {r.model} ({r.recipe}) | {r.path} | {r.config} | {r.batch_size} | {r.images_per_epoch:,} | "
            f"{_fmt(r.warmup_seconds[0] if r.warmup_seconds else None, '.2f')} | {_fmt(r.compile_seconds, '.2f')} | "
            f"{r.seconds_per_epoch:.3f} | {r.images_per_second:,.0f} | "
            f"{r.projected_seconds:,.1f} ({r.recipe_epochs} ep) | "
            f"{eval_text} | {r.achieved_tflops:.3g} | {_fmt(share, '.2f')} | {syncs} |")

    if peers:
        lines += ["", "## Peer", "",
                  "| peer | configuration | images trained | run s (median) | images/s | TFLOP/s | "
                  f"{share_head} |", "|---|---|---:|---:|---:|---:|---:|"]
        for p in peers:
            if isinstance(p, str):
                lines.append(f"| airbench94 | {p} | - | - | - | - | - |")
                continue
            if p.error:
                lines.append(f"| {p.name} | failed: {p.error} | - | - | - | - | - |")
                continue
            share = 100 * p.achieved_tflops / rate.tflops if rate is not None else None
            lines.append(f"| {p.name} | {p.config} | {p.images:,} ({p.epochs} ep) | {p.run_seconds:.2f} "
                         f"(runs {', '.join(f'{s:.2f}' for s in p.seconds)}) | {p.images_per_second:,.0f} | "
                         f"{p.achieved_tflops:.3g} | {_fmt(share, '.2f')} |")

    lines += ["", "## Targets (issue: on a GPU, full-size data)", ""]
    lines += check_targets(rows, [p for p in peers if isinstance(p, PeerRow) and not p.error], device)
    lines += [
        "",
        "Notes: s/epoch is the median of the timed epochs, training only (fit without a test loader; each epoch",
        "ends on a device read, so the host clock covers the GPU work). Warm-up epochs are excluded; the first one",
        "includes torch.compile (fast path) or starting the DataLoader workers (classic); 'compile / start-up' is",
        "that epoch minus a steady one. Projected = recipe epochs x 50,000 images / measured images/s (the S10",
        "recipe's LR range test is not included). Evaluation: one pass over the test set after a warm-up pass.",
        "TFLOP/s = 3 x forward FLOPs per image x images/s. Host syncs (CUDA, --count-syncs): synchronising CUDA",
        "calls seen by torch's sync debug mode over all epochs of fit (warm-up included); the engine reads the",
        "device at the first step and every sync_every (50) steps and at the end of an epoch, never per step.",
        "airbench94: a synchronised host clock around train94 (its whitening init, 9.9 epochs, and the test-set",
        "load and net construction its own timer leaves out); one untimed warm-up run first.",
        "",
    ]
    return "\n".join(lines)


def check_targets(rows: list[Row], peers: list[PeerRow], device: torch.device) -> list[str]:
    """One line per target of the issue: met, not met, or not measured in this run."""
    where = "" if device.type == "cuda" else " (this run is on the CPU: the targets are for a GPU)"
    ok = [r for r in rows if not r.error]
    out = []
    s10 = [r for r in ok if r.recipe == "s10" and r.path == "fast"]
    if s10:
        seconds = s10[0].projected_seconds
        verdict = "met" if seconds < TARGET_S10_SECONDS else "not met"
        out.append(f"- S10, 24 epochs x 50,000 images on the fast path under {TARGET_S10_SECONDS:.0f} s: "
                   f"{seconds:,.1f} s projected: {verdict}{where}")
    else:
        out.append("- S10 fast path under 10 s: not measured in this run")
    for model in dict.fromkeys(r.model for r in ok):
        by_path = {r.path: r for r in ok if r.model == model}
        if "fast" in by_path and "classic" in by_path:
            speedup = by_path["fast"].images_per_second / by_path["classic"].images_per_second
            verdict = "met" if speedup >= TARGET_SPEEDUP else "not met"
            out.append(f"- {model}: fast path / classic path = {speedup:.1f}x (target >= {TARGET_SPEEDUP:.0f}x): "
                       f"{verdict}{where}")
    if peers:
        best = max(peers, key=lambda p: p.achieved_tflops)
        for r in (r for r in ok if r.path == "fast"):
            verdict = "met" if r.achieved_tflops >= best.achieved_tflops else "not met"
            out.append(f"- {r.model} fast path {r.achieved_tflops:.3g} TFLOP/s vs airbench94 "
                       f"{best.achieved_tflops:.3g} TFLOP/s (target: at least airbench's): {verdict}")
    else:
        out.append("- achieved TFLOP/s at least airbench's: airbench not run (CUDA only)")
    return out


# ----------------------------------------------------------------------------- main


def _csv(text: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in items if t not in allowed]
    if unknown or not items:
        raise argparse.ArgumentTypeError(f"unknown {what} {unknown}; choose from {', '.join(allowed)}")
    return items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: era_utils.get_device())")
    parser.add_argument("--models", default="custom_resnet,resnet18",
                        type=lambda s: _csv(s, list(MODEL_RECIPES), "model"),
                        help="comma-separated: custom_resnet (S10), resnet18 (S7)")
    parser.add_argument("--paths", default="classic,fast", type=lambda s: _csv(s, PATHS, "path"),
                        help="comma-separated: classic, fast")
    parser.add_argument("--train-size", type=int, default=FULL_TRAIN_SIZE, help="synthetic training images")
    parser.add_argument("--test-size", type=int, default=10_000, help="synthetic test images")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per path (after the warm-up)")
    parser.add_argument("--classic-epochs", type=int, default=None,
                        help="timed epochs for the classic path (default: --epochs); it is the slow one")
    parser.add_argument("--warmup-epochs", type=int, default=1, help="untimed epochs first (compilation happens here)")
    parser.add_argument("--no-compile", action="store_true", help="fast path without torch.compile")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode for the fast path, e.g. max-autotune")
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"], help="fast path's amp")
    parser.add_argument("--num-workers", type=int, default=2, help="classic path's DataLoader workers (Colab: 2)")
    parser.add_argument("--keep-last", action="store_true",
                        help="fast path keeps the short last batch (by default it drops it, as `era-utils run` "
                             "does on CUDA: one batch shape, one compiled graph)")
    parser.add_argument("--no-eval", action="store_true", help="skip timing evaluation on the test set")
    parser.add_argument("--count-syncs", action="store_true",
                        help="count synchronising CUDA calls during fit (torch.cuda sync debug mode)")
    parser.add_argument("--peer", default="", type=lambda s: _csv(s, PEERS, "peer") if s else [],
                        help="airbench: train airbench94 on the same tensors (CUDA only)")
    parser.add_argument("--peer-runs", type=int, default=2, help="timed airbench runs (after one warm-up run)")
    parser.add_argument("--matmul-size", type=int, default=None, help="matrix size (default 8192 CUDA, 2048 CPU)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the markdown report here (rewritten as each row finishes)")
    parser.add_argument("--append", action="store_true", help="append the final report to --out instead")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw numbers as JSON")
    parser.add_argument("--note", default="", help="a line about the conditions (e.g. a shared machine)")
    args = parser.parse_args(argv)
    if args.epochs < 1 or (args.classic_epochs is not None and args.classic_epochs < 1):
        parser.error("--epochs and --classic-epochs must be >= 1 (timed epochs)")
    if args.warmup_epochs < 0:
        parser.error("--warmup-epochs must be >= 0")
    if args.train_size < 2 or args.test_size < 1:
        parser.error("--train-size must be >= 2 and --test-size >= 1")
    return args


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark; prints and returns the markdown report."""
    args = parse_args(argv)
    device = get_device(args.device)
    argv_text = sys.argv[1:] if argv is None else list(argv)
    command = "python " + shlex.join([os.path.relpath(__file__)] + argv_text)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    header = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": f"`{command}`",
        "device": device_name(device),
        "versions": _versions(),
        "data": (f"{args.train_size:,} synthetic train + {args.test_size:,} test images, 32x32x3 uint8, random "
                 "labels in 0..9 (speed does not depend on the pixels); CIFAR-10 mean/std"),
        "epochs": f"{args.warmup_epochs} warm-up + {args.epochs} timed per path"
                  + (f" ({args.classic_epochs} timed on the classic path)" if args.classic_epochs else ""),
        "defaults on this device": (f"cudnn.allow_tf32 {torch.backends.cudnn.allow_tf32}, "
                                    f"cuda.matmul.allow_tf32 {torch.backends.cuda.matmul.allow_tf32}"
                                    if device.type == "cuda" else "cpu: amp and channels_last resolve to off"),
    }
    if args.note:
        header["note"] = args.note
    compile_setting: bool | str = False if args.no_compile else (args.compile_mode or True)

    def report(rows, peers, rate, flops) -> str:
        text = render(header, rate, flops, rows, peers, device)
        if args.out is not None and not args.append:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)  # rewritten after every row: a timeout still leaves results
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({
                "header": header, "matmul": asdict(rate) if rate else None,
                "flops": [asdict(f) | {"train": f.train} for f in flops],
                "rows": [asdict(r) | ({} if r.error else {"images_per_second": r.images_per_second,
                                                          "seconds_per_epoch": r.seconds_per_epoch,
                                                          "projected_seconds": r.projected_seconds,
                                                          "achieved_tflops": r.achieved_tflops}) for r in rows],
                "peers": [p if isinstance(p, str) else asdict(p) | (
                    {} if p.error else {"images_per_second": p.images_per_second,
                                        "achieved_tflops": p.achieved_tflops}) for p in peers],
            }, indent=1))
        return text

    def say(text: str) -> None:
        print(text, flush=True)

    say(f"device: {header['device']}; {header['versions']}")
    rate = matmul_rate(device, n=args.matmul_size)
    say(f"matrix product ({rate.dtype}, n={rate.n}): {_rate(rate.tflops)} TFLOP/s")

    flops: list[FlopCount] = []
    for name in args.models:  # counted on fresh CPU copies: the FLOPs do not depend on the device
        flops.append(count_model_flops(name, create_model(name)))
    air_flops = None
    if "airbench" in args.peer:  # counted on the CPU too, where its training is skipped
        try:
            import_airbench()
            air_flops = count_model_flops("airbench94 (make_net94)", airbench_net_cpu())
            flops.append(air_flops)
        except ImportError as exc:
            say(f"airbench not importable ({exc}); pip install airbench==0.1.8 to count its FLOPs")
    for f in flops:
        say(f"{f.name}: forward {f.forward / 1e9:.3f} GFLOP/image, training (3x) {f.train / 1e9:.3f}, "
            f"forward+backward counted {f.counted_train / 1e9:.3f}")
    train_flops = {f.name: f.train for f in flops}

    images, labels = synthetic_cifar(args.train_size, seed=0)
    test_images, test_labels = synthetic_cifar(args.test_size, seed=1)
    rows: list[Row] = []
    peers: list[PeerRow | str] = []

    def run_peer() -> None:
        if "airbench" not in args.peer:
            return
        if device.type != "cuda":
            reason = ("skipped on the CPU: airbench 0.1.8 needs a CUDA GPU (make_net94 hard-codes "
                      ".half().cuda(), CifarLoader loads to GPU 0)")
            say(f"airbench94: {reason}")
            peers.append(reason)
        elif air_flops is None:
            peers.append("skipped: airbench is not installed (pip install airbench==0.1.8)")
        else:
            say("airbench94: warm-up run, then timed runs ...")
            try:
                peer = run_airbench(images, labels, test_images, test_labels, device, air_flops.train,
                                    runs=args.peer_runs)
                say(f"airbench94: {peer.run_seconds:.2f} s for {peer.images:,} images, "
                    f"{peer.images_per_second:,.0f} images/s, {peer.achieved_tflops:.3g} TFLOP/s")
            except Exception as exc:  # a peer failing must not lose our own rows
                traceback.print_exc()
                peer = PeerRow("airbench94", "", 0, 0.0, [], air_flops.train, error=f"{type(exc).__name__}: {exc}")
                say(f"airbench94 failed: {peer.error}")
            peers.append(peer)
        report(rows, peers, rate, flops)

    for index, name in enumerate(args.models):
        for path in args.paths:
            epochs = args.classic_epochs if path == "classic" and args.classic_epochs else args.epochs
            say(f"{name} / {path}: {args.warmup_epochs} warm-up + {epochs} timed epochs ...")
            try:
                row = run_path(name, path, images, labels, test_images, test_labels, device, epochs=epochs,
                               warmup_epochs=args.warmup_epochs, compile=compile_setting, amp=args.amp,
                               num_workers=args.num_workers, drop_last=not args.keep_last,
                               evaluate_test=not args.no_eval, count_syncs=args.count_syncs,
                               train_flops=train_flops[name])
                say(f"  {row.seconds_per_epoch:.3f} s/epoch, {row.images_per_second:,.0f} images/s, "
                    f"{row.achieved_tflops:.3g} TFLOP/s; warm-up {row.warmup_seconds}; timed {row.epoch_seconds}"
                    + (f"; eval {row.eval_seconds:.2f} s" if row.eval_seconds is not None else ""))
            except Exception as exc:  # keep going: one failing path must not lose the others
                traceback.print_exc()
                row = Row(name, MODEL_RECIPES[name], path, "", 0, 0, 0, 0, [], [], train_flops[name],
                          error=f"{type(exc).__name__}: {exc}")
                say(f"  failed: {row.error}")
            rows.append(row)
            report(rows, peers, rate, flops)
        if index == 0:
            run_peer()  # right after the first model, so a timeout later still leaves the comparison

    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if load_before is not None:
        header["load average (1 min) before/after"] = f"{load_before:.2f} / {load_after:.2f}"
    text = report(rows, peers, rate, flops)
    if args.out is not None and args.append:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as handle:
            handle.write("\n" + text)
    print(text)
    return text


if __name__ == "__main__":
    sys.exit(1 if "| failed: " in main() else 0)  # a failed row fails the command (a script sees it)
