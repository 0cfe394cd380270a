"""fit under a torch.distributed process group (gloo, 2 CPU processes): at per-rank batch B/2 it trains
as one process at batch B does, with the global History; only rank 0 writes the checkpoint."""
from __future__ import annotations

import json
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

B = 8  # the one-process batch; each of the two ranks takes B / 2


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g))


def _model() -> nn.Module:
    torch.manual_seed(0)
    # No BatchNorm: on CPUs there is no SyncBatchNorm, and per-rank statistics would differ by design.
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _train(loader, test, out, callbacks=()):
    from era_utils.engine import fit

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    history = fit(model, loader, test, opt, 3, device="cpu", verbose=False, callbacks=callbacks,
                  checkpoint_path=out / f"ckpt_rank{dist.get_rank() if dist.is_initialized() else 'single'}.pt")
    return model, history


def _rank_main(rank: int, port: int, out, step_hooks: bool = False) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        data = _data()
        # Rank r takes items r, r + 2, ...: its batch k and the other rank's make the one-process batch k.
        loader = DataLoader(data, batch_size=B // 2, sampler=DistributedSampler(data, shuffle=False))
        test = DataLoader(data, batch_size=B // 2, sampler=DistributedSampler(data, shuffle=False))
        callbacks = [_CountSteps(out)] if step_hooks else []
        model, history = _train(loader, test, out, callbacks)
        if step_hooks:
            return
        if rank == 0:
            torch.save({k: v for k, v in model.state_dict().items()}, out / "weights_ddp.pt")
            (out / "history_ddp.json").write_text(json.dumps(history.to_dict()))
    finally:
        dist.destroy_process_group()


class _CountSteps:
    """A callback asking for every 2nd step; fit calls it on rank 0 only."""

    every_n_steps = 2

    def __init__(self, out):
        self.out, self.steps = out, []

    def on_fit_start(self, info):
        pass

    def on_steps(self, step, values):
        self.steps.append(step)

    def on_epoch_end(self, epoch, history):
        pass

    def on_fit_end(self, history):
        (self.out / f"steps_rank{dist.get_rank()}.json").write_text(json.dumps(self.steps))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_at_half_the_batch_train_as_one_process(tmp_path):
    data = _data()
    torch.set_num_threads(1)
    single_model, single = _train(DataLoader(data, batch_size=B), DataLoader(data, batch_size=B), tmp_path)
    mp.start_processes(_rank_main, args=(_free_port(), tmp_path), nprocs=2, start_method="spawn", join=True)
    ddp = json.loads((tmp_path / "history_ddp.json").read_text())
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert ddp[key] == pytest.approx(getattr(single, key), rel=1e-4, abs=1e-4), key
    weights = torch.load(tmp_path / "weights_ddp.pt", weights_only=True)
    for name, value in single_model.state_dict().items():
        assert torch.allclose(weights[name].float(), value.float(), atol=1e-5), name
    assert (tmp_path / "ckpt_rank0.pt").is_file() and not (tmp_path / "ckpt_rank1.pt").exists()


def test_step_hooks_on_rank_0_do_not_wait_for_the_other_ranks(tmp_path):
    # A read summed over the ranks at a step only rank 0 asks for would hang both processes.
    ctx = mp.start_processes(_rank_main, args=(_free_port(), tmp_path, True), nprocs=2, start_method="spawn",
                             join=False)
    deadline = time.monotonic() + 120
    try:
        while not ctx.join(timeout=5):
            assert time.monotonic() < deadline, "the ranks hung"
    finally:
        for process in ctx.processes:
            if process.is_alive():
                process.kill()
    assert json.loads((tmp_path / "steps_rank0.json").read_text()) == list(range(2, 25, 2))  # 8 steps x 3 epochs
    assert not (tmp_path / "steps_rank1.json").exists()


def test_python_dash_m_is_the_command():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "era_utils", "list"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    assert done.returncode == 0 and "s10" in done.stdout
