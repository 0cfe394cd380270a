"""Print the results table (Markdown) from results/*/metrics.json, each row linking its report.md.

For README.md and results/README.md; every number comes from a run's own metrics.json.

Usage: python scripts/results_table.py [results_dir] [folder the links start from (default: its parent)]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = ["s7", "s7_lite", "s10", "hw2p2"]


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def row(folder: Path, link_root: Path) -> str:
    """One table row for the run in `folder` (its metrics.json and report.md)."""
    m = json.loads((folder / "metrics.json").read_text())
    passed = sum(c["status"] == "pass" for c in m["checks"])
    failed = sum(c["status"] == "fail" for c in m["checks"])
    unchecked = len(m["checks"]) - passed - failed
    verification = f"; AUC {m['verification']['auc']:.3f}" if m.get("verification") else ""
    report = (folder / "report.md").relative_to(link_root).as_posix()
    return (f"| [{m['recipe']}]({report}) | {m['size']} | {m['model']} | {m['dataset_title']} "
            f"({m['train_images']:,} / {m['test_images']:,}) | {m['epochs']} | **{m['final_test_acc']:.2f}%**"
            f"{verification} | {_minutes(m['wall_seconds'])} | {m['device_name']}, {m['precision']} | "
            f"{passed} pass, {failed} fail, {unchecked} not checked | {m['date'][:10]} |")


def table(root: Path, link_root: Path) -> str:
    """The table of every run under `root`, in the assignments' order."""
    folders = sorted((p.parent for p in root.glob("*/metrics.json")),
                     key=lambda p: (ORDER + [p.name]).index(p.name) if p.name in ORDER else len(ORDER))
    lines = ["| recipe (report) | size | model | data (train / test images) | epochs | test accuracy | "
             "whole run | device, precision | checklist | date |",
             "|---|---|---|---|---:|---:|---|---|---|---|"]
    return "\n".join(lines + [row(folder, link_root) for folder in folders])


def main(root: str = "results", links_from: str | None = None) -> None:
    print(table(Path(root), Path(links_from) if links_from is not None else Path(root).parent))


if __name__ == "__main__":
    main(*sys.argv[1:])
