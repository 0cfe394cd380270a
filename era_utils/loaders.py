"""From arrays to the loaders a run trains and tests with, and back from a loader to its images.

Two ways to feed a model, named for where the augmentation runs:
- "gpu": `GPULoader` keeps the whole dataset on the device and augments whole batches there (an
  `AugmentSpec`: pad-and-crop, flip, cutout; or HW2P2's `FaceAugmentSpec`), and for HW2P2's face
  folders `FaceLoader` decodes and augments each batch of files there, so Colab's two vCPUs never
  starve the GPU;
- "workers": a DataLoader whose workers augment one image at a time on the CPU, with the
  albumentations pipeline of the same `AugmentSpec`, HW2P2's torchvision pipeline of the same
  `FaceAugmentSpec`, or any per-image transform.

`load_splits` and `make_loaders` are the calls the run's steps make; `augment_examples` shows what
a loader's augmentation does, and `inputs_at` fetches the inputs a prediction was made on.
"""
from __future__ import annotations

import random
import warnings
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler

from era_utils.data import ImageArrays, load_dataset
from era_utils import distributed
from era_utils.choices import LOADERS
from era_utils.face_loader import FaceLoader
from era_utils.gpu_loader import GPULoader
from era_utils.transforms import (
    NO_AUGMENT,
    AugmentSpec,
    FaceAugmentSpec,
    albumentations_transform,
    apply_transform,
    check_images,
    check_mean_std,
    epoch_item,
    hw2p2_train_transform,
    seed_transform,
)
from era_utils.utils import get_device

__all__ = [
    "LOADERS",
    "ArrayDataset",
    "augment_examples",
    "can_fetch_inputs",
    "dataset_loader",
    "eval_loader",
    "inputs_at",
    "load_splits",
    "make_loaders",
    "resolve_drop_last",
    "worker_init_fn",
    "worker_loader",
]

# Between two ranks' augmentation seeds: above any worker count, since a worker adds its id to the seed.
RANK_SEED_STRIDE = 7919
Loader = Union[GPULoader, FaceLoader, DataLoader]
Spec = Union[AugmentSpec, FaceAugmentSpec]


# ---------------------------------------------------------------------------------------------
#  Arrays
# ---------------------------------------------------------------------------------------------

