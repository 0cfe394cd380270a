"""HW2P2's face images, decoded and augmented in batches on the device: the face-folder counterpart of
`GPULoader`, so Colab's two vCPUs never hold the GPU back.

CPU workers only read the files' bytes (`FileReader`); the shuffling, sharding and batching of the
file list happen once per epoch in the main process. On the device each batch of JPEGs is decoded in
one call (`torchvision.io.decode_jpeg`: nvJPEG on a CUDA GPU, libjpeg-turbo on the CPU), then HW2P2's
augmentation runs on the whole batch (`era_utils.face_augment`) and it is normalised. Files nvJPEG
cannot take as they are (PNGs, gray or CMYK JPEGs, progressive ones, another size, a file cut short)
are decoded by the worker with PIL, resized as the CPU pipeline resizes, and join the batch.

    loader = FaceLoader(FaceFolder(root, "train"), 128, spec=HW2P2_AUGMENT, mean=HW2P2_MEAN,
                        std=HW2P2_STD, shuffle=True, seed=0)
    for images, labels in loader:   # (B, 3, 224, 224) float on the device, (B,) int64
        ...

Like `GPULoader`, one generator (`generator`, kept by checkpoints) draws each epoch's order and every
augmentation parameter, and `shard=(rank, ranks)` gives a process its share of one shared order.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from era_utils import face_augment
from era_utils.data import FIND_BAD_IMAGES, BadImageError, load_image
from era_utils.gpu_loader import RandomStream, batches_per_epoch, check_batching, in_layout
from era_utils.transforms import FaceAugmentSpec, check_mean_std
from era_utils.utils import get_device

__all__ = ["FaceLoader", "FileBatch", "FileReader", "decode_jpegs", "jpeg_header", "on_device"]

# JPEG frame types nvJPEG decodes on every CUDA GPU: baseline and extended sequential (Huffman).
DEVICE_FRAMES = (0xC0, 0xC1)
_FRAME_MARKERS = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0..SOF15 (C4, C8, CC are other segments)


def jpeg_header(data: bytes) -> tuple[int, int, int, int] | None:
    """(frame marker, height, width, components) from a JPEG's frame header, or None for data that is
    not a JPEG (or has no frame header before its first scan). Reads the markers only, not the image."""
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # a fill byte before the marker
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker in _FRAME_MARKERS:
            if i + 10 > n:
                return None
            height = (data[i + 5] << 8) | data[i + 6]
            width = (data[i + 7] << 8) | data[i + 8]
            return marker, height, width, data[i + 9]
        if marker in (0xD9, 0xDA):  # end of image, or a scan, before any frame header
            return None
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    return None


def on_device(data: bytes, size: int) -> bool:
    """Can the device decode these bytes as they are: a whole baseline RGB JPEG of size x size?"""
    header = jpeg_header(data)
    # A file cut short lacks its end-of-image marker: nvJPEG may decode it to half an image in silence,
    # where PIL (the CPU path) names it as truncated.
    return (header is not None and header[0] in DEVICE_FRAMES and header[1:] == (size, size, 3)
            and data.rstrip(b"\x00").endswith(b"\xff\xd9"))


def decode_jpegs(jpegs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """JPEG bytes (1-D uint8 CPU tensors) -> uint8 RGB (3, H, W) tensors on `device`, in one call (nvJPEG
    decodes a list as one batch on a CUDA GPU)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image decoders for TorchCodec's; this one works and is in every
        # torchvision a student has. The warning would tell a student nothing they can act on.
        warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities")
        return decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device)


def decode_on_cpu(path: str | os.PathLike, size: int) -> torch.Tensor:
    """One image file as uint8 (3, size, size): PIL's RGB (gray, CMYK, palette and PNG included), resized
    as the CPU pipeline resizes (torchvision's antialiased bilinear) when it is another size."""
    from torchvision.transforms.v2 import functional as TF

    image = torch.from_numpy(np.array(load_image(path))).permute(2, 0, 1)  # a writable copy; errors name the file
    if tuple(image.shape[1:]) != (size, size):
        image = TF.resize(image, [size, size], antialias=True)
    return image


@dataclass
class FileBatch:
    """One batch as a worker hands it over: the bytes of the JPEGs the device decodes, one after
    another, and the images the worker decoded itself, each with its row in the batch."""

    positions: torch.Tensor  # (B,) int64: the images' positions in the loader's file list
    encoded: torch.Tensor  # (bytes,) uint8: the device's JPEGs, back to back
    offsets: list[int]  # k + 1 offsets into `encoded`
    encoded_rows: list[int]  # (k,) their rows in the batch
    decoded: torch.Tensor  # (m, 3, S, S) uint8: decoded on the CPU
    decoded_rows: list[int]  # (m,) their rows

    def jpegs(self) -> list[torch.Tensor]:
        """The device's JPEGs, one 1-D uint8 tensor each (views of `encoded`)."""
        return [self.encoded[a:b] for a, b in zip(self.offsets, self.offsets[1:])]


