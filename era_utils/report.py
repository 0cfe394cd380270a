"""A run checked against its assignment: one line per requirement of docs/assignments.md, with its evidence
and pass / fail / not checked by this run, then what the run was and its figures, as report.md.

`assignment_checks` reads the run (plan, model, History, metrics, files written) and returns the
checks; they are stored in metrics.json, and `render_report` turns metrics.json into the Markdown
GitHub shows beside the figures. A requirement a run cannot settle (the 24-epoch schedule in a
4-epoch preview, CIFAR-10's target on Fashion-MNIST) is "not checked", with the reason: never a pass.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch import nn

from era_utils.files import write_json, write_text
from era_utils.models import create_model
from era_utils.recipes import RECIPES, Recipe, dataset_title, get_recipe
from era_utils.transforms import FaceAugmentSpec

__all__ = ["Check", "assignment_checks", "check_again", "git_commit", "render_report", "render_seeds_report",
           "report_title", "target_check"]

PASS, FAIL, NOT_CHECKED = "pass", "fail", "not checked"
# The assignments' published parameter counts (docs/assignments.md): 10 classes, RGB input.
PUBLISHED_PARAMS = {"resnet18": 11_173_962, "custom_resnet": 6_573_120}


@dataclass
class Check:
    """One requirement of the assignment and what this run shows about it."""

    requirement: str
    evidence: str
    status: str  # "pass" | "fail" | "not checked"

    def __str__(self) -> str:
        return f"{self.requirement}: {self.status} ({self.evidence})"


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _yes(ok: bool) -> str:
    return PASS if ok else FAIL


@dataclass
class _CheckedRun:
    """What the checks read: the assignment's recipe, this run's, and what the run measured."""

    assignment: Recipe  # the recipe as the assignment gives it
    recipe: Recipe  # as this run trained it (a preview changes epochs, batch size, ...)
    metrics: dict
    history: dict
    model: nn.Module
    files: set[str]

    @property
    def full(self) -> bool:
        return self.metrics.get("size", "full") == "full"

    @property
    def on_assignment_data(self) -> bool:
        return self.metrics["dataset"] == self.assignment.dataset

    def differs(self, what: str, evidence: str) -> Check:
        """A requirement this run does not meet: failed by a full-size run, left to the full recipe by
        a preview or a quick run (which change it on purpose)."""
        if self.full:
            return Check(what, evidence, FAIL)
        return Check(what, f"{evidence} (this {self.metrics['size']} run); the full recipe runs it", NOT_CHECKED)

    def same_as_assignment(self, what: str, field: str, unit: str = "") -> Check:
        """A recipe number: pass when this run used the assignment's, else `differs`."""
        want, got = getattr(self.assignment, field), getattr(self.recipe, field)
        if want == got:
            return Check(what, f"{got:g}{unit}" if isinstance(got, float) else f"{got}{unit}", PASS)
        return self.differs(what, f"{got}{unit} where the assignment has {want}{unit}")

    def figure(self, what: str, name: str, extra: str = "") -> Check:
        return Check(what, f"[{name}]({name})" + extra if name in self.files else f"{name} was not written",
                     _yes(name in self.files))


def _architecture_checks(run: _CheckedRun) -> list[Check]:
    published = PUBLISHED_PARAMS.get(run.assignment.model)
    if published is None:
        return []
    rgb = sum(p.numel() for p in create_model(run.assignment.model, num_classes=10, in_channels=3).parameters())
    this = run.metrics["params"]
    return [Check(f"model: {run.assignment.model}, {published:,} parameters (10 classes, RGB)",
                  f"{rgb:,} with RGB input" + (f" ({this:,} with this run's {run.metrics['input_channels']}-channel "
                                               f"input)" if this != rgb else ""), _yes(rgb == published))]


