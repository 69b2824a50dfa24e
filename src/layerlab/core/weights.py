"""Weights on disk: safetensors with the state-dict keys of product.md §1, written atomically."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_model

from layerlab.core.atomic import atomic_path


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """safetensors.save_model handles tied weights, which save_file refuses."""
    with atomic_path(path) as tmp:
        save_model(model, str(tmp))


class WeightsError(Exception):
    """A weights file that cannot be read safely; one sentence for a person."""


@dataclass(frozen=True)
class LoadReport:
    """What loading weights into a model did, key by key."""

    loaded: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # key, why (shape differs / not in the model)
    missing: tuple[str, ...]  # model keys the file did not have

    def lines(self) -> list[str]:
        out = [f"loaded {len(self.loaded)} tensor(s)"]
        out += [f"skipped {key}: {why}" for key, why in self.skipped]
        out += [f"missing {key}: kept its initial value" for key in self.missing]
        return out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from safetensors, or from a PyTorch file read with weights_only=True: a file
    that needs arbitrary pickled objects (and could run code) is refused."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        raise WeightsError(f"cannot read {path}: {exc.strerror}") from None
    if path.suffix == ".safetensors" or (len(head) > 8 and head[8:9] == b"{"):
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise WeightsError(f"{path} is not a valid safetensors file ({exc})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(f"{path} was refused: it needs Python objects beyond tensors "
                           f"to load, which could run code ({str(exc).splitlines()[0]})"
                           ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise WeightsError(f"{path} is not a PyTorch weights file ({exc})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a LayerLab checkpoint
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict (names → tensors)")
    return state


def load_weights(model: torch.nn.Module, path: str | Path) -> LoadReport:
    """Load by key and shape; tensors whose shape differs (a new head) are skipped."""
    state = read_state_dict(path)
    own = model.state_dict()
    usable, skipped = {}, []
    for key, tensor in state.items():
        if key not in own:
            skipped.append((key, "not in the model"))
        elif tuple(tensor.shape) != tuple(own[key].shape):
            skipped.append((key, f"shape {list(tensor.shape)} in the file, "
                                 f"{list(own[key].shape)} in the model"))
        else:
            usable[key] = tensor
    model.load_state_dict(usable, strict=False)
    missing = tuple(k for k in own if k not in usable)
    return LoadReport(tuple(usable), tuple(skipped), missing)
