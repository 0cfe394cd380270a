"""Device selection and seeding (the two calls every notebook makes first), and small helpers: model modes, Colab secrets."""
from __future__ import annotations

import contextlib
import itertools
import os
import platform
import random
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

# The variables that cap the CPU kernels torch uses below what the CPU has (ATen's dispatch, oneDNN's).
CPU_ISA_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Return `device` as a torch.device; None or "auto" picks cuda, then mps, then cpu. A device
    torch does not know, or one this machine does not have, is a ValueError saying what there is."""
    if device is not None and str(device) != "auto":
        try:
            chosen = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device {device!r} is not a device name torch knows: use cuda, cuda:N, mps or cpu "
                             f"(or leave it out to pick the best there is)") from err
        _check_available(chosen)
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _check_available(device: torch.device) -> None:
    """Refuse a device this machine lacks, before any work: a CUDA GPU torch cannot see, or MPS."""
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {str(device)!r} asks for a CUDA GPU, but torch sees none here (torch "
                             f"{torch.__version__}). On Colab choose Runtime > Change runtime type > T4 GPU; "
                             "or run on the CPU (--device cpu, DEVICE = 'cpu' in a notebook).")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {str(device)!r}: this machine has {count} CUDA GPU(s), cuda:0 to "
                             f"cuda:{count - 1}.")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError("device 'mps' asks for Apple's GPU, which this machine does not have: use cpu.")


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); cpu for a model without either."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
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


def device_name(device: str | torch.device | None = None) -> str:
    """A readable name for results and benchmarks: the GPU's name, SMs and memory, or the CPU
    model with the cores this process may use (and the instruction set limits it runs under)."""
    device = get_device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB)"
    if device.type != "cpu":
        return device.type
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:  # not Linux: keep platform's answer
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # A CPU told to use fewer instructions than it has (standing in for one without AVX-512) says so.
    capped = "".join(f"; {name}={os.environ[name]}" for name in CPU_ISA_CAPS if os.environ.get(name))
    return f"{model} ({cores} cores available, cpu{capped})"


@contextlib.contextmanager
def keep_modes(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Restore every submodule's own train/eval flag when the block ends (errors too).

    Per module, not just model.training: a student may have frozen some BatchNorms in eval mode.
    """
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """`model.eval()` for the block, then every submodule's flag as it was (see keep_modes)."""
    with keep_modes(model):
        model.eval()
        yield model


def colab_secret(name: str) -> str | None:
    """A secret from Colab's Secrets panel (the key icon), or None outside Colab or when this notebook
    was not given access: how keys reach the kit without being written in a notebook."""
    try:
        from google.colab import userdata  # only in Colab
    except ImportError:
        return None
    try:
        return userdata.get(name)
    except Exception:  # not set, or access not granted
        return None
