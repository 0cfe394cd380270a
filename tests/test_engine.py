"""Tests for era_utils.engine and era_utils.checkpoint: tiny CPU models, TensorDataset loaders."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fake_data import DiesInEpoch

from era_utils import checkpoint, engine, speed
from era_utils.checkpoint import Checkpointing, load_checkpoint, save_checkpoint
from era_utils.engine import History, evaluate, fit, train_one_epoch
from era_utils.schedules import make_criterion, make_optimizer, one_cycle
from era_utils.speed import fast_path, resolve_amp, resolve_compile
from era_utils.gpu_loader import GPULoader
from era_utils.transforms import NO_AUGMENT, S10_AUGMENT

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(num_classes: int = 3, in_features: int = 3 * 4 * 4, dropout: float = 0.2) -> nn.Module:
    """An MLP with BatchNorm (running stats to checkpoint) and Dropout (RNG to restore)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(16, num_classes),
    )


def tiny_data(n: int = 48, num_classes: int = 3, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 4, 4, generator=g)
    return TensorDataset(images, torch.randint(0, num_classes, (n,), generator=g))


def batches(*pairs: tuple[torch.Tensor, torch.Tensor]) -> list:
    """A re-iterable 'loader' that is not a DataLoader (like the GPU-resident loader)."""
    return list(pairs)


# ----------------------------------------------------------------------------- training


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 4, 4), torch.arange(16) % 4
    model = tiny_model(num_classes=4, dropout=0.0)
    opt = make_optimizer("adam", model.parameters(), lr=1e-2)
    loader = batches(*[(x, y)] * 10)  # the same batch 10 times per epoch
    history = fit(model, loader, None, opt, epochs=8, verbose=False, path=fast_path("cpu", amp="off"))
    assert history.train_loss[-1] < 0.05
    assert history.train_acc[-1] == 100.0
    assert history.test_loss == [] and history.test_acc == [] and history.best_test_acc is None
    assert len(history.lrs) == 80 and len(history.epoch_times) == 8
    assert model.training  # fit puts the flags back


def test_fit_reports_test_metrics_and_per_step_lrs():
    torch.manual_seed(0)
    data = tiny_data()
    train = DataLoader(data, batch_size=8, shuffle=True)
    model = tiny_model()
    opt = make_optimizer("sgd", model.parameters(), lr=0.05, nesterov=True, weight_decay=5e-4)
    sched = one_cycle(opt, max_lr=0.05, epochs=3, steps_per_epoch=len(train), peak_epoch=1)
    history = fit(model, train, DataLoader(data, batch_size=16), opt, 3, scheduler=sched,
                  criterion=make_criterion(0.1), verbose=False, path=fast_path("cpu", amp="off"))
    assert history.epochs == 3 and len(history.test_acc) == 3
    assert len(history.lrs) == 3 * len(train)
    assert history.lrs[len(train) - 1] == 0.05  # peak at the last batch of epoch 1
    assert all(0.0 <= a <= 100.0 for a in history.train_acc + history.test_acc)


def test_fit_with_bf16_autocast_on_cpu_runs():
    torch.manual_seed(0)
    data = tiny_data(n=16)
    model = tiny_model()
    opt = make_optimizer("adam", model.parameters(), lr=1e-3)
    history = fit(model, DataLoader(data, batch_size=8), DataLoader(data, batch_size=8), opt, 1, verbose=False,
                  path=fast_path("cpu", amp="bf16"))
    assert torch.isfinite(torch.tensor(history.train_loss + history.test_loss)).all()


def test_verbose_prints_one_summary_line_per_epoch(capsys):
    torch.manual_seed(0)
    data = tiny_data(n=16)
    model = tiny_model()
    opt = make_optimizer("adam", model.parameters(), lr=1e-3)
    fit(model, DataLoader(data, batch_size=8), DataLoader(data, batch_size=8), opt, 2, path=fast_path("cpu", amp="off"))
    out = capsys.readouterr().out
    assert "epoch   1/2" in out and "epoch   2/2" in out and "test loss" in out


