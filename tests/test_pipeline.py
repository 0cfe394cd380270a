"""The one pipeline: `era-utils run` is the chain of era_utils.steps, the recipe is the only builder of
optimizers and schedules, the analysis reads the last epoch's test pass (no pass of its own), modules import each
other's public names only and every public name has one home, and HW2P2's face folders go through
the same steps."""
from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from era_utils import plan as plan_module
from era_utils import steps
from era_utils.data import FASHION_MNIST_SYSTEM_DIR
from era_utils.face_loader import FaceLoader
from era_utils.gpu_loader import GPULoader
from era_utils.recipes import get_recipe
from era_utils.runner import run_recipe

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "era_utils"
needs_fmnist = pytest.mark.skipif(not FASHION_MNIST_SYSTEM_DIR.exists(), reason="Fashion-MNIST not installed")
pytestmark = pytest.mark.usefixtures("one_thread")


def _sources(*folders: str) -> dict[Path, str]:
    return {p: p.read_text() for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))}


# ----------------------------------------------------------------------------- layout


BUILDERS = re.compile(r"\b(make_optimizer|one_cycle|cosine_warm_restarts|OneCycleLR|CosineAnnealingWarmRestarts"
                      r"|OneCycleSchedule|optim\.(SGD|Adam|AdamW|RMSprop))\(")


def test_optimizers_and_schedules_are_built_in_the_recipe_only():
    """A grep over the kit, the notebooks and the benchmarks: calls that build an optimizer or a
    schedule stand in recipes.py; schedules.py defines the builders (and wraps torch's)."""
    places = []
    for path, text in _sources("era_utils", "notebooks", "benchmarks").items():
        for number, line in enumerate(text.splitlines(), start=1):
            code = line.split("#", 1)[0]
            if BUILDERS.search(code) and not re.match(r"\s*(def|class) ", code):
                places.append(f"{path.relative_to(ROOT)}:{number}")
    outside = [p for p in places if not p.startswith(("era_utils/recipes.py", "era_utils/schedules.py"))]
    assert not outside, f"optimizers or schedules built outside the recipe: {outside}"
    assert any(p.startswith("era_utils/recipes.py") for p in places)  # the grep does find the one place


def test_no_module_imports_another_modules_private_names():
    for path, text in _sources("era_utils", "benchmarks", "scripts").items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("era_utils"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.endswith("__")]
                assert not private, f"{path.relative_to(ROOT)} imports {private} from {node.module}"


def test_every_public_function_and_class_has_one_home():
    """A module lists in __all__ only what it defines: no re-exports, so one import path per name."""
    for path in sorted(PACKAGE.rglob("*.py")):
        name = "era_utils." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        if name.endswith("__init__"):
            continue
        module = importlib.import_module(name)
        for public in getattr(module, "__all__", []):
            obj = getattr(module, public)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                assert obj.__module__ == name, f"{name}.{public} is {obj.__module__}.{public} re-exported"


def test_the_run_command_reads_top_to_bottom_in_one_screen():
    tree = ast.parse((PACKAGE / "runner.py").read_text())
    run = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run_recipe")
    body_lines = run.end_lineno - run.body[1].lineno  # after the docstring
    assert body_lines <= 60, f"run_recipe's body is {body_lines} lines: keep it a chain of steps"


# ----------------------------------------------------------------------------- the plan


def test_plan_sizes_and_overrides():
    plan = plan_module.plan_run("s10", size="quick")
    recipe = get_recipe("s10")
    assert plan.dataset == "fashion_mnist" and plan.device.type == "cpu" and plan.subset == recipe.quick.subset
    assert plan.recipe.epochs == recipe.quick.epochs and plan.recipe.batch_size == dict(recipe.quick.changes)["batch_size"]
    assert plan.out.name == "s10" and "era_utils_quick" in str(plan.out) and plan.quick
    for name in ("s7", "s7_lite", "s10", "hw2p2"):  # every recipe has a preview on Fashion-MNIST
        preview = plan_module.plan_run(name, size="preview")
        sizing = get_recipe(name).preview
        assert preview.dataset == "fashion_mnist" and preview.subset == sizing.subset
        assert preview.recipe.epochs == sizing.epochs >= 3 and preview.out == Path("runs") / name
    with pytest.raises(ValueError, match="size must be one of"):
        plan_module.plan_run("s10", size="huge")
    given = plan_module.plan_run("s10", size="quick", subset=64, epochs=2, batch_size=8)
    assert (given.subset, given.recipe.epochs, given.recipe.batch_size) == (64, 2, 8)  # explicit wins
    fixed = plan_module.plan_run("s10", lr=0.01)
    assert fixed.recipe.lr == 0.01 and not fixed.recipe.use_lr_finder
    assert plan_module.plan_run("s10").loader == "gpu" and plan_module.plan_run("s10", fast=False).loader == "workers"
    assert plan_module.plan_run("hw2p2", dataset="fashion_mnist", device="cpu").loader == "workers"  # faster on a CPU


