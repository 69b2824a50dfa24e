"""Groups: named blocks of nodes, a view concept that never changes the compiled model.

A node belongs to at most one group, recorded on the node itself (`"group": "g1"`), so that
deleting, renaming, copying and undoing nodes carry their membership with them. The groups'
own data (`name`, `collapsed`, and any key a later version adds) lives in the project file's
top-level `"groups"` list, written only when some group has members (file version 2).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import networkx as nx

GroupData = dict[str, Any]
Error = tuple[str | None, str]
KEY = "group"  # the node attribute naming the node's group


def group_of(graph: nx.DiGraph, node: str) -> str | None:
    value = graph.nodes[node].get(KEY)
    return value if isinstance(value, str) else None


def members(graph: nx.DiGraph, group: str) -> list[str]:
    """The group's nodes, in the graph's order."""
    return [n for n, g in graph.nodes(data=KEY) if g == group]


def membership(graph: nx.DiGraph) -> dict[str, list[str]]:
    """Group → its nodes (graph order), for every group that has members."""
    found: dict[str, list[str]] = {}
    for node, group in graph.nodes(data=KEY):
        if isinstance(group, str):
            found.setdefault(group, []).append(node)
    return found


def boundary(graph: nx.DiGraph, nodes: Iterable[str]
             ) -> tuple[list[tuple[str, str]], list[str]]:
    """The outer ports of a block of nodes: the edges that enter it (ordered by the member
    they enter, then its port), and the members whose output leaves it (graph order)."""
    inside = set(nodes)
    order = {n: i for i, n in enumerate(graph)}
    entering = [(u, v) for u, v in graph.edges() if v in inside and u not in inside]
    entering.sort(key=lambda e: (order[e[1]], graph.edges[e].get("port", 0)
                                 if isinstance(graph.edges[e].get("port", 0), int) else 0))
    leaving = sorted({u for u, v in graph.edges() if u in inside and v not in inside},
                     key=order.__getitem__)
    return entering, leaving


def unique_id(taken: Iterable[str], base: str = "group") -> str:
    used = set(taken)
    k = 1
    while f"{base}{k}" in used:
        k += 1
    return f"{base}{k}"


def to_file(groups: dict[str, GroupData], graph: nx.DiGraph) -> list[dict[str, Any]]:
    """The `"groups"` list of the file: only groups that have members, in their order."""
    used = set(membership(graph))
    return [{"id": gid, **copy.deepcopy(data)} for gid, data in groups.items() if gid in used]


def read(raw: Any, graph: nx.DiGraph, errors: list[Error]) -> dict[str, GroupData]:
    """The groups of a file, checked: every entry an object with a unique text id and a
    text name; every node's group one the file defines."""
    if not isinstance(raw, list):
        errors.append(("groups", "groups must be a list"))
        return {}
    groups: dict[str, GroupData] = {}
    for i, entry in enumerate(raw):
        where = f"groups[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            errors.append((where, f"{where} must be an object with a text id"))
            continue
        gid = entry["id"]
        if gid in groups:
            errors.append((gid, f"duplicate group id '{gid}'"))
            continue
        if not isinstance(entry.get("name", ""), str):
            errors.append((gid, f"name of group {gid} must be text"))
        if not isinstance(entry.get("collapsed", False), bool):
            errors.append((gid, f"collapsed of group {gid} must be true or false"))
        groups[gid] = {k: copy.deepcopy(v) for k, v in entry.items() if k != "id"}
    for node, group in graph.nodes(data=KEY):
        if group is None:
            continue
        if not isinstance(group, str):
            errors.append((node, f"group of {node} must be a group id (text)"))
        elif group not in groups:
            errors.append((node, f"{node} is in group '{group}', which the file does not "
                                 "define"))
    return groups


def new_group(name: str, collapsed: bool = True) -> GroupData:
    return {"name": name, "collapsed": collapsed}


def rekey(nodes: dict[str, dict[str, Any]], groups: dict[str, GroupData],
          taken: Iterable[str]) -> dict[str, GroupData]:
    """Give pasted nodes' groups fresh ids (so a pasted group is a group of its own), in
    place on `nodes`; returns the new ids' data. A node whose group came without its data
    joins no group."""
    used = set(taken)
    fresh: dict[str, str] = {}
    for gid in groups:
        fresh[gid] = unique_id(used)
        used.add(fresh[gid])
    for data in nodes.values():
        old = data.pop(KEY, None)
        if old in fresh:
            data[KEY] = fresh[old]
    present = {data[KEY] for data in nodes.values() if KEY in data}
    return {fresh[g]: copy.deepcopy(d) for g, d in groups.items() if fresh[g] in present}
