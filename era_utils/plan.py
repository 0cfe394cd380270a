"""A run's plan: its settings (`era_utils.settings`, as given) resolved against the recipe, the run's size and
the machine, every input checked once, here, before any work (the data, the model and the output folder
come later); `RunPlan` is what every step reads.

    plan = plan_run("s10", size="preview", subset=5000)   # or plan_run("s10", settings=RunSettings(...))
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import torch

from era_utils import distributed, folder_lock
from era_utils.checkpoint import check_settings, read_checkpoint
from era_utils.choices import TTA_MODES
from era_utils.data import CIFAR10_CLASSES, FASHION_MNIST_CLASSES, read_pairs
from era_utils.face_losses import check_loss
from era_utils.files import json_safe, remove_leftover_temp_files
from era_utils.loggers import logger_names
from era_utils.recipes import Recipe, RunSize, get_recipe
from era_utils.settings import RunSettings, declared, run_command, shareable_command
from era_utils.speed import FastPath, fast_path
from era_utils.transforms import FaceAugmentSpec
from era_utils.utils import get_device

if TYPE_CHECKING:
    from era_utils.steps import Data

__all__ = ["NO_FACES", "RunPlan", "claim_out", "plan_run"]

NO_FACES = ("HW2P2's face data needs data_dir (--data-dir): the unzipped Kaggle folder with train/<identity>/*.jpg, "
            "dev/<identity>/*.jpg and test/*.jpg. Without it, --dataset fashion_mnist stands in.")
DEFAULT_VERIFICATION_PAIRS = 4000  # HW2P2's stand-in, without a size's own number


@dataclass(frozen=True)
class RunPlan:
    """Everything a run was asked to do (`asked`), resolved once: the recipe (with this run's overrides), the
    data, the device and how it is used (`fast`), where files go. Every step reads it."""

    recipe: Recipe  # with this run's overrides and size
    asked: RunSettings  # the settings as given: what the fields below were resolved from
    size: str  # "full" (the assignment), "preview" (minutes on a CPU, learns) or "quick" (CI's smoke run)
    sizing: Optional[RunSize]  # the recipe's numbers for that size (None: full)
    dataset: str  # "cifar10" | "fashion_mnist" | "faces"
    subset: Optional[int]  # training images (stratified subset); None: all
    test_subset: Optional[int]
    device: torch.device
    fast: FastPath
    loader: str  # "gpu" | "workers"
    loader_why: str  # why `loader`, in words, for the log and the notebook's plan table
    num_workers: int
    out: Path
    scratch_out: bool  # `out` is a temporary folder the kit chose (a quick run's): reused freely
    verbose: bool  # progress bars and the log (rank 0 only)
    verification_pairs: int  # HW2P2 stand-in: pairs drawn from the test images
    processes: int  # processes training together (torchrun, --nproc); the recipe's batch is split over them

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
        rows = [("dataset", self.dataset + (f" from {self.asked.data_dir}" if self.asked.data_dir else "")),
                ("training images", images), ("device", f"{self.device} ({self.fast.describe()})"),
                ("loader", self.loader_text),
                ("output folder", str(self.out) + (" (resuming)" if self.asked.resume else ""))]
        if self.processes > 1:
            rows.append(("processes", f"{self.processes} (DistributedDataParallel), batch {self.batch_per_process} each"
                         + (", SyncBatchNorm" if self.asked.sync_batchnorm else "")))
        if self.sizing is not None:
            rows.append((f"{self.size} run", f"{self.sizing.subset:,} images drawn for training, {self.recipe.epochs} "
                         f"epoch(s)" + (f"; {self.sizing.why}" if self.sizing.why else "; the recipe otherwise as it is")))
        return self.recipe.describe() + rows + [("as a command", f"`{self.as_command()}`")]

    def checkpoint_settings(self) -> dict[str, Any]:
        """What a resumed run must share with the run that wrote the checkpoint: the recipe's numbers and the
        settings declared `resume` (the data drawn, how it is loaded, the precision) as this plan resolved them.
        Plain JSON values, kept in the checkpoint."""
        # tta and cam_method change only the analysis after training: a resumed run may ask for others
        recipe = {k: v for k, v in asdict(self.recipe).items()
                  if k not in ("title", "notes", "preview", "quick", "tta", "cam_method")}
        resolved = {"amp": self.fast.amp,  # workers only matter to the workers loader's random stream
                    "num_workers": self.num_workers if self.loader == "workers" else None}
        plan = {spec.resume: resolved.get(name, getattr(self, name, None)) for name, spec in declared() if spec.resume}
        return json.loads(json.dumps(json_safe({**recipe, **plan})))  # tuples as lists: as read back

    def as_command(self) -> str:
        """This run as an `era-utils run` command line (from its settings as given)."""
        argv = run_command(self.recipe.name, size=self.size, **{
            name: value for name, value in self.asked.changed().items() if dict(declared())[name].flag})
        return shareable_command(argv[1:])  # a machine's own folders as placeholders

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


def claim_out(plan: RunPlan) -> None:
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
    if plan.asked.checkpoints and plan.asked.resume and ckpt.is_file():  # before the data and the LR test, not after
        check_settings(read_checkpoint(ckpt, mmap=True), plan.checkpoint_settings(), ckpt)  # fit reads the weights
    if plan.asked.checkpoints and not plan.asked.resume and not plan.scratch_out and ckpt.is_file():
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


def plan_run(recipe: Union[str, Recipe], *, size: str = "full", settings: Optional[RunSettings] = None,
             **given: Any) -> RunPlan:
    """Resolve a run: the recipe `recipe` (a name or a Recipe) at `size` with the settings `given` by name
    (or as one `RunSettings`); every setting, its default and its option: `era_utils.settings` (`era-utils
    run --help` lists them).

    `size`: "full" (the recipe as the assignment gives it), "preview" (the recipe's preview: Fashion-MNIST,
    minutes on a 2-core CPU, and the model learns) or "quick" (CI's smoke run: a few hundred images, one
    epoch, the CPU); a setting given explicitly still wins. Under torchrun a CUDA device is the process's own
    GPU (LOCAL_RANK), and only rank 0 prints progress.
    """
    asked = settings if settings is not None else RunSettings.given(given)  # each value checked there
    if settings is not None and given:
        raise TypeError("plan_run takes settings=RunSettings(...) or the settings by name, not both")
    base = get_recipe(recipe) if isinstance(recipe, str) else recipe
    logger_names(asked.log)  # refuse an unknown logger now, not after the training
    sizing = base.size(size)
    if size != "full" and sizing is None:
        raise ValueError(f"recipe {base.name!r} has no {size} size; run it in full or give the sizes yourself")
    chosen = base.sized(size).override(**asked.recipe_changes())
    _check_loss_and_tta(chosen)
    _check_schedule_options(chosen, asked)
    sized = (lambda name, value: value if value is not None else getattr(sizing, name, None))  # given, else the size's
    dataset = asked.dataset or (sizing.dataset if sizing else None) or chosen.dataset
    _check_data(chosen, dataset, asked)
    processes = _processes(asked.processes, chosen.batch_size)
    device = distributed.local_device(get_device(asked.device or (sizing.device if sizing else None)))
    _check_devices_for(processes, device)
    if asked.sync_batchnorm and (processes == 1 or device.type != "cuda"):
        raise ValueError("sync_batchnorm shares BatchNorm's statistics between processes on CUDA GPUs (torch's "
                         "SyncBatchNorm has no CPU kernel): use it with --nproc N on GPUs, or leave it out"
                         + (f" (this run: {processes} process, {device})" if processes == 1 else f" (this run: {device})"))
    path = fast_path(device, enabled=asked.fast, amp=asked.amp)
    path = replace(path, sync_batchnorm=asked.sync_batchnorm, compile=path.compile if asked.compile is None
                   else asked.compile)
    if asked.loader == "gpu" and not asked.fast:
        raise ValueError("loader 'gpu' does not fit this run: the classic path augments per image on CPU workers; "
                         "use loader 'workers' (or 'auto')")
    loader, loader_why = _choose_loader(asked.loader, path, chosen.augment, dataset)
    quick = size == "quick"
    return RunPlan(
        recipe=chosen, asked=asked, size=size, sizing=sizing, dataset=dataset, subset=sized("subset", asked.subset),
        test_subset=sized("test_subset", asked.test_subset), device=device, fast=path, loader=loader,
        loader_why=loader_why,
        num_workers=asked.num_workers if asked.num_workers is not None else 0 if quick else 2,  # Colab's 2 cores; a
        # quick run's one epoch is mostly worker start-up
        out=Path(asked.out) if asked.out is not None else _default_out(chosen.name, quick),
        scratch_out=quick and asked.out is None, verbose=asked.verbose and distributed.launch_rank() == 0,
        verification_pairs=sized("verification_pairs", asked.verification_pairs) or DEFAULT_VERIFICATION_PAIRS,
        processes=processes)


def _check_data(recipe: Recipe, dataset: str, asked: RunSettings) -> None:
    """The data a run asks for fits its recipe and is there to be read (HW2P2's pairs files read now: a bad
    pairs file must not wait for the training)."""
    if dataset == "faces" and not isinstance(recipe.augment, FaceAugmentSpec):
        raise ValueError(f"recipe {recipe.name!r} trains on 32x32 images; the face folders are HW2P2's (recipe 'hw2p2')")
    if dataset == "faces" and asked.data_dir is None:
        raise FileNotFoundError(NO_FACES)
    if dataset == "faces" and recipe.verification:
        _check_pairs_files(asked.dev_pairs, asked.test_pairs, asked.pairs_root)


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


def _check_schedule_options(recipe: Recipe, asked: RunSettings) -> None:
    """Refuse an LR rule or a restart length the run would not use (nothing a user passed goes ignored)."""
    if asked.lr_finder_method is not None and not recipe.use_lr_finder:
        why = "--lr gives the LR, so no range test runs" if asked.lr is not None else \
            f"recipe {recipe.name!r} runs no LR range test (s10 does)"
        raise ValueError(f"--lr-rule (lr_finder_method) picks the max LR from the LR range test, but {why}: "
                         "leave --lr-rule out")
    if asked.restart_epochs is not None and recipe.schedule != "cosine_restarts":
        raise ValueError(f"--restart-epochs (restart_epochs) sets the cycle of cosine annealing with warm restarts, "
                         f"and recipe {recipe.name!r} has schedule {recipe.schedule!r} (hw2p2's restarts): "
                         "leave --restart-epochs out")


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
    if batch_size % asked:
        raise ValueError(f"batch size {batch_size} does not split evenly over {asked} processes (each takes an equal "
                         f"share of every step): give --batch-size a multiple of {asked}")
    return asked


def _default_out(name: str, quick: bool) -> Path:
    """runs/NAME; a quick smoke run writes under the temporary folder instead (CI, notebooks in CI)."""
    if quick:
        return Path(tempfile.gettempdir()) / "era_utils_quick" / name
    return Path("runs") / name


