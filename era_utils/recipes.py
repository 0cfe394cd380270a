"""The assignments as typed recipes: each carries the numbers from docs/assignments.md (and the seeds).

`era-utils run NAME` and the notebooks read these at run time; any field can be overridden for one
run (`get_recipe("s10").override(epochs=1)`). A recipe is also the one place that turns its
numbers into training objects (nanoGPT's `configure_optimizers`): `configure_optimizers` builds the
optimizer and the per-step schedule, `range_test_optimizer` the LR range test's optimizer and
`criterion` the loss; `augment` describes the training augmentation, which the loaders build (batched
on the device, or per image on CPU workers). Nothing else builds them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

import torch
from torch import nn

from era_utils.face_losses import attach_head, loss_description, make_loss
from era_utils.schedules import cosine_warm_restarts, make_criterion, make_optimizer, one_cycle
from era_utils.transforms import HW2P2_AUGMENT, NO_AUGMENT, S7_AUGMENT, S10_AUGMENT, AugmentSpec, FaceAugmentSpec

Schedule = Literal["one_cycle", "cosine_restarts", "constant"]


SIZES = ("full", "preview", "quick")
DATASET_TITLES = {"cifar10": "CIFAR-10", "fashion_mnist": "Fashion-MNIST", "faces": "HW2P2's faces"}  # figures, reports


def dataset_title(name: str) -> str:
    """A dataset as figures and reports name it, e.g. "Fashion-MNIST" for "fashion_mnist"."""
    return DATASET_TITLES.get(name, name)


@dataclass(frozen=True)
class RunSize:
    """A smaller run of a recipe on Fashion-MNIST (it needs no download): how many images and epochs,
    the recipe changes that size needs (`changes`) and why (`why`).

    "preview": minutes on a 2-core CPU, long enough that the model clearly learns (README's first
    command, results/, the notebooks' committed outputs). "quick": CI's smoke run, every step on a
    few hundred images for one epoch, too short to learn much.
    """

    subset: int  # training images (stratified)
    test_subset: int  # test images
    epochs: int
    changes: tuple[tuple[str, Any], ...] = ()  # (recipe field, value) pairs
    why: str = ""
    device: Optional[str] = None  # None: the best device there is
    verification_pairs: int = 2000  # HW2P2's stand-in: same/different pairs of held-out test images
    dataset: str = "fashion_mnist"


QUICK = RunSize(subset=500, test_subset=500, epochs=1, device="cpu")  # CI: the same size for every recipe


@dataclass(frozen=True)
class Recipe:
    """One assignment's training recipe (model, data, optimiser, schedule, augmentation)."""

    name: str
    title: str
    model: str
    epochs: int
    batch_size: int
    optimizer: Literal["adam", "sgd"]
    lr: float  # base LR; for one_cycle the peak LR unless the LR range test picks it
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD only
    nesterov: bool = False  # SGD only
    label_smoothing: float = 0.0  # cross-entropy's (plain, or beside center loss)
    # The training loss (era_utils.face_losses): "cross_entropy", "arcface", "cosface" (margin heads on
    # L2-normalised embeddings; scale and margin None: the paper's) or "center" (cross-entropy + center loss).
    loss: Literal["cross_entropy", "arcface", "cosface", "center"] = "cross_entropy"
    margin_scale: Optional[float] = None  # s: ArcFace / CosFace (None: 64)
    margin: Optional[float] = None  # m: ArcFace radians (None: 0.5), CosFace cosine (None: 0.35)
    center_weight: float = 0.003  # lambda of center loss (Wen et al.)
    tta: Literal["none", "flip"] = "none"  # verification embeddings: "flip" averages each with its mirror image's
    cam_method: Literal["gradcam", "gradcam++"] = "gradcam"  # the heat maps of the misclassified images
    schedule: Schedule = "constant"
    peak_epoch: int = 5  # one_cycle: the epoch at which the LR reaches its maximum
    restart_epochs: int = 10  # cosine_restarts: T_0 in epochs (T_mult=2 -> restarts at 10, 30, 70)
    use_lr_finder: bool = False  # S10: max LR from the LR range test
    lr_finder_start: float = 1e-6
    lr_finder_end: float = 1.0
    lr_finder_iters: int = 100
    # fastai's "valley" sits inside the long falling stretch; "steepest" can pick the first noisy dip.
    lr_finder_method: Literal["valley", "steepest", "minimum"] = "valley"  # the max LR's rule
    # One Cycle's starting LR: "tenth" = max / 10; "descent" = where the range test's loss starts to fall.
    lr_finder_min_method: Literal["tenth", "descent"] = "tenth"
    # S7/S10's crop/flip/CutOut (albumentations per image, or batched on the device) or HW2P2's
    # FaceAugmentSpec (torchvision per image, or batched on the device): era_utils.transforms.
    augment: Union[AugmentSpec, FaceAugmentSpec] = NO_AUGMENT
    dataset: Literal["cifar10", "fashion_mnist", "faces"] = "cifar10"  # "faces": HW2P2's Kaggle folders
    target_accuracy: Optional[float] = None  # % on the test set, from the assignment
    max_params: Optional[int] = None  # the assignment's parameter limit (S7-lite: under 100k)
    verification: bool = False  # HW2P2: also verify pairs with the embeddings and write both Kaggle CSVs
    # A classification set standing in for faces: these classes (indices) are held out of
    # classification training and verified on, unseen "identities" as HW2P2's verification pairs are.
    # Fashion-MNIST: Trouser, Shirt and Bag, three unlike shapes; Shirt, the class most confused with
    # the other tops, out of classification too.
    held_out_classes: tuple[int, ...] = (1, 6, 8)
    seed: int = 1
    notes: str = ""
    quick: RunSize = QUICK  # CI's smoke run of this recipe
    preview: Optional[RunSize] = None  # minutes on a CPU, and the model learns

    def peak_epoch_for(self, epochs: int, steps_per_epoch: int) -> float:
        """One Cycle's peak for a run of `epochs`: the assignment's peak epoch at its own length;
        a shorter (or longer) run keeps the shape (peak at the same fraction of training), with at
        least 2 warm-up steps and 1 step after the peak."""
        base = RECIPES.get(self.name, self)  # the assignment's own epochs, before any override
        peak = self.peak_epoch if epochs == base.epochs else self.peak_epoch * epochs / base.epochs
        peak_steps = min(max(round(peak * steps_per_epoch), 2), epochs * steps_per_epoch - 1)
        return peak_steps / steps_per_epoch

    def override(self, **changes) -> "Recipe":
        """A copy with some fields changed; an unknown field name lists the valid ones."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"Recipe has no field(s) {unknown}; valid fields: {sorted(names)}")
        return dataclasses.replace(self, **changes)

    def describe(self) -> list[tuple[str, str]]:
        """The recipe's numbers in words, one (what, value) row each: for notebooks and reports."""
        from era_utils.lr_finder import RULES  # here: the command's start-up need not load matplotlib
        opt = f"{self.optimizer.upper() if self.optimizer == 'sgd' else 'Adam'}"
        if self.schedule == "one_cycle":  # torch's OneCycleLR cycles momentum (Adam's beta1) against the LR
            opt += (", momentum" if self.optimizer == "sgd" else ", beta1") + " cycled by One Cycle from 0.95 to 0.85 " \
                   "and back, against the LR" + (" (Nesterov)" if self.nesterov else "")
        elif self.optimizer == "sgd":
            opt += f", momentum {self.momentum:g}" + (" (Nesterov)" if self.nesterov else "")
        opt += f", weight decay {self.weight_decay:g}" if self.weight_decay else ""
        base = RECIPES.get(self.name, self)  # the assignment's own length, before any override
        if self.schedule == "one_cycle" and self.epochs == base.epochs:
            schedule = f"One Cycle, peak at epoch {self.peak_epoch} of {self.epochs}, no annihilation"
        elif self.schedule == "one_cycle":
            schedule = (f"One Cycle over {self.epochs} epoch(s), peak {self.peak_epoch / base.epochs:.0%} of the "
                        f"way in (as epoch {self.peak_epoch} of the assignment's {base.epochs}), no annihilation")
        elif self.schedule == "cosine_restarts":
            schedule = f"cosine annealing with warm restarts (T_0 = {self.restart_epochs} epochs, T_mult = 2)"
        else:
            schedule = "constant"
        lr = (f"max and min from an LR range test ({self.lr_finder_iters} batches, {self.lr_finder_start:g} to "
              f"{self.lr_finder_end:g}; max: {RULES[self.lr_finder_method]}; min: "
              f"{RULES[self.lr_finder_min_method]})" if self.use_lr_finder else f"{self.lr:g}")
        rows = [("model", self.model), ("epochs", str(self.epochs)), ("batch size", str(self.batch_size)),
                ("optimizer", opt), ("learning rate", lr), ("schedule", schedule),
                ("loss", loss_description(self.loss, self.label_smoothing, self.margin_scale, self.margin,
                                          self.center_weight)),
                ("augmentation", self.augment.describe())]
        if self.verification:
            rows.append(("verification", "cosine similarity of L2-normalised embeddings"
                         + (", each averaged with its mirror image's (flip)" if self.tta == "flip" else "")))
        if self.target_accuracy is not None:
            rows.append(("target", f"{self.target_accuracy:g}% test accuracy on {dataset_title(self.dataset)}, "
                                   "the assignment's, for its full recipe"))
        if self.max_params is not None:
            rows.append(("parameter limit", f"under {self.max_params:,}"))
        return rows

    def _repr_markdown_(self) -> str:
        """A table of the recipe in notebooks (IPython shows it for `recipe` as a cell's last line)."""
        rows = "\n".join(f"| {what} | {value} |" for what, value in self.describe())
        return f"**{self.title}**\n\n| | |\n|---|---|\n{rows}\n"

    def size(self, name: str) -> Optional[RunSize]:
        """The RunSize called `name` ("preview" | "quick"; None for "full", the recipe as it is)."""
        if name not in SIZES:
            raise ValueError(f"size must be one of {SIZES}, got {name!r}")
        return None if name == "full" else getattr(self, name)

    def sized(self, name: str) -> "Recipe":
        """This recipe at size `name`: its epochs and `changes` applied ("full": unchanged)."""
        size = self.size(name)
        return self if size is None else self.override(epochs=size.epochs, **dict(size.changes))

    # -- what the recipe builds ----------------------------------------------------------------

    def with_head(self, model: nn.Module) -> nn.Module:
        """`model` with the classifier the recipe's loss trains (ArcFace / CosFace: a margin head; center
        loss: class centres beside the classifier; cross-entropy: as it is)."""
        return attach_head(model, self.loss, self.margin_scale, self.margin)

    def criterion(self, model: Optional[nn.Module] = None) -> nn.Module:
        """The training loss: cross-entropy with the recipe's label smoothing, or the recipe's margin or
        center loss, which reads `model`'s head (`with_head`)."""
        cross_entropy = make_criterion(self.label_smoothing)
        if self.loss == "cross_entropy":
            return cross_entropy
        if model is None:
            raise ValueError(f"loss {self.loss!r} reads the model's head: call criterion(model)")
        return make_loss(self.loss, model, cross_entropy, self.center_weight)

    def _optimizer(self, params: Any, lr: float, fused: bool | None) -> torch.optim.Optimizer:
        return make_optimizer(self.optimizer, params, lr=lr, momentum=self.momentum, nesterov=self.nesterov,
                              weight_decay=self.weight_decay, fused=fused)

    def range_test_optimizer(self, model: nn.Module, fused: bool | None = None) -> torch.optim.Optimizer:
        """A fresh optimizer at the range test's start LR (the test ramps it from there)."""
        return self._optimizer(model.parameters(), self.lr_finder_start, fused)

    def range_test_iters(self, steps_per_epoch: int) -> int:
        """Batches in the LR range test: the recipe's count, or up to 3 passes over a small subset."""
        return min(self.lr_finder_iters, max(10, steps_per_epoch * 3))

    def check_steps(self, train_images: int, steps_per_epoch: int) -> None:
        """Refuse, before any work, a run too short for the recipe's schedule (One Cycle: 3 steps)."""
        if self.schedule == "one_cycle" and self.epochs * steps_per_epoch < 3:
            raise ValueError(
                f"recipe {self.name!r}: One Cycle needs at least 3 optimizer steps, but {train_images} "
                f"training images at batch {self.batch_size} give {steps_per_epoch} step(s) per epoch x "
                f"{self.epochs} epoch(s): use more images (--subset), more --epochs or a smaller --batch-size.")

    def configure_optimizers(self, model: nn.Module, steps_per_epoch: int, max_lr: float | None = None,
                             min_lr: float | None = None, fused: bool | None = None
                             ) -> tuple[torch.optim.Optimizer, Any]:
        """(optimizer, scheduler) for `model`: the recipe's optimizer at `max_lr` (default: the
        recipe's `lr`; S10 passes the range test's) and its schedule, stepped once per batch (None
        for a constant LR). One Cycle starts and ends at `min_lr` (default max_lr / 10; S10: the range
        test's LRMIN), no annihilation below it. `fused=None`: torch's fused kernels on CUDA."""
        lr = self.lr if max_lr is None else float(max_lr)
        optimizer = self._optimizer(model.parameters(), lr, fused)
        if self.schedule == "one_cycle":
            peak = self.peak_epoch_for(self.epochs, steps_per_epoch)
            div = 10.0 if min_lr is None else lr / float(min_lr)
            if not div > 1:
                raise ValueError(f"One Cycle needs min_lr < max_lr, got min {min_lr:g} and max {lr:g}")
            return optimizer, one_cycle(optimizer, lr, self.epochs, steps_per_epoch, peak_epoch=peak, div_factor=div)
        if self.schedule == "cosine_restarts":
            return optimizer, cosine_warm_restarts(optimizer, steps_per_epoch, T_0=self.restart_epochs, T_mult=2)
        return optimizer, None


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            name="s7",
            title="S7: ResNet18 on CIFAR-10 with GradCAM",
            model="resnet18",
            epochs=20,
            batch_size=128,
            optimizer="sgd",
            lr=0.05,  # peak LR of the one-cycle schedule (SGD, momentum 0.9)
            momentum=0.9,
            nesterov=True,
            weight_decay=5e-4,
            schedule="one_cycle",
            peak_epoch=5,
            augment=S7_AUGMENT,  # RandomCrop(32, padding=4) + CutOut 16x16
            notes="The seed gives epochs, augmentation and figures; the optimiser is this kit's choice.",
            preview=RunSize(subset=10000, test_subset=5000, epochs=4, changes=(("batch_size", 64),),
                            why="batch 64 instead of 128: more optimizer steps in the few epochs a CPU has time for"),
            quick=dataclasses.replace(QUICK, changes=(("batch_size", 64),),
                           why="batch 64 instead of 128, so the 500 images make eight optimiser steps, not four"),
        ),
        Recipe(
            name="s7_lite",
            title="S7-lite: under 100k parameters, no max-pool, target 87%",
            model="s7_lite",
            epochs=40,
            batch_size=128,
            optimizer="sgd",
            lr=0.1,
            momentum=0.9,
            nesterov=True,
            weight_decay=1e-4,
            schedule="one_cycle",
            peak_epoch=8,
            augment=S7_AUGMENT,
            target_accuracy=87.0,
            max_params=100_000,
            notes="'as many epochs as you want': 40 is this kit's choice.",
            preview=RunSize(subset=16000, test_subset=5000, epochs=4, changes=(("batch_size", 64),),
                            why="batch 64 instead of 128: more optimizer steps in the few epochs a CPU has time for"),
            quick=dataclasses.replace(QUICK, changes=(("batch_size", 64),),
                           why="batch 64 instead of 128, so the 500 images make eight optimiser steps, not four"),
        ),
        Recipe(
            name="s10",
            title="S10: custom ResNet with One Cycle (peak at epoch 5, no annihilation)",
            model="custom_resnet",
            epochs=24,
            batch_size=512,
            optimizer="adam",
            lr=0.01,  # fallback peak LR; the LR range test replaces it
            weight_decay=1e-4,
            schedule="one_cycle",
            peak_epoch=5,
            use_lr_finder=True,
            lr_finder_start=1e-6,
            lr_finder_end=1.0,
            lr_finder_iters=100,
            # A tenth of the LR at the smoothed loss's minimum. Measured here (Fashion-MNIST, 5,000
            # images, 3 epochs, CPU): valley suggested 4.5e-5 -> 24.8% test accuracy; this rule
            # 3.3e-4 -> 62.3%; the minimum itself 3.3e-3 -> 72.9%. Valley sat far down the early
            # fall that is the model learning, not the LR's effect.
            lr_finder_method="minimum",
            lr_finder_min_method="descent",  # "LRMIN = FIND": where the loss starts to fall
            augment=S10_AUGMENT,  # RandomCrop 32 after pad 4 -> FlipLR -> CutOut 8x8 (mean fill)
            target_accuracy=90.0,
            preview=RunSize(subset=6000, test_subset=5000, epochs=4,
                            changes=(("batch_size", 64), ("lr_finder_iters", 40)),
                            why="batch 64 instead of 512 (94 optimizer steps an epoch rather than 12) and a "
                                "40-batch LR range test instead of 100, so a CPU finishes in minutes"),
            quick=dataclasses.replace(QUICK, changes=(("batch_size", 16), ("lr_finder_iters", 30)),
                           why="batch 16 instead of 512, so the 500 images make 32 steps rather than one: enough "
                               "for the range test (30 batches) to draw a curve and for BatchNorm's running "
                               "statistics to settle; with a handful of large batches the test accuracy stays "
                               "at chance whatever the network learnt"),
        ),
        Recipe(
            name="hw2p2",
            title="HW2P2: face classification (and verification) with a ResNet-34",
            model="face_resnet34",
            epochs=30,
            batch_size=128,
            optimizer="sgd",
            lr=0.1,
            momentum=0.9,
            weight_decay=1e-4,
            label_smoothing=0.2,
            schedule="cosine_restarts",
            restart_epochs=10,
            augment=HW2P2_AUGMENT,  # flip, rotation 12, grayscale 0.1, colour jitter 0.2, random erasing
            verification=True,
            # On a synthetic pattern task this ResNet's GradCAM maps were often blank (up to 47 of 128) or
            # off the evidence; GradCAM++'s peaked on it for 128 of 128 images (tests/test_gradcam.py).
            cam_method="gradcam++",
            dataset="faces",  # the Kaggle folders (--data-dir); Fashion-MNIST stands in anywhere
            notes="Seed 001: SGD 0.1, wd 1e-4, label smoothing 0.2, cosine warm restarts, AMP, batch 128.",
            preview=RunSize(subset=8000, test_subset=5000, epochs=3,
                            changes=(("batch_size", 64), ("lr", 0.005), ("restart_epochs", 3)),
                            why="batch 64 and LR 0.005 instead of 128 and 0.1 (that LR suits thousands of "
                                "steps over 7000 identities; a few hundred steps on Fashion-MNIST go astray with "
                                "it), and the cosine cycle over the preview's 3 epochs instead of 10, so its LR "
                                "falls as the full recipe's first cycle does"),
            quick=dataclasses.replace(QUICK, changes=(("batch_size", 64), ("lr", 0.003)),
                           why="batch 64 and LR 0.003 instead of 128 and 0.1: that learning rate suits thousands "
                               "of steps over 7000 identities, but makes these few steps diverge (the test loss "
                               "explodes and every pair's similarity comes out as 1.0)"),
        ),
    )
}


def list_recipes() -> list[str]:
    """Names accepted by `get_recipe` and `era-utils run`."""
    return list(RECIPES)


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`; an unknown name lists the valid ones."""
    key = name.lower().replace("-", "_")
    if key not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}; valid recipes: {', '.join(RECIPES)}")
    return RECIPES[key]
