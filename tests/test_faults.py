"""Nothing lost, round 2: run folders shared by two runs or with the user, killed and resumed runs,
Ctrl-C, a full disk, bad face data and pairs files, and the messages instead of tracebacks."""
from __future__ import annotations

import errno
import io
import json
import os
import re
import subprocess
import sys

import pytest

from era_utils import cli, files, folder_lock, steps
from era_utils import plan as plan_module
from era_utils.data import FASHION_MNIST_SYSTEM_DIR
from era_utils.folder_lock import FolderInUseError

HOLD = ("import sys, time\nfrom era_utils.folder_lock import hold\nhold(sys.argv[1], 'era-utils run s10 --out RUN')\n"
        "print('held', flush=True)\ntime.sleep(120)\n")


def test_a_second_run_into_a_folder_in_use_is_refused_naming_the_first(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(FolderInUseError, match=rf"in use by another run: process {holder.pid} on .*era-utils run s10"):
            steps.start(plan_module.plan_run("s10", size="quick", out=out, verbose=False))
        assert cli.main(["run", "s10", "--quick", "--out", str(out)]) == 2
        assert "--out" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    # Killed: the operating system released its lock, and the next run takes the folder over.
    stale = folder_lock.hold(out)
    assert stale["pid"] == holder.pid
    folder_lock.release(out)
    assert folder_lock.hold(out) is None  # released cleanly: nothing stale
    folder_lock.release(out)


def test_only_the_kits_own_leftovers_are_removed(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".notes.tmp").write_text("the user's")
    (out / ".draft.ipynb.abc.tmp").write_text("an editor's")
    (out / ".metrics.json.k3j2_x.era_utils.tmp").write_text('{"half": ')
    plan = plan_module.plan_run("s10", size="quick", out=out, verbose=False)
    steps.start(plan)
    folder_lock.release(out)
    assert sorted(p.name for p in out.iterdir()) == [".draft.ipynb.abc.tmp", ".era_utils.lock", ".notes.tmp"]


def test_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = files.write_json(tmp_path / "metrics.json", {"a": 1})
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)  # was 0o600 whatever the umask (mkstemp)


def test_a_full_disk_says_where_and_keeps_what_was_written(tmp_path, monkeypatch):
    path = files.write_json(tmp_path / "metrics.json", {"kept": True})

    class Full(io.StringIO):
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    real_fdopen = os.fdopen
    monkeypatch.setattr(files.os, "fdopen", lambda fd, *a, **k: (os.close(fd), Full())[1])
    with pytest.raises(files.NoSpaceError, match=rf"{tmp_path} is full \(\d+ MiB free\) while writing metrics.json"):
        files.write_json(path, {"kept": False})
    monkeypatch.setattr(files.os, "fdopen", real_fdopen)
    assert json.loads(path.read_text()) == {"kept": True}
    assert not list(tmp_path.glob(f"*{files.TEMP_SUFFIX}"))
    assert files.NoSpaceError in cli.USER_ERRORS  # the command prints the message, no traceback


def _s10_quick(out, resume=False):
    return plan_module.plan_run("s10", size="quick", epochs=2, out=out, resume=resume, verbose=False, amp="off")


def _killed_in_epoch(monkeypatch, epoch: int):
    """Make era-utils run's training die (KeyboardInterrupt, a session that died) when epoch `epoch`'s
    evaluation starts."""
    from fake_data import DiesInEpoch

    from era_utils import runner

    real = runner.train
    monkeypatch.setattr(runner, "train", lambda plan, model, tr, te, *a, **k: real(plan, model, tr, DiesInEpoch(te, epoch),
                                                                                   *a, **k))
    return real


