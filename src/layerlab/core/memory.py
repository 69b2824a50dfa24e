"""Whether a network fits this machine's memory to train at all (no torch needed: `layerlab
check` and the window's analysis ask on every edit)."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping


@functools.cache
def machine_memory() -> int | None:
    """This machine's physical memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def memory_problems(counts: Mapping[str, int],
                    memory: int | None) -> list[tuple[str, str]]:
    """A sentence at each node holding a tenth or more of the parameters (largest first),
    when the weights and their gradients alone (float32: 8 bytes a parameter, held by
    training whatever the optimizer) exceed `memory` bytes: such a run could only fail as it
    starts, or have the system end the program. A field typed with a few digits too many
    shows at its node and at the nodes it feeds (a Linear's units are the next one's
    inputs). Nothing when `memory` is unknown."""
    total = sum(counts.values())
    if memory is None or 8 * total <= memory:
        return []
    large = sorted((n for n in counts if 10 * counts[n] >= total), key=lambda n: -counts[n])
    return [(node, f"training needs {8 * total / 1e9:,.0f} GB for the network's weights and "
                   f"their gradients ({total:,} parameters, {counts[node]:,} of them here), "
                   f"more than this machine's {memory / 1e9:,.0f} GB of memory; make it "
                   "smaller") for node in large]
