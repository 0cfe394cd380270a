"""HW2P2's training losses on embeddings: cross-entropy, ArcFace, CosFace, or cross-entropy + center loss.

Verification scores pairs by the cosine of their embeddings, so losses that train those cosines
directly beat plain softmax (the seeds' write-ups; Deng et al. 2019, Wang et al. 2018, Wen et al. 2016):

- ArcFace (https://arxiv.org/abs/1801.07698): logits s * cos(theta_j), with cos(theta_y + m) for the
  true class; CosFace (https://arxiv.org/abs/1801.09414): cos(theta_y) - m. theta_j is the angle
  between the embedding and class j's weight vector. Both are pytorch-metric-learning's
  (`ArcFaceLoss`, `CosFaceLoss`), held by the model as its classifier (`MarginHead`), so the optimizer,
  DistributedDataParallel and checkpoints see their weights as the model's.
- Center loss (https://ydwen.github.io/papers/WenECCV16.pdf): cross-entropy plus lambda/2 * |x - c_y|^2,
  pulling each embedding to its class centre; the centres follow the paper's update rule (rate
  alpha), not the optimizer. pytorch-metric-learning has no center loss: `CenterHead` and
  `CenterLoss` are the paper's formulas.

A loss that needs the embeddings says so (`uses_embeddings`): the engine then passes them as a third
argument, `criterion(logits, labels, embeddings)`. The heads compute in float32 whatever autocast is
on: pytorch-metric-learning casts its weight to the embeddings' dtype in place, so a bf16 call would
leave the model with a bf16 parameter.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from era_utils.choices import LOSSES

__all__ = ["LOSSES", "MARGIN_DEFAULTS", "CenterHead", "CenterLoss", "MarginHead", "MarginLoss", "attach_head",
           "check_loss", "l2_normalise", "loss_description", "make_loss", "uses_embeddings"]

# (scale s, margin m in radians or cosine units) from the papers: ArcFace s=64, m=0.5; CosFace s=64, m=0.35.
MARGIN_DEFAULTS = {"arcface": (64.0, 0.5), "cosface": (64.0, 0.35)}
CENTER_WEIGHT = 0.003  # lambda: Wen et al.'s choice for faces
CENTER_ALPHA = 0.5  # the centres' update rate, as in the paper


def check_loss(loss: str) -> str:
    """`loss` if it is one of LOSSES, else a ValueError listing them."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {loss!r}")
    return loss


def uses_embeddings(criterion: nn.Module) -> bool:
    """True when `criterion` takes (logits, labels, embeddings) rather than (logits, labels)."""
    return bool(getattr(criterion, "uses_embeddings", False))


def _float32(device: torch.device) -> torch.autocast:
    """A region where autocast is off, whatever the caller turned on."""
    return torch.autocast(device.type, enabled=False)


class MarginHead(nn.Module):
    """The classifier of an ArcFace or CosFace model: logits s * cos(embedding, class weight), in float32.

    The weights and the margin are pytorch-metric-learning's loss module (`self.margin_loss`), whose
    own unit for ArcFace's margin is degrees: `margin` here is the paper's (radians for ArcFace).
    """

    def __init__(self, kind: str, embedding_dim: int, num_classes: int, scale: float, margin: float) -> None:
        super().__init__()
        from pytorch_metric_learning.losses import ArcFaceLoss, CosFaceLoss  # here: a plain run never imports it

        if kind not in MARGIN_DEFAULTS:
            raise ValueError(f"a margin head is arcface or cosface, got {kind!r}")
        if not (scale > 0 and margin >= 0):
            raise ValueError(f"{kind} needs scale > 0 and margin >= 0, got scale {scale} and margin {margin}")
        self.kind, self.scale, self.margin = kind, float(scale), float(margin)
        if kind == "arcface":
            self.margin_loss = ArcFaceLoss(num_classes, embedding_dim, margin=math.degrees(margin), scale=scale)
        else:
            self.margin_loss = CosFaceLoss(num_classes, embedding_dim, margin=margin, scale=scale)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, D) embeddings -> (B, K) logits s * cos(theta_j), no margin: what accuracy and predictions read."""
        with _float32(embeddings.device):
            return self.margin_loss.get_logits(embeddings.float())

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The margin loss (mean over the batch) of (B, D) embeddings with their labels."""
        with _float32(embeddings.device):
            return self.margin_loss(embeddings.float(), labels)

    def extra_repr(self) -> str:
        return f"{self.kind}, scale={self.scale:g}, margin={self.margin:g}"


class MarginLoss(nn.Module):
    """ArcFace / CosFace as a criterion: the model's `MarginHead` applied to the embeddings."""

    uses_embeddings = True

    def __init__(self, head: MarginHead) -> None:
        super().__init__()
        self.head = [head]  # a list: the head's weights belong to the model, not to this criterion

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        return self.head[0].loss(embeddings, labels)


