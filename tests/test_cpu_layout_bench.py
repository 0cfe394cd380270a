"""benchmarks/cpu_layout.py runs a preview's own steps in both layouts and reports each (no timing asserts)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "cpu_layout.py"


def test_tiny_run_reports_both_layouts_and_their_ratio(tmp_path):
    spec = importlib.util.spec_from_file_location("cpu_layout_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        out = tmp_path / "layout.md"
        text = module.main(["--recipes", "s10", "--batches", "2", "--subset", "200", "--test-subset", "100",
                            "--out", str(out)])
    finally:
        sys.modules.pop(spec.name, None)
    assert out.read_text() == text
    assert "| s10 | custom_resnet | " in text and "| NCHW |" in text and "| channels_last |" in text
    assert "(100) |" in text  # the test pass ran over the test set it was given
    assert "- s10: channels_last / NCHW = " in text and "cpu" in text
