"""Edit-menu operations on a document: clipboard, delete. Each is one command."""

from __future__ import annotations

import copy
import json
from typing import Any

from PySide6.QtWidgets import QApplication

from layerlab.app.canvas.scene import GraphScene
from layerlab.app.commands import AddNodes, RemoveItems

CLIP_KEY = "layerlab-nodes"
PASTE_OFFSET = 40


def copy_selection(scene: GraphScene) -> bool:
    nodes = scene.selected_nodes()
    if not nodes:
        return False
    g = scene.doc.graph
    payload = {
        CLIP_KEY: {n: copy.deepcopy(dict(g.nodes[n])) for n in nodes},
        "edges": [[u, v, dict(d)] for u, v, d in g.edges(data=True)
                  if u in nodes and v in nodes],
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
    doc.undo_stack.push(AddNodes(doc, nodes, edges, "Paste"))
    scene.select_only(list(nodes))
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
