"""The status bar's size of the model: how many parameters it has and, once some are kept
out of training (frozen layers, LoRA's frozen base weights), how many of them train."""

from __future__ import annotations

from layerlab.app.document import Document
from layerlab.core.compiler import param_counts


def parameter_line(doc: Document) -> str:
    """ "56,789 parameters", or "trainable 1,234 of 56,789 parameters" when not all train."""
    total = sum(doc.counts.values())
    free = sum(param_counts(doc.graph, doc.analysis, trainable=True).values())
    if free == total:
        return f"{total:,} parameters"
    return f"trainable {free:,} of {total:,} parameters"
