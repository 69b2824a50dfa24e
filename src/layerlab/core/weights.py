"""Weights on disk: safetensors with the state-dict keys of product.md §1, written atomically.

Reading a file someone hands us is the dangerous part: a PyTorch file is a pickle, and a
pickle can run code. Files are read with torch.load(weights_only=True); whatever is not a
plain file of tensors is refused with one sentence that names the file and what it is.
"""

from __future__ import annotations

import codecs
import pickletools
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file, save_model

from layerlab.core.atomic import atomic_path

WEIGHTS = "a weights file (safetensors or PyTorch)"
CONVERT = ("if you trust where it came from, load it in a Python session you trust and save "
           "its state dict with safetensors.torch.save_file, then use that .safetensors file")
# what torch.save itself puts in a pickle (torch.load allows these with weights_only=True)
_SAFE_GLOBALS = ("torch.", "collections.OrderedDict")


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """safetensors refuses tensors that share memory (tied weights): each is written once,
    under its first key (the embedding's, which a model without the tied head also has),
    and the metadata names the others, as safetensors' save_model writes it."""
    state = model.state_dict()
    aliases = shared_keys(state)
    with atomic_path(path) as tmp:
        if not aliases:
            save_model(model, str(tmp))
            return
        save_file({k: v.contiguous() for k, v in state.items() if k not in aliases}, str(tmp),
                  metadata=aliases)


def shared_keys(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Each key whose tensor is the memory of an earlier key's (a tied weight) → that key."""
    first: dict[tuple[Any, ...], str] = {}
    out = {}
    for key, tensor in state.items():
        if tensor.device.type == "meta":
            continue
        where = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(),
                 tuple(tensor.shape), tensor.stride())
        if where in first:
            out[key] = first[where]
        else:
            first[where] = key
    return out


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

    def mismatch(self, limit: int = 5) -> str:
        """The keys that did not fit, for one sentence ("" when everything fitted)."""
        skipped = {key for key, _ in self.skipped}
        problems = [f"{key} ({why})" for key, why in self.skipped]
        problems += [key for key in self.missing if key not in skipped]
        return ", ".join(problems[:limit]) + (" …" if len(problems) > limit else "")


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(64)
    except IsADirectoryError:
        raise WeightsError(f"{path} is a folder, not a file") from None
    except OSError as exc:
        raise WeightsError(f"cannot read {path}: {exc.strerror}") from None


def is_safetensors(head: bytes) -> bool:
    """8 bytes of header length, then the JSON header."""
    return len(head) > 8 and head[8:9] == b"{"


def _kind(head: bytes) -> str | None:
    """What a file that failed to load is, judged by its first bytes; None: cannot tell."""
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive torch.save did not write, or a damaged one"
    if head[:1] == b"\x80":
        return "a Python pickle torch.save did not write"
    try:  # incremental: the 64 bytes may end inside a character
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return None
    return "a text file" if all(c.isprintable() or c in "\t\n\r" for c in text) else None


def _code_in_pickle(path: Path) -> str | None:
    """The first object beyond torch's own that a pickle would import (and could call),
    found without running it: pickletools only reads the opcodes. None: plain data."""
    strings: list[str] = []
    try:
        with path.open("rb") as handle:
            for op, arg, _ in pickletools.genops(handle):
                if isinstance(arg, str) and "UNICODE" in op.name:
                    strings.append(arg)
                if op.name in ("GLOBAL", "INST"):
                    name = str(arg).replace(" ", ".")
                elif op.name == "STACK_GLOBAL":  # module and name were pushed just before
                    name = ".".join(strings[-2:]) if len(strings) >= 2 else "an object"
                else:
                    continue
                if not name.startswith(_SAFE_GLOBALS):
                    return name
    except Exception:  # a damaged pickle: genops stops where the opcodes stop making sense
        return None
    return None


def _why_not(path: Path, noun: str, exc: Exception) -> str:
    named = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
    culprit = named.group(1) if named else None
    head = _head(path)
    if culprit is None and head[:1] == b"\x80":
        culprit = _code_in_pickle(path)
    if culprit is not None:
        return (f"{path} was refused: it holds Python objects beyond tensors ({culprit}), "
                f"and loading them could run code; {CONVERT}")
    # torch's own message would advise weights_only=False: the one thing not to do
    return f"{path} is not {noun}: it is {_kind(head) or 'not a file torch.save wrote'}"


def read_torch_file(path: str | Path, noun: str = WEIGHTS,
                    map_location: str | torch.device = "cpu") -> Any:
    """What torch.save wrote, read with weights_only=True (tensors and plain containers);
    WeightsError says in one sentence why a file is not `noun`."""
    path = Path(path)
    _head(path)  # a missing or unreadable file, said plainly
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it cannot read
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch.load stumbles over a foreign file in many ways
        raise WeightsError(_why_not(path, noun, exc)) from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from safetensors, or from a PyTorch file read with weights_only=True: a file
    that needs arbitrary pickled objects (and could run code) is refused."""
    path = Path(path)
    head = _head(path)
    if path.suffix == ".safetensors" or is_safetensors(head):
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            kind = _kind(head)
            why = f"it is {kind}" if kind else str(exc).strip().splitlines()[0]
            raise WeightsError(f"{path} is not a valid safetensors file: {why}") from None
    state = read_torch_file(path)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a LayerLab checkpoint
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict (names → tensors)")
    return state


def match_state(model: torch.nn.Module, state: dict[str, torch.Tensor]
                ) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """The tensors of `state` that fit `model` by key and shape, and what did not fit."""
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
    tied: dict[str, set[str]] = {}  # a tied weight loads through any of its keys
    for alias, key in shared_keys(own).items():
        # one tensor: its first key's value wins
        if alias in usable and key in usable and not torch.equal(usable.pop(alias),
                                                                 usable[key]):
            skipped.append((alias, f"tied to {key} in the model, whose value was loaded"))
        group = tied.setdefault(key, {key}) | {alias}
        for member in group:
            tied[member] = group
    missing = tuple(k for k in own if k not in usable and not tied.get(k, set()) & set(usable))
    return usable, LoadReport(tuple(usable), tuple(skipped), missing)


def load_weights(model: torch.nn.Module, path: str | Path) -> LoadReport:
    """Load by key and shape; tensors whose shape differs (a new head) are skipped."""
    usable, report = match_state(model, read_state_dict(path))
    model.load_state_dict(usable, strict=False)
    return report
