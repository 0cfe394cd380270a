"""Loggers: `fit` callbacks that keep a run's numbers (and its figures) where a student looks.

    CSVLogger(path)              one row per epoch; no dependency, always available
    TensorBoardLogger(log_dir)   torch.utils.tensorboard (pip install "era_utils[tensorboard]")
    WandbLogger(project, ...)    Weights & Biases (pip install "era_utils[wandb]"); WANDB_MODE honoured

Each logs, per epoch: training and test loss and accuracy, the epoch's last LR and its wall time;
per step: the LR; at the end of a run: its figures (TensorBoard, W&B). `make_loggers("csv,tensorboard",
folder)` builds them for `era-utils run --log`. In Colab, see TensorBoard beside the notebook with
`%load_ext tensorboard` then `%tensorboard --logdir runs`.
"""
from __future__ import annotations

import csv
import io
import netrc
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from era_utils.callbacks import Callback, FitInfo
from era_utils.files import atomic_write
from era_utils.utils import colab_secret

if TYPE_CHECKING:
    from era_utils.engine import History

__all__ = ["CSV_COLUMNS", "EPOCH_TAGS", "LOGGERS", "CSVLogger", "TensorBoardLogger", "WandbLogger", "logger_names",
           "make_loggers"]

# Per-epoch values: logger tag -> History column (CSV_COLUMNS).
EPOCH_TAGS = {"loss/train": "train_loss", "loss/test": "test_loss", "accuracy/train": "train_acc",
              "accuracy/test": "test_acc", "lr": "lr", "epoch_seconds": "epoch_seconds"}
CSV_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_seconds")


def _epoch_row(history: "History", k: int) -> dict[str, Any]:
    """Epoch k's (0-based) numbers from a History: the CSV's columns."""
    steps = len(history.lrs) // max(len(history.train_loss), 1)

    def at(values: list, i: int) -> Any:
        return values[i] if i < len(values) else None

    return {"epoch": k + 1, "train_loss": history.train_loss[k], "train_acc": history.train_acc[k],
            "test_loss": at(history.test_loss, k), "test_acc": at(history.test_acc, k),
            "lr": at(history.lrs, (k + 1) * steps - 1), "epoch_seconds": at(history.epoch_times, k)}


class CSVLogger(Callback):
    """`path` (a .csv): one row per finished epoch, rewritten whole and atomically after each, so it
    always equals the History (a resumed run's earlier epochs included) and is never half written."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def on_epoch_end(self, epoch: int, history: "History") -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(_epoch_row(history, k) for k in range(len(history.train_loss)))
        with atomic_write(self.path) as f:
            f.write(buffer.getvalue())


class TensorBoardLogger(Callback):
    """Event files in `log_dir` for TensorBoard: per-epoch scalars (loss/train, loss/test,
    accuracy/train, accuracy/test, lr, epoch_seconds, x = epoch), lr/step (x = step) and the run's
    figures. A resumed run logs only its new epochs."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # torch's writer needs the tensorboard package
            raise ImportError("TensorBoard logging needs the tensorboard package: pip install "
                              "'era_utils[tensorboard]' (or pip install tensorboard)") from err
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(str(self.log_dir))

    def on_fit_start(self, info: FitInfo) -> None:
        self.writer.add_text("run", f"{type(info.model).__name__}, {info.epochs} epochs on {info.device}"
                             + (f", resumed after epoch {info.start_epoch}" if info.start_epoch else ""))

    def on_epoch_end(self, epoch: int, history: "History") -> None:
        row = _epoch_row(history, epoch - 1)
        for tag, key in EPOCH_TAGS.items():
            if row[key] is not None:
                self.writer.add_scalar(tag, row[key], epoch)
        steps = len(history.lrs) // len(history.train_loss)
        for step in range((epoch - 1) * steps, epoch * steps):
            self.writer.add_scalar("lr/step", history.lrs[step], step + 1)
        self.writer.flush()

    def log_figure(self, name: str, figure: Any) -> None:
        self.writer.add_figure(Path(name).stem, figure, close=False)  # the run still saves it as PNG
        self.writer.flush()

    def on_fit_end(self, history: "History") -> None:
        self.writer.flush()

    def close(self) -> None:
        """Close the event file (the runner does, after the last figure)."""
        self.writer.close()


