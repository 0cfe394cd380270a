"""`era-utils run`: one assignment end to end, as the chain of `era_utils.steps` calls, with its files.

Every step here is also a notebook cell; this module adds only where the results go: each figure,
history.json, metrics.json (and for HW2P2 the Kaggle CSVs) in the plan's folder, written atomically.
Launched as several processes (torchrun, `--nproc`), every process trains; rank 0 alone runs the LR
range test (its LRs reach the others), writes every file and analyses the trained model.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from era_utils import __version__, distributed, folder_lock, plots
from era_utils.analysis import Predictions, confusion_matrix, most_confused, per_class_accuracy
from era_utils.callbacks import Callback, call_hooks
from era_utils.checkpoint import read_checkpoint
from era_utils.engine import History
from era_utils.files import write_json, write_text
from era_utils.gradcam import CAM_NAMES, default_target_layer_name, gradcam
from era_utils.kaggle import write_classification_csv, write_verification_csv
from era_utils.loaders import augment_examples
from era_utils.loggers import make_loggers
from era_utils.lr_finder import LRFinderResult
from era_utils.plan import RunPlan
from era_utils.report import assignment_checks, git_commit, render_report, render_seeds_report
from era_utils.settings import run_command
from era_utils.speed import precision_name
from era_utils.steps import (Data, Verification, build_loaders, build_model,
                             kaggle_predictions, load_data, optimizer_and_schedule, range_test, start,
                             final_predictions, train, verify)
from era_utils.summary import summary
from era_utils.utils import device_name

__all__ = ["RunFolder", "full_length_command", "run_recipe", "run_seeds"]


class RunFolder:
    """A run's output folder: every file written atomically and listed in `files` (for metrics.json)."""

    def __init__(self, path: Path, loggers: Sequence[Callback] = ()) -> None:
        self.path = Path(path)  # made by the first write (start() has checked it can be)
        self.files: list[str] = []
        self.loggers = list(loggers)  # each figure goes to them too (TensorBoard)

    def _add(self, name: str) -> Path:
        if name not in self.files:
            self.files.append(name)
        return self.path / name

    def figure(self, name: str, fig: Figure) -> None:
        """Save a figure as PNG (and hand it to the loggers)."""
        plots.save_figure(fig, self._add(name))
        call_hooks(self.loggers, "log_figure", name, fig)

    def json(self, name: str, obj: Any) -> None:
        """Save strict JSON (NaN becomes null)."""
        write_json(self._add(name), obj)

    def text(self, name: str, text: str) -> None:
        """Save a text file."""
        write_text(self._add(name), text)

    def file(self, name: str) -> Path:
        """The path of a file another writer fills (e.g. a Kaggle CSV), listed with the rest."""
        return self._add(name)

    def read_json(self, name: str) -> Optional[Any]:
        """A JSON file an earlier run left here, or None."""
        path = self.path / name
        return json.loads(path.read_text()) if path.is_file() else None


def _releases_its_folder(run: Callable[..., Any]) -> Callable[..., Any]:
    """`run(plan, ...)`, then the plan's folder released (start() took it), however the run ends."""
    @functools.wraps(run)
    def wrapper(plan: RunPlan, *args: Any, **kwargs: Any) -> Any:
        try:
            return run(plan, *args, **kwargs)
        finally:
            folder_lock.release(plan.out)
    return wrapper


