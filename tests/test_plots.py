"""plots: every figure is a Figure with the right panels, class names in the titles, images in
[0, 1], grayscale in gray, nothing left in pyplot, and save_figure writes a PNG."""
from __future__ import annotations

from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from era_utils import plots
from era_utils.analysis import Example

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def image_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.images]


def image_data(ax) -> np.ndarray:
    return np.asarray(ax.images[0].get_array(), dtype=float)


def titles(fig: Figure) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


@pytest.fixture(autouse=True)
def nothing_left_in_pyplot():
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before, "a plot function left a figure open in pyplot"


def check_images(fig: Figure, n: int) -> None:
    axes = image_axes(fig)
    assert len(axes) == n
    for ax in axes:
        data = image_data(ax)
        assert data.min() >= 0 and data.max() <= 1


def make_items(n: int, channels: int = 3) -> list[Example]:
    rng = np.random.default_rng(0)
    return [
        Example(
            image=rng.random((32, 32, channels)).astype(np.float32),
            input=torch.randn(channels, 32, 32),
            true=i % 10,
            pred=(i + 3) % 10,
            confidence=0.5 + i / 40,
            loss=2.0 - i / 10,
            index=i,
        )
        for i in range(n)
    ]


def test_plot_samples_uint8_and_normalised_tensors():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(12) % 10
    fig = plots.plot_samples(images, labels, CLASSES)
    assert isinstance(fig, Figure)
    check_images(fig, 10)
    assert [t for t in titles(fig) if t] == CLASSES
    np.testing.assert_allclose(image_data(image_axes(fig)[0]), images[0] / 255.0, atol=1e-6)
    assert fig.get_figwidth() >= 9  # 5 panels of ~2 inches
    # a normalised (N, C, H, W) batch is de-normalised with mean/std, then clipped
    batch = torch.randn(4, 3, 32, 32)
    fig = plots.plot_samples(batch, torch.tensor([0, 1, 2, 3]), CLASSES, mean=(0.5,) * 3, std=(0.25,) * 3)
    check_images(fig, 4)
    expected = np.clip(batch[1].permute(1, 2, 0).numpy() * 0.25 + 0.5, 0, 1)
    np.testing.assert_allclose(image_data(image_axes(fig)[1]), expected, atol=1e-6)


def test_plot_samples_grayscale_and_image_arrays():
    from era_utils.data import ImageArrays

    rng = np.random.default_rng(0)
    arrays = ImageArrays(rng.integers(0, 256, (6, 28, 28, 1), dtype=np.uint8), np.arange(6), CLASSES[:6])
    fig = plots.plot_samples(arrays, n=6, ncols=3)
    check_images(fig, 6)
    ax = image_axes(fig)[0]
    assert image_data(ax).shape == (28, 28) and ax.images[0].get_cmap().name == "gray"
    assert ax.images[0].get_clim() == (0.0, 1.0)  # no auto-contrast stretching
    assert "bird" in titles(fig)


def test_plot_augmentations_before_after():
    from era_utils.gpu_loader import GPULoader
    from era_utils.loaders import augment_examples
    from era_utils.transforms import S10_AUGMENT, albumentations_transform

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    transform = albumentations_transform(S10_AUGMENT, mean, std)
    augmented = augment_examples(transform, images, n=5, rows=2)  # (rows, n, C, H, W) normalised
    assert augmented.shape == (2, 5, 3, 32, 32)
    fig = plots.plot_augmentations(images, augmented, labels=np.arange(8), classes=CLASSES, mean=mean, std=std)
    check_images(fig, 15)  # originals + 2 augmented rows
    assert [t for t in titles(fig) if t] == CLASSES[:5]
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == ["original", "augmented #1", "augmented #2"]
    # the GPU loader's batched augmentation (run here on the CPU), de-normalised with its mean/std
    loader = GPULoader(images, np.arange(8), 4, spec=S10_AUGMENT, mean=mean, std=std, device="cpu", seed=0)
    check_images(plots.plot_augmentations(images, augment_examples(loader, images, n=4), mean=mean, std=std), 12)
    # already-augmented display images: one row
    flipped = images[:5, :, ::-1]
    fig = plots.plot_augmentations(images, flipped)
    axes = image_axes(fig)
    np.testing.assert_allclose(image_data(axes[5]), flipped[0] / 255.0, atol=1e-6)  # row 2, column 1
    np.testing.assert_allclose(image_data(axes[0]), images[0] / 255.0, atol=1e-6)


def test_plots_take_arrays_and_results_never_a_loader():
    """No plot function accepts a loader or runs an augmentation: the signatures say so."""
    import inspect

    for name in plots.__all__:
        params = inspect.signature(getattr(plots, name)).parameters
        assert not {"loader", "augment", "transform"} & set(params), f"plots.{name} takes a loader/transform"


