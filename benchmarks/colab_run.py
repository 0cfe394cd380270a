"""The Colab run, side by side: `era-utils run` folders of one recipe made in several precisions, with
torch.compile on and off (benchmarks/gpu_colab.sh makes them on a lent GPU under `taskset -c 0,1`, Colab's
two cores), as one table of where each run's time went, and what compiling cost against what it saved.

    python benchmarks/colab_run.py RUN_DIR... --out benchmarks/colab_run_gpu.md [--json ...] [--note ...]

Every number is read from the runs' own metrics.json and history.json: the whole run and its split
(setup, LR range test, training, analysis), the first epoch (which compiles) against the median of the
others, test accuracy, fp16's skipped steps, the device, cores, commit and date.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Optional

COLUMNS = ["run", "precision", "compile", "cores", "whole run s", "setup s", "range test s", "training s",
           "first epoch s", "later epochs s (median)", "compile cost s", "analysis s", "test acc %",
           "fp16 skipped steps"]


def read_run(folder: Path) -> dict[str, Any]:
    """One run's row: where its time went, read from its metrics.json and history.json."""
    metrics_file = folder / "metrics.json"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{folder} holds no metrics.json: give folders `era-utils run` wrote (--out)")
    m = json.loads(metrics_file.read_text())
    history = json.loads((folder / "history.json").read_text())
    epochs = history.get("epoch_times") or []
    later = statistics.median(epochs[1:]) if len(epochs) > 1 else None
    seconds = m.get("seconds") or {}
    return {
        "run": folder.name, "precision": m["precision"], "compile": m["compile"], "cores": m.get("cpu_cores"),
        "whole run s": m.get("wall_seconds"),
        "setup s": seconds.get("setup"), "range test s": seconds.get("range_test"),
        "training s": seconds.get("training"), "first epoch s": epochs[0] if epochs else None,
        "later epochs s (median)": later,
        # what the first epoch took beyond the others: compiling, on a compiled run (cuDNN's autotuning too)
        "compile cost s": epochs[0] - later if later is not None else None,
        "analysis s": seconds.get("analysis"), "test acc %": m.get("final_test_acc"),
        "fp16 skipped steps": m.get("fp16_skipped_steps"), "epochs": len(epochs),
        "device": m.get("device_name"), "commit": m.get("commit"), "date": m.get("date"), "command": m.get("command"),
    }


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def compile_verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """For each precision run with compile on and off: what compiling cost, what it saved per epoch, and the
    run length (epochs) from which it pays."""
    lines = []
    for precision in sorted({r["precision"] for r in rows}):
        on = next((r for r in rows if r["precision"] == precision and r["compile"]), None)
        off = next((r for r in rows if r["precision"] == precision and not r["compile"]), None)
        if not (on and off and on["later epochs s (median)"] and off["later epochs s (median)"]):
            continue
        saved = off["later epochs s (median)"] - on["later epochs s (median)"]
        cost = on["first epoch s"] - off["first epoch s"]  # the compiled first epoch against an eager one
        pays = f"pays from {cost / saved:.0f} epochs on" if saved > 0 else "never pays (no epoch is faster)"
        lines.append(f"- {precision}: compiling cost {cost:.1f} s in the first epoch and saved {saved:.2f} s per "
                     f"later epoch: {pays}; training {on['training s']:.1f} s compiled against {off['training s']:.1f} s "
                     f"eager over {on['epochs']} epochs.")
    return lines


def render(rows: list[dict[str, Any]], note: Optional[str]) -> str:
    """The markdown page: the table, the compile verdicts, and how each run was made."""
    first = rows[0]
    lines = ["# The Colab run: precision and torch.compile, timed", "",
             f"Device: {first['device']}; commit {first['commit']}; {first['date']}."
             + (f" {note}" if note else ""), "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    verdicts = compile_verdicts(rows)
    lines += ["", "Compile cost: the first epoch's time beyond the median of the others (compiling, and cuDNN's "
              "autotuning on a GPU). Each run's time split is its metrics.json 'seconds'.", ""]
    lines += (["What compiling bought:", ""] + verdicts + [""]) if verdicts else []
    lines += ["The runs:", ""] + [f"- {r['run']}: `{r['command']}`" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="folders era-utils run wrote (--out)")
    parser.add_argument("--out", help="write the markdown table here")
    parser.add_argument("--json", help="also write the rows as JSON")
    parser.add_argument("--note", help="a line about the conditions (the machine, what shared it)")
    args = parser.parse_args(argv)
    try:
        rows = [read_run(Path(folder)) for folder in args.runs]
    except FileNotFoundError as err:
        print(f"colab_run.py: error: {err}", file=sys.stderr)
        return 2
    page = render(rows, args.note)
    print(page)
    if args.out:
        Path(args.out).write_text(page)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
