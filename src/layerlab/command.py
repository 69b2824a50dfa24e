"""What the command modules (train, trace, export) share: one way to refuse."""

from __future__ import annotations

from layerlab.core.errors import GraphError, format_error


class CommandFailed(Exception):
    """A command refused or failed; the message is for stderr, one problem a line."""


def graph_problems(file: str, exc: GraphError) -> CommandFailed:
    return CommandFailed("\n".join(f"{file}: {format_error(n, m)}" for n, m in exc.errors))
