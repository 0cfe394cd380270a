"""The `era-utils` command: `era-utils list` and `era-utils run RECIPE [options]`."""
from __future__ import annotations

import argparse
import math
import re
import shlex
import subprocess
import sys
from typing import Any, Optional, Sequence

from era_utils.callbacks import CallbackError
from era_utils.choices import LOADERS, LOSSES, RUN_DATASETS
from era_utils.errors import BadImageError, NoSpaceError
from era_utils.recipes import RECIPES
from era_utils.speed import AMP_MODES

# What a user's input can cause: the kit raises these with a message naming the input and the fix.
# Anything else is a bug in the kit and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
               ImportError, CallbackError, NoSpaceError, BadImageError)
# plan_run's settings that `era-utils run` takes: the option for each (a value), and the switches
OPTIONS = {"dataset": "--dataset", "data_dir": "--data-dir", "subset": "--subset", "test_subset": "--test-subset",
           "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed", "loss": "--loss",
           "tta": "--tta", "device": "--device",
           "loader": "--loader", "amp": "--amp", "num_workers": "--workers", "out": "--out",
           "dev_pairs": "--dev-pairs", "test_pairs": "--test-pairs", "pairs_root": "--pairs-root", "log": "--log",
           "processes": "--nproc"}
SWITCHES = {"download": "--download", "resume": "--resume", "sync_batchnorm": "--sync-batchnorm"}
# Path options as a report records them when given an absolute path (the machine's own folders): a
# named placeholder, as the README writes full-length commands. Relative paths are kept as typed.
PATH_PLACEHOLDERS = {"--data-dir": "DATA", "--out": "OUT", "--dev-pairs": "DEV_PAIRS", "--test-pairs": "TEST_PAIRS",
                     "--pairs-root": "PAIRS_ROOT"}