def load_splits(
    name: str,
    *,
    root: Optional[str] = None,
    download: bool = False,
    subset: Optional[int] = None,
    test_subset: Optional[int] = None,
    seed: int = 0,
    size: int = 32,
) -> tuple[ImageArrays, ImageArrays]:
    """Train and test arrays of `name` ("cifar10" | "fashion_mnist") at `size` px.

    `subset`: a stratified `subset` of the training images, and (unless `test_subset` says
    otherwise) max(1000, subset // 5) test images, so a short run still tests on every class.
    """
    train = load_dataset(name, root=root, train=True, download=download, size=size)
    test = load_dataset(name, root=root, train=False, download=download, size=size)
    asked_test = test_subset
    if subset is not None and test_subset is None:
        test_subset = max(1000, subset // 5)
    if subset is not None and subset < len(train):
        train = train.subset(subset, seed=seed)
    elif subset is not None and subset > len(train):
        warnings.warn(f"subset {subset:,} is more than the {len(train):,} training images of {name}: using all "
                      f"{len(train):,}", UserWarning, stacklevel=2)
    if test_subset is not None and test_subset < len(test):
        test = test.subset(test_subset, seed=seed)
    elif asked_test is not None and asked_test > len(test):
        warnings.warn(f"test subset {test_subset:,} is more than the {len(test):,} test images of {name}: using "
                      f"all {len(test):,}", UserWarning, stacklevel=2)
    return train, test


# ---------------------------------------------------------------------------------------------
#  The per-image path: a Dataset over arrays, DataLoader workers
# ---------------------------------------------------------------------------------------------

def _find_step(transform: Any, name: str) -> Any:
    """The first step of class `name` inside an albumentations pipeline (nested ones too), or None."""
    for step in getattr(transform, "transforms", []):
        if type(step).__name__ == name:
            return step
        inner = _find_step(step, name)
        if inner is not None:
            return inner
    return None


def _check_transform_fits(transform: Any, images: np.ndarray) -> None:
    """Catch a recipe built for other images: channels to normalise, crop size."""
    normalize = _find_step(transform, "Normalize")
    mean = getattr(normalize, "mean", None)
    if mean is not None and np.ndim(mean) == 1 and len(mean) != images.shape[-1]:
        raise ValueError(
            f"the transform normalises {len(mean)} channel(s) but the images have {images.shape[-1]}; "
            "build it with one mean/std value per channel"
        )
    crop = _find_step(transform, "RandomCrop")
    if crop is not None and (crop.height, crop.width) != tuple(images.shape[1:3]):
        raise ValueError(
            f"the transform crops {crop.height}x{crop.width} but the images are "
            f"{images.shape[1]}x{images.shape[2]}; build it with size={images.shape[1]}"
        )


class ArrayDataset(Dataset):
    """uint8 (N, H, W, C) images and their labels, each image run through a per-image transform:
    yields (CHW float32 tensor, int label).

    The transform is an albumentations pipeline (called with `image=`) or any callable taking the
    HWC array (e.g. HW2P2's torchvision v2 pipeline). Use it through `worker_loader` (which installs
    `worker_init_fn`), or pass `worker_init_fn=worker_init_fn` to your own DataLoader: without it
    every worker starts from the same albumentations RNG state and they repeat each other.
    """

    def __init__(self, images: np.ndarray, labels: Sequence[int] | np.ndarray, transform: Any,
                 seed: int | None = None) -> None:
        """`transform` None: set one with `use_transform` before reading items."""
        images = check_images(images)
        if isinstance(images, torch.Tensor):
            images = images.cpu().numpy()
        labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)
        if labels.shape != (len(images),):
            raise ValueError(f"labels must be shaped ({len(images)},) to match the images, got {labels.shape}")
        self.images = images  # (N, H, W, C) uint8
        self.labels = labels  # (N,) int64
        self.use_transform(transform, seed)

    def use_transform(self, transform: Any, seed: int | None = None) -> None:
        """Run every image through `transform` from now on (`seed`: its albumentations draws seeded)."""
        if transform is not None:
            _check_transform_fits(transform, self.images)
        self.transform = transform
        # albumentations pipelines take image=...; anything else (torchvision v2) is called plainly.
        self._albumentations = hasattr(transform, "set_random_seed")
        if seed is not None and self._albumentations:  # torchvision draws from torch's (seeded) RNG
            seed_transform(transform, seed)

    def __len__(self) -> int:
        return len(self.images)

    def augment(self, image: np.ndarray) -> torch.Tensor:
        """One (H, W, C) uint8 image through the transform: a (C, H, W) float32 tensor."""
        if self._albumentations:
            out = self.transform(image=image)["image"]
        else:  # a plain callable, e.g. the HW2P2 torchvision v2 pipeline
            out = self.transform(image)
        if not isinstance(out, torch.Tensor):  # a pipeline without ToTensorV2: HWC ndarray
            array = np.ascontiguousarray(np.asarray(out).transpose(2, 0, 1))
            out = torch.from_numpy(array)
        if not out.is_floating_point():  # un-normalised uint8: scale to [0, 1] like ToTensor
            out = out.float().div_(255.0)
        return out.float()

    def __getitem__(self, index: Any) -> tuple[torch.Tensor, int]:
        index = epoch_item(self, index)  # an (index, epoch seed) pair from EpochSeededSampler too
        return self.augment(self.images[index]), int(self.labels[index])


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker set-up: reseed python, numpy, torch and the dataset's albumentations Compose.

    The seed is torch's per-worker seed (the loader's base seed + worker_id), so workers differ from
    each other and a DataLoader `generator` seeded the same way gives the same augmentations.
    """
    info = torch.utils.data.get_worker_info()
    if info is None:  # called outside a worker: nothing to reseed
        return
    seed = info.seed % 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    dataset = info.dataset
    while dataset is not None:  # look through Subset/wrappers for the transform
        transform = getattr(dataset, "transform", None)
        if transform is not None and hasattr(transform, "set_random_seed"):
            seed_transform(transform, seed)
            break
        dataset = getattr(dataset, "dataset", None)


class EpochSeededSampler(Sampler):
    """Yields (index, epoch seed) pairs: each epoch draws one seed for its augmentation, then its
    order (shuffled or in turn), both from `generator`, the one RNG a checkpoint keeps. Datasets
    reseed their augmentation at a new epoch seed (`transforms.epoch_item`), so persistent workers
    carry no RNG state from one epoch to the next and a resumed run repeats an unbroken one.

    `shard=(rank, ranks)`: under torch.distributed every rank draws the same order from the same
    generator and keeps its share (`distributed.shard`), as DistributedSampler with set_epoch does,
    but resumable from the checkpointed generator; each rank augments with its own epoch seed."""

    def __init__(self, size: int, shuffle: bool, generator: torch.Generator, shard: tuple[int, int] = (0, 1)) -> None:
        self.size, self.shuffle, self.generator = size, shuffle, generator
        self.rank, self.ranks = distributed.check_shard(shard)

    def __len__(self) -> int:
        return -(-self.size // self.ranks)  # every rank the same count (shard repeats a few)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        seed = int(torch.randint(2**31 - 1, (), generator=self.generator))
        order = torch.randperm(self.size, generator=self.generator).tolist() if self.shuffle else range(self.size)
        if self.ranks > 1:
            seed = (seed + RANK_SEED_STRIDE * self.rank) % (2**31 - 1)  # ranks augment differently
            order = distributed.shard(torch.as_tensor(order), self.rank, self.ranks).tolist()
        for index in order:
            yield index, seed


def dataset_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, num_workers: int = 2,
                   seed: int | None = None, drop_last: bool = False, pin_memory: bool | None = None,
                   shard: tuple[int, int] = (0, 1)) -> DataLoader:
    """A DataLoader over any per-image dataset (arrays, face folders), its workers reseeded.

    Workers are persistent (started once) and the augmentation is reseeded at the start of every
    epoch from the seed `EpochSeededSampler` draws, so epoch k's images depend on `seed` and k only
    (and the worker count), a resumed run's included. `seed=None` seeds from torch's global RNG;
    `pin_memory=None` pins when CUDA is available. `shard=(rank, ranks)`: this rank's share of each
    epoch (`EpochSeededSampler`), for training under torch.distributed.
    """
    # The sampler's generator draws each epoch's order and augmentation seed: the RNG a checkpoint
    # keeps. The workers' base seed comes from a generator of its own, so starting workers again
    # (a resumed run) draws nothing from the sampler's or torch's global RNG.
    order = torch.Generator().manual_seed(seed) if seed is not None else _random_generator()
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSeededSampler(len(dataset), shuffle, order, shard),
        num_workers=num_workers,
        worker_init_fn=worker_init_fn,
        generator=torch.Generator().manual_seed(int(torch.randint(2**31 - 1, (), generator=order))),
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=drop_last,
    )


def _random_generator() -> torch.Generator:
    """A generator seeded from torch's global RNG (so set_seed still makes an unseeded loader repeatable)."""
    return torch.Generator().manual_seed(int(torch.randint(2**62, ())))