def test_evaluate_uses_eval_and_inference_mode_and_restores_modes():
    seen = {}

    class Probe(nn.Module):
        def forward(self, x):
            seen["training"] = self.training
            seen["inference"] = torch.is_inference_mode_enabled()
            return x

    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3), nn.BatchNorm1d(3), Probe())
    model.train()
    model[2].eval()  # a frozen BatchNorm must stay frozen
    data = tiny_data(n=16)
    loss, acc = evaluate(model, DataLoader(data, batch_size=8), nn.CrossEntropyLoss(), CPU)
    assert seen == {"training": False, "inference": True}
    assert model.training and model[1].training and not model[2].training
    assert 0.0 <= acc <= 100.0 and loss > 0


def test_evaluate_restores_eval_mode_too():
    model = tiny_model()
    model.eval()
    evaluate(model, DataLoader(tiny_data(n=8), batch_size=8), None, CPU)
    assert not model.training


def test_train_one_epoch_steps_scheduler_after_optimizer():
    calls = []

    class Recorder(torch.optim.SGD):
        def step(self, closure=None):
            calls.append("opt")
            return super().step(closure)

    model = tiny_model()
    opt = Recorder(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    original_step = sched.step
    sched.step = lambda *a, **k: (calls.append("sched"), original_step(*a, **k))
    _, _, lrs = train_one_epoch(model, DataLoader(tiny_data(n=24), batch_size=8), opt,
                                nn.CrossEntropyLoss(), CPU, scheduler=sched, verbose=False)
    assert calls == ["opt", "sched"] * 3
    assert lrs == pytest.approx([0.1, 0.05, 0.1 / 3])


# ----------------------------------------------------------------------------- bad input


def test_loader_with_wrong_structure_says_what_it_got():
    model = tiny_model()
    opt = make_optimizer("sgd", model.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 4, 4), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"batch 1 was a tuple of 3 items.*\(images, labels\)|"
                                         r"\(images, labels\).*batch 1 was a tuple of 3 items"):
        train_one_epoch(model, [(x, y, y)], opt, nn.CrossEntropyLoss(), CPU, verbose=False)
    with pytest.raises(ValueError, match="dict with keys"):
        train_one_epoch(model, [{"image": x, "label": y}], opt, nn.CrossEntropyLoss(), CPU, verbose=False)
    with pytest.raises(ValueError, match="integer class indices"):
        train_one_epoch(model, [(x, y.float())], opt, nn.CrossEntropyLoss(), CPU, verbose=False)
    with pytest.raises(ValueError, match="no batches"):
        train_one_epoch(model, [], opt, nn.CrossEntropyLoss(), CPU, verbose=False)


def test_labels_out_of_range_on_first_batch_name_max_label_and_outputs():
    model = tiny_model(num_classes=3)
    opt = make_optimizer("sgd", model.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 4, 4), torch.tensor([0, 1, 7, 2])
    with pytest.raises(ValueError, match=r"max label 7.*num_classes=8") as err:
        train_one_epoch(model, [(x, y)], opt, nn.CrossEntropyLoss(), CPU, verbose=False)
    assert "3 outputs" in str(err.value)
    with pytest.raises(ValueError, match="3 outputs"):
        evaluate(model, [(x, y)], None, CPU)


def test_labels_out_of_range_in_a_later_batch_are_caught():
    model = tiny_model(num_classes=3)
    opt = make_optimizer("sgd", model.parameters(), lr=0.1)
    good = (torch.randn(4, 3, 4, 4), torch.tensor([0, 1, 2, 1]))
    bad = (torch.randn(4, 3, 4, 4), torch.tensor([0, 5, 2, 1]))
    with pytest.raises(ValueError, match=r"batch 3 of epoch 1.*max label 5") as err:
        train_one_epoch(model, [good, good, bad], opt, nn.CrossEntropyLoss(), CPU, verbose=False)
    assert "3 outputs" in str(err.value)


