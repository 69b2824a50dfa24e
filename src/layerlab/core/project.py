"""The project file (`*.layerlab.json`): load, validate, migrate, save atomically.

A file that cannot be read at all raises ProjectFileError (`check` exits 2); a readable file
with structural problems raises GraphError listing each problem with the node id or JSON
location it concerns (`check` exits 1). Problems of the network itself (unknown types, bad
parameters, shape mismatches) do not stop loading: the window must be able to open a broken
design so that a person can fix it; `analyze` reports them.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from layerlab.core import groups as groups_io
from layerlab.core.atomic import atomic_write_text
from layerlab.core.errors import GraphError, ProjectFileError
from layerlab.core.ops import params_problem
from layerlab.core.validation import normalise_training, training_problems

FORMAT = "layerlab-project"
# 2: "view" (how the canvas draws the graph: direction of flow, groups); 3: an edge's
# "out_port", the output of a layer with several (Split, Chunk) it leaves from, written only
# where it is not 0 — a version-2 file migrates by adding nothing
VERSION = 3
KNOWN_KEYS = ("format", "version", "name", "graph", "training", "view")
DIRECTIONS = ("TB", "LR")  # top to bottom (the default), left to right

DEFAULT_TRAINING: dict[str, Any] = {
    "dataset": {"name": "spiral", "options": {}, "validation_split": 0.1},
    "optimizer": {"name": "adam", "lr": 0.001},
    "batch_size": 32,
    "epochs": 10,
    "l1": 0.0,
    "l2": 0.0,
    "seed": 0,
    "device": "auto",
}

Error = tuple[str | None, str]


@dataclass
class Project:
    """A design and its training settings. `graph` is the networkx.DiGraph of product.md §1."""

    graph: nx.DiGraph = field(default_factory=nx.DiGraph)
    name: str = "Untitled"
    training: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(DEFAULT_TRAINING))
    extra: dict[str, Any] = field(default_factory=dict)  # unknown top-level keys, kept
    path: Path | None = None
    view: dict[str, Any] = field(default_factory=lambda: {"direction": "TB"})
    groups: dict[str, groups_io.GroupData] = field(default_factory=dict)  # core/groups.py

    @property
    def direction(self) -> str:
        """How the graph flows on the canvas: "TB" (top to bottom) or "LR"."""
        return str(self.view.get("direction", "TB"))

    def to_dict(self) -> dict[str, Any]:
        graph = nx.node_link_data(self.graph, edges="edges")
        graph["nodes"] = [{"id": n["id"], **{k: v for k, v in n.items() if k != "id"}}
                          for n in graph["nodes"]]
        graph["edges"] = [{k: v for k, v in e.items() if (k, v) != ("out_port", 0)}
                          for e in graph["edges"]]  # out_port is written where not 0
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "graph": graph,
            "training": copy.deepcopy(self.training),
            "view": self._view_dict(),
            **copy.deepcopy(self.extra),
        }

    def _view_dict(self) -> dict[str, Any]:
        groups = groups_io.to_file(self.groups, self.graph)
        return {**copy.deepcopy(self.view), **({"groups": groups} if groups else {})}

    def to_json(self) -> str:
        return dumps_readable(self.to_dict()) + "\n"

    def save(self, path: str | os.PathLike[str] | None = None) -> None:
        """Write the project atomically: a crash leaves the old file or the whole new one."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("the project has no file yet; give a path")
        atomic_write_text(target, self.to_json())
        self.path = target

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<project>") -> Project:
        project, problems = cls.read(data, source)
        if problems:
            raise GraphError(problems)
        return project

    @classmethod
    def read(cls, data: dict[str, Any], source: str = "<project>") -> tuple[Project, list[Error]]:
        """The project and the problems a person can fix in the window (its training settings,
        its name), kept as the file has them. A bad header raises ProjectFileError; a malformed
        graph raises GraphError with every problem of the file."""
        _check_header(data, source)
        graph_errors: list[Error] = []
        graph = _read_graph(data.get("graph"), graph_errors)
        problems: list[Error] = []
        training = _read_training(data.get("training", {}), problems)
        name = data.get("name", "Untitled")
        if not isinstance(name, str):
            problems.append(("name", f"name must be text, not {name!r}"))
            name = "Untitled"
        groups = _read_groups(data, graph, graph_errors)
        if graph_errors:
            raise GraphError(graph_errors + problems)
        extra = {k: v for k, v in data.items() if k not in KNOWN_KEYS}
        view = _read_view(data, graph, problems)
        view.pop("groups", None)  # read above, kept in `groups`
        return cls(graph=graph, name=name, training=training, extra=extra,
                   view=view, groups=groups), problems


