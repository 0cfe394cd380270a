"""`era-utils run`: one assignment end to end, as the chain of `era_utils.steps` calls, with its files.

Every step here is also a notebook cell; this module adds only where the results go: each figure,
history.json, metrics.json (and for HW2P2 the Kaggle CSVs) in the plan's folder, written atomically.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import torch
from matplotlib.figure import Figure

from era_utils import plots
from era_utils.analysis import Predictions, confusion_matrix, most_confused, per_class_accuracy, predict
from era_utils.engine import History
from era_utils.files import write_json, write_text
from era_utils.gradcam import default_target_layer_name, gradcam
from era_utils.kaggle import write_classification_csv, write_verification_csv
from era_utils.loaders import augment_examples
from era_utils.speed import precision_name
from era_utils.steps import (Data, RunPlan, Verification, build_loaders, build_model,
                             kaggle_predictions, load_data, optimizer_and_schedule, range_test, start, train,
                             verify)
from era_utils.summary import summary
from era_utils.utils import device_name

__all__ = ["RunFolder", "run_recipe"]


class RunFolder:
    """A run's output folder: every file written atomically and listed in `files` (for metrics.json)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.files: list[str] = []

    def _add(self, name: str) -> Path:
        if name not in self.files:
            self.files.append(name)
        return self.path / name

    def figure(self, name: str, fig: Figure) -> None:
        """Save a figure as PNG."""
        plots.save_figure(fig, self._add(name))

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


def run_recipe(plan: RunPlan, command: Optional[str] = None) -> dict:
    """Run the plan's assignment end to end; its figures, history.json and metrics.json go to plan.out.

    The steps are those a notebook runs, one cell each; the test set is passed over once after
    training (`predict`), and every analysis reads that one pass. Returns the metrics.
    """
    wall_start = time.perf_counter()
    folder, recipe, say = RunFolder(plan.out), plan.recipe, (print if plan.verbose else _silent)
    start(plan)

    data = load_data(plan)
    train_loader, test_loader = build_loaders(plan, data)
    say(plan.log_lines(data))
    images, labels = data.samples(10)
    folder.figure("samples.png", plots.plot_samples(images, labels, data.classes,
                                                    title=f"Sample training images ({data.title})"))
    folder.figure("augmentations.png", plots.plot_augmentations(
        images, augment_examples(train_loader, images), labels, data.classes, mean=data.mean, std=data.std))

    model = build_model(plan, data)
    folder.text("summary.txt", f"{summary(model, data.input_size)}\n")
    state = folder.read_json("run_state.json") if plan.resume else None
    lr_test = None if state else range_test(plan, model, train_loader)  # resumed: the LR it used
    max_lr = state["max_lr"] if state else (lr_test.suggestion if lr_test else recipe.lr)
    folder.json("run_state.json", {"max_lr": max_lr})
    if lr_test is not None:
        folder.figure("lr_finder.png", lr_test.plot())
        folder.json("lr_finder.json", lr_test.to_dict())
        say(f"  LR range test: max LR {max_lr:.3g} ({recipe.lr_finder_method})")
    optimizer, scheduler = optimizer_and_schedule(plan, model, train_loader, max_lr)

    train_start = time.perf_counter()
    history = train(plan, model, train_loader, test_loader, optimizer, scheduler)
    train_seconds = time.perf_counter() - train_start
    folder.json("history.json", history.to_dict())
    folder.figure("curves.png", plots.plot_history(history, title=f"{recipe.title.split(':')[0]} on {data.title}"))
    folder.figure("lr_schedule.png", plots.plot_lr(history, steps_per_epoch=len(train_loader)))

    preds = predict(model, test_loader, embeddings=recipe.verification, amp=plan.fast.amp)  # the one pass
    wrong = preds.misclassified(10)
    folder.figure("misclassified.png", plots.plot_misclassified(wrong, data.classes))
    folder.figure("top_losses.png", plots.plot_top_losses(preds.top_losses(10), data.classes))
    if wrong:
        layer = default_target_layer_name(model, data.input_size)
        folder.figure("gradcam.png", plots.plot_gradcam(wrong, gradcam(model, wrong, layer), data.classes, layer=layer))
    cm = confusion_matrix(preds, num_classes=len(data.classes))
    folder.figure("per_class_accuracy.png", plots.plot_per_class_accuracy(per_class_accuracy(preds), data.classes))
    folder.figure("confusion_matrix.png", plots.plot_confusion_matrix(cm, data.classes, normalize=True))
    result = None
    if recipe.verification:
        result = verify(plan, data, model, preds)
        folder.figure("roc.png", plots.plot_roc(result.metrics, title=f"Verification ROC ({result.pairs})"))
        write_verification_csv(folder.file("verification_submission.csv"), result.test_ids, result.test_scores)
        write_classification_csv(folder.file("classification_submission.csv"),
                                 *kaggle_predictions(plan, data, model, preds), data.classes)

    metrics = run_metrics(plan, data, model, history, preds, cm, result, max_lr, lr_test, command,
                          train_seconds, time.perf_counter() - wall_start, folder.files + ["metrics.json"])
    folder.json("metrics.json", metrics)
    say(f"  done: test accuracy {metrics['final_test_acc']}% (best {metrics['best_test_acc']}%), "
        f"{metrics['wall_seconds']} s; results in {plan.out}")
    return metrics


