"""From a dataset name to the two loaders a run trains and tests with.

The runner and the notebooks share these two calls, so "which loader, which subset" is decided in
one place: `load_splits` (train and test arrays, optionally a stratified subset) and
`make_loaders` (the GPU-resident loader, or albumentations / torchvision per image on CPU workers).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch

from era_utils.data import ImageArrays, load_dataset
from era_utils.gpu_loader import GPULoader
from era_utils.transforms import NO_AUGMENT, AugmentSpec, make_loader
from era_utils.utils import get_device

LOADERS = ("auto", "gpu", "albumentations")


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
    if subset is not None and test_subset is None:
        test_subset = max(1000, subset // 5)
    if subset is not None and subset < len(train):
        train = train.subset(subset, seed=seed)
    if test_subset is not None and test_subset < len(test):
        test = test.subset(test_subset, seed=seed)
    return train, test


def make_loaders(
    train: ImageArrays,
    test: ImageArrays,
    augment: Union[AugmentSpec, Callable],
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
) -> tuple[Union[GPULoader, torch.utils.data.DataLoader], Union[GPULoader, torch.utils.data.DataLoader]]:
    """(train_loader, test_loader), both yielding (images, labels).

    `augment`: an `AugmentSpec` (S7 / S10: runs on either path), or a per-image callable such as
    `hw2p2_train_transform(...)` (rotation and colour jitter: CPU workers only).
    `loader`: "gpu" keeps the data on `device` and augments whole batches there; "albumentations"
    augments per image in `num_workers` DataLoader workers; "auto" is gpu for an AugmentSpec.
    The test loader only normalises and keeps the dataset's order. `drop_last` drops the training
    loader's short last batch (every epoch leaves out another random few images), so that the
    model `fit` compiles on a GPU meets one batch shape only; "auto" = on when `device` is a CUDA
    GPU and the data holds at least one full batch.
    """
    if loader not in LOADERS:
        raise ValueError(f"loader must be one of {LOADERS}, got {loader!r}")
    per_image = not isinstance(augment, AugmentSpec)
    if per_image and not callable(augment):
        raise TypeError(f"augment must be an AugmentSpec or a callable transform, got {type(augment).__name__}")
    if per_image and loader == "gpu":
        raise ValueError(
            "this augmentation (e.g. HW2P2's rotation and colour jitter) runs per image on CPU "
            "workers: use loader='albumentations' (or 'auto')"
        )
    classes = list(train.classes) or None
    if drop_last == "auto":
        drop_last = get_device(device).type == "cuda" and len(train.labels) >= batch_size
    elif not isinstance(drop_last, bool):
        raise ValueError(f"drop_last must be True, False or 'auto', got {drop_last!r}")
    if loader == "gpu" or (loader == "auto" and not per_image):
        # channels_last batches match fit()'s channels_last model on CUDA: no per-step layout copies.
        kw = dict(mean=mean, std=std, device=device, classes=classes, channels_last=channels_last)
        return (
            GPULoader(train.images, train.labels, batch_size, spec=augment, shuffle=True, seed=seed,
                      drop_last=drop_last, **kw),
            GPULoader(test.images, test.labels, batch_size, spec=NO_AUGMENT, shuffle=False, **kw),
        )
    return (
        make_loader(train, augment, mean, std, batch_size, shuffle=True, num_workers=num_workers, seed=seed,
                    drop_last=drop_last),
        make_loader(test, NO_AUGMENT, mean, std, batch_size, shuffle=False, num_workers=num_workers),
    )
