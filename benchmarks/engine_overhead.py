"""Host time the engine adds to each training step, beyond the step itself.

On a fast GPU the host must queue each step's kernels faster than the GPU runs them (S10 at 120,000
images/s is about 4 ms a step), so the engine's own per-step work (batch checks, running sums kept on
the device, LR bookkeeping, progress bar) has to stay far below that. Measured on a tiny model on the
CPU, where a step costs little besides the Python around it:

    bare     for x, y in batches: zero_grad; loss = criterion(model(x), y); backward; step; scheduler.step
    engine   era_utils.engine.train_one_epoch over the same batches (verbose=False, then with its
             progress bar written to /dev/null)

Each variant runs --repeats times over --steps pre-made batches; the median is reported, in one run.

    python benchmarks/engine_overhead.py --out benchmarks/engine_overhead_cpu.md
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from era_utils.engine import train_one_epoch  # noqa: E402
from era_utils.recipes import get_recipe  # noqa: E402
from era_utils.utils import device_name  # noqa: E402

RECIPE = get_recipe("s10").override(epochs=1)  # Adam + One Cycle, built by the recipe as a run builds it


def setup(steps: int, batch: int) -> tuple[nn.Module, torch.optim.Optimizer, object, list]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10))
    opt, sched = RECIPE.configure_optimizers(model, steps_per_epoch=steps, max_lr=1e-3)
    batches = [(torch.randn(batch, 3, 4, 4), torch.randint(0, 10, (batch,))) for _ in range(steps)]
    return model, opt, sched, batches


def bare(steps: int, batch: int) -> float:
    model, opt, sched, batches = setup(steps, batch)
    criterion = nn.CrossEntropyLoss()
    model.train()
    start = time.perf_counter()
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        loss = criterion(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
    return (time.perf_counter() - start) / steps


def engine(steps: int, batch: int, progress: bool) -> float:
    model, opt, sched, batches = setup(steps, batch)
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        start = time.perf_counter()
        train_one_epoch(model, batches, opt, nn.CrossEntropyLoss(), "cpu", scheduler=sched, verbose=progress)
        return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier timings)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    variants = {"bare loop": lambda: bare(args.steps, args.batch),
                "train_one_epoch": lambda: engine(args.steps, args.batch, False),
                "train_one_epoch + progress bar": lambda: engine(args.steps, args.batch, True)}
    for run in variants.values():
        run()  # warm-up: allocator, first-call paths
    times = {name: [] for name in variants}
    for _ in range(args.repeats):  # interleaved, so a change in machine load hits every variant alike
        for name, run in variants.items():
            times[name].append(run())
    median = {name: statistics.median(t) * 1e6 for name, t in times.items()}  # microseconds per step

    base = median["bare loop"]
    lines = ["# Engine overhead per training step (host time)", "",
             f"- command: python benchmarks/engine_overhead.py {shlex.join(argv if argv is not None else sys.argv[1:])}",
             f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"- device: {device_name(torch.device('cpu'))}, torch {torch.__version__}, python "
             f"{platform.python_version()}, {args.threads} torch thread(s)",
             f"- work: a Linear(48, 10) model, batch {args.batch}, Adam + One Cycle, {args.steps} steps x "
             f"{args.repeats} repeats (median)"]
    if args.note:
        lines.append(f"- note: {args.note}")
    lines += ["", "| variant | us per step | added over the bare loop, us |", "|---|---:|---:|"]
    for name, us in median.items():
        lines.append(f"| {name} | {us:,.0f} | {us - base:+,.0f} |")
    lines.append("")
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report)
    return report


if __name__ == "__main__":
    main()
