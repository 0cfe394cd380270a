"""Tiny synthetic datasets on disk, in the real formats, for tests that must not download anything.

- `write_cifar10(root)`: root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} as
  Python-2-style pickles, like the real archive: `pickle.load(f, encoding="latin1")` gives str keys
  ('data', 'labels', ...; what torchvision reads), `encoding="bytes"` gives b'data', b'labels', ...
  (the CIFAR website's snippet). b'data' is (N, 3072) uint8, each row the R, G, B planes of a
  32x32 image, row-major.
- `write_idx(path, array)` / `write_fashion_mnist(root)`: IDX files (gz when the name ends .gz).
- `write_face_folders(root)`: root/train/<identity>/*.jpg, root/dev/<identity>/*.jpg, root/test/*.jpg
  (flat), each identity a distinct colour and shape plus noise; `make_pairs` + `write_pairs` write
  a verification pairs file.
- `DiesInEpoch(test_loader, epoch)`: a test loader that kills the "session" in that epoch (resume tests).

Import as `from fake_data import write_cifar10, ...` (pytest puts tests/ on sys.path).
"""
from __future__ import annotations

import gzip
import io
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# Image 0 of every split written by write_cifar10 (unless arrays are given) carries these pixels,
# so a test can check that RGB order and HWC layout survive the round trip: (row, col) -> (R, G, B).
MARKER_PIXELS = {(0, 0): (255, 0, 0), (0, 1): (0, 255, 0), (1, 0): (0, 0, 255), (31, 31): (12, 34, 56)}

# A distinct colour per class / identity (RGB).
_PALETTE = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 190],
    [0, 128, 128], [170, 110, 40], [128, 0, 0], [0, 0, 128], [128, 128, 0], [255, 255, 255],
], dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# Python-2-style pickles (the real CIFAR batches were written by Python 2)
# ----------------------------------------------------------------------------------------------

class _Py2Pickler(pickle._Pickler):  # the pure-python pickler lets us change how bytes are written
    """Writes `bytes` as Python 2 `str` (SHORT_BINSTRING/BINSTRING opcodes) and numpy's array
    reconstructor under its numpy 1 name, as the pickles in cifar-10-python.tar.gz are written."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None):  # noqa: ANN001 - pickle's own signature
        if getattr(obj, "__name__", None) == "_reconstruct" and "numpy" in (getattr(obj, "__module__", "") or ""):
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")  # loads on numpy 1 and 2
            self.memoize(obj)
            return
        super().save_global(obj, name)


def py2_pickle_bytes(obj: object) -> bytes:
    """Pickle `obj` (protocol 2) with bytes written as Python 2 str."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def cifar_like_images(n: int, seed: int = 0, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 32, 32, 3) uint8 RGB, labels (n,) int64): balanced labels, each class a colour
    plus a class-specific stripe, plus noise; learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    images = rng.normal(0, 25, size=(n, 32, 32, 3))
    images += _PALETTE[labels % len(_PALETTE)][:, None, None, :] * 0.7
    for i, c in enumerate(labels):
        row = 3 * (c % 10)
        images[i, row:row + 3] = 255 - _PALETTE[c % len(_PALETTE)]  # a 3-row stripe whose place is the class
    return np.clip(images, 0, 255).astype(np.uint8), labels


def _put_markers(images: np.ndarray) -> None:
    for (r, c), rgb in MARKER_PIXELS.items():
        images[0, r, c] = rgb


def _cifar_batch(images: np.ndarray, labels: np.ndarray, batch_label: str, start: int) -> dict:
    # (N, 32, 32, 3) HWC -> (N, 3, 32, 32) planes -> (N, 3072): 1024 R, then 1024 G, then 1024 B.
    data = np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072), dtype=np.uint8)
    return {
        b"batch_label": batch_label.encode(),
        b"labels": [int(x) for x in labels],
        b"data": data,
        b"filenames": [f"fake_{start + i:05d}.png".encode() for i in range(len(images))],
    }


