"""HW2P2's augmentation (`FaceAugmentSpec`) on whole batches, on the device: the batched twin of
`transforms.hw2p2_train_transform`, which runs the same recipe image by image with torchvision v2.

Every image gets its own draws, from the distributions torchvision draws from (`draw`), and the
batch is then transformed as torchvision would transform each image with those draws (`apply`):

    flip        p = flip_p
    rotation    angle uniform in [-rotation, rotation] degrees, nearest neighbour, black corners
    grayscale   p = grayscale_p; luma 0.2989 R + 0.587 G + 0.114 B, kept as 3 channels
    jitter      brightness, contrast, saturation factors uniform in [1 - jitter, 1 + jitter], the three
                in a random order per image
    normalise   (x / 255 - mean) / std
    erasing     p = erasing_p; area uniform in erasing_scale of the image, aspect log-uniform in
                erasing_ratio, up to 10 tries for a rectangle that fits, position uniform; filled with 0

torchvision works on uint8 images until it normalises, so it rounds down after the grayscale and
after each jitter step; `apply` keeps float pixel values and rounds them down at the same points, and
blends with the same fused multiply-add, so for the same draws it gives torchvision's pixels
(tests/test_face_augment.py checks both the draws and the pixels).

    draws = draw(spec, batch_size, height, width, generator)
    images = apply(uint8_images, draws, spec, mean, std)       # (B, C, H, W) float, normalised
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Sequence

import torch
import torch.nn.functional as F

from era_utils.transforms import FaceAugmentSpec

__all__ = ["FaceDraws", "apply", "draw", "normalize", "rotate"]

ERASING_TRIES = 10  # torchvision's RandomErasing looks for a rectangle that fits this many times
LUMA = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights (ITU-R 601-2)
BRIGHTNESS, CONTRAST, SATURATION = 0, 1, 2  # the jitter steps, as `FaceDraws.order` numbers them


@dataclass
class FaceDraws:
    """One batch's random parameters, one row per image (all tensors on one device)."""

    flip: torch.Tensor  # (B,) bool
    angle: torch.Tensor  # (B,) float32 degrees, counter-clockwise
    gray: torch.Tensor  # (B,) bool
    factors: torch.Tensor  # (B, 3) float32: brightness, contrast, saturation factors
    order: torch.Tensor  # (B, 3) int64: the jitter step applied first, second, third
    erase: torch.Tensor  # (B,) bool
    box: torch.Tensor  # (B, 4) int64: erased rows top .. top + height, columns left .. left + width

    def to(self, device: torch.device) -> "FaceDraws":
        """The same draws on `device`."""
        return FaceDraws(**{f.name: getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)})


def draw(spec: FaceAugmentSpec, batch: int, height: int, width: int, generator: torch.Generator) -> FaceDraws:
    """Draw `batch` images' parameters from `generator` (on its device), as torchvision draws them."""
    device = generator.device

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator, device=device)

    angle = (uniform(batch) * 2.0 - 1.0) * spec.rotation  # uniform in [-rotation, rotation]
    factors = 1.0 - spec.jitter + 2.0 * spec.jitter * uniform(batch, 3)
    order = uniform(batch, 3).argsort(dim=1)  # a uniformly random order of the three steps
    flip, gray, erase = (uniform(batch) < p for p in (spec.flip_p, spec.grayscale_p, spec.erasing_p))

    # RandomErasing: try up to 10 (area, aspect) draws; the first rectangle that fits is erased.
    # In float64, as torchvision computes them in python floats: h, w are rounded half to even.
    area = height * width * _uniform_in(uniform(batch, ERASING_TRIES), spec.erasing_scale)
    log_low, log_high = math.log(spec.erasing_ratio[0]), math.log(spec.erasing_ratio[1])
    aspect = torch.exp(_uniform_in(uniform(batch, ERASING_TRIES), (log_low, log_high)))
    h = torch.sqrt(area * aspect).round().long()  # (B, tries)
    w = torch.sqrt(area / aspect).round().long()
    fits = (h < height) & (w < width)
    first = fits.int().argmax(dim=1, keepdim=True)  # the first try that fits (0 when none does)
    h, w = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]
    erase = erase & fits.any(dim=1)  # torchvision erases nothing when no try fits
    top = (uniform(batch) * (height - h + 1)).long().clamp_max(height - h)  # uniform in [0, H - h]
    left = (uniform(batch) * (width - w + 1)).long().clamp_max(width - w)
    return FaceDraws(flip=flip, angle=angle, gray=gray, factors=factors, order=order, erase=erase,
                     box=torch.stack([top, left, h, w], dim=1))


def _uniform_in(u: torch.Tensor, bounds: Sequence[float]) -> torch.Tensor:
    """Map uniform [0, 1) draws onto [low, high), in float64."""
    low, high = bounds
    return low + (high - low) * u.double()


