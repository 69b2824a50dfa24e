"""Layered layout of a graph: igraph's Sugiyama layout (layers by longest path, crossings
reduced by the barycenter heuristic, long edges split by dummy vertices), turned into canvas
positions and bend points.

Every node takes one cell of the same size, so nodes never overlap. A long edge passes each
layer it crosses through the cell of a dummy vertex, straight across that layer's band, so it
never runs through a node; between layers (the gaps, where no node is) it may bend freely.
Branches and merges (residual blocks, Inception) come out as parallel lanes.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field

import igraph
import networkx as nx

from layerlab.core.project import DIRECTIONS, Project

Point = tuple[float, float]
NODE_SIZE = (168.0, 74.0)  # the canvas's largest node (width, height)
GAP_ACROSS = 48.0  # between neighbours in a layer
GAP_ALONG = {"TB": 64.0, "LR": 96.0}  # between layers: room for the edge's shape label


@dataclass
class Layout:
    """Top-left corner of each node, and the bend points of each long edge (in order from
    source to target); scene units."""

    positions: dict[str, Point] = field(default_factory=dict)
    bends: dict[tuple[str, str], list[Point]] = field(default_factory=dict)


def layered(graph: nx.DiGraph, direction: str = "TB",
            node_size: tuple[float, float] = NODE_SIZE) -> Layout:
    """Lay out `graph` in layers flowing `direction` ("TB" or "LR")."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
    nodes = list(graph)
    if not nodes:
        return Layout()
    index = {node: i for i, node in enumerate(nodes)}
    edges = list(graph.edges())
    g = igraph.Graph(n=len(nodes), edges=[(index[u], index[v]) for u, v in edges],
                     directed=True)
    coords = g.layout_sugiyama(hgap=1, vgap=1, maxiter=100)
    cells = [list(coords[i][:2]) for i in range(len(nodes))]
    routes = [[list(p) for p in route] for route in coords.edge_routing]
    _keep_apart(cells, routes)
    width, height = node_size
    if direction == "TB":
        across, along = width + GAP_ACROSS, height + GAP_ALONG["TB"]
    else:
        across, along = height + GAP_ACROSS, width + GAP_ALONG["LR"]

    def corner(x: float, layer: float) -> Point:
        a, b = x * across, layer * along
        return (a, b) if direction == "TB" else (b, a)

    layers = {node: cells[index[node]][1] for node in nodes}
    positions = {node: corner(*cells[index[node]]) for node in nodes}
    bends: dict[tuple[str, str], list[Point]] = {}
    for (u, v), route in zip(edges, routes, strict=True):
        if not route:
            continue
        points = sorted(route, key=lambda p: p[1], reverse=layers[u] > layers[v])
        bends[(u, v)] = [p for x, layer in points
                         for p in _through_band(corner(x, layer), node_size, direction)]
    return Layout(positions, bends)


def _keep_apart(cells: list[list[float]], routes: list[list[list[float]]]) -> None:
    """Give every node and every dummy vertex of a layer its own cell, in igraph's order.
    igraph 1.0 can put a long edge's dummy vertex on the spot of a node of its layer (seen
    on Inception-like blocks), which would draw that edge through the node."""
    rows: dict[float, list[list[float]]] = defaultdict(list)
    for cell in cells:
        rows[cell[1]].append(cell)
    for route in routes:
        for point in route:
            rows[point[1]].append(point)
    for row in rows.values():
        row.sort(key=lambda p: p[0])  # stable: a node keeps its place before a dummy
        for left, right in itertools.pairwise(row):
            right[0] = max(right[0], left[0] + 1)


def _through_band(corner: Point, size: tuple[float, float], direction: str) -> list[Point]:
    """Where an edge enters and leaves a layer's band in the cell at `corner`: the middle
    of the cell's near side and of its far side."""
    x, y = corner
    width, height = size
    if direction == "TB":
        return [(x + width / 2, y), (x + width / 2, y + height)]
    return [(x, y + height / 2), (x + width, y + height / 2)]


def needs_layout(graph: nx.DiGraph) -> bool:
    """True when the nodes were never placed: none has a position, or all share one spot."""
    spots = {tuple(pos) for _, pos in graph.nodes(data="pos", default=[0, 0])}
    return graph.number_of_nodes() > 1 and len(spots) == 1


def apply(project: Project, layout: Layout) -> None:
    """Write `layout` into the project's graph (no undo: for a project not yet shown)."""
    for node, (x, y) in layout.positions.items():
        project.graph.nodes[node]["pos"] = [round(x), round(y)]
    for u, v, data in project.graph.edges(data=True):
        bends = layout.bends.get((u, v))
        if bends:
            data["bends"] = [[round(x), round(y)] for x, y in bends]
        else:
            data.pop("bends", None)


def place_if_unplaced(project: Project, node_size: tuple[float, float] = NODE_SIZE) -> bool:
    """Lay out a project whose nodes were never placed; True if it did."""
    if not needs_layout(project.graph):
        return False
    apply(project, layered(project.graph, project.direction, node_size))
    return True