def _silent(*_args: Any, **_kwargs: Any) -> None:
    return None


def run_metrics(plan: RunPlan, data: Data, model: torch.nn.Module, history: History, preds: Predictions,
                cm: Any, result: Optional[Verification], max_lr: float, lr_test: Any, command: Optional[str],
                train_seconds: float, wall_seconds: float, files: list[str]) -> dict:
    """metrics.json: what the run was (recipe, data, device, path, versions) and what it measured."""
    recipe = plan.recipe
    per_class = per_class_accuracy(preds, num_classes=len(data.classes))
    return {
        "recipe": recipe.name,
        "title": recipe.title,
        "model": recipe.model,
        "params": sum(p.numel() for p in model.parameters()),
        "dataset": data.name,
        "train_images": len(data.train),
        "test_images": len(data.test),
        "quick": plan.quick,
        "epochs": history.epochs,
        "batch_size": recipe.batch_size,
        "max_lr": max_lr,
        "lr_finder": None if lr_test is None else {
            "suggestion": lr_test.suggestion, "method": lr_test.method, "num_iter": len(lr_test.lrs),
            "start_lr": recipe.lr_finder_start, "end_lr": recipe.lr_finder_end},
        "final_test_acc": history.test_acc[-1] if history.test_acc else None,
        "best_test_acc": history.best_test_acc,
        "final_train_acc": history.train_acc[-1] if history.train_acc else None,
        "predicted_test_acc": preds.accuracy,  # the one pass after training: equals final_test_acc
        "target_accuracy": recipe.target_accuracy,
        "per_class_accuracy": dict(zip(data.classes, [round(float(a), 2) for a in per_class])),
        "most_confused": [list(map(str, t)) for t in most_confused(cm, data.classes, k=5)],
        "verification": None if result is None else {**result.metrics.to_dict(), "pairs": result.pairs},
        "loader": plan.loader,
        "fast": plan.fast.enabled,
        "amp": plan.fast.amp,
        "precision": precision_name(plan.fast.amp_dtype),
        "channels_last": plan.fast.channels_last,
        "compile": bool(plan.fast.compile),
        "device": str(plan.device),
        "device_name": device_name(plan.device),
        "train_seconds": round(train_seconds, 1),  # fit's wall time: training, evaluation, checkpoints
        "train_pass_seconds": round(sum(history.train_times), 1),  # the training passes alone
        "wall_seconds": round(wall_seconds, 1),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command,
        "recipe_settings": asdict(recipe),
        "files": files,
    }
