"""The assignments as typed recipes: each carries the numbers from ASSIGNMENTS.md (and the seeds).

`era-utils run NAME` and the notebooks read these; any field can be overridden for one run
(`get_recipe("s10").override(epochs=1)`), e.g. to try a recipe on a subset or another dataset.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Optional

from era_utils.transforms import S7_AUGMENT, S10_AUGMENT, AugmentSpec

Schedule = Literal["one_cycle", "cosine_restarts", "constant"]


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
    label_smoothing: float = 0.0
    schedule: Schedule = "constant"
    peak_epoch: int = 5  # one_cycle: the epoch at which the LR reaches its maximum
    restart_epochs: int = 10  # cosine_restarts: T_0 in epochs (T_mult=2 -> restarts at 10, 30, 70)
    use_lr_finder: bool = False  # S10: max LR from the LR range test
    lr_finder_start: float = 1e-6
    lr_finder_end: float = 1.0
    lr_finder_iters: int = 100
    # fastai's "valley" sits inside the long falling stretch; "steepest" can pick the first noisy dip.
    lr_finder_method: Literal["valley", "steepest", "minimum"] = "valley"
    # Batched on the GPU loader or per sample with albumentations; None = HW2P2's torchvision pipeline.
    augment: Optional[AugmentSpec] = None
    dataset: Literal["cifar10", "fashion_mnist"] = "cifar10"
    target_accuracy: Optional[float] = None  # % on the test set, from the assignment
    seed: int = 1
    notes: str = ""

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
            notes="'as many epochs as you want': 40 is this kit's choice.",
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
            augment=S10_AUGMENT,  # RandomCrop 32 after pad 4 -> FlipLR -> CutOut 8x8 (mean fill)
            target_accuracy=90.0,
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
            augment=None,  # torchvision v2: flip, rotation 12, grayscale, colour jitter, erasing
            notes="Seed 001: SGD 0.1, wd 1e-4, label smoothing 0.2, cosine warm restarts, AMP, batch 128.",
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
