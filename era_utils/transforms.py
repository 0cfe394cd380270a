"""Augmentation recipes for the assignments, described once and built two ways.

`AugmentSpec` is the one description of a recipe (pad-and-crop, flip, cutout). The albumentations
2.x pipeline here (per image, in DataLoader workers) and `era_utils.gpu_loader.GPULoader` (batched,
on the device) are both built from it, so the two paths cannot drift apart:

    S7   RandomCrop 32 after padding 4, CutOut 16x16                         (seed 003)
    S10  RandomCrop 32 after padding 4, FlipLR, CutOut 8x8 filled with mean  (seeds 002, 004)
    test normalise only

HW2P2 (face classification, seed 001) has a recipe of its own, `FaceAugmentSpec`: flip, rotation 12,
grayscale p=0.1, colour jitter 0.2, normalise with the dataset's own statistics, random erasing. It is
built per image as torchvision.transforms.v2 here (`hw2p2_train_transform`, CPU workers) and batched on
the device by `era_utils.face_augment` (the face loader, and `GPULoader` for arrays), with the same draws.

albumentations is imported lazily, so `AugmentSpec` and the GPU loader work without it.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence, Union

import numpy as np
import torch

if TYPE_CHECKING:  # only for type hints; the real import is lazy (see _albumentations)
    import albumentations as A

__all__ = [
    "AugmentSpec",
    "FaceAugmentSpec",
    "HW2P2_AUGMENT",
    "S7_AUGMENT",
    "S10_AUGMENT",
    "NO_AUGMENT",
    "albumentations_transform",
    "eval_transform",
    "hw2p2_train_transform",
    "hw2p2_test_transform",
    "apply_transform",
    "seed_transform",
    "reseed_augmentation",
    "epoch_item",
    "CheckedStats",
    "check_images",
    "check_mean_std",
]

Fill = Union[str, float, Sequence[float]]


# ---------------------------------------------------------------------------------------------
#  The recipe
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AugmentSpec:
    """One augmentation recipe, applied in this order: pad-and-crop, flip, cutout, normalise.

    Both `albumentations_transform` and `GPULoader` read it, so they apply the same recipe.
    """

    crop_padding: int = 4  # pixels of black (0) padding on every side before a random crop back
    # to the original size; the crop offset is uniform in [0, 2 * crop_padding] per axis
    flip: bool = False  # horizontal flip with p=0.5 per image
    cutout_size: int = 0  # side of the square hole in pixels; 0 = no cutout. The hole always lies
    # fully inside the image, like albumentations 2.x CoarseDropout (top-left uniform in [0, H-s])
    cutout_fill: Fill = "mean"  # "mean" (the dataset mean) or pixel values in 0..255 (e.g. 0 = black)
    cutout_p: float = 1.0  # probability of a hole per image (CutOut paper: always; seed 002 used 0.5)

    def __post_init__(self) -> None:
        if int(self.crop_padding) != self.crop_padding or self.crop_padding < 0:
            raise ValueError(f"crop_padding must be an int >= 0 (pixels), got {self.crop_padding!r}")
        if int(self.cutout_size) != self.cutout_size or self.cutout_size < 0:
            raise ValueError(f"cutout_size must be an int >= 0 (pixels), got {self.cutout_size!r}")
        if not 0.0 <= float(self.cutout_p) <= 1.0:
            raise ValueError(f"cutout_p must be a probability in [0, 1], got {self.cutout_p!r}")
        fill = self.cutout_fill
        if isinstance(fill, str):
            if fill != "mean":
                raise ValueError(f"cutout_fill must be 'mean' or pixel values in 0..255, got {fill!r}")
        else:
            values = np.atleast_1d(np.asarray(fill, dtype=np.float64))
            if values.ndim != 1 or values.size == 0 or values.min() < 0 or values.max() > 255:
                raise ValueError(f"cutout_fill must be 'mean' or pixel values in 0..255, got {fill!r}")

    def describe(self) -> str:
        """The recipe in words, e.g. "random crop after 4 px padding, horizontal flip, CutOut 8x8 (mean fill)"."""
        parts = []
        if self.crop_padding:
            parts.append(f"random crop after {self.crop_padding} px padding")
        if self.flip:
            parts.append("horizontal flip")
        if self.cutout_size and self.cutout_p:
            fill = "mean" if isinstance(self.cutout_fill, str) else f"pixel value {self.cutout_fill}"
            chance = "" if self.cutout_p == 1 else f", p = {self.cutout_p:g}"
            parts.append(f"CutOut {self.cutout_size}x{self.cutout_size} ({fill} fill{chance})")
        return ", ".join(parts) or "normalise only"

    @property
    def is_identity(self) -> bool:
        """True when the recipe only normalises (the test-time transform)."""
        return self.crop_padding == 0 and not self.flip and (self.cutout_size == 0 or self.cutout_p == 0)

    def check_image_size(self, height: int, width: int) -> None:
        """Raise a ValueError when the cutout hole does not fit in a (height, width) image."""
        if self.cutout_size > min(height, width):
            raise ValueError(
                f"cutout_size={self.cutout_size} is larger than the {height}x{width} images; "
                f"use a hole of at most {min(height, width)} pixels (S10 uses 8, S7 uses 16 on 32x32)"
            )

    def fill_pixels(self, mean: Sequence[float]) -> tuple[int, ...]:
        """The cutout fill in uint8 pixel units, one value per channel of `mean` ([0, 1] units).

        Rounded to the nearest integer because uint8 images cannot hold fractions (albumentations
        would truncate a float fill); after normalisation a "mean" hole is within 0.5/255/std of 0.
        """
        channels = len(mean)
        if isinstance(self.cutout_fill, str):  # "mean"
            values = np.asarray(mean, dtype=np.float64) * 255.0
        else:
            values = np.atleast_1d(np.asarray(self.cutout_fill, dtype=np.float64))
            if values.size == 1:
                values = np.repeat(values, channels)
            if values.size != channels:
                raise ValueError(
                    f"cutout_fill has {values.size} values but the images have {channels} channels"
                )
        return tuple(int(v) for v in np.clip(np.rint(values), 0, 255))


S7_AUGMENT = AugmentSpec(crop_padding=4, flip=False, cutout_size=16)  # seed 003
S10_AUGMENT = AugmentSpec(crop_padding=4, flip=True, cutout_size=8, cutout_fill="mean")  # seeds 002/004
NO_AUGMENT = AugmentSpec(crop_padding=0, flip=False, cutout_size=0)  # test time: normalise only


@dataclass(frozen=True)
class FaceAugmentSpec:
    """HW2P2's augmentation (seed 001), in torchvision v2's order: flip, rotation, grayscale, colour
    jitter, normalise, random erasing. Each step's draw is torchvision's, image by image.

    `hw2p2_train_transform` builds it per image (torchvision v2, CPU workers); `era_utils.face_augment`
    applies it to whole batches on the device. Both read this one description.
    """

    flip_p: float = 0.5  # horizontal flip
    rotation: float = 12.0  # degrees: the angle is uniform in [-rotation, rotation]; nearest, black corners
    grayscale_p: float = 0.1  # RGB -> gray (ITU-R 601-2 luma), kept as 3 channels
    jitter: float = 0.2  # brightness, contrast and saturation factors uniform in [1 - jitter, 1 + jitter],
    # applied in a random order per image (torchvision's ColorJitter)
    erasing_p: float = 0.5  # one rectangle erased to 0 (the mean, after normalising)
    erasing_scale: tuple[float, float] = (0.1, 0.1)  # its area, as a fraction of the image's
    erasing_ratio: tuple[float, float] = (0.3, 3.3)  # its aspect (height / width), log-uniform

    def __post_init__(self) -> None:
        for name in ("flip_p", "grayscale_p", "erasing_p"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)!r}")
        if not 0.0 <= float(self.rotation) < 180.0:
            raise ValueError(f"rotation must be degrees in [0, 180), got {self.rotation!r}")
        if not 0.0 <= float(self.jitter) < 1.0:
            raise ValueError(f"jitter must be in [0, 1) (factors 1 - jitter .. 1 + jitter), got {self.jitter!r}")
        low, high = self.erasing_scale
        if not 0.0 < low <= high < 1.0:
            raise ValueError(f"erasing_scale must be (low, high) fractions with 0 < low <= high < 1, got "
                             f"{self.erasing_scale!r}")
        low, high = self.erasing_ratio
        if not 0.0 < low <= high:
            raise ValueError(f"erasing_ratio must be (low, high) aspect ratios with 0 < low <= high, got "
                             f"{self.erasing_ratio!r}")

    def describe(self) -> str:
        """The recipe in words, e.g. "flip, rotation +-12 degrees, grayscale p = 0.1, ..."."""
        parts = []
        if self.flip_p:
            parts.append("horizontal flip" + ("" if self.flip_p == 0.5 else f" (p = {self.flip_p:g})"))
        if self.rotation:
            parts.append(f"rotation +-{self.rotation:g} degrees")
        if self.grayscale_p:
            parts.append(f"grayscale (p = {self.grayscale_p:g})")
        if self.jitter:
            parts.append(f"colour jitter {self.jitter:g} (brightness, contrast, saturation)")
        if self.erasing_p:
            low, high = self.erasing_scale
            area = f"{low:.0%}" if low == high else f"{low:.0%}-{high:.0%}"
            parts.append(f"random erasing (p = {self.erasing_p:g}, {area} of the area)")
        return ", ".join(parts) or "normalise only"

    @property
    def is_identity(self) -> bool:
        """True when the recipe only normalises."""
        return not (self.flip_p or self.rotation or self.grayscale_p or self.jitter or self.erasing_p)

    def check_image_size(self, height: int, width: int) -> None:
        """Any image size works: the erased area is a fraction of the image."""


HW2P2_AUGMENT = FaceAugmentSpec()  # seed 001: flip, rotation 12, grayscale 0.1, jitter 0.2, erasing 0.5 at 10%


# ---------------------------------------------------------------------------------------------
#  Input checks shared by both paths
# ---------------------------------------------------------------------------------------------

def check_images(images: Any, name: str = "images") -> np.ndarray | torch.Tensor:
    """Return `images` as (N, H, W, C) uint8 (a (N, H, W) gray stack gains C=1); raise otherwise."""
    if not isinstance(images, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name} must be a numpy array or torch tensor of uint8 pixels, got {type(images).__name__}")
    is_uint8 = images.dtype == torch.uint8 if isinstance(images, torch.Tensor) else images.dtype == np.uint8
    if not is_uint8:
        raise TypeError(
            f"{name} must be uint8 pixels (0..255) shaped (N, H, W, C), got dtype {images.dtype}; "
            "convert with (x * 255).round().astype(np.uint8) if they are floats in [0, 1]"
        )
    if images.ndim == 3:  # (N, H, W) gray, e.g. raw Fashion-MNIST
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"{name} must be shaped (N, H, W, C) with C = 1 (gray) or 3 (RGB), got {tuple(images.shape)}"
        )
    return images


class CheckedStats(tuple):
    """A per-channel mean or std that `check_mean_std` accepted: the layers it is passed on to (the loaders,
    the transforms they build) take it as it is instead of checking it again."""


def check_mean_std(mean: Sequence[float], std: Sequence[float], channels: int | None = None
                   ) -> tuple[CheckedStats, CheckedStats]:
    """Return (mean, std) as float tuples in [0, 1] units; check lengths against `channels`. Values this
    function returned before are only compared with `channels`."""
    checked = isinstance(mean, CheckedStats) and isinstance(std, CheckedStats)
    mean_t = mean if checked else tuple(float(m) for m in np.atleast_1d(np.asarray(mean, dtype=np.float64)))
    std_t = std if checked else tuple(float(s) for s in np.atleast_1d(np.asarray(std, dtype=np.float64)))
    if len(mean_t) != len(std_t):
        raise ValueError(f"mean has {len(mean_t)} values but std has {len(std_t)}; give one per channel")
    if channels is not None and len(mean_t) != channels:
        raise ValueError(
            f"mean/std have {len(mean_t)} values but the images have {channels} channel(s); "
            "give one value per channel (Fashion-MNIST: 1, CIFAR-10: 3)"
        )
    return (mean_t, std_t) if checked else _checked_values(mean_t, std_t)


def _checked_values(mean_t: tuple[float, ...], std_t: tuple[float, ...]) -> tuple[CheckedStats, CheckedStats]:
    """The value checks of `check_mean_std`, made once per mean/std."""
    if not all(np.isfinite(mean_t + std_t)):
        raise ValueError(f"mean and std must be finite numbers, got mean={mean_t} std={std_t} (NaN: statistics "
                         "of an empty image set?)")
    if min(std_t) <= 0:
        raise ValueError(f"std must be > 0 for every channel, got {std_t}")
    if max(mean_t) > 1.0 or max(std_t) > 1.0:
        raise ValueError(
            f"mean/std must be in [0, 1] units (e.g. CIFAR-10 mean 0.49), got mean={mean_t} std={std_t}; "
            "divide pixel-unit statistics by 255"
        )
    return CheckedStats(mean_t), CheckedStats(std_t)


# ---------------------------------------------------------------------------------------------
#  albumentations 2.x recipes
# ---------------------------------------------------------------------------------------------

def _albumentations():
    """Import albumentations (and its torch bridge) on first use, with an actionable error."""
    try:
        import albumentations as A
        from albumentations.pytorch import ToTensorV2
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise ImportError(
            "albumentations is needed for the per-image CPU pipeline: pip install 'albumentations>=2.0.8,<2.1' "
            "(or use era_utils.gpu_loader.GPULoader, which does not need it)"
        ) from exc
    return A, ToTensorV2


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


def albumentations_transform(spec: AugmentSpec, mean: Sequence[float], std: Sequence[float], *,
                             size: int | Sequence[int] = 32, seed: int | None = None) -> "A.Compose":
    """Build the albumentations 2.x pipeline for `spec` on uint8 HWC images of `size` (side or (H, W)).

    Pad (black) + RandomCrop back to `size` -> HorizontalFlip -> CoarseDropout (one s x s hole,
    fill in pixel units) -> Normalize(mean, std) -> ToTensorV2: returns a CHW float32 tensor.
    `mean`/`std` are per channel in [0, 1] units; `seed` makes the Compose reproducible.
    """
    A, ToTensorV2 = _albumentations()
    height, width = _size_hw(size)
    mean_t, std_t = check_mean_std(mean, std)
    spec.check_image_size(height, width)

    steps: list[Any] = []
    if spec.crop_padding > 0:
        pad = spec.crop_padding
        # position="center" pads exactly `pad` pixels on every side: torchvision's RandomCrop(32, padding=4)
        steps.append(A.PadIfNeeded(min_height=height + 2 * pad, min_width=width + 2 * pad,
                                   position="center", border_mode=0, fill=0))  # 0 = cv2.BORDER_CONSTANT
        steps.append(A.RandomCrop(height=height, width=width))
    if spec.flip:
        steps.append(A.HorizontalFlip(p=0.5))
    if spec.cutout_size > 0 and spec.cutout_p > 0:
        s = spec.cutout_size
        steps.append(A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(s, s), hole_width_range=(s, s),
                                     fill=spec.fill_pixels(mean_t), p=float(spec.cutout_p)))
    steps.append(A.Normalize(mean=mean_t, std=std_t, max_pixel_value=255.0))
    steps.append(ToTensorV2())
    transform = A.Compose(steps, strict=True)
    if seed is not None:
        seed_transform(transform, seed)
    return transform


def eval_transform(mean: Sequence[float], std: Sequence[float]) -> "A.Compose":
    """Test-time albumentations pipeline: normalise only, returns a CHW float32 tensor."""
    return albumentations_transform(NO_AUGMENT, mean, std)


def seed_transform(transform: Any, seed: int) -> None:
    """Reseed an albumentations Compose so its augmentations are reproducible from `seed`.

    Compose keeps its own RNG (global seeds do not reach it). `set_random_seed` gives every child
    transform an identical copy of one stream, which couples their draws (the crop offset of image k
    decides the flip of image 3k+1), so the children are then pointed at one shared stream instead.
    """
    seed = int(seed) % 2**32
    transform.set_random_seed(seed)
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(np.random.default_rng(seed), random.Random(seed))


def reseed_augmentation(transform: Any, seed: int, everything: bool) -> None:
    """Reseed a dataset's augmentation from `seed`: its albumentations Compose and, with
    `everything` (inside a DataLoader worker, whose RNGs are its own), python's, numpy's and
    torch's global RNGs, which torchvision's transforms draw from."""
    seed = int(seed) % 2**32
    if everything:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
    if transform is not None and hasattr(transform, "set_random_seed"):
        seed_transform(transform, seed)


def epoch_item(dataset: Any, item: Any) -> int:
    """The index of a dataset item, given a plain index or an (index, epoch seed) pair from
    `loaders.EpochSeededSampler`. At the first item of a new epoch seed the dataset's augmentation is
    reseeded (epoch seed + worker id), so what an epoch draws depends on that seed alone and not on
    the epochs before it: a run resumed from a checkpoint augments as an unbroken one does."""
    if not isinstance(item, tuple):
        return int(item)
    index, seed = item
    if getattr(dataset, "_epoch_seed", None) != seed:
        dataset._epoch_seed = seed
        worker = torch.utils.data.get_worker_info()
        reseed_augmentation(getattr(dataset, "transform", None), seed + (worker.id if worker else 0),
                            everything=worker is not None)
    return int(index)


# ---------------------------------------------------------------------------------------------
#  HW2P2: torchvision v2 (faces, 224 x 224)
# ---------------------------------------------------------------------------------------------

def hw2p2_train_transform(mean: Sequence[float], std: Sequence[float], size: int | None = 224, *,
                          spec: FaceAugmentSpec = HW2P2_AUGMENT) -> Callable[[Any], torch.Tensor]:
    """HW2P2's training augmentation `spec` per image (torchvision v2): uint8 HWC numpy or PIL in, CHW
    float32 tensor out. Normalises with the dataset's own `mean`/`std` ([0, 1] units); random erasing
    fills with 0, the mean after normalising. `size=None` keeps the input size.
    """
    from torchvision.transforms import v2

    if not isinstance(spec, FaceAugmentSpec):
        raise TypeError(f"spec must be a FaceAugmentSpec (e.g. HW2P2_AUGMENT), got {type(spec).__name__}")
    mean_t, std_t = check_mean_std(mean, std)
    steps: list[Any] = [v2.ToImage()]  # numpy HWC or PIL -> uint8 CHW tensor
    if size is not None:
        steps.append(v2.Resize(_size_hw(size), antialias=True))
    steps += [
        v2.RandomHorizontalFlip(p=spec.flip_p),
        v2.RandomRotation(spec.rotation),
        v2.RandomGrayscale(p=spec.grayscale_p),
        v2.ColorJitter(brightness=spec.jitter, contrast=spec.jitter, saturation=spec.jitter),
        v2.ToDtype(torch.float32, scale=True),  # uint8 0..255 -> float 0..1
        v2.Normalize(mean=list(mean_t), std=list(std_t)),
        v2.RandomErasing(p=spec.erasing_p, scale=spec.erasing_scale, ratio=spec.erasing_ratio, value=0),
        v2.ToPureTensor(),  # plain torch.Tensor, not a tv_tensors.Image
    ]
    return v2.Compose(steps)


def hw2p2_test_transform(mean: Sequence[float], std: Sequence[float], size: int | None = 224
                         ) -> Callable[[Any], torch.Tensor]:
    """HW2P2 evaluation transform: resize (if `size`), normalise; CHW float32 tensor out."""
    from torchvision.transforms import v2

    mean_t, std_t = check_mean_std(mean, std)
    steps: list[Any] = [v2.ToImage()]
    if size is not None:
        steps.append(v2.Resize(_size_hw(size), antialias=True))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean_t), std=list(std_t)),
              v2.ToPureTensor()]
    return v2.Compose(steps)


# ---------------------------------------------------------------------------------------------
#  Running any transform on one image
# ---------------------------------------------------------------------------------------------

def apply_transform(transform: Callable | None, image: np.ndarray) -> Any:
    """Run `transform` on one uint8 (H, W, C) image the way its library expects.

    albumentations gets `image=` and returns its "image"; torchvision gets a PIL image (as
    ImageFolder gives it: v1 and v2 pipelines both take one, while v2 would pass a bare numpy array
    through most transforms untouched); any other callable gets the array; None returns it as is.
    """
    if transform is None:
        return image
    module = type(transform).__module__ or ""
    if module.startswith("albumentations"):
        return transform(image=image)["image"]
    if module.startswith("torchvision"):
        from PIL import Image

        return transform(Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image))
    return transform(image)
