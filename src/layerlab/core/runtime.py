"""Process-level settings for where LayerLab trains."""

from __future__ import annotations

import ctypes
import os
import sys

import torch

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_tuned = False


def tune_allocator() -> bool:
    """Stop glibc from handing freed tensor memory back to the OS after every step.

    By default glibc trims and unmaps large freed blocks, so every training step faults
    its activations back in (400–1,150 page faults per MLP step); keeping up to 1 GiB
    made steps ×1.34 faster here (shared/measurements.md). Linux/glibc only; set
    LAYERLAB_MALLOC_TUNING=0 to keep glibc's defaults. Returns whether it was applied.
    """
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("LAYERLAB_MALLOC_TUNING") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    _tuned = bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)) and bool(
        libc.mallopt(M_MMAP_THRESHOLD, 256 << 20))
    return _tuned


def pick_device(name: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but no CUDA GPU is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for, but Apple's MPS is not available")
    if name not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {name!r}; choose auto, cpu, cuda or mps")
    return torch.device(name)