def test_labels_out_of_range_caught_at_sync_point_when_the_loss_does_not_fail():
    """A criterion that never indexes by label: the device-side max label catches it."""
    model = tiny_model(num_classes=3)
    opt = make_optimizer("sgd", model.parameters(), lr=0.1)
    criterion = lambda logits, labels: logits.float().pow(2).mean()  # noqa: E731
    good = (torch.randn(4, 3, 4, 4), torch.tensor([0, 1, 2, 1]))
    bad = (torch.randn(4, 3, 4, 4), torch.tensor([0, 9, 2, 1]))
    with pytest.raises(ValueError, match=r"max label 9.*3 outputs|3 outputs.*max label 9"):
        train_one_epoch(model, [good, bad, good], opt, criterion, CPU, verbose=False)


def test_model_output_shape_is_checked():
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3), nn.Unflatten(1, (3, 1)))
    opt = make_optimizer("sgd", model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="expected logits"):
        train_one_epoch(model, [(torch.randn(4, 3, 4, 4), torch.zeros(4, dtype=torch.long))], opt,
                        nn.CrossEntropyLoss(), CPU, verbose=False)


def test_nan_loss_names_epoch_step_and_lr_even_between_sync_points():
    torch.manual_seed(0)
    model = tiny_model(dropout=0.0)
    opt = make_optimizer("sgd", model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 + s)  # lr 0.1, 0.2, 0.3, ...
    loader = [(torch.randn(4, 3, 4, 4), torch.tensor([0, 1, 2, 1])) for _ in range(6)]
    loader[2][0][0, 0, 0, 0] = float("nan")  # step 3 goes bad; the first sync is after step 4
    with pytest.raises(FloatingPointError, match=r"epoch 2, step 3 \(lr 0\.3\)"):
        train_one_epoch(model, loader, opt, nn.CrossEntropyLoss(), CPU, scheduler=sched, epoch=1,
                        verbose=False, sync_every=4)


def test_nan_loss_found_at_epoch_end_without_sync_points():
    model = tiny_model(dropout=0.0)
    opt = make_optimizer("sgd", model.parameters(), lr=0.1)
    loader = [(torch.randn(4, 3, 4, 4), torch.tensor([0, 1, 2, 1])) for _ in range(3)]
    loader[1][0].fill_(float("inf"))
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 2 \(lr 0\.1\)"):
        train_one_epoch(model, loader, opt, nn.CrossEntropyLoss(), CPU, verbose=False, sync_every=100)


def test_fit_refuses_mismatched_or_plateau_schedulers():
    data = DataLoader(tiny_data(n=16), batch_size=8)  # 2 batches per epoch
    model = tiny_model()
    opt = make_optimizer("adam", model.parameters(), lr=1e-3)
    sched = one_cycle(opt, 1e-2, epochs=3, steps_per_epoch=1, peak_epoch=2)
    with pytest.raises(ValueError, match=r"built for 3 steps.*3 epochs x 2 batches"):
        fit(model, data, None, opt, 3, scheduler=sched, verbose=False, path=fast_path("cpu", amp="off"))
    opt2 = make_optimizer("adam", model.parameters(), lr=1e-3)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt2)
    with pytest.raises(TypeError, match="ReduceLROnPlateau"):
        fit(model, data, None, opt2, 1, scheduler=plateau, verbose=False, path=fast_path("cpu", amp="off"))
    with pytest.raises(ValueError, match="epochs"):
        fit(model, data, None, opt2, 0, verbose=False, path=fast_path("cpu", amp="off"))


# ----------------------------------------------------------------------------- AMP, optimisers


