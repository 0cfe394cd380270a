"""Every model of the course, behind one registry: `create_model(name)`, `list_models()`.

    from era_utils.models import create_model, list_models
    model = create_model("custom_resnet", num_classes=10, in_channels=3)
    logits, emb = model(x, return_embedding=True)   # (B, 10), (B, 512)

Each family lives in its own file and registers its builders on import (below). Every model
has `forward(x, return_embedding=False)`, `embed(x) -> (B, embedding_dim)`, `embedding_dim`
and `cam_stages` (module names for GradCAM, shallow to deep).
"""
from __future__ import annotations

# Importing the family files registers their builders.
from era_utils.models import custom_resnet, face_baseline, face_resnet, lite, mobilenet, resnet  # noqa: F401
from era_utils.models.base import ClassifierBase
from era_utils.models.registry import ModelInfo, create_model, list_models, model_info, register_model

__all__ = ["create_model", "list_models", "model_info", "register_model", "ModelInfo", "ClassifierBase"]
