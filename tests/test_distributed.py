"""Training in several processes (gloo, 2 CPU processes): the kit's loaders give each rank its shard of
one shared order, so at per-rank batch B/2 fit trains as one process at batch B does, with the global
History; only rank 0 writes the checkpoint; the shards cover every image."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from era_utils.data import FASHION_MNIST_SYSTEM_DIR, ImageArrays
from era_utils.distributed import shard
from era_utils.gpu_loader import GPULoader
from era_utils.loaders import EpochSeededSampler, make_loaders
from era_utils.transforms import NO_AUGMENT, AugmentSpec

B = 8  # the one-process batch; each of the two ranks takes B / 2
EPOCHS = 3


def _data() -> tuple[ImageArrays, ImageArrays]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 4, 4, 1), dtype=np.uint8)
    labels = rng.integers(0, 3, 64)
    return ImageArrays(images[:48], labels[:48], ["a", "b", "c"]), ImageArrays(images[48:], labels[48:], ["a", "b", "c"])


def _model() -> nn.Module:
    torch.manual_seed(0)
    # No BatchNorm: on CPUs there is no SyncBatchNorm, and per-rank statistics would differ by design.
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def _loaders(loader: str, rank: int = 0, ranks: int = 1):
    """The kit's loaders as `steps.build_loaders` makes them: this rank's shard of the training set
    at B / ranks, its slice of the test set; deterministic (no augmentation)."""
    train, test = _data()
    return make_loaders(train, test.shard(rank, ranks) if ranks > 1 else test, NO_AUGMENT, (0.5,), (0.25,),
                        B // ranks, loader=loader, device="cpu", seed=3, num_workers=0, shard=(rank, ranks))


def _train(loader, test, out, callbacks=(), epochs=EPOCHS, resume=False, checkpoint=None):
    from era_utils.checkpoint import Checkpointing
    from era_utils.engine import fit
    from era_utils.speed import fast_path

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    # By default a file per rank, to see which ranks write one; resuming, every rank reads rank 0's.
    checkpoint = checkpoint or f"ckpt_rank{dist.get_rank() if dist.is_initialized() else 'single'}.pt"
    history = fit(model, loader, test, opt, epochs, verbose=False, callbacks=callbacks,
                  path=fast_path("cpu", amp="off"),
                  checkpoint=Checkpointing(out / checkpoint, resume=resume))
    return model, history


def _rank_main(rank: int, port: int, out, kind: str = "gpu", mode: str = "train") -> None:
    """One of two ranks: train (`mode` "train"), with a step hook ("step_hooks"), or stopped after
    epoch 2 and resumed from rank 0's checkpoint with new loaders, as a new command would ("resume")."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        callbacks = [_CountSteps(out)] if mode == "step_hooks" else []
        shared = "ckpt_shared.pt" if mode == "resume" else None
        if mode == "resume":
            _train(*_loaders(kind, rank, 2), out, epochs=EPOCHS - 1, checkpoint=shared)
            dist.barrier()  # rank 0 has written the checkpoint
        model, history = _train(*_loaders(kind, rank, 2), out, callbacks, resume=mode == "resume", checkpoint=shared)
        if rank == 0 and mode != "step_hooks":
            torch.save({k: v for k, v in model.state_dict().items()}, out / "weights_ddp.pt")
            (out / "history_ddp.json").write_text(json.dumps(history.to_dict()))
        dist.barrier()  # leave together, as era-utils run does
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


@pytest.mark.parametrize("kind, mode", [("gpu", "train"), ("workers", "train"), ("gpu", "resume")])
def test_two_ranks_at_half_the_batch_train_as_one_process(tmp_path, kind, mode):
    torch.set_num_threads(1)
    single_model, single = _train(*_loaders(kind), tmp_path)
    mp.start_processes(_rank_main, args=(_free_port(), tmp_path, kind, mode), nprocs=2, start_method="spawn",
                       join=True)
    ddp = json.loads((tmp_path / "history_ddp.json").read_text())
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert ddp[key] == pytest.approx(getattr(single, key), rel=1e-4, abs=1e-4), key
    weights = torch.load(tmp_path / "weights_ddp.pt", weights_only=True)
    for name, value in single_model.state_dict().items():
        assert torch.allclose(weights[name].float(), value.float(), atol=1e-5), name
    if mode == "train":
        assert (tmp_path / "ckpt_rank0.pt").is_file() and not (tmp_path / "ckpt_rank1.pt").exists()


