"""Generate the four assignment notebooks in notebooks/ (and, with --execute, run them in quick mode).

One script writes all four so they stay consistent: the same set-up cells (Colab badge, install
cell, parameters cell), the same order of steps, the recipe's own numbers (read from
`era_utils.recipes`). Every code cell is one short era_utils step with a line of markdown before it.

    python scripts/make_notebooks.py             # write the notebooks without outputs
    python scripts/make_notebooks.py --execute   # also run each one in quick mode (Fashion-MNIST
                                                 # subset, 1 epoch, CPU) and keep the outputs,
                                                 # as committed, so GitHub shows the figures
    python scripts/make_notebooks.py --check     # exit 1 if a committed notebook's cells differ
                                                 # from what this script writes (outputs ignored)

Forks: change REPO below (the badge and the install cell both read it) and regenerate.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

# The one place that names the GitHub repository: the Colab badge and the install cell use it.
REPO = "https://github.com/era-course/era_utils"
BRANCH = "main"

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(ROOT))  # the kit itself, for the recipes' numbers, without installing it

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
from era_utils.recipes import get_recipe  # noqa: E402
from era_utils.transforms import NO_AUGMENT, S7_AUGMENT, S10_AUGMENT  # noqa: E402

QUICK_ENV = "ERA_UTILS_QUICK"
QUICK_NOTE = (
    "> **About the outputs shown here.** They come from the quick CI run (`ERA_UTILS_QUICK=1`: "
    "a 500-image Fashion-MNIST subset, one epoch, on a CPU, with the quick-mode settings the "
    "parameters cell lists), which checks that every step runs. They are not the "
    "assignment's results: open the notebook in Colab with a GPU runtime and run all cells for the "
    "full recipe."
)
# Quick mode's own settings, where the recipe's would not train on 500 images in one CPU epoch;
# each *_NOTE ends the parameters cell's markdown, saying why.
S7_QUICK = "TEST_SUBSET, BATCH_SIZE = 500, 64  # 8 steps (the recipe's batch 128 would give 4)"
S7_QUICK_NOTE = (
    ". Quick mode also uses batch 64 instead of 128, so the 500 images make eight optimiser steps "
    "rather than four"
)
S10_QUICK = "TEST_SUBSET, BATCH_SIZE, LR_FINDER_ITERS = 500, 16, 30  # 32 steps: see above"
S10_QUICK_NOTE = (
    " and a 30-batch LR range test. Quick mode also uses batch 16 instead of 512, so the 500 images "
    "make 32 steps rather than one: enough for the range test to draw a curve, and for BatchNorm's "
    "running statistics (which the test uses) to settle; with a handful of large batches the test "
    "accuracy stays at chance whatever the network learnt"
)
HW2P2_QUICK = "BATCH_SIZE, LR = 64, 0.003  # LR 0.1 diverges in these few steps: see above"
HW2P2_QUICK_NOTE = (
    ". Quick mode also uses batch 64 and `LR` 0.003 instead of the recipe's 128 and 0.1: that "
    "learning rate suits thousands of steps over 7000 identities, but makes these few steps diverge "
    "(the test loss explodes and every pair's similarity comes out as 1.0)"
)
SPEC_NAMES = {S7_AUGMENT: "S7_AUGMENT", S10_AUGMENT: "S10_AUGMENT", NO_AUGMENT: "NO_AUGMENT"}
SUGGESTION = {  # era_utils.lr_finder's suggestion rules, in words
    "valley": "fastai's valley: two thirds of the way down the longest falling stretch of the smoothed loss",
    "steepest": "the steepest descent of the smoothed loss, before its minimum",
    "minimum": "a tenth of the LR at the smoothed loss's minimum",
}


# --------------------------------------------------------------------------- cell helpers


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(text.strip("\n"))


def code(source: str, tags: tuple[str, ...] = ()) -> nbformat.NotebookNode:
    cell = new_code_cell(source.strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def repo_path() -> str:
    """owner/name of REPO, for the Colab address."""
    return REPO.rstrip("/").removesuffix(".git").split("github.com/", 1)[1]


def badge(name: str) -> str:
    url = f"https://colab.research.google.com/github/{repo_path()}/blob/{BRANCH}/notebooks/{name}.ipynb"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def header(name: str, title: str, intro: str) -> list:
    """Title + badge, the install cell (skipped in CI), the import line of the kit."""
    return [
        md(f"# {title}\n\n{badge(name)}\n\n{intro.strip()}\n\n{QUICK_NOTE}"),
        md(
            "## Set-up\n"
            "Install era_utils from GitHub (Colab already has torch and torchvision and keeps them). "
            "In CI this cell is skipped (its tag is `skip-execution`): the kit is installed there already."
        ),
        code(f"%pip install -q git+{REPO}.git", tags=("skip-execution",)),
    ]


def parameters_md(extra: str = "") -> nbformat.NotebookNode:
    return md(
        "Parameters (the recipe's values). The cell is tagged `parameters`, so the notebook also runs "
        "headless, e.g. `papermill NAME.ipynb out.ipynb -p EPOCHS 5`. With the environment variable "
        f"`{QUICK_ENV}=1` (CI) it switches to a quick run: a small Fashion-MNIST subset, one epoch, on "
        f"the CPU{extra}."
    )


LOADER_PARAM = (
    'LOADER = "auto"  # "auto" = "gpu": augment whole batches on the device; "albumentations": per image'
)


def quick_block(extra_lines: list[str]) -> str:
    lines = [
        f'if os.environ.get("{QUICK_ENV}") == "1":  # CI: small Fashion-MNIST subset, 1 epoch, CPU',
        '    DATASET, EPOCHS, SUBSET, DEVICE = "fashion_mnist", 1, 500, "cpu"',
        *[f"    {line}" for line in extra_lines],
    ]
    return "\n".join(lines)


def fmt(value: float) -> str:
    """Numbers as a person writes them: 0.05, 0.9, 1e-4, 5e-4 (not 0.0001)."""
    if 0 < abs(value) < 1e-3 and float(f"{value:.0e}") == value:
        mantissa, exponent = f"{value:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:g}"


def seed_cells() -> list:
    return [
        md("Seed python, numpy and torch, and pick the device (cuda, then mps, then cpu), so a rerun "
           "gives the same numbers on the same machine."),
        code("set_seed(SEED)\ndevice = get_device(DEVICE)\ndevice"),
    ]


def data_cells(dataset_note: str) -> list:
    return [
        md("## Data\n"
           f"Load the training and test splits as uint8 arrays (N, H, W, C). {dataset_note} "
           "`SUBSET` keeps a stratified subset of the training images (the same share of every class) "
           "and then tests on max(1000, SUBSET // 5) images unless `TEST_SUBSET` says otherwise, as "
           "`era-utils run --subset` does."),
        code(
            "train, test = load_splits(DATASET, root=DATA_DIR, download=DOWNLOAD, subset=SUBSET,\n"
            "                          test_subset=TEST_SUBSET, seed=SEED)\n"
            "channels = train.images.shape[-1]  # 3 for CIFAR-10, 1 for Fashion-MNIST\n"
            "train.images.shape, test.images.shape"
        ),
        md("Per-channel mean and std of the training split over all its pixels (in [0, 1] units): "
           "Normalize uses them, and CutOut fills its hole with the mean."),
        code("mean, std = dataset_stats(DATASET)\nmean, std"),
        md("A look at the data: the first ten training images with their class names."),
        code('plot_samples(train, title=f"Sample training images ({DATASET})")'),
    ]


def loader_cells(spec_name: str, recipe_text: str) -> list:
    return [
        md(
            "Loaders, made as `era-utils run` makes them. With `LOADER = \"auto\"` a `GPULoader` keeps "
            f"the whole dataset on the device and augments whole batches there ({recipe_text}: "
            f"`{spec_name}`), so Colab's two CPU cores do not starve the GPU; on a CPU it runs the same "
            "way. `LOADER = \"albumentations\"` applies the same recipe per image with albumentations in "
            "DataLoader workers. The test loader only normalises, in the test set's order."
        ),
        code(
            "train_loader, test_loader = make_loaders(\n"
            f"    train, test, {spec_name}, mean, std, BATCH_SIZE, loader=LOADER, device=device, seed=SEED,\n"
            '    channels_last=device.type == "cuda",  # the memory layout fit() trains in on a GPU\n'
            ")\n"
            "train_loader"
        ),
        md("Check the augmentation: five training images (top) and the same five as the loader "
           "augments them, twice (below), whichever loader path is in use."),
        code("plot_augmentations(train, train_loader, rows=2, mean=mean, std=std)"),
    ]


def model_cells(model_name: str, note: str) -> list:
    return [
        md(f"## Model\n{note} `summary` lists every layer with its input, output and kernel shapes, "
           "parameters and mult-adds."),
        code(
            f'model = create_model("{model_name}", num_classes=len(train.classes), in_channels=channels).to(device)\n'
            "summary(model, (channels, 32, 32))"
        ),
    ]


def training_cells(title: str) -> list:
    return [
        md("## Training\n`fit` trains for `EPOCHS` epochs, stepping the scheduler after every batch, and "
           "evaluates on the test set after each epoch; it returns a `History` (loss and accuracy per "
           "epoch, LR per step). Mixed precision, channels-last and `torch.compile` switch on by themselves "
           "on a GPU (the first epoch then includes compiling the model)."),
        code("history = fit(model, train_loader, test_loader, optimizer, EPOCHS, criterion=criterion,\n"
             "              scheduler=scheduler, device=device)"),
        md("Loss and accuracy per epoch, train and test: the gap between the two is the overfitting."),
        code(f'plot_history(history, title="{title}: loss and accuracy")'),
        md("The learning rate at every optimizer step: the One Cycle ramp up to the peak and back down."),
        code("plot_lr(history, steps_per_epoch=len(train_loader))"),
    ]


def analysis_cells(gradcam_note: str | None) -> list:
    cells = [
        md("## What the model gets wrong\nThe first ten misclassified test images, titled with the true "
           "class, the predicted one and the model's confidence in it."),
        code("wrong = get_misclassified(model, test_loader, n=10, device=device)\n"
             "plot_misclassified(wrong, test.classes)"),
    ]
    if gradcam_note:
        cells += [
            md("GradCAM on the same ten images: where the network looked for the class it predicted. "
               f"The default layer is the deepest one whose map is still at least 7x7: {gradcam_note}"),
            code("layer = default_target_layer_name(model, (channels, 32, 32))\n"
                 "cams = gradcam(model, wrong, target_layer=layer)\n"
                 "plot_gradcam(wrong, cams, test.classes, layer=layer)"),
        ]
    cells += [
        md("Predictions on the whole test set, computed once, then the test accuracy of every class."),
        code("preds = predict(model, test_loader, device)\n"
             "plot_per_class_accuracy(per_class_accuracy(preds), test.classes)"),
        md("The confusion matrix (rows: true class, columns: predicted), normalised per true class."),
        code("cm = confusion_matrix(preds)\nplot_confusion_matrix(cm, test.classes, normalize=True)"),
        md("The five most frequent mistakes as (true, predicted, count)."),
        code("most_confused(cm, test.classes)"),
    ]
    return cells


def closing_cells(recipe_name: str) -> list:
    return [
        md("Save the history (loss, accuracy and LR curves as JSON) to `OUT`, to plot or compare later "
           "with `History.from_json`."),
        code('history.to_json(Path(OUT) / "history.json")'),
        md(f"The same recipe runs headless too, writing every figure, `history.json` and `metrics.json`: "
           f"`era-utils run {recipe_name} --out results/{recipe_name}` (add `--dataset fashion_mnist "
           "--subset 5000` for a short try)."),
    ]


def cifar_imports(extra: list[str], gradcam: bool) -> str:
    """The import cell's code for the CIFAR notebooks; `extra`: additional era_utils lines."""
    plots = ("from era_utils.plots import (plot_augmentations, plot_confusion_matrix, "
             + ("plot_gradcam, " if gradcam else "")
             + "plot_history, plot_lr,\n"
             "                             plot_misclassified, plot_per_class_accuracy, plot_samples)")
    froms = sorted([
        plots,
        "from era_utils import get_device, set_seed, summary",
        "from era_utils.analysis import confusion_matrix, get_misclassified, most_confused, per_class_accuracy, predict",
        "from era_utils.data import dataset_stats",
        "from era_utils.engine import fit, make_criterion, make_optimizer, one_cycle",
        "from era_utils.loaders import load_splits, make_loaders",
        "from era_utils.models import create_model",
        "from era_utils.recipes import get_recipe",
        *extra,
    ])
    return "from pathlib import Path\n\n" + "\n".join(froms)


