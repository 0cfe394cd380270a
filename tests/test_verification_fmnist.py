"""Verification end to end on real Fashion-MNIST: train briefly, embed, same vs different class pairs.

Fashion-MNIST stands in for HW2P2's faces (a class plays an identity): a classifier trained for
two short epochs must give penultimate-layer embeddings whose cosine similarity separates
same-class from different-class pairs far better than chance and than the untrained network.
Measured on 2 CPU cores (face_baseline, 3000 train images, 2 epochs, 2000 test images, 4000
pairs): AUC 0.94 trained, 0.80 untrained, 0.83 for raw pixels; the bar below leaves a margin.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from era_utils import set_seed
from era_utils import verification as V
from era_utils.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD, FASHION_MNIST_SYSTEM_DIR, load_fashion_mnist

N_TRAIN = 3000  # stratified: 300 per class
N_TEST = 2000
N_PAIRS = 4000  # half same-class, half different-class
EPOCHS = 2
AUC_BAR = 0.85  # measured 0.94 with these settings

pytestmark = pytest.mark.skipif(
    not (FASHION_MNIST_SYSTEM_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not found in {FASHION_MNIST_SYSTEM_DIR} (apt-get install dataset-fashion-mnist)",
)


def _normalised(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28, 1) -> float (N, 1, 28, 28), normalised with the dataset's mean/std."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)
    return (x - FASHION_MNIST_MEAN[0]) / FASHION_MNIST_STD[0]


def test_fashion_mnist_embeddings_verify_same_class(tmp_path: Path):
    from fake_data import write_pairs
    from torchvision.transforms import v2

    from era_utils.data import read_pairs
    from era_utils.analysis import predict
    from era_utils.engine import fit
    from era_utils.speed import fast_path
    from era_utils.models import create_model
    from era_utils.schedules import make_optimizer

    set_seed(0)
    train = load_fashion_mnist(train=True).subset(N_TRAIN, seed=0)
    test = load_fashion_mnist(train=False).subset(N_TEST, seed=0)
    x_train, y_train = _normalised(train.images), torch.from_numpy(train.labels)
    x_test, y_test = _normalised(test.images), torch.from_numpy(test.labels)
    train_loader = DataLoader(TensorDataset(x_train, y_train), batch_size=64, shuffle=True)
    test_loader = DataLoader(TensorDataset(x_test, y_test), batch_size=256)
    ia, ib, labels = V.class_pairs(test.labels, N_PAIRS, seed=0)

    model = create_model("face_baseline", num_classes=10, in_channels=1)
    untrained = predict(model, test_loader, device="cpu", embeddings=True).embeddings
    before = V.verification_metrics(labels, V.cosine_scores(untrained[ia], untrained[ib]))

    optimizer = make_optimizer("adam", model.parameters(), lr=3e-3)
    history = fit(model, train_loader, None, optimizer, EPOCHS, path=fast_path("cpu", amp="off"), verbose=False)
    assert history.train_loss[-1] < history.train_loss[0]

    preds = predict(model, test_loader, device="cpu", embeddings=True)  # one pass: predictions and embeddings
    emb = preds.embeddings  # (N_TEST, D)
    assert emb.shape == (N_TEST, model.embedding_dim) and preds.accuracy > 50
    scores = V.cosine_scores(emb[ia], emb[ib])
    metrics = V.verification_metrics(labels, scores)
    print(f"Fashion-MNIST verification: untrained AUC {before.auc:.4f}, trained {metrics}")
    assert metrics.auc > AUC_BAR
    assert metrics.auc > before.auc + 0.05  # training, not the architecture alone, separates the classes
    assert metrics.eer < 0.25 and metrics.accuracy > 0.75

    # The same embeddings through the files path: PNGs + a pairs file -> read_pairs -> verify_pairs.
    n_files = 200
    folder = tmp_path / "fmnist"
    folder.mkdir()
    for i in range(n_files):
        Image.fromarray(test.images[i, :, :, 0]).save(folder / f"{i:04d}.png")
    fa, fb, flabels = V.class_pairs(test.labels[:n_files], 300, seed=1)
    lines = [(f"{a:04d}.png", f"{b:04d}.png", int(y)) for a, b, y in zip(fa, fb, flabels)]
    pairs = read_pairs(write_pairs(folder / "pairs.txt", lines))
    transform = v2.Compose([
        v2.Grayscale(num_output_channels=1),  # data.load_image reads RGB; the model takes one channel
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(FASHION_MNIST_MEAN), std=list(FASHION_MNIST_STD)),
    ])
    from_files = V.verify_pairs(model, pairs, transform, device="cpu", batch_size=64)
    expected = V.cosine_scores(emb[fa], emb[fb]).numpy()
    got = V.score_pairs(model, pairs, transform, device="cpu", batch_size=64)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert from_files.auc == pytest.approx(V.verification_metrics(flabels, expected).auc, abs=1e-3)
