"""Runs side by side: `era-utils compare RUN_DIR...`, or `compare_runs([...])` from Python.

A run folder is what `era-utils run` writes (metrics.json, history.json and, for HW2P2, roc.json), or
the folder of a `--seeds N` run, whose seed_S folders are runs. Each folder becomes one row: what ran
(recipe, data, size, epochs, loss, seeds) and what it measured (test accuracy; for HW2P2 the
verification AUC and EER, with and without flip averaging), each as mean, spread and range over its
seeds, with its time, device and commit. The figure puts their test-accuracy curves and, when every
run verified pairs, their ROC curves on shared axes.

    rows = compare_runs(["runs/hw2p2_losses/cross_entropy", "runs/hw2p2_losses/arcface"])
    print(comparison_table(rows))
    plot_comparison(rows)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from era_utils.files import write_json, write_text
from era_utils.plots import save_figure

__all__ = ["RunRow", "compare_runs", "comparison_table", "plot_comparison", "read_run", "write_comparison"]


@dataclass
class RunRow:
    """One run folder, its seeds gathered: each list holds one value per seed, in seed order."""

    name: str  # the folder's name, as the table and the legend show it
    path: Path
    metrics: list[dict]  # each seed's metrics.json
    histories: list[dict] = field(default_factory=list)  # each seed's history.json (where written)
    rocs: list[dict] = field(default_factory=list)  # each seed's roc.json (HW2P2)

    def values(self, key: str) -> list[float]:
        """A number of each seed's metrics.json (`verification.auc` reads inside the verification block)."""
        out = []
        for m in self.metrics:
            value: Any = m
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if value is not None:
                out.append(float(value))
        return out

    def first(self, key: str, default: Any = None) -> Any:
        """A setting all seeds share, read from the first seed's metrics.json."""
        return self.metrics[0].get(key, default)

    @property
    def loss(self) -> str:
        """The training loss the run used (cross_entropy for runs made before the loss was a setting)."""
        return (self.first("recipe_settings") or {}).get("loss", "cross_entropy")

    @property
    def seeds(self) -> list[int]:
        return [int((m.get("recipe_settings") or {}).get("seed", 0)) for m in self.metrics]


def read_run(path: str | os.PathLike) -> RunRow:
    """The run (or `--seeds N` run) in folder `path`, or a clear error saying what a run folder holds."""
    path = Path(path)
    top = path / "metrics.json"
    if not top.is_file():
        raise FileNotFoundError(f"{path} holds no metrics.json: give the folder an `era-utils run` wrote (its --out), "
                                "or the folder of a --seeds run")
    summary = json.loads(top.read_text())
    folders = [path / r["folder"] for r in summary["runs"]] if "runs" in summary else [path]
    row = RunRow(path.name, path, [])
    for folder in folders:
        row.metrics.append(json.loads((folder / "metrics.json").read_text()))
        for name, into in (("history.json", row.histories), ("roc.json", row.rocs)):
            if (folder / name).is_file():
                into.append(json.loads((folder / name).read_text()))
    return row


def compare_runs(paths: Sequence[str | os.PathLike]) -> list[RunRow]:
    """One `RunRow` per folder, in the order given."""
    if not paths:
        raise ValueError("compare needs at least one run folder (e.g. era-utils compare runs/s10 runs/s10_bf16)")
    return [read_run(p) for p in paths]


def _spread(values: list[float], digits: int, unit: str = "") -> str:
    """"mean ± sd (min-max)" over seeds; one value as it is; none as "-"."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}{unit}"
    v = np.asarray(values)
    return (f"{v.mean():.{digits}f}{unit} ± {v.std(ddof=1):.{digits}f} "
            f"({v.min():.{digits}f}-{v.max():.{digits}f})")


def _checklist(row: RunRow) -> str:
    """What the runs' reports checked: "14 pass, 0 fail, 3 not checked" (each seed's, where they differ)."""
    counts = []
    for m in row.metrics:
        statuses = [c.get("status") for c in m.get("checks", [])]
        counts.append(f"{statuses.count('pass')} pass, {statuses.count('fail')} fail, "
                      f"{len(statuses) - statuses.count('pass') - statuses.count('fail')} not checked")
    return "-" if not counts else counts[0] if len(set(counts)) == 1 else "; ".join(counts)


def _name(row: RunRow, links_from: Optional[Path]) -> str:
    """The run's name, linking its report.md relative to `links_from` (None: no link)."""
    report = row.path / "report.md"
    if links_from is None or not report.is_file():
        return row.name
    return f"[{row.name}]({Path(os.path.relpath(report.resolve(), Path(links_from).resolve())).as_posix()})"


def _precision(row: RunRow) -> str:
    """How the run computed: its precision, and channels_last where it trained in that layout."""
    return f"{row.first('precision', '?')}" + (", channels_last" if row.first("channels_last") else "")