def imports_cells(source: str) -> list:
    return [
        md("Imports: every step below is one call into era_utils (no model or training loop is defined "
           "in this notebook)."),
        code("%matplotlib inline\n" + source.strip("\n")),
    ]


# --------------------------------------------------------------------------- the S7 family


def cifar_parameters(recipe, extra_defaults: list[str], extra_quick: list[str]) -> str:
    lines = [
        f'DATASET = "{recipe.dataset}"  # "cifar10" (the assignment) or "fashion_mnist"',
        f"EPOCHS = {recipe.epochs}",
        f"BATCH_SIZE = {recipe.batch_size}",
        *extra_defaults,
        "SUBSET = None  # train on N images (a stratified subset), or None for the whole training set",
        "TEST_SUBSET = None  # test on N images; None: all of them (or max(1000, SUBSET // 5) with a SUBSET)",
        "DEVICE = None  # None picks cuda, then mps, then cpu",
        LOADER_PARAM,
        "DATA_DIR = None  # None: ./data for CIFAR-10, the system folder for Fashion-MNIST",
        "DOWNLOAD = True  # fetch the dataset with torchvision if it is not there (Colab)",
        f'OUT = "results/{recipe.name}"  # where the history (and any file written here) goes',
        f"SEED = {recipe.seed}",
        quick_block([
            *extra_quick,
            f'OUT = os.path.join(tempfile.gettempdir(), "era_utils_quick", "{recipe.name}")',
        ]),
    ]
    return "import os\nimport tempfile\n\n" + "\n".join(lines)


