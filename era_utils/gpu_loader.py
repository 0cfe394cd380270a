"""A GPU-resident training loader: the whole dataset on the device, augmentation as batched tensor ops.

On Colab's ~2 vCPUs the per-image albumentations workers cannot keep a GPU busy at CIFAR sizes.
Like Keller Jordan's cifar10-airbench, `GPULoader` keeps the uint8 images on the device, shuffles with
its own `torch.Generator` and augments whole batches there, with no host-device synchronisation per step.

It applies the same `AugmentSpec` as `era_utils.transforms.albumentations_transform`, with an
independent draw per image (or HW2P2's `FaceAugmentSpec`, batched by `era_utils.face_augment`):
    pad-and-crop   black padding, crop offsets uniform in [0, 2 * crop_padding] per axis
    flip           horizontal, p = 0.5
    cutout         one s x s hole fully inside the image (top-left uniform in [0, H - s], as
                   albumentations 2.x CoarseDropout), filled with the dataset mean in pixel units
    normalise      (pixel / 255 - mean) / std

    loader = GPULoader(train.images, train.labels, 512, spec=S10_AUGMENT, mean=mean, std=std, seed=0)
    for images, labels in loader:   # (B, C, H, W) float on the device, (B,) int64
        ...
"""
from __future__ import annotations

from math import ceil
from typing import Iterator, Sequence

import numpy as np
import torch

from era_utils import distributed, face_augment
from era_utils.transforms import NO_AUGMENT, AugmentSpec, FaceAugmentSpec, check_images, check_mean_std
from era_utils.utils import get_device

__all__ = ["GPULoader", "RandomStream", "batches_per_epoch", "check_batching", "in_layout"]

# Storage types that hold every pixel value 0..255 exactly (fp16/bf16 are exact up to 2048/256).
_STORAGE_DTYPES = (torch.uint8, torch.float16, torch.bfloat16, torch.float32)