@pytest.mark.skipif(not FASHION_MNIST_SYSTEM_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_a_resumed_run_reports_what_the_whole_run_did(tmp_path, monkeypatch):
    from era_utils import runner

    monkeypatch.setattr(steps, "CHECKPOINT_INTERVAL_S", 3600.0)  # only the first and last epochs are saved
    out = tmp_path / "s10"
    real = _killed_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        runner.run_recipe(_s10_quick(out))
    monkeypatch.setattr(runner, "train", real)
    metrics = runner.run_recipe(_s10_quick(out, resume=True))
    assert metrics["resumed_after_epochs"] == 1  # the first epoch's checkpoint, written whatever the interval
    assert metrics["lr_finder"] is not None and metrics["lr_finder"]["num_iter"] == 30
    assert {"lr_finder.png", "lr_finder.json"} <= set(metrics["files"])
    history = json.loads((out / "history.json").read_text())
    assert metrics["train_seconds"] >= round(sum(history["epoch_times"]) - 0.1, 1)  # both epochs, not the last alone
    failed = [c["requirement"] for c in metrics["checks"] if c["status"] == "fail"]
    assert failed == []  # "LR range test" and "lr_finder.png" failed here before


@pytest.mark.skipif(not FASHION_MNIST_SYSTEM_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_a_run_killed_before_its_first_checkpoint_resumes_as_the_unbroken_run(tmp_path, monkeypatch):
    from era_utils import runner

    unbroken = runner.run_recipe(_s10_quick(tmp_path / "a"))
    real = _killed_in_epoch(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        runner.run_recipe(_s10_quick(tmp_path / "b"))
    assert (tmp_path / "b" / "run_state.json").is_file() and not (tmp_path / "b" / "checkpoint.pt").exists()
    monkeypatch.setattr(runner, "train", real)
    resumed = runner.run_recipe(_s10_quick(tmp_path / "b", resume=True))
    assert resumed["lr_finder"] == unbroken["lr_finder"]  # the range test ran again, as in the unbroken run
    for key in ("train_loss", "test_acc", "lrs"):
        assert (json.loads((tmp_path / "a" / "history.json").read_text())[key]
                == json.loads((tmp_path / "b" / "history.json").read_text())[key]), key


class CtrlCAt:
    """A training loader whose epoch `epoch` is interrupted (KeyboardInterrupt) when batch `step` is fetched."""

    def __init__(self, loader, epoch: int, step: int) -> None:
        self.loader, self.epoch, self.step, self.calls = loader, epoch, step, 0

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name):  # state_dict and the rest: the loader's own
        return getattr(self.loader, name)

    def __iter__(self):
        self.calls += 1
        for k, batch in enumerate(self.loader):
            if self.calls == self.epoch and k == self.step:
                raise KeyboardInterrupt
            yield batch


@pytest.mark.skipif(not FASHION_MNIST_SYSTEM_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_ctrl_c_says_where_it_stopped_and_how_to_carry_on(tmp_path, monkeypatch, capsys):
    from era_utils import runner

    real = runner.train
    monkeypatch.setattr(runner, "train", lambda plan, model, tr, *a, **k: real(plan, model, CtrlCAt(tr, 2, 5), *a, **k))
    argv = ["run", "s10", "--quick", "--epochs", "2", "--amp", "off", "--quiet", "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert ("interrupted at epoch 2 of 2, step 5; carry on with --resume (RESUME = True in a notebook): it repeats the "
            "run from the checkpoint of epoch 1") in err
    monkeypatch.setattr(runner, "train", real)
    assert cli.main(argv + ["--resume"]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["resumed_after_epochs"] == 1


def test_hw2p2_passes_resume_only_when_the_run_resumed():
    from era_utils.report import _resume_check

    assert _resume_check({"checkpoint": True, "resumed_after_epochs": 2}).status == "pass"
    assert _resume_check({"checkpoint": True, "resumed_after_epochs": None}).status == "not checked"
    assert _resume_check({"checkpoint": False}).status == "fail"


def test_a_16_bit_png_is_scaled_not_clipped_to_white(tmp_path):
    import numpy as np
    from PIL import Image

    from era_utils.data import load_image

    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(ramp).save(tmp_path / "face.png")  # PIL writes a 16-bit grayscale PNG
    with Image.open(tmp_path / "face.png") as im:
        assert im.mode.startswith("I")  # what PIL makes of it: convert("RGB") would clip it
    img = load_image(tmp_path / "face.png")
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[..., 0], np.rint(ramp / 257.0).astype(np.uint8))
    assert (img == 255).mean() < 0.01  # was 99.8% white


def test_duplicate_pairs_are_dropped_with_a_warning_naming_them(tmp_path):
    from era_utils.data import read_pairs

    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "dev.txt").write_text("a.jpg b.jpg 1\nb.jpg c.jpg 0\na.jpg b.jpg 1\na.jpg b.jpg 1\n")
    with pytest.warns(UserWarning, match=r"2 pair\(s\) listed more than once were dropped \(the first: line 3, "
                                         r"'a.jpg b.jpg', as on line 1\)"):
        pairs = read_pairs(tmp_path / "dev.txt")
    assert [p.pair_id for p in pairs] == ["a.jpg b.jpg", "b.jpg c.jpg"]
    (tmp_path / "bad.txt").write_text("a.jpg b.jpg 1\na.jpg b.jpg 0\n")
    with pytest.raises(ValueError, match="labelled 0 here and 1 on line 1"):
        read_pairs(tmp_path / "bad.txt")


def test_a_second_train_on_a_used_optimizer_is_refused(tmp_path):
    from fake_data import write_fashion_mnist

    from era_utils.recipes import get_recipe

    root = write_fashion_mnist(tmp_path / "data", n_train=120, n_test=40)
    for name in ("hw2p2", "s10"):  # cosine restarts, and One Cycle (which failed in torch the second time)
        recipe = get_recipe(name).override(model="face_baseline" if name == "hw2p2" else "custom_resnet", epochs=1,
                                           batch_size=16, lr=0.01)
        plan = plan_module.plan_run(recipe, dataset="fashion_mnist", data_dir=str(root), device="cpu", amp="off",
                              num_workers=0, out=tmp_path / name, verbose=False, checkpoints=False)
        steps.start(plan)
        data = steps.load_data(plan)
        train_loader, test_loader = steps.build_loaders(plan, data)
        model = steps.build_model(plan, data)
        optimizer, scheduler = steps.optimizer_and_schedule(plan, model, train_loader)
        steps.train(plan, model, train_loader, test_loader, optimizer, scheduler, callbacks=[])
        with pytest.raises(ValueError, match=r"already took \d+ step\(s\) of its schedule.*optimizer_and_schedule"):
            steps.train(plan, model, train_loader, test_loader, optimizer, scheduler, callbacks=[])
        optimizer, scheduler = steps.optimizer_and_schedule(plan, model, train_loader)  # built anew: trains again
        assert steps.train(plan, model, train_loader, test_loader, optimizer, scheduler, callbacks=[]).epochs == 1
        folder_lock.release(plan.out)


@pytest.fixture()
def faces_with_pairs(tmp_path):
    from fake_data import make_pairs, write_face_folders, write_pairs

    faces = write_face_folders(tmp_path / "faces", n_identities=3, n_train=2, n_dev=3, n_test=4)
    dev = write_pairs(tmp_path / "faces" / "dev_pairs.txt", make_pairs(faces, "dev", n=6))
    test = write_pairs(tmp_path / "faces" / "test_pairs.txt", [(a, b) for a, b, _ in make_pairs(faces, "test", n=4)],
                       labelled=False)
    return faces, dev, test


@pytest.mark.parametrize("case, message", [
    ("no dev", re.escape("needs --dev-pairs (the labelled pairs file ('a b label' per line); DEV_PAIRS in a notebook)")),
    ("swapped", "--dev-pairs .*test_pairs.txt holds unlabelled pairs, where --dev-pairs takes the labelled pairs "
                "file .*: are --dev-pairs and --test-pairs swapped\\?"),
    ("two columns in dev", "--dev-pairs .*dev_pairs.txt: line 3: 2 columns, expected 3"),
    ("all same", "--dev-pairs .*: every pair is labelled 1; its ROC AUC and EER need both"),
    ("spaces", "--test-pairs .*: line 5: 3 columns, expected 2 .*a file name with a space in it reads as two columns"),
    ("missing image", "--dev-pairs .*: 1 of .* images are missing"),
])
def test_pairs_files_are_checked_in_the_plan_before_any_work(faces_with_pairs, tmp_path, case, message):
    faces, dev, test = faces_with_pairs
    lines = dev.read_text().splitlines()
    kw = {"dev_pairs": str(dev), "test_pairs": str(test)}
    if case == "no dev":
        kw["dev_pairs"] = None
    elif case == "swapped":
        kw = {"dev_pairs": str(test), "test_pairs": str(dev)}
    elif case == "two columns in dev":
        dev.write_text("\n".join(lines[:2] + [" ".join(lines[2].split()[:2])]) + "\n")
    elif case == "all same":
        dev.write_text("\n".join(line for line in lines if line.endswith(" 1")) + "\n")
    elif case == "spaces":
        test.write_text(test.read_text() + "dev/id_000/my face.jpg dev/id_001/x.jpg\n")
    elif case == "missing image":
        dev.write_text(dev.read_text() + "dev/id_000/gone.jpg " + lines[0].split()[1] + " 1\n")
    recipe = get_recipe_for_faces()
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        plan_module.plan_run(recipe, dataset="faces", data_dir=str(faces.root), device="cpu", out=tmp_path / "run", **kw)
    assert not (tmp_path / "run").exists()  # refused before anything was made


def get_recipe_for_faces():
    from era_utils.recipes import get_recipe

    return get_recipe("hw2p2").override(model="face_baseline", epochs=1, batch_size=4, lr=0.01)


def test_a_pairs_file_in_the_other_unicode_form_finds_its_images(tmp_path):
    import unicodedata

    from era_utils.data import read_pairs

    nfd = unicodedata.normalize("NFD", "José.jpg")
    (tmp_path / nfd).write_bytes(b"")  # unzipped on a Mac: decomposed
    (tmp_path / "b.jpg").write_bytes(b"")
    (tmp_path / "pairs.txt").write_text(unicodedata.normalize("NFC", "José.jpg") + " b.jpg 1\n", encoding="utf-8")
    pair = read_pairs(tmp_path / "pairs.txt")[0]
    assert pair.a == tmp_path / nfd and pair.a.is_file() and pair.pair_id == unicodedata.normalize("NFC", "José.jpg b.jpg")


def test_bad_face_files_are_skipped_or_named_with_how_to_find_the_others(faces_with_pairs, tmp_path, capsys):
    from era_utils.data import FaceFolder

    faces, dev, test = faces_with_pairs
    train = faces.root / "train"
    (train / "id_000" / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 Mac OS X resource fork")  # AppleDouble
    os.symlink("loop.jpg", train / "id_001" / "loop.jpg")  # a link to itself
    with pytest.warns(UserWarning, match="loop.jpg skipped: it cannot be opened"):
        folder = FaceFolder(faces.root, "train")
    assert not any(p.name in ("._a.jpg", "loop.jpg") for p, _ in folder.samples)
    (train / "id_002" / "empty.jpg").write_bytes(b"")
    argv = ["run", "hw2p2", "--dataset", "faces", "--data-dir", str(faces.root), "--dev-pairs", str(dev),
            "--test-pairs", str(test), "--epochs", "1", "--batch-size", "4", "--workers", "0", "--device", "cpu",
            "--loader", "workers", "--quiet", "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "cannot read image" in err and "empty.jpg" in err
    assert "era-utils check-images FOLDER lists every such file" in err
    assert cli.main(["check-images", str(faces.root)]) == 1
    out = capsys.readouterr().out
    assert "empty.jpg" in out and "loop.jpg" in out and "._a.jpg" not in out and "2 image(s) under" in out


def test_an_error_from_a_dataloader_worker_is_shown_as_its_message():
    wrapped = ValueError("Caught BadImageError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                         "call last):\n  File \"x.py\", line 1, in f\nBadImageError: cannot read image a.jpg: empty\n")
    assert cli._message(wrapped) == "cannot read image a.jpg: empty"
    assert cli._message(ValueError("plain")) == "plain"


def test_a_decompression_bomb_is_named_not_a_traceback(tmp_path, monkeypatch):
    from PIL import Image

    from era_utils.data import load_image
    from era_utils.errors import BadImageError

    Image.new("RGB", (64, 64)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 is then over twice the limit: PIL refuses it
    with pytest.raises(BadImageError, match="huge.png: DecompressionBombError"):
        load_image(tmp_path / "huge.png")
    assert BadImageError in cli.USER_ERRORS


def test_more_processes_than_cores_are_refused_before_starting(tmp_path, capsys):
    cores = len(os.sched_getaffinity(0))
    n = 64 if cores < 64 else 2 * cores  # the tester's 64 on 2 cores ran the machine out of memory
    assert cli.main(["run", "s10", "--quick", "--nproc", str(n), "--batch-size", str(n), "--device", "cpu",
                     "--out", str(tmp_path / "run")]) == 2
    assert f"{n} processes on a CPU with {cores} core(s) available: each process needs a core" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # an exited process nobody has reaped yet is gone too


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
def test_killing_the_launcher_takes_its_processes_down(tmp_path):
    import signal
    import time

    from test_distributed import _children, training_in_two_processes

    job = training_in_two_processes(tmp_path / "s10")
    try:
        ranks = _children(job.pid)
        assert len(ranks) == 2
        os.kill(job.pid, signal.SIGKILL)  # the launcher, as an out-of-memory killer would
        job.wait()
        deadline = time.monotonic() + 60
        while any(_alive(pid) for pid in ranks) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in ranks), "a process outlived its launcher"
    finally:
        for pid in _children(job.pid):
            os.kill(pid, signal.SIGKILL)
        if job.poll() is None:
            job.kill()


def test_resume_messages_name_the_kit_and_accept_settings_newer_than_the_checkpoint(tmp_path):
    from era_utils.checkpoint import check_settings, kit_version

    plan = plan_module.plan_run("hw2p2", size="quick", verbose=False)
    now = plan.checkpoint_settings()
    older = {k: v for k, v in now.items() if k not in ("loss", "margin", "margin_scale", "center_weight", "cam_method")}
    check_settings({"extra": {"settings": older}, "kit": "era_utils 0.1.0 (71b77f9)"}, now, "c.pt")  # resumes
    arcface = plan_module.plan_run("hw2p2", size="quick", loss="arcface", verbose=False).checkpoint_settings()
    with pytest.raises(ValueError, match=r"loss: '\(not set\)' in the checkpoint, 'arcface' now.*written by era_utils "
                                         r"0.1.0 \(71b77f9\), and this is era_utils"):
        check_settings({"extra": {"settings": older}, "kit": "era_utils 0.1.0 (71b77f9)"}, arcface, "c.pt")
    with pytest.raises(ValueError, match="the options that differ, as they were"):
        check_settings({"extra": {"settings": now}, "kit": kit_version()}, arcface, "c.pt")


def test_a_file_that_is_no_kit_checkpoint_is_not_read_with_more_trust(tmp_path):
    import torch

    from era_utils.checkpoint import read_checkpoint

    torch.save({"format": object()}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="is not a checkpoint era_utils wrote") as err:
        read_checkpoint(tmp_path / "other.pt")
    assert "weights_only=False" not in str(err.value)


@pytest.mark.parametrize("argv, message", [
    (["--workers", "-1"], "argument --workers: expected a whole number, 0 or more, got -1"),
    (["--seed", "-1"], "argument --seed: expected a whole number, 0 or more, got -1"),
    (["--seed", str(2**32)], f"argument --seed: expected a seed from 0 to {2**32 - 1}"),
])
def test_bad_numbers_name_their_option(argv, message, capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "s10", "--quick", *argv])
    err = capsys.readouterr().err
    assert message in err and "recipe 's10'" not in err


def test_bad_numbers_from_python_name_the_setting_and_its_option():
    with pytest.raises(ValueError, match=r"num_workers \(--workers, NUM_WORKERS in a notebook\) must be a whole number"):
        plan_module.plan_run("s10", size="quick", num_workers=-1)
    with pytest.raises(ValueError, match=r"seed \(--seed\) must be a whole number from 0 to"):
        plan_module.plan_run("s10", size="quick", seed=-1)


def test_a_float64_model_is_refused_with_the_fix():
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from era_utils.engine import fit
    from era_utils.speed import fast_path

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).double()
    data = DataLoader(TensorDataset(torch.randn(8, 1, 2, 2), torch.randint(0, 2, (8,))), batch_size=4)
    with pytest.raises(ValueError, match=r"parameters are float64.*model.float\(\)"):
        fit(model, data, None, torch.optim.SGD(model.parameters(), lr=0.1), 1, verbose=False,
            path=fast_path("cpu", amp="off"))


def test_captions_and_numbers_come_from_the_run(tmp_path, monkeypatch):
    """The curves' note names the recipe's own augmentation (HW2P2: flip, rotation, ..., not S10's crops and
    CutOut), and metrics.json holds no float noise (86.61999999999999)."""
    from fake_data import write_fashion_mnist

    from era_utils import plots, runner
    from era_utils.recipes import get_recipe

    notes = []
    real = plots.plot_history
    monkeypatch.setattr(plots, "plot_history", lambda *a, **k: notes.append(k.get("augmented")) or real(*a, **k))
    root = write_fashion_mnist(tmp_path / "data", n_train=120, n_test=60)
    recipe = get_recipe("hw2p2").override(model="face_baseline", epochs=1, batch_size=16, lr=0.01)
    metrics = runner.run_recipe(plan_module.plan_run(recipe, dataset="fashion_mnist", data_dir=str(root), device="cpu",
                                               amp="off", num_workers=0, out=tmp_path / "run", verbose=False,
                                               verification_pairs=20))
    assert notes == [recipe.augment.describe()] and "rotation" in notes[0] and "CutOut" not in notes[0]
    text = (tmp_path / "run" / "metrics.json").read_text()
    floats: list[str] = []
    json.loads(text, parse_float=lambda raw: floats.append(raw) or float(raw))  # every float as written
    noisy = [raw for raw in floats if len(raw.lstrip("-").split("e")[0].replace(".", "").lstrip("0")) > 10]
    assert floats and not noisy, noisy
    assert metrics["final_test_acc"] == float(f"{metrics['final_test_acc']:.10g}")


def test_a_run_on_a_stand_in_says_so_in_its_title_and_checks():
    from era_utils.models import create_model
    from era_utils.recipes import get_recipe
    from era_utils.report import assignment_checks, report_title

    recipe = get_recipe("s7")  # no target of its own: nothing else said CIFAR-10 went unchecked
    metrics = {"size": "full", "dataset": "fashion_mnist", "dataset_title": "Fashion-MNIST", "params": 11_172_810,
               "input_channels": 1, "misclassified_shown": 10, "gradcam_layer": "layer3", "device": "cpu",
               "device_name": "cpu", "final_test_acc": 93.7}
    checks = assignment_checks(recipe, create_model("resnet18", in_channels=1), {"train_loss": [1.0], "lrs": [0.1]},
                               metrics, ["curves.png"])
    data = next(c for c in checks if c.requirement == "trained and tested on CIFAR-10")
    assert data.status == "not checked" and "Fashion-MNIST stands in" in data.evidence
    assert report_title({"recipe": "s7", "title": recipe.title, "dataset": "fashion_mnist",
                         "dataset_title": "Fashion-MNIST"}) == "S7: ResNet18 on CIFAR-10 with GradCAM (run on Fashion-MNIST)"
    assert report_title({"recipe": "s7", "title": recipe.title, "dataset": "cifar10", "dataset_title": "CIFAR-10"}
                        ) == recipe.title
    hw2p2 = get_recipe("hw2p2").title
    assert report_title({"recipe": "hw2p2", "title": hw2p2, "dataset": "faces", "dataset_title": "HW2P2's faces"}) == hw2p2


def test_the_plan_table_says_what_trains():
    """HW2P2's stand-in trains on the 7 classes kept, not all 8,000 images drawn; One Cycle cycles SGD's
    momentum (Adam's beta1), so the recipe's 0.9 is not what the optimizer shows."""
    hw2p2 = dict(plan_module.plan_run("hw2p2", size="preview", verbose=False).describe())
    assert "Trouser, Shirt, Bag held out for verification" in hw2p2["training images"]
    assert "the other 7 classes' 5,600" in hw2p2["training images"]
    s7 = dict(plan_module.plan_run("s7", size="preview", verbose=False).describe())["optimizer"]
    assert "momentum cycled by One Cycle from 0.95 to 0.85" in s7 and "momentum 0.9" not in s7
    assert "beta1 cycled" in dict(plan_module.plan_run("s10", size="preview", verbose=False).describe())["optimizer"]
    assert "momentum 0.9" in hw2p2["optimizer"]  # cosine restarts leave SGD's momentum as the recipe sets it
