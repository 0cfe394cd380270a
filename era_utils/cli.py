"""The `era-utils` command: `era-utils list` and `era-utils run RECIPE [options]`."""
from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from typing import Any, Optional, Sequence

from era_utils.callbacks import CallbackError
from era_utils.errors import BadImageError, NoSpaceError
from era_utils.recipes import RECIPES
from era_utils.settings import Whole, add_run_options, from_args, machine_path, run_command, shareable_command

# What a user's input can cause: the kit raises these with a message naming the input and the fix.
# Anything else is a bug in the kit and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
               ImportError, CallbackError, NoSpaceError, BadImageError)


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
    add_run_options(run)  # one option per declared run setting (era_utils.settings)
    sizes = run.add_mutually_exclusive_group()
    sizes.add_argument("--preview", action="store_const", const="preview", dest="size", default="full",
                       help="the recipe's preview: Fashion-MNIST, minutes on a 2-core CPU, and the model learns")
    sizes.add_argument("--quick", action="store_const", const="quick", dest="size",
                       help="CI's smoke run: a few hundred Fashion-MNIST images, one epoch, on the CPU")
    run.add_argument("--seeds", type=Whole(1).parse, default=1,
                     help="run N seeds (SEED, SEED+1, ...), each in OUT/seed_S; OUT/report.md gives their mean and spread")
    run.add_argument("--debug", action="store_true", help="on an error, show the traceback too")
    return parser


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
        m = check_again(folder)
        statuses = [c["status"] for c in m["checks"]]
        print(f"{folder}: {statuses.count('pass')} pass, {statuses.count('fail')} fail, "
              f"{len(statuses) - statuses.count('pass') - statuses.count('fail')} not checked; report.md rewritten")
    return 0


def _check_images(folder: str) -> int:
    from era_utils.data import find_bad_images

    bad = find_bad_images(folder)
    for path, why in bad:
        print(f"{path}: {why}")
    print(f"{len(bad)} image(s) under {folder} cannot be read" + (": delete or replace them" if bad else ""))
    return 1 if bad else 0


def _compare(args: argparse.Namespace) -> int:
    from era_utils.compare import compare_runs, comparison_table, write_comparison

    rows = compare_runs(args.runs)
    print(comparison_table(rows, links_from=args.links_from))
    if args.out:
        runs = ["RUN_DIR" if machine_path(run) else run for run in args.runs]  # no machine's folders recorded
        argv = ["compare", *runs, "--out", args.out] + (["--title", args.title] if args.title != "Runs side by side"
                                                        else [])
        folder = write_comparison(rows, args.out, shareable_command(argv), args.title)
        print(f"comparison.md, comparison.json and comparison.png in {folder}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    tools = {"list": _list, "compare": lambda: _compare(args), "check-images": lambda: _check_images(args.folder),
             "recheck": lambda: _recheck(args.runs)}
    if args.command in tools:
        try:
            return tools[args.command]() or 0
        except USER_ERRORS as err:  # a folder that is not a run, an unreadable one: a message, not a trace
            print(f"era-utils: error: {err}", file=sys.stderr)
            return 2

    from era_utils import distributed
    from era_utils.runner import run_recipe, run_seeds
    from era_utils.plan import plan_run

    if not args.fast and args.loader == "gpu":
        parser.error("--classic augments per image on CPU workers; drop --loader gpu")
    # The launcher checks the plan, then waits while the processes train: it must not start CUDA (the
    # precision "auto" asks the GPU), or its context would hold memory on GPU 0 all along.
    launching = (args.processes or 1) > 1 and not distributed.launched()
    try:
        settings = from_args(args, amp=args.amp or ("off" if launching else None))  # processes None: torchrun's or 1
        plan = plan_run(args.recipe, size=args.size, settings=settings)
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