def worker_loader(arrays: Any, augment: Spec | Any, mean: Sequence[float], std: Sequence[float],
                  batch_size: int, shuffle: bool = True, num_workers: int = 2, seed: int | None = None,
                  pin_memory: bool | None = None, *, drop_last: bool = False, shard: tuple[int, int] = (0, 1)
                  ) -> DataLoader:
    """A DataLoader over `arrays` (an ImageArrays, or an (images, labels) pair) that augments per
    image in CPU workers.

    `augment`: an `AugmentSpec` (built as an albumentations 2.x pipeline for these images), a
    `FaceAugmentSpec` (built as HW2P2's torchvision pipeline), or a ready per-image transform. `seed`
    fixes shuffling and augmentation; `shard=(rank, ranks)` keeps this rank's share of each epoch.
    Use `NO_AUGMENT` with shuffle=False for the test loader.
    """
    if hasattr(arrays, "images") and hasattr(arrays, "labels"):
        images, labels = arrays.images, arrays.labels
    elif isinstance(arrays, (tuple, list)) and len(arrays) == 2:
        images, labels = arrays
    else:
        raise TypeError("arrays must have .images and .labels (an ImageArrays) or be an (images, labels) pair")
    dataset = ArrayDataset(images, labels, None)  # the images and labels checked here, once
    mean_t, std_t = check_mean_std(mean, std, dataset.images.shape[-1])  # passed on as checked
    if isinstance(augment, AugmentSpec):
        transform = albumentations_transform(augment, mean_t, std_t, size=tuple(dataset.images.shape[1:3]))
    elif isinstance(augment, FaceAugmentSpec):
        transform = hw2p2_train_transform(mean_t, std_t, size=None, spec=augment)
    else:
        transform = augment
    dataset.use_transform(transform, seed)
    return dataset_loader(dataset, batch_size, shuffle=shuffle, num_workers=num_workers, seed=seed,
                          drop_last=drop_last, pin_memory=pin_memory, shard=shard)


# ---------------------------------------------------------------------------------------------
#  Both paths
# ---------------------------------------------------------------------------------------------