def apply(images: torch.Tensor, draws: FaceDraws, spec: FaceAugmentSpec, mean: Sequence[float],
          std: Sequence[float]) -> torch.Tensor:
    """Augment uint8 (or whole-valued float) images (B, C, H, W), C = 1 or 3, with `draws`; return them
    normalised with `mean`/`std` ([0, 1] units) as float32 (B, C, H, W)."""
    x = images.float()  # pixel values 0..255, whole numbers until normalised
    if spec.flip_p:
        x = torch.where(draws.flip[:, None, None, None], x.flip(-1), x)
    if spec.rotation:
        x = rotate(x, draws.angle)
    if spec.grayscale_p and x.shape[1] == 3:
        x = torch.where(draws.gray[:, None, None, None], _luma(x).floor_().expand_as(x), x)
    if spec.jitter:
        x = _jitter(x, draws.factors, draws.order)
    x = normalize(x, mean, std)
    if spec.erasing_p:
        x = x.masked_fill_(_box_mask(draws, x.shape[-2], x.shape[-1])[:, None], 0.0)
    return x


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Pixel values (B, C, H, W), uint8 or float 0..255, to float32 (x / 255 - mean) / std, as torchvision's
    ToDtype(scale=True) and Normalize compute it."""
    x = images.float() if images.dtype != torch.float32 else images
    mean_t = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return x.mul(1.0 / 255.0).sub_(mean_t).div_(std_t)


def rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate each image of float (B, C, H, W) by its own angle (B,) in degrees, counter-clockwise
    about the centre, nearest neighbour, black outside: torchvision's rotate, image by image."""
    b, _, height, width = x.shape
    # torchvision's inverse affine matrix for rotate(angle): [[cos, -sin, 0], [sin, cos, 0]], computed in
    # double and stored as float32; the grid is its _affine_grid (pixel centres, then / (size / 2)).
    rad = torch.deg2rad(angle.double())
    cos, sin, zero = torch.cos(rad), torch.sin(rad), torch.zeros_like(rad)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1).float()  # (B, 2, 3)
    half = torch.tensor([0.5 * width, 0.5 * height], dtype=torch.float32, device=x.device)
    scaled = theta.transpose(1, 2) / half  # (B, 3, 2)
    base = torch.empty(1, height, width, 3, dtype=torch.float32, device=x.device)
    base[..., 0].copy_(torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, steps=width, device=x.device))
    base[..., 1].copy_(torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, steps=height,
                                      device=x.device).unsqueeze_(-1))
    base[..., 2].fill_(1.0)
    with torch.autocast(x.device.type, enabled=False):  # in float32 even inside a caller's autocast
        grid = torch.bmm(base.view(1, height * width, 3).expand(b, -1, -1), scaled).view(b, height, width, 2)
        return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) float luma of RGB (B, 3, H, W), as torchvision computes it (before rounding)."""
    r, g, b = x.unbind(dim=1)
    return r.mul(LUMA[0]).add_(g, alpha=LUMA[1]).add_(b, alpha=LUMA[2]).unsqueeze(1)


def _jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast and saturation, each image in its own order, rounding down after each step.

    Each step blends the image with another: black (brightness), its mean luma (contrast) or its luma
    (saturation): x * f + other * (1 - f), clamped to 0..255. A 1-channel image has no saturation."""
    rgb = x.shape[1] == 3
    for step in range(3):
        which = order[:, step]  # (B,)
        factor = factors.gather(1, which[:, None])[:, 0]  # (B,)
        if rgb:
            luma = _luma(x).floor_()  # (B, 1, H, W)
            mean = luma.mean(dim=(1, 2, 3), keepdim=True)
        else:
            luma, mean = x, x.mean(dim=(1, 2, 3), keepdim=True)
            factor = torch.where(which == SATURATION, torch.ones_like(factor), factor)  # x * 1 + x * 0 = x
        which = which[:, None, None, None]
        other = torch.where(which == BRIGHTNESS, torch.zeros_like(mean),
                            torch.where(which == CONTRAST, mean, luma))  # (B, 1, H, W)
        f = factor[:, None, None, None]
        keep = (1.0 - f.double()).float()  # torchvision's alpha: 1 - f in python floats, then float32
        # x * f + other * (1 - f) as torchvision's mul + add(alpha=) computes it: a product, then one fma
        x = torch.addcmul(x * f, other, keep).clamp_(0.0, 255.0).floor_()
    return x


def _box_mask(draws: FaceDraws, height: int, width: int) -> torch.Tensor:
    """(B, H, W) bool: the pixels each image erases (none where it erases nothing)."""
    top, left, h, w = draws.box.unbind(dim=1)
    rows = torch.arange(height, device=top.device)
    cols = torch.arange(width, device=top.device)
    in_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])  # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])  # (B, W)
    return in_rows[:, :, None] & in_cols[:, None, :] & draws.erase[:, None, None]