@_releases_its_folder
def run_recipe(plan: RunPlan, command: Optional[str] = None) -> Optional[dict]:
    """Run the plan's assignment end to end; its figures, history.json, metrics.json and report.md go
    to plan.out. The steps are those a notebook runs, one cell each; every analysis reads one pass over
    the test set: the last epoch's, which `train` kept (`final_predictions`). Returns the metrics (None on
    the processes other than rank 0, which only train)."""
    run = _Run(plan, RunFolder(plan.out), command, time.perf_counter())
    folder, recipe, say = run.folder, plan.recipe, (print if plan.verbose else _silent)
    start(plan)  # seeds; says so when a full-length recipe is about to run on a CPU; joins torchrun's group
    data = run.data = load_data(plan)
    train_loader, test_loader = build_loaders(plan, data)  # this process's shares
    model = run.model = build_model(plan, data)
    if not distributed.is_main():
        return _train_beside_rank_0(plan, model, train_loader, test_loader)
    # Rank 0 (the only process, usually): the range test and the analysis see the whole data.
    whole_train, whole_test = build_loaders(plan, data, whole=True) if plan.processes > 1 else (train_loader, test_loader)
    folder.loggers = make_loggers(plan.asked.log, plan.out, config=plan.checkpoint_settings())  # --log: after start() checked out
    say(plan.log_lines(data))
    images, labels = data.samples(10)
    folder.figure("samples.png", plots.plot_samples(images, labels, data.classes,
                                                    title=f"Sample training images ({data.title})"))
    folder.figure("augmentations.png", plots.plot_augmentations(
        images, augment_examples(whole_train, images), labels, data.classes, mean=data.mean, std=data.std))

    folder.text("summary.txt", f"{summary(model, data.input_size)}\n")
    run.learning_rates(whole_train)
    if run.lr_test is not None:
        folder.figure("lr_finder.png", run.lr_test.plot(title=f"LR range test ({data.title})"))
        folder.json("lr_finder.json", run.lr_test.to_dict())
    optimizer, scheduler = optimizer_and_schedule(plan, model, train_loader, run.lrs)
    del whole_train  # several processes: its copy of the data (or its workers) is not needed again

    run.resumed_after = _checkpoint_epochs(plan)
    train_start = time.perf_counter()
    history = run.history = train(plan, model, train_loader, test_loader, optimizer, scheduler,
                                  callbacks=folder.loggers)
    run.trained(train_start)
    folder.json("history.json", history.to_dict())
    folder.figure("curves.png", plots.plot_history(history, title=f"{recipe.title.split(':')[0]} on {data.title}",
                                                   augmented=_augmentation(recipe)))
    folder.figure("lr_schedule.png", plots.plot_lr(history, steps_per_epoch=len(train_loader)))

    preds = run.preds = final_predictions(plan, model, whole_test, history)  # the pass every analysis reads
    wrong = preds.misclassified(10)
    folder.figure("misclassified.png", plots.plot_misclassified(wrong, data.classes))
    folder.figure("top_losses.png", plots.plot_top_losses(preds.top_losses(10), data.classes))
    if wrong:
        run.gradcam_layer, method = default_target_layer_name(model, data.input_size), recipe.cam_method
        folder.figure("gradcam.png", plots.plot_gradcam(wrong, gradcam(model, wrong, run.gradcam_layer, method=method),
                                                        data.classes, layer=run.gradcam_layer, method=CAM_NAMES[method]))
    run.cm = confusion_matrix(preds, num_classes=len(data.classes))
    folder.figure("per_class_accuracy.png", plots.plot_per_class_accuracy(per_class_accuracy(preds), data.classes))
    folder.figure("confusion_matrix.png", plots.plot_confusion_matrix(run.cm, data.classes, normalize=True))
    if recipe.verification:
        result = run.verification = verify(plan, data, model)
        folder.figure("roc.png", plots.plot_roc(result.metrics, title=result.title))
        folder.json("roc.json", _roc_curves(result))
        write_verification_csv(folder.file("verification_submission.csv"), result.test_ids, result.test_scores)
        write_classification_csv(folder.file("classification_submission.csv"),
                                 *kaggle_predictions(plan, data, model, preds), data.classes)
    run.misclassified_shown = len(wrong)
    metrics = run.finish(say)
    for logger in folder.loggers:
        getattr(logger, "close", _silent)()  # TensorBoard: the last figures reach the event file
    return metrics


