"""era_utils: the course kit for the computer-vision assignments (S7, S7-lite, S10, HW2P2).

Every step of an assignment is one call: data, augmentation, model, LR range test, One Cycle
training, curves, misclassified gallery, GradCAM, face verification and Kaggle CSVs.

    from era_utils import create_model, fit, find_lr, get_device, set_seed
    from era_utils import plots, analysis, gradcam, verification

Submodules and the names below are imported on first use, so `import era_utils` stays quick.
"""
from __future__ import annotations

import importlib
import os
from typing import Any

# albumentations checks PyPI for a newer release on import; Colab and CI need no such call.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# Eager on purpose: the module era_utils.summary shares its name with the function, and importing
# the function here keeps `era_utils.summary(model, ...)` callable whatever is imported later.
from era_utils.summary import summary  # noqa: E402
from era_utils.utils import get_device, set_seed  # noqa: E402

__version__ = "0.1.0"

_SUBMODULES = (
    "analysis", "data", "engine", "gpu_loader", "gradcam", "lr_finder", "models", "plots",
    "recipes", "runner", "schedules", "transforms", "verification",
)
# Public name -> module that defines it (imported lazily by __getattr__).
_NAMES = {
    "create_model": "era_utils.models", "list_models": "era_utils.models",
    "load_dataset": "era_utils.data", "dataset_stats": "era_utils.data",
    "GPULoader": "era_utils.gpu_loader", "make_loader": "era_utils.transforms",
    "S7_AUGMENT": "era_utils.transforms", "S10_AUGMENT": "era_utils.transforms",
    "fit": "era_utils.engine", "History": "era_utils.engine",
    "make_optimizer": "era_utils.schedules", "one_cycle": "era_utils.schedules",
    "cosine_warm_restarts": "era_utils.schedules", "find_lr": "era_utils.lr_finder",
    "get_misclassified": "era_utils.analysis", "get_recipe": "era_utils.recipes",
    "run_recipe": "era_utils.runner",
}

__all__ = ["get_device", "set_seed", "summary", "__version__", *_SUBMODULES, *_NAMES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"era_utils.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'era_utils' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
