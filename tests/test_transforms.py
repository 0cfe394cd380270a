"""The albumentations recipes, the per-image Dataset and its worker loader (era_utils.loaders), worker
reseeding and the HW2P2 torchvision pipeline."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from era_utils.loaders import ArrayDataset, worker_loader
from era_utils.transforms import (
    NO_AUGMENT,
    S7_AUGMENT,
    S10_AUGMENT,
    AugmentSpec,
    albumentations_transform,
    hw2p2_test_transform,
    hw2p2_train_transform,
    seed_transform,
)
from era_utils.transforms import eval_transform as normalise_only

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
# Normalising with mean 0 and std 1/255 gives back the pixel values, so positions can be read off.
IDENTITY = ((0.0, 0.0, 0.0), (1 / 255,) * 3)


def coord_image(size: int = 16) -> np.ndarray:
    """(size, size, 3) uint8 with a unique value per pixel: channel 0 = row + 1, channel 1 = col + 1."""
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return np.stack([rows + 1, cols + 1, np.full_like(rows, 7)], axis=-1).astype(np.uint8)


def recover(out: np.ndarray, image: np.ndarray, pad: int) -> tuple[int, int, bool]:
    """(oy, ox, flipped) of an augmented coord image `out` (C, H, W pixels); asserts it is exactly that crop."""
    c, h, w = out.shape
    i, j = h // 2, w // 2  # always inside the original image for pad < h // 2
    flipped = bool(out[1, i, j] < out[1, i, j - 1])
    oy = int(out[0, i, j]) - 1 - i + pad
    ox = int(out[1, i, j]) - 1 - ((w - 1 - j) if flipped else j) + pad
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    expected = padded[oy:oy + h, ox:ox + w]
    if flipped:
        expected = expected[:, ::-1]
    np.testing.assert_array_equal(out, expected.transpose(2, 0, 1))
    return oy, ox, flipped


def pixels(t: torch.Tensor) -> np.ndarray:
    return np.rint(t.numpy()).astype(np.int64)


def test_spec_constants_and_validation():
    assert (S7_AUGMENT.crop_padding, S7_AUGMENT.flip, S7_AUGMENT.cutout_size) == (4, False, 16)
    assert (S10_AUGMENT.crop_padding, S10_AUGMENT.flip, S10_AUGMENT.cutout_size) == (4, True, 8)
    assert NO_AUGMENT.is_identity and not S10_AUGMENT.is_identity
    assert S10_AUGMENT.fill_pixels(MEAN) == (125, 123, 114)  # the mean in uint8 pixel units, rounded
    assert AugmentSpec(cutout_size=4, cutout_fill=0).fill_pixels((0.5,)) == (0,)
    with pytest.raises(ValueError, match="crop_padding"):
        AugmentSpec(crop_padding=-1)
    with pytest.raises(ValueError, match="cutout_fill"):
        AugmentSpec(cutout_fill="median")
    with pytest.raises(ValueError, match="cutout_p"):
        AugmentSpec(cutout_p=1.5)
    with pytest.raises(ValueError, match="cutout_size=16"):
        albumentations_transform(S7_AUGMENT, MEAN, STD, size=8)
    with pytest.raises(ValueError, match="std"):
        albumentations_transform(S10_AUGMENT, MEAN, STD[:2])
    with pytest.raises(ValueError, match=r"\[0, 1\] units"):
        albumentations_transform(S10_AUGMENT, (125.0, 123.0, 114.0), STD)


@pytest.mark.filterwarnings("ignore:Argument")
def test_every_compose_is_strict():
    import albumentations as A

    with pytest.raises(ValueError):  # what strict=True buys: a typo is an error, not a warning
        A.Compose([A.HorizontalFlip(always_apply=True)], strict=True)
    transform = albumentations_transform(S10_AUGMENT, MEAN, STD)
    assert transform.strict
    names = [type(t).__name__ for t in transform.transforms]
    assert names == ["PadIfNeeded", "RandomCrop", "HorizontalFlip", "CoarseDropout", "Normalize", "ToTensorV2"]


def test_crop_offsets_within_padding_and_flip_rate():
    image, pad, n = coord_image(16), 4, 800
    transform = albumentations_transform(AugmentSpec(crop_padding=pad, flip=True), *IDENTITY, size=16, seed=0)
    draws = np.array([recover(pixels(transform(image=image)["image"]), image, pad) for _ in range(n)])
    for axis in (0, 1):  # every offset in [0, 2 * pad], each one seen
        assert set(draws[:, axis].tolist()) == set(range(2 * pad + 1))
    flips = draws[:, 2].sum()
    assert abs(flips - n / 2) < 4.5 * np.sqrt(n / 4)  # binomial(n, 0.5), 4.5 sigma


def test_cutout_is_an_s_by_s_hole_of_the_mean():
    size, s = 16, 5
    image = np.full((size, size, 3), 200, np.uint8)
    transform = albumentations_transform(AugmentSpec(crop_padding=0, cutout_size=s), MEAN, STD, size=size, seed=1)
    background = (200 / 255 - np.array(MEAN)) / np.array(STD)
    tops, lefts = [], []
    for _ in range(300):
        out = transform(image=image)["image"].numpy()  # (3, H, W)
        hole = ~np.isclose(out, background[:, None, None], atol=1e-4).all(axis=0)
        ys, xs = np.nonzero(hole)
        assert hole.sum() == s * s and np.ptp(ys) == s - 1 and np.ptp(xs) == s - 1  # one full s x s square
        # filled with the mean: ~0 after normalising (within half a pixel level)
        assert np.abs(out[:, hole]).max() < 0.5 / 255 / min(STD) + 1e-5
        tops.append(ys.min())
        lefts.append(xs.min())
    # always fully inside the image, top-left anywhere in [0, size - s] (albumentations 2.x CoarseDropout)
    assert min(tops) == 0 and max(tops) == size - s and min(lefts) == 0 and max(lefts) == size - s


def test_normalisation_values_and_test_transform():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    out = normalise_only(MEAN, STD)(image=image)["image"]
    assert out.shape == (3, 8, 8) and out.dtype == torch.float32
    expected = (image / 255.0 - np.array(MEAN)) / np.array(STD)
    np.testing.assert_allclose(out.numpy(), expected.transpose(2, 0, 1), atol=1e-5)


def test_grayscale_images():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 16, 16, 1), dtype=np.uint8)
    transform = albumentations_transform(AugmentSpec(crop_padding=2, flip=True, cutout_size=4), (0.3,), (0.35,),
                                         size=16)
    assert transform(image=images[0])["image"].shape == (1, 16, 16)
    loader = worker_loader((images[..., 0], np.arange(6)), S10_AUGMENT, (0.3,), (0.35,), batch_size=3,
                         num_workers=0, seed=0)  # (N, H, W) is read as one channel
    x, y = next(iter(loader))
    assert x.shape == (3, 1, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_input_errors_name_the_expected_thing():
    images = np.zeros((4, 16, 16, 3), np.uint8)
    labels = np.arange(4)
    with pytest.raises(TypeError, match="uint8"):
        worker_loader((images.astype(np.float32), labels), NO_AUGMENT, MEAN, STD, batch_size=2, num_workers=0)
    with pytest.raises(ValueError, match="3 channel"):
        worker_loader((images, labels), NO_AUGMENT, (0.5,), (0.25,), batch_size=2, num_workers=0)
    with pytest.raises(ValueError, match="cutout_size"):
        worker_loader((images, labels), AugmentSpec(cutout_size=20), MEAN, STD, batch_size=2, num_workers=0)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        ArrayDataset(np.zeros((4, 16, 16, 2), np.uint8), labels, normalise_only(MEAN, STD))
    with pytest.raises(ValueError, match="normalises 3 channel"):
        ArrayDataset(images[..., :1], labels, normalise_only(MEAN, STD))
    with pytest.raises(ValueError, match="labels"):
        ArrayDataset(images, labels[:3], normalise_only(MEAN, STD))
    with pytest.raises(ValueError, match="size=16"):  # a 32x32 recipe on 16x16 images
        ArrayDataset(images, labels, albumentations_transform(S10_AUGMENT, MEAN, STD, size=32))


def test_dataset_seed_is_reproducible():
    images = np.repeat(coord_image(16)[None], 8, axis=0)

    def run(seed):
        ds = ArrayDataset(images, np.zeros(8), albumentations_transform(S10_AUGMENT, MEAN, STD, size=16),
                                   seed=seed)
        return torch.stack([ds[i][0] for i in range(len(ds))])

    a, b, c = run(5), run(5), run(6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # identical images, different draws


def test_seed_transform_shares_one_stream():
    transform = albumentations_transform(S10_AUGMENT, MEAN, STD)
    seed_transform(transform, 3)
    crop, flip = transform.transforms[1], transform.transforms[2]
    # set_random_seed alone gives each child its own copy of the same stream (coupled draws)
    assert crop.py_random is flip.py_random is transform.py_random


def test_workers_do_not_repeat_each_other_and_seed_repeats_the_run():
    images = np.repeat(coord_image(16)[None], 32, axis=0)  # identical images: any difference is the RNG
    labels = np.arange(32)

    def run(seed):
        loader = worker_loader((images, labels), S10_AUGMENT, MEAN, STD, batch_size=8, shuffle=False,
                               num_workers=2, seed=seed)
        epochs = [[x for x, _ in loader] for _ in range(2)]
        del loader  # stop the persistent workers
        return epochs

    first, again = run(11), run(11)
    # batches 0 and 1 come from workers 0 and 1
    assert not torch.equal(first[0][0], first[0][1])
    assert not torch.equal(first[0][0], first[0][2])  # a worker moves on within an epoch
    assert not torch.equal(first[0][0], first[1][0])  # and across epochs (persistent workers)
    for batch_a, batch_b in zip(first[0] + first[1], again[0] + again[1]):
        assert torch.equal(batch_a, batch_b)


def test_hw2p2_pipelines():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    mean, std = (0.5116, 0.4026, 0.3519), (0.3073, 0.2697, 0.2587)  # seed 001's face statistics
    train = hw2p2_train_transform(mean, std, size=32)
    for sample in (image, Image.fromarray(image)):
        out = train(sample)
        assert type(out) is torch.Tensor and out.shape == (3, 32, 32) and out.dtype == torch.float32
    gray = hw2p2_train_transform((0.5,), (0.25,), size=None)(image[..., :1])
    assert gray.shape == (1, 40, 40)
    test = hw2p2_test_transform(mean, std, size=None)(image)
    expected = (image / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(test.numpy(), expected.transpose(2, 0, 1), atol=1e-5)