def make_loaders(
    train: ImageArrays,
    test: ImageArrays,
    augment: Union[Spec, Callable],
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    *,
    loader: str = "auto",
    device: Optional[Union[str, torch.device]] = None,
    seed: Optional[int] = None,
    num_workers: int = 2,
    channels_last: bool = False,
    drop_last: Union[bool, str] = "auto",
    shard: tuple[int, int] = (0, 1),
) -> tuple[Loader, Loader]:
    """(train_loader, test_loader), both yielding (images, labels).

    `augment`: an `AugmentSpec` (S7 / S10) or a `FaceAugmentSpec` (HW2P2), either of which runs on
    either path, or a per-image callable (CPU workers only).
    `loader`: "gpu" keeps the data on `device` and augments whole batches there; "workers"
    augments per image in `num_workers` DataLoader workers; "auto" is gpu for a spec.
    The test loader only normalises and keeps the dataset's order. `drop_last` drops the training
    loader's short last batch (every epoch leaves out another random few images), so that the
    model `fit` compiles on a GPU meets one batch shape only; "auto" = on when `device` is a CUDA
    GPU and the data holds at least one full batch. `shard=(rank, ranks)`: under torch.distributed
    the training loader gives this rank its share of each epoch, at `batch_size` per rank; the test
    loader stays whole (a rank tests on its own slice of the test set: `ImageArrays.shard`).
    """
    if loader not in LOADERS:
        raise ValueError(f"loader must be one of {LOADERS}, got {loader!r}")
    per_image = not isinstance(augment, (AugmentSpec, FaceAugmentSpec))
    if per_image and not callable(augment):
        raise TypeError(f"augment must be an AugmentSpec, a FaceAugmentSpec or a callable transform, got "
                        f"{type(augment).__name__}")
    if per_image and loader == "gpu":
        raise ValueError(
            "a per-image transform runs on CPU workers: use loader='workers' (or 'auto'), or describe the "
            "augmentation as an AugmentSpec / FaceAugmentSpec, which runs batched on the device too"
        )
    drop_last = resolve_drop_last(drop_last, device, len(train.labels), batch_size, shard[1])
    on_gpu = loader == "gpu" or (loader == "auto" and not per_image)
    if on_gpu:
        # channels_last batches match fit()'s channels_last model (CUDA, AVX2 CPUs): no per-step layout copies.
        train_loader = GPULoader(train.images, train.labels, batch_size, spec=augment, mean=mean, std=std,
                                 device=device, classes=list(train.classes) or None, channels_last=channels_last,
                                 shuffle=True, seed=seed, drop_last=drop_last, shard=shard)
    else:
        train_loader = worker_loader(train, augment, mean, std, batch_size, shuffle=True, num_workers=num_workers,
                                     seed=seed, drop_last=drop_last, shard=shard)
    return train_loader, eval_loader(test, mean, std, batch_size, on_gpu=on_gpu, device=device,
                                     num_workers=num_workers, channels_last=channels_last)