def test_hw2p2_is_read_on_the_device_on_a_gpu_and_by_workers_on_a_cpu():
    """The plan picks the faster path per device and says why (the run's log, the notebook's table)."""
    from dataclasses import replace

    from era_utils.speed import fast_path
    from era_utils.transforms import HW2P2_AUGMENT

    cpu = fast_path("cpu")
    cuda = replace(cpu, device=torch.device("cuda"), channels_last=True, cudnn_benchmark=True)  # no GPU needed
    for dataset in ("faces", "fashion_mnist"):
        assert plan_module._choose_loader("auto", cuda, HW2P2_AUGMENT, dataset)[0] == "gpu"
        loader, why = plan_module._choose_loader("auto", cpu, HW2P2_AUGMENT, dataset)
        assert loader == "workers" and "faster" in why and "face_loader_speed" in why
    assert "decoded" in plan_module._choose_loader("auto", cuda, HW2P2_AUGMENT, "faces")[1]
    assert plan_module._choose_loader("auto", cuda, get_recipe("s10").augment, "cifar10")[0] == "gpu"
    assert plan_module._choose_loader("auto", replace(cuda, enabled=False, loader="workers"), HW2P2_AUGMENT,
                                "faces") == ("workers", "the classic path: per image on CPU workers")
    plan = plan_module.plan_run("hw2p2", dataset="fashion_mnist", device="cpu", loader="gpu")  # asked: any device
    assert plan.loader == "gpu" and "loader: gpu (as asked" in plan.log_lines(steps.load_data(plan))


