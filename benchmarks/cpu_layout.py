"""NCHW against channels_last on the CPU, through the run's own steps: does the layout speed up a preview?

For each recipe's preview (`era_utils.plan.plan_run(recipe, size="preview")`: its data, loaders, model
and precision, as `era-utils run RECIPE --preview` builds them), the same run is made twice over, once
per memory layout (NCHW, channels_last) in the order NCHW, channels_last, channels_last, NCHW, so a
drift of the machine's speed weighs on both alike. Each time: a fresh model, --batches training steps
of `era_utils.engine.train_one_epoch` with the recipe's optimizer, schedule and loss (max LR fixed at
1e-3 instead of a range test: the layout does not change a step's arithmetic) after one warm-up step, then one `era_utils.engine.evaluate` pass over the preview's
whole test set. Reports images/s of each, the ratio channels_last / NCHW, the device (with any
instruction-set limits it runs under, e.g. ATEN_CPU_CAPABILITY=avx2) and the command, as Markdown.

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/cpu_layout.py \\
        --recipes s10 s7_lite hw2p2 --out benchmarks/cpu_layout_avx2.md
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from era_utils import steps  # noqa: E402
from era_utils.engine import evaluate, train_one_epoch  # noqa: E402
from era_utils.plan import RunPlan, plan_run  # noqa: E402
from era_utils.speed import cpu_kernels_are_avx2, precision_name  # noqa: E402
from era_utils.utils import device_name  # noqa: E402

ORDER = (False, True, True, False)  # channels_last per measurement: ABBA
LR = 1e-3  # the schedule's max LR: a fixed one, as the layout does not change a step's arithmetic


class _FirstBatches:
    """The first `count` batches of a loader, with a length (train_one_epoch's progress bar asks)."""

    def __init__(self, loader: Any, count: int) -> None:
        self.loader, self.count = loader, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.loader), self.count)


def _measure(plan: RunPlan, data: Any, batches: int) -> tuple[float, float]:
    """(training images/s over `batches` steps, test images/s over the whole test set) for `plan`'s layout."""
    torch.manual_seed(0)
    train_loader, test_loader = steps.build_loaders(plan, data)
    model = steps.build_model(plan, data)  # in channels_last when the plan says so
    optimizer, scheduler = steps.optimizer_and_schedule(plan, model, train_loader, lrs=(LR, None))
    criterion = plan.recipe.criterion(model)
    amp_dtype, layout = plan.fast.amp_dtype, plan.fast.channels_last
    train_one_epoch(model, _FirstBatches(train_loader, 1), optimizer, criterion, plan.device, scheduler=scheduler,
                    amp_dtype=amp_dtype, channels_last=layout, verbose=False)  # warm-up: first-call costs
    timed = _FirstBatches(train_loader, batches)
    start = time.perf_counter()
    train_one_epoch(model, timed, optimizer, criterion, plan.device, scheduler=scheduler, amp_dtype=amp_dtype,
                    channels_last=layout, verbose=False)
    train_rate = batches * plan.recipe.batch_size / (time.perf_counter() - start)
    start = time.perf_counter()
    evaluate(model, test_loader, criterion, plan.device, amp_dtype=amp_dtype, channels_last=layout)
    test_rate = len(data.test) / (time.perf_counter() - start)
    return train_rate, test_rate


def main(argv: list[str] | None = None) -> str:
    """Measure each recipe's preview in both layouts; return (and with --out write) the Markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["s10"], help="recipes whose previews to measure")
    parser.add_argument("--batches", type=int, default=30, help="timed training steps per measurement")
    parser.add_argument("--subset", type=int, default=None, help="training images (default: the preview's)")
    parser.add_argument("--test-subset", type=int, default=None, help="test images (default: the preview's)")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    args = parser.parse_args(argv)
    if args.batches < 1:
        parser.error(f"--batches must be at least 1, got {args.batches}")
    rows, device = [], None
    with tempfile.TemporaryDirectory() as scratch:
        for recipe in args.recipes:
            sizes = {k: v for k, v in (("subset", args.subset), ("test_subset", args.test_subset)) if v}
            base = plan_run(recipe, size="preview", out=scratch, verbose=False, device="cpu", **sizes)
            device = device_name(base.device)
            data = steps.load_data(base)
            rates: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for layout in ORDER:
                rates[layout].append(_measure(replace(base, fast=replace(base.fast, channels_last=layout)),
                                              data, args.batches))
                print(f"{recipe} {'channels_last' if layout else 'NCHW'}: train {rates[layout][-1][0]:.1f}, "
                      f"test {rates[layout][-1][1]:.1f} images/s", flush=True)
            rows.append((recipe, base, rates, len(data.test)))
    return _report(args, argv, device or "cpu", rows)


def _report(args: argparse.Namespace, argv: list[str] | None, device: str, rows: list) -> str:
    """The Markdown report: one row per recipe and layout, then the ratios."""
    command = shlex.join(["python", "benchmarks/cpu_layout.py", *(sys.argv[1:] if argv is None else argv)])
    lines = [
        "# NCHW against channels_last on the CPU, through the previews' own steps",
        "",
        f"- device: {device}; torch's CPU kernels: "
        f"{torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends.cpu, 'get_cpu_capability') else '?'}"
        f" (the kit picks channels_last on a CPU when they are AVX2 and it trains in fp32: "
        f"{'yes' if cpu_kernels_are_avx2() else 'no'} here)",
        f"- versions: torch {torch.__version__}, python {platform.python_version()}",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- command: `{command}`",
        f"- each measurement: a fresh model, {args.batches} timed training steps (after 1 warm-up step) of the "
        f"preview's loader with the recipe's optimizer, schedule and loss at max LR {LR:g}, then one test pass "
        "over its test set; order NCHW, channels_last, channels_last, "
        "NCHW; the mean of the two of each layout",
        "",
        "| recipe | model | precision | batch | layout | train images/s | test images/s (images) |",
        "|---|---|---|---:|---|---:|---:|",
    ]
    ratios = []
    for recipe, plan, rates, test_images in rows:
        means = {layout: [statistics.mean(r[i] for r in rates[layout]) for i in (0, 1)] for layout in rates}
        for layout in (False, True):
            train, test = means[layout]
            runs = " / ".join(f"{r[0]:.1f}" for r in rates[layout])
            lines.append(f"| {recipe} | {plan.recipe.model} | {precision_name(plan.fast.amp_dtype)} | "
                         f"{plan.recipe.batch_size} | {'channels_last' if layout else 'NCHW'} | {train:.1f} "
                         f"({runs}) | {test:.1f} ({test_images:,}) |")
        ratios.append(f"- {recipe}: channels_last / NCHW = {means[True][0] / means[False][0]:.2f}x training, "
                      f"{means[True][1] / means[False][1]:.2f}x test pass")
    report = "\n".join(lines + ["", "Ratios (above 1: channels_last is faster):", *ratios]) + "\n"
    print(report)
    if args.out is not None:
        args.out.write_text(report)
    return report


if __name__ == "__main__":
    main()
