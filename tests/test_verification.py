"""Tests for era_utils.verification and era_utils.kaggle: embeddings from the one inference pass,
cosine scores, embed-once pair scoring, AUC/EER, Kaggle CSVs written and read back."""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from era_utils import kaggle as K
from era_utils import plots
from era_utils import verification as V
from era_utils.analysis import predict

# --------------------------------------------------------------------------- helpers


class ColourNet(nn.Module):
    """Embeds an image as (mean R, mean G, mean B, 1) and counts the images it has embedded."""

    embedding_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))  # one parameter so .to(device) and modes behave
        self.images_embedded = 0
        self.modes_seen: list[bool] = []

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        self.images_embedded += x.shape[0]
        self.modes_seen.append(self.training)
        mean = x.mean(dim=(2, 3)) * self.scale  # (B, 3)
        return torch.cat([mean, torch.ones(x.shape[0], 1)], dim=1)  # (B, 4)

    def forward(self, x: torch.Tensor, return_embedding: bool = False):
        emb = self.embed(x)  # the embedding doubles as 4 "logits"
        return (emb, emb) if return_embedding else emb


class CountingToTensor:
    """A torchvision-style transform (PIL -> (3, H, W) float in [0, 1]) that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image: Image.Image) -> torch.Tensor:
        self.calls += 1
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)


COLOURS = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "blue": (0, 0, 255),
}


@pytest.fixture()
def colour_images(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for name, rgb in COLOURS.items():
        path = tmp_path / "imgs" / f"{name}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (6, 5), rgb).save(path)
        paths[name] = path
    return paths


# (a, b, hand-computed cosine of (r, g, b, 1) vectors)
HAND_PAIRS = [
    ("red", "green", 0.5),  # (1,0,0,1).(0,1,0,1) / (sqrt2 * sqrt2)
    ("red", "red", 1.0),
    ("red", "white", 1 / math.sqrt(2)),  # 2 / (sqrt2 * 2)
    ("black", "white", 0.5),  # 1 / (1 * 2)
    ("black", "red", 1 / math.sqrt(2)),
    ("white", "green", 1 / math.sqrt(2)),
    ("green", "blue", 0.5),
    ("blue", "red", 0.5),
    ("white", "white", 1.0),
]


# --------------------------------------------------------------------------- cosine scores


def test_cosine_scores_hand_values():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0], [1.0, 2.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [2.0, 2.0], [-3.0, -4.0], [2.0, 1.0], [1.0, 1.0]])
    expected = [0.0, 1.0, -1.0, 4.0 / 5.0, 0.0]  # (1,2).(2,1) = 4, norms sqrt5 * sqrt5; zero row -> 0
    got = V.cosine_scores(a, b)
    assert got.shape == (5,) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
    # 3-D example: (1,2,2).(2,0,1) = 4, norms 3 and sqrt5
    got3 = V.cosine_scores(np.array([[1.0, 2.0, 2.0]]), np.array([[2.0, 0.0, 1.0]]))
    np.testing.assert_allclose(got3.numpy(), [4 / (3 * math.sqrt(5))], rtol=1e-6)


def test_cosine_scores_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        V.cosine_scores(torch.ones(3, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        V.cosine_scores(torch.ones(4), torch.ones(4))


# --------------------------------------------------------------------------- embed


@pytest.mark.parametrize("with_labels", [True, False])
@pytest.mark.parametrize("start_training", [True, False])
def test_embeddings_come_from_the_one_pass_and_restore_mode(with_labels, start_training):
    torch.manual_seed(0)
    x = torch.rand(10, 3, 4, 4)
    ds = TensorDataset(x, torch.zeros(10, dtype=torch.long)) if with_labels else x
    loader = DataLoader(ds, batch_size=4)  # 3 batches: 4, 4, 2
    model = ColourNet().train(start_training)

    preds = predict(model, loader, device="cpu", embeddings=True)
    raw = preds.embeddings
    assert raw.shape == (10, 4) and raw.dtype == torch.float32 and raw.device.type == "cpu"
    assert not raw.requires_grad
    np.testing.assert_allclose(raw[:, :3].numpy(), x.mean(dim=(2, 3)).numpy(), rtol=1e-6)
    assert model.images_embedded == 10  # one forward pass gives logits and embeddings
    assert model.training is start_training  # mode restored
    assert model.modes_seen and not any(model.modes_seen)  # but embedded in eval mode
    assert (preds.labels == (0 if with_labels else -1)).all()


def test_embeddings_restore_each_modules_own_mode_and_after_an_error():
    model = ColourNet()
    model.norm = nn.BatchNorm1d(4)  # a frozen layer: eval while the rest trains
    model.train()
    model.norm.eval()
    predict(model, [torch.rand(2, 3, 4, 4)], device="cpu", embeddings=True)
    assert model.training and not model.norm.training
    with pytest.raises(ValueError, match="amp"):
        predict(model, [torch.rand(2, 3, 4, 4)], device="cpu", embeddings=True, amp="sometimes")
    assert model.training


def test_embedding_errors():
    with pytest.raises(TypeError, match="embed"):
        predict(nn.Sequential(nn.Flatten(), nn.Linear(48, 2)), [torch.rand(2, 3, 4, 4)], device="cpu",
                embeddings=True)
    with pytest.raises(ValueError, match="no batches"):
        predict(ColourNet(), [], device="cpu", embeddings=True)
    with pytest.raises(ValueError, match="image tensors"):
        predict(ColourNet(), [{"image": torch.rand(2, 3, 4, 4)}], device="cpu", embeddings=True)


# --------------------------------------------------------------------------- score_pairs


def test_score_pairs_hand_values_and_each_image_embedded_once(colour_images):
    pairs = [(colour_images[a], colour_images[b]) for a, b, _ in HAND_PAIRS]
    model = ColourNet()
    transform = CountingToTensor()
    scores = V.score_pairs(model, pairs, transform, device="cpu", batch_size=2)
    assert isinstance(scores, np.ndarray) and scores.dtype == np.float32 and scores.shape == (len(pairs),)
    np.testing.assert_allclose(scores, [c for _, _, c in HAND_PAIRS], rtol=1e-5)
    # 9 pairs name 18 image slots but only 5 distinct files: each is read and embedded once.
    assert transform.calls == len(COLOURS)
    assert model.images_embedded == len(COLOURS)


def test_score_pairs_accepts_data_pairs_and_other_transforms(colour_images):
    """data.Pair objects, the default transform, torchvision v2 and albumentations give the same scores."""
    from torchvision.transforms import v2

    from era_utils.data import Pair

    pairs = [Pair(colour_images[a], colour_images[b], 1) for a, b, _ in HAND_PAIRS[:4]]
    expected = [c for _, _, c in HAND_PAIRS[:4]]
    tv = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    np.testing.assert_allclose(V.score_pairs(ColourNet(), pairs, None, device="cpu"), expected, rtol=1e-5)
    np.testing.assert_allclose(V.score_pairs(ColourNet(), pairs, tv, device="cpu"), expected, rtol=1e-5)

    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    alb = A.Compose([A.Normalize(mean=0.0, std=1.0, max_pixel_value=255.0), ToTensorV2()], strict=True)
    np.testing.assert_allclose(V.score_pairs(ColourNet(), pairs, alb, device="cpu"), expected, rtol=1e-5)


def test_score_pairs_errors(colour_images, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        V.score_pairs(ColourNet(), [], None, device="cpu")
    missing = [(colour_images["red"], tmp_path / "nope.jpg")]
    with pytest.raises(FileNotFoundError, match=r"nope\.jpg.*root="):
        V.score_pairs(ColourNet(), missing, None, device="cpu")
    with pytest.raises(TypeError, match="tensor"):
        same = [(colour_images["red"], colour_images["red"])]
        V.score_pairs(ColourNet(), same, lambda im: im, device="cpu")  # returns the ndarray untouched


# --------------------------------------------------------------------------- metrics


def test_metrics_known_case_sklearn_docs_example():
    # scikit-learn's roc_curve docstring example: AUC 0.75; FPR = FNR = 0.5 exactly at threshold 0.4.
    labels, scores = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    m = V.verification_metrics(labels, scores)
    assert m.auc == pytest.approx(0.75) == pytest.approx(roc_auc_score(labels, scores))
    assert m.eer == pytest.approx(0.5)
    assert m.eer_threshold == pytest.approx(0.4)
    assert m.threshold == m.eer_threshold
    assert m.accuracy == pytest.approx(0.5)  # >= 0.4 -> same: right on 0.1 and 0.8, wrong on 0.4 and 0.35
    assert (m.n_pairs, m.n_positive) == (4, 2)
    fpr, tpr, thr = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_array_equal(m.fpr, fpr)
    np.testing.assert_array_equal(m.tpr, tpr)
    np.testing.assert_array_equal(m.thresholds, thr)
    assert set(m.to_dict()) == {
        "auc", "eer", "eer_threshold", "threshold", "accuracy", "n_pairs", "n_positive"
    }


def test_metrics_perfect_and_inverted_separation():
    labels = [0, 0, 0, 1, 1]
    m = V.verification_metrics(labels, [0.1, 0.2, 0.3, 0.7, 0.9])
    assert m.auc == 1.0 and m.eer == 0.0
    assert 0.3 < m.eer_threshold <= 0.7 and m.accuracy == 1.0
    inverted = V.verification_metrics(labels, [0.9, 0.8, 0.7, 0.2, 0.1])
    assert inverted.auc == 0.0 and inverted.eer == 1.0


def test_metrics_interpolated_eer_matches_sklearn_curve():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    scores = labels * 1.0 + rng.normal(size=400)
    m = V.verification_metrics(labels, scores, threshold=0.5)
    assert m.auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    # Reference: the FPR where the (piecewise-linear) ROC curve meets TPR = 1 - FPR, found on a fine grid.
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    grid = np.linspace(0, 1, 200_001)
    crossing = grid[np.argmin(np.abs(np.interp(grid, fpr, tpr) - (1 - grid)))]
    assert m.eer == pytest.approx(crossing, abs=1e-4)
    assert 0.0 < m.eer < 0.5
    # At the EER threshold the measured FPR and FNR straddle the EER.
    pred = scores >= m.eer_threshold
    fpr_at = np.mean(pred[labels == 0])
    fnr_at = np.mean(~pred[labels == 1])
    assert abs(fpr_at - m.eer) < 0.02 and abs(fnr_at - m.eer) < 0.02
    assert m.threshold == 0.5
    assert m.accuracy == pytest.approx(np.mean((scores >= 0.5) == labels))
    eer, thr = V.equal_error_rate(labels, scores)
    assert (eer, thr) == (m.eer, m.eer_threshold)


def test_accuracy_at_threshold_hand_values():
    labels = [1, 1, 0, 0, 1]
    scores = np.array([0.9, 0.5, 0.5, 0.1, 0.2])
    assert V.accuracy_at_threshold(labels, scores, 0.5) == pytest.approx(3 / 5)  # >= is "same"
    assert V.accuracy_at_threshold(labels, scores, 0.15) == pytest.approx(4 / 5)
    assert V.accuracy_at_threshold(labels, scores, 1.0) == pytest.approx(2 / 5)
    assert V.accuracy_at_threshold(torch.tensor(labels), torch.tensor(scores), 0.6) == pytest.approx(3 / 5)


@pytest.mark.parametrize(
    "labels, scores, match",
    [
        ([0, 1, 2], [0.1, 0.2, 0.3], "0 \\(different\\) or 1 \\(same\\)"),
        ([0, 1, -1], [0.1, 0.2, 0.3], "found \\['-1'\\]"),
        ([1, 1, 1], [0.1, 0.2, 0.3], "only one class"),
        ([0, 0], [0.1, 0.2], "only one class"),
        ([0, 1, 1], [0.1, 0.2], "3 labels but 2 scores"),
        ([], [], "empty"),
        ([0, 1], [0.1, float("nan")], "NaN"),
        ([[0, 1]], [[0.1, 0.2]], "1-D"),
    ],
)
def test_metrics_errors(labels, scores, match):
    with pytest.raises(ValueError, match=match):
        V.verification_metrics(labels, scores)


def test_plot_roc_returns_figure_with_auc_and_eer():
    m = V.verification_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    fig = plots.plot_roc(m)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("AUC = 0.7500" in t for t in texts)
    assert any(t.startswith("EER = 0.500") for t in texts)
    eer_line = [line for line in ax.get_lines() if line.get_label().startswith("EER")][0]
    assert list(eer_line.get_xdata()) == [0.5] and list(eer_line.get_ydata()) == [0.5]
    # Drawing onto a given axes returns that axes' figure.
    other = Figure()
    ax2 = other.add_subplot()
    assert plots.plot_roc(m, ax=ax2, title="dev") is other and ax2.get_title() == "dev"


# --------------------------------------------------------------------------- CSV writers


def test_write_classification_csv_exact(tmp_path):
    path = K.write_classification_csv(
        tmp_path / "sub" / "classification.csv",
        ids=[Path("test/0001.jpg"), "test/0002.jpg", "0003.jpg"],
        labels=torch.tensor([2, 0, 1]),
        classes=["n000001", "n000007", "n000042"],
    )
    assert path.read_text() == "id,label\n0001.jpg,n000042\n0002.jpg,n000001\n0003.jpg,n000007\n"
    # Without classes the indices are written.
    K.write_classification_csv(tmp_path / "c.csv", ["a.jpg", "b.jpg"], np.array([5, 6]))
    assert (tmp_path / "c.csv").read_text() == "id,label\na.jpg,5\nb.jpg,6\n"


def test_write_classification_csv_errors(tmp_path):
    with pytest.raises(ValueError, match="3 ids but 2 labels"):
        K.write_classification_csv(tmp_path / "x.csv", ["a", "b", "c"], [0, 1])
    with pytest.raises(ValueError, match="logits"):
        K.write_classification_csv(tmp_path / "x.csv", ["a", "b"], torch.zeros(2, 10))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        K.write_classification_csv(tmp_path / "x.csv", ["a", "b"], [0, 2], classes=["p", "q"])


def test_write_verification_csv_exact(tmp_path):
    ids = ["verification_data/00020839.jpg verification_data/00035322.jpg", "b.jpg c.jpg"]
    path = K.write_verification_csv(tmp_path / "verification.csv", ids, np.array([0.5, -0.125], np.float32))
    assert path.read_text() == (
        "Id,Category\n"
        "verification_data/00020839.jpg verification_data/00035322.jpg,0.500000\n"
        "b.jpg c.jpg,-0.125000\n"
    )
    with path.open(newline="") as f:  # the csv module reads it back unchanged
        rows = list(csv.reader(f))
    assert rows[0] == ["Id", "Category"] and float(rows[2][1]) == -0.125
    with pytest.raises(ValueError, match="2 ids but 1 scores"):
        K.write_verification_csv(tmp_path / "v.csv", ids, [0.1])


def test_ids_for_pairs_relative_to_root(tmp_path):
    root = tmp_path / "verification"
    data = root / "verification_data"
    pairs = [(data / "a.jpg", data / "b.jpg", None), ("x.jpg", "y.jpg")]
    ids = ["verification_data/a.jpg verification_data/b.jpg", "x.jpg y.jpg"]
    assert K.ids_for_pairs(pairs, root=root) == ids
    # A data.Pair carries its line as written in the file, which wins over root.
    from era_utils.data import Pair

    assert K.ids_for_pairs([Pair(data / "a.jpg", data / "b.jpg", 1, "A.jpg B.jpg")], root=root) == ["A.jpg B.jpg"]


def test_verify_pairs_needs_labels(colour_images):
    pairs = [(colour_images["red"], colour_images["green"], None)]
    with pytest.raises(ValueError, match="no label"):
        V.verify_pairs(ColourNet(), pairs, None, device="cpu")


def test_verify_pairs_then_score_and_write_the_test_pairs(colour_images, tmp_path):
    labelled = [(colour_images[a], colour_images[b], int(a == b)) for a, b, _ in HAND_PAIRS]
    metrics = V.verify_pairs(ColourNet(), labelled, None, device="cpu")
    # Same-colour pairs score 1, every other pair < 1: perfect separation.
    assert metrics.auc == 1.0 and metrics.eer == 0.0 and metrics.n_pairs == len(HAND_PAIRS)
    root = colour_images["red"].parent
    scores = V.score_pairs(ColourNet(), labelled[:2], None, device="cpu")
    K.write_verification_csv(tmp_path / "v.csv", K.ids_for_pairs(labelled[:2], root=root), scores)
    expected = "Id,Category\nred.png green.png,0.500000\nred.png red.png,1.000000\n"
    assert (tmp_path / "v.csv").read_text() == expected
    np.testing.assert_allclose(scores, [0.5, 1.0], rtol=1e-6)
    read = K.read_submission(tmp_path / "v.csv")
    assert read.kind == "verification" and read.ids == ["red.png green.png", "red.png red.png"]
    np.testing.assert_allclose(read.scores(), [0.5, 1.0])


@pytest.mark.parametrize("text, match", [
    ("", "empty"),
    ("Id,Score\na b,0.5\n", "neither"),
    ("Id,Category\na b,0.5\na b,0.7\n", "appears twice"),
    ("id,label\n0.jpg\n", "two columns"),
])
def test_read_submission_names_the_problem(tmp_path, text, match):
    path = tmp_path / "s.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        K.read_submission(path)


# --------------------------------------------------------------------------- pairs files, end to end


class CountingEmbeds(nn.Module):
    """Wraps a model and counts the images it sees (each unique image should be one)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.embedding_dim = model.embedding_dim
        self.images_embedded = 0

    def forward(self, x: torch.Tensor, return_embedding: bool = False):
        self.images_embedded += x.shape[0]
        return self.model(x, return_embedding=return_embedding)


