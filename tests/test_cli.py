"""The era-utils command and the recipes: argument errors, and a whole (tiny) assignment run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from era_utils.cli import build_parser, main, run_command, shareable_command
from era_utils.data import FASHION_MNIST_SYSTEM_DIR
from era_utils.recipes import RECIPES, get_recipe

needs_fmnist = pytest.mark.skipif(
    not FASHION_MNIST_SYSTEM_DIR.exists(),
    reason=f"Fashion-MNIST not installed at {FASHION_MNIST_SYSTEM_DIR} (apt-get install dataset-fashion-mnist)",
)


pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


def test_recipes_carry_the_assignment_numbers():
    s10 = get_recipe("s10")
    assert (s10.model, s10.epochs, s10.batch_size, s10.optimizer) == ("custom_resnet", 24, 512, "adam")
    assert s10.schedule == "one_cycle" and s10.peak_epoch == 5 and s10.use_lr_finder
    assert (s10.augment.crop_padding, s10.augment.flip, s10.augment.cutout_size) == (4, True, 8)
    s7 = get_recipe("S7")
    assert (s7.model, s7.epochs, s7.augment.cutout_size, s7.augment.flip) == ("resnet18", 20, 16, False)
    hw = get_recipe("hw2p2")
    assert (hw.optimizer, hw.lr, hw.weight_decay, hw.label_smoothing, hw.batch_size) == ("sgd", 0.1, 1e-4, 0.2, 128)
    assert hw.schedule == "cosine_restarts" and hw.restart_epochs == 10
    assert get_recipe("s7-lite").target_accuracy == 87.0


def test_unknown_recipe_and_field_errors_name_the_valid_ones():
    with pytest.raises(ValueError, match="s7, s7_lite, s10, hw2p2"):
        get_recipe("s11")
    with pytest.raises(TypeError, match="valid fields"):
        get_recipe("s10").override(epoch=3)
    assert get_recipe("s10").override(epochs=3).epochs == 3


def test_list_prints_recipes_and_models(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in [*RECIPES, "resnet18", "custom_resnet", "face_resnet50"]:
        assert name in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "s11"], "invalid choice: 's11'"),
        (["run", "s10", "--dataset", "mnist"], "choose from"),
        (["run", "s10", "--epochs", "0"], "positive integer"),
        (["run", "s10", "--loader", "tpu"], "choose from"),
    ],
)
def test_bad_arguments_get_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_data_folder_is_a_message_not_a_trace(tmp_path, capsys):
    code = main(["run", "s10", "--data-dir", str(tmp_path / "nowhere"), "--device", "cpu",
                 "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "era-utils: error:" in err and "nowhere" in err


@needs_fmnist
def test_too_few_steps_for_one_cycle_is_said_before_any_work(tmp_path, capsys):
    out = tmp_path / "tiny"
    code = main(["run", "s10", "--dataset", "fashion_mnist", "--subset", "500", "--epochs", "1",
                 "--device", "cpu", "--out", str(out), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "500 training images at batch 512 give 1 step(s) per epoch x 1 epoch(s)" in err
    assert not (out / "lr_finder.png").exists()  # refused before the LR range test ran


@needs_fmnist
def test_s10_run_writes_every_file_and_resumes(tmp_path, capsys):
    out = tmp_path / "s10"
    argv = ["run", "s10", "--dataset", "fashion_mnist", "--epochs", "2", "--subset", "256",
            "--test-subset", "128", "--batch-size", "64", "--device", "cpu", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    for name in ["samples.png", "augmentations.png", "summary.txt", "lr_finder.png", "curves.png",
                 "lr_schedule.png", "misclassified.png", "top_losses.png", "gradcam.png", "per_class_accuracy.png",
                 "confusion_matrix.png", "history.json", "lr_finder.json", "metrics.json"]:
        assert (out / name).stat().st_size > 0, name
    strict = dict(parse_constant=lambda name: pytest.fail(f"{name} in a results file: not JSON"))
    metrics = json.loads((out / "metrics.json").read_text(), **strict)
    json.loads((out / "history.json").read_text(), **strict)
    assert metrics["predicted_test_acc"] == pytest.approx(metrics["final_test_acc"], abs=1e-4)  # one pass, same model
    report = (out / "report.md").read_text()
    assert "## The assignment, checked" in report and "| LRMIN = FIND, LRMAX = FIND (LR range test) |" in report
    assert metrics["min_lr"] < metrics["max_lr"] and {c["status"] for c in metrics["checks"]} <= {
        "pass", "fail", "not checked"}
    # The README's results table is era-utils compare's, made from the runs' own files, each row linking its report.
    from era_utils.compare import comparison_table, read_run

    row = comparison_table([read_run(out)], links_from=tmp_path).splitlines()[2]
    assert row.startswith("| [s10](s10/report.md) | s10 | Fashion-MNIST (256 / 128) | full, 2 | cross_entropy | 1 | ")
    checked = [c["status"] for c in metrics["checks"]]
    assert f"| {metrics['final_test_acc']:.2f} |" in row and (
        f"| {checked.count('pass')} pass, {checked.count('fail')} fail, " in row) and f"| {metrics['date'][:10]} |" in row
    assert metrics["recipe"] == "s10" and metrics["dataset"] == "fashion_mnist"
    assert metrics["epochs"] == 2 and metrics["train_images"] == 256 and metrics["test_images"] == 128
    assert metrics["loader"] == "gpu" and metrics["device"] == "cpu"
    assert metrics["max_lr"] == metrics["lr_finder"]["suggestion"] > 0
    assert "--subset 256" in metrics["command"]
    assert 0 <= metrics["final_test_acc"] <= 100
    assert 0 < metrics["train_pass_seconds"] <= metrics["train_seconds"]
    # where the time went: the parts add up to the whole run, and the report shows them
    assert list(metrics["seconds"]) == ["setup", "range_test", "training", "analysis"]
    assert sum(metrics["seconds"].values()) == pytest.approx(metrics["wall_seconds"], abs=0.3)
    assert metrics["seconds"]["training"] == pytest.approx(metrics["train_seconds"], abs=0.1)
    assert f"LR range test {metrics['seconds']['range_test']:.0f} s" in report
    history = json.loads((out / "history.json").read_text())
    assert len(history["test_acc"]) == 2 and len(history["lrs"]) == 2 * 4  # 256 / 64 steps per epoch
    # One Cycle's peak is the run's highest LR and equals the LR finder's suggestion.
    assert max(history["lrs"]) == pytest.approx(metrics["max_lr"])

    # The same command again, without --resume, would replace the checkpoint: refused, nothing touched.
    checkpoint = (out / "checkpoint.pt").read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "already holds an earlier run's checkpoint" in err and "--resume" in err and "--out" in err
    assert (out / "checkpoint.pt").read_bytes() == checkpoint
    # A killed save leaves a temporary file: the next run removes it.
    from era_utils.files import TEMP_SUFFIX  # the kit's own temporary names: ".NAME.RANDOM.era_utils.tmp"

    leftover = out / f".checkpoint.pt.x1y2z3{TEMP_SUFFIX}"
    leftover.write_bytes(checkpoint[:100])

    # A finished run resumed: nothing left to train, same history, no second LR range test.
    # Resuming with other settings than the checkpoint's is refused, each difference named, nothing run.
    assert main(argv + ["--resume", "--batch-size", "32", "--seed", "5"]) == 2
    err = capsys.readouterr().err
    assert "batch_size: 64 in the checkpoint, 32 now" in err and "seed: 1 in the checkpoint, 5 now" in err
    assert main(argv + ["--resume", "--lr", "0.01"]) == 2
    assert "use_lr_finder: True in the checkpoint, False now" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == checkpoint

    assert main(argv + ["--resume"]) == 0
    assert not leftover.exists()
    again = json.loads((out / "history.json").read_text())
    assert again["test_acc"] == history["test_acc"] and again["lrs"] == history["lrs"]


@needs_fmnist
def test_hw2p2_runs_on_the_cpu_worker_path(tmp_path):
    out = tmp_path / "hw2p2"
    argv = ["run", "hw2p2", "--dataset", "fashion_mnist", "--epochs", "1", "--subset", "128",
            "--test-subset", "64", "--batch-size", "32", "--workers", "0", "--device", "cpu",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["loader"] == "workers" and metrics["model"] == "face_resnet34"
    assert not (out / "lr_finder.png").exists()  # HW2P2 has no LR range test
    # Verification headless: the ROC, its metrics, and both Kaggle CSVs.
    assert 0 <= metrics["verification"]["auc"] <= 1 and (out / "roc.png").stat().st_size > 0
    from era_utils.kaggle import read_submission

    assert read_submission(out / "verification_submission.csv").kind == "verification"
    assert len(read_submission(out / "classification_submission.csv").ids) == metrics["test_images"]  # 7 classes of 64
    with pytest.raises(SystemExit):
        main(argv[:-1] + ["--loader", "gpu", "--classic", "--quiet"])
    assert main(argv[:-1] + ["--loader", "gpu"]) == 2  # HW2P2's per-image pipeline: a message, not a trace


def test_run_command_is_the_command_line_of_plan_run_settings():
    argv = run_command("hw2p2", size="preview", dataset="faces", data_dir="data/hw 2", download=True, epochs=3,
                       subset=None, num_workers=4, out="runs/x", resume=False, log="csv", processes=2,
                       sync_batchnorm=True, lr=0.01)
    assert argv[:2] == ["era-utils", "run"]
    args = build_parser().parse_args(argv[1:])  # what era-utils makes of it
    assert (args.recipe, args.size, args.dataset, args.data_dir, args.download, args.epochs, args.subset,
            args.num_workers, args.out, args.resume, args.log, args.processes, args.sync_batchnorm, args.lr) == (
        "hw2p2", "preview", "faces", "data/hw 2", True, 3, None, 4, "runs/x", False, "csv", 2, True, 0.01)
    assert run_command("s10") == ["era-utils", "run", "s10"]  # the full recipe, nothing left to say


def test_run_command_refuses_what_era_utils_run_cannot_take():
    with pytest.raises(TypeError, match="no option for 'checkpoints'; it takes: dataset, data_dir"):
        run_command("s10", checkpoints=False)  # speed measurements' setting, from Python only
    with pytest.raises(ValueError, match="size must be 'full', 'preview' or 'quick', got 'huge'"):
        run_command("s10", size="huge")


def test_recorded_commands_name_no_folder_of_the_machine_that_ran():
    """Reports and metrics.json record absolute paths as their option's placeholder, relative ones as typed."""
    argv = ["run", "hw2p2", "--dataset", "faces", "--data-dir", "/content/hw2p2", "--out=/tmp/runs/x",
            "--dev-pairs", "~/pairs/dev.txt", "--test-pairs", "data/test pairs.txt", "--epochs", "3"]
    assert shareable_command(argv) == ("era-utils run hw2p2 --dataset faces --data-dir DATA --out=OUT "
                                       "--dev-pairs DEV_PAIRS --test-pairs 'data/test pairs.txt' --epochs 3")
    assert shareable_command(["run", "s10", "--out", "runs/s10"]) == "era-utils run s10 --out runs/s10"
