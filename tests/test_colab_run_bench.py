"""Issue 27's GPU call, checked without a GPU: benchmarks/colab_run.py reads the runs' own files into its
table, and scripts/build_notebooks.py injects a notebook's parameters as papermill would."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and the like look the module up while it runs
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


def _run(folder: Path, precision: str, compile: bool, epochs: list[float], training: float) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "precision": precision, "compile": compile, "cpu_cores": 2, "wall_seconds": training + 20,
        "seconds": {"setup": 1.0, "range_test": 9.0, "training": training, "analysis": 10.0},
        "final_test_acc": 93.9, "fp16_skipped_steps": 3 if precision.startswith("fp16") else None,
        "device_name": "NVIDIA H200", "commit": "abc1234", "date": "2026-12-06", "command": "era-utils run s10"}))
    (folder / "history.json").write_text(json.dumps({"epoch_times": epochs}))
    return folder


def test_the_table_reads_each_runs_time_split_and_what_compiling_cost_and_saved(tmp_path):
    bench = _module(ROOT / "benchmarks" / "colab_run.py", "colab_run_bench")
    on = _run(tmp_path / "fp16_on", "fp16 autocast + GradScaler", True, [18.0, 1.0, 1.0, 1.2], 21.2)
    off = _run(tmp_path / "fp16_off", "fp16 autocast + GradScaler", False, [2.5, 1.5, 1.5, 1.6], 7.1)
    assert bench.main([str(on), str(off), "--out", str(tmp_path / "t.md"), "--json", str(tmp_path / "t.json")]) == 0
    rows = json.loads((tmp_path / "t.json").read_text())
    assert rows[0]["compile cost s"] == pytest.approx(17.0) and rows[1]["compile cost s"] == pytest.approx(1.0)
    assert rows[0]["fp16 skipped steps"] == 3 and rows[0]["cores"] == 2 and rows[0]["whole run s"] == 41.2
    page = (tmp_path / "t.md").read_text()
    # compiling cost 18.0 - 2.5 = 15.5 s and saved 1.5 - 1.0 = 0.5 s per later epoch: it pays from 31 epochs
    assert "compiling cost 15.5 s in the first epoch and saved 0.50 s per later epoch: pays from 31 epochs" in page
    assert "NVIDIA H200; commit abc1234" in page
    assert bench.main([str(tmp_path / "missing")]) == 2


def test_parameters_are_injected_after_the_parameters_cell_and_unknown_ones_refused():
    build = _module(ROOT / "scripts" / "build_notebooks.py", "build_notebooks_bench")
    nb = build.from_script(ROOT / "notebooks" / "s10_custom_resnet_one_cycle.py")
    build.inject_parameters(nb, ['DATASET="fashion_mnist"', "EPOCHS=2"])
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    injected = nb.cells[index + 1]
    assert injected.metadata["tags"] == ["injected-parameters"]
    assert 'DATASET = "fashion_mnist"\nEPOCHS = 2' in injected.source
    with pytest.raises(SystemExit, match="NAME the parameters cell sets"):
        build.inject_parameters(nb, ["EPOCS=2"])
    with pytest.raises(SystemExit):
        build.main(["s10_custom_resnet_one_cycle", "--param", "EPOCHS=2"])  # not without --execute --into