def _target_check(run: _CheckedRun) -> list[Check]:
    target = run.assignment.target_accuracy
    if target is None:
        return []
    acc = run.metrics["final_test_acc"]
    what = f"target: {target:g}% test accuracy on {dataset_title(run.assignment.dataset)}"
    if not (run.full and run.on_assignment_data and run.recipe.epochs == run.assignment.epochs):
        return [Check(what, f"this run: {acc:.2f}% on {run.metrics['dataset_title']} ({run.metrics['size']} run, "
                      f"{_epochs(run.recipe.epochs)}); the target is for the full recipe on the assignment's data",
                      NOT_CHECKED)]
    return [Check(what, f"{acc:.2f}% (best epoch {run.metrics['best_test_acc']:.2f}%)", _yes(acc >= target))]


def target_check(recipe: Recipe, accuracy: float, dataset: str, size: str, best: float | None = None) -> Check | None:
    """The assignment's target beside a run's test accuracy, as its report checks it (a notebook prints it): on
    a stand-in dataset or at preview size "not checked", naming whose target it is. None: the assignment sets none."""
    metrics = {"final_test_acc": accuracy, "best_test_acc": accuracy if best is None else best, "dataset": dataset,
               "dataset_title": dataset_title(dataset), "size": size}
    checks = _target_check(_CheckedRun(RECIPES.get(recipe.name, recipe), recipe, metrics, {}, nn.Identity(), set()))
    return checks[0] if checks else None


def _schedule_checks(run: _CheckedRun) -> list[Check]:
    lrs = run.history.get("lrs", [])
    epochs = len(run.history.get("train_loss", []))
    if not lrs or not epochs:
        return [Check("learning rate per step", "no LRs recorded", FAIL)]
    steps = len(lrs) // epochs
    checks = []
    if run.recipe.schedule == "one_cycle":
        peak_step = int(np.argmax(lrs)) + 1
        want = run.assignment.peak_epoch
        got = peak_step / steps
        what = f"One Cycle over {run.assignment.epochs} epochs, peak at epoch {want}"
        if run.recipe.epochs == run.assignment.epochs:
            checks.append(Check(what, f"{_epochs(epochs)}, peak at the end of epoch {got:.2f} (step {peak_step})",
                                _yes(math.isclose(got, want, abs_tol=1 / steps))))
        else:
            share = want / run.assignment.epochs
            checks.append(run.differs(what, f"{_epochs(epochs)}, peak at epoch {got:.2f} ({got / epochs:.0%} of "
                                      f"the run; the assignment's {share:.0%})"))
        first, last = lrs[0], lrs[-1]
        checks.append(Check("no annihilation: the cycle ends at its starting LR, not below",
                            f"first LR {first:.3g}, last {last:.3g}", _yes(math.isclose(first, last, rel_tol=0.05))))
    elif run.recipe.schedule == "cosine_restarts":
        t0, ran = run.assignment.restart_epochs, run.recipe.restart_epochs
        what = f"cosine annealing with warm restarts (T_0 = {t0} epochs, T_mult = 2)"
        restarts = [i + 1 for i in range(1, len(lrs)) if lrs[i] > lrs[i - 1] * 1.5]
        expected = [e * steps + 1 for e in (ran, 3 * ran, 7 * ran) if e < epochs]
        evidence = (f"restarts at steps {restarts}" if restarts else f"no restart in {_epochs(epochs)}") + (
            f"; expected at steps {expected}" if expected else "; none expected within them")
        if ran != t0:
            checks.append(run.differs(what, f"T_0 = {ran} epochs; {evidence}"))
        else:
            checks.append(Check(what, evidence, _yes(restarts == expected)))
    return checks


