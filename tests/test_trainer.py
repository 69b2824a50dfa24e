"""The trainer: right (against torch), reproducible, controllable, and honest on failure."""

import copy
import threading

import pytest
import torch

import layerlab
from layerlab.core.datasets import Dataset
from layerlab.core.project import Project
from layerlab.core.settings import kernel_args, settings_from
from layerlab.core.trainer import EpochRecord, StateRecord, StepRecord, Trainer, TrainingError

from conftest import EXAMPLES
from helpers import chain_graph


def digits_mlp(seed=0, epochs=20, **training):
    project = layerlab.load_project(EXAMPLES / "digits-mlp.layerlab.json")
    project.training.update(training)
    return Trainer(project, settings_from(project.training, seed=seed, epochs=epochs))


def test_digits_mlp_reaches_the_accuracy_plain_pytorch_gets():
    accuracies = []
    for seed in range(5):
        trainer = digits_mlp(seed)
        assert trainer.run() == "finished"
        accuracies.append(trainer.history[-1].val_accuracy)
    assert sum(accuracies) / 5 >= 0.965, accuracies
    assert min(accuracies) >= 0.95, accuracies


def test_spiral_example_learns_the_spiral():
    project = layerlab.load_project(EXAMPLES / "spiral.layerlab.json")
    trainer = Trainer(project)
    trainer.run()
    assert trainer.history[-1].val_accuracy >= 0.95


def tiny_project(optimizer="sgd", lr=0.1, **training):
    g = chain_graph([4], ("Linear", {"out_features": 8}), ("Tanh", {}),
                    ("Linear", {"out_features": 3}), loss="CrossEntropyLoss")
    project = Project(graph=g)
    project.training.update({"optimizer": {"name": optimizer, "lr": lr}, "batch_size": 64,
                             "epochs": 3, **training})
    project.training["dataset"] = {"name": "tiny", "options": {}, "validation_split": 0.0}
    return project


def tiny_data(n=64):
    gen = torch.Generator().manual_seed(0)
    return Dataset("tiny", torch.randn(n, 4, generator=gen),
                   torch.randint(0, 3, (n,), generator=gen), "classification", ("a", "b", "c"))


def make_trainer(project, data=None, **overrides):
    settings = settings_from({**project.training, "dataset": {"name": "spiral",
                                                              "validation_split": 0.0}},
                             **overrides)
    return Trainer(project, settings, data=data or tiny_data())


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adagrad", "rmsprop", "adam",
                                       "adamw"])
