"""Shape inference reports every problem, each tied to its node, written for a person."""

import time

import networkx as nx
import pytest

import layerlab
from layerlab.core.shapes import analyze

from helpers import chain_graph


def errors_of(g):
    with pytest.raises(layerlab.GraphError) as info:
        layerlab.infer_shapes(g)
    return info.value.errors


def test_unknown_type_suggests_the_right_one():
    g = chain_graph([4], ("Linaer", {"out_features": 3}))
    assert errors_of(g) == [("n0", "unknown layer type 'Linaer' (did you mean Linear?)")]


def test_bad_and_missing_parameters_are_all_reported():
    g = chain_graph([4], ("Linear", {"out_feature": 3}), ("Dropout", {"p": 1.5}),
                    ("LeakyReLU", {"negative_slope": "steep"}), ("Linear", {"in_features": 4,
                                                                            "out_features": 2}))
    errors = errors_of(g)
    assert ("n0", "unknown parameter 'out_feature' for Linear (did you mean out_features?)") \
        in errors
    assert ("n0", "missing parameter out_features") in errors
    assert ("n1", "p must be at most 1, not 1.5") in errors
    assert ("n2", "negative_slope must be a number, not 'steep'") in errors
    assert ("n3", "in_features is inferred from the incoming shape; remove it") in errors


def test_wrong_rank_names_both_the_node_and_its_source():
    g = chain_graph([784], ("Conv2d", {"out_channels": 4, "kernel_size": 3}))
    assert errors_of(g) == [("n0", "n0 expects a [C, H, W] input but receives [784] from x")]


def test_kernel_larger_than_input():
    g = chain_graph([1, 4, 4], ("Conv2d", {"out_channels": 4, "kernel_size": 5}))
    (node, message), = errors_of(g)
    assert node == "n0" and "larger than the input [1, 4, 4] from x" in message


def merge_graph(shape_a, shape_b, typ="Add", ports=(0, 1), params=None):
    g = nx.DiGraph()
    g.add_node("x", type="Input", params={"shape": [4]})
    g.add_node("a", type="Linear", params={"out_features": shape_a})
    g.add_node("b", type="Linear", params={"out_features": shape_b})
    g.add_node("m", type=typ, params=params or {})
    g.add_edges_from([("x", "a"), ("x", "b")])
    g.add_edge("a", "m", port=ports[0])
    g.add_edge("b", "m", port=ports[1])
    return g


def test_mismatched_add_names_both_shapes():
    assert errors_of(merge_graph(3, 5)) == [
        ("m", "m cannot combine [3] from a with [5] from b: the shapes differ")]


def test_ports_doubled_or_out_of_range():
    assert errors_of(merge_graph(3, 3, ports=(0, 0))) == [
        ("m", "port 0 is used twice, by a and b")]
    (node, message), = errors_of(merge_graph(3, 3, ports=(0, 2)))
    assert node == "m" and "port 2 of the edge from b is out of range" in message


def test_concat_other_dims_must_agree():
    g = nx.DiGraph()
    g.add_node("x", type="Input", params={"shape": [2, 4]})
    g.add_node("a", type="Linear", params={"out_features": 3})
    g.add_node("m", type="Concat", params={"dim": 1})
    g.add_edges_from([("x", "a")])
    g.add_edge("x", "m", port=0)
    g.add_edge("a", "m", port=1)
    (node, message), = errors_of(g)
    assert node == "m" and "[2, 4] from x" in message and "[2, 3] from a" in message


def test_wrong_number_of_inputs():
    g = chain_graph([4], ("Linear", {"out_features": 3}))
    g.add_node("lonely", type="ReLU", params={})
    g.add_edge("lonely", "n0")
    errors = errors_of(g)
    assert ("lonely", "lonely needs exactly 1 input but has none") in errors
    assert ("n0", "n0 needs exactly 1 input but receives 2 (from x, lonely)") in errors


def test_cycle_names_every_node_on_it():
    g = chain_graph([4], ("Linear", {"out_features": 4}), ("ReLU", {}), ("Linear",
                                                                          {"out_features": 4}))
    g.add_edge("n2", "n0")
    errors = errors_of(g)
    cycle_nodes = {n for n, m in errors if m.startswith("cycle: ")}
    assert cycle_nodes == {"n0", "n1", "n2"}
    message = next(m for n, m in errors if n == "n0")
    assert all(n in message for n in ("n0", "n1", "n2")) and "→" in message


def test_no_input_and_two_inputs():
    g = nx.DiGraph()
    g.add_node("a", type="ReLU", params={})
    assert (None, "the graph has no Input node") in errors_of(g)
    g = chain_graph([4], ("ReLU", {}))
    g.add_node("y", type="Input", params={"shape": [4]})
    g.add_edge("y", "n0")
    assert ("y", "a graph has exactly one Input; x is already one") in errors_of(g)