def _s7_checks(run: _CheckedRun) -> list[Check]:
    spec = run.recipe.augment
    return [
        *_architecture_checks(run),
        run.same_as_assignment("epochs", "epochs"),
        Check("augmentation: RandomCrop(32, padding=4) + CutOut 16x16", spec.describe(),
              _yes(spec.crop_padding == 4 and spec.cutout_size == 16)),
        run.figure("train and test loss / accuracy curves", "curves.png"),
        run.figure("10 misclassified test images (image, true and predicted label)", "misclassified.png",
                   f": {run.metrics['misclassified_shown']} shown"),
        run.figure("GradCAM on those 10 images", "gradcam.png", f" (at {run.metrics.get('gradcam_layer')})"),
        run.figure("accuracy per class", "per_class_accuracy.png"),
    ]


def _layers(model: nn.Module) -> dict[str, bool]:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return {
        "max-pool": any(isinstance(m, nn.MaxPool2d) for m in model.modules()),
        "depthwise-separable": any(c.groups > 1 and c.groups == c.in_channels for c in convs),
        "dilated": any(max(c.dilation) > 1 for c in convs),
        "1x1": any(c.kernel_size == (1, 1) and c.groups == 1 for c in convs),
        "strided 3x3": any(c.kernel_size == (3, 3) and max(c.stride) > 1 for c in convs),
        "GAP": any(isinstance(m, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)) for m in model.modules()),
    }


def _s7_lite_checks(run: _CheckedRun) -> list[Check]:
    layers = _layers(run.model)
    limit, params = run.assignment.max_params, run.metrics["params"]
    found = [name for name, present in layers.items() if present and name != "max-pool"]
    return [
        Check(f"under {limit:,} parameters", f"{params:,}", _yes(params < limit)),
        Check("no max-pool", "a MaxPool2d layer" if layers["max-pool"] else "no MaxPool2d layer",
              _yes(not layers["max-pool"])),
        Check("depthwise-separable convolutions, one dilated, one 1x1 and one strided 3x3 transition, GAP",
              "found: " + ", ".join(found), _yes(len(found) == 5)),
        *_target_check(run),
        *_s7_checks(run)[1:],  # epochs, augmentation and the figures, as S7's
    ]


def _s10_checks(run: _CheckedRun) -> list[Check]:
    spec, finder = run.recipe.augment, run.metrics.get("lr_finder")
    lr_evidence = (f"max LR {finder['suggestion']:.3g} ({finder['method']}), min LR {finder['min_lr']:.3g} "
                   f"({finder['min_method']}), from {finder['num_iter']} batches" if finder else "no range test")
    return [
        *_architecture_checks(run),
        run.same_as_assignment("batch size", "batch_size"),
        Check("Adam and cross-entropy", f"{run.recipe.optimizer}, label smoothing {run.recipe.label_smoothing:g}",
              _yes(run.recipe.optimizer == "adam" and run.recipe.label_smoothing == 0)),
        *_schedule_checks(run),
        Check("LRMIN = FIND, LRMAX = FIND (LR range test)", lr_evidence + (
            f"; resumed with max {run.metrics['max_lr']:.3g}" if not finder else ""),
            _yes(bool(finder) and finder.get("min_lr") is not None)),
        Check("augmentation: RandomCrop 32 after padding 4, FlipLR, CutOut 8x8 (mean fill)", spec.describe(),
              _yes(spec.crop_padding == 4 and spec.flip and spec.cutout_size == 8 and spec.cutout_fill == "mean")),
        *_target_check(run),
        run.figure("sample training images", "samples.png"),
        run.figure("LR finder curve with the chosen LR", "lr_finder.png"),
        run.figure("LR schedule per step", "lr_schedule.png"),
        run.figure("loss and accuracy curves", "curves.png"),
        run.figure("misclassified gallery", "misclassified.png"),
        run.figure("model summary with input / output / kernel shapes", "summary.txt"),
    ]


