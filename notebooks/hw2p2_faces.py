# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
#     provenance: []
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   language_info:
#     name: python
# ---

# %% [markdown]
# # HW2P2: face classification and verification with a ResNet-34
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/era-course/era_utils/blob/main/notebooks/hw2p2_faces.ipynb)
#
# HW2P2: face classification over 7000 identities (224x224 RGB, one folder per identity) and face
# verification with the classifier's penultimate-layer embeddings (cosine similarity of each pair,
# ROC AUC on the labelled dev pairs), with both Kaggle CSVs written at the end. The recipe (seed
# 001): a ResNet-34-style network, SGD with momentum and weight decay, label smoothing, cosine
# annealing with warm restarts, mixed precision; torchvision augmentation (flip, rotation,
# grayscale, colour jitter, random erasing). Its numbers live in `era_utils.recipes` and are read
# when the notebook runs.
#
# Set `DATASET = "faces"` and `DATA_DIR` to the unzipped Kaggle data (and the pairs files) to run
# the real assignment. By default Fashion-MNIST stands in, so every step runs anywhere: its classes
# play identities; a few are held out of classification training, and pairs of their test images
# (same class: "same person") are what verification scores.
#
# > **About the outputs shown here.** They come from this notebook's preview run (`SIZE = "preview"`:
# > the recipe on a Fashion-MNIST subset for a few epochs, minutes on a 2-core CPU; the table under
# > "The run" gives its numbers and the machine), made by `scripts/build_notebooks.py --execute`. The
# > model learns, but this is not the assignment's result: open the notebook in Colab with a GPU
# > runtime and run all cells for the full recipe. CI runs it as a quick smoke run (`SIZE = "quick"`).

# %% [markdown]
# ## Set-up
# Install era_utils from GitHub (Colab already has torch and torchvision and keeps them), and the
# Kaggle CLI for the competition data. In CI this cell is skipped (its tag is `skip-execution`): the
# kit is installed there already.

# %% tags=["skip-execution"]
# %pip install -q git+https://github.com/era-course/era_utils.git kaggle

# %% [markdown]
# Stop here if the install failed: "Run all" would otherwise go on and fail further down, with a less
# clear message.

# %%
import importlib.util

if importlib.util.find_spec("era_utils") is None:
    raise ModuleNotFoundError("era_utils is not installed: the install cell above failed (its output says why), "
                              "or the runtime was restarted since. Run the install cell again, then Run all.")

# %% [markdown]
# Parameters. `None` means "as the recipe says". `SIZE`: "full" is the assignment (on a GPU: minutes;
# on a CPU: hours, and the run says so before it starts), "preview" the recipe on a Fashion-MNIST subset
# in minutes on a CPU, "quick" CI's smoke run. The cell is tagged `parameters`, so the notebook also
# runs headless, e.g. `papermill NAME.ipynb out.ipynb -p SIZE preview`; the environment variable
# `ERA_UTILS_SIZE` sets `SIZE` too (CI: quick).

# %% tags=["parameters"]
import os

RECIPE = "hw2p2"  # the assignment's recipe in era_utils.recipes
SIZE = os.environ.get("ERA_UTILS_SIZE", "full")  # "full" (the assignment), "preview" or "quick" (CI)
DATASET = "fashion_mnist"  # the stand-in; "faces": the Kaggle folders in DATA_DIR
DATA_DIR = None  # faces: the folder with train/<identity>/*.jpg, dev/<identity>/*.jpg, test/*.jpg
DEV_PAIRS = None  # faces: the labelled verification pairs file ("a b label" per line)
TEST_PAIRS = None  # faces: the unlabelled verification pairs file ("a b" per line)
PAIRS_ROOT = None  # faces: the folder the pairs files' paths are relative to (None: the file's folder)
EPOCHS = None  # None: the recipe's
LOSS = None  # None: the recipe's, "cross_entropy"; "arcface", "cosface" or "center" (cross-entropy + center loss)
TTA = None  # verification embeddings: None or "none" as they are; "flip": averaged with the mirror image's
SUBSET = None  # stand-in: train on N images (a stratified subset); None: all of them
TEST_SUBSET = None  # stand-in: test on N images; None: all (or max(1000, SUBSET // 5) with a SUBSET)
DEVICE = None  # None picks cuda, then mps, then cpu
NUM_WORKERS = None  # DataLoader worker processes; None: 2 (Colab has 2 CPU cores), 0 in the quick run
DOWNLOAD = True  # stand-in: fetch Fashion-MNIST with torchvision if it is not there (Colab)
OUT = None  # checkpoint, history and the two Kaggle CSVs; None: runs/RECIPE (Drive: see USE_DRIVE)
RESUME = False  # carry on from OUT/checkpoint.pt after a Colab session died
LOG = "csv,tensorboard"  # loggers: csv (OUT/log.csv), tensorboard (OUT/tensorboard/), wandb; None: none
USE_DRIVE = False  # Colab: keep OUT on Google Drive, so a recycled runtime can resume from it
KAGGLE_COMPETITIONS = ()  # e.g. ("11-785-s22-hw2p2-classification", "11-785-s22-hw2p2-verification")
COMPARE = []  # folders of earlier runs to put side by side after this one's verification (e.g. one per LOSS)
NPROC = None  # None: this notebook trains; N: the whole run in N new processes, one per GPU (Kaggle's T4 x2: 2)

