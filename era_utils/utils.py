"""Device selection and seeding: the two calls every notebook makes before anything else."""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Return `device` as a torch.device; None or "auto" picks cuda, then mps, then cpu."""
    if device is not None and str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices); `deterministic` also asks cuDNN for repeatable kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        # Repeatable but slower convolutions; worth it for tests and resume checks, not for speed runs.
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