class GPULoader:
    """Iterate `(images (B, C, H, W) dtype, labels (B,) int64)` batches, both on `device`.

    images: (N, H, W, C) uint8 (numpy or torch; (N, H, W) gray is read as C=1); labels: (N,) ints.
    `spec`: an `AugmentSpec` (S7, S10) or HW2P2's `FaceAugmentSpec`. `mean`/`std`: per channel, [0, 1]
    units. `seed` makes shuffling and augmentation reproducible (None draws a fresh seed, kept in
    `.seed`); the global RNG is never touched. `storage_dtype`
    keeps the pixels as uint8 (least memory) or a float type (pixel values, not rescaled).
    `shard=(rank, ranks)`: under torch.distributed, every rank draws the same order each epoch and
    keeps its share (`distributed.shard`), `batch_size` images per rank and step; each rank augments
    with its own draws, reseeded every epoch from the shared generator (so a checkpoint of that one
    generator resumes every rank).
    """

    def __init__(self, images: np.ndarray | torch.Tensor, labels: Sequence[int] | np.ndarray | torch.Tensor,
                 batch_size: int, *, spec: AugmentSpec | FaceAugmentSpec = NO_AUGMENT, mean: Sequence[float],
                 std: Sequence[float], device: str | torch.device | None = None, shuffle: bool = True,
                 drop_last: bool = False, seed: int | None = None, channels_last: bool = False,
                 dtype: torch.dtype = torch.float32, storage_dtype: torch.dtype = torch.uint8,
                 classes: Sequence[str] | None = None, shard: tuple[int, int] = (0, 1)) -> None:
        images = check_images(images)
        n, height, width, channels = images.shape
        if n == 0:
            raise ValueError("images is empty: GPULoader needs at least one image")
        if not isinstance(spec, (AugmentSpec, FaceAugmentSpec)):
            raise TypeError(f"spec must be an AugmentSpec (e.g. S10_AUGMENT) or a FaceAugmentSpec (HW2P2_AUGMENT), "
                            f"got {type(spec).__name__}")
        spec.check_image_size(height, width)
        rank, ranks = check_batching(n, batch_size, drop_last, shard)
        if storage_dtype not in _STORAGE_DTYPES:
            raise ValueError(f"storage_dtype must be one of {_STORAGE_DTYPES}, got {storage_dtype}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype (of the yielded images) must be a float type, got {dtype}")
        labels_t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
        if labels_t.shape != (n,):
            raise ValueError(f"labels must be shaped ({n},) to match the images, got {tuple(labels_t.shape)}")
        # Float labels that are whole numbers (np.zeros(n)) are fine; 2.7 would silently become class 2.
        if labels_t.is_complex() or labels_t.dtype == torch.bool:
            raise ValueError(f"labels must be whole class indices, got {labels_t.dtype}")
        if labels_t.is_floating_point() and not torch.equal(labels_t, labels_t.round()):
            raise ValueError(f"labels must be whole class indices, got {labels_t.dtype} values such as "
                             f"{labels_t[labels_t != labels_t.round()][:3].tolist()}, which would be cut to "
                             "integers: pass the class indices themselves")

        self.mean, self.std = check_mean_std(mean, std, channels)
        self.spec = spec
        self.batch_size = int(batch_size)
        self.dataset_size = int(n)
        self.rank, self.ranks = rank, ranks
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.channels_last = channels_last
        self.dtype = dtype
        self.storage_dtype = storage_dtype
        self.classes = list(classes) if classes is not None else None
        self.device = get_device(device)

        # Pad once here so each batch is one gather: (N, H + 2p, W + 2p, C), black (0) border like
        # albumentations PadIfNeeded(fill=0). NHWC keeps each pixel's channels together for the gather.
        pad = self._pad
        pixels = _as_tensor(images).to(self.device)  # uint8 over the bus: 4x less than float32
        self._padded = torch.zeros((n, height + 2 * pad, width + 2 * pad, channels),
                                   dtype=storage_dtype, device=self.device)
        self._padded[:, pad:pad + height, pad:pad + width] = pixels
        del pixels
        self.images = self._padded[:, pad:pad + height, pad:pad + width]  # (N, H, W, C) view, no copy
        self.labels = labels_t.to(device=self.device, dtype=torch.int64)

        # Normalisation as one multiply-add in pixel units: (x - 255 * mean) / (255 * std).
        self._mean255 = torch.tensor(self.mean, dtype=torch.float32, device=self.device) * 255.0  # (C,)
        self._inv_std255 = 1.0 / (torch.tensor(self.std, dtype=torch.float32, device=self.device) * 255.0)
        cutout = isinstance(spec, AugmentSpec) and spec.cutout_size > 0
        fill = spec.fill_pixels(self.mean) if cutout else (0,) * channels
        self._fill = torch.tensor(fill, dtype=storage_dtype, device=self.device)  # (C,) pixel units

        self._random = RandomStream(self.device, seed, (rank, ranks))
        self.generator, self.seed = self._random.generator, self._random.seed  # the checkpoint keeps the generator

    @property
    def _pad(self) -> int:
        """Pixels of padding the crop needs on every side (none for HW2P2's recipe)."""
        return self.spec.crop_padding if isinstance(self.spec, AugmentSpec) else 0

    def __len__(self) -> int:
        """Number of batches per epoch (this rank's, under torch.distributed)."""
        return batches_per_epoch(self.dataset_size, self.batch_size, self.drop_last, self.ranks)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._random.epoch(self.dataset_size, self.shuffle).to(self.device, non_blocking=True)
        for i in range(len(self)):
            index = order[i * self.batch_size:(i + 1) * self.batch_size]  # (B,)
            yield self._augment(self._padded, index), self.labels[index]

    def augment(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Augment and normalise a (B, H, W, C) uint8 batch with this loader's recipe: (B, C, H, W)."""
        batch = check_images(batch, name="batch")
        b, height, width, channels = batch.shape
        if channels != len(self.mean):
            raise ValueError(f"batch has {channels} channel(s) but the loader normalises {len(self.mean)}")
        self.spec.check_image_size(height, width)
        pad = self._pad
        padded = torch.zeros((b, height + 2 * pad, width + 2 * pad, channels),
                             dtype=self.storage_dtype, device=self.device)
        padded[:, pad:pad + height, pad:pad + width] = _as_tensor(batch).to(self.device)
        return self._augment(padded, torch.arange(b, device=self.device))

    def inputs_at(self, index: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The images at dataset positions `index` (k,), normalised and not augmented: (k, C, H, W)."""
        index = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
        if index.numel() and not (0 <= int(index.min()) and int(index.max()) < self.dataset_size):
            raise IndexError(f"positions must be in [0, {self.dataset_size}), got {index.tolist()[:5]}")
        pad = self._pad
        height, width = self.images.shape[1:3]
        x = self._padded[index.to(self.device), pad:pad + height, pad:pad + width]  # (k, H, W, C)
        out = x.to(torch.float32).sub_(self._mean255).mul_(self._inv_std255)
        return out.to(self.dtype).permute(0, 3, 1, 2).contiguous()

    def _randint(self, high: int, size: int) -> torch.Tensor:
        """(size,) int64 uniform in [0, high) on the device, from the loader's generator."""
        draw = torch.randint(0, high, (size,), generator=self._random.draws, device=self._random.rng_device)
        return draw.to(self.device, non_blocking=True)

    def _rand(self, size: int) -> torch.Tensor:
        """(size,) float uniform in [0, 1) on the device, from the loader's generator."""
        draw = torch.rand((size,), generator=self._random.draws, device=self._random.rng_device)
        return draw.to(self.device, non_blocking=True)

    def _augment(self, source: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Augment and normalise images `index` (B,) of padded `source` (M, H+2p, W+2p, C): (B, C, H, W)."""
        if isinstance(self.spec, FaceAugmentSpec):
            x = source[index].permute(0, 3, 1, 2)  # (B, C, H, W)
            draws = face_augment.draw(self.spec, x.shape[0], x.shape[2], x.shape[3], self._random.draws)
            out = face_augment.apply(x, draws.to(self.device), self.spec, self.mean, self.std)
            return in_layout(out.to(self.dtype), self.channels_last)
        spec, pad = self.spec, self.spec.crop_padding
        b = index.shape[0]
        height, width = source.shape[1] - 2 * pad, source.shape[2] - 2 * pad
        rows = torch.arange(height, device=self.device)  # (H,)
        cols = torch.arange(width, device=self.device)  # (W,)

        if pad > 0 or spec.flip:
            # Crop and flip are one gather: output pixel (i, j) reads padded (oy + i, ox + j), or
            # (oy + i, ox + W - 1 - j) when flipped. No python loop over images, no host sync.
            if pad > 0:
                oy = self._randint(2 * pad + 1, b)  # (B,) offsets in [0, 2p]
                ox = self._randint(2 * pad + 1, b)
            else:
                oy = ox = torch.zeros(b, dtype=torch.int64, device=self.device)
            src_cols = cols.expand(b, width)  # (B, W)
            if spec.flip:
                flip = self._rand(b) < 0.5  # (B,) p = 0.5 per image
                src_cols = torch.where(flip[:, None], (width - 1) - cols, cols)
            src_rows = oy[:, None] + rows  # (B, H)
            src_cols = ox[:, None] + src_cols  # (B, W)
            x = source[index[:, None, None], src_rows[:, :, None], src_cols[:, None, :]]  # (B, H, W, C)
        else:
            x = source[index]  # (B, H, W, C): nothing to move

        if spec.cutout_size > 0 and spec.cutout_p > 0:
            s = spec.cutout_size
            top = self._randint(height - s + 1, b)[:, None]  # (B, 1): hole fully inside, like CoarseDropout
            left = self._randint(width - s + 1, b)[:, None]
            in_rows = (rows >= top) & (rows < top + s)  # (B, H)
            in_cols = (cols >= left) & (cols < left + s)  # (B, W)
            hole = in_rows[:, :, None] & in_cols[:, None, :]  # (B, H, W)
            if spec.cutout_p < 1:
                hole = hole & (self._rand(b) < spec.cutout_p)[:, None, None]
            x = torch.where(hole[..., None], self._fill, x)  # fill: (C,) pixel units

        # x is always a fresh tensor here (gather and where copy), so in-place ops never touch storage
        out = x.to(torch.float32).sub_(self._mean255).mul_(self._inv_std255)  # (B, H, W, C) normalised
        return in_layout(out.to(self.dtype).permute(0, 3, 1, 2), self.channels_last)  # (B, C, H, W)

    def __repr__(self) -> str:
        return (f"GPULoader(dataset_size={self.dataset_size}, batch_size={self.batch_size}, batches={len(self)}, "
                f"spec={self.spec}, device={self.device}, shuffle={self.shuffle}, seed={self.seed}"
                + (f", shard=({self.rank}, {self.ranks})" if self.ranks > 1 else "") + ")")


def check_batching(images: int, batch_size: int, drop_last: bool, shard: tuple[int, int]) -> tuple[int, int]:
    """A loader's (rank, ranks), after checking that its batch size is one and leaves at least one batch."""
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    rank, ranks = distributed.check_shard(shard)
    per_rank = -(-images // ranks)
    if drop_last and per_rank < batch_size:
        raise ValueError(f"drop_last=True with {per_rank} images{f' per rank ({ranks} ranks)' if ranks > 1 else ''} "
                         f"and batch_size {batch_size} leaves no batch at all: use drop_last=False or a "
                         "smaller batch size")
    return rank, ranks


def batches_per_epoch(images: int, batch_size: int, drop_last: bool, ranks: int = 1) -> int:
    """Batches one rank takes per epoch: its share of `images` (shards are equal), in `batch_size`s."""
    share = -(-images // ranks)
    return share // batch_size if drop_last else ceil(share / batch_size)


def in_layout(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(B, C, H, W) images in the memory layout the model trains in."""
    return images.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class RandomStream:
    """A loader's random stream, the one RNG a checkpoint keeps (`generator`): each epoch's order and
    the augmentation's draws (`draws`), both reproducible from `seed` (None: fresh entropy, kept).

    `shard=(rank, ranks)`: under torch.distributed every rank draws the same order from the same seed
    and keeps its share (`distributed.shard`); each rank augments from a generator of its own (`draws`),
    reseeded every epoch from the shared one.
    """

    def __init__(self, device: torch.device, seed: int | None, shard: tuple[int, int] = (0, 1)) -> None:
        self.generator, self.rng_device = _make_generator(device)
        if seed is None:
            seed = self.generator.seed()  # fresh entropy, kept so the run can be repeated
        else:
            self.generator.manual_seed(int(seed))
        self.seed = int(seed)
        self.rank, self.ranks = distributed.check_shard(shard)
        # One process draws order and augmentation from one generator. Ranks share the order's
        # generator (same seed, same draws) and each augments from its own, reseeded every epoch.
        self.draws = self.generator if self.ranks == 1 else _make_generator(device)[0]

    def epoch(self, size: int, shuffle: bool) -> torch.Tensor:
        """This epoch's positions for this rank (on `rng_device`): a new shuffled order, or 0 .. size - 1."""
        if shuffle:  # a new order every epoch, from the loader's own generator
            order = torch.randperm(size, generator=self.generator, device=self.rng_device)
        else:
            order = torch.arange(size, device=self.rng_device)
        if self.ranks > 1:
            # This epoch's augmentation seed comes from a copy of the shared generator: drawing it from
            # the generator itself would change the next epoch's order, which then would no longer be
            # the one a single process draws (same order, same training, at B / ranks per rank).
            self.draws.set_state(self.generator.get_state())
            epoch_seed = int(torch.randint(2**62, (), generator=self.draws, device=self.rng_device))
            self.draws.manual_seed(epoch_seed + self.rank)
            order = distributed.shard(order, self.rank, self.ranks)
        return order


def _as_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A CPU/device tensor view of `images`; read-only arrays (np.frombuffer, memmaps) are copied once."""
    if isinstance(images, np.ndarray) and not images.flags.writeable:
        images = images.copy()  # torch warns on (and may not) share read-only numpy memory
    return torch.as_tensor(images)


def _make_generator(device: torch.device) -> tuple[torch.Generator, torch.device]:
    """A generator on `device` when the backend has one (CUDA does), else on the CPU."""
    try:
        return torch.Generator(device=device), device
    except RuntimeError:  # a backend without device generators: draw on the CPU and copy the draws
        return torch.Generator(), torch.device("cpu")