def _hw2p2_checks(run: _CheckedRun) -> list[Check]:
    m, spec = run.metrics, run.recipe.augment
    faces = m["dataset"] == "faces"
    verification = m.get("verification") or {}
    return [
        Check("classification over the identities (7000 in HW2P2, 224x224 RGB)",
              f"{m['num_classes']} classes of {m['dataset_title']} at {m['input_size']}"
              + ("" if faces else ", standing in for the faces"), PASS if faces else NOT_CHECKED),
        Check("a ResNet-34-style network", run.recipe.model, _yes(run.recipe.model.startswith("face_resnet"))),
        run.same_as_assignment("SGD learning rate", "lr"),
        run.same_as_assignment("weight decay", "weight_decay"),
        _loss_check(run),
        run.same_as_assignment("batch size", "batch_size"),
        *_schedule_checks(run),
        Check("mixed precision", m["precision"],
              PASS if m["precision"] != "fp32" else NOT_CHECKED),
        Check("torchvision augmentation: flip, rotation, grayscale, colour jitter, random erasing",
              f"{spec.describe()}; " + ("batched on the device (era_utils.face_augment, torchvision's draws)"
                                        if m.get("loader") == "gpu" else "per image (torchvision v2)"),
              _yes(isinstance(spec, FaceAugmentSpec) and bool(spec.flip_p and spec.rotation and spec.grayscale_p
                                                             and spec.jitter and spec.erasing_p))),
        Check("verification: cosine similarity of penultimate-layer embeddings, ROC AUC on labelled pairs",
              _verification_evidence(verification) if verification else "no verification", _yes(bool(verification))),
        Check("a threshold for same / different", f"EER {verification['eer']:.3f} at similarity "
              f"{verification['eer_threshold']:.3f}" if verification else "none", _yes(bool(verification))),
        run.figure("Kaggle classification CSV (id,label)", "classification_submission.csv"),
        run.figure("Kaggle verification CSV (Id,Category)", "verification_submission.csv"),
        _resume_check(m),
        run.figure("per-epoch logging", "history.json"),
    ]


def _resume_check(m: dict) -> Check:
    """Pass only for a run that did resume; a checkpoint alone leaves resuming unchecked."""
    what = "checkpoint save and resume"
    if m.get("resumed_after_epochs"):
        return Check(what, f"resumed (--resume) from the checkpoint of epoch {m['resumed_after_epochs']}", PASS)
    if m.get("checkpoint"):
        return Check(what, "checkpoint.pt written; this run did not resume, so resuming is not checked here "
                     "(era-utils run --resume carries on from it)", NOT_CHECKED)
    return Check(what, "no checkpoint kept", FAIL)


def _loss_check(run: _CheckedRun) -> Check:
    """HW2P2's loss: the seed's cross-entropy with label smoothing, or the margin loss this run chose."""
    if run.recipe.loss == "cross_entropy":
        return run.same_as_assignment("cross-entropy with label smoothing", "label_smoothing")
    described = dict(run.recipe.describe())["loss"]
    return Check("cross-entropy with label smoothing 0.2 (seed 001)",
                 f"{described}: this run's choice (--loss {run.recipe.loss}), for verification", NOT_CHECKED)


def _verification_evidence(verification: dict) -> str:
    """AUC and the pairs, and with flip averaging what it gained over plain embeddings."""
    text = f"AUC {verification['auc']:.4f}"
    plain = verification.get("without_flip")
    if plain:
        text += f" with flip-averaged embeddings ({plain['auc']:.4f} without)"
    return f"{text}: {verification['pairs']}"


def _data_check(run: _CheckedRun) -> Check:
    """The assignment's dataset: pass on it; a stand-in leaves the assignment's results unchecked."""
    want = dataset_title(run.assignment.dataset)
    if run.on_assignment_data:
        return Check(f"trained and tested on {want}", run.metrics["dataset_title"], PASS)
    return Check(f"trained and tested on {want}", f"{run.metrics['dataset_title']} stands in: what this run shows about "
                 f"the assignment's {want} results is not checked", NOT_CHECKED)


