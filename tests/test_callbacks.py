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
from era_utils.checkpoint import Checkpointing
from era_utils.data import FASHION_MNIST_SYSTEM_DIR
from era_utils.engine import fit
from era_utils.loggers import CSV_COLUMNS, CSVLogger, TensorBoardLogger, make_loggers
from era_utils.speed import fast_path

pytestmark = pytest.mark.usefixtures("one_thread")


def _fit(epochs=3, callbacks=(), checkpoint=None, resume=False, test=True):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(48, 6), torch.randint(0, 3, (48,)))
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))  # a different LR every step
    return fit(model, DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(1)),
               DataLoader(data, batch_size=16) if test else None, opt, epochs, scheduler=sched, callbacks=callbacks,
               verbose=False, path=fast_path("cpu", amp="off"),
               checkpoint=Checkpointing(checkpoint, resume=resume) if checkpoint else None)


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
    with pytest.raises(ValueError, match=r"unknown logger\(s\) \['mlflow'\].*csv, tensorboard, wandb"):
        make_loggers("csv,mlflow", tmp_path)
    assert main(["run", "s7_lite", "--quick", "--log", "tensorbord", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "unknown logger(s) ['tensorbord']" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not FASHION_MNIST_SYSTEM_DIR.exists(), reason="Fashion-MNIST not installed")
def test_the_run_command_logs_to_csv_tensorboard_and_wandb(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    assert main(["run", "s7_lite", "--quick", "--log", "csv,tensorboard,wandb", "--out", str(out), "--quiet"]) == 0
    assert [r["epoch"] for r in _wandb_history(out) if "epoch" in r] == [1]
    with open(out / "log.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 1  # the quick run's one epoch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {"curves", "confusion_matrix", "misclassified"} <= set(events.Tags()["images"])


def _wandb_history(folder) -> list[dict]:
    """The history rows of the offline W&B run under `folder`, read from its .wandb file (a LevelDB-style
    log of protobuf Records: 7-byte file header, 32 KiB blocks, 7-byte record headers)."""
    import json
    import struct

    from wandb.proto import wandb_internal_pb2

    (path,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    data, block = path.read_bytes(), 32768
    pos, chunks, rows = 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (length == 0 and kind == 0):  # block padding
            pos += left
            continue
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


def test_a_wandb_run_offline_holds_the_history(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from era_utils.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(name="test", config={"seed": 1}, folder=tmp_path)
    history = _fit(epochs=2, callbacks=[logger])
    logger.close()
    rows = _wandb_history(tmp_path)
    epochs = [r for r in rows if "epoch" in r]
    assert [r["loss/train"] for r in epochs] == pytest.approx(history.train_loss)
    assert [r["accuracy/test"] for r in epochs] == pytest.approx(history.test_acc)
    assert [r["lr/step"] for r in rows if "step" in r] == pytest.approx(history.lrs)


def test_wandb_online_without_a_key_refuses_instead_of_prompting(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from era_utils.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from a `wandb login`
    with pytest.raises(ValueError, match="needs an API key: set WANDB_API_KEY.*Never write the key"):
        WandbLogger(folder=tmp_path)