def write_cifar10(
    root: str | Path,
    n_train: int = 50,
    n_test: int = 10,
    seed: int = 0,
    train: tuple[np.ndarray, np.ndarray] | None = None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Write a CIFAR-10 folder in the real layout under root; return root (what load_cifar10 takes).

    `train`/`test` = (images (N, 32, 32, 3) uint8 RGB, labels) to write given arrays; else
    `cifar_like_images` with MARKER_PIXELS set in image 0. The train images are split over the five
    data_batch files in order (the first batches get the remainder). Not byte-identical to the real
    files, so torchvision's md5 check would reject them: era_utils.data.load_cifar10 reads them.
    """
    root = Path(root)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    if train is None:
        train = cifar_like_images(n_train, seed)
        _put_markers(train[0])
    if test is None:
        test = cifar_like_images(n_test, seed + 1)
        _put_markers(test[0])
    tr_images, tr_labels = np.asarray(train[0], dtype=np.uint8), np.asarray(train[1])
    te_images, te_labels = np.asarray(test[0], dtype=np.uint8), np.asarray(test[1])
    bounds = np.linspace(0, len(tr_images), 6).round().astype(int)
    for b in range(5):
        lo, hi = bounds[b], bounds[b + 1]
        batch = _cifar_batch(tr_images[lo:hi], tr_labels[lo:hi], f"training batch {b + 1} of 5", lo)
        (folder / f"data_batch_{b + 1}").write_bytes(py2_pickle_bytes(batch))
    test_batch = _cifar_batch(te_images, te_labels, "testing batch 1 of 1", 0)
    (folder / "test_batch").write_bytes(py2_pickle_bytes(test_batch))
    meta = {
        b"num_cases_per_batch": int(max(bounds[1] - bounds[0], 1)),
        b"label_names": [c.encode() for c in CIFAR10_CLASSES],
        b"num_vis": 3072,
    }
    (folder / "batches.meta").write_bytes(py2_pickle_bytes(meta))
    return root


# ----------------------------------------------------------------------------------------------
# IDX (Fashion-MNIST / MNIST format)
# ----------------------------------------------------------------------------------------------

_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
              np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """An array as IDX bytes: 0x0000, type code, ndim, big-endian dims, big-endian data."""
    array = np.asarray(array)
    big = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    code = _IDX_CODES.get(np.dtype(big))
    if code is None:
        raise TypeError(f"IDX has no type code for {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(big).tobytes()


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write `array` as an IDX file; gzip-compressed when the name ends in .gz."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_fashion_mnist(
    root: str | Path, n_train: int = 60, n_test: int = 20, seed: int = 0, gz: bool = True
) -> Path:
    """Write the four Fashion-MNIST IDX files (random 28x28 uint8, balanced labels) in root."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", (np.arange(n) % 10).astype(np.uint8))
    return root


# ----------------------------------------------------------------------------------------------
# HW2P2-style face folders and pairs files
# ----------------------------------------------------------------------------------------------

@dataclass
class FakeFaces:
    """What write_face_folders wrote: paths are absolute; labels index `identities` (sorted)."""

    root: Path
    identities: list[str]
    train: list[tuple[Path, int]] = field(default_factory=list)
    dev: list[tuple[Path, int]] = field(default_factory=list)
    test: list[tuple[Path, int]] = field(default_factory=list)  # flat test/: the true identity, for checks
    size: tuple[int, int] = (32, 32)