def _common_checks(run: _CheckedRun, already: list[Check]) -> list[Check]:
    lrs, epochs = run.history.get("lrs", []), len(run.history.get("train_loss", []))
    summary = [] if any("summary.txt" in c.evidence for c in already) else [
        run.figure("model summary (torchinfo)", "summary.txt")]
    # The data, where no other check names it: HW2P2's first check does, and a target check names its dataset.
    data = [] if run.assignment.dataset == "faces" or run.assignment.target_accuracy is not None else [_data_check(run)]
    return [
        *data,
        *summary,
        Check("reproducible seeding", f"seed {run.recipe.seed}", PASS),
        Check("device auto-detection (cuda, mps, cpu)", f"{run.metrics['device']}: {run.metrics['device_name']}", PASS),
        Check("loss / accuracy per epoch, LR per step", f"{_epochs(epochs)}, {len(lrs)} LRs in history.json",
              _yes(epochs > 0 and len(lrs) > 0 and len(lrs) % epochs == 0)),
    ]


CHECKS: dict[str, Callable[[_CheckedRun], list[Check]]] = {
    "s7": _s7_checks, "s7_lite": _s7_lite_checks, "s10": _s10_checks, "hw2p2": _hw2p2_checks,
}


def assignment_checks(recipe: Recipe, model: nn.Module, history: dict, metrics: dict, files: list[str]) -> list[Check]:
    """One Check per requirement of the recipe's assignment (docs/assignments.md), then the kit-wide ones."""
    assignment = RECIPES.get(recipe.name, recipe)
    run = _CheckedRun(assignment, recipe, metrics, history, model, set(files))
    checks = CHECKS.get(recipe.name, lambda _: [])(run)
    return checks + _common_checks(run, checks)


def _recipe_from_settings(name: str, settings: dict[str, Any]) -> Recipe:
    """The recipe a run recorded (metrics.json's recipe_settings) as this kit's Recipe: the named recipe with the
    recorded values of the fields it still has (a field the kit added since keeps its default)."""
    base, changes = get_recipe(name), {}
    for field in dataclasses.fields(base):
        if field.name not in settings or field.name in ("quick", "preview"):  # the sizes: not what a run did
            continue
        now, value = getattr(base, field.name), settings[field.name]
        if dataclasses.is_dataclass(now) and isinstance(value, dict):
            value = type(now)(**value)
        elif isinstance(now, tuple) and isinstance(value, list):
            value = tuple(value)
        changes[field.name] = value
    return base.override(**changes)


def _skipped(m: dict) -> str:
    """fp16's skipped optimizer steps, as the device row says them (nothing for other precisions)."""
    skipped = m.get("fp16_skipped_steps")
    return "" if skipped is None else f" ({skipped} optimizer step(s) skipped by GradScaler: inf/NaN gradients)"


def _command(m: dict) -> str:
    """The report's command row: as typed, else (a run made from Python) the same run as a command line."""
    if m.get("command"):
        return f"`{m['command']}`"
    if m.get("as_command"):
        return f"`{m['as_command']}` (the same run; this one was started from Python)"
    return "`era_utils.runner.run_recipe` (no command line)"