def peak_note(recipe) -> str:
    """Markdown: where One Cycle peaks, in the assignment's run and in a shorter one."""
    share = recipe.peak_epoch / recipe.epochs
    return (f"`peak_epoch_for` puts the peak where `era-utils run` does: at the end of epoch "
            f"{recipe.peak_epoch} of the assignment's {recipe.epochs}, and at the same share of a "
            f"shorter or longer run ({share:.0%} of the way in, and never before the second batch).")


def peak_code(recipe) -> str:
    return (f'peak_epoch = get_recipe("{recipe.name}").peak_epoch_for(EPOCHS, len(train_loader))  '
            f"# {fmt(recipe.peak_epoch)} at {recipe.epochs} epochs")


def optimizer_cells_s7(recipe) -> list:
    return [
        md(f"Optimiser and schedule: SGD with {'Nesterov ' if recipe.nesterov else ''}momentum "
           f"{fmt(recipe.momentum)} and weight decay {fmt(recipe.weight_decay)}; One Cycle from "
           f"`LR`/10 up to `LR` ({fmt(recipe.lr)}) at the peak epoch, then back down to `LR`/10 by the "
           f"last step, stepped every batch. {peak_note(recipe)}"),
        code(
            "criterion = make_criterion()\n"
            f'optimizer = make_optimizer("sgd", model.parameters(), lr=LR, momentum={fmt(recipe.momentum)}, '
            f"nesterov={recipe.nesterov},\n"
            f"                           weight_decay={fmt(recipe.weight_decay)})\n"
            f"{peak_code(recipe)}\n"
            "scheduler = one_cycle(optimizer, LR, EPOCHS, len(train_loader), peak_epoch=peak_epoch)\n"
            "peak_epoch"
        ),
    ]


