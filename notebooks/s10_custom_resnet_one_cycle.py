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
# # S10: the custom ResNet with One Cycle
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/era-course/era_utils/blob/main/notebooks/s10_custom_resnet_one_cycle.ipynb)
#
# Assignment S10: the custom ResNet (the DAWNBench ResNet-9 shape: PrepLayer, Layer1 with a
# residual block, Layer2, Layer3 with a residual block, MaxPool(4), FC; bias-free, 6,573,120
# parameters on CIFAR-10) trained with Adam and One Cycle, peaking early with no annihilation
# phase. Both ends of the cycle come from an LR range test. Augmentation: RandomCrop 32 after
# padding, FlipLR, CutOut filled with the dataset mean. The recipe's numbers live in
# `era_utils.recipes` and are read when the notebook runs (the table under "The run").
#
# > **About the outputs shown here.** They come from this notebook's preview run (`SIZE = "preview"`:
# > the recipe on a Fashion-MNIST subset for a few epochs, minutes on a 2-core CPU; the table under
# > "The run" gives its numbers and the machine), made by `scripts/build_notebooks.py --execute`. The
# > model learns, but this is not the assignment's result: open the notebook in Colab with a GPU
# > runtime and run all cells for the full recipe. CI runs it as a quick smoke run (`SIZE = "quick"`).

# %% [markdown]
# ## Set-up
# Install era_utils from GitHub (Colab already has torch and torchvision and keeps them). In CI
# this cell is skipped (its tag is `skip-execution`): the kit is installed there already.

# %% tags=["skip-execution"]
# %pip install -q git+https://github.com/era-course/era_utils.git

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

RECIPE = "s10"  # the assignment's recipe in era_utils.recipes
SIZE = os.environ.get("ERA_UTILS_SIZE", "full")  # "full" (the assignment), "preview" or "quick" (CI)
DATASET = None  # None: the recipe's (CIFAR-10); "fashion_mnist" runs anywhere, offline
EPOCHS = None  # None: the recipe's
SUBSET = None  # train on N images (a stratified subset); None: all of them
TEST_SUBSET = None  # test on N images; None: all (or max(1000, SUBSET // 5) with a SUBSET)
DEVICE = None  # None picks cuda, then mps, then cpu
LOADER = "auto"  # "gpu": augment whole batches on the device; "workers": per image on CPU workers
DATA_DIR = None  # None: ./data for CIFAR-10, the system folder for Fashion-MNIST
DOWNLOAD = True  # fetch the dataset with torchvision if it is not there (Colab)
OUT = None  # checkpoint and history; None: runs/RECIPE
RESUME = False  # carry on from OUT/checkpoint.pt after a Colab session died
LOG = "csv,tensorboard"  # loggers: csv (OUT/log.csv), tensorboard (OUT/tensorboard/), wandb; None: none

# %% [markdown]
# Imports: every step below is one call into era_utils (no model or training loop is defined in
# this notebook). `era-utils run s10` runs the same steps headless.

# %%
# %matplotlib inline
from era_utils import plots, summary
from era_utils.analysis import confusion_matrix, most_confused, per_class_accuracy
from era_utils.loaders import augment_examples
from era_utils.plan import plan_run
from era_utils.steps import (build_loaders, build_model, load_data, optimizer_and_schedule, range_test,
                             start, final_predictions, train)

# %% [markdown]
# ## The run
# The plan: the recipe with this notebook's parameters, the device, and how the run uses it (on a
# GPU: bf16 or fp16, channels_last, `torch.compile`, fused optimizer kernels).

# %%
plan = plan_run(RECIPE, size=SIZE, dataset=DATASET, data_dir=DATA_DIR, download=DOWNLOAD, subset=SUBSET,
                test_subset=TEST_SUBSET, epochs=EPOCHS, device=DEVICE, loader=LOADER, out=OUT, resume=RESUME, log=LOG)
plan

# %% [markdown]
# Seed python, numpy and torch with the recipe's seed, so a rerun gives the same numbers on the
# same machine, and switch on cuDNN's autotuner on a GPU.

# %%
start(plan)

