"""The csv dataset: a table read as a person's spreadsheet would show it.

The header is optional and the delimiter sniffed; numeric columns are features as they are,
text columns are one-hot encoded with their categories listed in the project (option
`categories`), so that the encoding, and with it the Input's width, never depends on which
rows a file happens to hold. Rows are numbered as a spreadsheet numbers them (the header is
row 1), so that every refusal points at a cell a person can find.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from layerlab.core.spec import Param

MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
MAX_CLASSES = 20  # whole numbers with at most this many distinct values are classes
MAX_CATEGORIES = 100  # a text feature with more is an id or a name, not a category
SNIFF_BYTES = 64 * 1024
DELIMITERS = ",;\t|"


class TableError(Exception):
    """A table that cannot be read as asked; one sentence naming file, row and column."""


@dataclass(frozen=True)
class CategoriesParam(Param):
    """Option `categories`: column name → its categories in a fixed order."""

    def check(self, value: Any) -> str | None:
        if not isinstance(value, dict):
            return f"must map column names to lists of categories, not {value!r}"
        for column, names in value.items():
            if not isinstance(names, list) or not names or \
                    not all(isinstance(n, str) for n in names):
                return f"of column {column!r} must be a non-empty list of texts"
            if len(set(names)) != len(names):
                return f"of column {column!r} lists a category twice"
        return None


@dataclass(frozen=True)
class Table:
    path: Path
    header: tuple[str, ...]
    rows: list[list[str]]  # stripped cells, every row as long as the header
    numbers: list[int]  # each row's number in the file, the header (if any) being row 1

    def column(self, name: str) -> list[str]:
        k = self.header.index(name)
        return [row[k] for row in self.rows]

    def where(self, i: int, name: str) -> str:
        return f"{self.path} row {self.numbers[i]}, column {name}"


@dataclass
class Encoded:
    """A table's features and targets as tensors, with what is needed to explain them."""

    x: torch.Tensor
    y: torch.Tensor
    task: str
    classes: tuple[str, ...]
    features: tuple[str, ...]
    categories: dict[str, list[str]]
    targets: tuple[str, ...]
    missing: torch.Tensor | None = None  # (N, F) bool: cells to fill from the training rows
    blocks: tuple[tuple[int, int], ...] = field(default=())  # one-hot column ranges


OPTIONS = (
    Param("path", "text", "", help="The table (CSV, TSV, …); relative to the project file."),
    Param("target", "text", "", help="The target column (several, comma-separated, for "
          "regression); empty means the last column."),
    Param("task", "choice", "auto", choices=("auto", "classification", "regression"),
          help="auto: classes when the target is text or at most 20 distinct whole "
               "numbers; otherwise regression."),
    Param("header", "choice", "auto", choices=("auto", "yes", "no"),
          help="Whether the first row names the columns; without one, columns are named "
               "1, 2, 3, …"),
    Param("missing", "choice", "refuse", choices=("refuse", "fill"),
          help="refuse: an empty cell (or NA, NaN, ?) is an error naming its row and column; "
               "fill: the training rows' mean (numbers) or most frequent value (text)."),
    CategoriesParam("categories", "categories", {}, help="Text columns and their categories "
                    "in a fixed order (one-hot features; class names of a text target). "
                    "Columns not listed take their values in sorted order."),
)