def s7_notebook(name: str, recipe_name: str) -> nbformat.NotebookNode:
    recipe = get_recipe(recipe_name)
    spec = SPEC_NAMES[recipe.augment]
    if recipe_name == "s7":
        intro = (
            "Assignment S7: a CIFAR ResNet18 (BasicBlock, [2, 2, 2, 2], 3x3 stem, no max-pool; "
            "11,173,962 parameters) trained for 20 epochs on CIFAR-10 with RandomCrop(32, padding=4) and "
            "CutOut 16x16. Figures: loss and accuracy curves, ten misclassified test images, GradCAM on "
            "those ten, accuracy per class."
        )
        model_note = "The CIFAR ResNet18 from the kit's model registry (`create_model`)."
        gradcam_note = "`layer3` (8x8 on 32x32 images), since `layer4`'s 4x4 map is only a blob."
    else:
        intro = (
            "Assignment S7, lite variant: under 100k parameters, no max-pool, depthwise-separable "
            "convolutions, one dilated-convolution transition, one 1x1 transition and one strided 3x3 "
            f"transition, global average pooling; target {recipe.target_accuracy:g}% test accuracy on "
            f"CIFAR-10. Trained for {recipe.epochs} epochs with RandomCrop(32, padding=4) and CutOut 16x16."
        )
        model_note = ("`s7_lite` from the kit's model registry: under 100k parameters (the total is at the "
                      "bottom of the table).")
        gradcam_note = "the last block, `block4` (8x8 on 32x32 images)."
    cells = header(name, recipe.title, intro)
    params = cifar_parameters(
        recipe,
        [f"LR = {fmt(recipe.lr)}  # One Cycle's peak learning rate"],
        [S7_QUICK],
    )
    cells += [parameters_md(S7_QUICK_NOTE), code(params, tags=("parameters",))]
    cells += imports_cells(cifar_imports([
        "from era_utils.gradcam import default_target_layer_name, gradcam",
        f"from era_utils.transforms import {spec}",
    ], gradcam=True))
    cells += seed_cells()
    cells += data_cells("CIFAR-10 comes from torchvision (downloaded once into `DATA_DIR`).")
    cells += loader_cells(spec, "RandomCrop 32 after padding 4, CutOut 16x16")
    cells += model_cells(recipe.model, model_note)
    cells += optimizer_cells_s7(recipe)
    cells += training_cells(recipe.title.split(":")[0])
    cells += analysis_cells(gradcam_note)
    cells += closing_cells(recipe.name)
    return finish(cells)


# --------------------------------------------------------------------------- S10