def _without_float_noise(obj: Any) -> Any:
    """`obj` with every float written to 10 significant digits: 86.62, not 86.61999999999999."""
    if isinstance(obj, dict):
        return {k: _without_float_noise(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_without_float_noise(v) for v in obj]
    return float(f"{obj:.10g}") if isinstance(obj, float) else obj


def _augmentation(recipe: Any) -> str | bool:
    """How the recipe augments its training images, in words, for the curves' note; False: it does not."""
    return False if recipe.augment.is_identity else recipe.augment.describe()


def _checkpoint_epochs(plan: RunPlan) -> int:
    """Epochs the checkpoint in the plan's folder holds when the run resumes from it; 0 otherwise."""
    if not (plan.asked.resume and plan.asked.checkpoints and plan.checkpoint_path.is_file()):
        return 0
    return int(read_checkpoint(plan.checkpoint_path, mmap=True)["epoch"])


def _train_beside_rank_0(plan: RunPlan, model: torch.nn.Module, train_loader: Any, test_loader: Any) -> None:
    """A process other than rank 0: train on its shares, from the LRs rank 0 sends; rank 0 writes."""
    optimizer, scheduler = optimizer_and_schedule(plan, model, train_loader, distributed.broadcast_object(None))
    train(plan, model, train_loader, test_loader, optimizer, scheduler, callbacks=[])


def _silent(*_args: Any, **_kwargs: Any) -> None:
    return None


@dataclass
class _Run:
    """What one run made, gathered for metrics.json and report.md."""

    plan: RunPlan
    folder: RunFolder
    command: Optional[str]
    started: float  # time.perf_counter() at the start
    data: Optional[Data] = None
    model: Optional[torch.nn.Module] = None
    lr_test: Optional[LRFinderResult] = None  # the range test this process ran
    lr_finder: Optional[dict] = None  # its summary, or the summary a resumed run's first part saved
    resumed_after: int = 0  # epochs the checkpoint a resumed run carried on from held
    lrs: tuple[float, Optional[float]] = (0.0, None)  # the max and min LR trained with
    history: Optional[History] = None
    train_seconds: float = 0.0  # the whole run's training: this process's, and the epochs before a resume
    seconds: dict[str, float] = field(default_factory=dict)  # what this process spent its time on, by part
    preds: Optional[Predictions] = None
    cm: Any = None
    misclassified_shown: int = 0
    gradcam_layer: Optional[str] = None
    verification: Optional[Verification] = None

    def learning_rates(self, train_loader: Any) -> None:
        """The max and min LR to train with: the range test's (rank 0 runs it), the recipe's or, resuming
        from a checkpoint, those the run started with (run_state.json, with its range test's result and
        figure); sent to the other processes too. Without a checkpoint a resumed run starts over."""
        plan, begun = self.plan, time.perf_counter()
        self.seconds["setup"] = begun - self.started  # data, loaders, model, the first figures, the summary
        state = self.folder.read_json("run_state.json") if plan.asked.resume and plan.checkpoint_path.is_file() else None
        if plan.asked.resume and state is None and self.folder.read_json("run_state.json") and plan.verbose:
            print(f"  no checkpoint in {plan.out} yet (it is written after the first epoch): the run starts over, "
                  "the range test included, as an unbroken run would")
        self.lr_test = None if state else range_test(plan, self.model, train_loader)
        if self.lr_test is not None:
            self.seconds["range_test"] = time.perf_counter() - begun
        self.lrs = ((state["max_lr"], state.get("min_lr")) if state else
                    (self.lr_test.suggestion, self.lr_test.min_lr) if self.lr_test else (plan.recipe.lr, None))
        self.lr_finder = state.get("lr_finder") if state else self._lr_finder_summary()
        if state and self.lr_finder:  # the range test ran before the kill: its figure and numbers are the run's
            self.folder.files += [name for name in ("lr_finder.png", "lr_finder.json")
                                  if (plan.out / name).is_file() and name not in self.folder.files]
        distributed.broadcast_object(self.lrs)  # the other processes wait for these to build their schedule
        # Not a result (not listed among the run's files): what a resumed run needs from this one.
        write_json(plan.out / "run_state.json", {"max_lr": self.lrs[0], "min_lr": self.lrs[1], "lr_finder": self.lr_finder})

    def trained(self, train_start: float) -> None:
        """Training has ended: its time, with the epochs before a resume (their recorded times)."""
        self.seconds["training"] = time.perf_counter() - train_start
        self.train_seconds = self.seconds["training"] + sum(self.history.epoch_times[:self.resumed_after])

    def _lr_finder_summary(self) -> Optional[dict]:
        """metrics.json's lr_finder block: the range test's suggestion, rules and range (None: no test)."""
        lr_test, recipe = self.lr_test, self.plan.recipe
        return None if lr_test is None else {
            "suggestion": lr_test.suggestion, "method": lr_test.method, "min_lr": lr_test.min_lr,
            "min_method": lr_test.min_method, "loss_min_lr": lr_test.loss_min_lr, "num_iter": len(lr_test.lrs),
            "start_lr": recipe.lr_finder_start, "end_lr": recipe.lr_finder_end}

    def finish(self, say: Callable[..., None]) -> dict:
        """Write metrics.json (with the assignment's checks) and report.md; return the metrics."""
        metrics = self.metrics()
        checks = assignment_checks(self.plan.recipe, self.model, self.history.to_dict(), metrics, self.folder.files)
        metrics["checks"] = [asdict(check) for check in checks]
        metrics["files"] = self.folder.files + ["metrics.json", "report.md"]
        metrics = _without_float_noise(metrics)
        self.folder.json("metrics.json", metrics)
        self.folder.text("report.md", render_report(metrics))
        say(f"  done: test accuracy {metrics['final_test_acc']:.2f}% (best {metrics['best_test_acc']:.2f}%), "
            f"{metrics['wall_seconds']} s; results and report.md in {self.plan.out}")
        return metrics

    def metrics(self) -> dict:
        """metrics.json: what the run was (recipe, data, device, path, versions) and what it measured."""
        plan, data, history, recipe = self.plan, self.data, self.history, self.plan.recipe
        per_class = per_class_accuracy(self.preds, num_classes=len(data.classes))
        wall = time.perf_counter() - self.started
        return {
            "recipe": recipe.name,
            "title": recipe.title,
            "size": plan.size,
            "size_note": plan.sizing.why if plan.sizing else None,
            "full_command": full_length_command(recipe.name),
            "model": recipe.model,
            "params": sum(p.numel() for p in self.model.parameters()),
            "dataset": data.name,
            "dataset_title": data.title,
            "num_classes": len(data.classes),
            "input_size": "x".join(map(str, data.input_size)),
            "input_channels": data.channels,
            "train_images": len(data.train),
            "test_images": len(data.test),
            "epochs": history.epochs,
            "batch_size": recipe.batch_size,
            "world_size": plan.processes,  # processes that trained together (DDP); the batch is split over them
            "batch_size_per_process": plan.batch_per_process,
            "sync_batchnorm": plan.asked.sync_batchnorm,
            "max_lr": self.lrs[0],
            "min_lr": self.lrs[1],
            "lr_finder": self.lr_finder,
            "final_test_acc": history.test_acc[-1] if history.test_acc else None,
            "best_test_acc": history.best_test_acc,
            "final_train_acc": history.train_acc[-1] if history.train_acc else None,
            "predicted_test_acc": self.preds.accuracy,  # the pass the analysis read: equals final_test_acc
            "target_accuracy": recipe.target_accuracy,
            "per_class_accuracy": dict(zip(data.classes, [round(float(a), 2) for a in per_class])),
            "most_confused": [list(map(str, t)) for t in most_confused(self.cm, data.classes, k=5)],
            "misclassified_shown": self.misclassified_shown,
            "gradcam_layer": self.gradcam_layer,
            "gradcam_method": CAM_NAMES[recipe.cam_method] if self.gradcam_layer else None,
            "verification": None if self.verification is None else _verification_metrics(self.verification),
            "checkpoint": plan.asked.checkpoints and plan.checkpoint_path.is_file(),
            "resumed_after_epochs": self.resumed_after or None,  # --resume carried on from a checkpoint of N epochs
            "loader": plan.loader,
            "fast": plan.fast.enabled,
            "amp": plan.fast.amp,
            "precision": precision_name(plan.fast.amp_dtype),
            # fp16: optimizer steps GradScaler skipped (inf/NaN gradients); None for other precisions
            "fp16_skipped_steps": int(sum(history.skipped_steps)) if history.skipped_steps else None,
            "channels_last": plan.fast.channels_last,
            "compile": plan.fast.compile if isinstance(plan.fast.compile, str) else bool(plan.fast.compile),
            "device": str(plan.device),
            "device_name": device_name(plan.device),
            "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "train_seconds": round(self.train_seconds, 1),  # fit's wall time: training, evaluation, checkpoints
            "train_pass_seconds": round(sum(history.train_times), 1),  # the training passes alone
            "wall_seconds": round(wall, 1),
            # where this process's time went (a resumed run: its own part); analysis: predictions, figures, files
            "seconds": {**{k: round(v, 1) for k, v in self.seconds.items()},
                        "analysis": round(wall - sum(self.seconds.values()), 1)},
            "era_utils": __version__,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "commit": git_commit(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": self.command,  # as typed; from Python, the same run as a command line below
            "as_command": self.plan.as_command(),
            "recipe_settings": asdict(recipe),
        }


def _verification_metrics(result: Verification) -> dict:
    """metrics.json's verification block: AUC, EER, threshold, the pairs, how the embeddings were made."""
    plain = result.without_flip
    return {**result.metrics.to_dict(), "pairs": result.pairs, "tta": result.tta,
            "without_flip": None if plain is None else {"auc": plain.auc, "eer": plain.eer}}


def _roc_curves(result: Verification) -> dict:
    """roc.json: the ROC curve (false and true positive rates), and without flip averaging when it ran."""
    curves = {"tta": result.tta, "auc": result.metrics.auc, "fpr": result.metrics.fpr.tolist(),
              "tpr": result.metrics.tpr.tolist()}
    if result.without_flip is not None:
        curves["without_flip"] = {"auc": result.without_flip.auc, "fpr": result.without_flip.fpr.tolist(),
                                  "tpr": result.without_flip.tpr.tolist()}
    return curves


def full_length_command(name: str) -> str:
    """The command that runs a recipe in full, on its assignment's data (on a GPU)."""
    data = (dict(dataset="faces", data_dir="DATA", dev_pairs="DEV_PAIRS", test_pairs="TEST_PAIRS") if name == "hw2p2"
            else dict(download=True))  # the folders as placeholders, as README writes them
    return " ".join(run_command(name, **data, out=f"results/{name}_full"))


def _seed_verification(metrics: dict) -> dict:
    """One seed's verification numbers for the seeds' summary (none for a recipe that does not verify)."""
    verification = metrics.get("verification")
    if not verification:
        return {}
    plain = verification.get("without_flip") or {}
    return {"auc": verification["auc"], "eer": verification["eer"], **(
        {"auc_without_flip": plain["auc"], "eer_without_flip": plain["eer"]} if plain else {})}


def _mean_and_spread(key: str, runs: list[dict]) -> dict:
    """{"mean_KEY", "std_KEY" (sample standard deviation; 0 for one run), "min_KEY", "max_KEY"} over the
    runs that have KEY; {} when none has it."""
    values = np.array([r[key] for r in runs if r.get(key) is not None], dtype=np.float64)
    if not len(values):
        return {}
    return {f"mean_{key}": float(values.mean()), f"std_{key}": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            f"min_{key}": float(values.min()), f"max_{key}": float(values.max())}


def run_seeds(plan: RunPlan, seeds: int, command: Optional[str] = None) -> Optional[dict]:
    """The plan's run for `seeds` seeds (the recipe's seed, +1, ...), each in OUT/seed_N with its own
    report; OUT/metrics.json and OUT/report.md give each seed's result and their mean and spread."""
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    runs = []
    for k in range(seeds):
        seed = plan.recipe.seed + k
        folder = f"seed_{seed}"
        one = replace(plan, recipe=plan.recipe.override(seed=seed), out=plan.out / folder)
        metrics = run_recipe(one, command=command)
        if metrics is None:  # a process other than rank 0: it trains, rank 0 writes
            continue
        runs.append({"seed": seed, "folder": folder, **{key: metrics[key] for key in (
            "final_test_acc", "best_test_acc", "train_seconds", "wall_seconds")}, **_seed_verification(metrics)})
    if not distributed.is_main():
        return None
    summary = {"recipe": plan.recipe.name, "title": plan.recipe.title, "size": plan.size, "command": command,
               "loss": plan.recipe.loss, "tta": plan.recipe.tta}
    for key in ("final_test_acc", "auc", "eer", "auc_without_flip", "eer_without_flip", "wall_seconds"):
        summary.update(_mean_and_spread(key, runs))
    summary["runs"] = runs
    folder = RunFolder(plan.out)
    folder.json("metrics.json", summary)
    folder.text("report.md", render_seeds_report(summary))
    return summary