def _wandb_key_available() -> bool:
    """Is there a W&B API key: WANDB_API_KEY, Colab's Secrets (copied into the environment), or a
    `wandb login` in ~/.netrc? Never a key written in code."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    secret = colab_secret("WANDB_API_KEY")
    if secret:
        os.environ["WANDB_API_KEY"] = secret  # wandb reads it from there
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbLogger(Callback):
    """A Weights & Biases run: per-epoch metrics (x = epoch), per-step LR (x = step) and the run's
    figures. WANDB_MODE=offline keeps it on disk (sync later with `wandb sync`), disabled turns it
    off. Online, the API key comes only from WANDB_API_KEY, Colab's Secrets or `wandb login`; without
    one this refuses to start rather than wait at a login prompt."""

    def __init__(self, project: str = "era_utils", name: str | None = None, config: dict | None = None,
                 folder: str | os.PathLike | None = None) -> None:
        try:
            import wandb
        except ImportError as err:
            raise ImportError("W&B logging needs the wandb package: pip install 'era_utils[wandb]' "
                              "(or pip install wandb)") from err
        mode = os.environ.get("WANDB_MODE", "online")
        if mode not in ("offline", "disabled", "dryrun") and not _wandb_key_available():
            raise ValueError("W&B logging online needs an API key: set WANDB_API_KEY in the environment or, in "
                             "Colab, as a Secret (the key icon), or run `wandb login`; WANDB_MODE=offline logs "
                             "to disk without one. Never write the key in a notebook.")
        self.wandb = wandb
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=project, name=name, config=config, dir=None if folder is None else str(folder))
        self.run.define_metric("epoch")
        self.run.define_metric("step")
        self.run.define_metric("lr/step", step_metric="step")
        for tag in EPOCH_TAGS:
            self.run.define_metric(tag, step_metric="epoch")

    def on_epoch_end(self, epoch: int, history: "History") -> None:
        steps = len(history.lrs) // len(history.train_loss)
        for step in range((epoch - 1) * steps, epoch * steps):
            self.run.log({"step": step + 1, "lr/step": history.lrs[step]})
        row = _epoch_row(history, epoch - 1)
        self.run.log({"epoch": epoch, **{tag: row[key] for tag, key in EPOCH_TAGS.items() if row[key] is not None}})

    def log_figure(self, name: str, figure: Any) -> None:
        self.run.log({f"figures/{Path(name).stem}": self.wandb.Image(figure)})

    def close(self) -> None:
        """Finish the W&B run (the runner does, after the last figure)."""
        self.run.finish()
        # finish() can return before wandb's service has written the run's file (seen offline, wandb
        # 0.31: 1 run in 4 left only its header); teardown waits for the service to flush and stop.
        self.wandb.teardown()


LOGGERS = ("csv", "tensorboard", "wandb")


def logger_names(names: str | None) -> list[str]:
    """The loggers named in "csv,tensorboard" (None or "": none), each once; an unknown name is refused."""
    chosen = list(dict.fromkeys(n.strip() for n in (names or "").split(",") if n.strip()))
    unknown = [n for n in chosen if n not in LOGGERS]
    if unknown:
        raise ValueError(f"unknown logger(s) {unknown} (--log): choose from {', '.join(LOGGERS)}, comma-separated")
    return chosen


def make_loggers(names: str | None, folder: str | os.PathLike, config: dict | None = None) -> list[Callback]:
    """Loggers named in `names` ("csv,tensorboard,wandb") writing under `folder`: log.csv,
    tensorboard/, wandb/ (a W&B run named after the folder, `config` its settings)."""
    folder = Path(folder)
    made = {"csv": lambda: CSVLogger(folder / "log.csv"),
            "tensorboard": lambda: TensorBoardLogger(folder / "tensorboard"),
            "wandb": lambda: WandbLogger(name=folder.name, config=config, folder=folder)}
    return [made[name]() for name in logger_names(names)]
