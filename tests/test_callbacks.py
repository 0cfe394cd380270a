"""fit's hooks (era_utils.callbacks) and the loggers on them: what each hook is told and when, a hook
that raises stops the run, the CSV equals the History, TensorBoard's own reader finds its values."""
from __future__ import annotations

import csv

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from era_utils.callbacks import Callback, CallbackError
from era_utils.cli import main
from era_utils.data import FASHION_MNIST_SYSTEM_DIR
from era_utils.engine import fit
from era_utils.loggers import CSV_COLUMNS, CSVLogger, TensorBoardLogger, make_loggers

pytestmark = pytest.mark.usefixtures("one_thread")


def _fit(epochs=3, callbacks=(), checkpoint=None, resume=False, test=True):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(48, 6), torch.randint(0, 3, (48,)))
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))  # a different LR every step
    return fit(model, DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(1)),
               DataLoader(data, batch_size=16) if test else None, opt, epochs, scheduler=sched, device="cpu",
               checkpoint_path=checkpoint, resume=resume, callbacks=callbacks, verbose=False)


class Recorder(Callback):
    every_n_steps = 4

    def __init__(self):
        self.calls = []

    def on_fit_start(self, info):
        self.calls.append(("start", info.epochs, info.start_epoch, info.steps_per_epoch))

    def on_steps(self, step, values):
        self.calls.append(("steps", step, sorted(values)))

    def on_epoch_end(self, epoch, history):
        self.calls.append(("epoch", epoch, len(history.train_loss), len(history.test_acc)))

    def on_fit_end(self, history):
        self.calls.append(("end", len(history.train_loss)))


def test_each_hook_is_called_when_the_protocol_says():
    recorder = Recorder()
    _fit(epochs=2, callbacks=[recorder])
    keys = ["acc", "loss", "lr"]
    assert recorder.calls == [
        ("start", 2, 0, 6),
        ("steps", 4, keys), ("epoch", 1, 1, 1),  # 6 steps an epoch: every 4th of the run's 12
        ("steps", 8, keys), ("steps", 12, keys), ("epoch", 2, 2, 2),
        ("end", 2),
    ]


def test_a_hook_that_raises_stops_the_run_with_its_message(tmp_path):
    class Stop(Callback):
        def on_epoch_end(self, epoch, history):
            if epoch == 2:
                raise RuntimeError("disk full")

    with pytest.raises(CallbackError, match=r"Stop.on_epoch_end failed, so the run stopped: RuntimeError: disk full"):
        _fit(epochs=3, callbacks=[Stop()], checkpoint=tmp_path / "c.pt")
    assert torch.load(tmp_path / "c.pt", weights_only=True)["epoch"] == 2  # the finished epochs are kept


def test_csv_logger_equals_the_history(tmp_path):
    path = tmp_path / "log.csv"
    history = _fit(epochs=2, callbacks=[CSVLogger(path)])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 2
    steps = len(history.lrs) // 2
    for k, row in enumerate(rows):
        assert int(row["epoch"]) == k + 1
        assert float(row["train_loss"]) == history.train_loss[k] and float(row["test_acc"]) == history.test_acc[k]
        assert float(row["lr"]) == history.lrs[(k + 1) * steps - 1]
        assert float(row["epoch_seconds"]) == history.epoch_times[k]


def test_csv_logger_keeps_the_epochs_of_the_run_it_resumes(tmp_path):
    class DiesAfter(Callback):
        def on_epoch_end(self, epoch, history):
            if epoch == 1:
                raise RuntimeError("the Colab session died")

    path = tmp_path / "log.csv"
    with pytest.raises(CallbackError):
        _fit(epochs=3, callbacks=[CSVLogger(path), DiesAfter()], checkpoint=tmp_path / "c.pt")
    history = _fit(epochs=3, callbacks=[CSVLogger(path)], checkpoint=tmp_path / "c.pt", resume=True)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["train_loss"]) for r in rows] == history.train_loss and len(rows) == 3


def test_tensorboard_event_files_hold_the_history(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path / "tb")
    history = _fit(epochs=3, callbacks=[logger])
    import matplotlib.pyplot as plt

    fig = plt.figure()
    logger.log_figure("curves.png", fig)
    plt.close(fig)
    logger.close()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()

    def values(tag):
        return [(e.step, e.value) for e in events.Scalars(tag)]

    assert values("loss/train") == [(k + 1, pytest.approx(v)) for k, v in enumerate(history.train_loss)]
    assert values("accuracy/test") == [(k + 1, pytest.approx(v)) for k, v in enumerate(history.test_acc)]
    assert values("lr/step") == [(s + 1, pytest.approx(v)) for s, v in enumerate(history.lrs)]
    assert len(values("epoch_seconds")) == 3 and "curves" in events.Tags()["images"]


def test_unknown_loggers_are_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"unknown logger\(s\) \['mlflow'\].*csv, tensorboard"):
        make_loggers("csv,mlflow", tmp_path)
    assert main(["run", "s7_lite", "--quick", "--log", "wandb", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "unknown logger(s) ['wandb']" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not FASHION_MNIST_SYSTEM_DIR.exists(), reason="Fashion-MNIST not installed")
def test_the_run_command_logs_to_csv_and_tensorboard(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "s7_lite", "--quick", "--log", "csv,tensorboard", "--out", str(out), "--quiet"]) == 0
    with open(out / "log.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 1  # the quick run's one epoch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {"curves", "confusion_matrix", "misclassified"} <= set(events.Tags()["images"])