class FileReader(Dataset):
    """What a CPU worker does for the face loader: `reader[positions]` reads those files -> FileBatch.

    Reading is all it does for a JPEG the device can decode (a file read and a look at its header);
    any other file it decodes with PIL, so that it joins the batch as pixels."""

    def __init__(self, paths: Sequence[Path], size: int) -> None:
        self.paths, self.size = list(paths), int(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, positions: Sequence[int]) -> FileBatch:
        chunks: list[bytes] = []
        offsets, encoded_rows, decoded, decoded_rows = [0], [], [], []
        for row, position in enumerate(positions):
            path = self.paths[position]
            with open(path, "rb") as file:
                data = file.read()
            if on_device(data, self.size):
                chunks.append(data)
                offsets.append(offsets[-1] + len(data))
                encoded_rows.append(row)
            else:
                decoded.append(decode_on_cpu(path, self.size))
                decoded_rows.append(row)
        joined = bytearray(b"".join(chunks))  # one buffer: one shared-memory block to the main process
        encoded = torch.frombuffer(joined, dtype=torch.uint8) if joined else torch.empty(0, dtype=torch.uint8)
        pixels = torch.stack(decoded) if decoded else torch.empty((0, 3, self.size, self.size), dtype=torch.uint8)
        return FileBatch(torch.as_tensor(list(positions), dtype=torch.int64), encoded, offsets, encoded_rows,
                         pixels, decoded_rows)


