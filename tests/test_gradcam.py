"""gradcam: maps point at the evidence, the default layer per registered model, one target per
image, the model's modes and gradients left as they were, overlays in [0, 1]."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from era_utils.gradcam import (
    default_target_layer,
    default_target_layer_name,
    gradcam,
    overlay_cam,
    stage_sizes,
)
from era_utils.models import create_model, list_models, model_info

FACE_TEST_SIZE = 64  # face models at 64x64 in the sweep: 224x224 costs seconds per model on 2 cores


class QuadrantNet(nn.Module):
    """A small CNN for the 4-quadrant task, with CoordConv inputs (Liu et al., 2018).

    A plain GAP network can tell where the patch is only through zero-padding effects at the
    border, which spreads the class evidence over the middle of the image; two coordinate
    channels let each position decide "bright patch here, in quadrant k" locally, so the
    evidence sits on the patch and GradCAM has something definite to find.
    """

    cam_stages = ("block1", "block2", "block3")

    def __init__(self, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        c = width
        self.block1 = nn.Sequential(nn.Conv2d(in_channels + 2, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                                    nn.MaxPool2d(2))  # 16x16
        self.block2 = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                                    nn.MaxPool2d(2))  # 8x8
        self.block3 = nn.Sequential(nn.Conv2d(c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(),
                                    nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU())  # 8x8
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * c, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        yy = torch.linspace(-1, 1, h, device=x.device).view(1, 1, h, 1).expand(b, 1, h, w)
        xx = torch.linspace(-1, 1, w, device=x.device).view(1, 1, 1, w).expand(b, 1, h, w)
        return self.head(self.block3(self.block2(self.block1(torch.cat([x, yy, xx], dim=1)))))


def quadrant_data(n: int, seed: int, channels: int = 1, patch: int = 6):
    """Noise in [0, 0.5] with one bright patch; class = quadrant (0 TL, 1 TR, 2 BL, 3 BR)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, 32, 32, generator=g) * 0.5
    y = torch.randint(0, 4, (n,), generator=g)
    top = torch.randint(0, 16 - patch + 1, (n,), generator=g) + (y // 2) * 16
    left = torch.randint(0, 16 - patch + 1, (n,), generator=g) + (y % 2) * 16
    for i in range(n):
        x[i, :, top[i] : top[i] + patch, left[i] : left[i] + patch] = 1.0
    return (x - 0.3) / 0.3, y, top, left  # normalised like a real pipeline


def trained(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float) -> nn.Module:
    """`model` after `epochs` of Adam on (x, y) in batches of 64."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(64):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model


@pytest.fixture(scope="module")
def quadrant_model():
    torch.manual_seed(0)
    x, y, _, _ = quadrant_data(1024, seed=1)
    model = trained(QuadrantNet(), x, y, epochs=4, lr=3e-3)  # ~1 s on 2 CPU cores
    return model.train()  # left in train mode on purpose: gradcam must not change it


def test_gradcam_points_at_the_patch(quadrant_model):
    x, y, top, left = quadrant_data(64, seed=2)
    with torch.no_grad():
        quadrant_model.eval()
        acc = (quadrant_model(x).argmax(1) == y).float().mean().item()
        quadrant_model.train()
    assert acc >= 0.9, f"the toy model did not learn the task (accuracy {acc:.2f})"
    assert default_target_layer_name(quadrant_model, (1, 32, 32)) == "block3"  # 8x8
    cams = gradcam(quadrant_model, x, targets=y, batch_size=16)
    assert cams.shape == (64, 32, 32) and cams.dtype == np.float32
    assert cams.min() >= 0 and cams.max() <= 1
    assert quadrant_model.training
    slack = 2  # px around the 6x6 patch; an 8x8 map is upsampled 4x
    hits = 0
    for cam, t, l in zip(cams, top.tolist(), left.tolist()):
        py, px = np.unravel_index(cam.argmax(), cam.shape)
        hits += (t - slack <= py <= t + 5 + slack) and (l - slack <= px <= l + 5 + slack)
    assert hits / len(cams) >= 0.8, f"GradCAM peak on the patch for only {hits}/{len(cams)} images"
    # predicted-class maps (targets=None) agree here, as the model is right on these images
    np.testing.assert_allclose(gradcam(quadrant_model, x[:8]), gradcam(quadrant_model, x[:8], targets=y[:8]),
                               atol=1e-5)


def test_one_target_per_image(quadrant_model):
    x, _, _, _ = quadrant_data(4, seed=3)
    targets = torch.tensor([0, 1, 2, 3])
    together = gradcam(quadrant_model, x, target_layer="block2", targets=targets)
    alone = np.concatenate([gradcam(quadrant_model, x[i], "block2", targets=[int(targets[i])]) for i in range(4)])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert together.shape == (4, 32, 32)
    same_image = gradcam(quadrant_model, x[:1].repeat(2, 1, 1, 1), "block2", targets=[0, 3])
    assert not np.allclose(same_image[0], same_image[1])  # each image gets its own target class
    # batched in 3 + 1 gives the same maps; a list of (C, H, W) tensors works too
    np.testing.assert_allclose(gradcam(quadrant_model, list(x), "block2", targets, batch_size=3), together, atol=1e-5)
    same = gradcam(quadrant_model, x, quadrant_model.block2, targets=2)  # one int: that class for all
    np.testing.assert_allclose(same[2], together[2], atol=1e-5)
    with pytest.raises(ValueError, match="one class per image"):
        gradcam(quadrant_model, x, targets=[0, 1])


def test_model_state_left_alone(quadrant_model):
    x, _, _, _ = quadrant_data(4, seed=4)
    model = quadrant_model
    model.block1[1].eval()  # a frozen BatchNorm inside a training model
    grads_before = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    try:
        with torch.no_grad():  # gradcam still gets gradients inside no_grad
            cams = gradcam(model, x)
        with torch.inference_mode():
            x_inf = x.clone()  # an inference tensor, as predict() makes
        assert gradcam(model, x_inf).shape == (4, 32, 32)
        assert cams.shape == (4, 32, 32) and np.isfinite(cams).all()
        assert model.training and not model.block1[1].training and model.block2[1].training
        for p, g in zip(model.parameters(), grads_before):
            assert (p.grad is None and g is None) or torch.equal(p.grad, g)
        model.eval()
        gradcam(model, x)
        assert not model.training
    finally:
        model.train()


def test_errors_a_student_can_act_on(quadrant_model):
    x = torch.randn(2, 3, 16, 16)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    with pytest.raises(ValueError, match="cam_stages.*target_layer"):
        gradcam(plain, x)
    assert gradcam(plain, x, target_layer="0").shape == (2, 16, 16)  # explicit dotted name works
    assert gradcam(plain, x, target_layer=plain[0]).shape == (2, 16, 16)  # and a module
    with pytest.raises(ValueError, match="no submodule 'layer9'"):
        gradcam(quadrant_model, torch.randn(1, 1, 32, 32), target_layer="layer9")
    with pytest.raises(ValueError, match="class indices"):
        gradcam(quadrant_model, torch.randn(1, 1, 32, 32), targets=[7])  # only 4 classes


@pytest.mark.parametrize(
    ("name", "size", "expected"),
    [("resnet18", 32, "layer3"), ("custom_resnet", 32, "layer2"), ("face_resnet50", 224, "layer4")],
)
def test_default_layer_named_in_the_assignments(name, size, expected):
    model = create_model(name, num_classes=10)
    assert default_target_layer_name(model, (3, size, size)) == expected
    assert default_target_layer(model, size) is model.get_submodule(expected)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_has_a_default_layer(name):
    torch.manual_seed(0)
    info = model_info(name)
    size = min(info.input_size[-1], FACE_TEST_SIZE)
    model = create_model(name, num_classes=5, in_channels=1).train()
    layer = default_target_layer_name(model, (1, size, size))
    assert layer in model.cam_stages
    sizes = stage_sizes(model, (1, size, size))
    big = [s for s, (h, w) in sizes.items() if min(h, w) >= 7]
    assert layer == (big[-1] if big else model.cam_stages[0])
    cams = gradcam(model, torch.randn(2, 1, size, size), targets=[0, 4])
    assert cams.shape == (2, size, size) and cams.min() >= 0 and cams.max() <= 1
    assert model.training


def test_overlay_cam():
    rng = np.random.default_rng(0)
    cam = rng.random((8, 8)).astype(np.float32)
    rgb = overlay_cam(rng.random((8, 8, 3)), cam, alpha=0.4)
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.float32 and 0 <= rgb.min() and rgb.max() <= 1
    assert overlay_cam(rng.random((8, 8, 1)), cam).shape == (8, 8, 3)  # grayscale -> RGB
    assert overlay_cam(rng.random((8, 8)) * 3, cam).max() <= 1  # out-of-range image is clipped
    assert overlay_cam(rng.random((16, 16, 3)), cam).shape == (16, 16, 3)  # CAM resized to the image
    hot = np.zeros((8, 8), np.float32)
    hot[0, 0] = 1.0
    red = overlay_cam(np.zeros((8, 8, 3)), hot, alpha=1.0)
    assert red[0, 0, 0] > 0.4 and red[0, 0, 2] < 0.1  # RGB order: jet's hottest colour is red
    with pytest.raises(ValueError, match="alpha"):
        overlay_cam(np.zeros((8, 8, 3)), cam, alpha=1.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gradcam_on_gpu():
    model = create_model("resnet18", num_classes=10).to("cuda").train()
    x = torch.randn(3, 3, 32, 32)  # on the CPU: gradcam moves it to the model's device
    cams = gradcam(model, x, targets=torch.tensor([1, 2, 3]))
    assert cams.shape == (3, 32, 32) and model.training


def pattern_data(n: int, seed: int, size: int = 32, patch: int = 8):
    """Noise in [0, 0.5] with one 8x8 pattern at a random place; class = the pattern (square, ring, plus,
    cross). The evidence is the patch, wherever it is: GradCAM should light it up."""
    p = patch
    square, ring, plus, cross = torch.ones(p, p), torch.ones(p, p), torch.zeros(p, p), torch.zeros(p, p)
    ring[1:-1, 1:-1] = 0
    plus[p // 2 - 1:p // 2 + 1, :] = 1
    plus[:, p // 2 - 1:p // 2 + 1] = 1
    cross[torch.arange(p), torch.arange(p)] = 1
    cross[torch.arange(p), p - 1 - torch.arange(p)] = 1
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g) * 0.5
    y = torch.randint(0, 4, (n,), generator=g)
    top = torch.randint(0, size - p + 1, (n,), generator=g)
    left = torch.randint(0, size - p + 1, (n,), generator=g)
    for i, pattern in enumerate((square, ring, plus, cross)[int(c)] for c in y):
        t, l = int(top[i]), int(left[i])
        x[i, 0, t:t + p, l:l + p] = torch.maximum(x[i, 0, t:t + p, l:l + p], pattern)
    return (x - 0.3) / 0.3, y, top, left


def test_face_resnet_maps_point_at_the_evidence_with_the_recipes_method():
    """HW2P2's face_resnet34 at the stand-in's 32 px: its default layer (layer1, 8x8) with the recipe's
    GradCAM++ peaks on the pattern for nearly every image and leaves no map blank. Measured with this
    set-up on 2 CPU cores (2026-12-06; CPU training is not bit-reproducible, so two runs): GradCAM++ at
    layer1 128 of 128 on the pattern both times, no map blank; plain GradCAM 57 and 93 of 128 (47 maps
    blank in the first); at layer2 (4x4) GradCAM++ 50 of 128, at layer3 (2x2) 3."""
    from era_utils.recipes import get_recipe

    torch.manual_seed(0)
    x, y, _, _ = pattern_data(2048, seed=1)
    model = trained(create_model("face_resnet34", num_classes=4, in_channels=1), x, y, epochs=2, lr=1e-3)  # ~16 s
    x, y, top, left = pattern_data(128, seed=3)
    with torch.no_grad():
        acc = (model.eval()(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.9, f"the face network did not learn the pattern task (accuracy {acc:.2f})"
    method = get_recipe("hw2p2").cam_method
    assert method == "gradcam++" and default_target_layer_name(model, (1, 32, 32)) == "layer1"
    cams = gradcam(model, x, targets=y, method=method)
    slack = 2
    hits = sum((t - slack <= py < t + 8 + slack) and (l - slack <= px < l + 8 + slack)
               for cam, t, l in zip(cams, top.tolist(), left.tolist())
               for py, px in [np.unravel_index(cam.argmax(), cam.shape)])
    assert hits / len(cams) >= 0.9, f"{method} peaked on the pattern for only {hits} of {len(cams)} images"
    assert all(cam.max() > 0 for cam in cams), "a blank heat map"
    with pytest.raises(ValueError, match="method must be one of"):
        gradcam(model, x[:1], method="scorecam")
