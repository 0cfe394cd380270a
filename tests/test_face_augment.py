"""HW2P2's augmentation batched on the device (era_utils.face_augment) against the torchvision pipeline
the recipe runs per image on CPU workers (transforms.hw2p2_train_transform): the same distribution of
every random parameter, and the same pixels for the same parameters."""
from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import chisquare, ks_2samp

from era_utils import face_augment
from era_utils.gpu_loader import GPULoader
from era_utils.transforms import HW2P2_AUGMENT, FaceAugmentSpec, hw2p2_train_transform

MEAN3, STD3 = (0.52, 0.41, 0.37), (0.26, 0.22, 0.21)


def photo_like(n: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """uint8 (n, C, H, W): smooth blobs plus noise, with flat gray patches (where channels are equal,
    saturation's blend lands on whole numbers and rounding differences would show)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand((n, channels, height // 4 + 1, width // 4 + 1), generator=g) * 255
    x = torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
    x = x + torch.randn((n, channels, height, width), generator=g) * 8
    x[:, :, : height // 3, : width // 3] = x[:, :1, : height // 3, : width // 3]  # a gray corner
    return x.clamp(0, 255).round().to(torch.uint8)


# ----------------------------------------------------------------------------- the draws


def torchvision_draws(spec: FaceAugmentSpec, n: int, height: int, width: int, seed: int) -> dict[str, list]:
    """Run the recipe's torchvision pipeline on `n` images and record what each random step drew."""
    pipeline = hw2p2_train_transform((0.5,) * 3, (0.25,) * 3, size=None, spec=spec)
    steps = {type(t).__name__: t for t in pipeline.transforms}
    seen: dict[str, list] = {name: [] for name in ("flip", "angle", "gray", "jitter", "erase")}

    def record(step, name, keep):
        original = step.make_params

        def make_params(flat_inputs):
            params = original(flat_inputs)
            seen[name].append(keep(params))
            return params
        step.make_params = make_params

    record(steps["RandomHorizontalFlip"], "flip", lambda p: True)  # called only when the flip happens
    record(steps["RandomRotation"], "angle", lambda p: p["angle"])
    record(steps["RandomGrayscale"], "gray", lambda p: True)
    record(steps["ColorJitter"], "jitter", lambda p: (
        tuple(i for i in p["fn_idx"].tolist() if i < 3),
        (p["brightness_factor"], p["contrast_factor"], p["saturation_factor"])))
    record(steps["RandomErasing"], "erase", lambda p: (p["i"], p["j"], p["h"], p["w"], p["v"] is not None))
    torch.manual_seed(seed)
    image = Image.fromarray(np.zeros((height, width, 3), np.uint8))
    for _ in range(n):
        pipeline(image)
    return seen


@pytest.mark.parametrize("spec, height, width", [
    (HW2P2_AUGMENT, 20, 28),
    # erasing that often finds no rectangle that fits in 10 tries: torchvision then erases nothing
    (FaceAugmentSpec(erasing_p=0.8, erasing_scale=(0.6, 0.9), erasing_ratio=(0.5, 2.0)), 12, 10),
])
def test_every_parameter_is_drawn_as_torchvision_draws_it(spec, height, width):
    n = 3000
    ref = torchvision_draws(spec, n, height, width, seed=0)
    ours = face_augment.draw(spec, n, height, width, torch.Generator().manual_seed(0))

    def same_rate(count_ref: int, ours_mask: torch.Tensor) -> None:
        p1, p2 = count_ref / n, float(ours_mask.float().mean())
        pooled = (p1 + p2) / 2
        assert abs(p1 - p2) <= 4.5 * np.sqrt(pooled * (1 - pooled) * 2 / n) + 1e-9, (p1, p2)

    same_rate(len(ref["flip"]), ours.flip)
    same_rate(len(ref["gray"]), ours.gray)
    assert ks_2samp(ref["angle"], ours.angle.numpy()).pvalue > 1e-3
    assert max(map(abs, ref["angle"])) <= spec.rotation and float(ours.angle.abs().max()) <= spec.rotation
    # jitter: each factor's distribution, and every order of the three steps equally often
    factors_ref = np.array([f for _, f in ref["jitter"]])
    for k in range(3):
        assert ks_2samp(factors_ref[:, k], ours.factors[:, k].numpy()).pvalue > 1e-3
    orders = list(itertools.permutations(range(3)))
    for counts in (Counter(o for o, _ in ref["jitter"]), Counter(map(tuple, ours.order.tolist()))):
        assert set(counts) == set(orders)
        assert chisquare([counts[o] for o in orders]).pvalue > 1e-3
    # erasing: how often a rectangle is erased, its height, width and position
    erased_ref = [e for e in ref["erase"] if e[4]]
    same_rate(len(erased_ref), ours.erase)
    top, left, h, w = (ours.box[ours.erase][:, k].numpy() for k in range(4))
    ref_top, ref_left, ref_h, ref_w = (np.array([e[k] for e in erased_ref]) for k in range(4))
    for a, b in ((ref_h, h), (ref_w, w)):
        assert ks_2samp(a, b).pvalue > 1e-3
        assert set(b) <= set(range(1, max(height, width)))  # whole pixels, smaller than the image
    assert ks_2samp(ref_top / (height - ref_h), top / (height - h)).pvalue > 1e-3  # uniform over its room
    assert ks_2samp(ref_left / (width - ref_w), left / (width - w)).pvalue > 1e-3
    assert (top + h <= height).all() and (left + w <= width).all()


def test_draws_come_from_the_generator_alone():
    a = face_augment.draw(HW2P2_AUGMENT, 64, 32, 32, torch.Generator().manual_seed(5))
    torch.manual_seed(123)  # the global RNG plays no part
    b = face_augment.draw(HW2P2_AUGMENT, 64, 32, 32, torch.Generator().manual_seed(5))
    c = face_augment.draw(HW2P2_AUGMENT, 64, 32, 32, torch.Generator().manual_seed(6))
    assert all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("flip", "angle", "factors", "order", "box"))
    assert not torch.equal(a.angle, c.angle)


