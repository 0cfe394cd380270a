"""Where did the model look? GradCAM maps via pytorch-grad-cam, with a sensible default layer per model.

Grad-CAM (Selvaraju et al., 2017, arXiv:1610.02391) weights a conv layer's feature maps by the
spatially averaged gradient of a class score. The layer decides the resolution: on 32x32 CIFAR
images the last ResNet block is 4x4 (a blob), so the default here is the deepest stage that is
still at least 7 px on its short side (ResNet18 `layer3` and the S10 custom ResNet `layer2`, both
8x8; `layer4` of the 224x224 face ResNets, 7x7). Every registered model lists its stages in
`model.cam_stages` (dotted names for `model.get_submodule`).

pytorch-grad-cam pitfalls handled here: one `ClassifierOutputTarget` per image (a single target
explains image 0 only), the CAM object used as a context manager so its hooks are removed, its
constructor's `model.eval()` undone afterwards, and `show_cam_on_image` given an RGB float image
in [0, 1] with `use_rgb=True`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from era_utils.utils import eval_mode, model_device

__all__ = [
    "MIN_CAM_SIZE",
    "default_target_layer",
    "default_target_layer_name",
    "gradcam",
    "overlay_cam",
    "resolve_layer",
    "stage_sizes",
]

# "gradcam++" (Chattopadhay et al. 2018) weighs a feature map by its positive gradients only. On the face
# ResNets plain GradCAM's weighted maps often come out negative everywhere, which its ReLU turns into a
# blank heat map (tests/test_gradcam.py: a face_resnet34 on a synthetic pattern task).
CAM_METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus}
CAM_NAMES = {"gradcam": "GradCAM", "gradcam++": "GradCAM++"}  # as figures and reports name them
MIN_CAM_SIZE = 7  # px: the smallest feature map (short side) worth showing; 7x7 = ResNet-50 at 224


def _input_shape(model: nn.Module, input_size: int | Sequence[int]) -> tuple[int, int, int]:
    """Any of 32, (32, 32), (3, 32, 32), (1, 3, 32, 32) -> (C, H, W); C from the first conv if absent."""
    size = (int(input_size),) * 2 if isinstance(input_size, int) else tuple(int(s) for s in input_size)
    if len(size) == 4:
        size = size[1:]
    if len(size) == 3:
        return size  # type: ignore[return-value]
    if len(size) != 2:
        raise ValueError(f"input_size must be H, (H, W), (C, H, W) or (B, C, H, W); got {input_size!r}")
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    channels = first_conv.in_channels if first_conv is not None else 3
    return (channels, *size)


def _cam_stages(model: nn.Module) -> tuple[str, ...]:
    stages = tuple(getattr(model, "cam_stages", ()) or ())
    if not stages:
        children = ", ".join(repr(name) for name, _ in model.named_children()) or "none"
        raise ValueError(
            f"{type(model).__name__} has no `cam_stages`, so GradCAM cannot choose a layer for it. "
            f"Pass target_layer= a module (e.g. model.layer3) or its dotted name; this model's "
            f"top-level children are: {children}."
        )
    return stages


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> nn.Module:
    """A module or a dotted name (`"layer3"`, `"layer3.1.conv2"`) -> the module inside `model`."""
    if isinstance(layer, nn.Module):
        return layer
    try:
        return model.get_submodule(layer)
    except AttributeError:
        stages = getattr(model, "cam_stages", None)
        hint = f" Its cam_stages are {tuple(stages)}." if stages else ""
        raise ValueError(
            f"{type(model).__name__} has no submodule {layer!r}.{hint} "
            "Use a dotted name from model.named_modules(), or pass the module itself."
        ) from None


def stage_sizes(model: nn.Module, input_size: int | Sequence[int] = (3, 32, 32)) -> dict[str, tuple[int, int]]:
    """Output (H, W) of every `model.cam_stages` entry for one input of `input_size`, shallow to deep.

    Measured with forward hooks on a dummy zero input (eval mode, no autograd), so it holds for any
    architecture; the model's train/eval modes are left as they were.
    """
    stages = _cam_stages(model)
    shape = _input_shape(model, input_size)
    sizes: dict[str, tuple[int, int]] = {}
    handles = []

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            if out.dim() != 4:
                raise ValueError(f"cam stage {name!r} gives a {out.dim()}-d output; GradCAM needs (B, C, H, W)")
            sizes[name] = (int(out.shape[-2]), int(out.shape[-1]))

        return hook

    for name in stages:
        handles.append(resolve_layer(model, name).register_forward_hook(hook_for(name)))
    try:
        param = next(model.parameters(), None)
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        dummy = torch.zeros((1, *shape), device=model_device(model), dtype=dtype)  # (1, C, H, W)
        with eval_mode(model), torch.no_grad():
            model(dummy)
    finally:
        for h in handles:
            h.remove()
    return {name: sizes[name] for name in stages if name in sizes}


def default_target_layer_name(
    model: nn.Module, input_size: int | Sequence[int] = (3, 32, 32), min_size: int = MIN_CAM_SIZE
) -> str:
    """Dotted name of the deepest `cam_stages` entry whose map is >= `min_size` px on its short side
    for this input size (else the shallowest stage): resnet18@32 -> "layer3", custom_resnet@32 ->
    "layer2", face_resnet50@224 -> "layer4"."""
    sizes = stage_sizes(model, input_size)
    if not sizes:
        raise ValueError(f"None of {type(model).__name__}'s cam_stages ran in forward(); check their names.")
    big_enough = [name for name, (h, w) in sizes.items() if min(h, w) >= min_size]
    return big_enough[-1] if big_enough else next(iter(sizes))


def default_target_layer(
    model: nn.Module, input_size: int | Sequence[int] = (3, 32, 32), min_size: int = MIN_CAM_SIZE
) -> nn.Module:
    """The module `default_target_layer_name` names (what pytorch-grad-cam's `target_layers` takes)."""
    return model.get_submodule(default_target_layer_name(model, input_size, min_size))


def _targets_for(targets, n: int) -> list | None:
    """None (each image's predicted class), an int (that class for all), a sequence/tensor of class
    indices (one per image, e.g. the true labels) or ready-made target callables."""
    if targets is None:
        return None
    if isinstance(targets, (int, np.integer)):
        return [ClassifierOutputTarget(int(targets)) for _ in range(n)]
    if isinstance(targets, torch.Tensor):
        targets = targets.detach().cpu().reshape(-1).tolist()
    elif isinstance(targets, np.ndarray):
        targets = targets.reshape(-1).tolist()
    targets = list(targets)
    if len(targets) != n:
        raise ValueError(f"targets has {len(targets)} entries for {n} images: give one class per image")
    return [t if callable(t) else ClassifierOutputTarget(int(t)) for t in targets]


def gradcam(
    model: nn.Module,
    images: torch.Tensor | Sequence[torch.Tensor],
    target_layer: nn.Module | str | None = None,
    targets: int | Sequence[int] | torch.Tensor | np.ndarray | None = None,
    *,
    batch_size: int = 64,
    method: str = "gradcam",
) -> np.ndarray:
    """GradCAM maps (`method="gradcam++"`: GradCAM++'s) for normalised `images` (N, C, H, W) (or (C, H, W), a list of those, or the
    examples `Predictions.misclassified` returns: their `.input`) -> float32 numpy (N, H, W) in [0, 1].

    `target_layer`: a module or dotted name; None picks `default_target_layer` for this input size.
    `targets`: None explains each image's predicted class; pass the true labels (one per image) to
    explain the true class, or one int for the same class everywhere. Runs on the model's device in
    batches of `batch_size`; the model's train/eval modes and parameter gradients are left as they were.
    """
    if isinstance(images, (list, tuple)):
        # Examples (analysis.Example) carry the normalised tensor the model saw as `.input`.
        images = torch.stack([torch.as_tensor(getattr(im, "input", im)) for im in images])
    x = torch.as_tensor(images)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W) or (C, H, W); got shape {tuple(x.shape)}")
    # clone: tensors made under torch.inference_mode (e.g. by predict) cannot take part in autograd.
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    x = x.detach().clone().to(param.dtype if param is not None else torch.float32)
    n = x.shape[0]
    if n == 0:
        return np.zeros((0, *x.shape[-2:]), dtype=np.float32)

    bad = (~torch.isfinite(x)).flatten(1).any(1).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"images {bad[:10]}{' ...' if len(bad) > 10 else ''} hold NaN or infinite values, "
                         "whose GradCAM maps would be NaN: check how they were normalised (a std of 0?)")
    if method not in CAM_METHODS:
        raise ValueError(f"method must be one of {list(CAM_METHODS)}, got {method!r}")
    layer_name = default_target_layer_name(model, x.shape[1:]) if target_layer is None else target_layer
    layer = resolve_layer(model, layer_name)
    _check_cam_layer(model, layer, layer_name, x[:1])
    cam_targets = _targets_for(targets, n)
    params = list(model.parameters())
    saved_grads = [p.grad for p in params]  # grad-cam zeroes and fills them; give the student's back
    out = []
    try:
        # eval_mode restores every submodule's mode: GradCAM's constructor calls model.eval().
        # enable_grad: a caller inside torch.no_grad() would otherwise get no gradients at all.
        # reshape_transform=clone: an in-place op after the layer (ReLU(inplace=True)) cannot
        # overwrite the stored activations and gradients.
        with eval_mode(model), torch.enable_grad(), CAM_METHODS[method](
            model=model, target_layers=[layer], reshape_transform=torch.Tensor.clone
        ) as cam:
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                batch_targets = None if cam_targets is None else cam_targets[start:stop]
                try:
                    maps = cam(input_tensor=x[start:stop], targets=batch_targets)
                except IndexError as err:
                    # Re-raised as ValueError: grad-cam's __exit__ would print an IndexError and
                    # swallow it, leaving the caller with no maps and no reason.
                    raise ValueError(
                        f"GradCAM target out of range ({err}): targets must be class indices "
                        "below the model's number of outputs"
                    ) from err
                out.append(np.asarray(maps, dtype=np.float32))
    finally:
        for p, g in zip(params, saved_grads):
            p.grad = g
    # (N, H, W); grad-cam scales each map by its own max, an all-zero map stays 0.
    return np.clip(np.concatenate(out), 0.0, 1.0)


