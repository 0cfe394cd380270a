"""One assignment run, end to end: data, figures, LR range test, training, analysis, results files.

`era-utils run` calls `run_recipe`; each step is also a public call, and the notebooks walk the
same path one cell at a time.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import torch

from era_utils import analysis, gradcam, plots
from era_utils.data import dataset_stats
from era_utils.engine import (cosine_warm_restarts, fit, make_criterion, make_optimizer, one_cycle,
                              precision_name, resolve_amp, resolve_compile)
from era_utils.gpu_loader import GPULoader
from era_utils.loaders import LOADERS, load_splits, make_loaders
from era_utils.lr_finder import find_lr
from era_utils.models import create_model, model_info
from era_utils.recipes import Recipe
from era_utils.summary import summary
from era_utils.transforms import hw2p2_train_transform
from era_utils.utils import device_name, get_device, set_seed


def _save(fig, out: Path, name: str, files: list[str]) -> None:
    """Write one figure (a plain Figure, not held by pyplot: nothing to close) and list it."""
    plots.save_figure(fig, out / name)
    files.append(name)


def run_recipe(
    recipe: Recipe,
    *,
    dataset: Optional[str] = None,
    data_dir: Optional[str] = None,
    download: bool = False,
    subset: Optional[int] = None,
    test_subset: Optional[int] = None,
    loader: str = "auto",
    device: Optional[str] = None,
    out: str | Path = "runs/run",
    resume: bool = False,
    fast: bool = True,
    amp: Optional[str] = None,
    num_workers: int = 2,
    verbose: bool = True,
    command: Optional[str] = None,
) -> dict:
    """Run one assignment end to end and write its figures, history.json and metrics.json to `out`.

    `subset`: train on a stratified `subset` of the training images (and, unless `test_subset` says
    otherwise, test on max(1000, subset // 5) test images). `loader`: "gpu" keeps the data on the
    device and augments whole batches there; "albumentations" augments per image on CPU workers;
    "auto" = gpu. `fast` (default): mixed precision, channels_last, torch.compile (training loader
    with drop_last) and fused optimizer kernels on CUDA; `fast=False` is the classic fp32 eager
    path. `amp` overrides the precision ("auto" | "bf16" | "fp16" | "off"; default "auto" when
    fast, else "off"): bf16 also speeds up CPUs with native bf16. `resume` continues from
    `out/checkpoint.pt`, written after an epoch at most once a minute and after the last one.
    Returns the metrics dict (also written to metrics.json).
    """
    if loader not in LOADERS:
        raise ValueError(f"loader must be one of {LOADERS}, got {loader!r}")
    amp = amp or ("auto" if fast else "off")
    wall_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    dev = get_device(device)
    set_seed(recipe.seed)
    ds_name = dataset or recipe.dataset
    say = print if verbose else (lambda *a, **k: None)

    # -- data ------------------------------------------------------------------------------------
    info = model_info(recipe.model)
    # Fashion-MNIST stays 1-channel (models take in_channels=1); CIFAR-10 is RGB.
    train, test = load_splits(ds_name, root=data_dir, download=download, subset=subset,
                              test_subset=test_subset, seed=recipe.seed)
    classes = list(train.classes)
    channels = train.images.shape[-1]
    mean, std = dataset_stats(ds_name, size=32, channels=channels, root=data_dir)
    say(f"{recipe.title}\n  data: {ds_name}, {len(train)} train / {len(test)} test images, "
        f"{channels} channel(s), mean {tuple(round(m, 4) for m in mean)}, std {tuple(round(s, 4) for s in std)}")

    fast_cuda = fast and dev.type == "cuda"
    if fast_cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    # HW2P2 (augment None): its torchvision pipeline, per image on CPU workers.
    augment = recipe.augment if recipe.augment is not None else hw2p2_train_transform(mean, std, size=None)
    if loader == "auto" and not fast:
        loader = "albumentations"  # the classic path
    try:
        train_loader, test_loader = make_loaders(
            train, test, augment, mean, std, recipe.batch_size, loader=loader, device=dev,
            seed=recipe.seed, num_workers=num_workers, channels_last=fast_cuda,
            drop_last="auto" if fast else False)  # auto: on CUDA, so the compiled model meets one shape
    except ValueError as err:
        raise ValueError(f"recipe {recipe.name!r}: {err}") from None
    loader_used = "gpu" if isinstance(train_loader, GPULoader) else "albumentations"

    _save(plots.plot_samples(train.images[:10], train.labels[:10], classes,
                             title=f"Sample training images ({ds_name})"), out, "samples.png", files)
    _save(plots.plot_augmentations(train.images[:5], train_loader, train.labels[:5], classes,
                                   rows=2, mean=mean, std=std), out, "augmentations.png", files)

    # -- model -----------------------------------------------------------------------------------
    model = create_model(recipe.model, num_classes=len(classes), in_channels=channels).to(dev)
    stats = summary(model, (channels, 32, 32))
    (out / "summary.txt").write_text(str(stats) + "\n")
    files.append("summary.txt")
    params = sum(p.numel() for p in model.parameters())
    say(f"  model: {recipe.model} ({info.family}), {params:,} parameters; loader: {loader_used}; device: {dev}")
    amp_dtype, _ = resolve_amp(dev, amp)
    use_compile = resolve_compile(dev, "auto") if fast else False
    precision = precision_name(amp_dtype)
    say(f"  {'fast' if fast else 'classic'} path: {precision}, {'channels_last' if fast_cuda else 'NCHW'}, "
        f"{'torch.compile' if use_compile else 'eager'}, {'fused' if fast_cuda else 'default'} optimizer kernels")

    # -- LR range test (S10), then the optimiser and schedule -------------------------------------
    criterion = make_criterion(recipe.label_smoothing)
    epochs = recipe.epochs
    steps = len(train_loader)
    if recipe.schedule == "one_cycle" and epochs * steps < 3:  # say so before the LR range test runs
        raise ValueError(
            f"recipe {recipe.name!r}: One Cycle needs at least 3 optimizer steps, but {len(train)} "
            f"training images at batch {recipe.batch_size} give {steps} step(s) per epoch x {epochs} "
            "epoch(s): use more images (--subset), more --epochs or a smaller --batch-size.")
    run_state_path = out / "run_state.json"
    max_lr = recipe.lr
    lr_finder_info = None
    if resume and run_state_path.exists():
        max_lr = json.loads(run_state_path.read_text())["max_lr"]  # the LR the interrupted run used
    elif recipe.use_lr_finder:
        optimizer = make_optimizer(recipe.optimizer, model.parameters(), lr=recipe.lr_finder_start,
                                   momentum=recipe.momentum, nesterov=recipe.nesterov,
                                   weight_decay=recipe.weight_decay, fused=None if fast else False)
        # A small subset has few batches: the test may cycle the loader, up to 3 passes.
        num_iter = min(recipe.lr_finder_iters, max(10, steps * 3))
        result = find_lr(model, optimizer, criterion, train_loader, start_lr=recipe.lr_finder_start,
                         end_lr=recipe.lr_finder_end, num_iter=num_iter, device=dev,
                         amp=amp, method=recipe.lr_finder_method, verbose=verbose)
        max_lr = float(result.suggestion)
        lr_finder_info = {"suggestion": max_lr, "method": recipe.lr_finder_method, "num_iter": num_iter,
                          "start_lr": recipe.lr_finder_start, "end_lr": recipe.lr_finder_end}
        _save(result.plot(), out, "lr_finder.png", files)
        (out / "lr_finder.json").write_text(json.dumps(
            {"lrs": result.lrs, "losses": result.losses, "smoothed": result.smoothed,
             "suggestion": result.suggestion, "method": result.method}) + "\n")
        files.append("lr_finder.json")
        say(f"  LR range test: suggested max LR {max_lr:.3g}")
    run_state_path.write_text(json.dumps({"max_lr": max_lr}))
    optimizer = make_optimizer(recipe.optimizer, model.parameters(), lr=max_lr, momentum=recipe.momentum,
                               nesterov=recipe.nesterov, weight_decay=recipe.weight_decay,
                               fused=None if fast else False)  # None: fused kernels on CUDA
    if recipe.schedule == "one_cycle":
        scheduler = one_cycle(optimizer, max_lr, epochs, steps, peak_epoch=recipe.peak_epoch_for(epochs, steps))
    elif recipe.schedule == "cosine_restarts":
        scheduler = cosine_warm_restarts(optimizer, steps, T_0=recipe.restart_epochs, T_mult=2)
    else:
        scheduler = None

    # -- training --------------------------------------------------------------------------------
    train_start = time.perf_counter()
    history = fit(model, train_loader, test_loader, optimizer, epochs, criterion=criterion,
                  scheduler=scheduler, device=dev, amp=amp,
                  channels_last=fast_cuda, compile=use_compile,
                  # A GPU epoch can take under a second: a 78 MB checkpoint every epoch would double it.
                  checkpoint_path=out / "checkpoint.pt", checkpoint_interval=60.0,
                  resume=resume, verbose=verbose)
    train_seconds = time.perf_counter() - train_start
    history.to_json(out / "history.json")
    files.append("history.json")
    _save(plots.plot_history(history, title=f"{recipe.title}: loss and accuracy"), out, "curves.png", files)
    _save(plots.plot_lr(history, steps_per_epoch=steps), out, "lr_schedule.png", files)

    # -- analysis --------------------------------------------------------------------------------
    preds = analysis.predict(model, test_loader, dev, mean=mean, std=std)
    wrong = analysis.get_misclassified(model, test_loader, n=10, device=dev, mean=mean, std=std)
    _save(plots.plot_misclassified(wrong, classes), out, "misclassified.png", files)
    if wrong:
        layer = gradcam.default_target_layer_name(model, (channels, 32, 32))
        cams = gradcam.gradcam(model, wrong, target_layer=layer)
        _save(plots.plot_gradcam(wrong, cams, classes, layer=layer), out, "gradcam.png", files)
    cm = analysis.confusion_matrix(preds, num_classes=len(classes))
    per_class = analysis.per_class_accuracy(preds, num_classes=len(classes))
    _save(plots.plot_per_class_accuracy(per_class, classes), out, "per_class_accuracy.png", files)
    _save(plots.plot_confusion_matrix(cm, classes, normalize=True), out, "confusion_matrix.png", files)

    metrics = {
        "recipe": recipe.name,
        "title": recipe.title,
        "model": recipe.model,
        "params": params,
        "dataset": ds_name,
        "train_images": len(train),
        "test_images": len(test),
        "epochs": history.epochs,
        "batch_size": recipe.batch_size,
        "max_lr": max_lr,
        "lr_finder": lr_finder_info,
        "final_test_acc": history.test_acc[-1] if history.test_acc else None,
        "best_test_acc": history.best_test_acc,
        "final_train_acc": history.train_acc[-1] if history.train_acc else None,
        "target_accuracy": recipe.target_accuracy,
        "per_class_accuracy": dict(zip(classes, [round(float(a), 2) for a in per_class])),
        "most_confused": [list(map(str, t)) for t in analysis.most_confused(cm, classes, k=5)],
        "loader": loader_used,
        "fast": fast,
        "amp": amp,
        "precision": precision,
        "channels_last": fast_cuda,
        "compile": bool(use_compile),
        "device": str(dev),
        "device_name": device_name(dev),
        "train_seconds": round(train_seconds, 1),  # fit's wall time: training, evaluation, checkpoints
        "train_pass_seconds": round(sum(history.train_times), 1),  # the training passes alone
        "wall_seconds": round(time.perf_counter() - wall_start, 1),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command,
        "recipe_settings": asdict(recipe),
        "files": files + ["metrics.json"],
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    say(f"  done: test accuracy {metrics['final_test_acc']}% (best {metrics['best_test_acc']}%), "
        f"{metrics['wall_seconds']} s; results in {out}")
    return metrics
