"""Pipeline stages (core/stages.py): balanced by parameters or by FLOPs, pinned cuts
honoured, a cut that cannot be made refused by name; what the canvas and the trainer use."""

import copy

import networkx as nx
import pytest
import torch

import layerlab
from layerlab.core.records import TrainingError
from layerlab.core.stages import (
    describe,
    node_flops,
    pipeline_plan,
    plan_stages,
    stage_modules,
    stage_of,
)


def dense_then_conv() -> nx.DiGraph:
    """Parameters and FLOPs per sample (a multiply-add counts 2):
    fc1 64→256: 16,640 and 2·64·256 = 32,768; conv 1→8, 3×3 on 16×16: 80 and
    2·(8·256)·9 = 36,864; conv2 8→8: 584 and 2·(8·256)·72 = 294,912;
    fc2 2048→4: 8,196 and 2·2048·4 = 16,384; the activations, reshape and flatten: 0."""
    g = nx.DiGraph()
    conv = {"out_channels": 8, "kernel_size": 3, "padding": 1}
    nodes = [("x", "Input", {"shape": [64]}), ("fc1", "Linear", {"out_features": 256}),
             ("relu", "ReLU", {}), ("square", "Reshape", {"shape": [1, 16, 16]}),
             ("conv", "Conv2d", conv), ("relu2", "ReLU", {}), ("conv2", "Conv2d", conv),
             ("flat", "Flatten", {}), ("fc2", "Linear", {"out_features": 4}),
             ("loss", "CrossEntropyLoss", {})]
    for node, kind, params in nodes:
        g.add_node(node, type=kind, params=params, pos=[0, 0])
    nx.add_path(g, [n for n, _, _ in nodes])
    return g


ORDER = ["fc1", "relu", "square", "conv", "relu2", "conv2", "flat", "fc2"]


def test_flops_per_node_are_the_matmuls_and_convolutions():
    with torch.device("meta"):
        model = layerlab.build_model(dense_then_conv())
    assert node_flops(model, (64,), "float32") == {
        "fc1": 2 * 64 * 256, "relu": 0, "square": 0, "conv": 2 * 8 * 256 * 9, "relu2": 0,
        "conv2": 2 * 8 * 256 * 72, "flat": 0, "fc2": 2 * 2048 * 4}


def test_stages_balance_parameters_or_flops_as_computed_by_hand():
    """Among equally good plans the earliest cut wins."""
    graph = dense_then_conv()
    # parameters: fc1's 16,640 is the largest stage wherever the cut falls after it; the
    # rest (8,860) is smaller
    assert pipeline_plan(graph, 2) == [ORDER[:1], ORDER[1:]]
    # FLOPs: conv2's 294,912 dominates; its stage is smallest cut just before it (or before
    # relu2, which costs nothing): 69,632 | 311,296 (after it: 364,544 | 16,384)
    assert pipeline_plan(graph, 2, "flops") == [ORDER[:4], ORDER[4:]]
    # three stages by FLOPs: conv2 in a stage of its own (69,632 | 294,912 | 16,384)
    assert pipeline_plan(graph, 3, "flops") == [ORDER[:4], ORDER[4:6], ORDER[6:]]
    # three by parameters: fc1's 16,640 is the largest stage whatever the others hold; the
    # earliest cuts give fc1 | relu | the rest (8,860)
    assert pipeline_plan(graph, 3) == [ORDER[:1], ORDER[1:2], ORDER[2:]]


def test_a_pinned_start_is_honoured_and_the_rest_balanced():
    graph = dense_then_conv()
    graph.nodes["fc2"]["stage_start"] = True
    plan = pipeline_plan(graph, 2)
    assert plan == [ORDER[:7], ORDER[7:]]
    assert stage_of(plan)["flat"] == 0 and stage_of(plan)["fc2"] == 1
    # three stages: the pin stays, the other cut goes where FLOPs balance best
    assert pipeline_plan(graph, 3, "flops") == [ORDER[:4], ORDER[4:7], ORDER[7:]]
    graph.nodes["conv"]["stage_start"] = True
    assert pipeline_plan(graph, 3) == [ORDER[:3], ORDER[3:7], ORDER[7:]]
    with pytest.raises(TrainingError, match=r"^the project starts 3 pipeline stages \(at the "
                       r"first layer and at conv, fc2\) but 2 are planned; plan 3 stages or "
                       r"unpin a node$"):
        pipeline_plan(graph, 2)
    # the stages run as the whole model does
    torch.manual_seed(0)
    model = layerlab.build_model(graph)
    x = y = torch.randn(5, 64)
    for stage in stage_modules(model, pipeline_plan(graph, 3)):
        y = stage(y)
    torch.testing.assert_close(y, model(x))
    assert describe(pipeline_plan(graph, 3)) == "1: fc1 … square · 2: conv … flat · 3: fc2"


def test_a_cut_that_cannot_be_made_is_named(tmp_path):
    """Inside a skip connection two tensors cross: a stage there would hand on two."""
    from test_parallel import residual_spiral

    project = layerlab.load_project(residual_spiral(tmp_path))
    graph = copy.deepcopy(project.graph)
    graph.nodes["tanh2"]["stage_start"] = True
    with pytest.raises(TrainingError, match=r"^node tanh2 cannot start a pipeline stage: 2 "
                       r"values cross into it from before \(fc2, tanh1\), and a stage can "
                       r"hand on only one tensor$"):
        pipeline_plan(graph, 2)
    graph.nodes["tanh2"].pop("stage_start")
    graph.nodes["loss"]["stage_start"] = True
    with pytest.raises(TrainingError, match=r"^node loss cannot start a pipeline stage: it "
                       r"is not a layer of the model"):
        pipeline_plan(graph, 2)
    model = layerlab.build_model(project.graph)
    assert plan_stages(model, 2, starts=["fc1"]) == plan_stages(model, 2)  # already first