def s10_notebook(name: str) -> nbformat.NotebookNode:
    recipe = get_recipe("s10")
    spec = SPEC_NAMES[recipe.augment]
    intro = (
        "Assignment S10: the custom ResNet (DAWNBench ResNet-9 shape: PrepLayer, Layer1 with a "
        "residual block, Layer2, Layer3 with a residual block, MaxPool(4), FC; bias-free, 6,573,120 "
        "parameters) trained on CIFAR-10 with batch 512, Adam and One Cycle over 24 epochs, peaking at "
        "epoch 5 with no annihilation phase. The maximum LR comes from an LR range test. Augmentation: "
        "RandomCrop 32 after padding 4, FlipLR, CutOut 8x8 filled with the dataset mean. Target 90%."
    )
    cells = header(name, recipe.title, intro)
    params = cifar_parameters(
        recipe,
        [f"LR_FINDER_ITERS = {recipe.lr_finder_iters}  # batches in the LR range test"],
        [S10_QUICK],
    )
    cells += [parameters_md(S10_QUICK_NOTE), code(params, tags=("parameters",))]
    cells += imports_cells(cifar_imports([
        "from era_utils.lr_finder import find_lr",
        f"from era_utils.transforms import {spec}",
    ], gradcam=False))
    cells += seed_cells()
    cells += data_cells("CIFAR-10 comes from torchvision (downloaded once into `DATA_DIR`).")
    cells += loader_cells(spec, "RandomCrop 32 after padding 4, FlipLR, CutOut 8x8 filled with the mean")
    cells += model_cells(recipe.model, "The S10 custom ResNet from the kit's model registry (`create_model`).")
    cells += [
        md(f"## LR range test\nOne batch per learning rate, rising exponentially from "
           f"{fmt(recipe.lr_finder_start)} to {fmt(recipe.lr_finder_end)}, with Adam (weight decay "
           f"{fmt(recipe.weight_decay)}). The suggestion ({SUGGESTION[recipe.lr_finder_method]}) is the "
           "one `era-utils run` uses. The model and the optimiser are put back as they were afterwards."),
        code(
            "criterion = make_criterion()\n"
            f'optimizer = make_optimizer("adam", model.parameters(), lr={fmt(recipe.lr_finder_start)}, '
            f"weight_decay={fmt(recipe.weight_decay)})\n"
            f"lr_test = find_lr(model, optimizer, criterion, train_loader, start_lr={fmt(recipe.lr_finder_start)}, "
            f"end_lr={fmt(recipe.lr_finder_end)},\n"
            f'                  num_iter=LR_FINDER_ITERS, method="{recipe.lr_finder_method}", device=device)\n'
            "lr_test.plot()"
        ),
        md("One Cycle with the suggested LR as its maximum: from max_lr/10 up to max_lr at the peak "
           "epoch, then linearly back to max_lr/10 at the last step (no annihilation phase). "
           f"{peak_note(recipe)} The scheduler is built only now, after the range test."),
        code(
            "max_lr = lr_test.suggestion\n"
            f'optimizer = make_optimizer("adam", model.parameters(), lr=max_lr, weight_decay={fmt(recipe.weight_decay)})\n'
            f"{peak_code(recipe)}\n"
            "scheduler = one_cycle(optimizer, max_lr, EPOCHS, len(train_loader), peak_epoch=peak_epoch)\n"
            "max_lr, peak_epoch"
        ),
    ]
    cells += training_cells("S10")
    cells += analysis_cells(None)
    cells += closing_cells(recipe.name)
    return finish(cells)


# --------------------------------------------------------------------------- HW2P2


HW2P2_IMPORTS = """
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from era_utils import get_device, set_seed, summary
from era_utils.analysis import get_misclassified, predict
from era_utils.data import FaceFolder, dataset_stats, read_pairs
from era_utils.engine import cosine_warm_restarts, fit, make_criterion, make_optimizer
from era_utils.loaders import load_splits, make_loaders
from era_utils.models import create_model
from era_utils.plots import plot_history, plot_lr, plot_misclassified, plot_samples
from era_utils.transforms import hw2p2_test_transform, hw2p2_train_transform, worker_init_fn
from era_utils.verification import (class_pairs, cosine_scores, embed, ids_for_pairs, plot_roc, submit_pairs,
                                    verification_metrics, verify_pairs, write_classification_csv,
                                    write_verification_csv)
"""


