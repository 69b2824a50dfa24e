"""Realistic training bugs, each caught by a test that checks the numbers against torch driven
by hand: held-out rows leaking into training, optimizer arguments lost on the way to torch, a
schedule forgotten on resume, gradient accumulation, clipping and bfloat16 doing nothing."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from layerlab.core.datasets import Dataset, split_indices
from layerlab.core.project import Project, load_project
from layerlab.core.settings import kernel_args, make_optimizer, settings_from
from layerlab.core.trainer import StepRecord, Trainer, TrainingError

from helpers import chain_graph

N_FEATURES, N_CLASSES = 4, 3


def indexed_data(n: int = 48) -> Dataset:
    """Column 0 of each row is the row's own index, so a test can tell which rows went where;
    the label is a function of that index, so rows and labels cannot come apart unnoticed."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, N_FEATURES, generator=gen)
    x[:, 0] = torch.arange(n, dtype=torch.float32)
    return Dataset("tiny", x, torch.arange(n) % N_CLASSES, "classification",
                   tuple("abc"))


def project_for(optimizer: dict[str, Any] | None = None, loss: str = "CrossEntropyLoss",
                **training: Any) -> Project:
    g = chain_graph([N_FEATURES], ("Linear", {"out_features": 6}), ("Tanh", {}),
                    ("Linear", {"out_features": N_CLASSES}), loss=loss)
    project = Project(graph=g)
    project.training.update({
        "dataset": {"name": "spiral", "options": {}, "validation_split": 0.0},
        "optimizer": optimizer or {"name": "sgd", "lr": 0.1},
        "batch_size": 48, "epochs": 1, "device": "cpu", **training})
    return project


def trainer_for(project: Project, data: Dataset | None = None) -> Trainer:
    return Trainer(project, settings_from(project.training), data=data or indexed_data())


def params_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, atol: float = 0.0) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=atol, msg=name)


# -- validation rows --------------------------------------------------------------------
@pytest.mark.parametrize(("n", "split"), [(1, 0.0), (2, 0.5), (7, 0.1), (10, 0.9), (97, 0.33),
                                          (100, 0.05)])
def test_split_indices_are_disjoint_cover_every_row_and_hold_out_the_asked_share(n, split):
    train, val = split_indices(n, split, seed=3)
    assert sorted(train.tolist() + val.tolist()) == list(range(n))
    expected = max(round(n * split), 1 if split > 0 else 0)
    assert len(val) == expected
    assert train.tolist() == sorted(train.tolist()) and val.tolist() == sorted(val.tolist())


def test_the_trainer_validates_on_exactly_the_held_out_rows_and_never_trains_on_them():
    data = indexed_data(40)
    project = project_for(batch_size=8, epochs=1)
    project.training["dataset"]["validation_split"] = 0.25
    trainer = trainer_for(project, data)
    train_idx, val_idx = split_indices(40, 0.25, trainer.settings.seed)
    rows = trainer.x_val[:, 0].long()
    assert rows.tolist() == val_idx.tolist()
    assert torch.equal(trainer.x_val, data.x[val_idx])
    assert torch.equal(trainer.y_val, data.y[val_idx])
    assert torch.equal(trainer.x_train, data.x[train_idx])
    assert torch.equal(trainer.y_train, data.y[train_idx])

    seen: list[int] = []
    real_step = trainer._train_step

    def spy(xb: torch.Tensor, yb: torch.Tensor, last: bool) -> tuple[float, int]:
        assert torch.equal(yb, xb[:, 0].long() % N_CLASSES)  # labels travel with their rows
        seen.extend(xb[:, 0].long().tolist())
        return real_step(xb, yb, last)

    trainer._train_step = spy  # type: ignore[method-assign]
    trainer.run()
    assert sorted(seen) == train_idx.tolist()  # every training row once per epoch, no other

    # the epoch's validation loss is the loss on those rows, in evaluation mode
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(trainer.model(data.x[val_idx]),
                                                     data.y[val_idx])
    assert trainer.history[-1].val_loss == pytest.approx(float(expected), rel=1e-6)


def test_a_split_that_leaves_nothing_to_train_on_is_refused_in_one_sentence():
    project = project_for()
    project.training["dataset"]["validation_split"] = 0.9
    with pytest.raises(TrainingError) as info:
        trainer_for(project, indexed_data(2))  # round(1.8): both samples held out
    assert str(info.value) == ("dataset tiny has 2 samples; a validation split of 0.9 leaves "
                               "0 to train on; lower the validation split or add samples")
    trainer = trainer_for(project, indexed_data(10))  # one left: it trains
    assert len(trainer.x_train) == 1 and trainer.run() == "finished"


