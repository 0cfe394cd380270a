"""Make each notebook's .ipynb from its jupytext script in notebooks/, optionally executed, or check them.

The source of a notebook is `notebooks/NAME.py` (jupytext's percent format: `# %%` code cells,
`# %% [markdown]` cells, tags in the cell header); the `.ipynb` beside it is what Colab and GitHub
open. This script is the one way from the first to the second:

    python scripts/build_notebooks.py             # write every .ipynb from its script, no outputs
    python scripts/build_notebooks.py --execute   # also run each one as its preview (ERA_UTILS_SIZE=preview:
                                                  # the recipe on a Fashion-MNIST subset, minutes on a
                                                  # CPU, the model learns) and keep the outputs, as committed
    python scripts/build_notebooks.py --execute --size quick   # CI's smoke run instead (a check, not for committing)
    python scripts/build_notebooks.py --check     # exit 1 if a committed .ipynb's cells differ from
                                                  # its script (outputs are not compared)
    python scripts/build_notebooks.py NAME --execute --size full --param DATASET='"fashion_mnist"' --into OUT
                                                  # parameters injected after the parameters cell, as
                                                  # papermill does; the executed copy written to OUT

Cells keep stable ids ("cell-00", ...), so a rebuilt notebook differs from the committed one only
where its script or its outputs changed.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SIZE_ENV = "ERA_UTILS_SIZE"  # the notebooks' SIZE parameter reads it
# Warnings only the CI kernel prints, with the line that follows each (the source line quoted):
# the CI venv has no ipywidgets, Colab does, so a student never sees this one.
CI_ONLY_WARNINGS = ("TqdmWarning: IProgress not found",)


def scripts() -> list[Path]:
    """The notebook scripts, in name order."""
    return sorted(NOTEBOOKS.glob("*.py"))


def from_script(script: Path) -> nbformat.NotebookNode:
    """The notebook a script describes: its cells, tags and metadata, stable cell ids, no outputs."""
    nb = jupytext.read(script, fmt="py:percent")
    nb.metadata.pop("jupytext", None)  # the pairing lives here, not in the notebook Colab opens
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.validate(nb)
    return nb


def cell_key(nb: nbformat.NotebookNode) -> list[tuple]:
    """What must match between a notebook and its script: each cell's type, source and tags."""
    return [(c.cell_type, c.source, tuple(c.metadata.get("tags", []))) for c in nb.cells]


def stale(script: Path) -> str | None:
    """Why the committed .ipynb of `script` is out of date, or None when its cells match."""
    path = script.with_suffix(".ipynb")
    if not path.is_file():
        return f"{path.relative_to(ROOT)} is missing"
    committed, expected = cell_key(nbformat.read(path, as_version=4)), cell_key(from_script(script))
    if committed == expected:
        return None
    for i, (have, want) in enumerate(zip(committed, expected)):
        if have != want:
            return f"{path.relative_to(ROOT)}: cell {i} differs from {script.name} ({want[0]}: {want[1][:60]!r}...)"
    return f"{path.relative_to(ROOT)} has {len(committed)} cells, {script.name} {len(expected)}"


def _overwrite_line(line: str) -> str:
    """A line as a terminal shows it: each carriage return restarts it, later text overwrites earlier."""
    shown = ""
    for part in line.split("\r"):
        shown = part + shown[len(part):]
    return shown.rstrip()


def _without_ci_warnings(lines: list[str]) -> list[str]:
    kept, skip = [], False
    for line in lines:
        if any(warning in line for warning in CI_ONLY_WARNINGS):
            skip = True  # drop it and the quoted source line after it
            continue
        if skip and line.startswith("  "):
            skip = False
            continue
        skip = False
        kept.append(line)
    return kept