def resolve_drop_last(drop_last: Union[bool, str], device: Optional[Union[str, torch.device]], images: int,
                      batch_size: int, ranks: int = 1) -> bool:
    """A training loader's drop_last: "auto" drops the short last batch on a CUDA GPU (the compiled model
    then meets one batch shape only) when each of the `ranks` processes holds at least one full batch."""
    if drop_last == "auto":
        return get_device(device).type == "cuda" and -(-images // ranks) >= batch_size
    if not isinstance(drop_last, bool):
        raise ValueError(f"drop_last must be True, False or 'auto', got {drop_last!r}")
    return drop_last


def eval_loader(arrays: ImageArrays, mean: Sequence[float], std: Sequence[float], batch_size: int, *,
                on_gpu: bool, device: Optional[Union[str, torch.device]] = None, num_workers: int = 2,
                channels_last: bool = False) -> Loader:
    """A loader that only normalises, in the arrays' order: for testing, predicting and embedding."""
    if on_gpu:
        return GPULoader(arrays.images, arrays.labels, batch_size, spec=NO_AUGMENT, mean=mean, std=std,
                         device=device, classes=list(arrays.classes) or None, channels_last=channels_last,
                         shuffle=False)
    return worker_loader(arrays, NO_AUGMENT, mean, std, batch_size, shuffle=False, num_workers=num_workers)


def _transform_of(loader: Any) -> Any:
    """The per-image dataset behind a DataLoader (through Subset and similar wrappers), or None."""
    dataset = getattr(loader, "dataset", None)
    for _ in range(5):
        if dataset is None or callable(getattr(dataset, "augment", None)) or hasattr(dataset, "transform"):
            return dataset
        dataset = getattr(dataset, "dataset", None)
    return None


def augment_examples(augment: Any, images: Any, *, n: int = 5, rows: int = 2) -> torch.Tensor:
    """The first `n` of `images` augmented `rows` times, as the model sees them: a normalised
    (rows, n, C, H, W) float tensor on the CPU (de-normalise with the loader's mean/std to show it).

    `augment`: a `GPULoader` or `FaceLoader` (its batched augmentation), a DataLoader over an
    `ArrayDataset` or a face folder (its per-image transform), or a per-image transform itself.
    `images`: uint8 (N, H, W, C) arrays or an ImageArrays.

    Python's, numpy's and torch's global random states are left as they were: per-image transforms
    draw from them, and a preview drawn before the model is built (a notebook's order) must not give
    it other initial weights than a run that draws it after (era-utils run's).
    """
    with _global_random_kept():
        return _augment_examples(augment, images, n, rows)


class _global_random_kept:
    """A block after which Python's, numpy's and torch's (CPU) global random states are as before it."""

    def __enter__(self) -> None:
        self.states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()

    def __exit__(self, *exc: Any) -> None:
        python, numpy_state, torch_state = self.states
        random.setstate(python)
        np.random.set_state(numpy_state)
        torch.random.set_rng_state(torch_state)


def _augment_examples(augment: Any, images: Any, n: int, rows: int) -> torch.Tensor:
    raw = np.asarray(getattr(images, "images", images))[:n]
    if raw.ndim == 3:
        raw = raw[..., None]  # (n, H, W) gray
    if isinstance(augment, (GPULoader, FaceLoader)):
        batches = [augment.augment(raw).float().cpu() for _ in range(rows)]
    else:
        dataset = _transform_of(augment) if isinstance(augment, DataLoader) else None
        if dataset is not None and callable(getattr(dataset, "augment", None)):
            one = dataset.augment  # ArrayDataset: exactly what its __getitem__ does
        else:
            transform = getattr(dataset, "transform", augment)
            if not callable(transform):
                raise TypeError(f"augment must be a GPULoader, a DataLoader or a transform, got {type(augment).__name__}")

            def one(image: np.ndarray) -> torch.Tensor:
                return torch.as_tensor(apply_transform(transform, image)).float()

        batches = [torch.stack([one(np.ascontiguousarray(image)) for image in raw]) for _ in range(rows)]
    return torch.stack(batches)  # (rows, n, C, H, W)


def can_fetch_inputs(loader: Any) -> bool:
    """Can `inputs_at` give this loader's inputs back by position (an unshuffled test loader)?"""
    if isinstance(loader, (GPULoader, FaceLoader)):
        return not loader.shuffle and (loader.spec is None or loader.spec.is_identity)
    return isinstance(loader, DataLoader) and _in_order(loader)


def _in_order(loader: DataLoader) -> bool:
    """Does the DataLoader visit its dataset in order (position i of a pass is item i)?"""
    sampler = loader.sampler
    return isinstance(sampler, SequentialSampler) or (
        isinstance(sampler, EpochSeededSampler) and not sampler.shuffle and sampler.ranks == 1)


def inputs_at(loader: Any, indices: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """The normalised inputs (k, C, H, W) at positions `indices` of an unshuffled, unaugmented loader
    (a test loader), on the CPU: the images a prediction was made on, fetched again.

    A GPULoader gathers them on the device, a FaceLoader reads and decodes those files again; a
    DataLoader reads them from its dataset, in which position i of an unshuffled loader is item i.
    """
    index = torch.as_tensor(np.asarray(indices), dtype=torch.long).reshape(-1)
    if isinstance(loader, (GPULoader, FaceLoader)):
        if not can_fetch_inputs(loader):
            raise ValueError(f"inputs_at needs the test loader (shuffle=False, no augmentation): a shuffled "
                             f"or augmenting {type(loader).__name__} does not give an image the same input twice")
        return loader.inputs_at(index).float().cpu()
    if isinstance(loader, DataLoader):
        if not _in_order(loader):
            raise ValueError("inputs_at needs an unshuffled DataLoader (shuffle=False): with a shuffled "
                             "one, position i of a pass is not item i of the dataset")
        items = [loader.dataset[int(i)] for i in index]
        return torch.stack([torch.as_tensor(item[0] if isinstance(item, (tuple, list)) else item)
                            for item in items]).float()
    raise TypeError(
        f"cannot fetch images back from a {type(loader).__name__}: predict with keep_inputs=True, "
        "or use a GPULoader, a FaceLoader or a DataLoader"
    )
