"""torchvision's classic vision models imported onto the canvas: each family's graph checks,
computes what the original computes (eval mode, random inputs and random weights), and
takes the same training step as the original.

The product's ONNX export runs for ResNet and ViT in every run of the suite (about 10 s:
torch's exporter, not the import) and for every family with LAYERLAB_SLOW=1 (15 minutes)."""

from __future__ import annotations

import os

import pytest
import torch

from layerlab.core import import_fx
from layerlab.core.importer import finish
from layerlab.core.shapes import analyze
from torchvision_models import FAMILIES, randomized

IMPORTED = list(FAMILIES)


def _imported(family: str):
    build, shape = FAMILIES[family]
    torch.manual_seed(0)
    original = randomized(build())
    return original, shape, finish(import_fx.from_module(original, shape, family))


@pytest.mark.parametrize("family", IMPORTED)
def test_family_imports_matches_and_trains_like_the_original(family):
    original, shape, result = _imported(family)
    assert not analyze(result.project.graph).errors
    assert result.comparison.equal
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1))
    model = result.model.eval()
    with torch.no_grad():
        want, got = original(x), model(x)
    scale = want.abs().max()
    assert scale > 0.1  # random weights give outputs that tell models apart
    assert (want - got).abs().max() <= 1e-5 * scale
    _same_training_step(original, model, x)


def _same_training_step(original: torch.nn.Module, model: torch.nn.Module,
                        x: torch.Tensor) -> None:
    """One SGD step in train mode on both (dropout drawing the same masks from the same
    seed): the same loss, and the same outputs afterwards."""
    target = torch.arange(x.shape[0]) % 10
    losses = []
    for net in (original, model):
        net.train()
        torch.manual_seed(7)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
        loss = torch.nn.functional.cross_entropy(net(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    original.eval()
    model.eval()
    with torch.no_grad():
        want, got = original(x), model(x)
    assert (want - got).abs().max() <= 1e-4 * want.abs().max()


def test_resnet_opens_as_its_stages_with_ids_from_module_paths():
    original, _, result = _imported("resnet")
    project = result.project
    graph = project.graph
    assert {"layer1_0_conv1", "layer1_0_bn1", "layer4_1_conv2", "fc", "conv1"} <= set(graph)
    assert [data["name"] for data in project.groups.values()] == \
        ["layer1", "layer2", "layer3", "layer4"]
    assert all(data["collapsed"] for data in project.groups.values())
    assert graph.nodes["layer2_0_conv1"]["group"] == "layer2"
    assert "group" not in graph.nodes["fc"]
    assert graph.nodes["layer1_0_conv1"]["params"]["kernel_size"] == [3, 3]
    # laid out as it opens, collapsed: each group's block at its members' corner, one cell
    # among the other nodes, top to bottom
    spots = {node: tuple(data["pos"]) for node, data in graph.nodes(data=True)
             if "group" not in data}
    for gid in project.groups:
        members = [tuple(d["pos"]) for _, d in graph.nodes(data=True) if d.get("group") == gid]
        spots[gid] = (min(x for x, _ in members), min(y for _, y in members))
    assert len(set(spots.values())) == len(spots)
    order = ["x", "conv1", "maxpool", "layer1", "layer2", "layer3", "layer4", "fc", "loss"]
    assert [spots[n][1] for n in order] == sorted(spots[n][1] for n in order)
    state = result.model.state_dict()  # keys are node ids, tensors the original's
    assert torch.equal(state["layer1_0_conv1.weight"], original.layer1[0].conv1.weight)
    assert torch.equal(state["layer3_1_bn2.running_var"], original.layer3[1].bn2.running_var)


ALWAYS_EXPORTED = ("resnet", "vit")  # convolutions and residuals; tokens and attention
SLOW = pytest.mark.skipif(not os.environ.get("LAYERLAB_SLOW"), reason="set LAYERLAB_SLOW=1")


@pytest.mark.parametrize("family", [f if f in ALWAYS_EXPORTED else pytest.param(f, marks=SLOW)
                                    for f in IMPORTED])
def test_family_exports_to_onnx_that_onnxruntime_runs_alike(family, tmp_path):
    from layerlab.core.export import export_onnx

    _, _, result = _imported(family)
    detail = export_onnx(result.model, analyze(result.project.graph), tmp_path / "m.onnx")
    assert "onnxruntime matches torch" in detail
    assert float(detail.split("within ")[1].split()[0]) <= 1e-4
