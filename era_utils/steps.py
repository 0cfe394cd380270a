"""The steps of an assignment run, one public function each, in the order a run calls them:

    plan = plan_run("s10", dataset="fashion_mnist", subset=5000)     # settings, device, fast path
    data = load_data(plan)                                            # arrays (or face folders)
    train_loader, test_loader = build_loaders(plan, data)
    model = build_model(plan, data)
    lr_test = range_test(plan, model, train_loader)                   # S10: the LR range test
    optimizer, scheduler = optimizer_and_schedule(plan, model, train_loader, lr_test)
    history = train(plan, model, train_loader, test_loader, optimizer, scheduler)
    preds = predict(model, test_loader, embeddings=...)               # era_utils.analysis: one pass
    result = verify(plan, data, model)                                # HW2P2: pairs, AUC, EER

`era-utils run` (era_utils.runner) is this chain plus its files; every notebook cell calls one of
these steps; the benchmarks train through them. The recipe's numbers are read here at run time,
never copied: a step asks the plan's recipe (`Recipe.configure_optimizers`, `criterion`, ...).
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from era_utils import distributed, folder_lock
from era_utils.analysis import TTA_MODES, Predictions, predict
from era_utils.callbacks import Callback
from era_utils.checkpoint import check_settings, read_checkpoint
from era_utils.choices import RUN_DATASETS
from era_utils.data import (
    CIFAR10_CLASSES,
    FASHION_MNIST_CLASSES,
    HW2P2_MEAN,
    HW2P2_STD,
    FaceFolder,
    ImageArrays,
    dataset_stats,
    load_image,
    read_pairs,
)
from era_utils.engine import History, fit
from era_utils.face_loader import FaceLoader
from era_utils.face_losses import check_loss, l2_normalise
from era_utils.files import json_safe, remove_leftover_temp_files
from era_utils.kaggle import ids_for_pairs
from era_utils.loaders import (LOADERS, Loader, dataset_loader, eval_loader, load_splits, make_loaders,
                               resolve_drop_last)
from era_utils.loggers import logger_names, make_loggers
from era_utils.lr_finder import LRFinderResult, find_lr
from era_utils.models import create_model
from era_utils.recipes import Recipe, RunSize, dataset_title, get_recipe
from era_utils.speed import FastPath, fast_path
from era_utils.transforms import FaceAugmentSpec, hw2p2_test_transform, hw2p2_train_transform
from era_utils.utils import get_device, set_seed
from era_utils.verification import (
    VerificationMetrics,
    class_pair_capacity,
    class_pairs,
    cosine_scores,
    score_pairs,
    verification_metrics,
    verify_pairs,
)

__all__ = [
    "RUN_DATASETS",
    "Data",
    "RunPlan",
    "Verification",
    "build_loaders",
    "build_model",
    "kaggle_predictions",
    "load_data",
    "optimizer_and_schedule",
    "plan_run",
    "range_test",
    "start",
    "train",
    "verify",
]

FACE_SIZE = 224  # HW2P2's images are 224x224 RGB
NO_FACES = ("HW2P2's face data needs data_dir (--data-dir): the unzipped Kaggle folder with train/<identity>/*.jpg, "
            "dev/<identity>/*.jpg and test/*.jpg. Without it, --dataset fashion_mnist stands in.")
# Checkpoints at most once a minute: a GPU epoch of S10 can take under a second, and a 78 MB
# checkpoint every epoch would double it.
CHECKPOINT_INTERVAL_S = 60.0
# Training images (x epochs) beyond which `start` warns before a CPU run: over half an hour at the
# ~100 images/s a 2-core CPU trains these networks at.
LONG_ON_A_CPU = 200_000


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class RunPlan:
    """Everything a run was asked to do, resolved once: the recipe (with this run's overrides), the
    data, the device and how it is used (`fast`), where files go. Every step reads it."""

    recipe: Recipe
    dataset: str  # "cifar10" | "fashion_mnist" | "faces"
    data_dir: Optional[str]
    download: bool
    subset: Optional[int]  # training images (stratified subset); None: all
    test_subset: Optional[int]
    device: torch.device
    fast: FastPath
    loader: str  # "gpu" | "workers"
    num_workers: int
    out: Path
    resume: bool
    verbose: bool
    size: str  # "full" (the assignment), "preview" (minutes on a CPU, learns) or "quick" (CI's smoke run)
    sizing: Optional[RunSize]  # the recipe's numbers for that size (None: full)
    checkpoints: bool  # `train` keeps a checkpoint in `out` (off for speed measurements)
    verification_pairs: int  # HW2P2 stand-in: pairs drawn from the test images
    dev_pairs: Optional[str] = None  # HW2P2 faces: the labelled pairs file ("a b label")
    test_pairs: Optional[str] = None  # HW2P2 faces: the unlabelled pairs file ("a b")
    pairs_root: Optional[str] = None  # the folder the pairs files' paths are relative to
    scratch_out: bool = False  # `out` is a temporary folder the kit chose (a quick run's): reused freely
    log: Optional[str] = None  # loggers for `era-utils run --log` ("csv,tensorboard"), written under `out`
    processes: int = 1  # processes training together (torchrun, --nproc); the recipe's batch is split over them
    sync_batchnorm: bool = False  # with several processes: BatchNorm statistics over all of them (CUDA only)
    loader_why: str = ""  # why `loader`, in words, for the log and the notebook's plan table

    @property
    def batch_per_process(self) -> int:
        """Images each process takes per step: the recipe's batch split over the processes."""
        return self.recipe.batch_size // self.processes

    @property
    def checkpoint_path(self) -> Path:
        """Where `train` keeps its checkpoint (and `resume` reads it)."""
        return self.out / "checkpoint.pt"

    @property
    def loader_text(self) -> str:
        """The loader and why it was chosen, e.g. "workers (HW2P2's augmentation per image ...)"."""
        return self.loader + (f" ({self.loader_why})" if self.loader_why else "")

    def describe(self) -> list[tuple[str, str]]:
        """This run's settings in words, one (what, value) row each, after the recipe's own rows."""
        images = "all" if self.subset is None else f"{self.subset:,} (stratified)"
        classes = {"fashion_mnist": FASHION_MNIST_CLASSES, "cifar10": CIFAR10_CLASSES}.get(self.dataset)
        if self.recipe.verification and classes:  # the stand-in: some classes are verified on, not trained on
            held = sorted(set(self.recipe.held_out_classes))
            kept = 1 - len(held) / len(classes)
            images += (f"; {', '.join(classes[c] for c in held)} held out for verification, so the classifier "
                       f"trains on the other {len(classes) - len(held)} classes' "
                       + (f"{round(self.subset * kept):,}" if self.subset else f"{kept:.0%}"))
        rows = [("dataset", self.dataset + (f" from {self.data_dir}" if self.data_dir else "")),
                ("training images", images), ("device", f"{self.device} ({self.fast.describe()})"),
                ("loader", self.loader_text), ("output folder", str(self.out) + (" (resuming)" if self.resume else ""))]
        if self.processes > 1:
            rows.append(("processes", f"{self.processes} (DistributedDataParallel), batch {self.batch_per_process} each"
                         + (", SyncBatchNorm" if self.sync_batchnorm else "")))
        if self.sizing is not None:
            rows.append((f"{self.size} run", f"{self.sizing.subset:,} images drawn for training, {self.recipe.epochs} "
                         f"epoch(s)" + (f"; {self.sizing.why}" if self.sizing.why else "; the recipe otherwise as it is")))
        return self.recipe.describe() + rows

    def settings(self) -> dict[str, Any]:
        """What a resumed run must share with the run that wrote the checkpoint: the recipe's numbers,
        the data drawn and how it is loaded, the precision. Plain JSON values, kept in the checkpoint."""
        # tta and cam_method change only the analysis after training: a resumed run may ask for others
        recipe = {k: v for k, v in asdict(self.recipe).items()
                  if k not in ("title", "notes", "preview", "quick", "tta", "cam_method")}
        plan = {"dataset": self.dataset, "subset": self.subset, "test_subset": self.test_subset,
                "loader": self.loader, "num_workers": self.num_workers if self.loader == "workers" else None,
                "precision": self.fast.amp}
        return json.loads(json.dumps(json_safe({**recipe, **plan})))  # tuples as lists: as read back

    @property
    def quick(self) -> bool:
        """CI's smoke run: too short to learn, so nothing it shows is a result."""
        return self.size == "quick"

    def log_lines(self, data: "Data") -> str:
        """A few lines for a headless run's log: the recipe, the data as loaded, the device and path."""
        return "\n".join([
            self.recipe.title + ("" if self.size == "full" else f" ({self.size} run)"),
            f"  data: {data.title}, {len(data.train)} train / {len(data.test)} test images, {data.channels} "
            f"channel(s), mean {tuple(round(m, 4) for m in data.mean)}, std {tuple(round(s, 4) for s in data.std)}",
            f"  loader: {self.loader_text}; device: {self.device}; {self.fast.describe()}"
            + (f"; {self.processes} processes, batch {self.batch_per_process} each" if self.processes > 1 else ""),
        ])

    def _repr_markdown_(self) -> str:
        """The plan as a table in notebooks: the recipe's numbers and this run's settings."""
        rows = "\n".join(f"| {what} | {value} |" for what, value in self.describe())
        return f"**{self.recipe.title}**\n\n| | |\n|---|---|\n{rows}\n"


def start(plan: RunPlan) -> None:
    """Seed python, numpy and torch with the recipe's seed and set the fast path's process-wide
    switches (cuDNN's autotuner): the first thing a run does. A full-length recipe about to train on
    a CPU gets a warning first: that is hours, where a GPU takes minutes and a preview minutes too.
    Launched by torchrun, the process joins the run's process group first."""
    distributed.init_from_env(plan.device)
    if distributed.world_size() != plan.processes:
        raise ValueError(f"the plan is for {plan.processes} process(es) but {distributed.world_size()} run: make the "
                         "plan in the processes that train (plan_run reads torchrun's WORLD_SIZE)")
    images = (plan.subset or 50_000) * plan.recipe.epochs  # a whole CIFAR-10 training set unless a subset
    if plan.device.type == "cpu" and images >= LONG_ON_A_CPU:
        warnings.warn(
            f"{plan.recipe.name}: {images:,} training images ({plan.recipe.epochs} epochs) on a CPU take hours. On Colab switch the "
            "runtime to a GPU (Runtime > Change runtime type > T4 GPU); to see every step in minutes on "
            f"this CPU, run the preview instead (SIZE = \"preview\" in a notebook, era-utils run "
            f"{plan.recipe.name} --preview).", UserWarning, stacklevel=2)
    _claim_out(plan)
    set_seed(plan.recipe.seed)
    plan.fast.apply()


def _claim_out(plan: RunPlan) -> None:
    """Make `plan.out` ready for this run without losing an earlier one: a folder this run can write
    in and holds (`folder_lock`: a second run into it is refused while this one lives), temporary
    files a killed save left removed, and a checkpoint there refused unless the run resumes from it."""
    _check_writable(plan.out)
    if distributed.is_main():  # rank 0 writes the folder: it holds it, and only then clears what a killed run left
        stale = folder_lock.hold(plan.out)
        if stale and plan.verbose:
            print(f"{plan.out}: the run that held it ({stale.get('pid', '?')} on {stale.get('host', '?')}, started "
                  f"{stale.get('started', '?')}) ended without releasing it (killed?); this run takes it over")
        for leftover in remove_leftover_temp_files(plan.out):
            if plan.verbose:
                print(f"removed {leftover}: half a file that a killed run was saving")
    ckpt = plan.checkpoint_path
    if plan.checkpoints and plan.resume and ckpt.is_file():  # before the data and the LR test, not after
        check_settings(read_checkpoint(ckpt, mmap=True), plan.settings(), ckpt)  # fit reads the weights
    if plan.checkpoints and not plan.resume and not plan.scratch_out and ckpt.is_file():
        saved = datetime.fromtimestamp(ckpt.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        raise ValueError(
            f"{plan.out} already holds an earlier run's checkpoint ({ckpt.name}, saved {saved}); this run "
            f"would replace it, so nothing was changed. To carry on from it, add --resume (RESUME = True in a "
            f"notebook). To start over on purpose, delete {ckpt} or give another folder with --out (OUT in a "
            f"notebook).")


def _check_writable(out: Path) -> None:
    """Create `out` and make sure files can be written there, or say why not and what to do."""
    fix = "give --out (OUT in a notebook) a folder you can write to"
    blocking = next((p for p in [out, *out.parents] if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        where = "is" if blocking == out else f"lies under {blocking}, which is"
        raise NotADirectoryError(f"output folder {out} {where} a file, not a folder: {fix}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise PermissionError(f"cannot write in the output folder {out} ({err.strerror or err}): {fix}") from err


def plan_run(
    recipe: Union[str, Recipe],
    *,
    size: str = "full",
    dataset: Optional[str] = None,
    data_dir: Optional[str] = None,
    download: bool = False,
    subset: Optional[int] = None,
    test_subset: Optional[int] = None,
    epochs: Optional[int] = None,
    batch_size: Optional[int] = None,
    lr: Optional[float] = None,
    seed: Optional[int] = None,
    loss: Optional[str] = None,
    tta: Optional[str] = None,
    device: Optional[str] = None,
    loader: str = "auto",
    fast: bool = True,
    amp: Optional[str] = None,
    compile: Optional[Union[bool, str]] = None,
    num_workers: Optional[int] = None,
    out: Union[str, os.PathLike, None] = None,
    resume: bool = False,
    verbose: bool = True,
    checkpoints: bool = True,
    verification_pairs: Optional[int] = None,
    dev_pairs: Optional[str] = None,
    test_pairs: Optional[str] = None,
    pairs_root: Optional[str] = None,
    log: Optional[str] = None,
    processes: Optional[int] = None,
    sync_batchnorm: bool = False,
) -> RunPlan:
    """Resolve a run's settings: the recipe `recipe` (a name or a Recipe) with these overrides.

    `size`: "full" (the recipe as the assignment gives it), "preview" (the recipe's preview: Fashion-MNIST,
    minutes on a 2-core CPU, and the model clearly learns) or "quick" (CI's smoke run: a few hundred
    images, one epoch, the CPU); anything given explicitly still wins. `lr` replaces the recipe's LR and turns
    the LR range test off. `loss`: the training loss ("cross_entropy", "arcface", "cosface", "center";
    default the recipe's), `tta`: "flip" averages each verification embedding with its mirror image's
    (default the recipe's, "none"). `loader`: "gpu" | "workers" | "auto" (the fast path's choice; per-image
    augmentation such as HW2P2's always runs on workers). `fast=False` is the classic path; `amp`
    and `compile` override the precision and torch.compile; `checkpoints=False` keeps none (speed
    measurements); `num_workers` (default 2, a quick run 0)
    are the workers loader's processes. `out` (default runs/RECIPE; a quick run's
    under the temporary folder) holds the checkpoint and whatever the caller saves. `processes`: how
    many train together under torch.distributed (default: torchrun's WORLD_SIZE, 1 without it); the
    recipe's batch is the global one, split evenly over them. Under torchrun a CUDA device is the
    process's own GPU (LOCAL_RANK), and only rank 0 prints progress. `sync_batchnorm`: several
    processes on GPUs compute BatchNorm's statistics over all of their images (SyncBatchNorm).
    """
    base = get_recipe(recipe) if isinstance(recipe, str) else recipe
    logger_names(log)  # refuse an unknown logger now, not after the training
    sizing = base.size(size)
    if size != "full" and sizing is None:
        raise ValueError(f"recipe {base.name!r} has no {size} size; run it in full or give the sizes yourself")
    chosen = base.sized(size)
    _check_whole("seed", seed, "--seed", high=2**32 - 1)  # numpy's seeds are 32-bit
    _check_whole("num_workers", num_workers, "--workers, NUM_WORKERS in a notebook")
    changes = {"epochs": epochs, "batch_size": batch_size, "seed": seed, "loss": loss, "tta": tta}
    if lr is not None:
        changes.update(lr=lr, use_lr_finder=False)
    chosen = chosen.override(**{k: v for k, v in changes.items() if v is not None})
    _check_loss_and_tta(chosen)
    if sizing is not None:
        dataset = dataset or sizing.dataset
        subset = subset if subset is not None else sizing.subset
        test_subset = test_subset if test_subset is not None else sizing.test_subset
        device = device or sizing.device
        verification_pairs = verification_pairs or sizing.verification_pairs
    quick = size == "quick"
    processes = _processes(processes, chosen.batch_size)
    if num_workers is None:  # Colab's 2 cores; a quick run's one epoch is mostly worker start-up
        num_workers = 0 if quick else 2
    dataset = dataset or chosen.dataset
    if dataset not in RUN_DATASETS:
        raise ValueError(f"dataset must be one of {RUN_DATASETS}, got {dataset!r}")
    if dataset == "faces" and not isinstance(chosen.augment, FaceAugmentSpec):
        raise ValueError(f"recipe {chosen.name!r} trains on 32x32 images; the face folders are HW2P2's (recipe 'hw2p2')")
    if loader not in LOADERS:
        raise ValueError(f"loader must be one of {LOADERS}, got {loader!r}")
    if dataset == "faces" and data_dir is None:
        raise FileNotFoundError(NO_FACES)
    if dataset == "faces" and chosen.verification:  # read now: a bad pairs file must not wait for the training
        _check_pairs_files(dev_pairs, test_pairs, pairs_root)
    dev = distributed.local_device(get_device(device))
    _check_devices_for(processes, dev)
    if sync_batchnorm and (processes == 1 or dev.type != "cuda"):
        raise ValueError("sync_batchnorm shares BatchNorm's statistics between processes on CUDA GPUs (torch's "
                         "SyncBatchNorm has no CPU kernel): use it with --nproc N on GPUs, or leave it out"
                         + (f" (this run: {processes} process, {dev})" if processes == 1 else f" (this run: {dev})"))
    path = fast_path(dev, enabled=fast, amp=amp)
    if compile is not None:
        path = replace(path, compile=compile)
    if loader == "gpu" and not fast:
        raise ValueError("loader 'gpu' does not fit this run: the classic path augments per image on CPU workers; "
                         "use loader 'workers' (or 'auto')")
    resolved_loader, loader_why = _choose_loader(loader, path, chosen.augment, dataset)
    return RunPlan(
        recipe=chosen,
        dataset=dataset,
        data_dir=data_dir,
        download=download,
        subset=subset,
        test_subset=test_subset,
        device=dev,
        fast=path,
        loader=resolved_loader,
        num_workers=num_workers,
        out=Path(out) if out is not None else _default_out(chosen.name, quick),
        resume=resume,
        verbose=verbose and distributed.launch_rank() == 0,
        size=size,
        sizing=sizing,
        checkpoints=checkpoints,
        verification_pairs=verification_pairs or 4000,
        dev_pairs=dev_pairs,
        test_pairs=test_pairs,
        pairs_root=pairs_root,
        scratch_out=quick and out is None,
        log=log,
        processes=processes,
        sync_batchnorm=sync_batchnorm,
        loader_why=loader_why,
    )


def _check_whole(name: str, value: Any, where: str, high: Optional[int] = None) -> None:
    """`value` is None or a whole number from 0 (to `high`), or a ValueError naming the setting and its option."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0 or (high is not None and value > high):
        bound = f"from 0 to {high}" if high is not None else "0 or more"
        raise ValueError(f"{name} ({where}) must be a whole number {bound}, got {value!r}")


def _check_pairs_files(dev_pairs: Optional[str], test_pairs: Optional[str], pairs_root: Optional[str]) -> None:
    """HW2P2's pairs files, read and checked before any work: both given, each the kind its option takes
    (dev labelled, test not), the dev pairs holding both labels, every image there."""
    for option, notebook, path, labelled in (("--dev-pairs", "DEV_PAIRS", dev_pairs, True),
                                              ("--test-pairs", "TEST_PAIRS", test_pairs, False)):
        kind = "labelled pairs file ('a b label' per line)" if labelled else "unlabelled pairs file ('a b' per line)"
        if path is None:
            raise ValueError(f"verification on the face folders needs {option} (the {kind}; {notebook} in a notebook), "
                             "as in the HW2P2 verification download")
        try:
            pairs = read_pairs(path, root=pairs_root)
        except (ValueError, FileNotFoundError) as err:  # the option first; the file's name once
            raise type(err)(f"{option} {path}: " + str(err).replace(f"{Path(path).expanduser()}, ", "", 1)) from None
        if (pairs[0].label is not None) != labelled:
            other = "--test-pairs" if labelled else "--dev-pairs"
            raise ValueError(f"{option} {path} holds {'unlabelled' if labelled else 'labelled'} pairs, where {option} "
                             f"takes the {kind}: are {option} and {other} swapped?")
        if labelled and len({pair.label for pair in pairs}) < 2:
            raise ValueError(f"{option} {path}: every pair is labelled {pairs[0].label}; its ROC AUC and EER need "
                             "both same (1) and different (0) pairs")


def _check_loss_and_tta(recipe: Recipe) -> None:
    """Refuse a loss or a test-time augmentation the run cannot use, before any work."""
    check_loss(recipe.loss)
    if recipe.tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES} (flip: average each verification embedding with its mirror "
                         f"image's), got {recipe.tta!r}")
    if recipe.tta != "none" and not recipe.verification:
        raise ValueError(f"tta {recipe.tta!r} changes the verification embeddings, and recipe {recipe.name!r} verifies "
                         "no pairs (only hw2p2 does): leave --tta out")
    if recipe.use_lr_finder and recipe.loss != "cross_entropy":
        raise ValueError(f"recipe {recipe.name!r} picks its LR with a range test on cross-entropy, which does not "
                         f"tell the LR for loss {recipe.loss!r}: give the LR with --lr (lr= in Python)")


def _choose_loader(asked: str, path: FastPath, augment: Any, dataset: str) -> tuple[str, str]:
    """("gpu" | "workers", why) for a run: what was asked, else the faster path for this device."""
    faces = isinstance(augment, FaceAugmentSpec)
    on_device = ("JPEGs decoded and augmented in batches on the device, CPU workers only read the files"
                 if dataset == "faces" else "the images on the device, augmented in batches there")
    if asked != "auto":
        return asked, "as asked" + (f": {on_device}" if asked == "gpu" else ": per image on CPU workers")
    if not path.enabled:
        return "workers", "the classic path: per image on CPU workers"
    if faces and path.device.type == "cpu":
        # Measured (benchmarks/face_loader_speed_cpu.md): HW2P2's rotation and jitter, batched in torch
        # on two cores, are slower than torchvision on two workers image by image.
        return "workers", ("HW2P2's augmentation per image on CPU workers: on a CPU that is faster than "
                           "batched (benchmarks/face_loader_speed_cpu.md); on a GPU it runs there")
    return path.loader, on_device if path.loader == "gpu" else "per image on CPU workers"


def _check_devices_for(processes: int, device: torch.device) -> None:
    """Several processes need a GPU each (CUDA) or a CPU core each; refuse what cannot work."""
    if processes == 1:
        return
    if device.type == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if processes > cores:  # each holds the model, the data and its workers: 64 on 2 cores ran out of memory
            raise ValueError(f"{processes} processes on a CPU with {cores} core(s) available: each process needs a "
                             f"core of its own (and its own copy of the model and data); use --nproc {cores} or fewer")
        return
    if device.type != "cuda":
        raise ValueError(f"{processes} processes on {device}: several processes train on CUDA GPUs (one each) or on "
                         "the CPU (--device cpu)")
    count = torch.cuda.device_count()
    if processes > count:
        raise ValueError(f"{processes} processes take one GPU each, but torch sees {count} here: use --nproc {count}"
                         + (" (Kaggle: Settings > Accelerator > GPU T4 x2)" if count == 1 else ""))


def _processes(asked: Optional[int], batch_size: int) -> int:
    """The processes a run trains in (torchrun's WORLD_SIZE unless `asked`), checked against the batch."""
    launched = distributed.launch_world_size()
    if asked is None:
        asked = launched
    if distributed.launched() and asked != launched:
        raise ValueError(f"{asked} processes asked for (--nproc), but torchrun started {launched}: give the same "
                         "number to both, or leave --nproc out under torchrun")
    if not (isinstance(asked, int) and asked >= 1):
        raise ValueError(f"processes must be a whole number of at least 1, got {asked!r}")
    if batch_size % asked:
        raise ValueError(f"batch size {batch_size} does not split evenly over {asked} processes (each takes an equal "
                         f"share of every step): give --batch-size a multiple of {asked}")
    return asked


def _default_out(name: str, quick: bool) -> Path:
    """runs/NAME; a quick smoke run writes under the temporary folder instead (CI, notebooks in CI)."""
    if quick:
        return Path(tempfile.gettempdir()) / "era_utils_quick" / name
    return Path("runs") / name


# ----------------------------------------------------------------------------- data


@dataclass
class Data:
    """A run's images: training and (labelled) test splits with their classes and normalisation.

    Arrays (CIFAR-10, Fashion-MNIST: uint8 (N, H, W, C) in memory) or HW2P2's face folders (read
    one image at a time); `kaggle_test` is HW2P2's unlabelled test split, when there is one.
    """

    name: str  # the dataset actually used, as figures and reports name it
    train: Union[ImageArrays, FaceFolder]
    test: Union[ImageArrays, FaceFolder]
    mean: tuple[float, ...]  # per channel, [0, 1] units (the training split's)
    std: tuple[float, ...]
    kaggle_test: Optional[FaceFolder] = None
    held_out: Optional[ImageArrays] = None  # stand-in verification: test images of classes never trained on

    @property
    def classes(self) -> list[str]:
        """Class names (identities for HW2P2), index = label."""
        return list(self.train.classes)

    @property
    def channels(self) -> int:
        """Input channels: 3 for CIFAR-10 and faces, 1 for Fashion-MNIST."""
        return len(self.mean)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of one model input."""
        if isinstance(self.train, FaceFolder):
            return (self.channels, FACE_SIZE, FACE_SIZE)
        return (self.channels, *self.train.images.shape[1:3])

    def samples(self, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The first `n` training images as stored, uint8 (n, H, W, C), and their labels."""
        if isinstance(self.train, FaceFolder):
            picked = self.train.samples[:n]
            return np.stack([load_image(path) for path, _ in picked]), np.array([label for _, label in picked])
        return self.train.images[:n], self.train.labels[:n]

    @property
    def title(self) -> str:
        """The dataset as a figure title names it, e.g. "Fashion-MNIST"."""
        return dataset_title(self.name)


def load_data(plan: RunPlan) -> Data:
    """The plan's dataset: train and test arrays (a stratified subset if asked) with the training
    split's mean/std, or HW2P2's face folders from `data_dir` (train/, dev/, test/) at 224x224."""
    if plan.dataset == "faces":
        if plan.data_dir is None:
            raise FileNotFoundError(NO_FACES)
        root = Path(plan.data_dir)  # the files only: the loaders decide how they are read (build_loaders)
        kaggle_test = FaceFolder(root, "test") if (root / "test").is_dir() else None
        return Data("faces", FaceFolder(root, "train"), FaceFolder(root, "dev"), HW2P2_MEAN, HW2P2_STD,
                    kaggle_test=kaggle_test)
    train, test = load_splits(plan.dataset, root=plan.data_dir, download=plan.download, subset=plan.subset,
                              test_subset=plan.test_subset, seed=plan.recipe.seed)
    # Fashion-MNIST stays 1-channel (the models take in_channels=1); CIFAR-10 is RGB.
    mean, std = dataset_stats(plan.dataset, size=train.images.shape[1], channels=train.images.shape[-1],
                              root=plan.data_dir)
    if not plan.recipe.verification:
        return Data(plan.dataset, train, test, mean, std)
    # Verification on a classification set: some classes play identities the model never saw.
    held = sorted(set(plan.recipe.held_out_classes))
    kept = [c for c in range(len(train.classes)) if c not in held]
    if len(kept) < 2 or not held or held[-1] >= len(train.classes):
        raise ValueError(f"held_out_classes {tuple(held)} must name classes of the {len(train.classes)} and "
                         "leave at least two to classify")
    return Data(plan.dataset, _only(train, kept), _only(test, kept), mean, std, held_out=_only(test, held, relabel=False))


def _only(arrays: ImageArrays, classes: list[int], relabel: bool = True) -> ImageArrays:
    """The images of `classes` only; `relabel` numbers those classes 0 .. len(classes) - 1 (a
    classifier's outputs), else labels stay as they were (they only say which images are alike)."""
    mask = np.isin(arrays.labels, classes)
    if not relabel:
        return ImageArrays(arrays.images[mask], arrays.labels[mask], list(arrays.classes))
    new_label = np.full(max(classes) + 1, -1, dtype=np.int64)
    new_label[classes] = np.arange(len(classes))
    return ImageArrays(arrays.images[mask], new_label[arrays.labels[mask]], [arrays.classes[c] for c in classes])


def build_loaders(plan: RunPlan, data: Data, *, whole: bool = False) -> tuple[Loader, Loader]:
    """(train_loader, test_loader) as the plan says: batched on the device ("gpu": the arrays there, or
    HW2P2's face files decoded there) or per image on CPU workers ("workers"); the recipe's batch size
    and augmentation, the fast path's layout and drop_last. The test loader only normalises (and
    resizes faces), in the test split's order.

    Under torch.distributed each process gets its share: its shard of every epoch at its part of the
    batch, and its slice of the test set (fit adds the ranks' test sums up). `whole=True`: the loaders
    one process would have (rank 0's LR range test, the analysis after training)."""
    recipe = plan.recipe
    rank, ranks = (0, 1) if whole else (distributed.rank(), plan.processes)
    batch = recipe.batch_size // ranks
    test = data.test.shard(rank, ranks) if ranks > 1 else data.test
    if isinstance(data.train, FaceFolder):
        drop_last = resolve_drop_last(plan.fast.drop_last, plan.device, len(data.train), batch, ranks)
        if plan.loader == "gpu":
            train_loader = FaceLoader(data.train, batch, spec=recipe.augment, mean=data.mean, std=data.std,
                                      size=FACE_SIZE, device=plan.device, num_workers=plan.num_workers,
                                      channels_last=plan.fast.channels_last, shuffle=True, drop_last=drop_last,
                                      seed=recipe.seed, shard=(rank, ranks))
        else:
            train_tf = hw2p2_train_transform(data.mean, data.std, size=FACE_SIZE, spec=recipe.augment)
            train_loader = dataset_loader(data.train.with_transform(train_tf), batch, shuffle=True, drop_last=drop_last,
                                          num_workers=plan.num_workers, seed=recipe.seed, shard=(rank, ranks))
        test_loader = _face_eval_loader(plan, data, test)
    else:
        try:
            train_loader, test_loader = make_loaders(
                data.train, test, recipe.augment, data.mean, data.std,
                batch, loader=plan.loader, device=plan.device, seed=recipe.seed, num_workers=plan.num_workers,
                channels_last=plan.fast.channels_last, drop_last=plan.fast.drop_last, shard=(rank, ranks))
        except ValueError as err:
            raise ValueError(f"recipe {recipe.name!r}: {err}") from None
    recipe.check_steps(len(data.train), len(train_loader))  # before any work: a run too short to schedule
    return train_loader, test_loader


def _face_eval_transform(data: Data) -> Any:
    """HW2P2's per-image evaluation transform (resize, normalise) for this data: the workers path."""
    return hw2p2_test_transform(data.mean, data.std, size=FACE_SIZE)


def _face_eval_loader(plan: RunPlan, data: Data, images: Any) -> Loader:
    """An evaluation loader over face files, read as the plan reads them: decoded on the device ("gpu":
    a FaceFolder or a list of paths) or per image on CPU workers (a FaceFolder); resized, normalised, in order."""
    if plan.loader == "gpu":
        return FaceLoader(images, plan.recipe.batch_size, mean=data.mean, std=data.std, size=FACE_SIZE,
                          device=plan.device, num_workers=plan.num_workers, channels_last=plan.fast.channels_last)
    return dataset_loader(images.with_transform(_face_eval_transform(data)), plan.recipe.batch_size,
                          shuffle=False, num_workers=plan.num_workers)


def build_model(plan: RunPlan, data: Data) -> nn.Module:
    """The recipe's model for this data (one output per class, its input channels) with the classifier its
    loss trains (`Recipe.with_head`), on the device, in the plan's memory layout (the range test runs in it too)."""
    model = create_model(plan.recipe.model, num_classes=len(data.classes), in_channels=data.channels)
    model = plan.recipe.with_head(model).to(plan.device)
    return model.to(memory_format=torch.channels_last) if plan.fast.channels_last else model


# ----------------------------------------------------------------------------- training


def range_test(plan: RunPlan, model: nn.Module, train_loader: Any) -> Optional[LRFinderResult]:
    """The recipe's LR range test (S10), or None for a recipe with a fixed LR. Model and optimizer
    state are restored afterwards (torch-lr-finder's reset)."""
    recipe = plan.recipe
    if not recipe.use_lr_finder:
        return None
    optimizer = recipe.range_test_optimizer(model, fused=plan.fast.fused)
    return find_lr(model, optimizer, recipe.criterion(), train_loader, start_lr=recipe.lr_finder_start,
                   end_lr=recipe.lr_finder_end, num_iter=recipe.range_test_iters(len(train_loader)),
                   device=plan.device, amp=plan.fast.amp, method=recipe.lr_finder_method,
                   min_method=recipe.lr_finder_min_method, verbose=plan.verbose)


def optimizer_and_schedule(plan: RunPlan, model: nn.Module, train_loader: Any,
                           lrs: Union[LRFinderResult, tuple[float, Optional[float]], None] = None
                           ) -> tuple[torch.optim.Optimizer, Any]:
    """The recipe's optimizer and per-step schedule for this run (`Recipe.configure_optimizers`).

    `lrs`: the range test's result (its max and min LR), a (max LR, min LR or None) pair, or None
    for the recipe's own LR."""
    if isinstance(lrs, LRFinderResult):
        lrs = (lrs.suggestion, lrs.min_lr)
    max_lr, min_lr = lrs if lrs is not None else (None, None)
    return plan.recipe.configure_optimizers(model, len(train_loader), max_lr=max_lr, min_lr=min_lr,
                                            fused=plan.fast.fused)


def train(plan: RunPlan, model: nn.Module, train_loader: Any, test_loader: Any,
          optimizer: torch.optim.Optimizer, scheduler: Any, callbacks: Optional[Sequence[Callback]] = None
          ) -> History:
    """`fit` for the recipe's epochs with its loss, the plan's precision, layout and compile, a
    checkpoint in the plan's folder (at most once a minute, and after the last epoch) and, with
    the plan's `resume`, carrying on from it. `callbacks` as fit takes them; None: the plan's
    loggers (`log`, e.g. "csv,tensorboard"), writing in the plan's folder."""
    _check_fresh(optimizer, scheduler)
    if callbacks is None:  # loggers write once, from rank 0
        callbacks = make_loggers(plan.log, plan.out, config=plan.settings()) if distributed.is_main() else []
    return fit(model, train_loader, test_loader, optimizer, plan.recipe.epochs,
               criterion=plan.recipe.criterion(model), scheduler=scheduler, device=plan.device,
               amp=plan.fast.amp, channels_last=plan.fast.channels_last, compile=plan.fast.compile,
               checkpoint_path=plan.checkpoint_path if plan.checkpoints else None,
               checkpoint_interval=CHECKPOINT_INTERVAL_S,
               resume=plan.resume, settings=plan.settings(), callbacks=callbacks, sync_batchnorm=plan.sync_batchnorm,
               verbose=plan.verbose)


def _check_fresh(optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    """`train` runs the recipe's schedule from its start: refuse an optimizer or schedule that already stepped
    (a second `train` would carry on from mid-schedule, or One Cycle would fail in torch past its end)."""
    steps = getattr(scheduler, "last_epoch", 0) if scheduler is not None else 0
    if steps > 0 or optimizer.state:
        done = f"{steps} step(s) of its schedule" if steps > 0 else "steps (its state holds their momentum)"
        raise ValueError(f"this optimizer already took {done}: train() runs the recipe's schedule from the start. "
                         "To train again, build the optimizer and schedule anew (optimizer_and_schedule; in a notebook, "
                         "run that cell again) and, to start over, the model too (build_model); to carry on after a "
                         "stopped run, resume from its checkpoint (--resume, RESUME = True).")


# ----------------------------------------------------------------------------- verification (HW2P2)


@dataclass
class Verification:
    """HW2P2's verification: the metrics on labelled pairs and the scores of the pairs to submit."""

    metrics: VerificationMetrics
    pairs: str  # where the pairs came from, in words
    test_ids: list[str]  # Kaggle ids of the scored test pairs ("a b")
    test_scores: np.ndarray  # (P,) cosine similarity of each test pair
    title: str = "Verification ROC"  # for the figure: short
    tta: str = "none"  # how the embeddings were made: "flip" averages each with its mirror image's
    without_flip: Optional[VerificationMetrics] = None  # with tta "flip": the same pairs without it, to compare


def verify(plan: RunPlan, data: Data, model: nn.Module) -> Verification:
    """Score same/different pairs by the cosine similarity of their L2-normalised embeddings (the recipe's
    `tta`: "flip" averages each with its mirror image's, and the pairs are scored without it too, to
    compare) and measure ROC AUC, EER and its threshold. Face folders: the plan's dev pairs file
    (labelled) and test pairs file. Stand-in (arrays): balanced pairs of test images of the classes held
    out of training (`Data.held_out`), "same" when two images share a class, embedded in one pass
    (`predict(..., embeddings=True)`)."""
    tta = plan.recipe.tta
    kw = dict(device=plan.device, amp=plan.fast.amp)
    if isinstance(data.train, FaceFolder):
        if not (plan.dev_pairs and plan.test_pairs):
            raise ValueError("verification on the face folders needs the pairs files: dev_pairs (a b label) "
                             "and test_pairs (a b), as in the HW2P2 verification download")
        if plan.loader == "gpu":  # the pairs' images decoded on the device, as training read its own
            kw.update(loader=lambda paths: _face_eval_loader(plan, data, paths))
        else:
            kw.update(transform=_face_eval_transform(data), batch_size=plan.recipe.batch_size,
                      num_workers=plan.num_workers)
        kw.update(progress=plan.verbose)
        dev = read_pairs(plan.dev_pairs, root=plan.pairs_root)
        metrics = verify_pairs(model, dev, tta=tta, **kw)
        plain = verify_pairs(model, dev, **kw) if tta == "flip" else None
        test = read_pairs(plan.test_pairs, root=plan.pairs_root, labelled=False)
        scores = score_pairs(model, test, tta=tta, **kw)
        return Verification(metrics, f"{plan.dev_pairs} (labelled), {plan.test_pairs} (scored)",
                            ids_for_pairs(test, root=plan.pairs_root), scores, "Verification ROC (dev pairs)", tta, plain)
    if data.held_out is None:
        raise ValueError("no held-out classes to verify on: the recipe's verification is off")
    # Unlabelled for the classifier (it has no output for these classes); the true labels make the pairs.
    unseen = ImageArrays(data.held_out.images, np.full(len(data.held_out), -1), data.held_out.classes)
    loader = eval_loader(unseen, data.mean, data.std, plan.recipe.batch_size, on_gpu=plan.loader == "gpu",
                         device=plan.device, num_workers=plan.num_workers, channels_last=plan.fast.channels_last)
    n = min(plan.verification_pairs, class_pair_capacity(data.held_out.labels))  # a small subset has few pairs
    a, b, same = class_pairs(data.held_out.labels, n, seed=plan.recipe.seed)

    def pair_scores(how: str) -> np.ndarray:
        embeddings = l2_normalise(predict(model, loader, embeddings=True, tta=how, **kw).embeddings)  # (N, D)
        return cosine_scores(embeddings[a], embeddings[b]).numpy()  # (P,) in [-1, 1]

    scores = pair_scores(tta)
    plain = verification_metrics(same, pair_scores("none")) if tta == "flip" else None
    ids = ids_for_pairs(list(zip(a.astype(str), b.astype(str))))  # "a b" by held-out image index
    names = ", ".join(data.held_out.classes[c] for c in np.unique(data.held_out.labels))
    return Verification(verification_metrics(same, scores),
                        f"{len(same)} pairs of {data.title} test images of classes never trained on ({names}), "
                        "half of them the same class", ids, scores,
                        f"Verification ROC: classes never trained on\n({names})", tta, plain)


def kaggle_predictions(plan: RunPlan, data: Data, model: nn.Module, preds: Predictions
                       ) -> tuple[list[str], torch.Tensor]:
    """(image ids, predicted labels) for the classification CSV: HW2P2's unlabelled test split when
    the face folders have one (a pass over that split), else the test split already predicted."""
    if data.kaggle_test is not None:
        loader = _face_eval_loader(plan, data, data.kaggle_test)
        return list(data.kaggle_test.ids), predict(model, loader, amp=plan.fast.amp).preds
    return [str(i) for i in range(len(preds))], preds.preds
