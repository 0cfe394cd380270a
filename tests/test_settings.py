"""Each run setting is declared once (era_utils.settings): the command's options, run_command, the checks of
Python values, the notebooks' parameters and the resume check are read from that declaration."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from era_utils import settings as run_settings
from era_utils.cli import build_parser
from era_utils.plan import plan_run
from era_utils.settings import FilePath, RunSettings, Switch, declared, from_args, run_command

ROOT = Path(__file__).resolve().parents[1]
# A value of each kind a setting's check takes, for the round trip below
SAMPLE = {"dataset": "fashion_mnist", "data_dir": "data/fm", "download": True, "epochs": 3, "batch_size": 32,
          "lr": 0.02, "lr_finder_method": "valley", "restart_epochs": 4, "label_smoothing": 0.1, "loss": "center",
          "tta": "flip", "subset": 600, "test_subset": 200,
          "loader": "workers", "fast": False, "amp": "off", "compile": "max-autotune", "num_workers": 0,
          "device": "cpu", "seed": 7, "out": "runs/x", "resume": True, "verbose": False, "dev_pairs": "dev.txt",
          "test_pairs": "test.txt", "pairs_root": "pairs", "log": "csv", "processes": 2, "sync_batchnorm": True}
NOTEBOOK_ONLY = {"RECIPE", "SIZE", "USE_DRIVE", "KAGGLE_COMPETITIONS", "COMPARE"}  # not run settings


def _run_parser():
    return build_parser()._subparsers._group_actions[0].choices["run"]


def test_every_option_of_era_utils_run_is_a_declared_setting_or_says_how_big_the_run_is():
    flags = {spec.flag: name for name, spec in declared() if spec.flag}
    options = {opt: action.dest for action in _run_parser()._actions for opt in action.option_strings}
    command_only = {"-h", "--help", "--preview", "--quick", "--seeds", "--debug"}
    assert set(options) - command_only == set(flags)
    assert all(options[flag] == name for flag, name in flags.items())  # parsed into the setting's own name


def test_a_command_line_from_run_command_parses_back_into_the_same_settings():
    """Every setting with an option, at a value other than its default, survives the round trip."""
    with_flag = {name for name, spec in declared() if spec.flag}
    assert set(SAMPLE) == with_flag, "give the new setting a sample value in SAMPLE"
    argv = run_command("hw2p2", size="preview", **SAMPLE)
    args = build_parser().parse_args(argv[1:])
    assert from_args(args) == RunSettings(**SAMPLE) and args.size == "preview"
    assert RunSettings(**SAMPLE).changed() == SAMPLE  # each sample differs from its default: none left out


@pytest.mark.parametrize("name, value, message", [
    ("epochs", 0, r"epochs \(--epochs, EPOCHS in a notebook\) must be a whole number 1 or more, got 0"),
    ("batch_size", 2.5, r"batch_size \(--batch-size\) must be a whole number 1 or more, got 2.5"),
    ("lr", float("nan"), r"lr \(--lr\) must be a positive number, got nan"),
    ("download", "yes", r"download \(--download, DOWNLOAD in a notebook\) must be True or False, got 'yes'"),
    ("out", 3, r"out \(--out, OUT in a notebook\) must be a path"),
    ("checkpoints", 1, r"checkpoints \(Python only\) must be True or False"),
    ("loss", "triplet", r"loss must be one of \('cross_entropy', 'arcface', 'cosface', 'center'\), got 'triplet'"),
])
def test_a_bad_value_from_python_names_the_setting_its_option_and_what_it_takes(name, value, message):
    with pytest.raises(ValueError, match=message):
        plan_run("s10", size="quick", **{name: value})


def test_an_unknown_setting_is_refused_with_the_list_of_settings():
    with pytest.raises(TypeError, match="plan_run has no setting 'epoch'; the settings are: dataset, data_dir"):
        plan_run("s10", epoch=3)
    with pytest.raises(TypeError, match="not both"):
        plan_run("s10", settings=RunSettings(), epochs=3)


def test_the_notebooks_parameters_are_the_declared_settings_passed_by_their_names():
    notebook_names = {spec.notebook: name for name, spec in declared() if spec.notebook}
    for script in sorted((ROOT / "notebooks").glob("*.py")):
        text = script.read_text()
        cell = re.search(r'# %% tags=\["parameters"\]\n(.*?)\n# %%', text, re.S).group(1)
        params = {node.targets[0].id for node in ast.parse(cell).body if isinstance(node, ast.Assign)
                  and node.targets[0].id.isupper()}
        unknown = params - set(notebook_names) - NOTEBOOK_ONLY
        assert not unknown, f"{script.name}: parameters {unknown} are no declared setting's notebook name"
        calls = [node for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Call)
                 and getattr(node.func, "id", "") in ("plan_run", "run_in_processes")]
        passed = {kw.arg: kw.value.id for call in calls for kw in call.keywords if isinstance(kw.value, ast.Name)}
        for param in params - NOTEBOOK_ONLY - {"NPROC"}:  # NPROC: run_in_processes' second argument
            assert passed.get(notebook_names[param]) == param, f"{script.name}: {param} is not passed as " \
                                                               f"{notebook_names[param]}="


def test_the_resume_check_holds_each_setting_declared_for_it_as_the_plan_resolved_it():
    plan = plan_run("s10", size="preview", amp="off", num_workers=3, loader="workers", device="cpu")
    held = plan.checkpoint_settings()
    for name, spec in declared():
        if spec.resume:
            assert spec.resume in held, name
    assert (held["precision"], held["num_workers"], held["subset"]) == ("off", 3, plan.sizing.subset)
    assert plan_run("s10", size="preview", num_workers=3).checkpoint_settings()["num_workers"] is None  # gpu loader


def test_the_plan_says_its_run_as_a_command_with_no_folder_of_this_machine(tmp_path):
    plan = plan_run("s10", size="preview", amp="off", out=tmp_path / "run", verbose=False)
    assert dict(plan.describe())["as a command"] == "`era-utils run s10 --preview --amp off --out OUT --quiet`"
    assert all(isinstance(spec.kind, FilePath) for name, spec in declared() if name in ("out", "data_dir"))
    assert all(isinstance(spec.kind, Switch) for name, spec in declared() if name in ("resume", "fast", "verbose"))
    assert run_settings.where("num_workers") == "num_workers (--workers, NUM_WORKERS in a notebook)"


def test_label_smoothing_from_the_command_line_reaches_the_loss():
    """The setting added to prove the declaration: one line in era_utils.settings, nothing else in the kit."""
    args = build_parser().parse_args(["run", "s10", "--quick", "--label-smoothing", "0.1"])
    plan = plan_run("s10", size="quick", settings=from_args(args))
    assert plan.recipe.criterion().label_smoothing == 0.1 and "label smoothing 0.1" in dict(plan.describe())["loss"]
    assert plan.checkpoint_settings()["label_smoothing"] == 0.1  # a resume with another is refused
    assert plan_run("hw2p2", size="quick").recipe.criterion().label_smoothing == 0.2  # the recipe's, when not given
    with pytest.raises(ValueError, match=r"label_smoothing \(--label-smoothing\) must be a number from 0 to below 1"):
        plan_run("s10", label_smoothing=1.0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "s10", "--label-smoothing", "-0.1"])


def _tiny_loader(batches: int = 12):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(16 * batches, 8, generator=generator), torch.randint(0, 10, (16 * batches,))
    return DataLoader(TensorDataset(images, labels), batch_size=16)


def test_the_lr_rule_from_the_command_line_picks_the_range_tests_max_lr():
    import torch
    from era_utils import steps
    from era_utils.lr_finder import suggest_lr

    args = build_parser().parse_args(["run", "s10", "--quick", "--lr-rule", "steepest", "--device", "cpu",
                                      "--quiet"])
    plan = plan_run("s10", size="quick", settings=from_args(args))
    assert plan.recipe.lr_finder_method == "steepest" and plan_run("s10").recipe.lr_finder_method == "minimum"
    assert "the steepest descent of the smoothed loss" in dict(plan.describe())["learning rate"]
    assert plan.as_command().startswith("era-utils run s10 --quick --lr-rule steepest")
    torch.manual_seed(0)
    found = steps.range_test(plan, torch.nn.Linear(8, 10), _tiny_loader())
    assert found.method == "steepest" and found.suggestion == suggest_lr(found.lrs, found.losses, "steepest")
    assert found.suggestion != suggest_lr(found.lrs, found.losses, "minimum")  # the rule made a difference


@pytest.mark.parametrize("command, message", [
    (["s7", "--lr-rule", "valley"], r"recipe 's7' runs no LR range test \(s10 does\): leave --lr-rule out"),
    (["s10", "--lr", "0.01", "--lr-rule", "valley"], r"--lr gives the LR, so no range test runs"),
    (["s10", "--restart-epochs", "3"], r"recipe 's10' has schedule 'one_cycle' \(hw2p2's restarts\): leave "
                                       r"--restart-epochs out"),
])
def test_a_schedule_option_the_run_would_not_use_is_refused(command, message):
    args = build_parser().parse_args(["run", *command])
    with pytest.raises(ValueError, match=message):
        plan_run(command[0], settings=from_args(args))


def test_restart_epochs_from_the_command_line_sets_the_first_cosine_cycle():
    import torch
    from era_utils import steps

    args = build_parser().parse_args(["run", "hw2p2", "--quick", "--restart-epochs", "2", "--epochs", "5",
                                      "--device", "cpu", "--quiet"])
    plan = plan_run("hw2p2", size="quick", settings=from_args(args))
    assert plan.recipe.restart_epochs == 2 and plan_run("hw2p2", size="preview").recipe.restart_epochs == 3
    loader = _tiny_loader(4)
    optimizer, scheduler = steps.optimizer_and_schedule(plan, torch.nn.Linear(8, 10), loader)
    lrs = []
    for _ in range(5 * len(loader)):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    restarts = [step for step in range(1, len(lrs)) if lrs[step] > lrs[step - 1] * 1.5]
    assert restarts == [2 * len(loader)]  # T_0 = 2 epochs, then a cycle of 4 (T_mult 2) that 5 epochs do not end


def test_a_run_started_from_python_reports_the_same_run_as_a_command_line(tmp_path):
    from era_utils import report
    from era_utils.runner import full_length_command

    plan = plan_run("s10", size="quick", epochs=2, out=tmp_path / "run", verbose=False)
    assert plan.as_command() == "era-utils run s10 --quick --epochs 2 --out OUT --quiet"
    assert report._command({"command": None, "as_command": plan.as_command()}) == (
        "`era-utils run s10 --quick --epochs 2 --out OUT --quiet` (the same run; this one was started from Python)")
    assert full_length_command("hw2p2") == ("era-utils run hw2p2 --dataset faces --data-dir DATA --out "
                                            "results/hw2p2_full --dev-pairs DEV_PAIRS --test-pairs TEST_PAIRS")
    assert full_length_command("s10") == "era-utils run s10 --download --out results/s10_full"


@pytest.mark.parametrize("text, value", [("on", True), ("off", False), ("reduce-overhead", "reduce-overhead")])
def test_compile_from_the_command_line_reaches_the_fast_path(text, value):
    args = build_parser().parse_args(["run", "s10", "--compile", text])
    assert plan_run("s10", settings=from_args(args)).fast.compile == value
    assert run_command("s10", compile=value)[-2:] == ["--compile", text]


def test_a_compile_mode_torch_does_not_have_is_refused_on_both_roads():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "s10", "--compile", "fast"])
    with pytest.raises(ValueError, match=r"compile \(--compile\) must be True, False or a torch.compile mode"):
        plan_run("s10", compile="fast")