# -- optimizer arguments ------------------------------------------------------------------
CUSTOM_ARGS = {
    "sgd": (torch.optim.SGD, {"weight_decay": 0.03, "dampening": 0.2}),
    "momentum": (torch.optim.SGD, {"momentum": 0.7, "weight_decay": 0.02, "nesterov": True,
                                   "dampening": 0.0}),
    "adagrad": (torch.optim.Adagrad, {"eps": 1e-3, "weight_decay": 0.01, "lr_decay": 0.1,
                                      "initial_accumulator_value": 0.5}),
    "rmsprop": (torch.optim.RMSprop, {"alpha": 0.8, "eps": 1e-3, "weight_decay": 0.01,
                                      "momentum": 0.5, "centered": True}),
    "adam": (torch.optim.Adam, {"betas": [0.7, 0.9], "eps": 1e-3, "weight_decay": 0.05,
                                "amsgrad": True}),
    "adamw": (torch.optim.AdamW, {"betas": [0.8, 0.95], "eps": 1e-4, "weight_decay": 0.2,
                                  "amsgrad": True}),
}


def expected_group(args: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}


@pytest.mark.parametrize("name", list(CUSTOM_ARGS))
def test_every_optimizer_argument_reaches_the_torch_optimizer(tmp_path: Path, name):
    cls, args = CUSTOM_ARGS[name]
    project_for({"name": name, "lr": 0.05, **args}, batch_size=16).save(tmp_path / "p.json")
    project = load_project(tmp_path / "p.json")  # through the file, as a user's project
    settings = settings_from(project.training)
    made = make_optimizer(settings, [torch.nn.Parameter(torch.zeros(2))])
    trainer = Trainer(project, data=indexed_data())  # the project's own settings
    for optimizer in (made, trainer.optimizer):
        assert type(optimizer) is cls
        group = optimizer.param_groups[0]
        assert {k: group[k] for k in args} == expected_group(args)
        assert group["lr"] == 0.05

    reference = copy.deepcopy(trainer.model)
    by_hand = cls(reference.parameters(), lr=0.05, **expected_group(args))
    trainer.run()  # three batches of 16, one epoch, in the trainer's shuffled order
    order = torch.randperm(48, generator=torch.Generator().manual_seed(trainer.settings.seed
                                                                       + 1))
    data = indexed_data()
    for start in range(0, 48, 16):
        idx = order[start:start + 16]
        by_hand.zero_grad()
        torch.nn.functional.cross_entropy(reference(data.x[idx]), data.y[idx]).backward()
        by_hand.step()
    assert_same_weights(trainer.model, reference, atol=1e-6)


def test_optimizer_defaults_are_torchs_own_unless_the_catalogue_says_otherwise():
    for name, (cls, _) in CUSTOM_ARGS.items():
        trainer = trainer_for(project_for({"name": name, "lr": 0.05}))
        group = trainer.optimizer.param_groups[0]
        defaults = cls([torch.nn.Parameter(torch.zeros(1))], lr=0.05,  # fused on CPU, …
                       **kernel_args(name, trainer.device)).defaults
        expected = {**defaults, "momentum": 0.9} if name == "momentum" else \
            {**defaults, "weight_decay": 0.01} if name == "adamw" else defaults
        assert {k: group[k] for k in expected} == expected, name


# -- the schedule on resume ---------------------------------------------------------------
@pytest.mark.parametrize("schedule", [{"name": "step", "step_size": 2, "gamma": 0.5},
                                      {"name": "cosine", "eta_min": 0.001}])
def test_a_resumed_run_follows_the_same_learning_rate_schedule(tmp_path: Path, schedule):
    def fresh() -> tuple[Trainer, list[float]]:
        project = project_for({"name": "momentum", "lr": 0.1}, batch_size=12, epochs=5,
                              scheduler=schedule)
        trainer = trainer_for(project)
        lrs: list[float] = []
        trainer.add_listener(lambda r: lrs.append(r.lr) if isinstance(r, StepRecord) else None)
        return trainer, lrs

    straight, straight_lrs = fresh()
    straight.run()
    assert len(set(straight_lrs)) >= 3  # the schedule really moves the rate

    first, first_lrs = fresh()
    first.add_listener(lambda r: first.control.stop() if isinstance(r, StepRecord) and
                       r.step == 6 else None)  # in the middle of epoch 2
    assert first.run() == "stopped"
    first.save_checkpoint(tmp_path / "checkpoint.pt")
    second, second_lrs = fresh()
    second.load_checkpoint(tmp_path / "checkpoint.pt")
    assert second.run() == "finished"
    assert first_lrs + second_lrs == straight_lrs
    assert second.current_lr == straight.current_lr
    assert_same_weights(second.model, straight.model)


