"""report: the assignment's checklist passes what a run shows, fails what it contradicts, and leaves
"not checked" what it cannot settle; report.md renders it with the run and its figures; --seeds
reports each seed and their spread."""
from __future__ import annotations

import json

import pytest
import torch

from era_utils.models import create_model
from era_utils.recipes import get_recipe
from era_utils.report import assignment_checks, git_commit, render_report

pytestmark = pytest.mark.usefixtures("one_thread")

FIGURES = ["samples.png", "lr_finder.png", "lr_schedule.png", "curves.png", "misclassified.png", "summary.txt",
           "gradcam.png", "per_class_accuracy.png", "history.json"]


def _lrs(recipe, steps: int) -> list[float]:
    """The LR of every step of the recipe's own schedule (what a run's History records)."""
    model = torch.nn.Linear(2, 2)
    optimizer, scheduler = recipe.configure_optimizers(model, steps, max_lr=1e-3, min_lr=1e-4)
    lrs = []
    for _ in range(recipe.epochs * steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def _metrics(**changes) -> dict:
    base = {"size": "full", "dataset": "cifar10", "dataset_title": "CIFAR-10", "final_test_acc": 91.0,
            "best_test_acc": 91.2, "params": 6_573_120, "input_channels": 3, "device": "cuda",
            "device_name": "a GPU", "precision": "bf16 autocast", "max_lr": 1e-3, "misclassified_shown": 10,
            "gradcam_layer": "layer2", "num_classes": 10, "input_size": "3x32x32", "checkpoint": True,
            "lr_finder": {"suggestion": 1e-3, "method": "minimum", "min_lr": 1e-4, "min_method": "descent",
                          "num_iter": 100}}
    return base | changes


def _status(checks, start: str) -> str:
    return next(c.status for c in checks if c.requirement.startswith(start))


def test_a_full_s10_run_passes_its_assignment():
    recipe = get_recipe("s10")
    history = {"train_loss": [1.0] * 24, "lrs": _lrs(recipe, steps=4)}
    checks = assignment_checks(recipe, create_model("custom_resnet"), history, _metrics(), FIGURES)
    statuses = {c.requirement: c.status for c in checks}
    assert set(statuses.values()) == {"pass"}, [c for c in checks if c.status != "pass"]
    assert _status(checks, "One Cycle over 24 epochs, peak at epoch 5") == "pass"
    assert _status(checks, "target: 90%") == "pass"


def test_what_a_run_contradicts_fails():
    recipe = get_recipe("s10")
    lrs = _lrs(recipe, steps=4)
    late = lrs[:]  # the peak moved two epochs late
    peak = late.index(max(late))
    late[peak], late[peak + 8] = late[peak + 8], late[peak]
    history = {"train_loss": [1.0] * 24, "lrs": late}
    checks = assignment_checks(recipe, create_model("custom_resnet"), history, _metrics(final_test_acc=88.0),
                               FIGURES[:-3])
    assert _status(checks, "One Cycle over 24 epochs") == "fail"
    assert _status(checks, "target: 90%") == "fail"  # 88% on CIFAR-10, full run
    assert _status(checks, "misclassified gallery") == "pass"
    assert _status(checks, "LR finder curve") == "pass"
    changed = assignment_checks(recipe.override(batch_size=64), create_model("custom_resnet"), history, _metrics(),
                                FIGURES)
    assert _status(changed, "batch size") == "fail"  # a full run that changes the recipe is not the assignment
    annihilated = {"train_loss": [1.0] * 24, "lrs": lrs[:-1] + [lrs[-1] / 100]}
    checks = assignment_checks(recipe, create_model("custom_resnet"), annihilated, _metrics(), FIGURES)
    assert _status(checks, "no annihilation") == "fail"


def test_a_preview_leaves_the_full_recipe_unchecked_and_says_why():
    recipe = get_recipe("s10").sized("preview")
    history = {"train_loss": [1.0] * recipe.epochs, "lrs": _lrs(recipe, steps=4)}
    metrics = _metrics(size="preview", dataset="fashion_mnist", dataset_title="Fashion-MNIST", params=6_571_968,
                       input_channels=1)
    checks = assignment_checks(recipe, create_model("custom_resnet", in_channels=1), history, metrics, FIGURES)
    assert _status(checks, "target: 90%") == "not checked"
    assert _status(checks, "One Cycle over 24 epochs") == "not checked"
    assert _status(checks, "batch size") == ("pass" if recipe.batch_size == 512 else "not checked")
    assert _status(checks, "model: custom_resnet, 6,573,120") == "pass"  # counted with RGB input
    assert "not checked" not in {c.status for c in checks if "target" not in c.requirement
                                 and "One Cycle" not in c.requirement and "batch" not in c.requirement}


def test_s7_lite_architecture_is_read_off_the_model():
    recipe = get_recipe("s7_lite")
    history = {"train_loss": [1.0] * recipe.epochs, "lrs": _lrs(recipe, steps=2)}
    lite = assignment_checks(recipe, create_model("s7_lite"), history, _metrics(params=94_138), FIGURES)
    assert _status(lite, "under 100,000 parameters") == "pass" and _status(lite, "no max-pool") == "pass"
    assert _status(lite, "depthwise-separable") == "pass"
    big = assignment_checks(recipe, create_model("resnet18"), history, _metrics(params=11_173_962), FIGURES)
    assert _status(big, "under 100,000 parameters") == "fail" and _status(big, "depthwise-separable") == "fail"


def test_report_renders_checks_run_and_only_the_figures_written():
    recipe = get_recipe("s10")
    history = {"train_loss": [1.0] * 24, "lrs": _lrs(recipe, steps=4)}
    metrics = _metrics(title=recipe.title, recipe="s10", model="custom_resnet", epochs=24, train_images=50_000,
                       test_images=10_000, batch_size=512, loader="gpu", train_seconds=30.0, wall_seconds=95.0,
                       command="era-utils run s10", era_utils="0.1.0", torch="2", python="3.11",
                       commit=git_commit(), date="2026-12-01", files=["curves.png", "lr_finder.png"],
                       full_command="era-utils run s10 --download")
    metrics["checks"] = [c.__dict__ for c in assignment_checks(recipe, create_model("custom_resnet"), history,
                                                                metrics, FIGURES)]
    text = render_report(metrics)
    assert text.startswith(f"# {recipe.title}") and "**Test accuracy 91.00%**" in text
    assert "| One Cycle over 24 epochs, peak at epoch 5 |" in text and "| pass |" in text
    assert "![Loss and accuracy per epoch](curves.png)" in text and "gradcam.png)" not in text.split("## Figures")[1]
    assert "training 30 s, whole run 1.6 min" in text and "`era-utils run s10`" in text
    assert "not the assignment's result" not in text  # a full run is the assignment's
    preview = render_report(metrics | {"size": "preview", "size_note": "batch 128 instead of 512."})
    assert "A preview, not the assignment's result." in preview and "`era-utils run s10 --download`" in preview
    assert "batch 128 instead of 512." in preview


def test_git_commit_names_the_checkout():
    text = git_commit()
    assert len(text.split()[0]) >= 7 or "not a git checkout" in text


def test_git_commit_marks_changes_to_the_package_only(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "code.py").write_text("x = 1\n")
    (tmp_path / "results.md").write_text("old\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "one")
    (tmp_path / "results.md").write_text("remade by a run\n")  # a run rewriting results/: the kit is unchanged
    assert "uncommitted" not in git_commit(tmp_path / "pkg")
    (tmp_path / "pkg" / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path / "pkg").endswith("+ uncommitted changes")


def test_seeds_give_each_run_and_the_spread(tmp_path):
    from fake_data import write_fashion_mnist

    from era_utils.runner import run_seeds
    from era_utils.plan import plan_run

    root = write_fashion_mnist(tmp_path / "fm", n_train=120, n_test=40)
    plan = plan_run("s7_lite", dataset="fashion_mnist", data_dir=str(root), epochs=1, batch_size=32,
                    device="cpu", out=tmp_path / "seeds", verbose=False, checkpoints=False)
    summary = run_seeds(plan, 2, command="era-utils run s7_lite --seeds 2")
    seeds = [r["seed"] for r in summary["runs"]]
    assert seeds == [plan.recipe.seed, plan.recipe.seed + 1]
    for seed in seeds:
        metrics = json.loads((tmp_path / "seeds" / f"seed_{seed}" / "metrics.json").read_text())
        assert metrics["recipe_settings"]["seed"] == seed
        assert (tmp_path / "seeds" / f"seed_{seed}" / "report.md").is_file()
    accs = torch.tensor([r["final_test_acc"] for r in summary["runs"]])
    assert summary["mean_final_test_acc"] == pytest.approx(float(accs.mean()))
    assert summary["std_final_test_acc"] == pytest.approx(float(accs.std()))  # sample std (ddof 1)
    text = (tmp_path / "seeds" / "report.md").read_text()
    assert "2 seeds" in text and f"[seed {seeds[1]}](seed_{seeds[1]}/report.md)" in text
    json.loads((tmp_path / "seeds" / "metrics.json").read_text(), parse_constant=pytest.fail)  # strict JSON


def test_warm_restarts_are_found_where_the_assignment_puts_them():
    hw = get_recipe("hw2p2").override(epochs=12)  # the first restart is at epoch 10
    model = create_model("face_baseline", in_channels=1)
    optimizer, scheduler = hw.configure_optimizers(torch.nn.Linear(2, 2), 3)
    lrs = []
    for _ in range(12 * 3):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    history = {"train_loss": [1.0] * 12, "lrs": lrs}
    metrics = _metrics(dataset="faces", dataset_title="HW2P2's faces", verification=None)
    checks = assignment_checks(hw, model, history, metrics, FIGURES)
    assert _status(checks, "cosine annealing") == "pass"
    flat = {"train_loss": [1.0] * 12, "lrs": sorted(lrs, reverse=True)}  # no restart at all
    assert _status(assignment_checks(hw, model, flat, metrics, FIGURES), "cosine annealing") == "fail"
    preview = hw.override(restart_epochs=3)
    checks = assignment_checks(preview, model, history, metrics | {"size": "preview"}, FIGURES)
    assert _status(checks, "cosine annealing") == "not checked"  # the preview's own T_0


def test_committed_results_name_no_folder_of_the_machine_that_made_them():
    import re
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "results"
    machine = re.compile(r"(?<![\w.:/])(?:/(?:tmp|work|root|home|mnt|content|Users)/|[A-Z]:\\)")
    files = [*results.rglob("report.md"), *results.rglob("metrics.json")]
    assert files
    for path in files:
        hit = machine.search(path.read_text())
        assert hit is None, f"{path.relative_to(results.parent)} names a machine's folder: {hit.group(0)}..."


def test_the_notebooks_target_line_says_whose_target_it_is():
    """S7-lite's notebook printed 87 under 83.74% on Fashion-MNIST: the line names CIFAR-10 and checks as the report."""
    from era_utils.report import target_check

    lite = get_recipe("s7_lite")
    preview = target_check(lite.override(epochs=4), 83.74, "fashion_mnist", "preview")
    assert "CIFAR-10" in str(preview) and "Fashion-MNIST" in str(preview) and preview.status == "not checked"
    assert target_check(lite, 83.74, "fashion_mnist", "full").status == "not checked"  # a stand-in, full length
    full = target_check(lite, 88.1, "cifar10", "full", best=88.4)
    assert full.status == "pass" and "88.10%" in full.evidence
    assert target_check(lite, 80.0, "cifar10", "full").status == "fail"
    assert target_check(get_recipe("hw2p2"), 80.0, "faces", "full") is None  # no classification target


def test_recheck_checks_a_finished_run_again_from_its_own_files(tmp_path, capsys):
    """results/s7_full_fmnist was checked by an earlier kit (no 'trained and tested on CIFAR-10' line, run_state.json
    listed): era-utils recheck gives it this kit's checklist from its files, numbers untouched, and says so."""
    from era_utils import plan as plan_module
    from era_utils.cli import main
    from era_utils.runner import run_recipe

    out = tmp_path / "run"
    plan = plan_module.plan_run("s7", dataset="fashion_mnist", subset=128, test_subset=64, epochs=1, batch_size=32,
                          device="cpu", out=out, verbose=False)
    now = run_recipe(plan)
    (out / "checkpoint.pt").unlink()  # results/ keeps no weights
    earlier = dict(now, checks=[c for c in now["checks"] if not c["requirement"].startswith("trained and tested")],
                   files=now["files"] + ["run_state.json"])
    (out / "metrics.json").write_text(json.dumps(earlier))
    (out / "run_state.json").unlink()
    assert main(["recheck", str(out)]) == 0
    assert "report.md rewritten" in capsys.readouterr().out
    again = json.loads((out / "metrics.json").read_text())
    assert again["checks"] == now["checks"]  # the data check is back: "not checked" on Fashion-MNIST
    assert "run_state.json" not in again["files"] and again["final_test_acc"] == now["final_test_acc"]
    report = (out / "report.md").read_text()
    assert "| checked again | by era_utils" in report and "trained and tested on CIFAR-10" in report
    assert main(["recheck", str(tmp_path / "nothing")]) == 2
