"""era_utils.summary: the torchinfo table (shapes, kernels, params, mult-adds), modes restored, errors."""
from __future__ import annotations

import pytest
import torch.nn as nn

import era_utils
from era_utils.models import create_model
from era_utils.summary import summary


def test_table_has_kernel_shapes_mult_adds_and_total_params() -> None:
    model = create_model("custom_resnet")
    stats = summary(model, (3, 32, 32))
    table = str(stats)
    for text in ("Input Shape", "Output Shape", "Kernel Shape", "Mult-Adds", "6,573,120"):
        assert text in table
    assert stats.total_params == 6_573_120
    assert "[1, 3, 32, 32]" in table  # the batch dimension was added
    assert repr(stats) == table  # what a notebook displays as a cell's last expression
    assert "Total mult-adds (M)" in table and "Units." not in table  # torchinfo#350 worked around


def test_batched_input_size_and_default_size() -> None:
    model = create_model("s7_lite", in_channels=1)
    assert "[4, 1, 28, 28]" in str(summary(model, (4, 1, 28, 28)))
    assert "[1, 1, 32, 32]" in str(summary(model))  # default: (model.in_channels, 32, 32)
    assert era_utils.summary is summary


def test_modes_are_restored_per_module() -> None:
    model = create_model("s7_lite").train()
    model.block1.eval()  # e.g. a frozen part: must stay in eval
    before = {name: m.training for name, m in model.named_modules()}
    bn = model.block2[0][2]
    stats_before = bn.running_mean.clone()
    summary(model, (3, 32, 32))
    assert {name: m.training for name, m in model.named_modules()} == before
    assert bn.running_mean.equal(stats_before)  # ran in eval: BatchNorm statistics untouched

    model.eval()
    summary(model, (3, 32, 32))
    assert not any(m.training for m in model.modules())


def test_kwargs_pass_through_and_unknown_ones_fail() -> None:
    model = create_model("s7_lite")
    table = str(summary(model, (3, 32, 32), depth=1, col_names=("output_size", "num_params")))
    assert "Kernel Shape" not in table and "Output Shape" in table
    with pytest.raises(TypeError, match="colnames"):
        summary(model, (3, 32, 32), colnames=("output_size",))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        summary(model, (32, 32))


def test_verbose_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    stats = summary(create_model("s7_lite"), (3, 32, 32), verbose=1)
    assert capsys.readouterr().out.strip() == str(stats)
    summary(create_model("s7_lite"), (3, 32, 32))
    assert capsys.readouterr().out == ""  # quiet by default


def test_plain_module_without_model_interface() -> None:
    stats = summary(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()), (3, 8, 8))
    assert stats.total_params == 3 * 4 * 9 + 4
