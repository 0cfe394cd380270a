"""Datasets for the assignments: CIFAR-10, Fashion-MNIST, HW2P2 face folders and pairs files,
and dataset statistics (per-channel mean/std over all pixels).

Everything here hands images on as uint8 arrays, (N, H, W, C) RGB or (N, H, W, 1) gray, so
that the augmentation paths (albumentations per sample, or batched on the GPU) start from the
same pixels. The face datasets load one image at a time (7000 identities do not fit in memory).

    train = load_dataset("cifar10", root="data", train=True, download=True)   # Colab
    mean, std = dataset_stats("cifar10")
    small = train.subset(5000)                                                  # --subset 5000
"""
from __future__ import annotations

import codecs
import copy
import dataclasses
import gzip
import math
import os
import pickle
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from era_utils.choices import RUN_DATASETS
from era_utils.errors import BadImageError
from era_utils.transforms import apply_transform, epoch_item

__all__ = [
    "find_bad_images",
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "FASHION_MNIST_SYSTEM_DIR",
    "FaceFolder",
    "HW2P2_MEAN",
    "HW2P2_STD",
    "ImageArrays",
    "ImageFiles",
    "Pair",
    "compute_mean_std",
    "dataset_stats",
    "load_cifar10",
    "load_dataset",
    "load_fashion_mnist",
    "load_image",
    "pair_label",
    "pair_paths",
    "read_idx",
    "read_pairs",
]

# ----------------------------------------------------------------------------------------------
# Constants
# ----------------------------------------------------------------------------------------------

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

# Per-channel mean/std in [0, 1] units over every pixel of the 50k training images (population std,
# ddof=0). Not the mean of per-image stds (0.2023, 0.1994, 0.2010), a value that circulates widely.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# Fashion-MNIST train split at its native 28x28, measured with compute_mean_std on Debian's files.
# At 32x32 the statistics differ (2 px of zero padding lowers both): use dataset_stats(name, size).
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)

# Train-split stats of the 32x32 variants (measured the same way); other sizes are computed on demand.
_FASHION_MNIST_STATS = {
    (28, "pad"): (FASHION_MNIST_MEAN, FASHION_MNIST_STD),
    (32, "pad"): ((0.2190,), (0.3318,)),
    (32, "resize"): ((0.2854,), (0.3384,)),
}

# HW2P2's face images (RGB, 224x224), per channel over the train split (measured in seed 001).
HW2P2_MEAN = (0.5116, 0.4026, 0.3519)
HW2P2_STD = (0.3073, 0.2697, 0.2587)

# Where Debian/Ubuntu's `apt-get install dataset-fashion-mnist` puts the IDX .gz files.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

DATASETS = tuple(name for name in RUN_DATASETS if name != "faces")  # those held as arrays: cifar10, fashion_mnist

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


# ----------------------------------------------------------------------------------------------
# In-memory image arrays
# ----------------------------------------------------------------------------------------------

@dataclass
class ImageArrays:
    """A whole small dataset in memory: uint8 images (N, H, W, C), int64 labels (N,), class names."""

    images: np.ndarray  # (N, H, W, C) uint8, RGB (C=3) or gray (C=1)
    labels: np.ndarray  # (N,) int64 class indices into `classes`
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.images.ndim != 4:
            raise ValueError(f"ImageArrays.images must be (N, H, W, C), got shape {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        """Number of classes (from `classes`, else from the largest label)."""
        return len(self.classes) if self.classes else int(self.labels.max(initial=-1)) + 1

    def shard(self, rank: int, ranks: int) -> ImageArrays:
        """Images rank, rank + ranks, ...: one process's slice of a test set under torch.distributed."""
        return ImageArrays(self.images[rank::ranks], self.labels[rank::ranks], list(self.classes))

    def subset(self, n: int, seed: int = 0) -> ImageArrays:
        """A stratified random subset of `n` images (class proportions kept), in the original order.

        Each class gets n * (its share) images, rounded by largest remainder (ties broken at random),
        so `subset(1000)` of a balanced 10-class set has exactly 100 per class. Same seed, same subset.
        """
        total = len(self)
        if not 0 <= int(n) <= total:
            raise ValueError(f"subset({n}): this dataset has only {total} images; ask for 0..{total}")
        n = int(n)
        rng = np.random.default_rng(seed)
        values, inverse, counts = np.unique(self.labels, return_inverse=True, return_counts=True)
        quota = counts * n / total
        take = np.floor(quota).astype(np.int64)
        short = n - int(take.sum())
        if short:
            # Largest fractional part first; a random key breaks ties so no class is always favoured.
            order = np.lexsort((rng.random(len(values)), -(quota - take)))
            take[order[:short]] += 1
        picked = [
            rng.choice(np.flatnonzero(inverse == k), size=int(take[k]), replace=False)
            for k in range(len(values))
        ]
        idx = np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)
        return ImageArrays(self.images[idx], self.labels[idx], list(self.classes))