# %% [markdown]
# Imports: every step below is one call into era_utils (no model or training loop is defined in
# this notebook). `era-utils run hw2p2` runs the same steps headless, verification included.

# %%
# %matplotlib inline
from era_utils import plots, summary
from era_utils.cli import run_in_processes
from era_utils.kaggle import download_competition, write_classification_csv, write_verification_csv
from era_utils.loaders import augment_examples
from era_utils.plan import plan_run
from era_utils.steps import (build_loaders, build_model, kaggle_predictions, load_data, optimizer_and_schedule, start,
                             final_predictions, train, verify)

# %% [markdown]
# Optional, in Colab: keep `OUT` (the checkpoint, history and CSVs) on Google Drive. A Colab runtime
# is recycled after a while and takes its disk with it; with the checkpoint on Drive, `RESUME = True`
# carries on from the last epoch in a new runtime.

# %%
if USE_DRIVE:
    from google.colab import drive

    drive.mount("/content/drive")
    OUT = OUT or "/content/drive/MyDrive/era_utils/hw2p2"

# %% [markdown]
# Optional: download the competition data with the Kaggle CLI into `DATA_DIR` (default
# `data/hw2p2`), then point `DATA_DIR` at the folder that holds train/, dev/ and test/ and set the
# pairs files. The key is never written here: the CLI reads `KAGGLE_USERNAME` and `KAGGLE_KEY` from
# the environment or from Colab's Secrets (the key icon on the left), and the competitions' rules must
# be accepted on kaggle.com first.

# %%
if KAGGLE_COMPETITIONS:
    DATA_DIR = str(download_competition(KAGGLE_COMPETITIONS, DATA_DIR or "data/hw2p2"))

# %% [markdown]
# ### Several GPUs (Kaggle's two T4s)
# The cells below train in this notebook's own process, on one GPU. With `NPROC = 2` (Kaggle:
# Settings > Accelerator > GPU T4 x2) this cell runs the whole recipe instead, with this notebook's
# parameters, as `era-utils run hw2p2 --nproc 2`: two new processes, one per GPU, training together
# under torch's DistributedDataParallel (the batch split between them), and the first of them writes
# every figure, report.md and both Kaggle CSVs to `OUT`. Then it stops "Run all", since the cells below
# would train again in one process. Nothing above this cell uses the GPU; keep it so, or restart the
# kernel first: a kernel that has used CUDA holds memory on GPU 0 that the first process then lacks.

# %%
if NPROC:
    run_in_processes(RECIPE, NPROC, size=SIZE, dataset=DATASET, data_dir=DATA_DIR, download=DOWNLOAD, subset=SUBSET,
                     test_subset=TEST_SUBSET, epochs=EPOCHS, loss=LOSS, tta=TTA, device=DEVICE,
                     num_workers=NUM_WORKERS, out=OUT, resume=RESUME, dev_pairs=DEV_PAIRS, test_pairs=TEST_PAIRS, pairs_root=PAIRS_ROOT, log=LOG)
    raise SystemExit(f"Trained in {NPROC} processes: the figures, report.md and both Kaggle CSVs are in "
                     f"{OUT or 'runs/' + RECIPE}. The cells below would train again in this one process.")

# %% [markdown]
# ## The run
# The plan: the recipe with this notebook's parameters, the device, and how the run uses it (on a
# GPU: bf16 or fp16 autocast, channels_last, `torch.compile`, fused optimizer kernels).

