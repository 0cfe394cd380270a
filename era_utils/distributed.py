"""Several processes, one run: what `fit` needs from torch.distributed (started by torchrun).

Inside a process group (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK; `init_from_env` joins it:
NCCL on GPUs, gloo on CPUs), `fit` wraps the model in DistributedDataParallel, adds up its metric
sums over the ranks so the History is the global one, and lets rank 0 alone write checkpoints and
call the callbacks (loggers). Each rank must be given its own shard of the training data.
Outside a process group every function here is the one-process identity.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["all_reduce_", "init_from_env", "is_main", "rank", "world_size", "wrap_model"]


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if _active() else 0


def world_size() -> int:
    """How many processes train together (1 outside a process group)."""
    return dist.get_world_size() if _active() else 1


def is_main() -> bool:
    """Rank 0: the one process that writes files and logs."""
    return rank() == 0


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Combine `tensor` over every rank in place ("sum", "min" or "max"); unchanged in one process."""
    if world_size() > 1:
        dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN,
                                    "max": dist.ReduceOp.MAX}[op])
    return tensor


def init_from_env(device: torch.device) -> bool:
    """Join the process group torchrun describes in the environment (NCCL for CUDA, gloo otherwise);
    False when not launched by torchrun. On CUDA each process takes the GPU of its LOCAL_RANK."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    if not _active():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def wrap_model(model: nn.Module, device: torch.device, sync_batchnorm: bool = False) -> nn.Module:
    """The model DDP trains in a process group (BatchNorm made SyncBatchNorm on request), else itself."""
    if world_size() == 1:
        return model
    if sync_batchnorm:
        if device.type != "cuda":  # torch's SyncBatchNorm runs on CUDA only
            raise ValueError("sync_batchnorm needs CUDA GPUs (torch's SyncBatchNorm has no CPU kernel): on the CPU "
                             "train without it (each rank then keeps its own BatchNorm statistics)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