# %% [markdown]
# ## Data
# The training and test splits as uint8 arrays (N, H, W, C), with the training split's per-channel
# mean and std (Normalize uses them; CutOut fills its hole with the mean). The first ten training
# images with their class names:

# %%
data = load_data(plan)
plots.plot_samples(*data.samples(), data.classes, title=f"Sample training images ({data.title})")

# %% [markdown]
# The loaders. On the "gpu" path the whole dataset sits on the device and the augmentation runs on
# whole batches there, so Colab's two CPU cores never starve the GPU; the "workers" path applies the
# same augmentation per image with albumentations. The test loader only normalises.

# %%
train_loader, test_loader = build_loaders(plan, data)
train_loader

# %% [markdown]
# Check the augmentation: five training images (top) and the same five as the training loader
# augments them, twice (below).

# %%
originals, labels = data.samples()
plots.plot_augmentations(originals, augment_examples(train_loader, originals), labels, data.classes,
                         mean=data.mean, std=data.std)

# %% [markdown]
# ## Model
# The S10 custom ResNet from the kit's model registry. `summary` lists every layer with its input,
# output and kernel shapes, parameters and mult-adds.

# %%
model = build_model(plan, data)
summary(model, data.input_size)

# %% [markdown]
# ## LR range test
# One batch per learning rate, rising exponentially, with the recipe's optimizer; the model and the
# optimizer are put back as they were afterwards. The assignment asks for both ends of the cycle
# from it ("LRMIN = FIND, LRMAX = FIND"): the figure marks the loss minimum, the max LR and the min
# LR, each with the rule that picked it.

# %%
lr_test = range_test(plan, model, train_loader)
lr_test.plot()

# %% [markdown]
# One Cycle between the range test's two LRs: from the min LR up to the max LR at the recipe's peak
# epoch (the same share of a shorter run), then linearly back down to the min LR, with no annihilation
# phase; stepped every batch. The recipe builds the optimizer and the schedule; the scheduler exists
# only now, after the test.

# %%
optimizer, scheduler = optimizer_and_schedule(plan, model, train_loader, lr_test)
optimizer

# %% [markdown]
# ## Training
# `train` runs `fit` for the recipe's epochs, stepping the scheduler after every batch and
# evaluating on the test set after each epoch; it returns a `History` (loss and accuracy per epoch,
# LR per step) and keeps a checkpoint in the plan's folder.

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
# Loss and accuracy per epoch, train and test. Training images are augmented (CutOut, crops), so the
# test accuracy can sit above the training accuracy.

# %%
plots.plot_history(history, title=f"S10 on {data.title}: loss and accuracy")

# %% [markdown]
# The learning rate at every optimizer step: the One Cycle ramp up to the peak and back down.

# %%
plots.plot_lr(history, steps_per_epoch=len(train_loader))

# %% [markdown]
# ## What the model gets wrong
# The last epoch's test pass, which `train` kept: every figure below reads it (no second pass).

# %%
preds = final_predictions(plan, model, test_loader, history)  # the last epoch's test pass, kept by train
f"test accuracy {preds.accuracy:.2f}%"

# %% [markdown]
# The first ten misclassified test images, titled with the true class, the predicted one and the
# model's confidence in it.

# %%
plots.plot_misclassified(preds.misclassified(), data.classes)

# %% [markdown]
# The ten test images with the highest loss: the mistakes the model was surest of first.

# %%
plots.plot_top_losses(preds.top_losses(), data.classes)

# %% [markdown]
# Test accuracy per class, the mean as a dashed line.

# %%
plots.plot_per_class_accuracy(per_class_accuracy(preds), data.classes)

# %% [markdown]
# The confusion matrix (rows: true class, columns: predicted), normalised per true class.

# %%
cm = confusion_matrix(preds)
plots.plot_confusion_matrix(cm, data.classes, normalize=True)

# %% [markdown]
# The five most frequent mistakes as (true, predicted, count).

# %%
most_confused(cm, data.classes)

# %% [markdown]
# Save the history (loss, accuracy and LR curves as JSON) next to the checkpoint, to plot or compare
# later with `History.from_json`.

# %%
history.to_json(plan.out / "history.json")
