"""benchmarks/face_loader_speed.py runs end to end and reports every row (no timing asserts)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "face_loader_speed.py"


def test_tiny_run_reports_every_row_with_its_speedup(tmp_path):
    spec = importlib.util.spec_from_file_location("face_loader_speed_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    threads = torch.get_num_threads()
    try:
        spec.loader.exec_module(module)
        result = module.main(["--images", "24", "--identities", "3", "--size", "64", "--batch-size", "8",
                              "--epochs", "2", "--num-workers", "0", "--steps", "1", "--device", "cpu",
                              "--out", str(tmp_path / "speed.md"), "--json", str(tmp_path / "speed.json")])
    finally:
        sys.modules.pop(spec.name, None)
        torch.set_num_threads(threads)
    assert json.loads((tmp_path / "speed.json").read_text()) == result
    assert [row["path"] for row in result["rows"]] == ["workers", "device", "decode", "step"]
    assert result["rows"][0]["speedup_vs_workers"] == 1.0
    for row in result["rows"]:
        assert row["images_per_second"] > 0
        assert abs(row["speedup_vs_workers"] - row["images_per_second"] / result["rows"][0]["images_per_second"]) < 1e-9
    assert result["reader_cpu_ms_per_image"] > 0 and result["bytes_per_image"] > 0
    assert result["device_vs_cpu"] is None  # a GPU only: the tests prove the CPU path against torchvision
    text = (tmp_path / "speed.md").read_text()
    assert "| device | FaceLoader: decode + HW2P2 augmentation on cpu" in text and "ms of CPU time per image" in text
