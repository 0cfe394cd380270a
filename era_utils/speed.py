"""How a run uses the hardware: mixed precision, memory layout, torch.compile, fused optimizer kernels.

`fast_path(device)` decides all of them once for a run, and every step reads that one decision: the
loaders (data on the device, the short last batch dropped for the compiled model), the optimizer
(fused kernels), `fit` (autocast, channels_last, compile) and cuDNN's autotuner. `fast=False` is the
classic path: per-image augmentation on CPU workers, fp32, eager, torch's default kernels.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from era_utils.choices import AMP_MODES

__all__ = [
    "AMP_MODES",
    "FastPath",
    "autocast",
    "cpu_has_native_bf16",
    "cpu_kernels_are_avx2",
    "fast_path",
    "grad_scaler",
    "precision_name",
    "resolve_amp",
    "resolve_compile",
]


def cpu_has_native_bf16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """Does this CPU compute bf16 in hardware (x86 avx512_bf16 or AMX-BF16, ARM's BF16 extension)?

    Read from the CPU's flags, never assumed: without them bf16 is emulated, and an Intel Xeon
    trained custom_resnet 2.6x slower under bf16 autocast than in fp32. Not Linux: False. An x86 CPU whose
    kernels are capped below AVX-512 (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA) emulates bf16 too: False.
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):  # x86 "flags", ARM "Features"
            flags.update(line.split(":", 1)[-1].split())
    if flags & {"avx512_bf16", "amx_bf16"}:
        return not _x86_kernels_capped_below_avx512()
    return "bf16" in flags


def _x86_kernels_capped_below_avx512() -> bool:
    """Do the environment's limits keep torch's x86 kernels (ATen's dispatch, oneDNN's) below AVX-512?"""
    aten = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    return aten in ("default", "avx2") or (onednn not in ("", "ALL") and not onednn.startswith(("AVX512", "AVX10")))


def cpu_kernels_are_avx2() -> bool:
    """Do torch's CPU kernels run AVX2 (an x86 CPU without AVX-512, or one capped to AVX2 by ATEN_CPU_CAPABILITY)?"""
    capability = getattr(torch.backends.cpu, "get_cpu_capability", None)  # torch >= 2.1
    return capability is not None and capability() == "AVX2"


def grad_scaler(device_type: str, enabled: bool = True) -> Any:
    """A GradScaler for `device_type` (torch.amp's since torch 2.3, torch.cuda.amp's before)."""
    amp_scaler = getattr(torch.amp, "GradScaler", None)
    if amp_scaler is not None:
        return amp_scaler(device_type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)


def resolve_amp(device: str | torch.device, amp: str = "auto") -> tuple[torch.dtype | None, Any]:
    """Turn amp="auto"|"bf16"|"fp16"|"off" into (autocast dtype or None, GradScaler or None).

    "auto": bf16 on CUDA GPUs that run it natively (compute capability >= 8: A100, L4, H100),
    fp16 + GradScaler on older ones (T4, V100), off on CPU and MPS. bf16 needs no scaler: it has
    fp32's exponent range, so gradients do not underflow.
    """
    device = torch.device(device)
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {list(AMP_MODES)}, got {amp!r}.")
    if amp == "off":
        return None, None
    if amp == "auto":
        if device.type != "cuda":
            return None, None
        index = device.index if device.index is not None else torch.cuda.current_device()
        amp = "bf16" if torch.cuda.get_device_capability(index)[0] >= 8 else "fp16"
    if amp == "bf16":
        return torch.bfloat16, None
    if device.type != "cuda":
        raise ValueError(
            f"amp='fp16' needs a CUDA GPU (it trains with a GradScaler); on {device.type} use "
            "amp='bf16' or amp='off'."
        )
    return torch.float16, grad_scaler("cuda")


def precision_name(amp_dtype: torch.dtype | None) -> str:
    """How a `resolve_amp` dtype trains, in words: "fp32", "bf16 autocast", "fp16 autocast + GradScaler"."""
    return {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + GradScaler"}[amp_dtype]


def autocast(device: torch.device, amp_dtype: torch.dtype | None) -> torch.autocast:
    """torch.autocast for `device` in `amp_dtype`, or a disabled one for fp32."""
    return torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)


