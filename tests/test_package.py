"""The package surface: lazy public names, get_device and set_seed."""
import random

import numpy as np
import pytest
import torch

import era_utils


def test_every_public_name_resolves():
    for name in era_utils.__all__:
        assert getattr(era_utils, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        era_utils.nope  # noqa: B018


def test_summary_stays_the_function_after_its_module_is_imported():
    import era_utils.summary  # noqa: F401  (binds the submodule: must not shadow the function)

    assert callable(era_utils.summary)


def test_get_device_auto_and_explicit():
    assert era_utils.get_device("cpu") == torch.device("cpu")
    assert era_utils.get_device(torch.device("cpu")).type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else None
    auto = era_utils.get_device()
    assert auto == era_utils.get_device("auto")
    if expected:
        assert auto.type == expected


def test_a_cpu_named_in_results_says_when_its_kernels_are_capped(monkeypatch):
    """A run with AVX-512 turned off (standing in for a CPU without it) must not read as this CPU's own."""
    from era_utils.utils import device_name

    for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    plain = device_name("cpu")
    assert plain.endswith("cores available, cpu)") and "=" not in plain
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert device_name("cpu") == plain[:-1] + "; ATEN_CPU_CAPABILITY=avx2; ONEDNN_MAX_CPU_ISA=AVX2)"


def test_set_seed_makes_python_numpy_and_torch_repeat():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    era_utils.set_seed(123)
    first = draw()
    era_utils.set_seed(123)
    assert draw() == first
    era_utils.set_seed(124)
    assert draw() != first