def face_image(identity: int, rng: np.random.Generator, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    """(H, W, 3) uint8: background colour of the identity, a shape per identity, plus noise."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    colour = _PALETTE[identity % len(_PALETTE)]
    img = np.empty((h, w, 3))
    img[:] = colour * 0.5
    cy, cx = h / 2 + rng.normal(0, 1), w / 2 + rng.normal(0, 1)
    shape = identity % 4
    if shape == 0:  # disc
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < (min(h, w) / 4) ** 2
    elif shape == 1:  # square
        mask = (abs(yy - cy) < h / 4) & (abs(xx - cx) < w / 4)
    elif shape == 2:  # horizontal bars
        mask = (yy // max(h // 8, 1)) % 2 == 0
    else:  # diagonal
        mask = abs((yy - cy) - (xx - cx)) < max(h, w) / 8
    img[mask] = 255 - colour
    img += rng.normal(0, 12, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_face_folders(
    root: str | Path,
    n_identities: int = 3,
    n_train: int = 4,
    n_dev: int = 2,
    n_test: int = 4,
    size: tuple[int, int] = (32, 32),
    ext: str = ".jpg",
    seed: int = 0,
) -> FakeFaces:
    """Write root/train/<id>/*.jpg (n_train per identity), root/dev/<id>/*.jpg (n_dev per identity)
    and root/test/*.jpg (n_test in all, flat); identities are named id_000, id_001, ..."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    names = [f"id_{i:03d}" for i in range(n_identities)]
    faces = FakeFaces(root=root.resolve(), identities=names, size=tuple(size))
    for split, per in (("train", n_train), ("dev", n_dev)):
        for label, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(per):
                path = folder / f"{split}_{label:03d}_{j:03d}{ext}"
                Image.fromarray(face_image(label, rng, size)).save(path, quality=95)
                getattr(faces, split).append((path.resolve(), label))
    (root / "test").mkdir(parents=True, exist_ok=True)
    for j in range(n_test):
        label = j % n_identities
        path = root / "test" / f"{j:06d}{ext}"
        Image.fromarray(face_image(label, rng, size)).save(path, quality=95)
        faces.test.append((path.resolve(), label))
    return faces


def make_pairs(faces: FakeFaces, split: str = "dev", n: int = 6, seed: int = 0) -> list[tuple[str, str, int]]:
    """n distinct pairs (a, b, label) of images of `split` ("dev", "train" or "test"), alternating same
    identity (1) and different (0), as paths relative to faces.root (read_pairs drops a pair listed twice)."""
    rng = np.random.default_rng(seed)
    items = getattr(faces, split)
    by_id: dict[int, list[Path]] = {}
    for path, label in items:
        by_id.setdefault(label, []).append(path)
    ids = sorted(by_id)
    pairs: list[tuple[str, str, int]] = []
    drawn: set[tuple[str, str]] = set()
    k = tries = 0
    while len(pairs) < n:
        tries += 1
        if tries > 100 * n:
            raise ValueError(f"{split} has too few images for {n} distinct pairs")
        if k % 2 == 0 and any(len(v) > 1 for v in by_id.values()):
            choices = [i for i in ids if len(by_id[i]) > 1]
            i = choices[rng.integers(len(choices))]
            a, b = rng.choice(len(by_id[i]), size=2, replace=False)
            pa, pb, label = by_id[i][a], by_id[i][b], 1
        else:
            i, j = rng.choice(len(ids), size=2, replace=False)
            pa = by_id[ids[i]][rng.integers(len(by_id[ids[i]]))]
            pb = by_id[ids[j]][rng.integers(len(by_id[ids[j]]))]
            label = 0
        a, b = pa.relative_to(faces.root).as_posix(), pb.relative_to(faces.root).as_posix()
        if (a, b) in drawn:
            continue  # drawn before: draw this one again
        drawn.add((a, b))
        pairs.append((a, b, label))
        k += 1
    return pairs


def write_pairs(
    path: str | Path, pairs: Iterable[Sequence[object]], labelled: bool = True, sep: str = " "
) -> Path:
    """Write one pair per line: `a b label` (labelled) or `a b`; items are (a, b) or (a, b, label)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for pair in pairs:
        cols = [str(pair[0]), str(pair[1])]
        if labelled:
            cols.append(str(pair[2]))
        lines.append(sep.join(cols))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------
# A session that dies
# ----------------------------------------------------------------------------------------------

class DiesInEpoch:
    """A test loader that kills the 'session' when evaluation of epoch `epoch` starts."""

    def __init__(self, loader: Iterable, epoch: int) -> None:
        self.loader, self.epoch, self.calls = loader, epoch, 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.calls += 1
        if self.calls == self.epoch:
            raise KeyboardInterrupt("the Colab session died")
        return iter(self.loader)