# %%
plan = plan_run(RECIPE, size=SIZE, dataset=DATASET, data_dir=DATA_DIR, download=DOWNLOAD, subset=SUBSET,
                test_subset=TEST_SUBSET, epochs=EPOCHS, loss=LOSS, tta=TTA, device=DEVICE, num_workers=NUM_WORKERS,
                out=OUT, resume=RESUME, dev_pairs=DEV_PAIRS, test_pairs=TEST_PAIRS, pairs_root=PAIRS_ROOT, log=LOG)
plan

# %% [markdown]
# Seed python, numpy and torch with the recipe's seed, so a rerun gives the same numbers on the
# same machine, and switch on cuDNN's autotuner on a GPU.

# %%
start(plan)

# %% [markdown]
# ## Data
# The faces: the HW2P2 folders (labels are the identity folder names; the flat test/ split is
# unlabelled), normalised with the train split's own mean and std. The stand-in: Fashion-MNIST as
# uint8 arrays, each class one "identity", its test split playing the dev split, a few classes kept
# apart for verification. The first ten training images:

# %%
data = load_data(plan)
plots.plot_samples(*data.samples(), data.classes, title=f"Sample training images ({data.title})")

# %% [markdown]
# The loaders. On a GPU the augmentation (flip, rotation, grayscale, colour jitter, random erasing)
# runs on whole batches there, each image with its own draws, as torchvision draws them; with the
# faces, the JPEGs are decoded there too (nvJPEG) and the `NUM_WORKERS` worker processes only read
# the files, so Colab's two CPU cores never hold the GPU back. On a CPU the same augmentation runs
# per image in the workers (torchvision), which is faster there. The plan's table above says which
# this run uses and why. The dev (test) loader keeps its order, so predictions line up with the ids.

# %%
train_loader, test_loader = build_loaders(plan, data)
len(train_loader), len(test_loader)

# %% [markdown]
# Five training images (top) and the same five as the training loader augments them, twice: flips,
# small rotations, the odd grayscale image, colour jitter and an erased patch.

# %%
originals, labels = data.samples()
plots.plot_augmentations(originals, augment_examples(train_loader, originals), labels, data.classes,
                         mean=data.mean, std=data.std)

# %% [markdown]
# ## Model
# A ResNet-34 with the ImageNet stem (7x7 stride 2, max-pool) for 224x224 faces, one output per
# identity. Its pooled penultimate features are the face embedding verification uses below. With
# `LOSS = "arcface"` or `"cosface"` its classifier is a margin head (the cosine between the embedding
# and each identity's weight vector, scaled), with `"center"` a linear classifier that also keeps
# each identity's centre: the last lines of the summary show which.

# %%
model = build_model(plan, data)
summary(model, data.input_size)

# %% [markdown]
# The optimizer and schedule as the recipe (seed 001) builds them: SGD with momentum and weight
# decay, cosine annealing that restarts after the recipe's first cycle and then after cycles twice
# as long each time, stepped every batch. The loss is `LOSS` (the plan's table names it): the seed's
# cross-entropy with label smoothing by default.

# %%
optimizer, scheduler = optimizer_and_schedule(plan, model, train_loader)
optimizer

# %% [markdown]
# ## Classification
# Train, validating on the dev split after every epoch. A checkpoint goes to the plan's folder (at
# most once a minute and after the last epoch): Colab sessions die, and `RESUME = True` carries on
# from it.

# %%
history = train(plan, model, train_loader, test_loader, optimizer, scheduler)

# %% [markdown]
# The run's loss, accuracy and LR per epoch (and LR per step) also went to the loggers in `LOG`.
# In Colab this cell opens TensorBoard beside the notebook; elsewhere it says how to start it.

# %%
import sys

if "google.colab" in sys.modules:  # a Colab runtime
    get_ipython().run_line_magic("load_ext", "tensorboard")  # noqa: F821 - IPython's, in a notebook
    get_ipython().run_line_magic("tensorboard", f"--logdir {plan.out.parent}")  # noqa: F821
else:
    print(f"TensorBoard: run `tensorboard --logdir {plan.out.parent}` in a terminal and open http://localhost:6006")

# %% [markdown]
# Loss and accuracy per epoch (the training loss includes the label smoothing, so it never reaches
# zero; training images are augmented, so the dev accuracy can sit above the training accuracy).

