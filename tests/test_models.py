"""Every registered model: forward/backward, shapes, embeddings, CAM stages, param counts, registry errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from era_utils.models import create_model, list_models, model_info, register_model

ALL = list_models()
FACE = {n for n in ALL if model_info(n).input_size[-1] >= 128}


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_has_the_contract_models() -> None:
    expected = {"resnet18", "resnet34", "custom_resnet", "s7_lite",
                "face_resnet34", "face_resnet50", "mobilenet_v2", "face_baseline"}
    assert expected <= set(ALL)
    assert ALL == sorted(ALL)


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_natural_size(name: str) -> None:
    """One forward + backward at the model's natural input size (224 px for face models)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    model.train()
    x = torch.randn(2, *model_info(name).input_size)
    logits, emb = model(x, return_embedding=True)
    assert logits.shape == (2, 10)
    assert emb.shape == (2, model.embedding_dim)
    assert torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.tensor([1, 2])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", ALL)
def test_grayscale_embedding_and_cam_stages(name: str) -> None:
    """in_channels=1 at Fashion-MNIST's 28 px; embed() == forward's embedding; CAM stages resolve, shallow to deep."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=1).eval()
    x = torch.randn(2, 1, 28, 28)
    seen: dict[str, tuple[int, ...]] = {}
    assert isinstance(model.cam_stages, tuple) and model.cam_stages
    hooks = [
        model.get_submodule(s).register_forward_hook(lambda m, i, o, s=s: seen.__setitem__(s, tuple(o.shape)))
        for s in model.cam_stages
    ]
    with torch.no_grad():
        logits, emb = model(x, return_embedding=True)
        emb2 = model.embed(x)
    for h in hooks:
        h.remove()
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    assert isinstance(model.embedding_dim, int)
    assert emb2.shape == (2, model.embedding_dim)
    torch.testing.assert_close(emb, emb2)
    # Every stage ran, gives a 4-D map, and the maps never grow going deeper.
    sizes = [seen[s] for s in model.cam_stages]
    assert all(len(s) == 4 and s[0] == 2 for s in sizes)
    assert all(a[-1] >= b[-1] for a, b in zip(sizes, sizes[1:])), sizes


@pytest.mark.parametrize(
    "name, num_classes, expected",
    [
        ("resnet18", 10, 11_173_962),
        ("custom_resnet", 10, 6_573_120),
        ("face_resnet50", 7000, 37_851_032),  # seed 001 reports 37.9M
    ],
)
def test_exact_parameter_counts(name: str, num_classes: int, expected: int) -> None:
    assert _n_params(create_model(name, num_classes=num_classes)) == expected


def test_s7_lite_constraints() -> None:
    model = create_model("s7_lite")
    assert _n_params(model) < 100_000
    assert _n_params(create_model("s7_lite", in_channels=1)) < 100_000
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert any(c.groups == c.in_channels > 1 for c in convs), "needs a depthwise conv"
    assert any(c.dilation[0] > 1 for c in convs), "needs a dilated conv"
    assert any(c.kernel_size == (1, 1) and c.groups == 1 for c in convs), "needs 1x1 convs"
    assert any(c.stride[0] == 2 and c.kernel_size == (3, 3) for c in convs), "needs a strided 3x3"
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) for m in model.modules())
    assert isinstance(model.pool, nn.AdaptiveAvgPool2d)


def test_custom_resnet_is_bias_free_without_softmax() -> None:
    model = create_model("custom_resnet")
    assert model.fc.bias is None
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert not any(isinstance(m, (nn.Softmax, nn.LogSoftmax)) for m in model.modules())


def test_face_models_use_the_imagenet_stem() -> None:
    for name in ("face_resnet34", "face_resnet50"):
        model = create_model(name)
        assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
        assert isinstance(model.maxpool, nn.MaxPool2d)
        assert model_info(name).input_size == (3, 224, 224)
    assert isinstance(create_model("resnet18").maxpool, nn.Identity)  # CIFAR stem: no max-pool


def test_blocks_are_shared_between_cifar_and_face_resnets() -> None:
    cifar, face = create_model("resnet18"), create_model("face_resnet34")
    assert type(cifar.layer1[0]) is type(face.layer1[0])
    # A projection shortcut only where the shape changes.
    assert cifar.layer1[0].downsample is None and cifar.layer2[0].downsample is not None


def test_unknown_name_lists_every_model() -> None:
    with pytest.raises(ValueError) as err:
        create_model("resnet19")
    for name in ALL:
        assert name in str(err.value)
    with pytest.raises(ValueError):
        model_info("nope")


def test_unknown_option_is_a_type_error_naming_the_model() -> None:
    with pytest.raises(TypeError, match="s7_lite.*dropuot"):
        create_model("s7_lite", dropuot=0.1)
    assert create_model("s7_lite", dropout=0.0) is not None  # a real option passes


def test_model_info_and_duplicate_registration() -> None:
    info = model_info("custom_resnet")
    assert info.name == "custom_resnet" and info.input_size == (3, 32, 32) and info.description
    assert "dropout" in info.options
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet18")(lambda num_classes=10, in_channels=3: nn.Identity())


def test_wrong_channel_count_names_the_expected_shape() -> None:
    model = create_model("s7_lite", in_channels=1)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model(torch.randn(2, 3, 32, 32))
