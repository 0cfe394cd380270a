"""Images per second of the two training data paths on the same data, in one run.

    albumentations  per-image S10 recipe in DataLoader workers (num_workers=2, as on Colab), each
                    batch then moved to the device
    gpu-resident    era_utils.gpu_loader.GPULoader: the dataset on the device, the S10 recipe as
                    batched tensor ops

Data: synthetic CIFAR-shaped images (N x 32 x 32 x 3 uint8), batch 512. Prints a markdown table
(device, torch version, date, command) and writes it to --out.

    python benchmarks/loader_speed.py --n 10000 --epochs 2 --out benchmarks/loader_speed_cpu.md
    python benchmarks/loader_speed.py --device cuda --n 50000 --epochs 4 --out loader_speed_gpu.md
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from era_utils.gpu_loader import GPULoader  # noqa: E402
from era_utils.loaders import worker_loader  # noqa: E402
from era_utils.transforms import S10_AUGMENT  # noqa: E402
from era_utils.utils import device_name, get_device  # noqa: E402




def sync(device: torch.device) -> None:
    """Wait for queued device work, so a timing covers it (CUDA kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_epochs(loader, device: torch.device, epochs: int, to_device: bool) -> list[float]:
    """Seconds per epoch of iterating `loader` (moving each batch to `device` when `to_device`)."""
    seconds = []
    for _ in range(epochs):
        sync(device)
        start = time.perf_counter()
        for images, labels in loader:
            if to_device:
                images = images.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
        sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of synthetic 32x32x3 images")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per path (the first includes start-up)")
    parser.add_argument("--batch-size", type=int, default=512, help="images per batch (S10 uses 512)")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers (Colab has ~2 vCPUs)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: era_utils.get_device())")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown report here")
    parser.add_argument("--note", default="", help="a line about the conditions (e.g. a shared machine)")
    args = parser.parse_args(argv)

    device = get_device(args.device)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.n, 32, 32, 3), dtype=np.uint8)  # (N, H, W, C) CIFAR-shaped
    labels = rng.integers(0, 10, args.n)
    mean = tuple(float(m) for m in images.reshape(-1, 3).mean(0) / 255)  # [0, 1] units, per channel
    std = tuple(float(s) for s in images.reshape(-1, 3).std(0) / 255)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None

    rows = []  # (path, detail, setup seconds, per-epoch seconds)
    try:
        import albumentations  # noqa: F401  (imported before the clock starts: import time is not loading)

        start = time.perf_counter()
        loader = worker_loader((images, labels), S10_AUGMENT, mean, std, args.batch_size, shuffle=True,
                               num_workers=args.num_workers, seed=0, pin_memory=device.type == "cuda")
        setup = time.perf_counter() - start
        rows.append(("albumentations DataLoader", f"num_workers={args.num_workers}, to {device.type}", setup,
                     time_epochs(loader, device, args.epochs, to_device=True)))
        del loader  # stop the persistent workers before timing the other path
    except ImportError as exc:  # e.g. a GPU machine without albumentations
        rows.append(("albumentations DataLoader", f"skipped: {exc}", None, []))

    variants = [("uint8 storage, fp32 out", dict(dtype=torch.float32))]
    if device.type == "cuda":
        variants.append(("uint8 storage, fp16 channels_last out", dict(dtype=torch.float16, channels_last=True)))
    for detail, kw in variants:
        sync(device)
        start = time.perf_counter()
        loader = GPULoader(images, labels, args.batch_size, spec=S10_AUGMENT, mean=mean, std=std, device=device,
                           seed=0, **kw)
        sync(device)
        setup = time.perf_counter() - start
        rows.append(("GPU-resident GPULoader", f"{detail}, on {device.type}", setup,
                     time_epochs(loader, device, args.epochs, to_device=False)))
        del loader

    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    report = render(args, device, rows, load_before, load_after)
    print(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    return report


def render(args, device, rows, load_before, load_after) -> str:
    """The markdown report: conditions first, then one row per path."""
    try:
        import albumentations
        alb_version = albumentations.__version__
    except ImportError:
        alb_version = "not installed"
    command = "python " + shlex.join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    lines = [
        "# Data-loader speed: albumentations workers vs GPU-resident",
        "",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- command: `{command}`",
        f"- device: {device_name(device)}",
        f"- torch {torch.__version__}, albumentations {alb_version}, numpy {np.__version__}, "
        f"python {platform.python_version()}, torch threads {torch.get_num_threads()}",
        f"- data: {args.n} synthetic CIFAR-shaped images (32x32x3 uint8), S10 recipe (pad 4 + random crop 32, "
        f"flip, cutout 8x8 mean fill, normalise), batch {args.batch_size}, {args.epochs} epoch(s) per path",
    ]
    if load_before is not None:
        lines.append(f"- load average (1 min) before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    if args.note:
        lines.append(f"- note: {args.note}")
    lines += [
        "",
        "| path | configuration | setup (s) | epoch 1 (images/s) | later epochs (images/s) |",
        "|---|---|---:|---:|---:|",
    ]
    steady = {}
    for path, detail, setup, seconds in rows:
        if not seconds:
            lines.append(f"| {path} | {detail} | - | - | - |")
            continue
        first = args.n / seconds[0]
        later = args.n * (len(seconds) - 1) / sum(seconds[1:]) if len(seconds) > 1 else None
        steady.setdefault(path, later if later is not None else first)
        later_text = f"{later:,.0f}" if later is not None else "-"
        lines.append(f"| {path} | {detail} | {setup:.2f} | {first:,.0f} | {later_text} |")
    if len(steady) == 2:
        alb, gpu = steady["albumentations DataLoader"], steady["GPU-resident GPULoader"]
        lines += ["", f"GPU-resident / albumentations (later epochs, fp32 out): {gpu / alb:.1f}x"]
    lines += [
        "",
        "Epoch 1 includes start-up (worker processes, first kernels); 'later epochs' is the steady state.",
        "The albumentations path includes moving each batch to the device; the GPU-resident setup",
        "includes copying the dataset to the device once.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
