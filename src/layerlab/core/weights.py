"""Weights on disk: safetensors with the state-dict keys of product.md §1, written atomically."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_model

from layerlab.core.atomic import atomic_path


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """safetensors.save_model handles tied weights, which save_file refuses."""
    with atomic_path(path) as tmp:
        save_model(model, str(tmp))