def dumps_readable(value: Any, indent: str = "", width: int = 100) -> str:
    """JSON indented like a person would write it: anything short enough on one line."""
    flat = json.dumps(value, ensure_ascii=False)
    if len(flat) + len(indent) <= width or not isinstance(value, (dict, list)) or not value:
        return flat
    inner = indent + "  "
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: "
                 f"{dumps_readable(v, inner, width)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    items = [inner + dumps_readable(v, inner, width) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + indent + "]"


def load_project(path: str | os.PathLike[str]) -> Project:
    """Read a project file; raises ProjectFileError or GraphError with every problem."""
    project = Project.from_dict(parse_json(_read_bytes(path), str(path)), str(path))
    project.path = Path(path)
    return project


def load_project_lenient(path: str | os.PathLike[str]) -> tuple[Project, list[Error]]:
    """Like load_project, but a file whose training settings or name have problems opens,
    with them (as an editor opens a file with a syntax error), for a person to fix; a file
    that cannot be read, or whose graph is malformed, still raises."""
    project, problems = Project.read(parse_json(_read_bytes(path), str(path)), str(path))
    project.path = Path(path)
    return project, problems


def _read_bytes(path: str | os.PathLike[str]) -> bytes:
    source = str(path)
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ProjectFileError(source, "no such file") from None
    except IsADirectoryError:
        raise ProjectFileError(source, "is a folder, not a project file") from None
    except OSError as exc:
        raise ProjectFileError(source, f"cannot be read ({exc.strerror})") from None