def test_step_hooks_on_rank_0_do_not_wait_for_the_other_ranks(tmp_path):
    # A read summed over the ranks at a step only rank 0 asks for would hang both processes.
    ctx = mp.start_processes(_rank_main, args=(_free_port(), tmp_path, "gpu", "step_hooks"), nprocs=2, start_method="spawn",
                             join=False)
    deadline = time.monotonic() + 120
    try:
        while not ctx.join(timeout=5):
            assert time.monotonic() < deadline, "the ranks hung"
    finally:
        for process in ctx.processes:
            if process.is_alive():
                process.kill()
    assert json.loads((tmp_path / "steps_rank0.json").read_text()) == list(range(2, 19, 2))  # 6 steps x 3 epochs
    assert not (tmp_path / "steps_rank1.json").exists()


def test_python_dash_m_is_the_command():
    done = subprocess.run([sys.executable, "-m", "era_utils", "list"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    assert done.returncode == 0 and "s10" in done.stdout


# ----------------------------------------------------------------------------- shards, one process


@pytest.mark.parametrize("n", [1, 5, 6, 7])
def test_shards_are_equal_in_size_and_cover_the_order(n):
    order = torch.randperm(n)
    parts = [shard(order, r, 3) for r in range(3)]
    assert len({len(p) for p in parts}) == 1 and len(parts[0]) == -(-n // 3)
    assert set(torch.cat(parts).tolist()) == set(range(n))
    assert torch.equal(shard(order, 0, 1), order)


def _epoch_labels(loader) -> list[list[int]]:
    return [torch.cat([labels for _, labels in loader]).tolist() for _ in range(3)]


def test_gpu_loader_ranks_share_one_order_and_augment_differently():
    images = np.random.default_rng(0).integers(0, 256, (21, 8, 8, 1), dtype=np.uint8)
    labels = np.arange(21)  # each image's label is its index: the batches say which images they hold
    spec = AugmentSpec(crop_padding=2, flip=True)
    whole = GPULoader(images, labels, 4, spec=NO_AUGMENT, mean=(0.5,), std=(0.25,), seed=5)
    ranks = [GPULoader(images, labels, 2, spec=spec, mean=(0.5,), std=(0.25,), seed=5, shard=(r, 2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 6  # 11 images each (one repeated), batches of 2
    for epoch_whole, epoch0, epoch1 in zip(_epoch_labels(whole), *map(_epoch_labels, ranks)):
        assert len(epoch0) == len(epoch1) == 11
        assert sorted(set(epoch0 + epoch1)) == list(range(21))
        # the one-process loader's order, dealt out in turn (its augmentation draws left aside)
        assert sorted(epoch0 + epoch1) == sorted(epoch_whole + epoch_whole[:1])
    def first_batch(rank):
        loader = GPULoader(images, np.zeros(21), 2, spec=spec, mean=(0.5,), std=(0.25,), seed=5, shard=(rank, 2))
        return next(iter(loader))[0]

    assert torch.equal(first_batch(0), first_batch(0))  # same seed, same rank: the same augmented images
    # one image shown to both ranks (the dataset as one image): their crops and flips differ
    one = np.repeat(images[:1], 21, axis=0)
    x0, x1 = (next(iter(GPULoader(one, np.zeros(21), 8, spec=spec, mean=(0.5,), std=(0.25,), seed=5,
                                  shard=(r, 2))))[0] for r in range(2))
    assert not torch.equal(x0, x1)


def test_gpu_loader_shards_repeat_the_one_process_order_epoch_after_epoch():
    images = np.zeros((12, 4, 4, 1), dtype=np.uint8)
    whole = GPULoader(images, np.arange(12), 4, mean=(0.5,), std=(0.25,), seed=1)
    ranks = [GPULoader(images, np.arange(12), 2, mean=(0.5,), std=(0.25,), seed=1, shard=(r, 2)) for r in range(2)]
    for epoch_whole, epoch0, epoch1 in zip(_epoch_labels(whole), *map(_epoch_labels, ranks)):
        for step in range(3):  # step k of the two ranks is step k of one process
            assert sorted(epoch0[2 * step:2 * step + 2] + epoch1[2 * step:2 * step + 2]) == sorted(
                epoch_whole[4 * step:4 * step + 4])


def test_sampler_ranks_share_one_order_with_their_own_augmentation_seed():
    samplers = [EpochSeededSampler(7, True, torch.Generator().manual_seed(2), shard=(r, 2)) for r in range(2)]
    for _ in range(2):
        (i0, s0), (i1, s1) = (tuple(zip(*iter(sampler))) for sampler in samplers)
        assert len(i0) == len(i1) == len(samplers[0]) == 4
        assert sorted(set(i0 + i1)) == list(range(7))
        assert len(set(s0)) == len(set(s1)) == 1 and s0[0] != s1[0]
    with pytest.raises(ValueError, match="0 <= rank < ranks"):
        EpochSeededSampler(7, True, torch.Generator(), shard=(2, 2))


def test_test_set_slices_cover_it_once():
    _, test = _data()
    parts = [test.shard(r, 3) for r in range(3)]
    assert sum(len(p) for p in parts) == len(test)
    assert sorted(np.concatenate([p.labels for p in parts]).tolist()) == sorted(test.labels.tolist())


# ----------------------------------------------------------------------------- era-utils run --nproc


def _command(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "MPLBACKEND": "Agg"}
    return subprocess.Popen([sys.executable, "-m", "era_utils", "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


@pytest.mark.skipif(not FASHION_MNIST_SYSTEM_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_run_in_two_processes_learns_and_says_so(tmp_path, capsys, monkeypatch):
    from era_utils.cli import run_in_processes

    monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    out = tmp_path / "s10"
    # The notebook's way (run_in_processes: `era-utils run --nproc 2` with plan_run's settings), at
    # half the preview's images and epochs: about 1.5 minutes on 2 cores.
    run_in_processes("s10", 2, size="preview", subset=3000, test_subset=1000, epochs=2, device="cpu", out=out,
                     log="csv")
    printed = capsys.readouterr().out  # the child's output, passed on through sys.stdout
    assert printed.startswith(f"$ era-utils run s10 --preview --epochs 2 --subset 3000 --test-subset 1000 "
                              f"--device cpu --out {out} --log csv --nproc 2\n")  # the options in --help's order
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["batch_size"] == 64 and metrics["batch_size_per_process"] == 32
    assert metrics["final_test_acc"] > 60  # chance is 10%
    assert metrics["test_images"] == 1000 and metrics["predicted_test_acc"] == pytest.approx(
        metrics["final_test_acc"], abs=0.5)  # rank 0's pass over the whole test set agrees with the ranks' sum
    assert "--nproc 2" in metrics["command"] and "in 2 processes" in (out / "report.md").read_text()
    assert len((out / "log.csv").read_text().splitlines()) == 3  # header + 2 epochs: written once, by rank 0
    assert printed.count("done: test accuracy") == 1 and printed.count("LR range test:") == 1  # rank 0 alone


@pytest.mark.skipif(not FASHION_MNIST_SYSTEM_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist")
@pytest.mark.parametrize("loss", ["arcface", "center"])
def test_a_loss_that_reads_embeddings_trains_in_two_processes(tmp_path, loss):
    """The margin head and the class centres live in the model: DistributedDataParallel carries them,
    and the engine asks the wrapped model for its embeddings (its forward takes *args)."""
    out = tmp_path / loss
    job = _command("hw2p2", "--quick", "--loss", loss, "--tta", "flip", "--nproc", "2", "--device", "cpu",
                   "--out", str(out), "--quiet")
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["recipe_settings"]["loss"] == loss
    assert metrics["verification"]["tta"] == "flip" and 0 < metrics["verification"]["auc"] <= 1


def test_a_run_in_processes_that_fails_raises_with_its_message(tmp_path, capsys):
    from era_utils.cli import run_in_processes

    with pytest.raises(RuntimeError, match="exit status 2: its message is above"):
        run_in_processes("s10", 2, size="quick", batch_size=15, device="cpu", out=tmp_path / "run")
    assert "batch size 15 does not split evenly over 2 processes" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # a process that ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _local_rank(pid: int) -> str | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((v.split(b"=", 1)[1].decode() for v in env if v.startswith(b"LOCAL_RANK=")), None)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the processes through /proc (Linux)")
def training_in_two_processes(out: Path) -> subprocess.Popen:
    """`era-utils run s10 --quick --epochs 40 --nproc 2 --device cpu`, returned once its first epoch is logged."""
    job = _command("s10", "--quick", "--epochs", "40", "--nproc", "2", "--device", "cpu", "--out", str(out),
                   "--quiet", "--log", "csv")
    deadline = time.monotonic() + 300
    while not ((out / "log.csv").is_file() and len((out / "log.csv").read_text().splitlines()) >= 2):
        if job.poll() is not None or time.monotonic() > deadline:
            job.kill()
            raise AssertionError("training never started: " + job.communicate()[1][-3000:])
        time.sleep(0.2)
    return job


def test_killing_one_process_stops_the_run_with_a_message(tmp_path):
    out = tmp_path / "s10"
    job = training_in_two_processes(out)
    try:
        victim = next(pid for pid in _children(job.pid) if _local_rank(pid) == "1")
        os.kill(victim, signal.SIGKILL)  # in the middle of training: rank 0 waits on it in a collective
        _, stderr = job.communicate(timeout=120)  # no hang: the launcher stops the other process
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 1
    assert "process 1 of 2 was killed (SIGKILL)" in stderr and "--resume" in stderr


@pytest.mark.parametrize("argv, env, message", [
    (["--nproc", "3"], {}, "batch size 16 does not split evenly over 3 processes"),
    (["--nproc", "2", "--sync-batchnorm"], {}, "SyncBatchNorm has no CPU kernel"),
    (["--sync-batchnorm"], {}, "use it with --nproc N on GPUs"),
    (["--nproc", "2"], {"RANK": "0", "WORLD_SIZE": "3"}, "2 processes asked for (--nproc), but torchrun started 3"),
])
def test_several_processes_that_cannot_work_are_refused_before_starting(argv, env, message, tmp_path, capsys,
                                                                         monkeypatch):
    from era_utils.cli import main

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["run", "s10", "--quick", "--device", "cpu", "--out", str(tmp_path / "run"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing started, nothing written


def test_one_gpu_per_process(monkeypatch):
    from era_utils.plan import _check_devices_for

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="2 processes take one GPU each, but torch sees 1 here: use --nproc 1"):
        _check_devices_for(2, torch.device("cuda"))
    with pytest.raises(ValueError, match="on CUDA GPUs .* or on the CPU"):
        _check_devices_for(2, torch.device("mps"))
    _check_devices_for(len(os.sched_getaffinity(0)), torch.device("cpu"))  # one process per core: fine (more: refused,
    # tests/test_faults.py)


def test_under_torchrun_a_cuda_run_takes_the_gpu_of_its_local_rank(monkeypatch):
    from era_utils.distributed import local_device

    assert local_device(torch.device("cuda")) == torch.device("cuda")  # not launched: as asked
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert local_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert local_device(torch.device("cuda", 0)) == torch.device("cuda", 0)  # an explicit GPU stays
    assert local_device(torch.device("cpu")) == torch.device("cpu")


def test_under_torchrun_nccl_is_bound_to_the_gpu_of_the_local_rank(monkeypatch):
    from era_utils import distributed

    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda gpu: calls.append(("set_device", gpu)))
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls.append(("init", kw)))
    for name, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(name, value)
    assert distributed.init_from_env(torch.device("cuda"))
    gpu = torch.device("cuda", 1)
    assert calls == [("set_device", gpu), ("init", {"backend": "nccl", "timeout": distributed.WAIT, "device_id": gpu})]


def test_a_face_folder_slice_reads_its_own_images(tmp_path):
    from fake_data import write_face_folders

    from era_utils.data import FaceFolder
    from era_utils.loaders import dataset_loader

    write_face_folders(tmp_path, n_identities=3, n_dev=3)
    dev = FaceFolder(tmp_path, "dev")
    parts = [dev.shard(r, 2) for r in range(2)]
    assert [len(p) for p in parts] == [5, 4] and len(dev) == 9  # the whole split is untouched
    assert sorted(parts[0].ids + parts[1].ids) == sorted(dev.ids)
    assert parts[1][0][1] == dev.targets[1] and np.array_equal(parts[1][0][0], dev[1][0])
    labels = torch.cat([y for _, y in dataset_loader(parts[1], 2, shuffle=False, num_workers=0)]).tolist()
    assert labels == dev.targets[1::2]  # a test loader over the slice, in order


def test_the_launcher_checks_the_plan_without_starting_cuda(monkeypatch, tmp_path):
    from era_utils import cli, distributed

    def starts_cuda(*_args):
        raise AssertionError("the launcher asked the GPU something: that starts CUDA in the waiting process")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", starts_cuda)
    monkeypatch.setattr(torch.cuda, "current_device", starts_cuda)
    launched = []
    monkeypatch.setattr(distributed, "launch", lambda n, argv, cpu: launched.append((n, argv, cpu)) or 0)
    argv = ["run", "s10", "--quick", "--nproc", "2", "--device", "cuda", "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 0
    assert launched == [(2, argv, False)]  # every process runs the same command line
    assert not (tmp_path / "run").exists()
