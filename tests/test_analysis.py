"""analysis: one pass (`predict`) keeps labels, predictions, probabilities, per-sample losses,
positions and embeddings; misclassified and top-loss examples, per-class accuracy and the confusion
matrix all read it; the model's train/eval mode is restored."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torch.nn.functional as F

from era_utils.analysis import (
    MAX_KEPT_CLASSES,
    Predictions,
    confusion_matrix,
    denormalize,
    get_misclassified,
    most_confused,
    per_class_accuracy,
    predict,
)

K = 4  # classes


class RowLogits(nn.Module):
    """A model whose logits are the first K pixels of row 0: the test decides every prediction."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.bn = nn.BatchNorm2d(1)  # a module whose mode matters
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor, return_embedding: bool = False) -> torch.Tensor:
        self.modes.append(self.training)
        logits = x[:, 0, 0, :K] * self.scale  # (B, K)
        return (logits, logits) if return_embedding else logits


class TupleLoader:
    """Stands in for GPULoader: an iterable of (images, labels) with .mean/.std."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, mean, std) -> None:
        self.x, self.y, self.batch_size, self.mean, self.std = x, y, batch_size, mean, std

    def __iter__(self):
        for i in range(0, len(self.y), self.batch_size):
            yield self.x[i : i + self.batch_size], self.y[i : i + self.batch_size]

    def __len__(self) -> int:
        return (len(self.y) + self.batch_size - 1) // self.batch_size


@pytest.fixture()
def data():
    g = torch.Generator().manual_seed(0)
    n = 50
    x = torch.randn(n, 1, 4, 4, generator=g)  # (N, C, H, W); row 0 holds the logits
    y = torch.randint(0, K, (n,), generator=g)
    return x, y


def test_predict_one_pass_modes_and_images(data):
    x, y = data
    model = RowLogits().train()
    model.bn.eval()  # a student's frozen BatchNorm must stay frozen
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    p = predict(model, loader, mean=(0.5,), std=(0.25,))
    assert isinstance(p, Predictions) and len(p) == 50 and p.num_classes == K
    logits = x[:, 0, 0, :K]
    assert p.probs.shape == (50, K) and torch.allclose(p.probs, logits.softmax(1))
    assert torch.equal(p.preds, logits.argmax(1)) and torch.equal(p.labels, y)
    assert torch.equal(p.indices, torch.arange(50))
    assert torch.allclose(p.confidence, logits.softmax(1).max(1).values)
    assert torch.allclose(p.losses, F.cross_entropy(logits, y, reduction="none"))
    assert p.accuracy == pytest.approx(100.0 * float((p.preds == y).float().mean()))
    assert p.embeddings is None and p.inputs is None  # neither kept unless asked (memory)
    assert model.modes == [False] * 4  # eval mode for every batch, one pass of 4 batches
    assert model.training and not model.bn.training  # modes restored, module by module
    imgs = p.images()  # fetched again from the unshuffled loader
    assert imgs.shape == (50, 4, 4, 1) and imgs.min() >= 0 and imgs.max() <= 1
    expected = np.clip(x.permute(0, 2, 3, 1).numpy() * 0.25 + 0.5, 0, 1)
    np.testing.assert_allclose(imgs, expected, atol=1e-6)


def test_predict_embeddings_unlabelled_batches_and_kept_inputs(data):
    x, y = data
    labels = y.clone()
    labels[:5] = -1  # unlabelled test images: no loss, never "wrong"
    p = predict(RowLogits(), TupleLoader(x, labels, 8, mean=(0.5,), std=(0.25,)), embeddings=True)
    assert torch.equal(p.embeddings, x[:, 0, 0, :K])  # from forward(x, return_embedding=True)
    assert p.inputs is not None and torch.equal(p.inputs, x)  # a loader without positions: kept
    assert torch.isnan(p.losses[:5]).all() and torch.isfinite(p.losses[5:]).all()
    assert all(ex.index >= 5 for ex in p.misclassified(None))
    assert p.accuracy == pytest.approx(100.0 * float((p.preds[5:] == y[5:]).float().mean()))
    images_only = predict(RowLogits(), [x[:20], x[20:]])  # batches of images alone
    assert (images_only.labels == -1).all() and len(images_only) == 50
    with pytest.raises(ValueError, match="class indices"):
        predict(RowLogits(), TupleLoader(x, y + K, 8, None, None))  # labels >= the model's outputs


def test_top_losses_are_the_highest_losses_highest_first(data):
    x, y = data
    p = predict(RowLogits(), DataLoader(TensorDataset(x, y), batch_size=16))
    top = p.top_losses(6)
    expected = F.cross_entropy(x[:, 0, 0, :K], y, reduction="none").argsort(descending=True)[:6]
    assert [ex.index for ex in top] == expected.tolist()
    assert all(a.loss >= b.loss for a, b in zip(top, top[1:]))
    assert all(torch.equal(ex.input, x[ex.index]) for ex in top)


def test_probabilities_are_not_kept_for_thousands_of_classes():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, MAX_KEPT_CLASSES + 1))
    p = predict(model, DataLoader(TensorDataset(torch.randn(6, 1, 2, 2), torch.zeros(6, dtype=torch.long)),
                                  batch_size=3))
    assert p.probs is None and p.num_classes == MAX_KEPT_CLASSES + 1
    assert p.confidence.shape == (6,) and confusion_matrix(p).shape == (MAX_KEPT_CLASSES + 1,) * 2


def test_denormalize_shapes_and_range():
    x = torch.randn(2, 3, 5, 6) * 3
    out = denormalize(x, (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
    assert out.shape == (2, 5, 6, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    assert denormalize(x[0], (0.5,) * 3, (0.2,) * 3).shape == (5, 6, 3)
    with pytest.raises(ValueError, match="channels"):
        denormalize(x, (0.5, 0.5), (0.2, 0.2))
    before = x.clone()
    denormalize(x)  # no mean/std: only clipped, and not in place
    assert torch.equal(x, before)


@pytest.mark.parametrize("most_confident", [False, True])
def test_get_misclassified_exactly_n_and_really_wrong(data, most_confident):
    x, y = data
    logits = x[:, 0, 0, :K]
    wrong = (logits.argmax(1) != y).nonzero().flatten()
    assert len(wrong) > 12  # the fixture has enough mistakes to choose from
    model = RowLogits().train()
    loader = TupleLoader(x, y, batch_size=8, mean=torch.tensor([0.5]).view(1, 1, 1, 1), std=(0.25,))
    items = get_misclassified(model, loader, n=7, most_confident=most_confident)
    assert len(items) == 7
    assert model.training  # restored
    for it in items:
        assert it.true != it.pred
        assert it.true == int(y[it.index]) and it.pred == int(logits[it.index].argmax())
        assert it.confidence == pytest.approx(float(logits[it.index].softmax(0).max()), abs=1e-6)
        assert torch.equal(it.input, x[it.index]) and not it.input.is_inference()
        assert it.image.shape == (4, 4, 1) and 0 <= it.image.min() and it.image.max() <= 1
        # de-normalised with the loader's own mean/std
        np.testing.assert_allclose(it.image[..., 0], np.clip(x[it.index, 0].numpy() * 0.25 + 0.5, 0, 1), atol=1e-6)
    conf = logits.softmax(1).max(1).values
    if most_confident:
        expected = wrong[conf[wrong].argsort(descending=True)][:7]
        assert [it.index for it in items] == expected.tolist()
    else:
        assert [it.index for it in items] == wrong[:7].tolist()


def test_get_misclassified_fewer_than_n_warns(data):
    x, _ = data
    y_mostly_right = x[:, 0, 0, :K].argmax(1).clone()
    y_mostly_right[[3, 11, 40]] = (y_mostly_right[[3, 11, 40]] + 1) % K
    loader = DataLoader(TensorDataset(x, y_mostly_right), batch_size=16)
    with pytest.warns(UserWarning, match="Only 3 misclassified"):
        items = get_misclassified(RowLogits(), loader, n=10)
    assert [it.index for it in items] == [3, 11, 40]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(get_misclassified(RowLogits(), loader, n=None)) == 3


def test_get_misclassified_real_model():
    """A registered (untrained) model: every returned item is wrong when fed back to the model."""
    from era_utils.models import create_model

    torch.manual_seed(0)
    model = create_model("s7_lite", num_classes=10)
    x = torch.randn(24, 3, 32, 32)
    y = torch.arange(24) % 10
    items = get_misclassified(model, DataLoader(TensorDataset(x, y), batch_size=12), n=10, most_confident=True)
    assert len(items) == 10
    assert all(a.confidence >= b.confidence for a, b in zip(items, items[1:]))
    model.eval()
    with torch.no_grad():
        preds = model(torch.stack([it.input for it in items])).argmax(1)
    assert preds.tolist() == [it.pred for it in items]
    assert all(it.pred != it.true for it in items)


def test_per_class_accuracy_and_confusion_matrix():
    from sklearn.metrics import confusion_matrix as sk_cm

    rng = np.random.default_rng(0)
    t = rng.integers(0, 5, 200)
    p = np.where(rng.random(200) < 0.7, t, rng.integers(0, 5, 200))
    cm = confusion_matrix(p, t, num_classes=5)
    np.testing.assert_array_equal(cm, sk_cm(t, p, labels=range(5)))
    acc = per_class_accuracy(torch.as_tensor(p), torch.as_tensor(t), num_classes=5)
    for k in range(5):
        assert acc[k] == pytest.approx(100.0 * np.mean(p[t == k] == k))
    # a class with no images is nan, not 0
    assert np.isnan(per_class_accuracy([0, 1], [0, 1], num_classes=3)[2])

    cm = np.array([[5, 3, 0], [9, 1, 1], [0, 2, 7]])
    assert most_confused(cm, ["cat", "dog", "bird"], k=2) == [("dog", "cat", 9), ("cat", "dog", 3)]
    assert most_confused(cm, k=10)[-1] == (1, 2, 1)  # zero-count pairs are left out
    assert len(most_confused(cm, k=10)) == 4


def test_predictions_feed_per_class(data):
    x, y = data
    p = predict(RowLogits(), DataLoader(TensorDataset(x, y), batch_size=50))
    cm = confusion_matrix(p)
    assert cm.shape == (K, K) and cm.sum() == 50
    assert np.nanmean(per_class_accuracy(p)) >= 0


def test_mean_std_found_in_the_kit_loaders():
    """No mean/std passed: GPULoader's own, or the Normalize inside worker_loader's pipeline."""
    from era_utils.gpu_loader import GPULoader
    from era_utils.loaders import worker_loader
    from era_utils.transforms import NO_AUGMENT

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 8, 8, 1), dtype=np.uint8)  # (N, H, W, C) uint8
    labels = rng.integers(0, K, 12)
    mean, std = (0.3,), (0.4,)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, K))
    for loader in (
        GPULoader(images, labels, 5, mean=mean, std=std, device="cpu", shuffle=False),
        worker_loader((images, labels), NO_AUGMENT, mean, std, batch_size=5, shuffle=False, num_workers=0),
    ):
        items = get_misclassified(model, loader, n=None)
        assert items, "a random linear model gets some of 12 images wrong"
        for it in items:
            np.testing.assert_allclose(it.image, images[it.index] / 255.0, atol=1e-5)