def test_each_optimizer_steps_exactly_like_torch_driven_by_hand(optimizer):
    project = tiny_project(optimizer, lr=0.05)
    trainer = make_trainer(project)
    reference = copy.deepcopy(trainer.model)
    expected_cls = {"sgd": torch.optim.SGD, "momentum": torch.optim.SGD,
                    "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop,
                    "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optimizer]
    assert type(trainer.optimizer) is expected_cls
    if optimizer == "momentum":
        assert trainer.optimizer.param_groups[0]["momentum"] == 0.9
    extra = {"momentum": 0.9} if optimizer == "momentum" else {}
    # torch's defaults, in the implementation the trainer picks for the device (fused, …)
    opt = expected_cls(reference.parameters(), lr=0.05, **extra,
                       **kernel_args(optimizer, trainer.device))
    data = tiny_data()
    trainer.run()  # one batch per epoch: the whole set, in the trainer's shuffled order
    shuffle = torch.Generator().manual_seed(trainer.settings.seed + 1)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(3):
        order = torch.randperm(len(data.x), generator=shuffle)
        opt.zero_grad()
        loss_fn(reference(data.x[order]), data.y[order]).backward()
        opt.step()
    for (name, a), b in zip(trainer.model.named_parameters(), reference.parameters(),
                            strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(("kind", "lam"), [("l1", 0.01), ("l2", 0.003)])
def test_l1_and_l2_change_the_gradient_by_exactly_their_formula(kind, lam):
    project = tiny_project(**{kind: lam})
    trainer = make_trainer(project)
    data = tiny_data()
    loss = trainer.objective.loss(trainer.model(data.x), data.y)
    plain = torch.autograd.grad(loss, trainer.trainable, retain_graph=True)
    with_penalty = torch.autograd.grad(loss + trainer.penalty(), trainer.trainable)
    for p, g0, g1 in zip(trainer.trainable, plain, with_penalty, strict=True):
        expected = (lam * torch.sign(p) if kind == "l1" else 2 * lam * p) if p.dim() >= 2 \
            else torch.zeros_like(p)
        torch.testing.assert_close(g1 - g0, expected.detach(), rtol=1e-5, atol=1e-7)


def test_frozen_nodes_stay_bit_identical():
    project = tiny_project("adam")
    project.graph.nodes["n0"]["frozen"] = True
    trainer = make_trainer(project)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    after = trainer.model.state_dict()
    assert torch.equal(before["n0.weight"], after["n0.weight"])
    assert torch.equal(before["n0.bias"], after["n0.bias"])
    assert not torch.equal(before["n2.weight"], after["n2.weight"])
    assert all(p is not trainer.model.n0.weight for p in trainer.optimizer.param_groups[0][
        "params"])


def test_same_seed_same_metrics_bit_for_bit():
    runs = []
    for _ in range(2):
        trainer = digits_mlp(seed=3, epochs=2)
        steps = []
        trainer.add_listener(lambda r, s=steps: s.append(r.loss) if isinstance(r, StepRecord)
                             else None)
        trainer.run()
        runs.append((steps, [(r.train_loss, r.val_loss, r.val_accuracy)
                             for r in trainer.history], trainer.model.state_dict()))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    for key, value in runs[0][2].items():
        assert torch.equal(value, runs[1][2][key])


def test_pause_step_resume_and_stop_from_another_thread():
    trainer = digits_mlp(epochs=50)
    records = []
    paused = threading.Event()
    trainer.add_listener(records.append)
    trainer.add_listener(lambda r: paused.set() if isinstance(r, StateRecord) and
                         r.state == "paused" else None)
    trainer.control.pause()
    thread = threading.Thread(target=trainer.run)
    thread.start()
    assert paused.wait(10)
    assert trainer.step == 0
    trainer.control.step()
    trainer.control.step()
    deadline = threading.Event()
    while trainer.step < 2 and not deadline.wait(0.01):
        pass
    deadline.wait(0.2)
    assert trainer.step == 2  # exactly two batches while paused
    trainer.control.resume()
    while trainer.step < 60:
        deadline.wait(0.01)
    trainer.control.stop()
    thread.join(10)
    assert not thread.is_alive()
    states = [r.state for r in records if isinstance(r, StateRecord)]
    assert states == ["running", "paused", "running", "stopped"]
    steps = [r.step for r in records if isinstance(r, StepRecord)]
    assert steps == list(range(1, trainer.step + 1))  # every finished step reported once
    assert trainer.epoch < 50


def test_a_stopped_run_resumes_exactly_from_its_checkpoint(tmp_path):
    straight = digits_mlp(epochs=3)
    straight.run()

    first = digits_mlp(epochs=3)
    first.add_listener(lambda r: first.control.stop() if isinstance(r, StepRecord) and
                       r.step == 70 else None)
    assert first.run() == "stopped"
    assert first.epoch == 1 and first.batch == 25
    first.save_checkpoint(tmp_path / "checkpoint.pt")
    torch.load(tmp_path / "checkpoint.pt", weights_only=True)

    second = digits_mlp(epochs=3)
    torch.manual_seed(12345)  # whatever happened in between must not matter
    second.load_checkpoint(tmp_path / "checkpoint.pt")
    assert second.run() == "finished"
    assert [(r.train_loss, r.val_loss) for r in second.history] == \
        [(r.train_loss, r.val_loss) for r in straight.history]
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key


def test_nan_stops_the_run_and_names_the_first_bad_node():
    g = chain_graph([4], ("Linear", {"out_features": 8}), ("ReLU", {}),
                    ("Linear", {"out_features": 3}), loss="CrossEntropyLoss")
    project = tiny_project("sgd", lr=1e6, epochs=50)
    project.graph = g
    trainer = make_trainer(project)
    records = []
    trainer.add_listener(records.append)
    with pytest.raises(TrainingError) as info:
        trainer.run()
    message = str(info.value)
    assert "the first non-finite output is n" in message and "lower the learning rate" in \
        message
    assert records[-1] == StateRecord("failed", message)


def test_a_graph_without_loss_cannot_train():
    g = chain_graph([64], ("Linear", {"out_features": 10}))
    with pytest.raises(TrainingError, match="no loss node"):
        Trainer(Project(graph=g), settings_from({**Project().training, "dataset": {
            "name": "digits"}}))


def test_regression_with_mse_on_csv(tmp_path):
    path = tmp_path / "line.csv"
    xs = torch.linspace(-1, 1, 200)
    path.write_text("x,y\n" + "".join(f"{x:.4f},{3 * x + 1:.4f}\n" for x in xs.tolist()))
    g = chain_graph([1], ("Linear", {"out_features": 1}), loss="MSELoss")
    project = Project(graph=g)
    project.training.update({"dataset": {"name": "csv", "options": {"path": str(path)},
                                         "validation_split": 0.2},
                             "optimizer": {"name": "adam", "lr": 0.05}, "epochs": 40})
    trainer = Trainer(project)
    trainer.run()
    assert trainer.history[-1].val_accuracy is None
    assert trainer.history[-1].val_loss < 1e-3
    torch.testing.assert_close(trainer.model.n0.weight.detach(), torch.tensor([[3.0]]),
                               atol=0.02, rtol=0)


def test_mse_on_classes_uses_one_hot_targets_and_bce_a_single_logit():
    for loss, out, classes in (("MSELoss", 3, 3), ("BCEWithLogitsLoss", 1, 2)):
        g = chain_graph([4], ("Linear", {"out_features": out}), loss=loss)
        data = tiny_data()
        data.y = data.y % classes
        data.classes = data.classes[:classes]
        trainer = make_trainer(Project(graph=g), data)
        trainer.run()
        assert trainer.history and trainer.history[-1].val_loss is None


def test_scheduler_accumulation_clipping_and_bfloat16_run():
    trainer = digits_mlp(epochs=2, scheduler={"name": "step", "step_size": 1, "gamma": 0.5},
                         accumulate=2, clip_grad_norm=1.0, precision="bfloat16")
    trainer.run()
    assert trainer.current_lr == pytest.approx(0.001 * 0.25)
    assert trainer.history[-1].val_accuracy > 0.5


def test_bad_settings_name_their_location():
    project = layerlab.load_project(EXAMPLES / "digits-mlp.layerlab.json")
    project.training.update({"accumulate": 0, "precision": "float8"})
    project.training["optimizer"]["betas"] = [0.9, 0.99]
    project.training["optimizer"]["momentum"] = 0.5
    with pytest.raises(layerlab.GraphError) as info:
        settings_from(project.training)
    where = {w for w, _ in info.value.errors}
    assert where == {"training.accumulate", "training.precision", "training.optimizer.momentum"}


def test_epoch_records_carry_validation_metrics():
    trainer = digits_mlp(epochs=1)
    records = []
    trainer.add_listener(records.append)
    trainer.run()
    epoch = [r for r in records if isinstance(r, EpochRecord)]
    assert len(epoch) == 1 and 0 < epoch[0].val_accuracy <= 1
    assert epoch[0].step == trainer.batches_per_epoch == 45


def test_health_records_every_n_steps_feed_the_verdicts():
    from layerlab.core.diagnostics import gradient_verdicts
    from layerlab.core.trainer import HealthRecord

    trainer = digits_mlp(epochs=1)
    trainer.health_every = 10
    health = []
    trainer.add_listener(lambda r: health.append(r) if isinstance(r, HealthRecord) else None)
    trainer.run()
    assert [h.step for h in health] == [10, 20, 30, 40]
    first = health[0]
    assert set(first.grad_norms) == {"fc1", "fc2"} and all(v > 0 for v in
                                                          first.grad_norms.values())
    assert set(first.update_ratios) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert all(0 < r < 1 for r in first.update_ratios.values())
    assert gradient_verdicts(first.grad_norms) == []  # a healthy MLP


def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    from layerlab.core.runtime import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto").type == "cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device("auto").type == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU is available"):
        pick_device("cuda")


def test_nothing_to_train_is_refused_in_words_naming_the_frozen_layers():
    """torch would say "optimizer got an empty parameter list" (monkey finding F7)."""
    project = tiny_project()
    for node in ("n0", "n2"):
        project.graph.nodes[node]["frozen"] = True
    with pytest.raises(TrainingError) as info:
        make_trainer(project)
    assert str(info.value) == "every layer with weights is frozen (n0, n2): unfreeze one to train"
    project.graph.nodes["n2"]["frozen"] = False
    trainer = make_trainer(project)
    assert [p for group in trainer.optimizer.param_groups for p in group["params"]] == \
        list(trainer.model.n2.parameters())
    weightless = Project(graph=chain_graph([4], ("ReLU", {}), loss="CrossEntropyLoss"))
    weightless.training = project.training
    with pytest.raises(TrainingError, match=r"^the network has no weights to train"):
        make_trainer(weightless)
