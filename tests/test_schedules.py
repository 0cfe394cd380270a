"""Tests for era_utils.schedules: One Cycle peak and floor, warm restarts at epochs 10, 30, 70."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from era_utils.schedules import cosine_warm_restarts, one_cycle


pytestmark = pytest.mark.usefixtures("one_thread")


def _optimizer(name: str = "adam", lr: float = 0.1) -> torch.optim.Optimizer:
    params = [nn.Parameter(torch.zeros(1))]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def _lrs(optimizer: torch.optim.Optimizer, scheduler, steps: int) -> tuple[list[float], float]:
    """LR used by each of `steps` batches (scheduler stepped after the optimizer), and the LR after."""
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs, optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("epochs,steps_per_epoch,peak_epoch", [(24, 7, 5), (24, 98, 5), (5, 3, 2)])
def test_one_cycle_peaks_at_the_right_step_and_never_goes_below_final(epochs, steps_per_epoch, peak_epoch):
    opt = _optimizer()
    max_lr = 0.04
    sched = one_cycle(opt, max_lr, epochs, steps_per_epoch, peak_epoch=peak_epoch)
    total = epochs * steps_per_epoch
    lrs, after = _lrs(opt, sched, total)
    peak = peak_epoch * steps_per_epoch - 1  # last batch of epoch `peak_epoch` (1-based)
    assert max(lrs) == max_lr and lrs[peak] == max_lr
    assert lrs.index(max_lr) == peak and lrs.count(max_lr) == 1
    start, final = max_lr / 10, max_lr / 10  # defaults: start = final = max_lr / div_factor
    assert lrs[0] == pytest.approx(start)
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1 : peak + 1]))  # rising
    assert all(a > b for a, b in zip(lrs[peak:-1], lrs[peak + 1 :]))  # falling
    assert lrs[-1] == final and min(lrs[peak:]) == final
    assert after == final  # the step() after the last batch does not anneal below it


def test_one_cycle_final_lr_is_documented_value_and_linear():
    opt = _optimizer("sgd")
    sched = one_cycle(opt, 0.1, epochs=4, steps_per_epoch=5, peak_epoch=1, final_div_factor=100)
    lrs, after = _lrs(opt, sched, 20)
    assert lrs[-1] == after == pytest.approx(0.1 / (10 * 100))
    rises = [b - a for a, b in zip(lrs[:4], lrs[1:5])]
    assert rises == pytest.approx([rises[0]] * 4)  # linear warm-up


def test_one_cycle_rejects_bad_arguments():
    opt = _optimizer()
    with pytest.raises(ValueError, match="peak_epoch"):
        one_cycle(opt, 0.1, epochs=5, steps_per_epoch=3, peak_epoch=5)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        one_cycle(opt, 0.1, epochs=5, steps_per_epoch=0)
    with pytest.raises(ValueError, match="1 step after the peak"):
        one_cycle(opt, 0.1, epochs=3, steps_per_epoch=1, peak_epoch=2.6)  # rounds onto the last step
    with pytest.raises(ValueError, match="at least 3 optimizer steps.*1 epoch\\(s\\) x 2 step"):
        one_cycle(opt, 0.1, epochs=1, steps_per_epoch=2, peak_epoch=0.5)
    with pytest.raises(ValueError, match="2 warm-up steps"):
        one_cycle(opt, 0.1, epochs=3, steps_per_epoch=1, peak_epoch=1)


def test_one_cycle_fractional_peak_epoch():
    opt = _optimizer()
    sched = one_cycle(opt, 0.1, epochs=2, steps_per_epoch=4, peak_epoch=0.5)
    lrs, after = _lrs(opt, sched, 8)
    assert lrs.index(max(lrs)) == 1 and lrs[1] == 0.1 and after == lrs[-1] == pytest.approx(0.01)


def test_cosine_warm_restarts_restart_at_epochs_10_30_70():
    spe = 3
    opt = _optimizer("sgd", lr=0.1)
    sched = cosine_warm_restarts(opt, steps_per_epoch=spe, T_0=10, T_mult=2)
    lrs, _ = _lrs(opt, sched, 75 * spe)
    jumps = [i for i in range(1, len(lrs)) if lrs[i] > lrs[i - 1]]
    assert jumps == [10 * spe, 30 * spe, 70 * spe]
    assert all(lrs[i] == pytest.approx(0.1) for i in [0] + jumps)
    assert lrs[10 * spe - 1] < 0.01  # annealed close to eta_min just before the restart