def coalesce_streams(cell: nbformat.NotebookNode) -> None:
    """Merge consecutive stream outputs and keep what Jupyter displays of progress bars (their last
    state), so the committed file holds one line per bar instead of every redraw."""
    merged: list = []
    for output in cell.get("outputs", []):
        if (output.output_type == "stream" and merged and merged[-1].output_type == "stream"
                and merged[-1].name == output.name):
            merged[-1].text += output.text
        else:
            merged.append(output)
    kept = []
    for output in merged:
        if output.output_type == "stream":
            lines = [_overwrite_line(line) for line in output.text.replace("\r\n", "\n").split("\n")]
            output.text = "\n".join(line for line in _without_ci_warnings(lines) if line) + "\n"
            if not output.text.strip():
                continue
        kept.append(output)
    cell.outputs = kept


def inject_parameters(nb: nbformat.NotebookNode, params: list[str]) -> None:
    """Put `NAME=VALUE` assignments (VALUE a Python literal) in a cell tagged injected-parameters right after
    the cell tagged parameters, as papermill does; a NAME the parameters cell does not set is refused."""
    index = next((i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), None)
    if index is None:
        raise SystemExit("the notebook has no cell tagged parameters to inject after")
    lines = []
    for param in params:
        name, equals, value = param.partition("=")
        if not equals or f"\n{name} =" not in "\n" + nb.cells[index].source:
            raise SystemExit(f"--param {param!r}: expected NAME=VALUE with a NAME the parameters cell sets")
        lines.append(f"{name} = {value}")
    cell = nbformat.v4.new_code_cell("# Parameters injected by scripts/build_notebooks.py --param\n" + "\n".join(lines))
    cell.metadata["tags"] = ["injected-parameters"]
    cell["id"] = "injected-parameters"
    nb.cells.insert(index + 1, cell)


def execute(nb: nbformat.NotebookNode, timeout: int, size: str = "preview") -> float:
    """Run `nb` at `size` in a fresh temporary folder, as a new Colab runtime would (nothing left
    from an earlier build; cells tagged skip-execution are skipped); return seconds."""
    from nbclient import NotebookClient

    os.environ[SIZE_ENV] = size  # the kernel inherits the environment
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="era_utils_notebook_") as folder:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                                resources={"metadata": {"path": folder}})
        client.execute()
    for cell in nb.cells:
        if cell.cell_type == "code":
            coalesce_streams(cell)
    return time.perf_counter() - start


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [s.stem for s in scripts()]
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"notebooks to build (default: all of {names})")
    parser.add_argument("--execute", action="store_true",
                        help=f"run each notebook (with {SIZE_ENV}=SIZE) and save it with its outputs")
    parser.add_argument("--size", default="preview", choices=("preview", "quick", "full"),
                        help="the size --execute runs at (default: preview, what is committed)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; fail if a committed notebook's cells differ from its script")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell when executing")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="with --execute: set a parameter (VALUE a Python literal, e.g. DATASET='\"fashion_mnist\"')")
    parser.add_argument("--into", metavar="DIR", help="write the notebooks into DIR instead of notebooks/ (a run "
                        "with --param is not what is committed)")
    args = parser.parse_args(argv)
    if args.param and not (args.execute and args.into):
        parser.error("--param changes what the notebook runs: give it with --execute and --into DIR")
    unknown = sorted(set(args.names) - set(names))
    if unknown:
        parser.error(f"unknown notebook(s) {unknown}; choose from {names}")
    chosen = [NOTEBOOKS / f"{name}.py" for name in args.names or names]
    if args.check:
        problems = [p for p in (stale(s) for s in chosen) if p]
        for problem in problems:
            print(f"{problem}: rebuild it (python scripts/build_notebooks.py --execute)")
        return 1 if problems else 0
    for script in chosen:
        nb = from_script(script)
        path = Path(args.into) / f"{script.stem}.ipynb" if args.into else script.with_suffix(".ipynb")
        if args.param:
            inject_parameters(nb, args.param)
        if args.execute:
            seconds = execute(nb, args.timeout, args.size)
            print(f"{_shown(path)}: executed at size {args.size} in {seconds:.0f} s")
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, path)
        print(f"wrote {_shown(path)} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