# -- reading ------------------------------------------------------------------------------
def read_table(path: Path, header: str = "auto") -> Table:
    """The table's rows; TableError for anything that is not a rectangular text table."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TableError(f"cannot read {path}: {exc.strerror}") from None
    if b"\x00" in raw[:SNIFF_BYTES]:
        raise TableError(f"{path} is not a UTF-8 text file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TableError(f"{path} is not a UTF-8 text file (byte {exc.start} cannot be "
                         "read as UTF-8)") from None
    try:
        lines = list(csv.reader(text.splitlines(), _dialect(text)))
    except csv.Error as exc:  # e.g. a field beyond the reader's size limit
        raise TableError(f"{path} cannot be read as CSV: {exc}") from None
    numbered = [(n, [c.strip() for c in row]) for n, row in enumerate(lines, start=1)
                if row and any(c.strip() for c in row)]
    if not numbered:
        raise TableError(f"{path} needs a header row and at least one data row")
    first = numbered[0][1]
    named = header == "yes" or (header == "auto" and _looks_like_header(numbered))
    names = tuple(first) if named else tuple(str(k + 1) for k in range(len(first)))
    body = numbered[1:] if named else numbered
    if not body:
        raise TableError(f"{path} needs a header row and at least one data row")
    if named and len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise TableError(f"{path} row {numbered[0][0]} names column {twice!r} twice")
    for number, row in body:
        if len(row) != len(names):
            raise TableError(_ragged(path, number, row, names))
    return Table(path, names, [row for _, row in body], [n for n, _ in body])


def _dialect(text: str) -> type[csv.Dialect] | csv.Dialect:
    try:
        return csv.Sniffer().sniff(text[:SNIFF_BYTES], delimiters=DELIMITERS)
    except csv.Error:  # one column, or nothing to tell: commas
        return csv.excel


def _ragged(path: Path, number: int, row: list[str], names: tuple[str, ...]) -> str:
    if len(row) < len(names):
        return (f"{path} row {number} has {len(row)} values where the header has "
                f"{len(names)}: column {names[len(row)]} is missing")
    return (f"{path} row {number} has {len(row)} values where the header has {len(names)}: "
            f"value {row[len(names)]!r} is beyond the last column ({names[-1]})")


def _number(cell: str) -> float | None:
    """A number, also with a decimal comma ("1,5" in a table delimited by semicolons)."""
    try:
        value = float(cell)
    except ValueError:
        if cell.count(",") != 1 or "." in cell:
            return None
        try:
            value = float(cell.replace(",", "."))
        except ValueError:
            return None
    return value if math.isfinite(value) else None


def _looks_like_header(numbered: list[tuple[int, list[str]]]) -> bool:
    """A first row of distinct texts over a column of numbers below (or, for a table of
    texts only, what csv.Sniffer decides) names the columns."""
    first = numbered[0][1]
    if any(_number(c) is not None or c.lower() in MISSING for c in first) or \
            len(set(first)) != len(first):
        return False
    below = [row for _, row in numbered[1:6]]
    return any(all(_number(row[k]) is not None for row in below if len(row) > k)
               for k in range(len(first))) or not below or all(
        any(_number(row[k]) is None for row in below if len(row) > k)
        for k in range(len(first)))


# -- understanding ------------------------------------------------------------------------
def is_missing(cell: str) -> bool:
    return cell.lower() in MISSING


def numeric(values: list[str]) -> bool:
    """A column of numbers (missing cells aside); a column that holds any text is text
    unless almost all of it is numbers (then the text is a typo, refused by name)."""
    present = [v for v in values if not is_missing(v)]
    if not present:
        return True
    parsed = sum(_number(v) is not None for v in present)
    return parsed == len(present) or parsed >= 0.9 * len(present)


def detect_task(values: list[str]) -> str:
    """Texts, or whole numbers with at most 20 distinct values, are classes."""
    present = [v for v in values if not is_missing(v)]
    numbers = [_number(v) for v in present]
    if any(n is None for n in numbers):
        return "classification"
    few = len(set(numbers)) <= MAX_CLASSES
    return "classification" if few and all(n.is_integer() for n in numbers  # type: ignore[union-attr]
                                           ) else "regression"


def targets_of(table: Table, target: str) -> list[str]:
    """The target column names (option `target`: one, several comma-separated, or empty
    for the last); TableError names an unknown one."""
    names = [t.strip() for t in target.split(",") if t.strip()] or [table.header[-1]]
    for name in names:
        if name not in table.header:
            raise TableError(f"{table.path} has no column {name!r}; its columns are "
                             f"{', '.join(table.header)}")
    return names


def class_order(values: list[str], given: list[str] | None) -> list[str]:
    """Categories in the project's order, else numbers by value and texts alphabetically."""
    if given:
        return list(given)
    found = {v for v in values if not is_missing(v)}
    if all(_number(v) is not None for v in found):
        return sorted(found, key=lambda v: (float(v), v))
    return sorted(found)


def class_balance(values: list[str]) -> dict[str, int]:
    """How many rows each class has, most frequent first."""
    return dict(Counter(values).most_common())


