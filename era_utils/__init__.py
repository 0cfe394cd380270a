"""era_utils: the course kit for the computer-vision assignments (S7, S7-lite, S10, HW2P2).

Every step of an assignment is one call: data, augmentation, model, LR range test, One Cycle
training, curves, misclassified gallery, GradCAM, face verification and Kaggle CSVs.

    from era_utils import get_device, set_seed, summary
    from era_utils.plan import plan_run
    from era_utils.steps import load_data, build_loaders, build_model, train
    from era_utils import analysis, plots

Every other public name has one home, its module (`era_utils.engine.fit`,
`era_utils.models.create_model`, ...); the submodules are imported on first use, so
`import era_utils` stays quick.
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
    "analysis", "batches", "checkpoint", "choices", "compare", "data", "engine", "face_augment", "face_loader",
    "face_losses", "files", "gpu_loader", "gradcam", "kaggle", "loaders", "lr_finder", "models", "plan", "plots",
    "recipes", "report", "runner", "schedules", "settings", "speed", "steps", "transforms", "utils", "verification",
)

__all__ = ["get_device", "set_seed", "summary", "__version__", *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"era_utils.{name}")
    raise AttributeError(f"module 'era_utils' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
