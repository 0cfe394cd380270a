"""HW2P2's losses (era_utils.face_losses): the margin heads against the papers' formulas, center loss
against Wen et al.'s, and each loss through the kit's pipeline (float32 under autocast, resume, CSVs)."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from era_utils import plan as plan_module
from era_utils import steps
from era_utils.face_losses import (CenterHead, CenterLoss, MarginHead, MarginLoss, attach_head, make_loss,
                                   uses_embeddings)
from era_utils.models import create_model
from era_utils.recipes import get_recipe

S, D, K = 64.0, 6, 4


def _fixed_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings (5, D), labels (5,) and class weights (D, K) drawn once from a fixed seed."""
    g = torch.Generator().manual_seed(3)
    return torch.randn(5, D, generator=g), torch.tensor([0, 1, 2, 3, 1]), torch.randn(D, K, generator=g)


def _head(kind: str, weights: torch.Tensor, margin: float) -> MarginHead:
    head = MarginHead(kind, D, K, scale=S, margin=margin)
    with torch.no_grad():
        head.margin_loss.W.copy_(weights)
    return head


def _cosines(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """cos(theta_j) between each embedding and each class weight, written out: x.w / (|x| |w|)."""
    return (x @ w) / (x.norm(dim=1, keepdim=True) * w.norm(dim=0, keepdim=True))


@pytest.mark.parametrize("kind, margin", [("arcface", 0.5), ("cosface", 0.35)])
def test_margin_heads_match_the_papers_formulas(kind, margin):
    x, y, w = _fixed_inputs()
    head = _head(kind, w, margin)
    cos = _cosines(x, w).double()
    # The head's logits: s * cos(theta_j), no margin (what accuracy and predictions read).
    torch.testing.assert_close(head(x).double(), S * cos, rtol=1e-5, atol=1e-4)
    # The loss: cross-entropy of s * cos(theta_y + m) (ArcFace) or s * (cos(theta_y) - m) (CosFace) at the
    # true class and s * cos(theta_j) elsewhere, with m in the paper's units (radians for ArcFace).
    target = cos[torch.arange(5), y]
    marked = torch.cos(torch.acos(target) + margin) if kind == "arcface" else target - margin
    logits = cos.clone()
    logits[torch.arange(5), y] = marked
    expected = F.cross_entropy(S * logits, y)
    loss = MarginLoss(head)(head(x), y, x)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # and the margin matters: without it the loss is plain softmax cross-entropy on s * cos
    assert loss.item() > F.cross_entropy(S * cos, y).item() + 0.1


def test_margin_head_stays_float32_under_autocast():
    """pytorch-metric-learning casts its weight to the embeddings' dtype in place; the head must not let it."""
    x, y, w = _fixed_inputs()
    head = _head("arcface", w, 0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(x.bfloat16())
        loss = MarginLoss(head)(logits, y, x.bfloat16())
    assert logits.dtype == torch.float32 and loss.dtype == torch.float32
    assert head.margin_loss.W.dtype == torch.float32


def test_center_loss_is_cross_entropy_plus_the_centre_term_and_moves_the_centres_as_the_paper():
    x, y, _ = _fixed_inputs()
    head = CenterHead(nn.Linear(D, K))
    with torch.no_grad():
        head.centers.copy_(torch.arange(K * D, dtype=torch.float32).reshape(K, D) / 10)
    before = head.centers.clone()
    criterion = CenterLoss(head, nn.CrossEntropyLoss(), weight=0.01, alpha=0.5)
    logits = head(x)
    loss = criterion(logits, y, x)
    diff = x - before[y]
    expected = F.cross_entropy(logits, y) + 0.01 * 0.5 * diff.pow(2).sum(1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # c_j -= alpha * sum_{i: y_i = j} (c_j - x_i) / (1 + n_j)
    for j in range(K):
        members = y == j
        step = (before[j] - x[members]).sum(0) / (1 + members.sum())
        torch.testing.assert_close(head.centers[j], before[j] - 0.5 * step)
    # evaluation reads the centres but never moves them
    head.eval()
    moved = head.centers.clone()
    criterion(head(x), y, x)
    assert torch.equal(head.centers, moved)


def test_each_loss_has_its_head_and_says_it_reads_embeddings():
    for loss, head_type, criterion_type in (("arcface", MarginHead, MarginLoss), ("cosface", MarginHead, MarginLoss),
                                            ("center", CenterHead, CenterLoss)):
        model = attach_head(create_model("face_baseline", num_classes=K, in_channels=1), loss)
        assert isinstance(model.fc, head_type)
        criterion = make_loss(loss, model, nn.CrossEntropyLoss())
        assert isinstance(criterion, criterion_type) and uses_embeddings(criterion)
        # the head's weights are the model's: the optimizer, DDP and checkpoints see them
        assert not list(criterion.parameters())
    plain = create_model("face_baseline", num_classes=K, in_channels=1)
    assert attach_head(plain, "cross_entropy") is plain and not uses_embeddings(make_loss("cross_entropy", plain,
                                                                                          nn.CrossEntropyLoss()))
    assert get_recipe("hw2p2").override(loss="arcface").with_head(plain).fc.kind == "arcface"


def test_bad_losses_are_refused_with_the_fix():
    model = create_model("face_baseline", num_classes=K, in_channels=1)
    with pytest.raises(ValueError, match="arcface, cosface"):
        attach_head(model, "triplet")
    with pytest.raises(ValueError, match="build it with steps.build_model"):
        make_loss("arcface", model, nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="Linear layer called fc"):
        attach_head(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), "cosface")
    with pytest.raises(ValueError, match="criterion\\(model\\)"):
        get_recipe("hw2p2").override(loss="center").criterion()
    with pytest.raises(ValueError, match="--lr"):
        plan_module.plan_run("s10", size="quick", loss="arcface")
    with pytest.raises(ValueError, match="only hw2p2"):
        plan_module.plan_run("s7", size="quick", tta="flip")
    with pytest.raises(ValueError, match="tta must be one of"):
        plan_module.plan_run("hw2p2", size="quick", tta="five-crop")


def test_the_command_offers_each_loss():
    from era_utils import cli, face_losses

    for loss in face_losses.LOSSES:  # every loss the kit has, taken by --loss
        assert cli.build_parser().parse_args(["run", "hw2p2", "--loss", loss]).loss == loss
    args = cli.build_parser().parse_args(["run", "hw2p2", "--loss", "cosface", "--tta", "flip"])
    assert (args.loss, args.tta) == ("cosface", "flip")
    assert cli.run_command("hw2p2", loss="center", tta="flip")[-4:] == ["--loss", "center", "--tta", "flip"]


def _run(tmp_path, root, loss: str, out: str, *, resume: bool = False, dies_in_epoch: int | None = None,
         init_seed: int | None = None):
    """The HW2P2 chain on a tiny Fashion-MNIST with `loss`, built from scratch as a new session would."""
    from fake_data import DiesInEpoch

    recipe = get_recipe("hw2p2").override(model="face_baseline", epochs=3, batch_size=16, lr=0.01)
    plan = plan_module.plan_run(recipe, loss=loss, tta="flip", dataset="fashion_mnist", data_dir=str(root), device="cpu",
                          amp="off", num_workers=0, out=tmp_path / out, resume=resume, verbose=False,
                          verification_pairs=40)
    steps.start(plan)
    data = steps.load_data(plan)
    train_loader, test_loader = steps.build_loaders(plan, data)
    if dies_in_epoch is not None:
        test_loader = DiesInEpoch(test_loader, dies_in_epoch)
    if init_seed is not None:
        torch.manual_seed(init_seed)  # another session: another initialisation, which the checkpoint replaces
    model = steps.build_model(plan, data)
    optimizer, scheduler = steps.optimizer_and_schedule(plan, model, train_loader)
    history = steps.train(plan, model, train_loader, test_loader, optimizer, scheduler, callbacks=[])
    return plan, data, model, history


@pytest.mark.parametrize("loss", ["arcface", "cosface", "center"])
def test_a_run_with_each_loss_resumes_exactly(tmp_path, monkeypatch, loss):
    from fake_data import write_fashion_mnist

    monkeypatch.setattr(steps, "CHECKPOINT_INTERVAL_S", 0.0)  # a checkpoint after every epoch
    root = write_fashion_mnist(tmp_path / "data", n_train=160, n_test=60)
    _, _, straight_model, straight = _run(tmp_path, root, loss, "a")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, root, loss, "b", dies_in_epoch=3)
    plan, data, resumed_model, resumed = _run(tmp_path, root, loss, "b", resume=True, init_seed=123)
    for name in ("train_loss", "train_acc", "test_loss", "test_acc", "lrs"):
        assert getattr(resumed, name) == getattr(straight, name), name
    for (key, a), b in zip(straight_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), key  # the margin weights and the class centres too
    result = steps.verify(plan, data, resumed_model)
    assert result.tta == "flip" and result.without_flip is not None and result.metrics.n_pairs == 40


def test_flip_averaged_embeddings_are_unit_length_and_mirror_invariant():
    """tta="flip": each embedding is the normalised mean of the image's and its mirror's, so an image
    and its mirror image get the same embedding; the predictions stay the image's own."""
    from torch.utils.data import DataLoader, TensorDataset

    from era_utils.analysis import predict

    torch.manual_seed(0)
    model = create_model("face_baseline", num_classes=3, in_channels=1).eval()
    x = torch.randn(6, 1, 28, 28)
    both = torch.cat([x, x.flip(-1)])
    loader = DataLoader(TensorDataset(both, torch.full((12,), -1)), batch_size=4)
    flipped = predict(model, loader, embeddings=True, tta="flip", amp="off")
    plain = predict(model, loader, embeddings=True, amp="off")
    torch.testing.assert_close(flipped.embeddings.norm(dim=1), torch.ones(12))
    torch.testing.assert_close(flipped.embeddings[:6], flipped.embeddings[6:], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(plain.embeddings[:6], plain.embeddings[6:], atol=1e-3)
    assert torch.equal(flipped.preds, plain.preds)


def test_csvs_keep_their_format_with_a_margin_loss(tmp_path):
    """A quick HW2P2 run with ArcFace and flip writes both Kaggle CSVs as before, and the report names both."""
    from fake_data import write_fashion_mnist

    from era_utils.runner import run_recipe

    root = write_fashion_mnist(tmp_path / "data", n_train=200, n_test=100)
    recipe = get_recipe("hw2p2").override(model="face_baseline", epochs=1, batch_size=16, lr=0.01)
    plan = plan_module.plan_run(recipe, loss="arcface", tta="flip", dataset="fashion_mnist", data_dir=str(root),
                          device="cpu", amp="off", num_workers=0, out=tmp_path / "run", verbose=False,
                          verification_pairs=40)
    metrics = run_recipe(plan)
    out = tmp_path / "run"
    with open(out / "verification_submission.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Id", "Category"] and len(rows) == 41
    assert all(len(r[0].split()) == 2 and -1.0 <= float(r[1]) <= 1.0 for r in rows[1:])
    with open(out / "classification_submission.csv", newline="") as f:
        assert next(csv.reader(f)) == ["id", "label"]
    verification = metrics["verification"]
    assert verification["tta"] == "flip" and set(verification["without_flip"]) == {"auc", "eer"}
    assert "roc.json" in metrics["files"] and "ArcFace (s 64, m 0.5)" in (out / "report.md").read_text()
    assert math.isfinite(verification["auc"]) and np.isfinite(metrics["final_test_acc"])