def resolve_compile(device: str | torch.device, compile: bool | str = "auto") -> bool | str:
    """Turn compile="auto"|True|False|mode into what fit passes on: False or True/a torch.compile mode.

    "auto": on for CUDA when Triton (inductor's GPU code generator) is installed, off elsewhere:
    on the CPU inductor needs a C++ compiler and gains little for these convolution-bound nets.
    """
    if compile == "auto":
        return torch.device(device).type == "cuda" and importlib.util.find_spec("triton") is not None
    if isinstance(compile, (bool, str)):
        return compile
    raise ValueError(f"compile must be True, False, 'auto' or a torch.compile mode, got {compile!r}.")


@dataclass(frozen=True)
class FastPath:
    """One run's use of the hardware, decided once (see `fast_path`) and read by every step."""

    device: torch.device
    enabled: bool  # False: the classic path
    amp: str  # the mode fit and the LR range test train in ("auto" | "bf16" | "fp16" | "off")
    channels_last: bool  # model and batches in NHWC: tensor cores read it without copies; AVX2 kernels run it faster
    compile: bool | str  # torch.compile of the training pass
    fused: bool | None  # optimizer kernels: None = fused when the parameters are on CUDA, False = torch's default
    drop_last: bool | str  # the training loader's short last batch: "auto" = dropped on CUDA (one compiled shape)
    cudnn_benchmark: bool  # let cuDNN time its kernels once per shape (fixed shapes: worth it)
    loader: str  # "gpu" (augmentation on the device) or "workers" (per image on CPU workers)
    sync_batchnorm: bool = False  # several processes on GPUs: BatchNorm's statistics over all of them

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype `amp` means on this device (None: fp32)."""
        return resolve_amp(self.device, self.amp)[0]

    def describe(self) -> str:
        """One line for the run's log, e.g. "fast path: bf16 autocast, channels_last, torch.compile, fused ..."."""
        parts = [
            precision_name(self.amp_dtype),
            "channels_last" if self.channels_last else "NCHW",
            "torch.compile" if self.compile else "eager",
            "fused optimizer kernels" if self.fused is None and self.device.type == "cuda" else "default optimizer kernels",
        ]
        return f"{'fast' if self.enabled else 'classic'} path: " + ", ".join(parts)

    def apply(self) -> None:
        """Set the process-wide switches this path needs (cuDNN's autotuner)."""
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = self.cudnn_benchmark


def fast_path(device: str | torch.device, enabled: bool = True, amp: str | None = None) -> FastPath:
    """The fast path for `device` (or, with enabled=False, the classic one); `amp` overrides the precision.

    Fast: data on the device; autocast: bf16/fp16 on CUDA ("auto"), bf16 on a CPU that runs it
    natively (`cpu_has_native_bf16`), fp32 on other CPUs and MPS; channels_last on CUDA and, in fp32,
    on a CPU whose torch kernels are AVX2 (`cpu_kernels_are_avx2`; benchmarks/cpu_layout_avx2.md, an AMD
    EPYC capped to AVX2: the previews' training steps 0.96-1.05x, within that machine's noise, their test
    passes 0.99-1.31x; a tester's real 2-core EPYC without AVX-512 trained custom_resnet at 59 images/s
    against 54; with AVX-512 kernels it gained nothing through the S10 preview's fit, fp32 or
    bf16); on CUDA also torch.compile (with Triton), fused optimizer kernels, the short last batch dropped
    and cuDNN autotuning. Classic: per-image augmentation on CPU workers, fp32 unless `amp` says otherwise,
    eager, torch's default kernels.
    """
    device = torch.device(device)
    if amp is None and enabled and device.type == "cpu":
        amp = "bf16" if cpu_has_native_bf16() else "off"
    amp = amp or ("auto" if enabled else "off")
    fp32 = resolve_amp(device, amp)[0] is None  # also refuses an unknown or impossible mode now, not mid-run
    cuda = enabled and device.type == "cuda"
    avx2_fp32 = enabled and device.type == "cpu" and fp32 and cpu_kernels_are_avx2()
    return FastPath(
        device=device,
        enabled=enabled,
        amp=amp,
        channels_last=cuda or avx2_fp32,
        compile=resolve_compile(device, "auto") if enabled else False,
        fused=None if enabled else False,
        drop_last="auto" if enabled else False,
        cudnn_benchmark=cuda,
        loader="gpu" if enabled else "workers",
    )