@pytest.mark.parametrize("kwargs, match", [
    (dict(recipe="s10", fast=False, loader="gpu"), "classic path"),
    (dict(recipe="s10", dataset="mnist"), "dataset must be one of"),
    (dict(recipe="s10", dataset="faces"), "face folders are HW2P2's"),
    (dict(recipe="s10", loader="tpu"), "loader must be one of"),
    (dict(recipe="s10", amp="half"), "amp must be one of"),
])
def test_plan_refuses_what_cannot_run(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan_module.plan_run(**kwargs)


def test_faces_without_a_folder_say_where_to_get_them():
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        steps.load_data(plan_module.plan_run("hw2p2"))


def test_recipe_builds_each_schedule_it_names():
    model = torch.nn.Linear(4, 2)
    s10 = get_recipe("s10").override(epochs=4)
    optimizer, scheduler = s10.configure_optimizers(model, steps_per_epoch=10, max_lr=3e-3)
    assert isinstance(optimizer, torch.optim.Adam) and scheduler.total_steps == 40
    lrs = []
    for _ in range(40):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert max(lrs) == pytest.approx(3e-3) and lrs.index(max(lrs)) == round(5 / 24 * 4 * 10) - 1
    hw = get_recipe("hw2p2")
    optimizer, scheduler = hw.configure_optimizers(model, steps_per_epoch=10)
    assert isinstance(optimizer, torch.optim.SGD) and scheduler.T_0 == hw.restart_epochs * 10
    assert optimizer.param_groups[0]["lr"] == hw.lr and optimizer.param_groups[0]["weight_decay"] == hw.weight_decay
    assert hw.criterion().label_smoothing == hw.label_smoothing
    assert get_recipe("s7").override(schedule="constant").configure_optimizers(model, 10)[1] is None


# ----------------------------------------------------------------------------- one pass over the test set


def _count_test_passes(monkeypatch) -> list[str]:
    """The passes over GPULoaders from now on: "test" (unshuffled) or "train"."""
    passes: list[str] = []
    original = GPULoader.__iter__

    def counting(self):
        passes.append("test" if not self.shuffle else "train")
        return original(self)

    monkeypatch.setattr(GPULoader, "__iter__", counting)
    return passes


@needs_fmnist
def test_a_run_passes_over_the_test_set_once_per_epoch_and_no_more(tmp_path, monkeypatch):
    """fit evaluates once per epoch and the analysis reads the last of those passes (no pass of its own);
    a resumed run with no epoch left to train makes the one pass its analysis needs."""
    passes = _count_test_passes(monkeypatch)
    plan = plan_module.plan_run("s7_lite", dataset="fashion_mnist", subset=256, test_subset=128, epochs=2,
                                batch_size=64, device="cpu", out=tmp_path / "run", verbose=False)
    metrics = run_recipe(plan)
    assert passes.count("test") == 2, passes  # the two epochs' evaluations, nothing after them
    assert metrics["predicted_test_acc"] == pytest.approx(metrics["final_test_acc"], abs=1e-4)
    assert (tmp_path / "run" / "gradcam.png").exists() == bool(json.loads(
        (tmp_path / "run" / "metrics.json").read_text())["final_test_acc"] < 100)

    passes.clear()
    again = run_recipe(plan_module.plan_run("s7_lite", dataset="fashion_mnist", subset=256, test_subset=128,
                                            epochs=2, batch_size=64, device="cpu", out=tmp_path / "run",
                                            verbose=False, resume=True))
    assert passes.count("test") == 1, passes  # nothing trained, so nothing kept: a pass of its own
    assert again["predicted_test_acc"] == pytest.approx(metrics["final_test_acc"], abs=1e-4)


@needs_fmnist
def test_the_kept_test_pass_is_the_pass_predict_would_make(tmp_path):
    """train keeps the last epoch's test pass; final_predictions hands it on for that loader (the same
    labels, predictions and losses as a second pass) and makes a pass of its own for any other loader."""
    from era_utils.analysis import predict

    plan = plan_module.plan_run("s10", dataset="fashion_mnist", subset=256, test_subset=96, epochs=1,
                                batch_size=32, device="cpu", out=tmp_path / "run", verbose=False)
    steps.start(plan)
    data = steps.load_data(plan)
    train_loader, test_loader = steps.build_loaders(plan, data)
    model = steps.build_model(plan, data)
    optimizer, scheduler = steps.optimizer_and_schedule(plan, model, train_loader, (1e-3, 1e-4))
    history = steps.train(plan, model, train_loader, test_loader, optimizer, scheduler)
    kept = steps.final_predictions(plan, model, test_loader, history)
    assert kept is history.last_test_pass and len(kept) == 96
    fresh = predict(model, test_loader, amp=plan.fast.amp)
    assert torch.equal(kept.labels, fresh.labels) and torch.equal(kept.preds, fresh.preds)
    assert torch.allclose(kept.losses, fresh.losses, atol=1e-5)
    assert kept.accuracy == pytest.approx(history.test_acc[-1], abs=1e-4)
    first, again = kept.misclassified(1)[0], fresh.misclassified(1)[0]  # galleries fetch their images by position
    assert first.index == again.index and np.array_equal(first.image, again.image)

    other = steps.build_loaders(plan, data)[1]
    assert steps.final_predictions(plan, model, other, history) is not kept  # another loader: its own pass


# ----------------------------------------------------------------------------- HW2P2 faces, headless


@pytest.mark.parametrize("loader", ["workers", "gpu"])
def test_face_folders_run_through_the_same_steps(tmp_path, loader):
    """The real assignment's layout (train/ dev/ test/ folders, pairs files) through era-utils run's
    chain: classification on dev, verification on the pairs files, both Kaggle CSVs; read per image on
    CPU workers, or decoded and augmented in batches on the device (here the CPU)."""
    from fake_data import make_pairs, write_face_folders, write_pairs

    from era_utils.kaggle import read_submission

    faces = write_face_folders(tmp_path / "faces", n_identities=3, n_train=4, n_dev=2, n_test=5)
    dev = write_pairs(tmp_path / "faces" / "dev_pairs.txt", make_pairs(faces, "dev", n=6))
    test_lines = list(dict.fromkeys((a, b) for a, b, _ in make_pairs(faces, "test", n=6, seed=1)))[:4]
    test = write_pairs(tmp_path / "faces" / "test_pairs.txt", test_lines, labelled=False)
    recipe = get_recipe("hw2p2").override(model="face_baseline", epochs=1, batch_size=4, lr=0.01)
    plan = plan_module.plan_run(recipe, dataset="faces", data_dir=str(faces.root), dev_pairs=str(dev), test_pairs=str(test),
                          device="cpu", num_workers=0, out=tmp_path / "run", verbose=False, loader=loader)
    assert plan.loader == loader and plan.loader_why.startswith("as asked")
    data = steps.load_data(plan)
    train_loader, test_loader = steps.build_loaders(plan, data)
    assert isinstance(train_loader, FaceLoader) == (loader == "gpu") == isinstance(test_loader, FaceLoader)
    assert data.input_size == (3, 224, 224) and data.classes == faces.identities and len(data.test) == 6
    metrics = run_recipe(plan)
    out = tmp_path / "run"
    assert metrics["dataset"] == "faces" and metrics["verification"]["n_pairs"] == 6 and metrics["loader"] == loader
    submission = read_submission(out / "verification_submission.csv")
    assert submission.ids == [f"{a} {b}" for a, b in test_lines] and len(submission.scores()) == 4
    classified = read_submission(out / "classification_submission.csv")
    assert classified.ids == [f"{j:06d}.jpg" for j in range(5)] and set(classified.values) <= set(faces.identities)
    for name in ("samples.png", "augmentations.png", "curves.png", "misclassified.png", "roc.png"):
        assert (out / name).stat().st_size > 0, name


def test_a_long_cpu_run_is_warned_about_before_it_starts(recwarn, tmp_path):
    steps.start(plan_module.plan_run("s10", size="preview", device="cpu", out=tmp_path / "preview"))
    assert not [w for w in recwarn if "take hours" in str(w.message)]
    with pytest.warns(UserWarning, match=r"take hours.*GPU.*--preview"):
        steps.start(plan_module.plan_run("s10", device="cpu", out=tmp_path / "full"))


def test_stand_in_verification_holds_classes_out_of_training(tmp_path):
    """HW2P2 on Fashion-MNIST: the last classes are never trained on and are the ones verified."""
    from fake_data import write_fashion_mnist

    root = write_fashion_mnist(tmp_path, n_train=200, n_test=100)
    recipe = get_recipe("hw2p2").override(model="face_baseline", epochs=1, batch_size=16)
    plan = plan_module.plan_run(recipe, dataset="fashion_mnist", data_dir=str(root), device="cpu", num_workers=0,
                          out=tmp_path / "run", verbose=False, verification_pairs=40)
    data = steps.load_data(plan)
    held = set(recipe.held_out_classes)
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    kept = [c for c in range(10) if c not in held]
    assert data.classes == [names[c] for c in kept]  # the classifier's classes: the others, numbered 0..6
    assert set(data.train.labels) == set(data.test.labels) == set(range(len(kept)))
    assert set(data.held_out.labels) == held and len(data.held_out) == 30  # 100 test images, 10 a class
    model = steps.build_model(plan, data)
    assert model.fc.out_features == len(kept)
    result = steps.verify(plan, data, model)
    assert result.metrics.n_pairs == 40 and "never trained on" in result.pairs
    assert len(set(result.test_ids)) == 40


@pytest.mark.parametrize("loader", ["gpu", "workers"])
def test_each_input_is_checked_once_on_the_way_to_the_loaders(loader, monkeypatch):
    """The data step checks the mean/std, each loader its own images; the layers below take them as checked."""
    from era_utils import face_loader, gpu_loader, loaders, transforms

    checked = {"mean/std": 0, "images": []}
    value_checks, image_check = transforms._checked_values, transforms.check_images

    def count_values(*args):
        checked["mean/std"] += 1
        return value_checks(*args)

    def count_images(images, name="images"):
        checked["images"].append(id(images))
        return image_check(images, name)

    monkeypatch.setattr(transforms, "_checked_values", count_values)
    for module in (transforms, loaders, gpu_loader, face_loader):
        if hasattr(module, "check_images"):
            monkeypatch.setattr(module, "check_images", count_images)
    plan = plan_module.plan_run("s10", size="quick", loader=loader, verbose=False)
    data = steps.load_data(plan)
    steps.build_loaders(plan, data)
    assert checked["mean/std"] == 1  # in Data, the data step
    assert len(checked["images"]) == len(set(checked["images"])) == 2  # the training and the test images, once each