def test_read_pairs_errors_reach_the_student(tmp_path):
    from era_utils.data import read_pairs

    with pytest.raises(FileNotFoundError, match="pairs file not found"):
        read_pairs(tmp_path / "verification_pairs_val.txt")
    bad = tmp_path / "pairs.txt"
    bad.write_text("a.jpg b.jpg 1\nc.jpg d.jpg\n")
    with pytest.raises(ValueError, match="line 2: 2 columns"):
        read_pairs(bad, check_exists=False)
    bad.write_text("a.jpg b.jpg c.jpg 1\n")
    with pytest.raises(ValueError, match="line 1: 4 columns"):
        read_pairs(bad, check_exists=False)


def test_face_folder_pipeline_writes_both_csvs(tmp_path):
    """Face folders -> dev pairs -> metrics; test pairs -> Id,Category CSV; test/ -> id,label CSV."""
    from fake_data import make_pairs, write_face_folders, write_pairs

    from era_utils.data import FaceFolder, read_pairs
    from era_utils.models import create_model
    from era_utils.transforms import hw2p2_test_transform

    torch.manual_seed(0)
    faces = write_face_folders(tmp_path / "faces", n_identities=3, n_train=2, n_dev=3, n_test=6)
    transform = hw2p2_test_transform(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), size=None)
    model = CountingEmbeds(create_model("face_baseline", num_classes=len(faces.identities)))

    # Dev: labelled pairs -> metrics, each distinct image embedded once.
    dev_file = write_pairs(tmp_path / "faces" / "verification_pairs_val.txt", make_pairs(faces, "dev", n=12))
    dev_pairs = read_pairs(dev_file)  # paths relative to the file's folder
    unique = {p for pair in dev_pairs for p in (pair.a, pair.b)}
    assert len(unique) < 2 * len(dev_pairs)  # the pairs share images, as HW2P2's do
    metrics = V.verify_pairs(model, dev_pairs, transform, device="cpu", batch_size=4)
    assert model.images_embedded == len(unique)
    assert metrics.n_pairs == 12 and metrics.n_positive == 6
    assert 0.0 <= metrics.auc <= 1.0 and 0.0 <= metrics.eer <= 1.0 and 0.0 <= metrics.accuracy <= 1.0
    scores = V.score_pairs(model, dev_pairs, transform, device="cpu")
    assert metrics.auc == pytest.approx(roc_auc_score([p.label for p in dev_pairs], scores))
    assert isinstance(plots.plot_roc(metrics), Figure)

    # Test: unlabelled pairs -> the verification CSV, one row per line of the pairs file.
    test_lines = [(a, b) for a, b, _ in make_pairs(faces, "test", n=8, seed=1)]
    test_file = write_pairs(tmp_path / "faces" / "verification_pairs_test.txt", test_lines, labelled=False)
    test_pairs = read_pairs(test_file, root=faces.root, labelled=False)
    out = tmp_path / "results"
    test_scores = V.score_pairs(model, test_pairs, transform, device="cpu")
    K.write_verification_csv(out / "verification.csv", K.ids_for_pairs(test_pairs), test_scores)
    with (out / "verification.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Id", "Category"]
    # Ids are the file's lines, e.g. "test/000001.jpg test/000004.jpg".
    assert [r[0] for r in rows[1:]] == [f"{a} {b}" for a, b in test_lines]
    np.testing.assert_allclose([float(r[1]) for r in rows[1:]], test_scores, atol=1e-6)
    assert np.all(np.abs(test_scores) <= 1.0 + 1e-6)

    # Classification: the flat test/ split -> predicted identities -> id,label.
    test_set = FaceFolder(faces.root, "test", transform=transform)
    loader = DataLoader(test_set, batch_size=4)
    model.eval()
    with torch.inference_mode():
        preds = torch.cat([model.model(x).argmax(1) for x, _ in loader])
    K.write_classification_csv(out / "classification.csv", test_set.ids, preds, classes=test_set.classes)
    with (out / "classification.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "label"]
    assert [r[0] for r in rows[1:]] == [f"{j:06d}.jpg" for j in range(6)]
    assert [r[1] for r in rows[1:]] == [faces.identities[int(k)] for k in preds]


def test_class_pairs_are_balanced_and_labelled_right():
    from era_utils.verification import class_pairs

    labels = np.repeat(np.arange(5), 4)  # 5 classes x 4 images
    a, b, same = class_pairs(labels, 60, seed=3)  # all 30 same-class pairs there are, and 30 others
    assert same.sum() == 30 and len(a) == len(b) == 60
    np.testing.assert_array_equal(labels[a] == labels[b], same.astype(bool))
    assert (a != b).all()
    with pytest.raises(ValueError, match="two classes"):
        class_pairs(np.zeros(10, dtype=int), 4)
    # every pair at most once, as a submission's ids must be; the capacity is exact
    small = np.array([0, 0, 0, 1, 1])  # 3 + 1 same-class pairs, 6 different-class pairs
    assert V.class_pair_capacity(small) == 8
    a, b, same = class_pairs(small, 8, seed=0)
    assert len({(min(i, j), max(i, j)) for i, j in zip(a, b)}) == 8
    with pytest.raises(ValueError, match="at most 8"):
        class_pairs(small, 9)


# --------------------------------------------------------------------------- Kaggle download


def _fake_kaggle(tmp_path: Path, body: str) -> Path:
    """A stand-in `kaggle` CLI on PATH: a shell script that runs `body`."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    script = folder / "kaggle"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return folder


def test_download_competition_unzips_and_takes_the_key_from_the_environment(tmp_path, monkeypatch):
    import zipfile

    archive = tmp_path / "payload.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("train/id_000/0.jpg", b"jpeg")
    # The fake CLI checks it got the key from the environment and the arguments, then drops the zip.
    body = (f'[ "$KAGGLE_KEY" = "k3y" ] || exit 9\n[ "$1 $2 $3 $4" = "competitions download -c hw2p2" ] || exit 8\n'
            f'cp {archive} "$6/hw2p2.zip"')
    monkeypatch.setenv("PATH", f"{_fake_kaggle(tmp_path, body)}:{os.environ['PATH']}")
    monkeypatch.setenv("KAGGLE_USERNAME", "student")
    monkeypatch.setenv("KAGGLE_KEY", "k3y")
    dest = K.download_competition("hw2p2", tmp_path / "data")
    assert (dest / "train" / "id_000" / "0.jpg").read_bytes() == b"jpeg" and not list(dest.glob("*.zip"))


def test_download_competition_errors_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="pip install kaggle"):
        K.download_competition("hw2p2", tmp_path / "data")
    monkeypatch.setenv("PATH", f"{_fake_kaggle(tmp_path, 'echo 403 Forbidden >&2; exit 1')}:/usr/bin:/bin")
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no_config"))
    with pytest.raises(ValueError, match="Never write the key"):
        K.download_competition("hw2p2", tmp_path / "data")
    monkeypatch.setenv("KAGGLE_USERNAME", "student")
    monkeypatch.setenv("KAGGLE_KEY", "k3y")
    with pytest.raises(RuntimeError, match="403 Forbidden.*accepted its rules"):
        K.download_competition("hw2p2", tmp_path / "data")