# -- encoding -----------------------------------------------------------------------------
def encode(table: Table, opts: dict[str, Any]) -> Encoded:
    targets = targets_of(table, opts["target"])
    task = opts["task"]
    if task == "auto":
        task = "regression" if len(targets) > 1 else detect_task(table.column(targets[0]))
    categories: dict[str, list[str]] = {}
    columns, features, blocks, holes = [], [], [], []
    for name in table.header:
        if name in targets:
            continue
        values = table.column(name)
        if numeric(values):
            col, hole = _numbers(table, name, values)
            columns.append(col[:, None])
            holes.append(hole[:, None])
            features.append(name)
            continue
        order = class_order(values, opts["categories"].get(name))
        if len(order) > MAX_CATEGORIES and name not in opts["categories"]:
            raise TableError(f"{table.path} column {name} holds {len(order)} different texts "
                             "(names or ids?), too many to one-hot encode; remove the column, "
                             "or list its categories in option categories")
        categories[name] = order
        onehot, hole = _onehot(table, name, values, order)
        blocks.append((len(features), len(features) + len(order)))
        columns.append(onehot)
        holes.append(hole[:, None].expand(-1, len(order)))
        features += [f"{name}={c}" for c in order]
    x = torch.cat(columns, 1) if columns else torch.zeros(len(table.rows), 0)
    missing = torch.cat(holes, 1) if holes else torch.zeros_like(x, dtype=torch.bool)
    if bool(missing.any()) and opts["missing"] != "fill":
        i, j = (int(v) for v in missing.nonzero()[0])
        column = next(n for n in table.header if n not in targets and (
            features[j] == n or features[j].startswith(f"{n}=")))
        raise TableError(f"{table.where(i, column)}: the value is missing; fill it in, drop "
                         "the row, or set option missing to fill")
    y, classes = _targets(table, targets, task, opts["categories"], categories)
    return Encoded(x, y, task, classes, tuple(features), categories, tuple(targets),
                   missing if bool(missing.any()) else None, tuple(blocks))


def _numbers(table: Table, name: str, values: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    out, hole = torch.zeros(len(values)), torch.zeros(len(values), dtype=torch.bool)
    for i, cell in enumerate(values):
        if is_missing(cell):
            hole[i] = True
            continue
        number = _number(cell)
        if number is None:
            raise TableError(f"{table.where(i, name)}: {cell!r} is not a number (the "
                             "column's other values are)")
        out[i] = number
    return out, hole


def _onehot(table: Table, name: str, values: list[str],
            order: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    index = {c: k for k, c in enumerate(order)}
    out = torch.zeros(len(values), len(order))
    hole = torch.zeros(len(values), dtype=torch.bool)
    for i, cell in enumerate(values):
        if is_missing(cell):
            hole[i] = True
        elif cell in index:
            out[i, index[cell]] = 1.0
        else:
            raise TableError(f"{table.where(i, name)}: {cell!r} is not one of the column's "
                             f"categories ({', '.join(order)})")
    return out, hole


def _targets(table: Table, targets: list[str], task: str, given: dict[str, list[str]],
             categories: dict[str, list[str]]) -> tuple[torch.Tensor, tuple[str, ...]]:
    for name in targets:
        for i, cell in enumerate(table.column(name)):
            if is_missing(cell):
                raise TableError(f"{table.where(i, name)}: the target is missing; fill it "
                                 "in or drop the row")
    if task == "regression":
        values = []
        for name in targets:
            if not numeric(table.column(name)):
                raise TableError(f"{table.path}: target column {name} holds text, so it "
                                 "cannot be a regression target")
            values.append(_numbers(table, name, table.column(name))[0])
        return torch.stack(values, 1), ()
    if len(targets) > 1:
        raise TableError(f"{table.path}: a classification has one target column, not "
                         f"{len(targets)} ({', '.join(targets)})")
    name = targets[0]
    labels = table.column(name)
    order = class_order(labels, given.get(name))
    categories[name] = order
    index = {c: k for k, c in enumerate(order)}
    for i, label in enumerate(labels):
        if label not in index:
            raise TableError(f"{table.where(i, name)}: class {label!r} is not one of the "
                             f"classes listed in the project ({', '.join(order)})")
    return torch.tensor([index[v] for v in labels], dtype=torch.int64), tuple(order)


def fill_missing(x: torch.Tensor, missing: torch.Tensor, blocks: tuple[tuple[int, int], ...],
                 train_idx: torch.Tensor) -> torch.Tensor:
    """`x` with its missing cells filled from the training rows only: the mean of a number
    column, the most frequent category of a one-hot block."""
    x = x.clone()
    train = torch.zeros(len(x), dtype=torch.bool)
    train[train_idx] = True
    in_block = torch.zeros(x.shape[1], dtype=torch.bool)
    for start, stop in blocks:
        in_block[start:stop] = True
        rows = missing[:, start]
        counts = x[train & ~rows, start:stop].sum(0)
        x[rows, start:stop] = 0.0
        x[rows, start + int(counts.argmax())] = 1.0
    for j in range(x.shape[1]):
        rows = missing[:, j]
        if in_block[j] or not bool(rows.any()):
            continue
        known = x[train & ~rows, j]
        x[rows, j] = known.mean() if len(known) else 0.0
    return x
