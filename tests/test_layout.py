"""The layered layout: no node on another, no edge through a node (the drawn curves, checked
point by point), branches side by side, and the project file's direction (version 2)."""

import json

import networkx as nx
import numpy as np
import pytest

from layerlab.app.application import make_application
from layerlab.app.canvas.items import NODE_WIDTH
from layerlab.app.canvas.scene import GraphScene
from layerlab.app.document import Document
from layerlab.core.layout import NODE_SIZE, apply, layered, needs_layout, place_if_unplaced
from layerlab.core.project import Project, load_project

from conftest import EXAMPLES

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.layerlab.json"))


def branching_graph(nodes: int) -> nx.DiGraph:
    """Inception-like blocks: three branches of different lengths and the block's input,
    concatenated; a residual skip around every other block."""
    g = nx.DiGraph()
    g.add_node("input", type="Input", params={"shape": [8]})
    prev, skip, i = "input", None, 0
    while g.number_of_nodes() < nodes - 2:
        a = [f"a{i}_{k}" for k in range(3)]
        b, c, cat = f"b{i}", f"c{i}", f"cat{i}"
        for node in (*a, b, c):
            g.add_node(node, type="Linear", params={"out_features": 8})
        g.add_node(cat, type="Concat", params={})
        nx.add_path(g, [prev, *a])
        g.add_edge(prev, b)
        g.add_edge(b, c)
        for port, src in enumerate((a[-1], c, prev)):
            g.add_edge(src, cat, port=port)
        if skip is not None:
            g.add_edge(skip, cat, port=3)
        skip = prev if i % 2 == 0 else None
        prev, i = cat, i + 1
    g.add_node("head", type="Linear", params={"out_features": 2})
    g.add_node("loss", type="CrossEntropyLoss", params={})
    nx.add_path(g, [prev, "head", "loss"])
    return g


def drawn(project: Project) -> tuple[GraphScene, Document]:
    make_application()
    doc = Document(project)
    return GraphScene(doc), doc


def node_rects(scene: GraphScene) -> np.ndarray:
    """x0, y0, x1, y1 of each node's body, shrunk by 1 px (touching is not overlapping)."""
    return np.array([[item.x() + 1, item.y() + 1, item.x() + NODE_WIDTH - 1,
                      item.y() + item.height - 1] for item in scene.nodes.values()])


def assert_no_overlap(scene: GraphScene) -> None:
    r = node_rects(scene)
    apart = ((r[:, None, 2] <= r[None, :, 0]) | (r[None, :, 2] <= r[:, None, 0])
             | (r[:, None, 3] <= r[None, :, 1]) | (r[None, :, 3] <= r[:, None, 1]))
    np.fill_diagonal(apart, True)
    pairs = [(a, b) for a, b in zip(*np.nonzero(~apart), strict=True) if a < b]
    names = list(scene.nodes)
    assert not pairs, [(names[a], names[b]) for a, b in pairs[:5]]


def assert_no_edge_through_a_node(scene: GraphScene, samples: int = 120) -> None:
    """Every edge's drawn curve, sampled along its length, stays outside every node body."""
    r = node_rects(scene)
    names = list(scene.nodes)
    for (source, target), edge in scene.edges.items():
        path = edge.path()
        points = np.array([[p.x(), p.y()] for p in
                           (path.pointAtPercent(t) for t in np.linspace(0, 1, samples))])
        inside = ((points[:, None, 0] > r[None, :, 0]) & (points[:, None, 0] < r[None, :, 2])
                  & (points[:, None, 1] > r[None, :, 1]) & (points[:, None, 1] < r[None, :, 3]))
        hit = sorted({names[k] for k in np.nonzero(inside)[1]})
        assert not hit, f"{source} → {target} runs through {hit}"


def lay_out(project: Project, direction: str) -> None:
    project.view["direction"] = direction
    apply(project, layered(project.graph, direction))


@pytest.mark.parametrize("direction", ["TB", "LR"])
@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name.split(".")[0])
def test_examples_lay_out_without_overlaps_or_edges_through_nodes(path, direction, qapp):
    project = load_project(path)
    lay_out(project, direction)
    scene, _ = drawn(project)
    assert_no_overlap(scene)
    assert_no_edge_through_a_node(scene)