def test_resolve_amp():
    assert resolve_amp("cpu", "auto") == (None, None)
    assert resolve_amp("cpu", "off") == (None, None)
    assert resolve_amp("cpu", "bf16") == (torch.bfloat16, None)
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        resolve_amp("cpu", "fp16")
    with pytest.raises(ValueError, match="auto"):
        resolve_amp("cpu", "half")


def test_resolve_compile(monkeypatch):
    assert resolve_compile("cpu", "auto") is False  # inductor on the CPU: off unless asked for
    assert resolve_compile("cpu", True) is True and resolve_compile("cuda", False) is False
    assert resolve_compile("cuda", "max-autotune") == "max-autotune"
    monkeypatch.setattr(speed.importlib.util, "find_spec", lambda name: object())
    assert resolve_compile("cuda", "auto") is True
    monkeypatch.setattr(speed.importlib.util, "find_spec", lambda name: None)  # no Triton (Windows)
    assert resolve_compile("cuda", "auto") is False
    with pytest.raises(ValueError, match="'auto'"):
        resolve_compile("cuda", 1)


class _CountingWrapper(nn.Module):
    """Stands in for torch.compile's wrapper: counts calls, and in which mode they came."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(self.model.training)
        return self.model(x)


def test_fit_compiles_only_the_training_pass(monkeypatch):
    wrappers = []

    def fake_compile(model, mode=None):
        wrappers.append(_CountingWrapper(model))
        return wrappers[-1]

    monkeypatch.setattr(torch, "compile", fake_compile)
    torch.manual_seed(0)
    data = tiny_data(n=32)
    model = tiny_model()
    opt = make_optimizer("adam", model.parameters(), lr=1e-3)
    history = fit(model, DataLoader(data, batch_size=8), DataLoader(data, batch_size=8), opt, 2, verbose=False,
                  path=replace(fast_path("cpu", amp="off"), compile=True))
    assert len(wrappers) == 1 and wrappers[0].calls == [True] * 8  # 2 epochs x 4 training steps
    assert len(history.test_acc) == 2  # evaluated, eagerly: the wrapper saw no eval-mode call


def test_fit_times_the_training_pass_apart():
    data = tiny_data(n=32)
    model = tiny_model()
    opt = make_optimizer("adam", model.parameters(), lr=1e-3)
    history = fit(model, DataLoader(data, batch_size=8), DataLoader(data, batch_size=8), opt, 3, verbose=False,
                  path=fast_path("cpu", amp="off"))
    assert len(history.train_times) == len(history.epoch_times) == 3
    assert all(0 < t <= e for t, e in zip(history.train_times, history.epoch_times))


@pytest.mark.parametrize("interval, written", [(0.0, [1, 2, 3]), (1e9, [1, 3])])
def test_checkpoint_interval_spaces_writes_but_keeps_the_first_and_last(monkeypatch, tmp_path, interval, written):
    epochs_saved = []
    monkeypatch.setattr(checkpoint, "save_checkpoint", lambda path, *a, epoch, **k: epochs_saved.append(epoch))
    data = tiny_data(n=16)
    model = tiny_model()
    opt = make_optimizer("adam", model.parameters(), lr=1e-3)
    fit(model, DataLoader(data, batch_size=8), None, opt, 3, verbose=False,
        path=fast_path("cpu", amp="off"),
        checkpoint=Checkpointing(tmp_path / "c.pt", interval=interval))
    assert epochs_saved == written


def test_make_optimizer_reads_generators_and_groups_once():
    model = tiny_model()
    adam = make_optimizer("adam", model.parameters(), 1e-3)  # a generator
    assert sum(len(g["params"]) for g in adam.param_groups) == len(list(model.parameters()))
    assert not adam.defaults.get("fused")  # CPU parameters: torch's default implementation
    groups = [{"params": (p for p in model[1].parameters()), "lr": 0.1},
              {"params": next(model[-1].parameters())}]
    sgd = make_optimizer("sgd", groups, 0.01)
    assert [len(g["params"]) for g in sgd.param_groups] == [2, 1]
    assert [g["lr"] for g in sgd.param_groups] == [0.1, 0.01]


def test_make_optimizer_and_criterion():
    params = [nn.Parameter(torch.zeros(2))]
    sgd = make_optimizer("SGD", params, 0.1, nesterov=True, weight_decay=1e-4)
    group = sgd.param_groups[0]
    assert isinstance(sgd, torch.optim.SGD)
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, True, 1e-4)
    assert isinstance(make_optimizer("adam", params, 1e-3), torch.optim.Adam)
    with pytest.raises(ValueError, match="adam"):
        make_optimizer("rmsprop", params, 0.1)
    assert make_criterion(0.2).label_smoothing == 0.2
    with pytest.raises(ValueError):
        make_criterion(1.5)


# ----------------------------------------------------------------------------- History


def test_history_json_round_trip(tmp_path):
    history = History(train_loss=[1.5, 0.5], train_acc=[40.0, 80.0], test_loss=[1.2, 0.7],
                      test_acc=[50.0, 75.5], lrs=[0.1, 0.2, 0.3, 0.4], epoch_times=[1.0, 2.0])
    path = history.to_json(tmp_path / "out" / "history.json")
    assert History.from_json(path) == history
    assert json.loads(path.read_text())["test_acc"] == [50.0, 75.5]
    assert history.epochs == 2 and history.best_test_acc == 75.5


# ----------------------------------------------------------------------------- checkpoints


def _run(tmp_path, ckpt_name: str, seed: int, loader_seed: int | None, resume: bool,
         dies_in_epoch: int | None = None) -> tuple[History, nn.Module]:
    """Build everything from scratch, as a new Colab session would, then fit for 4 epochs."""
    torch.manual_seed(seed)
    data = tiny_data()
    generator = torch.Generator().manual_seed(loader_seed) if loader_seed is not None else None
    train = DataLoader(data, batch_size=8, shuffle=True, generator=generator)
    test = DataLoader(data, batch_size=16)
    if dies_in_epoch is not None:
        test = DiesInEpoch(test, dies_in_epoch)
    model = tiny_model()
    opt = make_optimizer("sgd", model.parameters(), lr=0.05, nesterov=True, weight_decay=5e-4)
    sched = one_cycle(opt, max_lr=0.05, epochs=4, steps_per_epoch=len(train), peak_epoch=1)
    history = fit(model, train, test, opt, 4, scheduler=sched, verbose=False,
                  path=fast_path("cpu", amp="off"),
                  checkpoint=Checkpointing(tmp_path / ckpt_name, resume=resume))
    return history, model


@pytest.mark.parametrize("loader_seed", [None, 7], ids=["global-rng", "loader-generator"])
def test_resumed_run_equals_unbroken_run(tmp_path, loader_seed):
    straight, straight_model = _run(tmp_path, "a.pt", seed=0, loader_seed=loader_seed, resume=False)
    with pytest.raises(KeyboardInterrupt):  # dies in epoch 3: the checkpoint holds 2 epochs
        _run(tmp_path, "b.pt", seed=0, loader_seed=loader_seed, resume=True, dies_in_epoch=3)
    assert load_checkpoint(tmp_path / "b.pt", restore_rng=False)["epoch"] == 2
    # A "new session": different init, different RNG state, fresh loader generator.
    resumed, resumed_model = _run(tmp_path, "b.pt", seed=123,
                                  loader_seed=None if loader_seed is None else 999, resume=True)
    for name in ("train_loss", "train_acc", "test_loss", "test_acc", "lrs"):
        assert getattr(resumed, name) == getattr(straight, name), name
    assert len(resumed.epoch_times) == 4
    for a, b in zip(straight_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.equal(a, b)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic saves leave no temporary files


def _classic_run(tmp_path, ckpt_name: str, init_seed: int, resume: bool, dies_in_epoch: int | None = None,
                 num_workers: int = 2) -> tuple[History, nn.Module]:
    """The classic path: albumentations per image in persistent DataLoader workers, built afresh."""
    from fake_data import cifar_like_images

    from era_utils.loaders import worker_loader

    images, labels = cifar_like_images(48, seed=3, num_classes=3)
    torch.manual_seed(init_seed)
    train = worker_loader((images, labels), S10_AUGMENT, (0.5,) * 3, (0.25,) * 3, batch_size=16, shuffle=True,
                          num_workers=num_workers, seed=11)
    test = worker_loader((images, labels), NO_AUGMENT, (0.5,) * 3, (0.25,) * 3, batch_size=16, shuffle=False,
                         num_workers=0)
    if dies_in_epoch is not None:
        test = DiesInEpoch(test, dies_in_epoch)
    model = tiny_model(in_features=3 * 32 * 32)
    opt = make_optimizer("sgd", model.parameters(), lr=0.05, nesterov=True, weight_decay=5e-4)
    sched = one_cycle(opt, max_lr=0.05, epochs=4, steps_per_epoch=len(train), peak_epoch=1)
    history = fit(model, train, test, opt, 4, scheduler=sched, verbose=False,
                  path=fast_path("cpu", amp="off"),
                  checkpoint=Checkpointing(tmp_path / ckpt_name, resume=resume))
    return history, model


@pytest.mark.parametrize("num_workers", [0, 2])
def test_classic_path_resumes_exactly(tmp_path, num_workers):
    """Per-image augmentation in (persistent) workers: a run killed in epoch 3 and resumed in a new
    session trains epochs 3 and 4 on the same augmented images as an unbroken run."""
    straight, straight_model = _classic_run(tmp_path, "a.pt", 0, resume=False, num_workers=num_workers)
    with pytest.raises(KeyboardInterrupt):
        _classic_run(tmp_path, "b.pt", 0, resume=True, dies_in_epoch=3, num_workers=num_workers)
    resumed, resumed_model = _classic_run(tmp_path, "b.pt", 123, resume=True, num_workers=num_workers)
    for name in ("train_loss", "train_acc", "test_loss", "test_acc", "lrs"):
        assert getattr(resumed, name) == getattr(straight, name), name
    for a, b in zip(straight_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.equal(a, b)


def test_resume_without_the_scheduler_is_refused(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "c.pt", seed=0, loader_seed=None, resume=False, dies_in_epoch=2)
    model = tiny_model()
    opt = make_optimizer("sgd", model.parameters(), lr=0.05)
    with pytest.raises(ValueError, match="scheduler"):
        fit(model, DataLoader(tiny_data(), batch_size=8), None, opt, 4, verbose=False,
            path=fast_path("cpu", amp="off"),
            checkpoint=Checkpointing(tmp_path / "c.pt", resume=True))


def test_resume_with_other_settings_is_refused_naming_each(tmp_path):
    def run(settings, resume):
        model = tiny_model()
        opt = make_optimizer("sgd", model.parameters(), lr=0.05)
        return fit(model, DataLoader(tiny_data(), batch_size=8), None, opt, 2, verbose=False,
                   path=fast_path("cpu", amp="off"),
                   checkpoint=Checkpointing(tmp_path / "s.pt", resume=resume, settings=settings))

    run({"batch_size": 8, "seed": 1}, resume=False)
    with pytest.raises(ValueError, match=r"seed: 1 in the checkpoint, 2 now.*another folder") as err:
        run({"batch_size": 8, "seed": 2, "subset": 100}, resume=True)
    assert "subset: '(not set)' in the checkpoint, 100 now" in str(err.value) and "batch_size" not in str(err.value)
    assert len(run({"batch_size": 8, "seed": 1}, resume=True).train_loss) == 2  # the same settings: resumed


def test_schedule_longer_than_training_warns():
    data = DataLoader(tiny_data(n=16), batch_size=8)
    model = tiny_model()
    opt = make_optimizer("adam", model.parameters(), lr=1e-3)
    sched = one_cycle(opt, 1e-2, epochs=4, steps_per_epoch=len(data), peak_epoch=1)
    with pytest.warns(UserWarning, match="stop before the schedule ends"):
        fit(model, data, None, opt, 2, scheduler=sched, verbose=False, path=fast_path("cpu", amp="off"))


def test_checkpoint_unwraps_compiled_model_and_loads_weights(tmp_path):
    model = tiny_model()
    compiled = torch.compile(model)  # lazy: nothing is compiled until it is called
    path = save_checkpoint(tmp_path / "ck.pt", compiled, epoch=3, history=History(train_loss=[1.0]))
    ckpt = torch.load(path, weights_only=True)
    assert not any(k.startswith("_orig_mod") for k in ckpt["model"])
    fresh = tiny_model()
    ckpt = load_checkpoint(path, fresh, restore_rng=False)
    assert ckpt["epoch"] == 3 and History.from_dict(ckpt["history"]).train_loss == [1.0]
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        load_checkpoint(tmp_path / "missing.pt", fresh)


def test_each_pass_iterates_the_loader_once():
    """tqdm.auto would call iter() twice per pass (worker pools started twice); the engine must not."""

    class Counting:
        def __init__(self, loader):
            self.loader, self.iters = loader, 0

        def __len__(self):
            return len(self.loader)

        def __iter__(self):
            self.iters += 1
            return iter(self.loader)

    data = DataLoader(tiny_data(n=16), batch_size=8)
    train, test = Counting(data), Counting(data)
    model = tiny_model()
    opt = make_optimizer("adam", model.parameters(), lr=1e-3)
    fit(model, train, test, opt, 2, verbose=True, path=fast_path("cpu", amp="off"))
    assert (train.iters, test.iters) == (2, 2)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on the CPU needs a C++ compiler")
def test_real_compile_builds_one_graph_for_a_whole_run():
    # What the fast path relies on: with drop_last the compiled training pass meets one batch
    # shape, and evaluation runs eagerly, so a whole run compiles exactly one graph (~15 s here).
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (80, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 80)
    stats = dict(mean=(0.5,) * 3, std=(0.25,) * 3, device="cpu", channels_last=True)
    train = GPULoader(images, labels, 16, spec=S10_AUGMENT, drop_last=True, seed=0, **stats)
    test = GPULoader(images[:20], labels[:20], 16, spec=NO_AUGMENT, shuffle=False, **stats)  # 16 + 4
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    opt = make_optimizer("adam", model.parameters(), 1e-3)
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    history = fit(model, train, test, opt, 2, scheduler=one_cycle(opt, 1e-2, 2, len(train), peak_epoch=1), verbose=False,
                  path=replace(fast_path("cpu", amp="bf16"), channels_last=True, compile=True))
    assert counters["stats"]["unique_graphs"] == 1
    assert len(history.test_acc) == 2 and all(t > 0 for t in history.train_times)
    torch._dynamo.reset()


@pytest.mark.parametrize("flags, native", [
    ("flags\t\t: fpu sse avx512f avx512_bf16 amx_tile", True),
    ("flags\t\t: fpu sse avx512f amx_bf16", True),
    ("Features\t: fp asimd bf16 i8mm", True),  # ARM with the BF16 extension
    ("flags\t\t: fpu sse avx2 avx512f", False),  # an Intel Xeon without it: bf16 would be emulated
    ("", False),
])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, monkeypatch, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\n{flags}\n")
    assert speed.cpu_has_native_bf16(cpuinfo) is native
    assert speed.cpu_has_native_bf16(tmp_path / "missing") is False  # not Linux: never assumed
    for limit, value in (("ATEN_CPU_CAPABILITY", "avx2"), ("ONEDNN_MAX_CPU_ISA", "AVX2")):
        with monkeypatch.context() as capped:  # AVX-512 turned off, standing in for a CPU without it: emulated
            capped.setenv(limit, value)
            assert speed.cpu_has_native_bf16(cpuinfo) is (native and flags.startswith("Features"))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")  # a cap above bf16's instructions changes nothing
    assert speed.cpu_has_native_bf16(cpuinfo) is native
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: native)
    assert speed.fast_path("cpu").amp == ("bf16" if native else "off")  # what every CPU run trains in
    assert speed.fast_path("cpu", enabled=False).amp == "off"  # the classic path: fp32
    assert speed.fast_path("cpu", amp="off").amp == "off"  # asked for: kept


@pytest.mark.parametrize("capability, amp, enabled, channels_last", [
    ("AVX2", None, True, True),  # a CPU without AVX-512 trains in fp32: channels_last (faster there)
    ("AVX2", "off", True, True),
    ("AVX2", "bf16", True, False),  # bf16 asked for on such a CPU: not measured there, NCHW kept
    ("AVX2", None, False, False),  # the classic path: NCHW
    ("AVX512", None, True, False),  # AVX-512 kernels gained nothing from it through fit
    ("AVX512", "off", True, False),
    ("DEFAULT", None, True, False),  # e.g. an ARM CPU: not measured
])
def test_channels_last_on_a_cpu_only_where_its_kernels_are_avx2(monkeypatch, capability, amp, enabled,
                                                                 channels_last):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: False)
    assert speed.cpu_kernels_are_avx2() is (capability == "AVX2")
    path = speed.fast_path("cpu", enabled=enabled, amp=amp)
    assert path.channels_last is channels_last
    assert ("channels_last" in path.describe()) is channels_last  # the run's log and report say which


def test_stand_in_cpu_reports_avx2_kernels():
    """Under ATEN_CPU_CAPABILITY=avx2 (the stand-in for a CPU without AVX-512) torch says AVX2, so the rule applies."""
    if not hasattr(torch.backends.cpu, "get_cpu_capability") or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("torch.backends.cpu.get_cpu_capability (torch >= 2.1) on an x86 CPU")
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "AVX2"


def test_fp16_skipped_steps_are_counted_per_epoch(monkeypatch):
    """T4's path: GradScaler skips a step whose gradients overflowed; fit counts those steps in the History
    (no GPU here: a CPU GradScaler in fp32 scales and skips the same way)."""
    amp = getattr(torch.amp, "GradScaler", None)
    if amp is None:
        pytest.skip("torch.amp.GradScaler (torch >= 2.3) runs on the CPU")
    monkeypatch.setattr(engine, "resolve_amp", lambda device, mode: (None, amp("cpu", init_scale=2.0**16)))
    data = tiny_data(n=32)
    model = tiny_model()
    opt = make_optimizer("sgd", model.parameters(), lr=1e-3)

    class Overflows(nn.Module):  # the first step of each epoch overflows: 1e35 * 2**16 is inf in fp32
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, logits, labels):
            loss = nn.functional.cross_entropy(logits, labels)
            self.calls += 1
            return loss * 1e35 if self.calls % 4 == 1 else loss

    history = fit(model, DataLoader(data, batch_size=8), None, opt, 2, criterion=Overflows(), verbose=False,
                  path=fast_path("cpu", amp="off"))
    assert history.skipped_steps == [1.0, 1.0]  # one of 4 steps per epoch
    monkeypatch.undo()  # no scaler (bf16, fp32): nothing to count, no list of zeros
    plain = fit(model, DataLoader(data, batch_size=8), None, make_optimizer("sgd", model.parameters(), lr=1e-3), 1,
                verbose=False, path=fast_path("cpu", amp="off"))
    assert plain.skipped_steps == []