# ----------------------------------------------------------------------------- the pixels


def torchvision_with(draws: face_augment.FaceDraws, i: int, spec: FaceAugmentSpec, mean, std, image: np.ndarray
                     ) -> torch.Tensor:
    """Image `i` through the recipe's own torchvision pipeline, its random steps forced to draws[i]."""
    pipeline = hw2p2_train_transform(mean, std, size=None, spec=spec)
    steps = {type(t).__name__: t for t in pipeline.transforms}
    steps["RandomHorizontalFlip"].p = float(draws.flip[i])
    steps["RandomGrayscale"].p = float(draws.gray[i])
    steps["RandomErasing"].p = float(draws.erase[i])
    steps["RandomRotation"].make_params = lambda _: {"angle": float(draws.angle[i])}
    b, c, s = draws.factors[i].tolist()
    order = draws.order[i].tolist() + [3]
    steps["ColorJitter"].make_params = lambda _: dict(fn_idx=torch.tensor(order), brightness_factor=b,
                                                      contrast_factor=c, saturation_factor=s, hue_factor=None)
    top, left, h, w = draws.box[i].tolist()
    steps["RandomErasing"].make_params = lambda _: dict(i=top, j=left, h=h, w=w, v=torch.zeros(1, 1, 1))
    return pipeline(Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image))


@pytest.mark.parametrize("channels, height, width", [(3, 48, 64), (1, 28, 28)])
def test_same_draws_give_torchvision_s_pixels(channels, height, width):
    """Every step at once, on random draws: the batch equals the CPU pipeline image by image."""
    n = 24
    mean, std = MEAN3[:channels], STD3[:channels]
    images = photo_like(n, channels, height, width)
    spec = FaceAugmentSpec(grayscale_p=0.5)  # more gray images than the recipe's 10%, to see them
    draws = face_augment.draw(spec, n, height, width, torch.Generator().manual_seed(3))
    assert draws.flip.any() and (~draws.flip).any() and draws.gray.any() and draws.erase.any()
    batch = face_augment.apply(images, draws, spec, mean, std)
    hwc = images.permute(0, 2, 3, 1).numpy()
    for i in range(n):
        expected = torchvision_with(draws, i, spec, mean, std, hwc[i])
        torch.testing.assert_close(batch[i], expected, rtol=0, atol=1e-5, msg=f"image {i}")


