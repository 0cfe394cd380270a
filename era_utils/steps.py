"""The steps of an assignment run, one public function each, in the order a run calls them:

    plan = plan_run("s10", dataset="fashion_mnist", subset=5000)     # era_utils.plan: settings, device, fast path
    start(plan)                                                       # seeds; claims the output folder
    data = load_data(plan)                                            # arrays (or face folders)
    train_loader, test_loader = build_loaders(plan, data)
    model = build_model(plan, data)
    lr_test = range_test(plan, model, train_loader)                   # S10: the LR range test
    optimizer, scheduler = optimizer_and_schedule(plan, model, train_loader, lr_test)
    history = train(plan, model, train_loader, test_loader, optimizer, scheduler)
    preds = final_predictions(plan, model, test_loader, history)      # the last epoch's test pass, kept
    result = verify(plan, data, model)                                # HW2P2: pairs, AUC, EER

`era-utils run` (era_utils.runner) is this chain plus its files; every notebook cell calls one of
these steps; the benchmarks train through them. The recipe's numbers are read here at run time,
never copied: a step asks the plan's recipe (`Recipe.configure_optimizers`, `criterion`, ...).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from era_utils import distributed
from era_utils.analysis import PredictionCollector, Predictions, predict
from era_utils.callbacks import Callback
from era_utils.checkpoint import Checkpointing
from era_utils.choices import RUN_DATASETS
from era_utils.data import (
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
from era_utils.face_losses import l2_normalise
from era_utils.kaggle import ids_for_pairs
from era_utils.loaders import (Loader, can_fetch_inputs, dataset_loader, eval_loader, load_splits, make_loaders,
                               resolve_drop_last)
from era_utils.loggers import make_loggers
from era_utils.lr_finder import LRFinderResult, find_lr
from era_utils.models import create_model
from era_utils.plan import NO_FACES, RunPlan, claim_out
from era_utils.recipes import dataset_title
from era_utils.transforms import check_mean_std, hw2p2_test_transform, hw2p2_train_transform
from era_utils.utils import set_seed
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
    "Verification",
    "build_loaders",
    "build_model",
    "final_predictions",
    "kaggle_predictions",
    "load_data",
    "optimizer_and_schedule",
    "range_test",
    "start",
    "train",
    "verify",
]

FACE_SIZE = 224  # HW2P2's images are 224x224 RGB
# Checkpoints at most once a minute: a GPU epoch of S10 can take under a second, and a 78 MB
# checkpoint every epoch would double it.
CHECKPOINT_INTERVAL_S = 60.0
# Training images (x epochs) beyond which `start` warns before a CPU run: over half an hour at the
# ~100 images/s a 2-core CPU trains these networks at.
LONG_ON_A_CPU = 200_000


# ----------------------------------------------------------------------------- the run


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
    claim_out(plan)
    set_seed(plan.recipe.seed)
    plan.fast.apply()


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

    def __post_init__(self) -> None:
        self.mean, self.std = check_mean_std(self.mean, self.std)  # here, once: the loaders take them as checked

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
        if plan.asked.data_dir is None:
            raise FileNotFoundError(NO_FACES)
        root = Path(plan.asked.data_dir)  # the files only: the loaders decide how they are read (build_loaders)
        kaggle_test = FaceFolder(root, "test") if (root / "test").is_dir() else None
        return Data("faces", FaceFolder(root, "train"), FaceFolder(root, "dev"), HW2P2_MEAN, HW2P2_STD,
                    kaggle_test=kaggle_test)
    train, test = load_splits(plan.dataset, root=plan.asked.data_dir, download=plan.asked.download, subset=plan.subset,
                              test_subset=plan.test_subset, seed=plan.recipe.seed)
    # Fashion-MNIST stays 1-channel (the models take in_channels=1); CIFAR-10 is RGB.
    mean, std = dataset_stats(plan.dataset, size=train.images.shape[1], channels=train.images.shape[-1],
                              root=plan.asked.data_dir)
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
    loggers (`log`, e.g. "csv,tensorboard"), writing in the plan's folder. The last epoch's test pass
    is kept in the History for `final_predictions` (one process, a test loader in order)."""
    _check_fresh(optimizer, scheduler)
    if callbacks is None:  # loggers write once, from rank 0
        callbacks = (make_loggers(plan.asked.log, plan.out, config=plan.checkpoint_settings())
                     if distributed.is_main() else [])
    checkpoint = Checkpointing(plan.checkpoint_path, interval=CHECKPOINT_INTERVAL_S, resume=plan.asked.resume,
                               settings=plan.checkpoint_settings()) if plan.asked.checkpoints else None
    keep = PredictionCollector() if plan.processes == 1 and can_fetch_inputs(test_loader) else None
    history = fit(model, train_loader, test_loader, optimizer, plan.recipe.epochs,
                  criterion=plan.recipe.criterion(model), scheduler=scheduler, path=plan.fast, checkpoint=checkpoint,
                  callbacks=callbacks, verbose=plan.verbose, last_test_pass=keep)
    history.last_test_pass = keep.predictions(test_loader) if keep is not None and keep.filled else None
    return history


def final_predictions(plan: RunPlan, model: nn.Module, test_loader: Any, history: History) -> Predictions:
    """The test set's predictions, which every analysis reads: the last epoch's test pass when `train` kept it
    over this loader (one pass fewer: ~20 s of a 2-core CPU preview in fp32), else a pass of its own in the
    precision the model trained in (a resumed run that had no epoch left, several processes, another loader)."""
    kept = getattr(history, "last_test_pass", None)
    if kept is not None and kept.loader is test_loader:
        return kept
    return predict(model, test_loader, amp=plan.fast.amp)


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
        if not (plan.asked.dev_pairs and plan.asked.test_pairs):
            raise ValueError("verification on the face folders needs the pairs files: dev_pairs (a b label) "
                             "and test_pairs (a b), as in the HW2P2 verification download")
        if plan.loader == "gpu":  # the pairs' images decoded on the device, as training read its own
            kw.update(loader=lambda paths: _face_eval_loader(plan, data, paths))
        else:
            kw.update(transform=_face_eval_transform(data), batch_size=plan.recipe.batch_size,
                      num_workers=plan.num_workers)
        kw.update(progress=plan.verbose)
        dev = read_pairs(plan.asked.dev_pairs, root=plan.asked.pairs_root)
        metrics = verify_pairs(model, dev, tta=tta, **kw)
        plain = verify_pairs(model, dev, **kw) if tta == "flip" else None
        test = read_pairs(plan.asked.test_pairs, root=plan.asked.pairs_root, labelled=False)
        scores = score_pairs(model, test, tta=tta, **kw)
        return Verification(metrics, f"{plan.asked.dev_pairs} (labelled), {plan.asked.test_pairs} (scored)",
                            ids_for_pairs(test, root=plan.asked.pairs_root), scores, "Verification ROC (dev pairs)", tta, plain)
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
