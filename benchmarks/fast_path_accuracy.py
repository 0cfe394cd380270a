"""Does the fast path train as well as the classic one? The S10 recipe on real data, both paths, several seeds.

Runs the project's own command once per (seed, path), each in a fresh process:

    classic  era-utils run s10 --classic ...            albumentations DataLoader workers, fp32, eager
    fast     era-utils run s10 --amp <fast-amp> ...      GPULoader (batched augmentation on the
             device), bf16 autocast; on CUDA also channels_last and torch.compile (fit's defaults)

with the same data, epochs, max LR (fixed with --lr, so the LR range test's own noise stays out of
the comparison) and seed, then reads each run's metrics.json. The seed spread within a path is the
noise; the verdict "within noise" means the two paths' mean final test accuracies differ by at most
two standard errors of that difference (sqrt(s_classic^2/n + s_fast^2/n)). Writes a markdown table
(--out) and the raw numbers (--json); each run's figures stay in --runs-dir.

On the CPU the fast path is the loader and the precision (channels_last and compile are CUDA-only),
which is what can change the numbers; on a GPU it is the whole fast path.

    # CPU, 20,000 Fashion-MNIST training images, full 10,000-image test set, 2 epochs, 3 seeds:
    python benchmarks/fast_path_accuracy.py --subset 20000 --epochs 2 --seeds 0,1,2 \\
        --out benchmarks/fast_path_accuracy_cpu.md
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from era_utils.settings import run_command as era_utils_run  # noqa: E402

PATHS = ("classic", "fast")


def run_command(args: argparse.Namespace, path: str, seed: int, out: Path) -> list[str]:
    """The `era-utils run` argument list for one (path, seed), made by the kit's own `run_command`."""
    settings = dict(dataset=args.dataset, epochs=args.epochs, lr=args.lr, seed=seed, out=str(out), verbose=False,
                    data_dir=args.data_dir, subset=args.subset, test_subset=args.test_subset, device=args.device)
    settings |= dict(fast=False, num_workers=args.classic_workers) if path == "classic" else dict(amp=args.fast_amp)
    return era_utils_run(args.recipe, **settings)[1:]


def summarise(runs: list[dict]) -> dict:
    """Mean and sample std of the final test accuracy per path, the difference and its noise level."""
    stats: dict = {}
    for path in PATHS:
        accs = [r["final_test_acc"] for r in runs if r["path"] == path]
        if accs:
            stats[path] = {"n": len(accs), "mean": statistics.fmean(accs),
                           "std": statistics.stdev(accs) if len(accs) > 1 else float("nan"),
                           "train_seconds": statistics.fmean(r["train_seconds"] for r in runs if r["path"] == path)}
    if all(p in stats for p in PATHS):
        c, f = stats["classic"], stats["fast"]
        diff = f["mean"] - c["mean"]
        se = math.sqrt(c["std"] ** 2 / c["n"] + f["std"] ** 2 / f["n"])
        stats["difference"] = {"fast_minus_classic": diff, "standard_error": se,
                               "within_noise": bool(abs(diff) <= 2 * se) if not math.isnan(se) else None}
    return stats