def _whole_number(low: int, words: str) -> Any:
    """An argparse type: a whole number from `low`, else an error saying what was expected (`words`)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {words}, got {value}")
        return value
    return parse


_positive_int = _whole_number(1, "a positive integer")
_non_negative_int = _whole_number(0, "a whole number, 0 or more")


def _seed(text: str) -> int:
    value = _non_negative_int(text)
    if value >= 2**32:  # numpy's seeds are 32-bit
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to {2**32 - 1}, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):  # nan > 0 is False too
        raise argparse.ArgumentTypeError(f"expected a positive, finite number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="era-utils",
        description="Run an assignment recipe end to end (data, LR range test, training, figures).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{list,run,compare,check-images,recheck}")
    sub.add_parser("list", help="list the recipes and the models")
    compare = sub.add_parser("compare", help="runs side by side: a table of what each run measured (mean and spread "
                             "over its seeds) and their curves on one figure")
    compare.add_argument("runs", nargs="+", metavar="RUN_DIR", help="folders era-utils run wrote (--out), "
                         "or of --seeds runs")
    compare.add_argument("--out", help="also write comparison.md, comparison.json and comparison.png there")
    compare.add_argument("--title", default="Runs side by side", help="the figure's and comparison.md's title")
    compare.add_argument("--links-from", metavar="DIR", help="link each run's name to its report.md, relative to DIR "
                         "(the folder of the Markdown file the table goes in)")
    check = sub.add_parser("check-images", help="list every image under a folder that cannot be read (run it on "
                           "HW2P2's face folders before a long training)")
    check.add_argument("folder", help="the folder to scan, subfolders included")
    recheck = sub.add_parser("recheck", help="check finished runs against their assignments again with this kit, from "
                             "their own files (metrics.json, history.json), and rewrite their report.md")
    recheck.add_argument("runs", nargs="+", metavar="RUN_DIR", help="folders era-utils run wrote (--out)")
    run = sub.add_parser("run", help="run a recipe and write its figures and metrics to --out")
    run.add_argument("recipe", choices=list(RECIPES), help="the assignment recipe")
    run.add_argument("--dataset", choices=RUN_DATASETS,
                     help="dataset (default: the recipe's: cifar10; faces for hw2p2, from --data-dir)")
    run.add_argument("--data-dir", help="folder with the dataset (default: ./data for CIFAR-10; "
                     "Debian's /usr/share/datasets/fashion-mnist for Fashion-MNIST; HW2P2's unzipped "
                     "Kaggle folder with train/ dev/ test/ for faces)")
    run.add_argument("--download", action="store_true", help="download the dataset if missing (Colab)")
    run.add_argument("--epochs", type=_positive_int, help="override the recipe's epochs")
    run.add_argument("--batch-size", type=_positive_int, help="override the recipe's batch size")
    run.add_argument("--lr", type=_positive_float, help="override the recipe's (peak) learning rate; "
                     "turns the LR range test off")
    run.add_argument("--loss", choices=LOSSES,
                     help="training loss (default: the recipe's, cross_entropy): arcface or cosface (a margin head on "
                     "L2-normalised embeddings, s 64 and m 0.5 / 0.35 as in the papers), or center (cross-entropy + "
                     "center loss); for HW2P2's verification")
    run.add_argument("--tta", choices=("none", "flip"),
                     help="hw2p2: flip averages each verification embedding with its mirror image's (default none)")
    run.add_argument("--subset", type=_positive_int,
                     help="train on N images (stratified) and test on max(1000, N/5)")
    run.add_argument("--test-subset", type=_positive_int, help="test on N images")
    run.add_argument("--loader", choices=LOADERS, default="auto",
                     help="gpu: batched augmentation on the device (the data there; HW2P2's face JPEGs "
                     "decoded there); workers: per image on CPU workers (albumentations, or HW2P2's torchvision "
                     "pipeline); auto: gpu on the fast path, but HW2P2 on a CPU reads with workers, faster there "
                     "(default)")
    run.add_argument("--classic", action="store_true",
                     help="turn the fast path off: per-image augmentation on CPU workers, fp32, eager (the fast "
                     "path: data on the device, bf16/fp16, channels_last, torch.compile and fused optimizer on CUDA)")
    sizes = run.add_mutually_exclusive_group()
    sizes.add_argument("--preview", action="store_const", const="preview", dest="size", default="full",
                       help="the recipe's preview: Fashion-MNIST, minutes on a 2-core CPU, and the model learns")
    sizes.add_argument("--quick", action="store_const", const="quick", dest="size",
                       help="CI's smoke run: a few hundred Fashion-MNIST images, one epoch, on the CPU")
    run.add_argument("--amp", choices=AMP_MODES,
                     help="mixed precision (default: bf16 or fp16 on CUDA, bf16 on a CPU that runs it "
                     "natively, fp32 on other CPUs): auto (bf16/fp16 on CUDA, fp32 elsewhere), bf16, fp16, off")
    run.add_argument("--workers", type=_non_negative_int, help="CPU worker processes: the workers loader's, or those reading "
                     "HW2P2's face files for the gpu loader (default 2; 0 with --quick)")
    run.add_argument("--device", help="cuda, cuda:1, mps or cpu (default: the best available)")
    run.add_argument("--seed", type=_seed, help="override the recipe's seed (0 to 4294967295)")
    run.add_argument("--seeds", type=_positive_int, default=1,
                     help="run N seeds (SEED, SEED+1, ...), each in OUT/seed_S; OUT/report.md gives their mean and spread")
    run.add_argument("--out", help="output folder (default: runs/RECIPE)")
    run.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (written at most once a minute, and at the end)")
    run.add_argument("--dev-pairs", help="faces: the labelled verification pairs file (a b label per line)")
    run.add_argument("--test-pairs", help="faces: the unlabelled verification pairs file (a b per line)")
    run.add_argument("--pairs-root", help="faces: the folder the pairs files' paths are relative to")
    run.add_argument("--log", metavar="LOGGERS",
                     help="also log to csv (OUT/log.csv), tensorboard (OUT/tensorboard/) and/or wandb (a W&B run; "
                     "WANDB_MODE=offline keeps it in OUT/wandb/), comma-separated: e.g. --log csv,tensorboard")
    run.add_argument("--nproc", type=_positive_int,
                     help="train in N processes with DistributedDataParallel, one per GPU (--device cpu: N processes "
                     "sharing the CPU), started by torch's launcher (torchrun); the recipe's batch is split over "
                     "them. Kaggle's two T4s: --nproc 2. Default 1; started by torchrun, torchrun's count")
    run.add_argument("--sync-batchnorm", action="store_true",
                     help="with --nproc on GPUs: BatchNorm statistics over every process's images (SyncBatchNorm)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--debug", action="store_true", help="on an error, show the traceback too")
    return parser


def run_command(recipe: str, *, size: str = "full", **settings: Any) -> list[str]:
    """The `era-utils run` command line of the run `plan_run(recipe, size=size, **settings)` plans (the
    same names; a setting left at None or False is left out)."""
    if size not in ("full", "preview", "quick"):
        raise ValueError(f"size must be 'full', 'preview' or 'quick', got {size!r}")
    argv = ["era-utils", "run", recipe] + ([] if size == "full" else [f"--{size}"])
    for name, value in settings.items():
        if name in SWITCHES:
            argv += [SWITCHES[name]] if value else []
        elif name in OPTIONS:
            argv += [] if value is None else [OPTIONS[name], str(value)]
        else:
            raise TypeError(f"era-utils run has no option for {name!r}; it takes: {', '.join(OPTIONS | SWITCHES)}")
    return argv


def shareable_command(argv: Sequence[str]) -> str:
    """`era-utils ARGV` as reports and metrics.json record it: an absolute (or ~) path given to a path
    option becomes that option's placeholder (`--data-dir DATA`, `--out OUT`, ...), so a committed
    report names no folder of the machine that made it; everything else as typed."""
    shown, argv = [], list(argv)
    for i, arg in enumerate(argv):
        option, equals, value = arg.partition("=")
        if equals and option in PATH_PLACEHOLDERS and _machine_path(value):
            arg = f"{option}={PATH_PLACEHOLDERS[option]}"
        elif i and argv[i - 1] in PATH_PLACEHOLDERS and _machine_path(arg):
            arg = PATH_PLACEHOLDERS[argv[i - 1]]
        shown.append(arg)
    return "era-utils " + shlex.join(shown)


def _machine_path(value: str) -> bool:
    return value.startswith(("/", "~")) or (len(value) > 2 and value[1:3] in (":\\", ":/"))  # POSIX, ~, C:\


def run_in_processes(recipe: str, nproc: int, **settings: Any) -> None:
    """Run the recipe in `nproc` new processes (`era-utils run RECIPE --nproc N`, DDP, one per GPU) with
    plan_run's `settings`, showing its output here: a notebook's way onto several GPUs, since its own
    process must not be one of them. Raises RuntimeError if the run fails."""
    argv = run_command(recipe, processes=nproc, **settings)
    print("$", shlex.join(argv), flush=True)
    # Output through this process's sys.stdout: a notebook shows that, not what a child writes to the fd.
    child = subprocess.Popen([sys.executable, "-m", "era_utils", *argv[1:]], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    for chunk in iter(lambda: child.stdout.read1(4096), b""):
        sys.stdout.write(chunk.decode(errors="replace"))
        sys.stdout.flush()
    if child.wait():
        raise RuntimeError(f"`{shlex.join(argv)}` stopped with exit status {child.returncode}: its message is above")


def _list() -> None:
    from era_utils.models import list_models, model_info

    print("Recipes:")
    for name, recipe in RECIPES.items():
        print(f"  {name:<9} {recipe.title}  [model {recipe.model}, {recipe.epochs} epochs]")
    print("Models:")
    for name in list_models():
        info = model_info(name)
        print(f"  {name:<14} {info.family:<14} input {'x'.join(map(str, info.input_size))}")


def _message(err: BaseException) -> str:
    """An error's message; one raised in a DataLoader worker carries the worker's traceback as its text
    (torch re-raises it that way): its last line is the message."""
    text = str(err)
    if "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


def _recheck(folders: Sequence[str]) -> int:
    from era_utils.report import check_again

    for folder in folders:
        try:
            m = check_again(folder)
        except USER_ERRORS as err:
            print(f"era-utils: error: {err}", file=sys.stderr)
            return 2
        statuses = [c["status"] for c in m["checks"]]
        print(f"{folder}: {statuses.count('pass')} pass, {statuses.count('fail')} fail, "
              f"{len(statuses) - statuses.count('pass') - statuses.count('fail')} not checked; report.md rewritten")
    return 0


def _check_images(folder: str) -> int:
    from era_utils.data import find_bad_images

    try:
        bad = find_bad_images(folder)
    except USER_ERRORS as err:
        print(f"era-utils: error: {err}", file=sys.stderr)
        return 2
    for path, why in bad:
        print(f"{path}: {why}")
    print(f"{len(bad)} image(s) under {folder} cannot be read" + (": delete or replace them" if bad else ""))
    return 1 if bad else 0


def _compare(args: argparse.Namespace) -> int:
    from era_utils.compare import compare_runs, comparison_table, write_comparison

    try:
        rows = compare_runs(args.runs)
    except USER_ERRORS as err:
        print(f"era-utils: error: {err}", file=sys.stderr)
        return 2
    print(comparison_table(rows, links_from=args.links_from))
    if args.out:
        runs = ["RUN_DIR" if _machine_path(run) else run for run in args.runs]  # no machine's folders recorded
        argv = ["compare", *runs, "--out", args.out] + (["--title", args.title] if args.title != "Runs side by side"
                                                        else [])
        print(f"comparison.md, comparison.json and comparison.png in {write_comparison(rows, args.out, shareable_command(argv), args.title)}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        _list()
        return 0
    if args.command == "compare":
        return _compare(args)
    if args.command == "check-images":
        return _check_images(args.folder)
    if args.command == "recheck":
        return _recheck(args.runs)

    from era_utils import distributed
    from era_utils.runner import run_recipe, run_seeds
    from era_utils.steps import plan_run

    if args.classic and args.loader == "gpu":
        parser.error("--classic augments per image on CPU workers; drop --loader gpu")
    # The launcher checks the plan, then waits while the processes train: it must not start CUDA (the
    # precision "auto" asks the GPU), or its context would hold memory on GPU 0 all along.
    launching = (args.nproc or 1) > 1 and not distributed.launched()
    try:
        plan = plan_run(
            args.recipe, size=args.size, dataset=args.dataset, data_dir=args.data_dir,
            download=args.download, subset=args.subset, test_subset=args.test_subset, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, seed=args.seed, loss=args.loss, tta=args.tta,
            device=args.device, loader=args.loader,
            fast=not args.classic, amp=args.amp or ("off" if launching else None), num_workers=args.workers,
            out=args.out, resume=args.resume,
            verbose=not args.quiet, dev_pairs=args.dev_pairs, test_pairs=args.test_pairs,
            pairs_root=args.pairs_root, log=args.log,
            processes=args.nproc,  # None: torchrun's WORLD_SIZE, or 1
            sync_batchnorm=args.sync_batchnorm)
        if launching:  # the plan is sound (checked above, once): start the processes, each running this command
            return distributed.launch(plan.processes, argv, cpu=plan.device.type == "cpu")
        command = shareable_command(argv)
        if args.seeds > 1:
            run_seeds(plan, args.seeds, command=command)
        else:
            run_recipe(plan, command=command)
        distributed.close(finished=True)
    except KeyboardInterrupt as err:  # Ctrl-C: where it stopped and how to carry on, not autograd's traceback
        if args.debug:
            raise
        print(f"era-utils: {err}" if str(err) else "era-utils: interrupted (Ctrl-C); run the same command with "
              "--resume to carry on from the last checkpoint, if one was written", file=sys.stderr)
        return 130
    except USER_ERRORS as err:  # bad input, data folder or output folder: a message, not a trace
        if args.debug:
            raise
        who = f" (process {distributed.launch_rank()})" if distributed.launch_rank() else ""
        print(f"era-utils{who}: error: {_message(err)}\n(--debug shows where it happened)", file=sys.stderr)
        return 2
    except RuntimeError as err:
        if args.debug or not distributed.lost_peer(err):
            raise
        # another process died: this one's collective broke, and torchrun names the one that died
        why = re.sub(r"^\[[^\]]*\]\s*", "", str(err).splitlines()[0]).split(". ")[0]  # no "[.../pair.cc:561]"
        print(f"era-utils (process {distributed.launch_rank()}): stopped: it lost the other processes of the run "
              f"({why})", file=sys.stderr)
        return distributed.LOST_PEER_STATUS
    finally:
        distributed.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