@pytest.mark.parametrize("angle", [-12.0, -7.25, 0.0, 0.4, 5.0, 12.0])
def test_a_given_angle_rotates_as_torchvision_rotates(angle):
    from torchvision.transforms.v2 import functional as TF

    images = photo_like(3, 3, 40, 52, seed=1)
    out = face_augment.rotate(images.float(), torch.full((3,), angle))
    expected = TF.rotate(images, angle, interpolation=TF.InterpolationMode.NEAREST, fill=0)
    assert torch.equal(out.to(torch.uint8), expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a caller's autocast leaves the grid in float32
        assert torch.equal(face_augment.rotate(images.float(), torch.full((3,), angle)), out)
    if abs(angle) >= 5:  # black corners where the rotated image no longer reaches
        assert (out[:, :, 0, 0] == 0).all() and (out[:, :, -1, -1] == 0).all()


def test_each_step_alone_matches_torchvision_s_function():
    """Flip, grayscale, each jitter step and erasing, forced one at a time."""
    from torchvision.transforms.v2 import functional as TF

    n, mean, std = 4, MEAN3, STD3
    images = photo_like(n, 3, 20, 24, seed=2)
    none = FaceAugmentSpec(flip_p=0, rotation=0, grayscale_p=0, jitter=0, erasing_p=0)
    draws = face_augment.draw(HW2P2_AUGMENT, n, 20, 24, torch.Generator().manual_seed(0))

    def normalised(x: torch.Tensor) -> torch.Tensor:
        return TF.normalize(TF.to_dtype(x, torch.float32, scale=True), list(mean), list(std))

    draws.flip[:] = True
    flipped = face_augment.apply(images, draws, FaceAugmentSpec(flip_p=1, rotation=0, grayscale_p=0, jitter=0,
                                                                erasing_p=0), mean, std)
    torch.testing.assert_close(flipped, normalised(TF.horizontal_flip(images)), rtol=0, atol=1e-6)
    draws.gray[:] = True
    gray = face_augment.apply(images, draws, FaceAugmentSpec(flip_p=0, rotation=0, grayscale_p=1, jitter=0,
                                                             erasing_p=0), mean, std)
    torch.testing.assert_close(gray, normalised(TF.rgb_to_grayscale(images, num_output_channels=3)), rtol=0, atol=1e-6)
    for step, function in enumerate((TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)):
        draws.order[:] = torch.tensor([step, step, step])  # the same step three times
        out = face_augment.apply(images, draws, FaceAugmentSpec(flip_p=0, rotation=0, grayscale_p=0, erasing_p=0),
                                 mean, std)
        for i in range(n):
            x = images[i]
            for _ in range(3):
                x = function(x, float(draws.factors[i, step]))
            torch.testing.assert_close(out[i], normalised(x)[0] if x.ndim == 4 else normalised(x), rtol=0, atol=1e-6)
    erased = face_augment.apply(images, draws, FaceAugmentSpec(flip_p=0, rotation=0, grayscale_p=0, jitter=0),
                                mean, std)
    for i in range(n):
        expected = normalised(images[i])
        if draws.erase[i]:
            top, left, h, w = draws.box[i].tolist()
            expected = TF.erase(expected, top, left, h, w, torch.zeros(1, 1, 1))
        torch.testing.assert_close(erased[i], expected, rtol=0, atol=1e-6)
    assert torch.allclose(face_augment.apply(images, draws, none, mean, std), normalised(images))


# ----------------------------------------------------------------------------- in GPULoader (arrays)


def test_gpu_loader_runs_hw2p2_s_recipe_on_arrays():
    """The HW2P2 stand-in (Fashion-MNIST arrays) on the device path: gray 28x28 images, reproducible."""
    images = photo_like(40, 1, 28, 28).permute(0, 2, 3, 1).numpy()
    labels = np.arange(40) % 4

    def epoch(seed: int) -> list[torch.Tensor]:
        loader = GPULoader(images, labels, 16, spec=HW2P2_AUGMENT, mean=(0.3,), std=(0.3,), device="cpu", seed=seed)
        return [x for x, _ in loader]

    first, again, other = epoch(0), epoch(0), epoch(1)
    assert [x.shape for x in first] == [(16, 1, 28, 28), (16, 1, 28, 28), (8, 1, 28, 28)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])
    # the loader's draws are the module's: its batch equals apply() on the same images and draws
    loader = GPULoader(images, labels, 40, spec=HW2P2_AUGMENT, mean=(0.3,), std=(0.3,), device="cpu", seed=4,
                       shuffle=False)
    batch, _ = next(iter(loader))
    draws = face_augment.draw(HW2P2_AUGMENT, 40, 28, 28, torch.Generator().manual_seed(4))
    expected = face_augment.apply(torch.as_tensor(images).permute(0, 3, 1, 2), draws, HW2P2_AUGMENT, (0.3,), (0.3,))
    assert torch.equal(batch, expected)