def hw2p2_notebook(name: str) -> nbformat.NotebookNode:
    recipe = get_recipe("hw2p2")
    intro = (
        "HW2P2: face classification over 7000 identities (224x224 RGB, one folder per identity) and "
        "face verification with the classifier's penultimate-layer embeddings (cosine similarity of "
        "each pair, ROC AUC on the labelled dev pairs), with both Kaggle CSVs written at the end. "
        "Recipe (seed 001): ResNet-34-style network, SGD lr 0.1, weight decay 1e-4, label smoothing "
        "0.2, cosine annealing with warm restarts (T_0 = 10 epochs, T_mult = 2), mixed precision, "
        "batch 128; torchvision augmentation (flip, rotation 12, grayscale, colour jitter, random "
        "erasing).\n\n"
        "Set `FACE_ROOT` to the unzipped Kaggle data to run the real assignment. Without it "
        "Fashion-MNIST stands in: each of its ten classes plays one identity, and pairs of test images "
        "of the same class play \"same person\" pairs, so every step runs anywhere."
    )
    cells = header(name, recipe.title.replace(" (and verification)", " and verification"), intro)
    params = "\n".join([
        "import os",
        "import tempfile",
        "",
        "FACE_ROOT = None  # folder with train/<identity>/*.jpg, dev/<identity>/*.jpg, test/*.jpg (Kaggle)",
        "DEV_PAIRS = None  # labelled verification pairs file (\"a b label\" per line)",
        "TEST_PAIRS = None  # unlabelled verification pairs file (\"a b\" per line)",
        "PAIRS_ROOT = None  # folder the pairs files' paths are relative to (None: the pairs file's folder)",
        "FACE_MEAN = (0.5116, 0.4026, 0.3519)  # per channel, measured on the HW2P2 train split (seed 001)",
        "FACE_STD = (0.3073, 0.2697, 0.2587)",
        "IMAGE_SIZE = 224",
        'DATASET = "fashion_mnist"  # the stand-in when FACE_ROOT is None',
        f'MODEL = "{recipe.model}"  # or "face_resnet50", "mobilenet_v2", "face_baseline"',
        f"EPOCHS = {recipe.epochs}",
        f"BATCH_SIZE = {recipe.batch_size}",
        f"LR = {fmt(recipe.lr)}  # SGD's learning rate at the start of every cosine cycle",
        "SUBSET = None  # stand-in only: train on N images (a stratified subset), or None for all",
        "TEST_SUBSET = None  # stand-in only: test on N images; None: all (or max(1000, SUBSET // 5))",
        "N_PAIRS = 4000  # stand-in only: verification pairs drawn from the test images, half of them same-class",
        "DEVICE = None  # None picks cuda, then mps, then cpu",
        'LOADER = "auto"  # stand-in only; HW2P2\'s rotation and colour jitter run per image on CPU workers',
        "NUM_WORKERS = 2  # DataLoader worker processes (Colab has 2 CPU cores)",
        "DATA_DIR = None",
        "DOWNLOAD = True",
        "RESUME = False  # continue from OUT/checkpoint.pt after a Colab session died",
        f'OUT = "results/{recipe.name}"  # checkpoint, history and the two Kaggle CSVs',
        f"SEED = {recipe.seed}",
        quick_block([
            HW2P2_QUICK,
            "TEST_SUBSET, N_PAIRS, NUM_WORKERS = 500, 2000, 0",
            f'OUT = os.path.join(tempfile.gettempdir(), "era_utils_quick", "{recipe.name}")',
        ]),
    ])
    cells += [parameters_md(HW2P2_QUICK_NOTE), code(params, tags=("parameters",))]
    cells += imports_cells(HW2P2_IMPORTS)
    cells += seed_cells()
    cells += [
        md("## Data\n"
           "With `FACE_ROOT`: the HW2P2 folders (labels are the identity folder names; the flat test/ "
           "split is unlabelled), normalised with the train split's own mean and std. Without it: "
           "Fashion-MNIST as uint8 arrays (`load_splits`, as `era-utils run hw2p2` loads it), each class "
           "one \"identity\"; its test split plays both the dev and the test split. Both go through the "
           "same torchvision augmentation (`hw2p2_train_transform`); evaluation only normalises."),
        code(
            "if FACE_ROOT:\n"
            "    mean, std = FACE_MEAN, FACE_STD\n"
            '    train_set = FaceFolder(FACE_ROOT, "train", hw2p2_train_transform(mean, std, size=IMAGE_SIZE))\n'
            '    dev_set = FaceFolder(FACE_ROOT, "dev", hw2p2_test_transform(mean, std, size=IMAGE_SIZE))\n'
            '    test_set = FaceFolder(FACE_ROOT, "test", hw2p2_test_transform(mean, std, size=IMAGE_SIZE))\n'
            "    classes, test_ids, input_size = train_set.classes, test_set.ids, (3, IMAGE_SIZE, IMAGE_SIZE)\n"
            "else:\n"
            "    train, dev = load_splits(DATASET, root=DATA_DIR, download=DOWNLOAD, subset=SUBSET,\n"
            "                             test_subset=TEST_SUBSET, seed=SEED)\n"
            "    mean, std = dataset_stats(DATASET)\n"
            "    classes, test_ids, input_size = train.classes, np.arange(len(dev)).astype(str), (1, 32, 32)\n"
            "len(classes), input_size"
        ),
        md("DataLoaders: the augmentation runs per image in `NUM_WORKERS` worker processes "
           "(`worker_init_fn` gives each worker its own random stream). The stand-in's loaders come "
           "from `make_loaders`, the runner's call: HW2P2's rotation and colour jitter are per-image "
           "transforms, so `LOADER = \"auto\"` picks the worker path here. The dev and test loaders "
           "keep their order, so predictions line up with the image ids."),
        code(
            "if FACE_ROOT:\n"
            '    loader_args = dict(num_workers=NUM_WORKERS, pin_memory=device.type == "cuda")\n'
            "    train_loader = DataLoader(train_set, BATCH_SIZE, shuffle=True, worker_init_fn=worker_init_fn,\n"
            "                              **loader_args)\n"
            "    dev_loader = DataLoader(dev_set, BATCH_SIZE, shuffle=False, **loader_args)\n"
            "    test_loader = DataLoader(test_set, BATCH_SIZE, shuffle=False, **loader_args)\n"
            "else:\n"
            "    train_loader, dev_loader = make_loaders(train, dev, hw2p2_train_transform(mean, std, size=None),\n"
            "                                            mean, std, BATCH_SIZE, loader=LOADER, device=device,\n"
            "                                            seed=SEED, num_workers=NUM_WORKERS)\n"
            "    test_loader = dev_loader\n"
            "len(train_loader), len(dev_loader), len(test_loader)"
        ),
        md("One augmented training batch, as the network sees it (normalisation undone for display): "
           "flips, small rotations, the odd grayscale image, colour jitter and an erased patch."),
        code("images, labels = next(iter(train_loader))\n"
             'plot_samples(images, labels, classes, mean=mean, std=std, title="An augmented training batch")'),
        md("## Model\n"
           f"`{recipe.model}`: a ResNet-34 with the ImageNet stem (7x7 stride 2, max-pool) for 224x224 "
           "faces; one output per identity. Its `embed(x)` returns the pooled penultimate features, "
           "the face embedding used for verification below."),
        code("model = create_model(MODEL, num_classes=len(classes), in_channels=input_size[0]).to(device)\n"
             "summary(model, input_size)"),
        md(f"Optimiser, loss and schedule (seed 001): SGD with `LR` = {fmt(recipe.lr)}, momentum "
           f"{fmt(recipe.momentum)}, weight decay {fmt(recipe.weight_decay)}; cross-entropy with label "
           f"smoothing {fmt(recipe.label_smoothing)}; cosine annealing restarting at epochs "
           f"{recipe.restart_epochs}, {3 * recipe.restart_epochs}, {7 * recipe.restart_epochs}, ... "
           f"(T_0 = {recipe.restart_epochs}, T_mult = 2), stepped every batch."),
        code(
            f"criterion = make_criterion(label_smoothing={fmt(recipe.label_smoothing)})\n"
            f'optimizer = make_optimizer("sgd", model.parameters(), lr=LR, momentum={fmt(recipe.momentum)}, '
            f"weight_decay={fmt(recipe.weight_decay)})\n"
            f"scheduler = cosine_warm_restarts(optimizer, len(train_loader), T_0={recipe.restart_epochs}, T_mult=2)"
        ),
        md("## Classification\n"
           "Train, validating on the dev split after every epoch. A checkpoint is written to `OUT` after "
           "each epoch: Colab sessions die, and `RESUME = True` carries on from the last one."),
        code('history = fit(model, train_loader, dev_loader, optimizer, EPOCHS, criterion=criterion, scheduler=scheduler,\n'
             '              device=device, checkpoint_path=Path(OUT) / "checkpoint.pt", resume=RESUME)'),
        md("Loss and accuracy per epoch (the train loss includes the label smoothing, so it never "
           "reaches zero)."),
        code('plot_history(history, title="HW2P2 classification: loss and accuracy")'),
        md("The learning rate per step: cosine decay, restarting at epochs 10, 30, 70, ..."),
        code("plot_lr(history, steps_per_epoch=len(train_loader))"),
        md("Ten misclassified dev images with the true and the predicted identity."),
        code("wrong = get_misclassified(model, dev_loader, n=10, device=device, mean=mean, std=std)\n"
             "plot_misclassified(wrong, classes)"),
        md("Predict the test split and write the Kaggle classification CSV (`id,label`: the image file "
           "and its predicted identity)."),
        code("test_preds = predict(model, test_loader, device)\n"
             'write_classification_csv(Path(OUT) / "classification_submission.csv", test_ids, test_preds.preds, classes)'),
        md("## Verification\n"
           "A pair of faces is the same person when their embeddings point the same way. With "
           "`FACE_ROOT`: read the labelled dev pairs and score each pair's cosine similarity "
           "(every distinct image is embedded once). Stand-in: embed the test images (unit-length "
           "rows) and draw `N_PAIRS` balanced pairs with `class_pairs`: half of them two images of the "
           "same class (label 1, \"same person\"), half two images of different classes (label 0)."),
        code(
            "if FACE_ROOT:\n"
            "    dev_pairs = read_pairs(DEV_PAIRS, root=PAIRS_ROOT)\n"
            "    metrics = verify_pairs(model, dev_pairs, hw2p2_test_transform(mean, std, size=IMAGE_SIZE), device=device)\n"
            "else:\n"
            "    embeddings = embed(model, dev_loader, device=device)  # (N, D), unit rows\n"
            "    a, b, same = class_pairs(dev.labels, N_PAIRS, seed=SEED)  # image indices; 1 = same class\n"
            "    scores = cosine_scores(embeddings[a], embeddings[b])  # (N_PAIRS,) in [-1, 1]\n"
            "    metrics = verification_metrics(same, scores)\n"
            "metrics"
        ),
        md("The ROC curve of the similarity scores: its area (AUC, the Kaggle metric) and the equal "
           "error rate, where false accepts and false rejects are equally frequent; its threshold is the "
           "one to use for same/different decisions."),
        code('plot_roc(metrics, title="Verification ROC (dev pairs)")'),
        md("Score the unlabelled test pairs and write the Kaggle verification CSV (`Id,Category`: the "
           "pair's two paths and its similarity). The stand-in writes its own pairs, by image index."),
        code(
            'verification_csv = Path(OUT) / "verification_submission.csv"\n'
            "if FACE_ROOT:\n"
            "    test_pairs = read_pairs(TEST_PAIRS, root=PAIRS_ROOT, labelled=False)\n"
            "    submit_pairs(model, test_pairs, hw2p2_test_transform(mean, std, size=IMAGE_SIZE), verification_csv,\n"
            "                 device=device)\n"
            "else:\n"
            "    pair_ids = ids_for_pairs(list(zip(a.astype(str), b.astype(str))))  # \"a b\", like the pairs file\n"
            "    write_verification_csv(verification_csv, pair_ids, scores)\n"
            "verification_csv.read_text().splitlines()[:4]"
        ),
        md("Save the history next to the checkpoint and the CSVs."),
        code('history.to_json(Path(OUT) / "history.json")'),
        md("`era-utils run hw2p2 --dataset fashion_mnist` runs the classification part of this recipe "
           "headless on the stand-in data."),
    ]
    return finish(cells)


