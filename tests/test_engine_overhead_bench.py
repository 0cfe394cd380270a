"""benchmarks/engine_overhead.py runs end to end and reports every variant (no timing asserts)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "engine_overhead.py"


def test_tiny_run_reports_every_variant(tmp_path):
    spec = importlib.util.spec_from_file_location("engine_overhead_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    threads = torch.get_num_threads()  # the script sets its own thread count
    try:
        spec.loader.exec_module(module)
        out = tmp_path / "overhead.md"
        text = module.main(["--steps", "20", "--repeats", "1", "--out", str(out)])
    finally:
        sys.modules.pop(spec.name, None)
        torch.set_num_threads(threads)
    assert out.read_text() == text
    for row in ("| bare loop |", "| train_one_epoch |", "| train_one_epoch + progress bar |"):
        assert row in text