def check_again(folder: str | os.PathLike) -> dict:
    """Check a finished run against its assignment again, with this kit's checks, from the run's own files
    (metrics.json, history.json, the files there): for a run an earlier kit reported. Rewrites metrics.json's
    checks and files and report.md, recording which kit checked it and when; the run's numbers stay as they were."""
    folder = Path(folder)
    path = folder / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no metrics.json: give the folder an `era-utils run` wrote (its --out)")
    m = json.loads(path.read_text())
    recipe = _recipe_from_settings(m["recipe"], m["recipe_settings"])
    # The checks count parameters and read layers: the architecture, not the weights, which results/ does not keep.
    model = recipe.with_head(create_model(m["model"], num_classes=m["num_classes"], in_channels=m["input_channels"]))
    history = json.loads((folder / "history.json").read_text()) if (folder / "history.json").is_file() else {}
    files = [name for name in m["files"] if (folder / name).is_file() and name not in ("metrics.json", "report.md")]
    m["checks"] = [asdict(check) for check in assignment_checks(recipe, model, history, m, files)]
    m["files"] = files + ["metrics.json", "report.md"]
    m["checked_again"] = {"by": f"era_utils {git_commit()}",
                          "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    write_json(path, m)
    write_text(folder / "report.md", render_report(m))
    return m


def git_commit(folder: Path | None = None) -> str:
    """The kit's git commit ("abc1234", "+ uncommitted changes" when the package's files differ from it), or
    why it is not known."""
    folder = folder or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=folder, capture_output=True,
                              text=True, timeout=10)
        if head.returncode:
            return "not a git checkout (installed from a package)"
        # Only the package's own files: results/ and notebooks being rewritten by this run are not the kit.
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=folder, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"


FIGURES = (("curves.png", "Loss and accuracy per epoch"), ("lr_finder.png", "LR range test"),
           ("lr_schedule.png", "Learning rate per step"), ("samples.png", "Sample training images"),
           ("augmentations.png", "Augmentation"), ("misclassified.png", "Misclassified test images"),
           ("gradcam.png", "GradCAM on the misclassified images"), ("top_losses.png", "Highest-loss test images"),
           ("per_class_accuracy.png", "Accuracy per class"), ("confusion_matrix.png", "Confusion matrix"),
           ("roc.png", "Verification ROC"))


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


PARTS = {"setup": "setup", "range_test": "LR range test", "training": "training", "analysis": "analysis and figures"}


def _parts(m: dict) -> str:
    """Where the run's time went, e.g. " (setup 6 s, LR range test 28 s, training 5.8 min, analysis and figures 14 s)";
    empty for runs made before the kit recorded it."""
    parts = m.get("seconds") or {}
    return " (" + ", ".join(f"{PARTS.get(k, k)} {_minutes(v)}" for k, v in parts.items()) + ")" if parts else ""


def report_title(m: dict) -> str:
    """The recipe's title, and the data the run used when it is not the assignment's (a stand-in)."""
    assignment = RECIPES.get(m["recipe"])
    stand_in = assignment is not None and m.get("dataset", assignment.dataset) != assignment.dataset
    return m["title"] + (f" (run on {m['dataset_title']})" if stand_in else "")


