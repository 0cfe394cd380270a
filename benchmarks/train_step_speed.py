"""Training-step speed of era_utils.engine: eager fp32 against the fast settings, per model.

Times `era_utils.engine.train_one_epoch` (the loop `fit` runs) on synthetic CIFAR-shaped data
(3x32x32 uint8 pixels, 10 random labels: speed does not depend on the pixels) for each model and
configuration, after a few warm-up steps (torch.compile compiles during warm-up):

    eager    fp32, NCHW, no compile, a DataLoader over CPU tensors (pinned on CUDA), torch defaults
    cl       fp32 with channels_last (model and inputs): the CPU path without native bf16
    amp      + autocast: bf16 where the GPU has it, else fp16 + GradScaler; bf16 on the CPU
    amp+cl   autocast + channels_last (model and inputs)
    fast     + torch.compile, cudnn.benchmark, and on CUDA the GPU-resident loader
             (era_utils.gpu_loader.GPULoader: uint8 on the device, normalised there)

No augmentation in any loader, so the numbers isolate the training step; the data path (per-image
albumentations workers against batched GPU augmentation) is timed in benchmarks/train_speed.py.
Reports images/s, ms per step and the projected training time of one 50,000-image CIFAR-10 epoch,
plus the device (name, torch version), the date and the command, as Markdown (--out) and on stdout.

    python benchmarks/train_step_speed.py --device cuda --steps 50
    python benchmarks/train_step_speed.py --device cpu --steps 3 --repeats 2 --batch-size 32 \
        --threads 1 --no-compile --out benchmarks/train_step_speed_cpu.md
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from era_utils.engine import train_one_epoch
from era_utils.models import create_model
from era_utils.recipes import get_recipe
from era_utils.speed import resolve_amp
from era_utils.utils import device_name, get_device

CIFAR_TRAIN_IMAGES = 50_000  # images per CIFAR-10 training epoch, for the projected epoch time
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # [0, 1] units; only sets the scale of the synthetic inputs
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class Config:
    """One way of running the training step."""

    name: str
    amp: bool  # autocast (bf16/fp16 on CUDA, bf16 on the CPU)
    channels_last: bool
    compile: bool
    device_loader: bool  # the GPU-resident loader (CUDA only)
    cudnn_benchmark: bool = False  # let cuDNN time its convolution algorithms on the first batch


CONFIGS = {
    "eager": Config("eager", amp=False, channels_last=False, compile=False, device_loader=False),
    "cl": Config("cl", amp=False, channels_last=True, compile=False, device_loader=False),
    "amp": Config("amp", amp=True, channels_last=False, compile=False, device_loader=False),
    "amp+cl": Config("amp+cl", amp=True, channels_last=True, compile=False, device_loader=False),
    "fast": Config("fast", amp=True, channels_last=True, compile=True, device_loader=True,
                   cudnn_benchmark=True),
}




def load_average() -> str:
    """The 1-minute load average where the OS reports one: timings on a shared machine need it."""
    try:
        return f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start"
    except (AttributeError, OSError):
        return ""


def synthetic_pixels(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 32, 32, 3) uint8 images and (n,) int64 labels in [0, 10)."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 10, n).astype(np.int64))


def step_loader(pixels: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device,
                on_device: bool):
    """A DataLoader over normalised CPU tensors, or the GPU-resident loader."""
    if on_device:
        from era_utils.gpu_loader import GPULoader  # the fast path's loader

        return GPULoader(pixels, labels, batch_size, mean=CIFAR_MEAN, std=CIFAR_STD,
                         device=device, shuffle=True, seed=0)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    images = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - mean) / std  # (N, 3, 32, 32)
    return DataLoader(TensorDataset(images, torch.from_numpy(labels)), batch_size=batch_size,
                      shuffle=True, pin_memory=device.type == "cuda")


def time_config(model_name: str, config: Config, device: torch.device, batch_size: int,
                steps: int, warmup: int, compile_enabled: bool, repeats: int = 1) -> dict:
    """Warm up, then time `steps` training steps (best of `repeats` passes); returns one table row."""
    torch.manual_seed(0)
    use_compile = config.compile and compile_enabled
    on_device = config.device_loader and device.type == "cuda"
    amp_dtype, scaler = (None, None)
    if config.amp:
        amp_dtype, scaler = resolve_amp(device, "auto" if device.type == "cuda" else "bf16")
    model = create_model(model_name, num_classes=10).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    run_model = torch.compile(model) if use_compile else model
    # S7's optimizer (SGD, Nesterov momentum, weight decay) as the recipe builds it; a constant LR,
    # since the warm-up and timed passes are separate calls (the schedule's cost is measured in train_speed.py).
    optimizer, _ = get_recipe("s7").override(schedule="constant").configure_optimizers(model, steps)
    criterion = nn.CrossEntropyLoss()
    pixels, labels = synthetic_pixels((warmup + steps) * batch_size)
    split = warmup * batch_size
    warm = step_loader(pixels[:split], labels[:split], batch_size, device, on_device)
    timed = step_loader(pixels[split:], labels[split:], batch_size, device, on_device)
    benchmark_before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = config.cudnn_benchmark
    kwargs = dict(scaler=scaler, amp_dtype=amp_dtype, channels_last=config.channels_last,
                  verbose=False)
    try:
        train_one_epoch(run_model, warm, optimizer, criterion, device, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = float("inf")
        for _ in range(repeats):  # best of N: interference from other processes only adds time
            start = time.perf_counter()
            train_one_epoch(run_model, timed, optimizer, criterion, device, **kwargs)  # ends with a read
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = min(seconds, time.perf_counter() - start)
    finally:
        torch.backends.cudnn.benchmark = benchmark_before
    images_per_s = steps * batch_size / seconds
    return {
        "model": model_name,
        "config": config.name,
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype is not None else "off",
        "channels_last": "yes" if config.channels_last else "no",
        "compile": "yes" if use_compile else ("off (--no-compile)" if config.compile else "no"),
        "loader": "GPULoader" if on_device else "DataLoader",
        "images_per_s": images_per_s,
        "ms_per_step": 1000 * seconds / steps,
        "epoch_s": CIFAR_TRAIN_IMAGES / images_per_s,
    }


def to_markdown(rows: list[dict], header: list[str]) -> str:
    lines = header + [
        "",
        "| model | config | amp | channels_last | compile | loader | images/s | ms/step | "
        "epoch (50k images) | vs eager |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    eager = {r["model"]: r["images_per_s"] for r in rows if r["config"] == "eager"}
    for r in rows:
        ratio = f"{r['images_per_s'] / eager[r['model']]:.2f}x" if r["model"] in eager else "-"
        epoch = r["epoch_s"]
        epoch_text = f"{epoch:.1f} s" if epoch < 600 else f"{epoch / 60:.1f} min"
        lines.append(
            f"| {r['model']} | {r['config']} | {r['amp']} | {r['channels_last']} | {r['compile']} | "
            f"{r['loader']} | {r['images_per_s']:.1f} | {r['ms_per_step']:.1f} | {epoch_text} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def notes(device: torch.device, args: argparse.Namespace) -> str:
    """What a reader needs to interpret the table on this device."""
    lines = ["", "Notes:"]
    if device.type != "cuda":
        lines.append("- Off CUDA, 'fast' uses the DataLoader (the GPU-resident loader is for CUDA) and "
                     "cudnn.benchmark does nothing, so it differs from 'amp+cl' only by torch.compile"
                     + (" (left out here with --no-compile): a gap between the two rows is "
                        "noise, e.g. the load of a shared machine changing between rows."
                        if args.no_compile else "."))
        lines.append("- 'amp' on the CPU is bf16 autocast; it pays off on CPUs with native bf16 "
                     "(avx512_bf16 / AMX) and can be slower elsewhere. The kit's fast path uses it only "
                     "where the CPU's flags list native bf16, else fp32 ('cl' is that path).")
    if args.steps < 20:
        lines.append(f"- Only {args.steps} timed steps per row: a smoke-level measurement; expect "
                     "+-20% between runs, more on a shared machine.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="cuda, cpu, mps (default: auto)")
    parser.add_argument("--models", nargs="+", default=["resnet18", "custom_resnet"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=50, help="timed training steps per row")
    parser.add_argument("--warmup", type=int, default=None,
                        help="warm-up steps before timing (default 5, 2 on the CPU)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default 512 (S10's batch) on CUDA, 32 on the CPU")
    parser.add_argument("--no-compile", action="store_true",
                        help="leave torch.compile out of 'fast' (compiling takes minutes on a small CPU)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="time the steps this many times per row and keep the fastest")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", default=None, help="write the Markdown report here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = get_device(args.device)
    batch_size = args.batch_size or (512 if device.type == "cuda" else 32)
    warmup = args.warmup if args.warmup is not None else (5 if device.type == "cuda" else 2)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    versions = f"torch {torch.__version__}"
    if device.type == "cuda":
        versions += f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    header = [
        "# Training-step speed: eager fp32 against the engine's fast settings",
        "",
        f"- device: {device_name(device)}",
        f"- versions: {versions}, python {platform.python_version()}",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC" + load_average(),
        f"- command: `{command}`",
        f"- data: synthetic CIFAR-shaped batches (3x32x32, 10 classes), batch {batch_size}, "
        f"{args.steps} timed steps (best of {args.repeats}) after {warmup} warm-up steps, no "
        "augmentation; SGD (momentum 0.9, Nesterov), cross-entropy, "
        "`era_utils.engine.train_one_epoch` (device read every 50 steps)",
        "- epoch (50k images): 50,000 / images/s, the training part of one CIFAR-10 epoch",
    ]
    rows = []
    for model_name in args.models:
        for name in args.configs:
            row = time_config(model_name, CONFIGS[name], device, batch_size, args.steps, warmup,
                              compile_enabled=not args.no_compile, repeats=args.repeats)
            rows.append(row)
            print(f"{model_name:>14} {name:>7}: {row['images_per_s']:8.1f} images/s "
                  f"{row['ms_per_step']:8.1f} ms/step", flush=True)
    report = to_markdown(rows, header) + notes(device, args)
    print()
    print(report)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