def parse_json(raw: bytes, source: str) -> dict[str, Any]:
    if not raw.strip():
        raise ProjectFileError(source, "is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProjectFileError(source, "is not a text file (it is not UTF-8)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProjectFileError(source, f"is not valid JSON: {exc.msg} at line {exc.lineno}, "
                                       f"column {exc.colno}") from None
    if not isinstance(data, dict):
        raise ProjectFileError(source, "is not a LayerLab project (expected a JSON object)")
    return data


def _check_header(data: dict[str, Any], source: str) -> None:
    fmt = data.get("format")
    if fmt != FORMAT:
        raise ProjectFileError(source, f"is not a LayerLab project (format is {fmt!r}, "
                                       f"expected {FORMAT!r})")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ProjectFileError(source, f"has an invalid version {version!r}")
    if version > VERSION:
        raise ProjectFileError(source, f"was written by a newer LayerLab (file version "
                                       f"{version}; this one reads up to {VERSION}); "
                                       "upgrade LayerLab to open it")


def _read_graph(graph: Any, errors: list[Error]) -> nx.DiGraph:
    if not isinstance(graph, dict):
        errors.append(("graph", "graph must be an object with nodes and edges"))
        return nx.DiGraph()
    if graph.get("multigraph") or graph.get("directed") is False:
        errors.append(("graph", "graph must be a directed graph without parallel edges"))
    nodes, edges = graph.get("nodes"), graph.get("edges", [])
    if not isinstance(nodes, list):
        errors.append(("graph.nodes", "graph.nodes must be a list"))
        nodes = []
    if not isinstance(edges, list):
        errors.append(("graph.edges", "graph.edges must be a list"))
        edges = []
    before = len(errors)
    _check_nodes(nodes, errors)
    _check_edges(edges, errors)
    if len(errors) > before:
        return nx.DiGraph()
    data = {**graph, "directed": True, "multigraph": False, "graph": graph.get("graph", {}),
            "nodes": nodes, "edges": edges}
    return nx.node_link_graph(copy.deepcopy(data), directed=True, multigraph=False,
                              edges="edges")


def _check_nodes(nodes: list[Any], errors: list[Error]) -> None:
    first_seen: dict[str, int] = {}
    for i, node in enumerate(nodes):
        where = f"graph.nodes[{i}]"
        if not isinstance(node, dict) or not isinstance(node.get("id"), str):
            errors.append((where, f"{where} must be an object with a text id"))
            continue
        node_id = node["id"]
        if node_id in first_seen:
            errors.append((node_id, f"duplicate id '{node_id}' (graph.nodes[{first_seen[node_id]}]"
                                    f" and {where})"))
            continue
        first_seen[node_id] = i
        if not isinstance(node.get("type"), str):
            errors.append((node_id, f"{node_id} has no layer type"))
        if "params" in node and not isinstance(node["params"], dict):
            errors.append((node_id, f"params of {node_id} must be an object"))
        elif node.get("type") == "Op":  # a file is data: it names only allowed calls
            problem = params_problem(node.get("params", {}))
            if problem:
                errors.append((node_id, f"{node_id} {problem}"))
        if not _is_point(node.get("pos", [0, 0])):
            errors.append((node_id, f"pos of {node_id} must be two numbers [x, y]"))
        for key in ("frozen", "stage_start"):  # stage_start: core/stages.py
            if not isinstance(node.get(key, False), bool):
                errors.append((node_id, f"{key} of {node_id} must be true or false"))


def _check_edges(edges: list[Any], errors: list[Error]) -> None:
    seen = set()
    for i, edge in enumerate(edges):
        where = f"graph.edges[{i}]"
        if not isinstance(edge, dict) or not isinstance(edge.get("source"), str) or \
                not isinstance(edge.get("target"), str):
            errors.append((where, f"{where} must be an object with text source and target"))
            continue
        pair = (edge["source"], edge["target"])
        if pair in seen:
            errors.append((edge["target"], f"the edge from {pair[0]} into {pair[1]} appears "
                                           "twice"))
        seen.add(pair)
        port = edge.get("out_port", 0)
        if isinstance(port, bool) or not isinstance(port, int) or port < 0:
            errors.append((edge["target"], f"out_port of the edge from {pair[0]} into "
                                           f"{pair[1]} must be a whole number ≥ 0, not "
                                           f"{port!r}"))
        bends = edge.get("bends", [])
        if not (isinstance(bends, list) and all(_is_point(p) for p in bends)):
            errors.append((edge["target"], f"bends of the edge from {pair[0]} into {pair[1]} "
                                           "must be a list of points [x, y]"))


def _is_point(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        for v in value)


def _read_view(data: dict[str, Any], graph: nx.DiGraph, errors: list[Error]) -> dict[str, Any]:
    """The canvas settings. Version 1 files had none and were drawn left to right; one
    whose nodes were never placed (all at one spot) is laid out top to bottom."""
    if data["version"] < 2:
        spots = {tuple(pos) for _, pos in graph.nodes(data="pos", default=[0, 0])}
        return {"direction": "LR" if len(spots) > 1 else "TB"}
    view = data.get("view", {})
    if not isinstance(view, dict):
        errors.append(("view", "view must be an object"))
        return {"direction": "TB"}
    view = copy.deepcopy(view)
    if view.setdefault("direction", "TB") not in DIRECTIONS:
        errors.append(("view.direction", f"view.direction must be TB or LR, not "
                                         f"{view['direction']!r}"))
        view["direction"] = "TB"
    return view


def _read_groups(data: dict[str, Any], graph: nx.DiGraph,
                 errors: list[Error]) -> dict[str, groups_io.GroupData]:
    """Version 2 keeps the groups in view.groups; version 1 had none."""
    view = data.get("view")
    if data["version"] < 2 or not isinstance(view, dict):
        return {}
    return groups_io.read(view.get("groups", []), graph, errors)


def _read_training(training: Any, errors: list[Error]) -> dict[str, Any]:
    if not isinstance(training, dict):
        errors.append(("training", "training must be an object"))
        return copy.deepcopy(DEFAULT_TRAINING)
    merged = {**copy.deepcopy(DEFAULT_TRAINING), **copy.deepcopy(training)}
    for key in ("dataset", "optimizer"):
        if not isinstance(merged[key], dict):
            errors.append((f"training.{key}", f"training.{key} must be an object"))
            merged[key] = copy.deepcopy(DEFAULT_TRAINING[key])
        elif key in training:
            merged[key] = {**DEFAULT_TRAINING[key], **training[key]}
    merged = normalise_training(merged)
    errors.extend(training_problems(merged))
    return merged