def render(header: dict, runs: list[dict], stats: dict) -> str:
    lines = ["# Fast path vs classic path: test accuracy of the S10 recipe on real data", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", "| seed | path | final test acc % | test acc % per epoch | train s | loader | amp |",
              "|---:|---|---:|---|---:|---|---|"]
    for r in sorted(runs, key=lambda r: (r["seed"], r["path"])):
        per_epoch = ", ".join(f"{a:.2f}" for a in r["test_acc"])
        lines.append(f"| {r['seed']} | {r['path']} | {r['final_test_acc']:.2f} | {per_epoch} | "
                     f"{r['train_seconds']:.0f} | {r['loader']} | {r['amp']} |")
    lines += ["", "| path | runs | mean final test acc % | std (seeds) | mean train s |", "|---|---:|---:|---:|---:|"]
    for path in PATHS:
        if path in stats:
            s = stats[path]
            lines.append(f"| {path} | {s['n']} | {s['mean']:.2f} | {s['std']:.2f} | {s['train_seconds']:.0f} |")
    if "difference" in stats:
        d = stats["difference"]
        verdict = {True: "**within noise**", False: "**NOT within noise**", None: "undecided (one seed)"}
        lines += ["", f"Fast minus classic: {d['fast_minus_classic']:+.2f} points; standard error of the "
                  f"difference {d['standard_error']:.2f}: {verdict[d['within_noise']]} (|difference| <= 2 SE)."]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="s10")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data-dir", help="dataset folder (default: the kit's)")
    parser.add_argument("--subset", type=int, help="training images (stratified); default all")
    parser.add_argument("--test-subset", type=int, default=10_000, help="test images (default 10,000: all)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3, help="max LR of One Cycle, the same for both paths")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--device", help="cpu or cuda (default: the best available)")
    parser.add_argument("--fast-amp", default="bf16", help="precision of the fast path (default bf16)")
    parser.add_argument("--classic-workers", type=int, default=2,
                        help="classic path's DataLoader workers (2 as on Colab; more only shortens the run)")
    parser.add_argument("--runs-dir", default="runs/fast_path_accuracy", help="each run's output folder")
    parser.add_argument("--out", help="markdown report")
    parser.add_argument("--json", help="raw numbers")
    parser.add_argument("--note", default="", help="a line about the conditions, for the report")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]

    runs: list[dict] = []
    started = datetime.datetime.now(datetime.timezone.utc)

    def write_report() -> tuple[str, dict]:
        header = {
            "command": "python benchmarks/" + Path(__file__).name + " "
                       + shlex.join(argv if argv is not None else sys.argv[1:]),
            "date": f"{started:%Y-%m-%d %H:%M} to {datetime.datetime.now(datetime.timezone.utc):%H:%M} UTC",
            "device": runs[0]["device"] if runs else "-",
            "versions": f"torch {runs[0]['torch'] if runs else '-'}, python {platform.python_version()}, "
                        f"{os.cpu_count()} CPU cores",
            "data": f"{args.dataset}, {args.subset or 'all'} training images, {args.test_subset} test images",
            "recipe": f"{args.recipe}, {args.epochs} epoch(s), max LR {args.lr:g} (fixed; no range test), "
                      f"seeds {args.seeds}; classic path with {args.classic_workers} DataLoader workers",
        }
        if args.note:
            header["note"] = args.note
        if len(runs) < len(seeds) * len(PATHS):
            header["status"] = f"{len(runs)} of {len(seeds) * len(PATHS)} runs done"
        stats = summarise(runs)
        report = render(header, runs, stats)
        if args.out:
            Path(args.out).write_text(report)
        if args.json:
            Path(args.json).write_text(json.dumps({"header": header, "runs": runs, "stats": stats}, indent=1) + "\n")
        return report, stats

    # This checkout first; keep what was on the path (the GPU machine's carried wheels live there).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for seed in seeds:
        for path in PATHS:  # interleaved, so a change in machine load hits both paths alike
            out = Path(args.runs_dir) / f"{path}_seed{seed}"
            cmd = [sys.executable, "-m", "era_utils.cli"] + run_command(args, path, seed, out)
            print(f"[{time.strftime('%H:%M:%S')}] {path}, seed {seed}: era-utils {shlex.join(cmd[3:])}", flush=True)
            subprocess.run(cmd, check=True, cwd=ROOT, env=env)
            metrics = json.loads((out / "metrics.json").read_text())
            history = json.loads((out / "history.json").read_text())
            runs.append({"seed": seed, "path": path, "final_test_acc": metrics["final_test_acc"],
                         "test_acc": history["test_acc"], "train_seconds": metrics["train_seconds"],
                         "loader": metrics["loader"], "amp": metrics["amp"], "device": metrics["device_name"],
                         "torch": metrics["torch"], "command": metrics["command"]})
            print(f"    final test accuracy {metrics['final_test_acc']:.2f}%, "
                  f"training {metrics['train_seconds']:.0f} s", flush=True)
            write_report()  # after every run: a run cut short by a time limit keeps what it measured

    report, stats = write_report()
    print(report)
    return stats


if __name__ == "__main__":
    main()
