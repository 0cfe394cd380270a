"""Several processes, one run: what a run needs from torch.distributed (started by torchrun).

Inside a process group (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK; `init_from_env` joins it:
NCCL on GPUs, gloo on CPUs), `fit` wraps the model in DistributedDataParallel, adds up its metric
sums over the ranks so the History is the global one, and lets rank 0 alone write checkpoints and
call the callbacks (loggers). Each rank trains on its own shard (`shard`) of one order all ranks draw
alike. `launch` starts such a run: `era-utils run RECIPE --nproc N` is torchrun of `era-utils run`.
Outside a process group every function here is the one-process identity.
"""
from __future__ import annotations

import os
import signal
import sys
import warnings
from datetime import timedelta
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed import DistError

__all__ = ["all_reduce_", "broadcast_object", "check_shard", "close", "init_from_env", "is_main", "launch",
           "launch_rank", "launch_world_size", "launched", "local_device", "lost_peer", "rank", "shard",
           "world_size", "wrap_model"]

# How long a rank waits for the others at a collective (the default NCCL wait is 10 minutes): rank 0
# alone draws the figures and verifies after training, which can take minutes, while the others wait.
# A rank that dies does not make the others wait this long: torchrun stops them at once.
WAIT = timedelta(minutes=30)
LOST_PEER_STATUS = 3  # a process's exit status when it stopped because another one of the run died


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def launched() -> bool:
    """Started by torchrun (or `era-utils run --nproc`): the environment names this process's rank."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch_world_size() -> int:
    """How many processes torchrun started for this run (WORLD_SIZE; 1 when not launched by it),
    known before the process group is joined."""
    return int(os.environ["WORLD_SIZE"]) if launched() else 1


def launch_rank() -> int:
    """This process's rank as torchrun set it (RANK; 0 when not launched by it), before joining."""
    return int(os.environ["RANK"]) if launched() else 0


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


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (any picklable value); `obj` itself in one process."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def lost_peer(err: BaseException) -> bool:
    """Did a collective fail because another process of the run is gone? torch raises DistError, or
    (from inside DDP's backward) a RuntimeError of the gloo or NCCL transport."""
    text = str(err)
    return launched() and (isinstance(err, DistError) or "gloo/transport" in text or "NCCL" in text)


def local_device(device: torch.device) -> torch.device:
    """The device this process trains on: under torchrun a CUDA device without an index is the GPU
    of LOCAL_RANK (one GPU per process); any other device as it is."""
    if device.type == "cuda" and device.index is None and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def _die_with_launcher() -> None:
    """Linux: have the kernel stop this process (SIGTERM) when the launcher that started it dies, however it
    dies (kill -9 included): no rank may outlive it, holding memory and the run's folder."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1  # <linux/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() == 1:  # the launcher died before the line above: nobody is left to signal
        os.kill(os.getpid(), signal.SIGTERM)


def init_from_env(device: torch.device) -> bool:
    """Join the process group torchrun describes in the environment (NCCL for CUDA, gloo otherwise);
    False when not launched by torchrun. On CUDA each process takes the GPU of its LOCAL_RANK."""
    if not launched():
        return False
    _die_with_launcher()
    if not _active():
        if device.type == "cuda":
            gpu = local_device(device)
            torch.cuda.set_device(gpu)
            # Naming the GPU binds NCCL to it: without it NCCL guesses it from the rank and warns at
            # every barrier (seen on an H200 under torchrun).
            dist.init_process_group(backend="nccl", timeout=WAIT, device_id=gpu)
        else:
            dist.init_process_group(backend="gloo", timeout=WAIT)
    return True


def close(finished: bool = False) -> None:
    """Leave the process group, if this process joined one. `finished`: the run ended well, so every
    process gets here; they leave together (rank 0 last draws its figures), not one while another
    still holds its connections."""
    if _active():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def wrap_model(model: nn.Module, device: torch.device, sync_batchnorm: bool = False) -> nn.Module:
    """The model DDP trains in a process group (BatchNorm made SyncBatchNorm on request), else itself."""
    if world_size() == 1:
        return model
    if sync_batchnorm:
        if device.type != "cuda":  # torch's SyncBatchNorm runs on CUDA only
            raise ValueError("sync_batchnorm needs CUDA GPUs (torch's SyncBatchNorm has no CPU kernel): on the CPU "
                             "train without it (each rank then keeps its own BatchNorm statistics)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if any(1 in p.shape[1:] for p in model.parameters()):
        # A weight with a size-1 dimension (the first conv of 1-channel Fashion-MNIST) gets gradients
        # whose stride on that dimension differs from its bucket's; the values are laid out alike, but
        # DDP warns "Grad strides do not match bucket view strides" at every run.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def check_shard(pair: Sequence[int]) -> tuple[int, int]:
    """A loader's `shard=(rank, ranks)`, checked: 0 <= rank < ranks."""
    rank, ranks = (int(v) for v in pair)
    if not 0 <= rank < ranks:
        raise ValueError(f"shard must be (rank, ranks) with 0 <= rank < ranks, got {tuple(pair)}")
    return rank, ranks


def shard(order: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank `rank`'s share of `order` (N,), one epoch's order that every rank drew alike: positions
    rank, rank + world, ..., after repeating the first few to a multiple of `world` (as torch's
    DistributedSampler does), so every rank takes the same number of items and no rank's last
    step waits for a batch that never comes. Together the shards cover every item."""
    if world == 1:
        return order
    total = -(-len(order) // world) * world
    if total > len(order):  # N < world repeats the whole order as often as it takes: no shard is empty
        order = order.repeat(-(-total // len(order)))[:total]
    return order[rank::world]


def launch(nproc: int, argv: Sequence[str], *, cpu: bool) -> int:
    """Run `era-utils ARGV` as `nproc` processes under torch's launcher (torchrun, on this machine)
    and return an exit status; a process that fails stops the others, and the failure is named.
    `cpu`: processes on the CPU share its cores (each gets its share of threads, not torch's one)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if "OMP_NUM_THREADS" not in os.environ:  # torchrun's default is one thread and a warning
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc) if cpu else 1)
    args = parse_args(["--standalone", "--nnodes", "1", "--nproc-per-node", str(nproc), "--max-restarts", "0",
                       "-m", "era_utils"])
    args.training_script_args = list(argv)  # set, not parsed: torchrun's parser would take --nproc as its own
    try:
        run(args)
    except ChildFailedError as err:
        # Processes torchrun stopped (SIGTERM) or that lost the others are not the cause: name the rest.
        causes = {r: f for r, f in err.failures.items()
                  if f.exitcode != LOST_PEER_STATUS and f.signal_name() != "SIGTERM"} or err.failures
        lines = [f"process {r} of {nproc} " + (f"was killed ({f.signal_name()})" if f.exitcode < 0
                                              else f"exited with status {f.exitcode}")
                 for r, f in sorted(causes.items())]
        print(f"era-utils: error: the {nproc}-process run stopped: {'; '.join(lines)} (a message it left is "
              "above), and torchrun stopped the others. A checkpoint the run saved is kept: run the same command "
              "with --resume to carry on from it.", file=sys.stderr)
        return 2 if all(f.exitcode == 2 for f in err.failures.values()) else 1
    return 0