def _check_cam_layer(model: nn.Module, layer: nn.Module, name: Any, probe: torch.Tensor) -> None:
    """GradCAM needs a layer inside `model` whose output is a (B, C, H, W) feature map: say so
    before grad-cam fails with an error that names neither (a layer elsewhere, or `fc`)."""
    label = name if isinstance(name, str) else type(layer).__name__
    if not any(m is layer for m in model.modules()):
        raise ValueError(f"GradCAM layer {label} is not part of this {type(model).__name__}: pass one of its "
                         "own modules (e.g. model.layer3) or a dotted name from model.named_modules()")
    shapes: list[tuple[int, ...]] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        shapes.append(tuple(out.shape))

    handle = layer.register_forward_hook(hook)
    try:
        with eval_mode(model), torch.no_grad():
            model(probe.to(model_device(model)))
    finally:
        handle.remove()
    if not shapes or len(shapes[0]) != 4:
        got = f"a {len(shapes[0])}-d output {shapes[0]}" if shapes else "no output (it is not called)"
        stages = getattr(model, "cam_stages", None)
        raise ValueError(f"GradCAM layer {label} gives {got}; GradCAM needs a convolutional feature map "
                         f"(B, C, H, W), so not `fc` or a pooled output"
                         + (f": use one of {tuple(stages)}" if stages else ": use a convolutional stage"))


def overlay_cam(image: np.ndarray | torch.Tensor, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Heat map `cam` (H, W) in [0, 1] over `image` (H, W, C) or (H, W) in [0, 1] -> (H, W, 3) float32
    in [0, 1]; `alpha` is the weight of the heat map (0 = image only, 1 = heat map only)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    img = np.asarray(torch.as_tensor(image).detach().cpu(), dtype=np.float32)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = img.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)  # grayscale -> RGB: show_cam_on_image blends 3 channels
    img = np.clip(img, 0.0, 1.0)
    mask = np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0)
    if mask.shape != img.shape[:2]:
        mask = cv2.resize(mask, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    blended = show_cam_on_image(img, mask, use_rgb=True, image_weight=1.0 - alpha)  # uint8 RGB
    return blended.astype(np.float32) / 255.0
