"""What the command modules (train, trace, export) share: one way to refuse."""

from __future__ import annotations

from layerlab.core.errors import GraphError, format_error


class CommandFailed(Exception):
    """A command refused or failed; the message is for stderr, one problem a line."""


def print_table(rows: list[tuple[str, ...]], left: int = 3) -> None:
    """Columns padded to fit; the first `left` columns flush left, numbers flush right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) if i < left else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip())


def graph_problems(file: str, exc: GraphError) -> CommandFailed:
    return CommandFailed("\n".join(f"{file}: {format_error(n, m)}" for n, m in exc.errors))
