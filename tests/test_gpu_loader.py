"""GPULoader: the same recipe as the albumentations path, batched on the device (CPU here, CUDA when present)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from era_utils.gpu_loader import GPULoader
from era_utils.transforms import NO_AUGMENT, S7_AUGMENT, S10_AUGMENT, AugmentSpec, albumentations_transform

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
IDENTITY = ((0.0, 0.0, 0.0), (1 / 255,) * 3)  # normalised output == pixel values

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def coord_images(n: int, size: int = 16) -> np.ndarray:
    """(n, size, size, 3) uint8, a unique value per pixel: channel 0 = row + 1, channel 1 = col + 1."""
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    image = np.stack([rows + 1, cols + 1, np.full_like(rows, 7)], axis=-1).astype(np.uint8)
    return np.repeat(image[None], n, axis=0)


def recover(out: np.ndarray, images: np.ndarray, pad: int) -> np.ndarray:
    """(B, 3) [oy, ox, flipped] of augmented coord images `out` (B, C, H, W pixels); asserts exact crops."""
    b, c, h, w = out.shape
    i, j = h // 2, w // 2  # always inside the original image for pad < h // 2
    flipped = out[:, 1, i, j] < out[:, 1, i, j - 1]
    oy = out[:, 0, i, j] - 1 - i + pad
    ox = out[:, 1, i, j] - 1 - np.where(flipped, w - 1 - j, j) + pad
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    for k in range(b):
        expected = padded[k, oy[k]:oy[k] + h, ox[k]:ox[k] + w]
        if flipped[k]:
            expected = expected[:, ::-1]
        np.testing.assert_array_equal(out[k], expected.transpose(2, 0, 1))
    return np.stack([oy, ox, flipped], axis=1)


def pixels(t: torch.Tensor) -> np.ndarray:
    return np.rint(t.float().cpu().numpy()).astype(np.int64)


@pytest.mark.parametrize("device", DEVICES)
def test_crop_offsets_within_padding_and_flip_rate(device):
    n, pad = 2000, 4
    images = coord_images(n)
    loader = GPULoader(images, np.zeros(n), 500, spec=AugmentSpec(crop_padding=pad, flip=True), mean=IDENTITY[0],
                       std=IDENTITY[1], device=device, seed=0)
    draws = recover(pixels(loader.augment(images)), images, pad)
    for axis in (0, 1):  # per-image offsets, every value of [0, 2 * pad] seen
        assert set(draws[:, axis].tolist()) == set(range(2 * pad + 1))
    assert abs(draws[:, 2].sum() - n / 2) < 4.5 * np.sqrt(n / 4)  # binomial(n, 0.5), 4.5 sigma
    # the batches the loader yields are augmented the same way (exact crops of the padded image)
    batch, _ = next(iter(loader))
    recover(pixels(batch), images[:len(batch)], pad)


@pytest.mark.parametrize("device", DEVICES)
def test_cutout_is_an_s_by_s_hole_of_the_mean(device):
    n, size, s = 600, 16, 5
    images = np.full((n, size, size, 3), 200, np.uint8)
    loader = GPULoader(images, np.zeros(n), 64, spec=AugmentSpec(crop_padding=0, cutout_size=s), mean=MEAN, std=STD,
                       device=device, seed=1)
    out = loader.augment(images).cpu().numpy()  # (n, 3, H, W)
    background = ((200 / 255 - np.array(MEAN)) / np.array(STD))[None, :, None, None]
    hole = ~np.isclose(out, background, atol=1e-4).all(axis=1)  # (n, H, W)
    assert (hole.sum(axis=(1, 2)) == s * s).all()
    rows_hit, cols_hit = hole.any(axis=2), hole.any(axis=1)  # (n, H), (n, W)
    assert (rows_hit.sum(1) == s).all() and (cols_hit.sum(1) == s).all()  # one s x s square each
    # the fill is the mean in pixel units: ~0 after normalising (within half a pixel level)
    assert np.abs(out.transpose(0, 2, 3, 1)[hole]).max() < 0.5 / 255 / min(STD) + 1e-5
    # fully inside the image, top-left anywhere in [0, size - s], like albumentations CoarseDropout
    tops, lefts = rows_hit.argmax(1), cols_hit.argmax(1)
    assert tops.min() == 0 and tops.max() == size - s and lefts.min() == 0 and lefts.max() == size - s


def test_same_numbers_as_the_albumentations_path():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    loader = GPULoader(images, np.zeros(4), 4, spec=NO_AUGMENT, mean=MEAN, std=STD, shuffle=False)
    batch, _ = next(iter(loader))
    expected = (images / 255.0 - np.array(MEAN)) / np.array(STD)
    np.testing.assert_allclose(batch.numpy(), expected.transpose(0, 3, 1, 2), atol=1e-5)
    test_time = albumentations_transform(NO_AUGMENT, MEAN, STD, size=16)
    for k in range(4):
        torch.testing.assert_close(batch[k], test_time(image=images[k])["image"], atol=1e-5, rtol=0)
    # a cutout hole holds the same normalised value on both paths
    constant = np.full((1, 16, 16, 3), 200, np.uint8)
    gpu_out = GPULoader(constant, [0], 1, spec=S10_AUGMENT, mean=MEAN, std=STD, seed=0).augment(constant)[0]
    alb_out = albumentations_transform(S10_AUGMENT, MEAN, STD, size=16, seed=0)(image=constant[0])["image"]
    np.testing.assert_allclose(hole_value(gpu_out), hole_value(alb_out), atol=1e-6)
    assert np.abs(hole_value(gpu_out)).max() < 0.01  # background is ~1.2, black padding ~ -2


def hole_value(x: torch.Tensor) -> np.ndarray:
    """Per channel, the value nearest 0 in a (C, H, W) normalised image: the mean-filled hole."""
    flat = x.numpy().reshape(x.shape[0], -1)
    return flat[np.arange(len(flat)), np.abs(flat).argmin(axis=1)]


@pytest.mark.parametrize("device", DEVICES)
def test_iteration_shapes_lengths_and_options(device):
    n = 10
    images = np.random.default_rng(0).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    loader = GPULoader(images, np.arange(n), 4, spec=AugmentSpec(crop_padding=2, flip=True, cutout_size=4),
                       mean=MEAN, std=STD, device=device, seed=0)
    assert len(loader) == 3 and loader.dataset_size == n and loader.batch_size == 4
    assert loader.mean == MEAN and loader.std == STD
    for _ in range(2):  # several epochs; each one a permutation of the whole set
        batches = list(loader)
        assert [len(y) for _, y in batches] == [4, 4, 2]
        labels = torch.cat([y for _, y in batches]).cpu()
        assert sorted(labels.tolist()) == list(range(n)) and labels.dtype == torch.int64
        x = batches[0][0]
        assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32 and x.device.type == device
    dropped = GPULoader(images, np.arange(n), 4, mean=MEAN, std=STD, device=device, drop_last=True)
    assert len(dropped) == 2 and len(list(dropped)) == 2
    half = GPULoader(images, np.arange(n), 4, mean=MEAN, std=STD, device=device, dtype=torch.float16,
                     channels_last=True, shuffle=False)
    x, _ = next(iter(half))
    assert x.dtype == torch.float16 and x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("spec", [S7_AUGMENT, NO_AUGMENT])
def test_float_storage_gives_the_same_batches(device, spec):
    images = np.random.default_rng(1).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    kw = dict(spec=spec, mean=MEAN, std=STD, device=device, seed=3)
    a = [x for x, _ in GPULoader(images, np.zeros(12), 5, storage_dtype=torch.uint8, **kw)]
    for storage in (torch.float16, torch.float32):
        loader = GPULoader(images, np.zeros(12), 5, storage_dtype=storage, **kw)
        for x, y in zip(a, [x for x, _ in loader]):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=0)
        # pixel values are stored as they are (not rescaled) and iterating leaves them intact
        assert torch.equal(loader.images.cpu().to(torch.uint8), torch.from_numpy(images))


@pytest.mark.parametrize("device", DEVICES)
def test_seed_reproducible_and_global_rng_untouched(device):
    images = coord_images(64)
    labels = np.arange(64)
    state = torch.get_rng_state()

    def run(seed):
        loader = GPULoader(images, labels, 16, spec=S10_AUGMENT, mean=MEAN, std=STD, device=device, seed=seed)
        return [torch.cat([x.flatten(), y.float()]) for _ in range(2) for x, y in loader]

    a, b, c = run(7), run(7), run(8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(torch.stack(a), torch.stack(c))
    assert not torch.equal(a[0], a[4])  # the second epoch is a new draw
    assert torch.equal(torch.get_rng_state(), state)
    unseeded = GPULoader(images, labels, 16, mean=MEAN, std=STD, device=device)
    assert isinstance(unseeded.seed, int)  # a fresh seed, kept so the run can be repeated


def test_grayscale_images():
    images = np.random.default_rng(2).integers(0, 256, (6, 16, 16), dtype=np.uint8)  # (N, H, W) -> C = 1
    images.flags.writeable = False  # like np.frombuffer over an IDX file
    loader = GPULoader(images, np.arange(6), 3, spec=S10_AUGMENT, mean=(0.3,), std=(0.35,), seed=0)
    x, y = next(iter(loader))
    assert x.shape == (3, 1, 16, 16) and loader.images.shape == (6, 16, 16, 1)
    plain = GPULoader(images[..., None], np.arange(6), 6, mean=(0.3,), std=(0.35,), shuffle=False)
    x, _ = next(iter(plain))
    np.testing.assert_allclose(x[:, 0].numpy(), (images / 255.0 - 0.3) / 0.35, atol=1e-5)


def test_input_errors_name_the_expected_thing():
    images = np.zeros((4, 16, 16, 3), np.uint8)
    labels = np.arange(4)
    with pytest.raises(TypeError, match="uint8"):
        GPULoader(images.astype(np.float32), labels, 2, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="3 channel"):
        GPULoader(images, labels, 2, mean=(0.5,), std=(0.25,))
    with pytest.raises(ValueError, match="cutout_size=20"):
        GPULoader(images, labels, 2, spec=AugmentSpec(cutout_size=20), mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="labels"):
        GPULoader(images, labels[:3], 2, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="batch_size"):
        GPULoader(images, labels, 0, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="4 images and batch_size 8 leaves no batch"):
        GPULoader(images, labels, 8, mean=MEAN, std=STD, drop_last=True)
    loader = GPULoader(images, labels, 2, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="channel"):
        loader.augment(images[..., :1])
