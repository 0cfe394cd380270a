"""benchmarks/fast_path_accuracy.py: the commands it runs and its within-noise verdict (no training here)."""
from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "fast_path_accuracy.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("fast_path_accuracy_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _args(**kw) -> argparse.Namespace:
    base = dict(recipe="s10", dataset="fashion_mnist", epochs=3, lr=1e-3, data_dir=None, subset=20000,
                test_subset=10000, device="cuda", fast_amp="bf16", classic_workers=8)
    return argparse.Namespace(**{**base, **kw})


def test_each_path_runs_the_kits_own_command(bench):
    classic = bench.run_command(_args(), "classic", 1, Path("runs/x"))
    fast = bench.run_command(_args(), "fast", 1, Path("runs/y"))
    def given(argv: list[str]) -> dict[str, str]:  # {option: value}; a switch's value is ""
        return {a: (b if not b.startswith("--") else "") for a, b in zip(argv, argv[1:] + [""]) if a.startswith("--")}

    shared = {"--dataset": "fashion_mnist", "--epochs": "3", "--lr": "0.001", "--seed": "1", "--quiet": ""}
    assert classic[:2] == fast[:2] == ["run", "s10"]
    assert given(classic).items() >= shared.items() and given(fast).items() >= shared.items()
    assert given(classic)["--classic"] == "" and given(classic)["--workers"] == "8" and "--amp" not in classic
    assert given(fast)["--amp"] == "bf16" and "--classic" not in fast
    assert "--subset" in fast and "--device" in fast and "--data-dir" not in fast


def _runs(classic, fast):
    return ([{"path": "classic", "final_test_acc": a, "train_seconds": 10.0} for a in classic]
            + [{"path": "fast", "final_test_acc": a, "train_seconds": 2.0} for a in fast])


def test_verdict_within_noise_and_not(bench):
    same = bench.summarise(_runs([90.0, 91.0, 92.0], [90.5, 91.5, 92.5]))
    assert same["difference"]["fast_minus_classic"] == pytest.approx(0.5)
    assert same["difference"]["standard_error"] == pytest.approx(math.sqrt(2 / 3))
    assert same["difference"]["within_noise"] is True
    worse = bench.summarise(_runs([90.0, 91.0, 92.0], [85.0, 86.0, 87.0]))
    assert worse["difference"]["within_noise"] is False
    one_seed = bench.summarise(_runs([90.0], [89.0]))
    assert one_seed["difference"]["within_noise"] is None  # no spread, no verdict
    assert "difference" not in bench.summarise(_runs([90.0], []))  # one path only: nothing to compare


def test_report_names_the_verdict(bench):
    runs = [dict(r, seed=i % 3, test_acc=[r["final_test_acc"]], loader="gpu", amp="bf16")
            for i, r in enumerate(_runs([90.0, 91.0, 92.0], [85.0, 86.0, 87.0]))]
    text = bench.render({"device": "test"}, runs, bench.summarise(runs))
    assert "**NOT within noise**" in text and "| classic | 3 | 91.00 | 1.00 | 10 |" in text
