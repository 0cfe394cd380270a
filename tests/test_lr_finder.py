"""Tests for era_utils.lr_finder: suggestion on noisy synthetic curves, state restore, errors, plot."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from era_utils.lr_finder import LRFinderResult, find_lr, smooth_losses, suggest_lr


pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic_curve(lrs: np.ndarray, seed: int, noise: float = 0.1) -> np.ndarray:
    """Flat at 2.3, falls between 1e-4 and 1e-1 (steepest at 10**-2.5), explodes above 0.3."""
    x = np.log10(lrs)
    falling = 2.3 - 1.8 / (1 + np.exp(-(x + 2.5) * 2.5))
    exploding = np.where(x > -0.5, 6 * (x + 0.5) ** 2, 0.0)
    return (falling + exploding) * (1 + noise * np.random.default_rng(seed).standard_normal(len(x)))


@pytest.mark.parametrize("method", ["steepest", "valley"])
def test_suggestion_falls_inside_the_falling_part_of_a_noisy_curve(method):
    lrs = np.logspace(-7, 1, 100)
    for seed in range(20):
        losses = synthetic_curve(lrs, seed)
        suggestion = suggest_lr(lrs, losses, method=method)
        assert 1e-4 <= suggestion <= 1e-1, (seed, suggestion)
    # The raw-curve steepest gradient (torch-lr-finder's own rule) is not this robust:
    raw_picks = [lrs[np.argmin(np.gradient(synthetic_curve(lrs, s)))] for s in range(20)]
    assert any(not 1e-4 <= p <= 1e-1 for p in raw_picks)


def test_steepest_suggestion_is_near_the_true_steepest_point():
    lrs = np.logspace(-7, 1, 100)
    picks = [np.log10(suggest_lr(lrs, synthetic_curve(lrs, s, noise=0.05))) for s in range(10)]
    assert abs(np.median(picks) - (-2.5)) < 0.4  # within 0.4 decades of 10**-2.5


def test_smoothing_keeps_length_and_does_not_lag():
    x = np.linspace(0, 1, 101)
    step = (x > 0.5).astype(float)
    smoothed = smooth_losses(step)
    assert smoothed.shape == step.shape
    assert smoothed[50] == pytest.approx(0.5, abs=0.15)  # centred: the midpoint stays in the middle


def test_suggestion_warns_when_the_loss_never_falls():
    lrs = np.logspace(-7, 1, 50)
    with pytest.warns(UserWarning, match="never falls"):
        assert suggest_lr(lrs, np.linspace(1, 5, 50)) == pytest.approx(lrs[0] / 10)


# ----------------------------------------------------------------------------- find_lr


def tiny_setup(seed: int = 0, n: int = 64):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    data = TensorDataset(torch.randn(n, 3, 2, 2), torch.randint(0, 3, (n,)))
    return model, data


def test_find_lr_restores_weights_optimizer_and_modes():
    model, data = tiny_setup()
    loader = DataLoader(data, batch_size=16, shuffle=True)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    # Give the optimizer some state, as after a little training.
    nn.functional.cross_entropy(model(data.tensors[0][:8]), data.tensors[1][:8]).backward()
    opt.step()
    model.eval()
    model[2].train()  # a mixed set of flags must come back as it was
    params_before = {k: v.clone() for k, v in model.state_dict().items()}
    opt_before = opt.state_dict()
    opt_before = {"state": {k: {n: t.clone() for n, t in s.items()} for k, s in opt_before["state"].items()},
                  "param_groups": [dict(g) for g in opt_before["param_groups"]]}

    result = find_lr(model, opt, nn.CrossEntropyLoss(), loader, num_iter=20, device="cpu", verbose=False)

    assert len(result.lrs) == len(result.losses) == len(result.smoothed) == 20
    assert result.lrs[0] == pytest.approx(1e-7) and result.lrs[-1] == pytest.approx(10.0)
    assert result.lrs[0] <= result.suggestion <= result.lrs[-1]
    for key, value in model.state_dict().items():  # weights and BatchNorm running statistics
        assert torch.equal(value, params_before[key]), key
    after = opt.state_dict()
    assert after["param_groups"] == opt_before["param_groups"]  # lr back to 3e-3, no initial_lr
    for k, s in after["state"].items():
        for name, t in s.items():
            assert torch.equal(t, opt_before["state"][k][name]), name
    assert not model.training and model[2].training and not model[1].training
    assert all(p.grad is None for p in model.parameters())


def test_find_lr_accepts_a_short_non_dataloader_loader():
    """Like the GPU-resident loader: an iterable of device tensors, shorter than num_iter."""
    model, data = tiny_setup()
    x, y = data.tensors
    loader = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]  # 4 batches, restarted
    result = find_lr(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                     nn.CrossEntropyLoss(), loader, start_lr=1e-5, end_lr=1.0, num_iter=12,
                     device="cpu", verbose=False)
    assert len(result.lrs) == 12 and not result.stopped_early


def test_find_lr_errors():
    model, data = tiny_setup()
    loader = DataLoader(data, batch_size=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ce = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match="num_iter=5 is too few"):
        find_lr(model, opt, ce, loader, num_iter=5, device="cpu")
    with pytest.raises(ValueError, match="start_lr < end_lr"):
        find_lr(model, opt, ce, loader, start_lr=1.0, end_lr=0.1, device="cpu")
    x, y = data.tensors
    one_shot = ((x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16))  # a generator: 4 batches
    with pytest.raises(ValueError, match="ran out after 4 batches"):
        find_lr(model, opt, ce, one_shot, num_iter=20, device="cpu", verbose=False)
    with pytest.raises(ValueError, match="loader is empty"):
        find_lr(model, opt, ce, DataLoader(TensorDataset(x[:0], y[:0]), batch_size=4), device="cpu")
    with pytest.raises(ValueError, match=r"\(images, labels\)"):
        find_lr(model, opt, ce, [(x[:4], y[:4], y[:4])], num_iter=10, device="cpu", verbose=False)
    with pytest.raises(ValueError, match="max label 7"):
        find_lr(model, opt, ce, [(x[:4], torch.tensor([0, 1, 7, 2]))], num_iter=10, device="cpu",
                verbose=False)
    torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    with pytest.raises(ValueError, match="scheduler attached"):
        find_lr(model, opt, ce, loader, device="cpu")


def test_find_lr_refuses_a_loss_that_diverges_immediately():
    model, data = tiny_setup()
    calls = []

    def exploding(logits, labels):  # 10x worse every batch, whatever the LR
        calls.append(1)
        return nn.functional.cross_entropy(logits, labels) * 0 + 10.0 ** len(calls)

    with pytest.raises(RuntimeError, match=r"diverged after \d of 100 batches.*start_lr"):
        find_lr(model, torch.optim.SGD(model.parameters(), lr=0.1), exploding,
                DataLoader(data, batch_size=16), device="cpu", verbose=False)


def test_find_lr_stops_at_the_first_nan_and_keeps_the_points_before():
    model, data = tiny_setup()
    calls = []

    def nan_after_15(logits, labels):
        calls.append(1)
        loss = nn.functional.cross_entropy(logits, labels)
        return loss * float("nan") if len(calls) > 15 else loss

    result = find_lr(model, torch.optim.SGD(model.parameters(), lr=0.1), nan_after_15,
                     DataLoader(data, batch_size=16), num_iter=40, device="cpu", verbose=False)
    assert len(result.lrs) == 15 and result.stopped_early and len(calls) == 16
    assert np.isfinite(result.losses).all()


def test_plot_returns_a_figure_without_showing(monkeypatch):
    def no_show(*args, **kwargs):
        raise AssertionError("plt.show() was called")

    monkeypatch.setattr(plt, "show", no_show)
    lrs = np.logspace(-7, 1, 60)
    losses = synthetic_curve(lrs, 0)
    result = LRFinderResult(lrs=lrs.tolist(), losses=losses.tolist(),
                            smoothed=smooth_losses(losses).tolist(),
                            suggestion=suggest_lr(lrs, losses))
    fig = result.plot()
    assert isinstance(fig, Figure)
    assert "max LR" in fig.axes[0].get_legend().get_texts()[-1].get_text()
    fig2, ax = plt.subplots()
    assert result.plot(ax=ax) is fig2
    plt.close(fig2)


def test_find_lr_with_autocast_uses_the_librarys_amp_path_and_restores():
    """bf16 autocast on the CPU goes through LRFinder's amp_config + GradScaler, as on a GPU."""
    model, data = tiny_setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    result = find_lr(model, opt, nn.CrossEntropyLoss(), DataLoader(data, batch_size=16),
                     num_iter=12, device="cpu", amp="bf16", verbose=False)
    assert len(result.lrs) == 12 and np.isfinite(result.losses).all()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert opt.param_groups[0]["lr"] == 1e-3