class _Schedule:
    """The batches of positions the workers read this epoch (set by the loader before each epoch)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _as_is(batch: FileBatch) -> FileBatch:
    """The DataLoader's collate: a worker's item is already a batch."""
    return batch


class FaceLoader:
    """Iterate `(images (B, 3, S, S) dtype, labels (B,) int64)` from image files, both on `device`.

    `images`: a `data.FaceFolder` (its files and labels) or a list of paths (labels -1). `spec`: HW2P2's
    training augmentation (`FaceAugmentSpec`), or None to resize and normalise only (evaluation).
    `mean`/`std`: per channel, [0, 1] units. `size`: the side images are decoded at (another size is
    resized on the CPU). `num_workers`: processes reading the files (0: the main process). `seed` makes
    order and augmentation reproducible (None draws a fresh one, kept in `.seed`). `shard=(rank, ranks)`:
    this process's share of each epoch under torch.distributed, `batch_size` images per rank and step.
    """

    def __init__(self, images: Any, batch_size: int, *, mean: Sequence[float], std: Sequence[float],
                 spec: FaceAugmentSpec | None = None, size: int = 224, device: str | torch.device | None = None,
                 shuffle: bool = False, drop_last: bool = False, seed: int | None = None, num_workers: int = 2,
                 channels_last: bool = False, dtype: torch.dtype = torch.float32,
                 classes: Sequence[str] | None = None, shard: tuple[int, int] = (0, 1)) -> None:
        if hasattr(images, "samples"):  # a FaceFolder
            paths = [Path(p) for p, _ in images.samples]
            labels = [int(label) for _, label in images.samples]
            classes = classes if classes is not None else getattr(images, "classes", None)
        else:
            paths = [Path(p) for p in images]
            labels = [-1] * len(paths)
        if not paths:
            raise ValueError("images is empty: FaceLoader needs at least one image file")
        if spec is not None and not isinstance(spec, FaceAugmentSpec):
            raise TypeError(f"spec must be a FaceAugmentSpec (e.g. HW2P2_AUGMENT) or None, got {type(spec).__name__}")
        if int(size) != size or size < 1:
            raise ValueError(f"size must be a positive int (pixels), got {size!r}")
        if int(num_workers) != num_workers or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        rank, ranks = check_batching(len(paths), batch_size, drop_last, shard)
        self.mean, self.std = check_mean_std(mean, std, 3)
        self.paths = paths
        self.spec = None if spec is None or spec.is_identity else spec
        self.batch_size, self.size = int(batch_size), int(size)
        self.dataset_size = len(paths)
        self.rank, self.ranks = rank, ranks
        self.shuffle, self.drop_last = shuffle, drop_last
        self.num_workers = int(num_workers)
        self.channels_last, self.dtype = channels_last, dtype
        self.classes = list(classes) if classes is not None else None
        self.device = get_device(device)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)  # (N,) on the CPU
        self._labels = self.labels.to(self.device)
        self._random = RandomStream(self.device, seed, (rank, ranks))
        self.generator, self.seed = self._random.generator, self._random.seed  # the checkpoint keeps the generator
        self._reader = FileReader(paths, self.size)
        self._schedule = _Schedule()
        self._workers: DataLoader | None = None  # started on the first epoch, kept for the next
        # nvJPEG writes its output on a stream of its own, without waiting for work still queued on the
        # stream that freed that memory (pytorch/vision#9606): decode on a stream of the loader's own,
        # drained before each decode, so the memory it is given is idle.
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def __len__(self) -> int:
        """Number of batches per epoch (this rank's, under torch.distributed)."""
        return batches_per_epoch(self.dataset_size, self.batch_size, self.drop_last, self.ranks)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._random.epoch(self.dataset_size, self.shuffle).tolist()  # one read of the device an epoch
        batches = [order[i * self.batch_size:(i + 1) * self.batch_size] for i in range(len(self))]
        for files in self._read(batches):
            yield self._on_device(lambda: self._finish(self._decode(files), files.positions, augment=True))

    def _read(self, batches: list[list[int]]) -> Iterable[FileBatch]:
        """Each batch's files, read in the workers (or here, without workers), in order."""
        if self.num_workers == 0:
            return (self._reader[batch] for batch in batches)
        if self._workers is None:
            self._workers = DataLoader(self._reader, batch_size=None, sampler=self._schedule, collate_fn=_as_is,
                                       num_workers=self.num_workers, persistent_workers=True)
        self._schedule.batches = batches
        return self._workers

    def _on_device(self, work: Any) -> Any:
        """Run `work()` (decode, augment) on the loader's own CUDA stream; the caller's stream waits for it."""
        if self._stream is None:
            return work()
        self._stream.synchronize()  # the previous batch's augmentation: done long ago, as a step is longer
        with torch.cuda.stream(self._stream):
            images, labels = work()
        caller = torch.cuda.current_stream(self.device)
        caller.wait_stream(self._stream)
        for tensor in (images, labels):  # freed after the caller's kernels have read them, not before
            tensor.record_stream(caller)
        return images, labels

    def _decode(self, files: FileBatch) -> torch.Tensor:
        """The batch's images as uint8 (B, 3, S, S) on the device: its JPEGs decoded there in one call."""
        out = torch.empty((len(files.positions), 3, self.size, self.size), dtype=torch.uint8, device=self.device)
        if files.encoded_rows:
            jpegs = files.jpegs()
            try:
                images = decode_jpegs(jpegs, self.device)
            except RuntimeError as err:
                raise self._decode_error(files, jpegs, err) from err
            out[torch.as_tensor(files.encoded_rows, device=self.device)] = torch.stack(images)
        if files.decoded_rows:
            out[torch.as_tensor(files.decoded_rows, device=self.device)] = files.decoded.to(self.device)
        return out

    def _decode_error(self, files: FileBatch, jpegs: list[torch.Tensor], err: Exception) -> Exception:
        """Name the file a batch decode failed on (decoding them one by one on the CPU), or say what failed."""
        for row, data in zip(files.encoded_rows, jpegs):
            try:
                decode_jpegs([data], torch.device("cpu"))
            except RuntimeError as one:
                path = self.paths[int(files.positions[row])]
                return BadImageError(f"cannot read image {path}: {one}; the file is corrupt or not an image: delete or "
                                     f"replace it ({FIND_BAD_IMAGES} lists every such file)")
        return RuntimeError(f"decoding a batch of {len(jpegs)} JPEGs on {self.device} failed ({err}), though each "
                            f"decodes on the CPU; --loader workers decodes them there")

    def _finish(self, images: torch.Tensor, positions: torch.Tensor, augment: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment (training) and normalise uint8 (B, 3, S, S) images; their labels, on the device."""
        if augment and self.spec is not None:
            draws = face_augment.draw(self.spec, images.shape[0], self.size, self.size, self._random.draws)
            out = face_augment.apply(images, draws.to(self.device), self.spec, self.mean, self.std)
        else:
            out = face_augment.normalize(images, self.mean, self.std)
        labels = self._labels[positions.to(self.device, non_blocking=True)]
        return in_layout(out.to(self.dtype), self.channels_last), labels

    def augment(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Augment and normalise a (B, H, W, 3) uint8 batch as training does (resized to S first if
        another size): (B, 3, S, S) on the device."""
        from torchvision.transforms.v2 import functional as TF

        images = torch.as_tensor(np.asarray(batch) if not isinstance(batch, torch.Tensor) else batch)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
            raise ValueError(f"batch must be uint8 (B, H, W, 3), got {images.dtype} {tuple(images.shape)}")
        images = images.permute(0, 3, 1, 2).to(self.device)
        if tuple(images.shape[2:]) != (self.size, self.size):
            images = TF.resize(images, [self.size, self.size], antialias=True)
        positions = torch.zeros(len(images), dtype=torch.int64)  # labels are not asked for here
        return self._on_device(lambda: self._finish(images, positions, augment=True))[0]

    def inputs_at(self, index: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The images at positions `index` (k,), normalised and not augmented: (k, 3, S, S) on the device."""
        index = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
        if index.numel() and not (0 <= int(index.min()) and int(index.max()) < self.dataset_size):
            raise IndexError(f"positions must be in [0, {self.dataset_size}), got {index.tolist()[:5]}")
        files = self._reader[index.tolist()]
        return self._on_device(lambda: self._finish(self._decode(files), files.positions, augment=False))[0]

    def __repr__(self) -> str:
        return (f"FaceLoader(dataset_size={self.dataset_size}, batch_size={self.batch_size}, batches={len(self)}, "
                f"size={self.size}, spec={self.spec}, device={self.device}, shuffle={self.shuffle}, "
                f"seed={self.seed}, num_workers={self.num_workers}"
                + (f", shard=({self.rank}, {self.ranks})" if self.ranks > 1 else "") + ")")
