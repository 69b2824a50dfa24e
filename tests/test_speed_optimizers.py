"""The fast optimizer implementations (fused, multi-tensor) the trainer picks give the results
of torch's default per-parameter implementation, with everything the trainer adds to a step:
weight decay, L1/L2 terms, frozen nodes and gradient clipping."""

import pytest
import torch

from layerlab.core.datasets import Dataset
from layerlab.core.project import Project
from layerlab.core.settings import FAST_KERNELS, make_optimizer, settings_from
from layerlab.core.trainer import Trainer

from helpers import chain_graph

CASES = [
    ("sgd", {"weight_decay": 0.01}),
    ("sgd", {"weight_decay": 0.01, "nesterov": False, "dampening": 0.1}),
    ("momentum", {"weight_decay": 0.01, "nesterov": True}),
    ("adagrad", {"weight_decay": 0.01, "lr_decay": 0.01}),
    ("rmsprop", {"weight_decay": 0.01, "momentum": 0.5, "centered": True}),
    ("adam", {"weight_decay": 0.01}),
    ("adam", {"weight_decay": 0.01, "amsgrad": True}),
    ("adamw", {"weight_decay": 0.05}),
]


def project(optimizer: str, args: dict) -> Project:
    g = chain_graph([4], ("Linear", {"out_features": 8}), ("Tanh", {}),
                    ("Linear", {"out_features": 8}), ("ReLU", {}),
                    ("Linear", {"out_features": 3}), loss="CrossEntropyLoss")
    first = next(n for n, d in g.nodes(data=True) if d["type"] == "Linear")
    g.nodes[first]["frozen"] = True
    p = Project(graph=g)
    p.training.update({"optimizer": {"name": optimizer, "lr": 0.05, **args}, "batch_size": 16,
                       "epochs": 4, "l1": 0.001, "l2": 0.002, "clip_grad_norm": 0.5})
    p.training["dataset"] = {"name": "spiral", "options": {}, "validation_split": 0.0}
    return p


def data() -> Dataset:
    gen = torch.Generator().manual_seed(0)
    return Dataset("tiny", 2 * torch.randn(64, 4, generator=gen),
                   torch.randint(0, 3, (64,), generator=gen), "classification",
                   ("a", "b", "c"))


def implementation(optimizer: torch.optim.Optimizer) -> str:
    group = optimizer.param_groups[0]
    return "fused" if group.get("fused") else "foreach" if group.get("foreach") else "loop"


@pytest.mark.parametrize(("name", "args"), CASES)
def test_the_fast_implementation_trains_as_the_default_one(name, args):
    p = project(name, args)
    fast = Trainer(p, settings_from(p.training), data=data())
    plain = Trainer(p, settings_from(p.training), data=data())
    plain.optimizer = make_optimizer(plain.settings, plain.trainable)  # torch's default
    assert implementation(fast.optimizer) == FAST_KERNELS["cpu"][name]
    assert implementation(plain.optimizer) == "loop"
    before = {k: v.clone() for k, v in fast.model.state_dict().items()}
    assert fast.run() == plain.run() == "finished"
    assert fast.step == plain.step == 16
    assert [r.train_loss for r in fast.history] == pytest.approx(
        [r.train_loss for r in plain.history], rel=1e-5)
    moved = 0
    for (key, a), b in zip(fast.model.state_dict().items(), plain.model.state_dict().values(),
                           strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=key)
        moved += not torch.equal(a, before[key])
    assert moved == 4  # the trained Linear nodes' weights and biases; n0 is frozen
    assert torch.equal(fast.model.n0.weight, before["n0.weight"])


def test_a_resumed_run_keeps_its_fast_implementation(tmp_path):
    """A checkpoint written with another implementation (an older version, another device)
    resumes with the one picked here, and bit for bit as the uninterrupted run."""
    p = project("adam", {"weight_decay": 0.01})
    whole = Trainer(p, settings_from(p.training), data=data())
    whole.run()
    first = Trainer(p, settings_from(p.training, epochs=2), data=data())
    first.run()
    state = first.checkpoint()
    for group in state["optimizer"]["param_groups"]:
        group["fused"] = None
    torch.save(state, tmp_path / "checkpoint.pt")
    resumed = Trainer(p, settings_from(p.training), data=data())
    resumed.load_checkpoint(tmp_path / "checkpoint.pt")
    assert implementation(resumed.optimizer) == "fused"
    resumed.run()
    for (key, a), b in zip(whole.model.state_dict().items(),
                           resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_a_hook_still_sees_every_update():
    """The step skips torch's profiler annotation, but not a hook someone registered."""
    p = project("momentum", {})
    trainer = Trainer(p, settings_from(p.training), data=data())
    seen = []
    trainer.optimizer.register_step_post_hook(lambda opt, args, kwargs: seen.append(1))
    trainer.run()
    assert len(seen) == trainer.step == 16


def test_a_schedule_learns_that_the_optimizer_stepped(recwarn):
    """Else torch warns that lr_scheduler.step() came before optimizer.step()."""
    p = project("momentum", {})
    p.training["scheduler"] = {"name": "step", "step_size": 1, "gamma": 0.5}
    trainer = Trainer(p, settings_from(p.training), data=data())
    trainer.run()
    assert trainer.current_lr == 0.05 * 0.5 ** 4
    assert not [w for w in recwarn if "lr_scheduler" in str(w.message)]


def test_a_device_without_fast_kernels_gets_torchs_own_implementation():
    s = settings_from(project("adagrad", {}).training)
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert "adagrad" not in FAST_KERNELS["mps"]
    for device in ("mps", "meta"):  # no fused Adagrad there; no table at all for meta
        assert implementation(make_optimizer(s, params, torch.device(device))) == "loop"
