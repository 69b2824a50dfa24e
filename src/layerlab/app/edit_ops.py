"""Edit-menu operations on a document: clipboard, delete, groups, insertion, auto-layout.
Each is one undo step."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import networkx as nx
from PySide6.QtCore import QPointF, QRectF, QSizeF
from PySide6.QtWidgets import QApplication

from layerlab.app.canvas.items import NODE_WIDTH
from layerlab.app.canvas.scene import GraphScene, new_node_data
from layerlab.app.commands import AddNodes, EditGroups, MoveNodes, RemoveItems
from layerlab.core import groups as core_groups
from layerlab.core.catalogue import CATALOGUE

CLIP_KEY = "layerlab-nodes"
LAYER_SPACING = (230, 150)
PASTE_OFFSET = 40
MAX_STEPS = 50  # how far the inserted layer and those downstream may be pushed on
NEW_NODE_HEIGHT = 90  # room kept for a node not yet drawn
GAP = 16  # between two nodes' outlines


def copy_selection(scene: GraphScene) -> bool:
    nodes = scene.selected_nodes()
    if not nodes:
        return False
    g = scene.doc.graph
    known = scene.doc.project.groups
    payload = {
        CLIP_KEY: {n: copy.deepcopy(dict(g.nodes[n])) for n in nodes},
        "edges": [[u, v, dict(d)] for u, v, d in g.edges(data=True)
                  if u in nodes and v in nodes],
        "groups": {gid: known[gid] for gid in dict.fromkeys(
            core_groups.group_of(g, n) for n in nodes) if gid in known},
    }
    # Plain text, so that the nodes can be pasted into an editor too; and a QMimeData made
    # in Python and left on the clipboard crashes PySide at exit (measured), text does not.
    QApplication.clipboard().setText(json.dumps(payload))
    return True


def _clipboard_nodes() -> dict[str, Any] | None:
    try:
        payload = json.loads(QApplication.clipboard().text())
    except ValueError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get(CLIP_KEY), dict):
        return None
    return payload


def paste(scene: GraphScene) -> list[str]:
    """Paste copied nodes with fresh ids (fc1 → fc1_2), offset so they are seen."""
    doc = scene.doc
    payload = _clipboard_nodes()
    if payload is None or doc.structure_locked:
        return []
    renamed: dict[str, str] = {}
    nodes: dict[str, dict[str, Any]] = {}
    for old, data in payload[CLIP_KEY].items():
        new = doc.unique_id(old)
        while new in nodes:
            new = f"{new}_2"
        renamed[old] = new
        x, y = data.get("pos", [0, 0])
        nodes[new] = {**data, "pos": [x + PASTE_OFFSET, y + PASTE_OFFSET]}
    edges = [(renamed[u], renamed[v], d) for u, v, d in payload["edges"]]
    copied = payload.get("groups")
    groups = core_groups.rekey(nodes, copied if isinstance(copied, dict) else {},
                               [*doc.project.groups, *core_groups.membership(doc.graph)])
    doc.undo_stack.push(AddNodes(doc, nodes, edges, "Paste", groups))
    scene.select_only(list(nodes))
    scene.groups.select_blocks(list(nodes))
    return list(nodes)


def delete_selection(scene: GraphScene) -> bool:
    doc = scene.doc
    nodes, edges = scene.selected_nodes(), scene.selected_edges()
    if not nodes and not edges:
        return False
    if doc.structure_locked:
        scene.message.emit("The graph is locked while training runs; stop the run first.")
        return False
    doc.undo_stack.push(RemoveItems(doc, nodes, edges))
    return True


def group_selection(scene: GraphScene) -> str | None:
    """Group the selected nodes into a new collapsed group (one undo step); a node leaves
    the group it was in, and a group left empty goes."""
    doc, nodes = scene.doc, scene.selected_nodes()
    if not nodes:
        scene.message.emit("Select the nodes to group first.")
        return None
    g, known = doc.graph, doc.project.groups
    group = core_groups.unique_id([*known, *core_groups.membership(g)])
    changes: dict[str, core_groups.GroupData | None] = {
        group: core_groups.new_group(f"Group {group.removeprefix('group')}")}
    for old in {gid for n in nodes if (gid := core_groups.group_of(g, n)) is not None}:
        if set(core_groups.members(g, old)) <= set(nodes):
            changes[old] = None
    doc.undo_stack.push(EditGroups(doc, dict.fromkeys(nodes, group), changes,
                                   f"Group {len(nodes)} layer{'s' * (len(nodes) != 1)}"))
    scene.clearSelection()
    scene.groups.select_blocks(nodes)
    return group


def ungroup_selection(scene: GraphScene) -> bool:
    """Dissolve every group with a selected member (one undo step); its nodes stay."""
    doc, g = scene.doc, scene.doc.graph
    chosen = [gid for gid in dict.fromkeys(core_groups.group_of(g, n)
                                           for n in scene.selected_nodes())
              if gid is not None]
    if not chosen:
        scene.message.emit("Select a group (or one of its nodes) to ungroup.")
        return False
    members: dict[str, str | None] = {n: None for gid in chosen
                                      for n in core_groups.members(g, gid)}
    gone: dict[str, core_groups.GroupData | None] = {gid: None for gid in chosen}
    doc.undo_stack.push(EditGroups(doc, members, gone, "Ungroup"))
    scene.select_only(list(members))
    return True


def insert_after(scene: GraphScene, type_name: str, after: str) -> str:
    """Splice a new `type_name` layer into `after`'s outgoing edges (after → new → each old
    successor, ports kept), placed where the next layer was, the nodes downstream moved on
    so that nothing overlaps: one undo step. A layer that cannot sit in the middle (an
    input, a loss), or a node without an output or with several (Split), gets the new layer
    as a branch."""
    doc, g = scene.doc, scene.doc.graph
    spec, source = CATALOGUE[type_name], CATALOGUE.get(g.nodes[after].get("type", ""))
    step = _flow_step(scene, after)
    if spec.is_loss or spec.max_inputs == 0 or source is None or source.is_loss or \
            source.outputs is not None:
        return scene.add_layer(type_name, scene.nodes[after].pos() + step, after)
    if doc.structure_locked:
        scene.message.emit("The graph is locked while training runs; stop the run first.")
        return ""
    node = doc.unique_id(type_name.lower())
    outgoing = [(u, v, {k: w for k, w in d.items() if k != "bends"})
                for u, v, d in g.out_edges(after, data=True)]
    edges = [(after, node, {"port": 0} if spec.is_merge else {})]
    edges += [(node, v, d) for _, v, d in outgoing]
    start, moves = _make_room(scene, after, step)
    with doc.changes():
        doc.undo_stack.beginMacro(f"Insert {type_name} after {after}")
        if outgoing:
            doc.undo_stack.push(RemoveItems(doc, [], [(u, v) for u, v, _ in outgoing]))
        doc.undo_stack.push(AddNodes(doc, {node: new_node_data(type_name, start)}, edges,
                                     f"Add {type_name}"))
        if moves:
            doc.undo_stack.push(MoveNodes(doc, moves))
        doc.undo_stack.endMacro()
    return node


def _flow_step(scene: GraphScene, node: str) -> QPointF:
    """One step along the flow from `node`: to its first successor, else on from its first
    predecessor, else one layer's spacing in the canvas's direction; at least a node's
    size along the flow, so that a node fits in it."""
    g, here = scene.doc.graph, scene.nodes[node].pos()
    d = QPointF(0, LAYER_SPACING[1]) if scene.doc.project.direction == "TB" \
        else QPointF(LAYER_SPACING[0], 0)
    for other, sign in ((next(iter(g.successors(node)), None), 1),
                        (next(iter(g.predecessors(node)), None), -1)):
        if other is not None and (scene.nodes[other].pos() - here).manhattanLength() > 1:
            d = (scene.nodes[other].pos() - here) * sign
            break
    if abs(d.x()) >= abs(d.y()):
        d.setX(math.copysign(max(abs(d.x()), NODE_WIDTH + GAP), d.x()))
    else:
        d.setY(math.copysign(max(abs(d.y()), NEW_NODE_HEIGHT + GAP), d.y()))
    return d


def _make_room(scene: GraphScene, after: str, step: QPointF
               ) -> tuple[QPointF, dict[str, tuple[list[float], list[float]]]]:
    """Where the new node goes (`step` on from `after`) and moves for the nodes downstream
    of `after` (as far); both go further along while they would overlap a node that stays."""
    g = scene.doc.graph
    downstream = nx.descendants(g, after)
    staying = [_rect(scene, n) for n in g if n not in downstream]
    moving = [_rect(scene, n) for n in downstream]
    origin = scene.nodes[after].pos()
    for k in range(1, MAX_STEPS + 1):
        shift = step * k
        rects = [QRectF(origin + shift, QSizeF(NODE_WIDTH, NEW_NODE_HEIGHT))]
        rects += [r.translated(shift) for r in moving]
        if not any(r.intersects(s) for r in rects for s in staying):
            break
    moves = {}
    for n in downstream:
        old = list(g.nodes[n].get("pos", [0, 0]))
        moves[n] = (old, [round(old[0] + shift.x()), round(old[1] + shift.y())])
    return origin + shift, moves


def _rect(scene: GraphScene, node: str) -> QRectF:
    item = scene.nodes[node]
    return QRectF(item.pos(), QSizeF(NODE_WIDTH, item.height)).adjusted(
        -GAP / 2, -GAP / 2, GAP / 2, GAP / 2)