# ----------------------------------------------------------------------------------------------
# CIFAR-10 (torchvision)
# ----------------------------------------------------------------------------------------------

_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
_CIFAR_TEST_FILES = ["test_batch"]
_CIFAR_META = "batches.meta"


# What a CIFAR-10 python batch pickle may refer to: numpy's array, dtype and scalar rebuilders (the
# batches were written by Python 2 with numpy 1's module names) and, in a copy re-pickled by Python 3
# at protocol 2, codecs.encode for its bytes. Dicts, lists, strings and numbers need no global at
# all, so a pickle asking for anything else is not a CIFAR batch.
_NUMPY_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that admits only what a CIFAR-10 batch holds, so a crafted file can run no code."""

    def find_class(self, module: str, name: str) -> Any:
        if module in _NUMPY_MULTIARRAY and name in ("_reconstruct", "scalar"):
            return _numpy_multiarray(name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):  # bytes in a protocol-2 pickle written by Python 3
            return codecs.encode
        raise pickle.UnpicklingError(
            f"it asks for {module}.{name}, which a CIFAR-10 batch never holds (only numpy arrays, lists, "
            f"dicts, strings and numbers): not a CIFAR-10 file, and nothing in it was run")


def _numpy_multiarray(name: str) -> Any:
    """numpy's array rebuilder `name` under numpy 2's module name, else numpy 1's (no deprecation warning)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1
        from numpy.core import multiarray
    return getattr(multiarray, name)


def _read_cifar_pickle(path: Path) -> dict:
    """One CIFAR-10 batch or meta file, read with `_CifarUnpickler`: a dict with str keys."""
    with open(path, "rb") as f:
        entry = _CifarUnpickler(f, encoding="latin1").load()  # latin1: the Python 2 str in the real files
    if not isinstance(entry, dict):
        raise ValueError(f"it holds a {type(entry).__name__}, not the dict a CIFAR-10 batch is")
    return entry


