"""era_utils: the course kit for the computer-vision assignments (S7, S7-lite, S10, HW2P2).

Every step of an assignment is one call: data, augmentation, model, LR range test, One Cycle
training, curves, misclassified gallery, GradCAM, face verification and Kaggle CSVs.
"""
from __future__ import annotations

import os

# albumentations checks PyPI for a newer release on import; Colab and CI need no such call.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from era_utils.summary import summary  # noqa: E402
from era_utils.utils import get_device, set_seed  # noqa: E402

__version__ = "0.1.0"

__all__ = ["get_device", "set_seed", "summary", "__version__"]