# --------------------------------------------------------------------------- writing / running


def finish(cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "accelerator": "GPU",  # Colab opens it on a GPU runtime
        "colab": {"provenance": [], "gpuType": "T4"},
    }
    # Stable ids, so a regenerated notebook differs from the committed one only where it changed.
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    nbformat.validate(nb)
    return nb


BUILDERS = {
    "s7_resnet18_gradcam": lambda name: s7_notebook(name, "s7"),
    "s7_lite": lambda name: s7_notebook(name, "s7_lite"),
    "s10_custom_resnet_one_cycle": s10_notebook,
    "hw2p2_faces": hw2p2_notebook,
}


def _overwrite_line(line: str) -> str:
    """A line as a terminal shows it: each carriage return restarts it, later text overwrites earlier."""
    shown = ""
    for part in line.split("\r"):
        shown = part + shown[len(part):]
    return shown.rstrip()


# Warnings only the CI kernel prints, with the line that follows each (the source line quoted):
# the CI venv has no ipywidgets, Colab does, so a student never sees this one.
CI_ONLY_WARNINGS = ("TqdmWarning: IProgress not found",)


def _without_ci_warnings(lines: list[str]) -> list[str]:
    kept, skip = [], False
    for line in lines:
        if any(warning in line for warning in CI_ONLY_WARNINGS):
            skip = True  # drop it and the quoted source line after it
            continue
        if skip and line.startswith("  "):
            skip = False
            continue
        skip = False
        kept.append(line)
    return kept