# %%
plots.plot_history(history, title=f"HW2P2 classification on {data.title}: loss and accuracy")

# %% [markdown]
# The learning rate per step: cosine decay with warm restarts.

# %%
plots.plot_lr(history, steps_per_epoch=len(train_loader))

# %% [markdown]
# The last epoch's pass over the dev (test) split, which `train` kept: every prediction, its confidence and loss.

# %%
preds = final_predictions(plan, model, test_loader, history)  # the last epoch's test pass, kept by train
f"test accuracy {preds.accuracy:.2f}%"

# %% [markdown]
# Ten misclassified dev images with the true and the predicted identity.

# %%
plots.plot_misclassified(preds.misclassified(), data.classes)

# %% [markdown]
# ## Verification
# A pair of faces is the same person when their penultimate-layer embeddings point the same way.
# Faces: the labelled dev pairs file, every distinct image embedded once. Stand-in: the classes held
# out of classification training play identities the model never saw (as HW2P2's verification pairs
# are); balanced pairs of their test images, half of them two images of the same class (label 1,
# "same person").

# %%
result = verify(plan, data, model)
result.metrics

# %% [markdown]
# With `TTA = "flip"` each embedding is the average of the image's and its mirror image's (both
# L2-normalised first), and the pairs are scored without it too, to see what it gained:

# %%
result.without_flip or "TTA is off: the embeddings are the images' own"

# %% [markdown]
# The ROC curve of the similarity scores: its area (AUC, the Kaggle metric) and the equal error
# rate, where false accepts and false rejects are equally frequent; its threshold is the one to use
# for same/different decisions.

# %%
plots.plot_roc(result.metrics, title=result.title)

# %% [markdown]
# ### Which loss?
# Softmax embeddings separate the identities the classifier was trained on; the pairs are of others.
# Margin losses (ArcFace, CosFace) train the cosines verification reads, center loss pulls each
# identity's embeddings together. Measured at preview size on the stand-in, seeds 1-3 each (mean ±
# standard deviation), by `scripts/hw2p2_losses.sh` on a 2-core Intel Xeon in bf16, 2026-12-06 (the
# whole table, the ROC curves and how they were made:
# [results/hw2p2_losses](https://github.com/era-course/era_utils/blob/main/results/hw2p2_losses/comparison.md)):
#
# | `LOSS` | test accuracy % | AUC (flip) | AUC (no flip) | EER (flip) |
# |---|---:|---:|---:|---:|
# | cross-entropy (the recipe's) | 85.05 ± 0.33 | 0.797 ± 0.022 | 0.794 ± 0.023 | 0.272 ± 0.013 |
# | ArcFace | 83.82 ± 1.19 | 0.803 ± 0.027 | 0.802 ± 0.030 | 0.264 ± 0.018 |
# | CosFace | 83.98 ± 1.19 | 0.822 ± 0.021 | 0.816 ± 0.023 | 0.254 ± 0.016 |
# | cross-entropy + center loss | 83.68 ± 0.14 | 0.819 ± 0.035 | 0.808 ± 0.031 | 0.267 ± 0.032 |
#
# On 7 training classes no loss is more than a seed's spread above cross-entropy: margin losses are made
# for thousands of identities, which only the real data has. Flip averaging adds a little to each.
# To compare your own runs, set `COMPARE` to their folders (`OUT` of each `era-utils run`, which writes
# what this reads), e.g. `COMPARE = ["runs/hw2p2_ce", "runs/hw2p2_arcface"]`.

# %%
if COMPARE:
    from era_utils.compare import compare_runs, comparison_table, plot_comparison

    rows = compare_runs(COMPARE)
    print(comparison_table(rows))
    plot_comparison(rows, title="HW2P2: runs side by side")

# %% [markdown]
# The Kaggle verification CSV (`Id,Category`: the pair's two paths and its similarity).

# %%
write_verification_csv(plan.out / "verification_submission.csv", result.test_ids, result.test_scores)

# %% [markdown]
# The Kaggle classification CSV (`id,label`: each test image and its predicted identity).

# %%
write_classification_csv(plan.out / "classification_submission.csv", *kaggle_predictions(plan, data, model, preds),
                         data.classes)

# %% [markdown]
# Save the history next to the checkpoint and the CSVs.

# %%
history.to_json(plan.out / "history.json")
