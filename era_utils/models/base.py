"""The one interface every registered model shares: logits, embeddings and CAM stages.

A model subclasses `ClassifierBase`, builds `self.pool` and `self.fc`, sets `embedding_dim` and
`cam_stages`, and writes only `forward_features` (image -> last feature map). The base class
turns that into `embed` (pooled penultimate features, used for face verification) and
`forward(x, return_embedding=False)`, so no family repeats that logic.
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ClassifierBase"]


class ClassifierBase(nn.Module):
    """Backbone -> pool -> (dropout) -> fc; subclasses implement `forward_features`."""

    embedding_dim: int  # D: size of the pooled features that feed `fc`
    cam_stages: tuple[str, ...]  # dotted names for `get_submodule`, shallow to deep

    def __init__(self, in_channels: int, head_dropout: float = 0.0) -> None:
        super().__init__()
        self.in_channels = in_channels
        # Dropout between the embedding and the classifier only; embed() never sees it.
        self.head_drop = nn.Dropout(head_dropout) if head_dropout > 0 else None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) image -> (B, D, h, w) last feature map (before pooling)."""
        raise NotImplementedError

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (B, {self.in_channels}, H, W), got "
                f"{tuple(x.shape)}. Grayscale data needs create_model(..., in_channels=1); "
                "a single image needs a batch dimension (x.unsqueeze(0))."
            )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, D) pooled penultimate features (no dropout, no classifier)."""
        self._check_input(x)
        return torch.flatten(self.pool(self.forward_features(x)), 1)

    def forward(
        self, x: torch.Tensor, return_embedding: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, num_classes), or (logits, embedding (B, D)) when `return_embedding`."""
        emb = self.embed(x)
        logits = self.fc(emb if self.head_drop is None else self.head_drop(emb))
        return (logits, emb) if return_embedding else logits