def test_plot_history_train_and_test():
    history = SimpleNamespace(train_loss=[2.0, 1.5, 1.2], train_acc=[30.0, 50.0, 60.0], test_loss=[1.8, 1.4, 1.3],
                              test_acc=[35.0, 52.0, 58.0], lrs=[])
    fig = plots.plot_history(history)
    loss_ax, acc_ax = fig.axes[:2]
    assert [line.get_label() for line in loss_ax.get_lines()] == ["train", "test"]
    assert list(acc_ax.get_lines()[1].get_ydata()) == [35.0, 52.0, 58.0]
    assert "best 58.00%" in acc_ax.get_legend().get_texts()[1].get_text()
    assert list(loss_ax.get_lines()[0].get_xdata()) == [1, 2, 3]  # epochs count from 1
    # no test loader: test lists empty
    fig = plots.plot_history({"train_loss": [1.0, 0.5], "train_acc": [50.0, 70.0], "test_loss": [], "test_acc": []})
    assert [len(ax.get_lines()) for ax in fig.axes[:2]] == [1, 1]


def test_plot_history_real_history_class():
    engine = pytest.importorskip("era_utils.engine")
    history = engine.History(train_loss=[1.0, 0.8], train_acc=[60.0, 70.0], test_loss=[0.9, 0.85],
                             test_acc=[65.0, 68.0], lrs=[0.01] * 6)
    fig = plots.plot_history(history)
    assert len(fig.axes[0].get_lines()) == 2
    fig = plots.plot_lr(history)  # steps per epoch from len(lrs) / epochs
    assert "epoch" in fig.axes[0].get_legend().get_texts()[0].get_text()


def test_plot_lr_one_cycle_with_epochs():
    up, down = np.linspace(1e-4, 1e-2, 50), np.linspace(1e-2, 1e-5, 190)
    lrs = np.concatenate([up, down]).tolist()  # 24 epochs x 10 steps, peak at epoch 5
    fig = plots.plot_lr(lrs, steps_per_epoch=10)
    ax = fig.axes[0]
    assert len(ax.get_lines()[0].get_ydata()) == 240
    assert ax.get_xlabel() == "optimizer step"
    # The 50th step trains at the peak and ends epoch 5: the marker sits there, not one step early.
    assert "step 50 (end of epoch 5.00)" in ax.get_legend().get_texts()[0].get_text()
    assert ax.get_lines()[1].get_xdata()[0] == 50 and ax.get_lines()[0].get_xdata()[0] == 1
    assert any(getattr(child, "get_xlabel", lambda: "")() == "epoch" for child in ax.child_axes)
    fig = plots.plot_lr(lrs)  # no epochs known: still a figure, no top axis
    assert not fig.axes[0].child_axes


def test_plot_lr_ticks_never_repeat_a_label():
    """A One Cycle between 2.95e-3 and 3.05e-3: one decimal would print "3.0e-03" on every tick."""
    fig = plots.plot_lr(np.linspace(2.95e-3, 3.05e-3, 40).tolist())
    ax = fig.axes[0]
    labels = plots.DistinctFormatter().format_ticks(ax.get_yticks())
    assert len(set(labels)) == len(labels) == len(ax.get_yticks()) > 2
    assert plots.DistinctFormatter().format_ticks([1e-3, 2e-3]) == ["1.0e-03", "2.0e-03"]


def test_short_runs_show_their_values_and_test_above_train_is_explained():
    history = {"train_loss": [0.9], "test_loss": [0.7], "train_acc": [70.0], "test_acc": [75.0]}
    fig = plots.plot_history(history, augmented=True)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "75.00%" in texts and "0.70" in texts  # one epoch: the values are written out
    assert any("expected" in t.get_text() for t in fig.texts)
    assert not [t for t in plots.plot_history(history).texts if "expected" in t.get_text()]  # not augmented
    long = {k: v * 20 for k, v in history.items()}
    assert not [t for ax in plots.plot_history(long, augmented=True).axes for t in ax.texts]


def test_plot_lr_finder_marks_the_suggestion():
    lrs = np.logspace(-7, 1, 100)
    losses = np.concatenate([np.linspace(2.3, 0.9, 80), np.linspace(0.9, 40.0, 20)])
    fig = plots.plot_lr_finder(lrs, losses, 3e-3, smoothed=losses * 0.99, min_lr=1e-5, rule="a tenth of the LR at "
                               "the minimum", min_rule="where the loss starts to fall")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("max LR 3.00e-03: a tenth" in t for t in legend) and any("min LR 1.00e-05: where" in t for t in legend)
    assert any(t.startswith("loss minimum at LR") for t in legend)
    assert ax.get_ylim()[1] < 5  # the final blow-up does not flatten the useful part
    # each dot sits on its LR's line, on the curve between the samples around it (was: at the nearest sample)
    dots = {line.get_color(): line.get_xydata()[0] for line in ax.get_lines() if line.get_marker() == "o"}
    smoothed = losses * 0.99
    for colour, lr in (("tab:red", 3e-3), ("tab:green", 1e-5)):
        x, y = dots[colour]
        k = np.searchsorted(lrs, lr)
        assert x == pytest.approx(lr) and min(smoothed[k - 1:k + 1]) <= y <= max(smoothed[k - 1:k + 1])
        assert y == pytest.approx(np.interp(np.log(lr), np.log(lrs), smoothed))
    # drawing into a given axes (LRFinderResult.plot(ax=...)) returns that axes' figure
    outer = Figure()
    own = outer.subplots()
    assert plots.plot_lr_finder(lrs.tolist(), losses.tolist(), None, ax=own) is outer