def render_report(metrics: dict) -> str:
    """report.md of one run, from its metrics.json: the result, the checklist, the run, the figures."""
    m = metrics
    size = m.get("size", "full")
    counts = sum(c["status"] == PASS for c in m["checks"]), sum(c["status"] == FAIL for c in m["checks"])
    lines = [f"# {report_title(m)}", ""]
    what = {"full": "A full-size run", "preview": "A preview", "quick": "CI's quick smoke run"}[size]
    processes = f" in {m['world_size']} processes" if m.get("world_size", 1) > 1 else ""
    lines += [f"**Test accuracy {m['final_test_acc']:.2f}%** (best epoch {m['best_test_acc']:.2f}%) after "
              f"{_epochs(m['epochs'])} on {m['dataset_title']}: {m['train_images']:,} training / "
              f"{m['test_images']:,} test images. {what}, on {m['device_name']}{processes} in {m['precision']}; "
              f"{counts[0]} requirement(s) passed, {counts[1]} failed, "
              f"{len(m['checks']) - sum(counts)} not checked by this run.", ""]
    if size != "full":
        note = (m.get("size_note") or "").rstrip(".")
        note = f"This {size} run changes the recipe: {note}." if note else ""
        lines += [f"> **{what}, not the assignment's result.** {note} The full recipe: "
                  f"`{m['full_command']}` (on a GPU).", ""]
    lines += ["## The assignment, checked", "", "| requirement | evidence | |", "|---|---|---|"]
    lines += [f"| {c['requirement']} | {c['evidence']} | {c['status']} |" for c in m["checks"]]
    seconds = m["wall_seconds"]
    lines += ["", "## The run", "", "| | |", "|---|---|",
              f"| recipe | `{m['recipe']}` ({size}): {_epochs(m['epochs'])}, batch {m['batch_size']}, "
              f"model `{m['model']}` ({m['params']:,} parameters) |",
              f"| data | {m['dataset_title']}: {m['train_images']:,} training, {m['test_images']:,} test images |",
              f"| device | {m['device_name']}; {m['precision']}{_skipped(m)}, loader `{m['loader']}` |",
              *([f"| processes | {m['world_size']}, DistributedDataParallel: batch {m['batch_size_per_process']} each, "
                 f"metrics over all of them |"] if m.get("world_size", 1) > 1 else []),
              f"| time | training {_minutes(m['train_seconds'])}, whole run {_minutes(seconds)}{_parts(m)} |",
              f"| command | {_command(m)} |",
              f"| versions | era_utils {m['era_utils']}, torch {m['torch']}, python {m['python']} |",
              f"| commit | {m['commit']} |", f"| date | {m['date']} |",
              *([f"| checked again | by {m['checked_again']['by']} on {m['checked_again']['date']}, from the run's own "
                 f"files (`era-utils recheck`): the checklist is that kit's, the numbers the run's |"]
                if m.get("checked_again") else []),
              "", "## Figures", ""]
    shown = set(m["files"])
    for name, caption in FIGURES:
        if name == "gradcam.png" and m.get("gradcam_layer"):  # the method and layer the run drew them with
            caption = f"{m.get('gradcam_method') or 'GradCAM'} at {m['gradcam_layer']} on the misclassified images"
        if name in shown:
            lines += [f"**{caption}**", "", f"![{caption}]({name})", ""]
    return "\n".join(lines)


def render_seeds_report(summary: dict) -> str:
    """report.md of several seeds of one run: each seed's result, their mean and spread, links."""
    accs = [r["final_test_acc"] for r in summary["runs"]]
    lines = [f"# {summary['title']}: {len(accs)} seeds", "",
             f"**Test accuracy {summary['mean_final_test_acc']:.2f}% mean, {summary['std_final_test_acc']:.2f} "
             f"standard deviation** over seeds {', '.join(str(r['seed']) for r in summary['runs'])} "
             f"(min {min(accs):.2f}%, max {max(accs):.2f}%).", ""]
    verified = "mean_auc" in summary
    if verified:
        flip = " with flip-averaged embeddings" if summary.get("tta") == "flip" else ""
        lines += [f"**Verification AUC {summary['mean_auc']:.4f} mean, {summary['std_auc']:.4f} standard deviation**"
                  f"{flip} (min {summary['min_auc']:.4f}, max {summary['max_auc']:.4f}); EER {summary['mean_eer']:.3f} "
                  f"mean, {summary['std_eer']:.3f} standard deviation"
                  + (f"; without flip: AUC {summary['mean_auc_without_flip']:.4f} mean, EER "
                     f"{summary['mean_eer_without_flip']:.3f}" if "mean_auc_without_flip" in summary else "")
                  + f". Loss: {summary.get('loss', 'cross_entropy')}.", ""]
    columns = ["seed", "test accuracy", "best epoch"] + (["AUC", "EER"] if verified else []) + ["training", "report"]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---:|" * (len(columns) - 2) + "---|---|"]
    for r in summary["runs"]:
        auc = [f"{r['auc']:.4f}", f"{r['eer']:.3f}"] if verified else []
        cells = [str(r["seed"]), f"{r['final_test_acc']:.2f}%", f"{r['best_test_acc']:.2f}%", *auc,
                 _minutes(r["train_seconds"]), f"[seed {r['seed']}]({r['folder']}/report.md)"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{summary['command']}`", ""]
    return "\n".join(lines)