def test_edges_to_missing_nodes_and_invalid_ids():
    g = chain_graph([4], ("ReLU", {}))
    g.add_edge("n0", "ghost")
    g.add_node("2bad", type="ReLU", params={})
    g.add_edge("n0", "2bad")
    g.add_node("forward", type="ReLU", params={})
    g.add_edge("2bad", "forward")
    errors = errors_of(g)
    assert ("n0", "edge from n0 goes to missing node 'ghost'") in errors
    assert any(n == "2bad" and "not a valid id" in m for n, m in errors)
    assert ("forward", "'forward' is reserved by torch.nn.Module; choose another id") in errors


def test_unused_outputs_and_dtype_mismatches():
    g = chain_graph([4], ("Linear", {"out_features": 3}), loss="MSELoss")
    g.add_node("dangling", type="ReLU", params={})
    g.add_edge("x", "dangling")
    assert ("dangling", "the output of dangling is not used; connect it towards loss or "
                        "delete it") in errors_of(g)
    g = chain_graph([4], ("Linear", {"out_features": 3}), dtype="int64")
    assert errors_of(g) == [("n0", "n0 needs real-valued input but receives int64 token ids "
                                   "from x; put an Embedding first")]
    g = chain_graph([4], ("Embedding", {"num_embeddings": 5, "embedding_dim": 2}))
    assert "needs int64 token ids" in errors_of(g)[0][1]


def test_several_independent_errors_at_once_and_no_cascade():
    g = chain_graph([784], ("Conv2d", {"out_channels": 4, "kernel_size": 3}),
                    ("Linear", {"out_features": 3}), ("Dropout", {"p": -1}))
    errors = errors_of(g)
    assert [n for n, _ in errors] == ["n2", "n0"]  # n1 is downstream of n0: not repeated


def test_fixing_the_cause_clears_the_error():
    g = chain_graph([4], ("Linear", {"out_features": 0}))
    assert not analyze(g).ok
    g.nodes["n0"]["params"]["out_features"] = 2
    assert analyze(g).ok and analyze(g).shapes["n0"] == (2,)


def test_a_thousand_node_graph_is_fast():
    layers = [("Linear", {"out_features": 8}), ("ReLU", {})] * 500
    g = chain_graph([8], *layers)
    start = time.perf_counter()
    shapes = layerlab.infer_shapes(g)
    assert time.perf_counter() - start < 1.0
    assert len(shapes) == 1001


def test_a_message_names_its_node_once():
    """The node id is put before a message only when the message does not start with it
    (monkey finding F9: "tanh: tanh needs exactly 1 input but has none")."""
    from layerlab.core.errors import format_error

    assert format_error("n1", "n1 needs exactly 1 input but has none") == \
        "n1 needs exactly 1 input but has none"
    assert format_error("fc1", "out_features must be at least 1, not 0") == \
        "fc1: out_features must be at least 1, not 0"
    assert format_error("n1", "n10 has no input") == "n1: n10 has no input"
    assert format_error(None, "the graph has no Input node") == "the graph has no Input node"


def test_batchnorm1d_names_the_layouts_it_takes():
    g = chain_graph([2, 3, 4], ("BatchNorm1d", {}))
    assert errors_of(g) == [("n0", "n0 expects a [C] or [C, L] input but receives [2, 3, 4] "
                                   "from x")]


def test_an_edge_into_a_merge_without_a_port_says_which_ports_there_are():
    g = nx.DiGraph()
    g.add_node("x", type="Input", params={"shape": [4]})
    for name in ("a", "b"):
        g.add_node(name, type="Linear", params={"out_features": 3})
        g.add_edge("x", name, port=0)
    g.add_node("sum", type="Add", params={})
    g.add_edge("a", "sum")  # no port: which operand is it?
    g.add_edge("b", "sum", port=1)
    assert errors_of(g) == [("sum", "the edge from a into sum needs a port (0 to 1)")]


def test_an_edge_into_a_source_node_is_refused_in_english():
    g = nx.DiGraph()
    g.add_node("x", type="Input", params={"shape": [4]})
    g.add_node("fc", type="Linear", params={"out_features": 4})
    g.add_node("w", type="Parameter", params={"shape": [4]})
    g.add_edge("x", "fc", port=0)
    g.add_edge("fc", "x", port=0)
    g.add_edge("fc", "w", port=0)
    errors = errors_of(g)
    assert ("x", "an Input takes no inputs but x receives 1 (from fc)") in errors
    assert ("w", "a Parameter takes no inputs but w receives 1 (from fc)") in errors
