"""What the window checks before a model writes (core/text_model.py), and a GPTBlock with
LoRA or frozen opened into parts that train exactly the weights the block trained."""

import pytest
import torch

import layerlab
from layerlab.core.compiler import param_counts
from layerlab.core.datasets import load_dataset
from layerlab.core.generate import GenerateError
from layerlab.core.gpt_parts import open_block, rename_weights
from layerlab.core.text_model import (
    carry_weights,
    generation_problem,
    prompt_tokens,
    same_model,
)

from conftest import EXAMPLES


def test_only_a_next_token_text_model_may_write():
    assert generation_problem(load_dataset("addition", {"n_samples": 8})) is None
    assert generation_problem(load_dataset("spiral", {"n_samples": 8})) == (
        "Dataset spiral is not text, so the model has no characters to write: choose a "
        "text dataset (addition, reverse or text) with the next-token task and train the "
        "model.")
    classify = generation_problem(load_dataset("addition", {"n_samples": 8,
                                                            "task": "classify"}))
    assert classify.startswith("This model classifies whole sequences of addition")
    assert prompt_tokens("12+", ("1", "2", "+")) == [0, 1, 2]
    with pytest.raises(GenerateError, match=r"^The prompt's characters 'x', 'y' are not in "
                                            r"the model's vocabulary '12\+'"):
        prompt_tokens("1x2yx", ("1", "2", "+"))


def test_where_nodes_sit_does_not_change_the_model():
    g = layerlab.load_project(EXAMPLES / "tiny-gpt.layerlab.json").graph
    moved = g.copy()
    moved.nodes["norm"]["pos"] = [500, 500]
    assert same_model(g, moved)
    moved.nodes["norm"]["params"] = {"eps": 0.1}
    assert not same_model(g, moved)


@pytest.mark.parametrize("block", [{"lora_rank": 2, "lora_alpha": 4},
                                   {"lora_rank": 2, "lora_mlp": True},
                                   {"frozen": True}])
def test_a_lora_or_frozen_block_opens_into_parts_that_train_what_it_trained(block):
    g = layerlab.load_project(EXAMPLES / "tiny-gpt.layerlab.json").graph
    frozen = block.pop("frozen", None)
    g.nodes["block1"]["params"].update(block)
    if frozen:
        g.nodes["block1"]["frozen"] = True
    opened, mapping = open_block(g, "block1")
    torch.manual_seed(0)
    closed, parts = layerlab.build_model(g), layerlab.build_model(opened)
    with torch.no_grad():  # adapters away from zero, so that they count
        for name, p in closed.named_parameters():
            if "lora_B" in name:
                p.normal_()
    carry_weights(closed, parts, mapping)
    x = torch.randint(0, 12, (2, 8))
    torch.testing.assert_close(parts(x), closed(x))

    def trained(graph, model):
        """What an optimizer updates: what requires grad, in no frozen node."""
        frozen = {n for n in graph if graph.nodes[n].get("frozen")}
        return {k for k, p in model.named_parameters()
                if p.requires_grad and k.split(".")[0] not in frozen}

    assert trained(opened, parts) == set(rename_weights(dict.fromkeys(trained(g, closed)),
                                                        mapping))
    assert sum(param_counts(opened, trainable=True).values()) == \
        sum(param_counts(g, trainable=True).values())