@pytest.mark.parametrize("direction", ["TB", "LR"])
def test_a_200_node_branching_graph_lays_out_cleanly_with_branches_side_by_side(direction,
                                                                                 qapp):
    project = Project(graph=branching_graph(200))
    assert needs_layout(project.graph)
    lay_out(project, direction)
    scene, _ = drawn(project)
    assert len(scene.nodes) == project.graph.number_of_nodes() >= 200
    assert_no_overlap(scene)
    assert_no_edge_through_a_node(scene, samples=60)
    across = 0 if direction == "TB" else 1
    along = 1 - across
    pos = {n: project.graph.nodes[n]["pos"] for n in project.graph}
    # the three branches of a block share a layer, in parallel lanes
    assert pos["a0_0"][along] == pos["b0"][along]
    assert pos["a0_0"][across] != pos["b0"][across]
    # the skip and the long edges bend, and every bend sits in a layer's band
    assert any(project.graph.edges[e].get("bends") for e in project.graph.edges)
    assert all(project.graph.nodes[u]["pos"][along] < p[along] <
               project.graph.nodes[v]["pos"][along] + NODE_SIZE[along]
               for u, v, bends in project.graph.edges(data="bends") if bends for p in bends)


def test_the_layout_flows_from_inputs_to_the_loss_and_crossings_stay_few():
    g = branching_graph(60)
    layout = layered(g, "TB")
    for u, v in g.edges():
        assert layout.positions[u][1] < layout.positions[v][1]
    lr = layered(g, "LR")
    for u, v in g.edges():
        assert lr.positions[u][0] < lr.positions[v][0]


def test_only_unplaced_projects_are_laid_out_on_opening():
    placed = load_project(EXAMPLES / "lenet5.layerlab.json")
    before = {n: list(p) for n, p in placed.graph.nodes(data="pos")}
    assert not place_if_unplaced(placed)
    assert dict(placed.graph.nodes(data="pos")) == before
    stacked = Project(graph=branching_graph(30))
    for node in stacked.graph:
        stacked.graph.nodes[node]["pos"] = [5, 5]  # all at one spot
    assert place_if_unplaced(stacked)
    spots = {tuple(p) for _, p in stacked.graph.nodes(data="pos")}
    assert len(spots) == stacked.graph.number_of_nodes()


def test_direction_is_saved_and_version_1_files_still_open(tmp_path):
    data = json.loads((EXAMPLES / "spiral.layerlab.json").read_text())
    assert data["version"] == 3 and data["view"]["direction"] == "TB"
    data["view"]["direction"] = "LR"
    path = tmp_path / "lr.layerlab.json"
    path.write_text(json.dumps(data))
    project = load_project(path)
    assert project.direction == "LR"
    project.save()
    assert json.loads(path.read_text())["view"] == {"direction": "LR"}
    old = {**data, "version": 1}
    del old["view"]
    path.write_text(json.dumps(old))
    assert load_project(path).direction == "LR"  # placed in a row: drawn as it always was
    for node in old["graph"]["nodes"]:
        node.pop("pos", None)
    path.write_text(json.dumps(old))
    assert load_project(path).direction == "TB"  # never placed: laid out top to bottom


def test_a_bad_direction_or_bend_is_named():
    from layerlab.core.errors import GraphError

    data = json.loads((EXAMPLES / "spiral.layerlab.json").read_text())
    data["view"]["direction"] = "diagonal"
    _, problems = Project.read(json.loads(json.dumps(data)))
    assert problems == [("view.direction", "view.direction must be TB or LR, not 'diagonal'")]
    data["view"]["direction"] = "TB"
    data["graph"]["edges"][0]["bends"] = [[1, "x"]]
    edge = data["graph"]["edges"][0]
    with pytest.raises(GraphError) as caught:
        Project.read(data)
    assert caught.value.errors == [(edge["target"], f"bends of the edge from {edge['source']} "
                                                    f"into {edge['target']} must be a list of "
                                                    "points [x, y]")]


def test_bend_points_are_ignored_once_the_nodes_moved_past_them(qapp):
    project = load_project(EXAMPLES / "resnet-block.layerlab.json")
    scene, doc = drawn(project)
    (u, v), = [e for e in project.graph.edges if project.graph.edges[e].get("bends")]
    bent = scene.edges[(u, v)].path().elementCount()
    doc.set_pos(v, [0, -400])  # the merge now sits above the branch: the bends lead nowhere
    straight = scene.edges[(u, v)].path()
    assert bent > 4 and straight.elementCount() == 4  # one curve: start, two controls, end