def test_min_lr_rules():
    from era_utils.lr_finder import suggest_min_lr

    lrs = np.logspace(-6, 0, 61)  # ten points per decade
    # flat until 1e-5, then falling to its minimum at 1e-2, then rising
    curve = np.where(lrs < 1e-5, 2.3, np.where(lrs < 1e-2, 2.3 - 0.5 * np.log10(lrs / 1e-5), 0.8))
    assert suggest_min_lr(lrs, curve, max_lr=1e-3, method="tenth") == pytest.approx(1e-4)
    start = suggest_min_lr(lrs, curve, max_lr=1e-3, method="descent")  # a tenth of the way down: 1.58e-5
    assert 1e-5 < start < 3e-5
    assert suggest_min_lr(lrs, curve, max_lr=2e-5, method="descent") == pytest.approx(1e-5)  # at most max / 2
    with pytest.raises(ValueError, match="min LR method"):
        suggest_min_lr(lrs, curve, 1e-3, method="valley")


def test_find_lr_reports_both_ends_of_the_cycle():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    data = [(torch.randn(8, 3, 2, 2), torch.randint(0, 3, (8,))) for _ in range(4)]
    result = find_lr(model, torch.optim.SGD(model.parameters(), lr=1e-5), nn.CrossEntropyLoss(), data,
                     start_lr=1e-5, end_lr=1.0, num_iter=30, method="minimum", min_method="descent", verbose=False)
    assert result.min_lr is not None and result.min_lr <= result.suggestion / 2
    saved = result.to_dict()
    assert saved["min_method"] == "descent" and "fallen a tenth" in saved["min_rule"] and saved["loss_min_lr"] > 0