def coalesce_streams(cell: nbformat.NotebookNode) -> None:
    """Merge consecutive stream outputs and keep what Jupyter displays of progress bars (their last
    state), so the committed file holds one line per bar instead of every redraw."""
    merged: list = []
    for output in cell.get("outputs", []):
        if (output.output_type == "stream" and merged and merged[-1].output_type == "stream"
                and merged[-1].name == output.name):
            merged[-1].text += output.text
        else:
            merged.append(output)
    kept = []
    for output in merged:
        if output.output_type == "stream":
            lines = [_overwrite_line(line) for line in output.text.replace("\r\n", "\n").split("\n")]
            lines = _without_ci_warnings(lines)
            output.text = "\n".join(line for line in lines if line) + "\n"
            if not output.text.strip():
                continue
        kept.append(output)
    cell.outputs = kept


def execute(nb: nbformat.NotebookNode, timeout: int) -> float:
    """Run `nb` in quick mode in notebooks/ (cells tagged skip-execution are skipped); return seconds."""
    from nbclient import NotebookClient

    os.environ[QUICK_ENV] = "1"  # the kernel inherits the environment
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    for cell in nb.cells:
        if cell.cell_type == "code":
            coalesce_streams(cell)
    return seconds


def same_cells(name: str) -> bool:
    """Do the committed notebook's cells (type, source, tags) match what the builder writes now?"""
    path = NOTEBOOKS / f"{name}.ipynb"
    if not path.is_file():
        return False

    def key(nb: nbformat.NotebookNode) -> list:
        return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]

    return key(nbformat.read(path, as_version=4)) == key(BUILDERS[name](name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"notebooks to write (default: all of {list(BUILDERS)})")
    parser.add_argument("--execute", action="store_true",
                        help=f"run each notebook with {QUICK_ENV}=1 and save it with its outputs")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; fail if the committed cells differ from the generated ones")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell when executing")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BUILDERS))
    if unknown:
        parser.error(f"unknown notebook(s) {unknown}; choose from {list(BUILDERS)}")
    if args.check:
        stale = [name for name in args.names or list(BUILDERS) if not same_cells(name)]
        for name in stale:
            print(f"notebooks/{name}.ipynb differs from scripts/make_notebooks.py: regenerate it "
                  "(python scripts/make_notebooks.py --execute)")
        return 1 if stale else 0
    NOTEBOOKS.mkdir(exist_ok=True)
    for name in args.names or list(BUILDERS):
        nb = BUILDERS[name](name)
        path = NOTEBOOKS / f"{name}.ipynb"
        if args.execute:
            seconds = execute(nb, args.timeout)
            print(f"{path.relative_to(ROOT)}: executed in quick mode in {seconds:.0f} s")
        nbformat.write(nb, path)
        print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
