"""The standalone Python export, run in this process: the generated Model computes what the
compiled model computes on every example, and the generated train() names torch's optimizer
with exactly the project's arguments. (tests/test_export.py runs the file where LayerLab
cannot be imported; tests/test_bug_classes.py steps its train() against the trainer.)"""

import operator
import types

import pytest
import torch
import torch.fx

import layerlab
from layerlab.core.compiler import build_model, checked
from layerlab.core.export import sample_input
from layerlab.core.project import Project
from layerlab.core.pycode import _arg, forward_source, python_source, train_source

from conftest import EXAMPLES
from helpers import chain_graph

NAMES = sorted(p.name.split(".")[0] for p in EXAMPLES.glob("*.layerlab.json"))


def generated(project: Project):
    analysis = checked(project.graph)
    torch.manual_seed(0)
    model = build_model(project.graph)
    source = python_source(project, model, analysis)
    module = types.ModuleType("exported")
    exec(compile(source, "exported.py", "exec"), module.__dict__)
    return module, model, analysis, source


@pytest.mark.parametrize("name", NAMES)
def test_the_generated_model_computes_what_the_compiled_model_computes(name):
    project = layerlab.load_project(EXAMPLES / f"{name}.layerlab.json")
    module, model, analysis, source = generated(project)
    copy = module.Model()
    copy.load_state_dict(model.state_dict())  # the same parameter names, one by one
    copy.eval()
    model.eval()
    x = sample_input(analysis, batch=5)
    with torch.no_grad():
        torch.testing.assert_close(copy(x), model(x), rtol=0, atol=1e-6)
    assert analysis.shapes[analysis.input_node] == module.INPUT_SHAPE
    assert getattr(torch, analysis.dtypes[analysis.input_node]) == module.INPUT_DTYPE
    sample = ("x = torch.randint(0, 2, (4, *INPUT_SHAPE))"
              if analysis.dtypes[analysis.input_node] == "int64"
              else "x = torch.rand(4, *INPUT_SHAPE)")
    assert sample in source
    assert f'"""{project.name} — exported from LayerLab' in source


def test_nodes_without_a_module_get_no_constructor_line():
    g = chain_graph([3], ("Linear", {"out_features": 2}), loss="MSELoss")
    _, _, _, source = generated(Project(graph=g))
    init = source.split("super().__init__()\n")[1].split("\n\n")[0]
    assert init.splitlines() == ["        self.n0 = nn.Linear(3, 2)"]
    assert "self.x " not in source and "self.loss" not in source


def test_a_graph_of_only_stateless_layers_has_an_empty_constructor():
    g = chain_graph([2, 3], ("Reshape", {"shape": [3, 2]}), ("Mean", {}), loss="MSELoss")
    module, model, _, source = generated(Project(graph=g))
    assert "        super().__init__()\n        pass\n" in source
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(module.Model()(x), model(x), rtol=0, atol=0)


def test_fx_arguments_are_written_as_python_literals():
    assert _arg((5,), {}) == "(5,)"
    assert _arg((1, 2), {}) == "(1, 2)"
    assert _arg([3], {}) == "[3]"
    assert _arg([], {}) == "[]"
    assert _arg("a", {}) == "'a'" and _arg(None, {}) == "None"


def test_each_fx_operation_has_one_python_form():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    a = graph.call_function(operator.add, (x, x))
    m = graph.call_function(operator.mul, (a, 2))
    g = graph.call_function(operator.getitem, (m, 0))
    c = graph.call_function(torch.cat, ([g, g],), {"dim": 0})
    r = graph.call_method("reshape", (c, -1, 2))
    graph.output(r)
    assert forward_source(torch.fx.GraphModule(torch.nn.Module(), graph)).splitlines() == [
        "add = x + x", "mul = add * 2", "getitem = mul[0]",
        "cat = torch.cat([getitem, getitem], dim=0)", "reshape = cat.reshape(-1, 2)",
        "return reshape"]
    graph.erase_node(graph.output_node())
    graph.output(graph.call_function(operator.floordiv, (x, x)))  # no Op may call it
    with pytest.raises(AssertionError, match="no Python form for fx node"):
        forward_source(torch.fx.GraphModule(torch.nn.Module(), graph))


def training_project(optimizer, loss="CrossEntropyLoss", **training):
    g = chain_graph([4], ("Linear", {"out_features": 3}), loss=loss)
    project = Project(graph=g)
    project.training.update({"optimizer": optimizer, "epochs": 3, "batch_size": 16,
                             "l1": 0.001, "l2": 0.002, "seed": 7, **training})
    return project


def header(project):
    analysis = checked(project.graph)
    return train_source(project, analysis)


@pytest.mark.parametrize("optimizer, line", [
    ({"name": "adam", "lr": 0.02, "betas": [0.8, 0.95], "eps": 1e-6},
     "torch.optim.Adam(ps, lr=lr, betas=(0.8, 0.95), eps=1e-06, weight_decay=0.0)"),
    ({"name": "adamw", "lr": 0.02},
     "torch.optim.AdamW(ps, lr=lr, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.01)"),
    ({"name": "momentum", "lr": 0.5},
     "torch.optim.SGD(ps, lr=lr, momentum=0.9, weight_decay=0.0)"),
    ({"name": "sgd", "lr": 0.5, "nesterov": False},
     "torch.optim.SGD(ps, lr=lr, weight_decay=0.0, nesterov=False)"),
    ({"name": "rmsprop", "lr": 0.5},
     "torch.optim.RMSprop(ps, lr=lr, alpha=0.99, eps=1e-08, weight_decay=0.0)"),
    ({"name": "adagrad", "lr": 0.5},
     "torch.optim.Adagrad(ps, lr=lr, eps=1e-10, weight_decay=0.0)"),
])
def test_train_builds_torchs_optimizer_with_the_projects_arguments(optimizer, line):
    source = header(training_project(optimizer))
    flat = " ".join(source.split()).replace(
        "[p for p in model.parameters() if p.requires_grad]", "ps").replace("( ", "(")
    assert line in flat
    assert f"lr: float = {optimizer['lr']!r}" in source


def test_train_defaults_are_the_projects_settings_and_its_loss_node():
    source = header(training_project({"name": "sgd", "lr": 0.25}, loss="L1Loss"))
    for default in ("epochs: int = 3,", "batch_size: int = 16,", "lr: float = 0.25,",
                    "l1: float = 0.001,", "l2: float = 0.002,", "seed: int = 7"):
        assert default in source
    assert "loss_fn = nn.L1Loss()" in source and "SGD and nn.L1Loss()" in source


def test_train_without_a_loss_node_uses_mean_squared_error():
    g = chain_graph([4], ("Linear", {"out_features": 3}))
    project = Project(graph=g)
    assert "loss_fn = nn.MSELoss()" in train_source(project, checked(g))