@pytest.mark.parametrize("channels", [3, 1])
def test_plot_misclassified_gallery(channels):
    items = make_items(10, channels)
    fig = plots.plot_misclassified(items, CLASSES)
    check_images(fig, 10)
    first = titles(fig)[0]
    assert "true: airplane" in first and "pred: cat" in first and "0.50" in first
    assert fig.get_figwidth() >= 9 and fig.get_figheight() >= 4  # 2 rows of 5, ~2 inches each
    if channels == 1:
        assert image_axes(fig)[0].images[0].get_cmap().name == "gray"


def test_plot_gradcam_side_by_side():
    items = make_items(7)
    cams = np.random.default_rng(1).random((7, 32, 32)).astype(np.float32)
    fig = plots.plot_gradcam(items, cams, CLASSES, layer="layer3")
    check_images(fig, 14)  # original + overlay for each item
    cam_titles = [t for t in titles(fig) if t.startswith("GradCAM")]
    assert cam_titles[0] == "GradCAM: cat" and len(cam_titles) == 7  # explained class = prediction
    assert "layer3" in fig.get_suptitle()
    fig = plots.plot_gradcam(items[:2], cams[:2], CLASSES, explained="true")
    assert "GradCAM: airplane" in titles(fig)
    with pytest.raises(ValueError, match="one CAM per item"):
        plots.plot_gradcam(items, cams[:3], CLASSES)


def test_plot_gradcam_with_real_maps():
    from era_utils.gradcam import gradcam
    from era_utils.models import create_model

    torch.manual_seed(0)
    model = create_model("s7_lite", num_classes=10, in_channels=1)
    items = make_items(3, channels=1)
    cams = gradcam(model, [it.input for it in items], targets=[it.pred for it in items])
    check_images(plots.plot_gradcam(items, cams, CLASSES), 6)


def test_per_class_accuracy_and_confusion_matrix():
    acc = np.array([91.0, 95.5, 80.0, 70.2, 88.0, 79.0, 93.0, 92.0, 94.0, 93.5])
    fig = plots.plot_per_class_accuracy(acc, CLASSES)
    ax = fig.axes[0]
    assert len(ax.patches) == 10
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES
    assert ax.get_ylim()[1] > 100 and any("87.6%" in t.get_text() for t in ax.texts)
    assert plots.plot_per_class_accuracy(acc / 100, CLASSES).axes[0].patches[0].get_height() == pytest.approx(91.0)

    cm = np.array([[8, 2, 0], [1, 9, 0], [0, 5, 5]])
    fig = plots.plot_confusion_matrix(cm, CLASSES[:3])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["8", "2", "0", "1", "9", "0", "0", "5", "5"]
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES[:3]
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    fig = plots.plot_confusion_matrix(cm, CLASSES[:3], normalize=True)
    assert [t.get_text() for t in fig.axes[0].texts][:3] == ["0.80", "0.20", "0.00"]


def test_save_figure_writes_png(tmp_path):
    fig = plots.plot_per_class_accuracy([50.0, 60.0], ["cat", "dog"])
    path = plots.save_figure(fig, tmp_path / "results" / "s7" / "per_class")
    assert path == tmp_path / "results" / "s7" / "per_class.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plots.save_figure(fig, str(tmp_path / "a.png"), dpi=50).stat().st_size > 0


def test_plot_augmentations_takes_a_worker_loaders_augmentation():
    from era_utils.loaders import augment_examples, worker_loader
    from era_utils.transforms import S7_AUGMENT

    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    loader = worker_loader((images, np.arange(6) % 2), S7_AUGMENT, (0.5,) * 3, (0.25,) * 3, 2,
                           num_workers=0)
    augmented = augment_examples(loader, images, n=3, rows=2)
    fig = plots.plot_augmentations(images, augmented, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert len([ax for ax in fig.axes if ax.get_images()]) == 9  # originals + 2 augmented rows


def test_empty_galleries_say_so_instead_of_failing():
    for fig in (plots.plot_misclassified([], CLASSES), plots.plot_top_losses([], CLASSES)):
        assert not image_axes(fig)
        assert any("no" in t.get_text().lower() for ax in fig.axes for t in ax.texts)


def test_plot_top_losses_titles_carry_the_loss():
    fig = plots.plot_top_losses(make_items(4), CLASSES)
    check_images(fig, 4)
    assert "loss 2.00" in titles(fig)[0] and "highest-loss" in fig.get_suptitle()
