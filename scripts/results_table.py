"""Print the results table (markdown) from results/*/metrics.json, for README.md and results/README.md.

Usage: python scripts/results_table.py [results_dir]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = ["s7", "s7_lite", "s10", "hw2p2"]


def main(root: str = "results") -> None:
    rows = []
    for path in sorted(Path(root).glob("*/metrics.json"), key=lambda p: (ORDER + [p.parent.name]).index(p.parent.name)):
        m = json.loads(path.read_text())
        acc = "-" if m["final_test_acc"] is None else f"{m['final_test_acc']:.2f}%"
        rows.append(
            f"| {m['recipe']} | {m['model']} | {m['params']:,} | {m['dataset']} ({m['train_images']:,} / "
            f"{m['test_images']:,}) | {m['epochs']} | {acc} | {m['train_seconds'] / 60:.1f} min "
            f"({m['wall_seconds'] / 60:.1f} min) | {m['device_name']}, {m['amp']} | {m['date'][:10]} |"
        )
    print("| recipe | model | params | dataset (train / test images) | epochs | test accuracy | "
          "training (whole run) | device, precision | date |")
    print("|---|---|---:|---|---:|---:|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main(*sys.argv[1:])