def comparison_table(rows: Sequence[RunRow], links_from: str | os.PathLike | None = None) -> str:
    """A markdown table of the runs: mean ± standard deviation (min-max) over each run's seeds, what their
    reports checked, and when they ran. `links_from`: each run's name links its report.md from that folder."""
    verified = any(row.values("verification.auc") for row in rows)
    flip = any(row.values("verification.without_flip.auc") for row in rows)
    head = ["run", "recipe", "data (train / test images)", "size, epochs", "loss", "seeds", "test accuracy %"]
    if verified:
        head += ["AUC" + (" (flip)" if flip else ""), "EER" + (" (flip)" if flip else "")]
        head += ["AUC without flip", "EER without flip"] if flip else []
    head += ["whole run", "device, precision", "checklist", "commit", "date"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    links = Path(links_from) if links_from is not None else None
    for row in rows:
        images = f"{row.first('train_images', 0):,} / {row.first('test_images', 0):,}"
        cells = [_name(row, links), row.first("recipe", "?"), f"{row.first('dataset_title', '?')} ({images})",
                 f"{row.first('size', '?')}, {row.first('epochs', '?')}", row.loss, ", ".join(map(str, row.seeds)),
                 _spread(row.values("final_test_acc"), 2)]
        if verified:
            cells += [_spread(row.values("verification.auc"), 4), _spread(row.values("verification.eer"), 3)]
            if flip:
                cells += [_spread(row.values("verification.without_flip.auc"), 4),
                          _spread(row.values("verification.without_flip.eer"), 3)]
        seconds = row.values("wall_seconds")
        cells += [f"{np.mean(seconds) / 60:.1f} min" + (" each" if len(seconds) > 1 else "") if seconds else "-",
                  f"{row.first('device_name', '?')}, {_precision(row)}", _checklist(row),
                  ", ".join(sorted({str(m.get('commit')) for m in row.metrics})),
                  ", ".join(sorted({str(m.get('date', '?'))[:10] for m in row.metrics}))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_comparison(rows: Sequence[RunRow], title: str = "Runs side by side") -> Figure:
    """Test accuracy per epoch of every run (each seed a thin line, their mean a thick one) and, when every
    run verified pairs, their ROC curves (each seed's; the legend gives the mean AUC)."""
    with_roc = all(row.rocs for row in rows)
    fig = Figure(figsize=(11 if with_roc else 6, 4.6), layout="constrained")
    axes = fig.subplots(1, 2 if with_roc else 1, squeeze=False)[0]
    colours = [f"C{i % 10}" for i in range(len(rows))]
    ax = axes[0]
    for row, colour in zip(rows, colours):
        curves = [h["test_acc"] for h in row.histories if h.get("test_acc")]
        for curve in curves:
            ax.plot(range(1, len(curve) + 1), curve, color=colour, lw=0.8, alpha=0.45)
        if curves:
            length = min(len(c) for c in curves)
            mean = np.mean([c[:length] for c in curves], axis=0)
            ax.plot(range(1, length + 1), mean, color=colour, lw=2.2, marker="o",
                    label=f"{row.name}: {mean[-1]:.2f}%" + (f" (mean of {len(curves)})" if len(curves) > 1 else ""))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy per epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if with_roc:
        ax = axes[1]
        for row, colour in zip(rows, colours):
            aucs = [roc["auc"] for roc in row.rocs]
            for k, roc in enumerate(row.rocs):
                ax.plot(roc["fpr"], roc["tpr"], color=colour, lw=1.2, alpha=0.8,
                        label=f"{row.name}: AUC {np.mean(aucs):.4f}" + (
                            f" ± {np.std(aucs, ddof=1):.4f}" if len(aucs) > 1 else "") if k == 0 else None)
        ax.plot([0, 1], [0, 1], ls="--", lw=1, color="grey", label="chance")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        flip = {roc.get("tta") for row in rows for roc in row.rocs} == {"flip"}
        ax.set_title("Verification ROC per seed" + (" (flip-averaged)" if flip else ""))
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    return fig


def write_comparison(rows: Sequence[RunRow], out: str | os.PathLike, command: Optional[str] = None,
                     title: str = "Runs side by side") -> Path:
    """comparison.md (the table, how it was made), comparison.json (every number of the table) and
    comparison.png (`plot_comparison`) in `out`; returns the folder."""
    out = Path(out)
    save_figure(plot_comparison(rows, title), out / "comparison.png")
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    commands = "\n".join(f"- {row.name}: `{row.first('command') or 'era_utils.runner (no command line)'}`, "
                         f"{row.first('date', '?')}" for row in rows)
    write_text(out / "comparison.md", "\n".join([
        f"# {title}", "", comparison_table(rows), "",
        "Each cell: mean ± standard deviation (min-max) over the run's seeds; the whole run's time is per seed.", "",
        "![comparison](comparison.png)", "",
        f"Made by `{command or 'era_utils.compare.write_comparison'}` on {made} from the runs' metrics.json, "
        "history.json and roc.json. The runs:", "", commands, ""]))
    write_json(out / "comparison.json", [{
        "name": row.name, "recipe": row.first("recipe"), "loss": row.loss, "seeds": row.seeds,
        "final_test_acc": row.values("final_test_acc"), "auc": row.values("verification.auc"),
        "eer": row.values("verification.eer"), "auc_without_flip": row.values("verification.without_flip.auc"),
        "eer_without_flip": row.values("verification.without_flip.eer"), "wall_seconds": row.values("wall_seconds"),
        "device_name": row.first("device_name"), "precision": row.first("precision"),
        "channels_last": row.first("channels_last"),
        "commits": sorted({str(m.get("commit")) for m in row.metrics}), "command": row.first("command"),
        "dates": [m.get("date") for m in row.metrics]} for row in rows])
    return out