# -- gradient accumulation ---------------------------------------------------------------
@pytest.mark.parametrize(("k", "b"), [(2, 8), (3, 4), (4, 1)])
def test_accumulating_k_batches_of_b_is_one_step_on_a_batch_of_k_times_b(k, b):
    data = indexed_data(k * b)
    project = project_for({"name": "sgd", "lr": 0.5}, batch_size=b, accumulate=k,
                          l2=0.01)
    trainer = trainer_for(project, data)
    start = copy.deepcopy(trainer.model)
    for _ in range(k - 1):
        trainer.train_one_batch()
        assert_same_weights(trainer.model, start)  # no step before the k-th batch
    trainer.train_one_batch()
    assert trainer.epoch == 1

    by_hand = torch.optim.SGD(start.parameters(), lr=0.5)
    loss = torch.nn.functional.cross_entropy(start(data.x), data.y)
    penalty = sum(p.pow(2).sum() for p in start.parameters() if p.dim() >= 2)
    (loss + 0.01 * penalty).backward()
    by_hand.step()
    assert_same_weights(trainer.model, start, atol=1e-6)


def test_a_short_last_group_steps_as_one_batch_of_its_own_samples():
    """30 samples in batches of 8, accumulated in twos: the groups hold 16 and 14 samples,
    and each makes the step that one batch of those samples would."""
    data = indexed_data(30)
    project = project_for({"name": "sgd", "lr": 0.5}, batch_size=8, accumulate=2)
    trainer = trainer_for(project, data)
    reference = copy.deepcopy(trainer.model)
    trainer.run()
    order = torch.randperm(30, generator=torch.Generator().manual_seed(trainer.settings.seed
                                                                       + 1))
    by_hand = torch.optim.SGD(reference.parameters(), lr=0.5)
    for group in (order[:16], order[16:]):
        by_hand.zero_grad()
        torch.nn.functional.cross_entropy(reference(data.x[group]), data.y[group]).backward()
        by_hand.step()
    assert_same_weights(trainer.model, reference, atol=1e-6)


# -- clipping -----------------------------------------------------------------------------
def test_clipping_bounds_the_gradient_norm_and_steps_as_torch_clip_grad_norm():
    max_norm = 0.05
    project = project_for({"name": "sgd", "lr": 1.0}, clip_grad_norm=max_norm)
    trainer = trainer_for(project)
    data = indexed_data()
    reference = copy.deepcopy(trainer.model)
    before = params_of(reference)
    trainer.run()  # one step on the whole set

    torch.nn.functional.cross_entropy(reference(data.x), data.y).backward()
    grads = [p.grad for p in reference.parameters()]
    raw = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g)
                                                      for g in grads])))
    assert raw > 10 * max_norm  # the clip matters here
    torch.nn.utils.clip_grad_norm_(reference.parameters(), max_norm)
    torch.optim.SGD(reference.parameters(), lr=1.0).step()
    assert_same_weights(trainer.model, reference, atol=1e-7)
    step = torch.cat([(p.detach() - before[k]).reshape(-1)
                      for k, p in trainer.model.named_parameters()])
    assert float(step.norm()) == pytest.approx(max_norm, rel=1e-4)  # lr 1: Δw = −clipped g


# -- bfloat16 ----------------------------------------------------------------------------
def is_bf16_rounded(t: torch.Tensor) -> bool:
    return bool(torch.equal(t.float(), t.to(torch.bfloat16).float()))


def test_bfloat16_runs_the_forward_in_bfloat16_and_float32_does_not():
    data = indexed_data()
    data.x[:, 0] = torch.rand(len(data.x))  # row numbers would be exact in bfloat16
    outputs = {}
    for precision in ("float32", "bfloat16"):
        trainer = trainer_for(project_for(precision=precision), data)
        reference = copy.deepcopy(trainer.model)
        trace = trainer.trace_next_batch(keep=48)
        outputs[precision] = trace.output("n0")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            out = reference(data.x[trainer._order.cpu()])
        torch.nn.functional.cross_entropy(out.float(), data.y[trainer._order.cpu()]).backward()
        torch.optim.SGD(reference.parameters(), lr=0.1).step()
        assert_same_weights(trainer.model, reference, atol=1e-6)
    assert is_bf16_rounded(outputs["bfloat16"])
    assert not is_bf16_rounded(outputs["float32"])
    assert not torch.equal(outputs["bfloat16"].float(), outputs["float32"])
