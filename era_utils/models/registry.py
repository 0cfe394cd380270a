"""The model registry: `@register_model` on a builder, `create_model(name)`, `list_models()`.

The timm pattern: each family file decorates its builder functions, importing
`era_utils.models` imports every family file, and a notebook or the CLI only ever says
`create_model("custom_resnet", num_classes=10, in_channels=3)`.

Builders have the signature `builder(num_classes=10, in_channels=3, *, option=default, ...)`.
Their keyword-only options are the model's tunables; `create_model` checks a caller's extra
keywords against them so a typo (`dropuot=0.1`) fails loudly instead of being ignored.
"""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch.nn as nn

__all__ = ["ModelInfo", "register_model", "create_model", "list_models", "model_info"]

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one model."""

    name: str
    family: str  # the family file it lives in, e.g. "resnet", "face_resnet"
    input_size: tuple[int, int, int]  # natural (C, H, W): (3, 32, 32) for CIFAR, (3, 224, 224) for faces
    description: str  # first line of the builder's docstring
    options: dict[str, Any] = field(default_factory=dict)  # keyword-only builder options and their defaults


# The one registry: filled once, at import, by the decorators in the family files (as timm does).
# Nothing else writes to it, so it is configuration rather than run-time state.
_REGISTRY: dict[str, tuple[Builder, ModelInfo]] = {}


def _builder_options(fn: Builder) -> dict[str, Any]:
    """Keyword-only parameters of a builder and their defaults."""
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def register_model(
    name: str | None = None,
    *,
    input_size: tuple[int, int, int] = (3, 32, 32),
    family: str | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator: register `builder(num_classes=10, in_channels=3, *, ...)` under `name` (default: its __name__)."""

    def decorator(fn: Builder) -> Builder:
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"A model named {key!r} is already registered ({_REGISTRY[key][1].family}).")
        params = inspect.signature(fn).parameters
        missing = [p for p in ("num_classes", "in_channels") if p not in params]
        if missing:
            raise TypeError(f"Builder {fn.__qualname__} must accept {missing} (registry signature).")
        doc = inspect.getdoc(fn) or ""
        info = ModelInfo(
            name=key,
            family=family or fn.__module__.rsplit(".", 1)[-1],
            input_size=tuple(input_size),  # type: ignore[arg-type]
            description=doc.splitlines()[0] if doc else "",
            options=_builder_options(fn),
        )
        _REGISTRY[key] = (fn, info)
        return fn

    return decorator


def list_models() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(_REGISTRY)


def _lookup(name: str) -> tuple[Builder, ModelInfo]:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} Valid names: {', '.join(list_models())}.")
    return _REGISTRY[name]


def model_info(name: str) -> ModelInfo:
    """The `ModelInfo` (family, natural input size, description, options) of a registered model."""
    return _lookup(name)[1]


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **kw: Any) -> nn.Module:
    """Build the registered model `name`; `kw` are its options (see `model_info(name).options`)."""
    builder, info = _lookup(name)
    unknown = sorted(set(kw) - set(info.options))
    if unknown:
        valid = ", ".join(f"{k}={v!r}" for k, v in info.options.items()) or "none"
        raise TypeError(f"Model {name!r} got unknown option(s) {unknown}; its options are: {valid}.")
    for what, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        # bool is an int, 2.7 would silently become 2: only whole numbers of at least 1.
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{what} must be a whole number >= 1, got {value!r}.")
    return builder(num_classes=int(num_classes), in_channels=int(in_channels), **kw)