def _read_cifar_folder(folder: Path, files: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (N, 32, 32, 3) uint8 RGB, labels and class names from the batch `files` in `folder`."""
    images, labels = [], []
    for name in files:
        path = folder / name
        try:
            entry = _read_cifar_pickle(path)
            data = entry["data"]
            batch_labels = entry["labels"] if "labels" in entry else entry["fine_labels"]
            if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
                raise ValueError(f"its 'data' is {getattr(data, 'dtype', type(data).__name__)} "
                                 f"{getattr(data, 'shape', '')}, not uint8 rows of 3072 pixels")
        except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, AttributeError) as e:
            what = f"no {e} entry" if isinstance(e, KeyError) else str(e) or type(e).__name__
            raise ValueError(f"{path} is not a readable CIFAR-10 batch: {what}. Delete "
                             f"{folder.name}/ and load again with download=True (the official files).") from e
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # R, G, B planes -> HWC
        labels.extend(batch_labels)
    meta_path = folder / _CIFAR_META
    try:
        classes = [str(c) for c in _read_cifar_pickle(meta_path)["label_names"]]
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{meta_path} is not a readable CIFAR-10 meta file: {e}. Delete {folder.name}/ and "
                         f"load again with download=True.") from e
    return np.concatenate(images), np.asarray(labels), classes


def load_cifar10(root: str | os.PathLike = "data", train: bool = True, download: bool = False) -> ImageArrays:
    """CIFAR-10 from root/cifar-10-batches-py (torchvision's layout) as uint8 (N, 32, 32, 3) RGB.

    download=True fetches and verifies it with torchvision (needs internet, e.g. on Colab);
    download=False reads a local folder and says where it looked when it is not there.
    """
    from torchvision.datasets import CIFAR10

    root = Path(root).expanduser()
    folder = root / _CIFAR_FOLDER
    if download:
        # Fetches the archive (md5-checked) unless the batches already match their checksums.
        ds = CIFAR10(str(root), train=train, download=True)  # (N, 32, 32, 3) HWC already
        return _checked_cifar(ds.data, ds.targets, ds.classes, folder)
    needed = (_CIFAR_TRAIN_FILES if train else _CIFAR_TEST_FILES) + [_CIFAR_META]
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 not found: looked in {folder.resolve()} and it lacks {', '.join(missing)}. "
            f"Pass download=True (on Colab, or any machine with internet) to fetch it into {root.resolve()}, "
            f"or extract cifar-10-python.tar.gz there so that {_CIFAR_FOLDER}/ sits inside root."
        )
    # Not torchvision's reader: it unpickles without limits, and a folder that is not the official
    # download (a re-packed or test copy) has no checksum to trust. Every batch is read with an
    # unpickler that admits only numpy arrays and plain values.
    images, labels, classes = _read_cifar_folder(folder, needed[:-1])
    return _checked_cifar(images, labels, classes, folder)


def _checked_cifar(images: np.ndarray, labels: Any, classes: Sequence[str], folder: Path) -> ImageArrays:
    """ImageArrays of CIFAR-10 (N, 32, 32, 3) images, after a sanity check of its contents."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64)
    if len(images) != len(labels) or (len(labels) and not 0 <= labels.min() <= labels.max() < 10):
        raise RuntimeError(f"CIFAR-10 batches in {folder.resolve()} are inconsistent: "
                           f"{len(images)} images, {len(labels)} labels in range "
                           f"{labels.min(initial=0)}..{labels.max(initial=0)} (expected 0..9)")
    return ImageArrays(images, labels, list(classes))


# ----------------------------------------------------------------------------------------------
# Fashion-MNIST (IDX files)
# ----------------------------------------------------------------------------------------------

# IDX type codes (the third byte of the magic number); every multi-byte value is big-endian.
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzip-compressed or raw; detected from the bytes, not the name) into numpy.

    Raises ValueError naming the file when the magic number, the dimensions or the length are wrong.
    """
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: the gzip stream is truncated or corrupt ({e}); "
                             f"delete the file and get it again") from e
    if len(raw) < 4:
        raise ValueError(f"{path}: only {len(raw)} bytes, too short for an IDX header")
    zero, code, ndim = raw[:2], raw[2], raw[3]
    if zero != b"\x00\x00" or code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(f"{path}: not an IDX file (magic number {raw[:4].hex()}, expected 0000 + a type "
                         f"code in {sorted(hex(c) for c in _IDX_DTYPES)} + the number of dimensions)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated header ({len(raw)} bytes, {ndim} dimensions need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: header says shape {dims} ({expected} bytes of data) but the file holds "
                         f"{len(raw) - header}: it is truncated or corrupt; delete it and get it again")
    data = np.frombuffer(raw, dtype=dtype, count=math.prod(dims), offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)  # native order, writable


def _idx_file(folder: Path, prefix: str, kind: str) -> Path | None:
    """The first usual spelling of e.g. train-images-idx3-ubyte present in `folder` (.gz or raw;
    some copies write train-images.idx3-ubyte)."""
    what, idx = kind.split("-")  # "images", "idx3"
    for sep in ("-", "."):
        for suffix in (".gz", ""):
            candidate = folder / f"{prefix}-{what}{sep}{idx}-ubyte{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _find_fashion_mnist(root: Path | None, train: bool, download: bool) -> tuple[Path, Path]:
    """Paths of the images and labels IDX files of one split; a clear error if nowhere."""
    prefix = "train" if train else "t10k"
    # A folder the user named is the only place looked: never a silent fall-back to the system copy.
    if root is not None:
        folders = [root, root / "FashionMNIST" / "raw"]  # the second is torchvision's download layout
        if not root.is_dir() and not download:
            raise FileNotFoundError(f"the Fashion-MNIST data folder {root} does not exist: pass the folder that "
                                    f"holds the four IDX files, or leave it out to use Debian's copy in "
                                    f"{FASHION_MNIST_SYSTEM_DIR} (apt-get install dataset-fashion-mnist)")
    else:
        folders = [Path(FASHION_MNIST_SYSTEM_DIR)]
    notes = []
    for folder in folders:
        images = _idx_file(folder, prefix, "images-idx3")
        labels = _idx_file(folder, prefix, "labels-idx1")
        if images and labels:
            return images, labels
        if images or labels:
            notes.append(f"{folder} has {(images or labels).name} but not its "
                         f"{'labels' if images else 'images'} file")
    if download:
        from torchvision.datasets import FashionMNIST

        target = root if root is not None else Path("data")
        FashionMNIST(str(target), train=train, download=True)
        raw = target / "FashionMNIST" / "raw"
        images, labels = _idx_file(raw, prefix, "images-idx3"), _idx_file(raw, prefix, "labels-idx1")
        if images and labels:
            return images, labels
        folders.append(raw)
    looked = "\n  ".join(str(f.resolve()) for f in folders)
    extra = ("\n" + "\n".join(notes)) if notes else ""
    raise FileNotFoundError(
        f"Fashion-MNIST ({prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz]) not found. "
        f"Looked in:\n  {looked}{extra}\n"
        f"Get it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu, into "
        f"{FASHION_MNIST_SYSTEM_DIR}), or pass download=True (needs internet; torchvision saves it under "
        f"<root>/FashionMNIST/raw), or pass root= the folder that holds the four IDX files."
    )


def _resize_bilinear(images: np.ndarray, size: int, chunk: int = 8192) -> np.ndarray:
    """(N, H, W) uint8 -> (N, size, size) uint8 by bilinear interpolation (torch), in chunks."""
    out = np.empty((len(images), size, size), dtype=np.uint8)
    for start in range(0, len(images), chunk):
        x = torch.from_numpy(images[start:start + chunk]).unsqueeze(1).float()  # (B, 1, H, W)
        y = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        out[start:start + chunk] = y.squeeze(1).round().clamp_(0, 255).to(torch.uint8).numpy()
    return out


def load_fashion_mnist(
    root: str | os.PathLike | None = None,
    train: bool = True,
    size: int = 28,
    channels: int = 1,
    resize: str = "pad",
    download: bool = False,
) -> ImageArrays:
    """Fashion-MNIST as uint8 (N, size, size, channels) from its IDX files.

    Looks in `root` (and root/FashionMNIST/raw), then Debian's /usr/share/datasets/fashion-mnist,
    then downloads with torchvision (only if download=True). size 32 with resize="pad" adds 2 px of
    zeros on each side (the 28x28 centre is untouched); resize="resize" interpolates bilinearly.
    channels=3 repeats the gray channel for RGB models.
    """
    if resize not in ("pad", "resize"):
        raise ValueError(f"resize must be 'pad' or 'resize', got {resize!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    images_path, labels_path = _find_fashion_mnist(
        Path(root).expanduser() if root is not None else None, train, download)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected uint8 images of shape (N, 28, 28), got "
                         f"{images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{labels_path}: expected {len(images)} labels (one per image in "
                         f"{images_path.name}), got shape {labels.shape}")
    if len(labels) and labels.max() > 9:
        raise ValueError(f"{labels_path}: labels must be 0..9, found {int(labels.max())}")
    if size != 28:
        if resize == "pad":
            if size < 28:
                raise ValueError(f"size={size} is smaller than 28: padding cannot shrink; use resize='resize'")
            before = (size - 28) // 2
            after = size - 28 - before
            images = np.pad(images, ((0, 0), (before, after), (before, after)))  # zeros = background
        else:
            images = _resize_bilinear(images, size)
    images = images[..., None]  # (N, H, W, 1)
    if channels == 3:
        images = np.repeat(images, 3, axis=-1)  # (N, H, W, 3): same gray in R, G, B
    return ImageArrays(np.ascontiguousarray(images), labels.astype(np.int64), list(FASHION_MNIST_CLASSES))


# ----------------------------------------------------------------------------------------------
# One entry point and the statistics that go with it
# ----------------------------------------------------------------------------------------------

def _canonical_name(name: str) -> str:
    key = str(name).lower().replace("-", "_")
    key = {"cifar_10": "cifar10", "fashionmnist": "fashion_mnist", "fmnist": "fashion_mnist"}.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return key


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    train: bool = True,
    download: bool = False,
    size: int = 32,
    channels: int | None = None,
    resize: str = "pad",
) -> ImageArrays:
    """Load "cifar10" or "fashion_mnist" as ImageArrays at `size` (default 32, the recipes' input).

    channels=None keeps the natural count (3 for CIFAR-10, 1 for Fashion-MNIST); Fashion-MNIST
    can be repeated to 3. CIFAR-10 root defaults to "data"; Fashion-MNIST searches (see
    load_fashion_mnist). Use `dataset_stats` with the same name/size/channels/resize.
    """
    key = _canonical_name(name)
    if key == "cifar10":
        if size != 32:
            raise ValueError(f"CIFAR-10 images are 32x32; size={size} is not supported")
        if channels not in (None, 3):
            raise ValueError(f"CIFAR-10 is RGB: channels must be 3 (or None), got {channels}")
        return load_cifar10(root if root is not None else "data", train=train, download=download)
    return load_fashion_mnist(root, train=train, size=size, channels=channels or 1, resize=resize,
                              download=download)


def dataset_stats(
    name: str,
    size: int = 32,
    channels: int | None = None,
    resize: str = "pad",
    root: str | os.PathLike | None = None,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel in [0, 1] units of the train split, as `load_dataset` gives it.

    Defaults match load_dataset's: size 32, so Fashion-MNIST means 28x28 padded to 32x32, mean
    0.2190 / std 0.3318, not the 28x28 constants 0.2860 / 0.3530. Stored for 28, 32-pad and
    32-resize; other Fashion-MNIST sizes are computed from the data (found as load_fashion_mnist does).
    """
    key = _canonical_name(name)
    if key == "cifar10":
        if size != 32 or channels not in (None, 3):
            raise ValueError("CIFAR-10 statistics exist for 32x32 RGB only")
        return CIFAR10_MEAN, CIFAR10_STD
    if resize not in ("pad", "resize"):
        raise ValueError(f"resize must be 'pad' or 'resize', got {resize!r}")
    stored = _FASHION_MNIST_STATS.get((size, "pad" if size == 28 else resize))
    if stored is None:
        mean, std = compute_mean_std(load_fashion_mnist(root, train=True, size=size, resize=resize).images)
        stored = (tuple(round(m, 4) for m in mean), tuple(round(s, 4) for s in std))
    mean, std = stored
    repeat = channels or 1
    if repeat not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    return mean * repeat, std * repeat


def compute_mean_std(
    images: np.ndarray | Iterable[Any],
    max_chunk_bytes: int = 64 * 2**20,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std over ALL pixels, in [0, 1] units.

    `images` is an (N, H, W, C) or (N, H, W) array, or any iterable of HWC images or
    (image, label) pairs (e.g. a FaceFolder). uint8 is divided by 255; floats are taken as already
    in [0, 1]. Accumulates in float64, chunk by chunk (Chan et al.'s pairwise merge of means and
    squared deviations), so 60k images never become one float64 copy. This is not the mean of
    per-image stds, which leaves out how much image means differ from each other.
    """
    count, mean, m2 = 0, None, None

    def merge(block: np.ndarray) -> None:
        nonlocal count, mean, m2
        if block.dtype == np.uint8:
            x = block.reshape(-1, block.shape[-1]).astype(np.float64) / 255.0  # (pixels, C)
        elif np.issubdtype(block.dtype, np.floating):
            x = block.reshape(-1, block.shape[-1]).astype(np.float64)
        else:
            raise TypeError(f"images must be uint8 (0..255) or float (0..1), got {block.dtype}")
        n_b = len(x)
        if n_b == 0:
            return
        mean_b = x.mean(axis=0)
        m2_b = ((x - mean_b) ** 2).sum(axis=0)
        if mean is None:
            count, mean, m2 = n_b, mean_b, m2_b
            return
        if len(mean_b) != len(mean):
            raise ValueError(f"images have different channel counts: {len(mean)} and {len(mean_b)}")
        delta = mean_b - mean
        total = count + n_b
        mean = mean + delta * (n_b / total)
        m2 = m2 + m2_b + delta**2 * (count * n_b / total)
        count = total

    if isinstance(images, np.ndarray):
        arr = images[..., None] if images.ndim == 3 else images  # (N, H, W) gray -> (N, H, W, 1)
        if arr.ndim != 4:
            raise ValueError(f"expected images of shape (N, H, W, C) or (N, H, W), got {images.shape}")
        per_image = max(1, math.prod(arr.shape[1:]) * 8)  # float64 bytes of one image
        step = max(1, max_chunk_bytes // per_image)
        for start in range(0, len(arr), step):
            merge(arr[start:start + step])
    else:
        for item in images:
            if isinstance(item, (tuple, list)):
                item = item[0]  # (image, label) from a Dataset
            img = np.asarray(item)
            if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
                raise ValueError(f"got an image of shape {img.shape}, which looks CHW; pass HWC images "
                                 f"(e.g. a FaceFolder without transform)")
            merge(img[..., None] if img.ndim == 2 else img)
    if mean is None:
        raise ValueError("compute_mean_std got no pixels")
    std = np.sqrt(m2 / count)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


# ----------------------------------------------------------------------------------------------
# Face folders (HW2P2) and verification pairs
# ----------------------------------------------------------------------------------------------

def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in _IMAGE_EXTENSIONS


def _image_entries(entries: Iterable[os.DirEntry]) -> list[Path]:
    """The image files among a folder's entries: by extension, without macOS's "._NAME" metadata files (a zip
    made on a Mac carries one beside each image) and without entries that cannot be resolved (a symbolic link
    to itself), each of those named in a warning."""
    images = []
    for entry in entries:
        if entry.name.startswith("._") or Path(entry.name).suffix.lower() not in _IMAGE_EXTENSIONS:
            continue
        try:
            if entry.is_file():
                images.append(Path(entry.path))
        except OSError as err:
            warnings.warn(f"{entry.path} skipped: it cannot be opened ({err.strerror or err}; a symbolic link that "
                          "points at itself?)", UserWarning, stacklevel=3)
    return images


def find_bad_images(folder: str | os.PathLike, progress: bool = True) -> list[tuple[Path, str]]:
    """Every image file under `folder` (its subfolders too) that cannot be read, with why: a scan to run
    before a long training (`era-utils check-images FOLDER`). It decodes each image, so a big folder takes
    minutes; macOS's "._NAME" files are left out, as the face folders leave them out."""
    from tqdm.auto import tqdm

    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder: give the folder of images to check")
    paths = sorted(Path(root) / name for root, _, names in os.walk(folder) for name in names
                   if not name.startswith("._") and Path(name).suffix.lower() in _IMAGE_EXTENSIONS)
    bad = []
    for path in tqdm(paths, desc=f"checking {folder}", unit="image", disable=not progress):
        try:
            load_image(path)
        except (BadImageError, OSError) as err:
            bad.append((path, str(err.__cause__ or err)))
    return bad


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a link that loops: not a folder of images (_image_entries names it if it looks like one)
        return False


def _rgb(im: Any) -> np.ndarray:
    """A PIL image as uint8 (H, W, 3): gray, RGBA and palette images converted; 16-bit images scaled onto
    8 bits (PIL's convert("RGB") clips them, a 16-bit PNG coming out nearly all white)."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        wide = np.asarray(im, dtype=np.float64)
        scale = 257.0 if wide.max(initial=0) <= 65535 else 16843009.0  # 16 bits, or the full 32 of mode "I"
        gray = np.clip(np.rint(wide / scale), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def load_image(path: str | os.PathLike, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """One image file as uint8 (H, W, 3) RGB; errors name the file (and the expected (H, W))."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            img = _rgb(im)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError(f"cannot read image {path}: {type(e).__name__}: {e}; the file is corrupt, cut short, "
                            f"too large or not an image: delete or replace it ({FIND_BAD_IMAGES} lists every such "
                            "file)") from e
    if expected_size is not None and img.shape[:2] != tuple(expected_size):
        raise ValueError(f"{path}: image is {img.shape[0]}x{img.shape[1]} (HxW), expected "
                         f"{expected_size[0]}x{expected_size[1]}")
    return img


class FaceFolder(Dataset):
    """HW2P2 classification folders: root/<split>/<identity>/*.jpg -> (image, label).

    The image is uint8 (H, W, 3) RGB, or whatever `transform` makes of it (albumentations gets
    image=ndarray, torchvision a PIL image, any other callable the ndarray). A flat split
    (root/test/*.jpg) gets label -1. Labels index `classes`, which for dev/test default to the
    identities of root/train so that they match the classifier's outputs; `ids` are the paths
    relative to the split folder (file names for a flat test/, as the Kaggle CSV wants).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable | None = None,
        expected_size: tuple[int, int] | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.split = split
        self.transform = transform
        self.expected_size = tuple(expected_size) if expected_size is not None else None
        self._first_size: tuple[int, int] | None = None  # untransformed images must all have it
        folder = self.root / split
        if not folder.is_dir():
            raise FileNotFoundError(
                f"face split folder not found: {folder.resolve()}. Download the HW2P2 classification data "
                f"(Kaggle) and unzip it so that {self.root.resolve()}/{split}/<identity>/*.jpg exists "
                f"(a flat {split}/*.jpg is fine for the unlabelled test split)."
            )
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
        subdirs = [e.name for e in entries if _is_dir(e)]
        files = _image_entries(entries)
        if subdirs and files:
            raise ValueError(f"{folder}: has both identity folders ({subdirs[0]}, ...) and loose images "
                             f"({files[0].name}, ...); use one layout per split")

        if classes is None:
            train_dir = self.root / "train"
            if split != "train" and train_dir.is_dir():
                classes = sorted(e.name for e in os.scandir(train_dir) if _is_dir(e))
            else:
                classes = subdirs
        self.classes: list[str] = list(classes)
        self.class_to_idx: dict[str, int] = {c: i for i, c in enumerate(self.classes)}

        self.samples: list[tuple[Path, int]] = []
        if subdirs:
            unknown = [d for d in subdirs if d not in self.class_to_idx]
            if unknown:
                raise ValueError(f"{folder}: identities not among the {len(self.classes)} classes "
                                 f"(of {self.root / 'train'} or `classes`): {', '.join(unknown[:5])}"
                                 f"{' ...' if len(unknown) > 5 else ''}")
            empty = []
            for name in subdirs:
                label, before = self.class_to_idx[name], len(self.samples)
                images = _image_entries(sorted(os.scandir(folder / name), key=lambda e: e.name))
                self.samples += [(path, label) for path in images]
                if len(self.samples) == before:
                    empty.append(name)
            if empty and len(empty) < len(subdirs):
                warnings.warn(f"{folder}: {len(empty)} identity folder(s) hold no images "
                              f"({', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}): they stay classes, "
                              "with no images in this split. An unzip cut short?", UserWarning, stacklevel=2)
        else:
            self.samples = [(p, -1) for p in files]
        if not self.samples:
            raise FileNotFoundError(f"no images ({', '.join(_IMAGE_EXTENSIONS)}) found under {folder.resolve()}")
        self.targets: list[int] = [label for _, label in self.samples]
        self.ids: list[str] = [p.relative_to(folder).as_posix() for p, _ in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def with_transform(self, transform: Callable | None) -> FaceFolder:
        """The same files and labels, each image run through `transform` (a per-image pipeline)."""
        part = copy.copy(self)
        part.transform = transform
        return part

    def shard(self, rank: int, ranks: int) -> FaceFolder:
        """Images rank, rank + ranks, ...: one process's slice of a split under torch.distributed."""
        part = copy.copy(self)
        part.samples, part.targets, part.ids = (v[rank::ranks] for v in (self.samples, self.targets, self.ids))
        return part

    def __getitem__(self, index: Any) -> tuple[Any, int]:
        path, label = self.samples[epoch_item(self, index)]
        image = load_image(path, self.expected_size)
        if self.transform is None and self.expected_size is None:
            # Untransformed images are batched as they are: one of another size would fail in
            # torch.stack, naming no file. Name it here.
            first = self._first_size
            if first is None:
                self._first_size = image.shape[:2]
            elif image.shape[:2] != first:
                raise ValueError(f"{path} is {image.shape[0]}x{image.shape[1]} (HxW) but the images before it "
                                 f"are {first[0]}x{first[1]}: without a transform that resizes them they cannot "
                                 "share a batch. Pass a transform with a Resize (e.g. hw2p2_test_transform), or "
                                 "expected_size= to check every image.")
        return apply_transform(self.transform, image), label


class ImageFiles(Dataset):
    """A list of image files -> (image, index): for embedding each unique image of a pairs file once."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        transform: Callable | None = None,
        expected_size: tuple[int, int] | None = None,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.transform = transform
        self.expected_size = tuple(expected_size) if expected_size is not None else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return apply_transform(self.transform, load_image(self.paths[index], self.expected_size)), index


@dataclass(frozen=True)
class Pair:
    """One verification pair: two image paths (under the root), a 0/1 label or None (test)."""

    a: Path
    b: Path
    label: int | None = None
    pair_id: str = ""  # the two paths exactly as written in the file, space-separated (Kaggle Id)


def pair_paths(pair: Any) -> tuple[Path, Path]:
    """(a, b) of a `Pair` or of a plain `(a, b[, label])` tuple."""
    if hasattr(pair, "a") and hasattr(pair, "b"):
        return Path(pair.a), Path(pair.b)
    return Path(pair[0]), Path(pair[1])


def pair_label(pair: Any) -> int | None:
    """The 0/1 label of a `Pair` or of an `(a, b, label)` tuple; None when unlabelled."""
    if hasattr(pair, "label"):
        return pair.label
    return pair[2] if len(pair) > 2 else None


FIND_BAD_IMAGES = "era-utils check-images FOLDER"  # how to find every unreadable image at once

# Columns are separated by whitespace, so a name with a space in it reads as two columns.
_SPACES_HINT = " (a file name with a space in it reads as two columns: rename such files, e.g. spaces to _)"


def _other_unicode_form(path: Path) -> Optional[Path]:
    """`path` as an existing file whose name is the same text in the other Unicode normal form, or None."""
    for form in ("NFC", "NFD"):
        other = Path(unicodedata.normalize(form, str(path)))
        if other != path and other.is_file():
            return other
    return None


def read_pairs(
    path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    labelled: bool | None = None,
    check_exists: bool = True,
    outside_root: bool = False,
) -> list[Pair]:
    """Parse a verification pairs file: `a b label` (dev) or `a b` (test) per line, whitespace-separated.

    Paths are relative to `root` (default: the pairs file's folder). labelled=None infers it from
    the first line. Blank lines and lines starting with # are skipped. Raises ValueError naming the
    file and line for a wrong column count or a label other than 0/1, and FileNotFoundError for a
    missing file or (check_exists) image paths that are not under root, listing the first few.
    A path that leads outside root (absolute, or through "..") is refused unless `outside_root`; a
    UTF-8 byte-order mark is ignored; a file that is not UTF-8 text, or holds no pairs, is an error.
    A pair listed again is dropped with a warning (with another label: an error).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pairs file not found: {path.resolve()}. It comes with the HW2P2 "
                                f"verification data (e.g. verification_pairs_val.txt next to the images).")
    base = Path(root).expanduser() if root is not None else path.parent
    pairs: list[Pair] = []
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark is not part of the first path
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}): "
                         f"save it as UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name} > pairs_utf8.txt") from err
    first_line: dict[tuple[str, str], tuple[int, Optional[int]]] = {}  # "a b" -> (its line, its label)
    repeats: list[tuple[int, int, str]] = []  # (line, first line, "a b") of each pair seen before
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if labelled is None:
            if len(parts) not in (2, 3):
                raise ValueError(f"{path}, line {lineno}: {len(parts)} columns; expected 'a b label' "
                                 f"(3, labelled) or 'a b' (2, unlabelled): {line.strip()!r}{_SPACES_HINT}")
            labelled = len(parts) == 3
        want = 3 if labelled else 2
        if len(parts) != want:
            form = "'a b label'" if labelled else "'a b'"
            raise ValueError(f"{path}, line {lineno}: {len(parts)} columns, expected {want} ({form}, "
                             f"as the first line): {line.strip()!r}" + (_SPACES_HINT if len(parts) > want else ""))
        label = None
        if labelled:
            if parts[2] not in ("0", "1"):
                raise ValueError(f"{path}, line {lineno}: label {parts[2]!r} is not 0 or 1")
            label = int(parts[2])
        if not outside_root:
            for name in parts[:2]:
                # Lexically (no symlinks followed: a root may link to data kept elsewhere, e.g. Drive).
                if Path(name).is_absolute() or os.path.normpath(name).split(os.sep)[0] == os.pardir:
                    raise ValueError(f"{path}, line {lineno}: {name!r} leads outside the pairs root {base}; "
                                     "pairs files name images under it. Pass outside_root=True if that "
                                     "is meant.")
        key = (parts[0], parts[1])
        if key in first_line:  # a Kaggle id is one pair, and a pair counted twice would weigh twice in the AUC
            seen_at, seen_label = first_line[key]
            if seen_label != label:
                raise ValueError(f"{path}, line {lineno}: the pair {parts[0]} {parts[1]} is labelled {label} here and "
                                 f"{seen_label} on line {seen_at}: keep the right line")
            repeats.append((lineno, seen_at, f"{parts[0]} {parts[1]}"))
            continue
        first_line[key] = (lineno, label)
        pairs.append(Pair(base / parts[0], base / parts[1], label, f"{parts[0]} {parts[1]}"))
    if repeats:
        line, seen_at, pair = repeats[0]
        warnings.warn(f"{path}: {len(repeats)} pair(s) listed more than once were dropped (the first: line {line}, "
                      f"'{pair}', as on line {seen_at}); each pair is scored and submitted once", UserWarning,
                      stacklevel=2)
    if not pairs:
        raise ValueError(f"{path} holds no pairs (only blank or # lines): expected 'a b label' or 'a b' per line")
    if check_exists:
        seen: set[Path] = set()
        missing: list[Path] = []
        found: dict[Path, Path] = {}  # a name written in one Unicode form, on disk in the other
        for pair in pairs:
            for p in (pair.a, pair.b):
                if p not in seen:
                    seen.add(p)
                    if not p.is_file():
                        other = _other_unicode_form(p)
                        if other is None:
                            missing.append(p)
                        else:
                            found[p] = other
        if found:  # e.g. a pairs file written on Linux (NFC) for images unzipped on a Mac (NFD)
            pairs = [dataclasses.replace(pair, a=found.get(pair.a, pair.a), b=found.get(pair.b, pair.b))
                     for pair in pairs]
        if missing:
            shown = "\n  ".join(str(p) for p in missing[:5])
            raise FileNotFoundError(
                f"{path}: {len(missing)} of {len(seen)} images are missing under root {base.resolve()}, "
                f"e.g.:\n  {shown}\nPass root= the folder the paths are relative to.")
    return pairs