class CenterHead(nn.Module):
    """A linear classifier that also keeps one centre per class in embedding space (center loss)."""

    def __init__(self, fc: nn.Linear) -> None:
        super().__init__()
        self.fc = fc
        # A buffer: checkpointed with the model, moved by the paper's rule (CenterLoss), not by the optimizer.
        self.register_buffer("centers", torch.zeros(fc.out_features, fc.in_features))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.fc(embeddings)


class CenterLoss(nn.Module):
    """Cross-entropy + lambda/2 * mean |x - c_y|^2, the centres updated after each training step.

    The update is Wen et al.'s: c_j -= alpha * sum_{i: y_i = j} (c_j - x_i) / (1 + n_j), in training
    mode only. Under DistributedDataParallel the model's buffers are rank 0's at each forward, so
    the centres follow rank 0's images.
    """

    uses_embeddings = True

    def __init__(self, head: CenterHead, cross_entropy: nn.Module, weight: float = CENTER_WEIGHT,
                 alpha: float = CENTER_ALPHA) -> None:
        super().__init__()
        if not (weight > 0 and 0 < alpha <= 1):
            raise ValueError(f"center loss needs weight > 0 and 0 < alpha <= 1, got {weight} and {alpha}")
        self.head, self.cross_entropy, self.weight, self.alpha = [head], cross_entropy, float(weight), float(alpha)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        head = self.head[0]
        x = embeddings.float()
        with _float32(x.device):
            diff = x - head.centers[labels]  # (B, D); the centres carry no gradient
            center = 0.5 * diff.pow(2).sum(dim=1).mean()
            if head.training and torch.is_grad_enabled():
                self._move_centers(head.centers, labels, diff.detach())
            return self.cross_entropy(logits.float(), labels) + self.weight * center

    @torch.no_grad()
    def _move_centers(self, centers: torch.Tensor, labels: torch.Tensor, diff: torch.Tensor) -> None:
        pull = torch.zeros_like(centers).index_add_(0, labels, diff)  # sum of (x_i - c_j) per class
        count = torch.zeros(len(centers), device=centers.device).index_add_(
            0, labels, torch.ones_like(labels, dtype=torch.float32))
        centers.add_(self.alpha * pull / (1.0 + count).unsqueeze(1))


def attach_head(model: nn.Module, loss: str, scale: Optional[float] = None, margin: Optional[float] = None
                ) -> nn.Module:
    """`model` with the classifier `loss` trains: its `fc` replaced by a MarginHead (arcface, cosface),
    wrapped in a CenterHead (center), or left as it is (cross_entropy). Returns the model."""
    check_loss(loss)
    if loss == "cross_entropy":
        return model
    fc = getattr(model, "fc", None)
    if not isinstance(fc, nn.Linear):
        raise ValueError(f"loss {loss!r} replaces the model's classifier, a Linear layer called fc; "
                         f"{type(model).__name__} has {type(fc).__name__}: use an era_utils model or loss 'cross_entropy'")
    if loss == "center":
        model.fc = CenterHead(fc)
    else:
        default_scale, default_margin = MARGIN_DEFAULTS[loss]
        model.fc = MarginHead(loss, fc.in_features, fc.out_features, default_scale if scale is None else scale,
                              default_margin if margin is None else margin).to(fc.weight.device)
    return model


def make_loss(loss: str, model: nn.Module, cross_entropy: nn.Module, center_weight: float = CENTER_WEIGHT
              ) -> nn.Module:
    """The criterion of `loss` for a model `attach_head` prepared: `cross_entropy` itself, or the loss
    that reads the model's head."""
    check_loss(loss)
    if loss == "cross_entropy":
        return cross_entropy
    head = getattr(model, "fc", None)
    wanted = CenterHead if loss == "center" else MarginHead
    if not isinstance(head, wanted) or getattr(head, "kind", loss) != loss:
        raise ValueError(f"loss {loss!r} needs the model built for it (its classifier a {wanted.__name__}); this "
                         f"model's is {type(head).__name__}: build it with steps.build_model, or attach_head(model, "
                         f"{loss!r})")
    return CenterLoss(head, cross_entropy, center_weight) if loss == "center" else MarginLoss(head)


def loss_description(loss: str, label_smoothing: float, scale: Optional[float], margin: Optional[float],
                     center_weight: float) -> str:
    """The loss in words, for the recipe's table, e.g. "ArcFace (s 64, m 0.5)"."""
    ce = "cross-entropy" + (f", label smoothing {label_smoothing:g}" if label_smoothing else "")
    if loss == "cross_entropy":
        return ce
    if loss == "center":
        return f"{ce} + center loss (lambda {center_weight:g}, centres moved at rate {CENTER_ALPHA:g})"
    s, m = MARGIN_DEFAULTS[loss]
    name = {"arcface": "ArcFace", "cosface": "CosFace"}[loss]
    return (f"{name} (s {scale if scale is not None else s:g}, m {margin if margin is not None else m:g}) on "
            "L2-normalised embeddings and class weights; no label smoothing")


def l2_normalise(embeddings: torch.Tensor) -> torch.Tensor:
    """(N, D) float32 rows scaled to unit length (a zero row stays zero)."""
    return F.normalize(embeddings.float(), dim=1, eps=1e-12)
