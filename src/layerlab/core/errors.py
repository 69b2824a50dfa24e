"""The errors LayerLab raises to people, each tied to what it concerns."""

from __future__ import annotations


class GraphError(Exception):
    """A graph (or project) with problems; `.errors` lists every one, not just the first.

    Each entry is `(node_id, message)`; `node_id` is None for problems of the graph as a
    whole, and a JSON location such as `training.lr` for problems outside the graph.
    """

    def __init__(self, errors: list[tuple[str | None, str]]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(format_error(n, m) for n, m in self.errors))


class ProjectFileError(Exception):
    """A file that cannot be read as a LayerLab project at all (missing, not JSON, too new)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def format_error(node: str | None, message: str) -> str:
    """The message after the node or place it concerns, named once: "fc1: out_features must
    be …", but "n1 needs exactly 1 input …" as it is, not "n1: n1 needs …"."""
    if node is None or message.split(" ", 1)[0].rstrip(":") == node:
        return message
    return f"{node}: {message}"
