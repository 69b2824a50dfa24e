"""The training loop's bookkeeping, checked against numbers computed by hand: batches per epoch,
the records it emits (positions, losses, rates, learning rate), evaluation in chunks, the
penalty, pause/step/stop, checkpoints and the sentences of a failed run."""

import math
import threading

import pytest
import torch

import layerlab.core.trainer as trainer_module
from layerlab.core.datasets import Dataset
from layerlab.core.project import Project
from layerlab.core.settings import settings_from
from layerlab.core.trainer import (
    Control,
    EpochRecord,
    HealthRecord,
    StateRecord,
    StepRecord,
    Trainer,
    TrainingError,
    distributed_rank,
)

from helpers import chain_graph


def data(n=10, classes=3):
    gen = torch.Generator().manual_seed(0)
    return Dataset("toy", torch.randn(n, 4, generator=gen), torch.arange(n) % classes,
                   "classification", tuple("abc")[:classes])


def make(n=10, batch_size=4, epochs=2, split=0.0, loss="CrossEntropyLoss", layers=None,
         dataset=None, **training):
    g = chain_graph([4], *(layers or [("Linear", {"out_features": 3})]), loss=loss)
    project = Project(graph=g)
    project.training.update({"dataset": {"name": "spiral", "validation_split": split},
                             "optimizer": {"name": "sgd", "lr": 0.1},
                             "batch_size": batch_size, "epochs": epochs, "device": "cpu",
                             **training})
    return Trainer(project, settings_from(project.training), data=dataset or data(n))


def records(trainer, kind):
    seen = []
    trainer.add_listener(lambda r: seen.append(r) if isinstance(r, kind) else None)
    return seen


@pytest.mark.parametrize("n, batch, batches", [(10, 4, 3), (8, 4, 2), (3, 4, 1), (9, 1, 9)])
def test_a_partial_last_batch_is_a_batch_of_its_own(n, batch, batches):
    t = make(n=n, batch_size=batch, epochs=1)
    steps = records(t, StepRecord)
    assert t.batches_per_epoch == batches
    assert t.run() == "finished"
    assert [(s.epoch, s.step, s.batch, s.batches) for s in steps] == [
        (1, i + 1, i + 1, batches) for i in range(batches)]
    assert (t.epoch, t.batch, t.step) == (1, 0, batches)


def test_the_single_process_is_rank_0_of_1():
    assert distributed_rank() == (0, 1)
    assert (make().rank, make().world) == (0, 1)


def test_each_step_reports_the_batch_loss_and_the_epoch_the_sample_weighted_mean():
    t = make(n=10, batch_size=4, epochs=1, optimizer={"name": "sgd", "lr": 0.0001})
    steps, epochs = records(t, StepRecord), records(t, EpochRecord)
    model = t.model
    x, y = t.x_train, t.y_train
    order = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    expected = []
    with torch.no_grad():
        for start in (0, 4, 8):
            idx = order[start:start + 4]
            expected.append(float(torch.nn.functional.cross_entropy(model(x[idx]), y[idx])))
    t.run()
    # lr 1e-4: the weights barely move, so the losses match a fixed model to 1e-3
    assert [s.loss for s in steps] == pytest.approx(expected, abs=1e-3)
    assert steps[0].loss == pytest.approx(expected[0], abs=1e-7)  # before any update
    mean = (4 * steps[0].loss + 4 * steps[1].loss + 2 * steps[2].loss) / 10
    assert epochs[0].train_loss == pytest.approx(mean, rel=1e-6)
    assert (epochs[0].epoch, epochs[0].step) == (1, 3) and epochs[0].seconds > 0
    assert all(s.lr == 0.0001 for s in steps)


def test_throughput_is_a_running_average_of_samples_per_second(monkeypatch):
    # run() starts the clock, then one reading per step, and one after the epoch's
    # evaluation (which is not training time)
    clock = iter([100.0, 100.5, 101.5, 101.75, 103.0])

    class Clock:
        @staticmethod
        def perf_counter():
            return next(clock)

    t = make(n=12, batch_size=4, epochs=1)
    steps = records(t, StepRecord)
    monkeypatch.setattr(trainer_module, "time", Clock)
    t.run()
    rates = [s.samples_per_s for s in steps]
    # 4 samples in 0.5 s, then 4 in 1 s, then 4 in 0.25 s, averaged 0.9 old + 0.1 new
    assert rates[0] == pytest.approx(8.0)
    assert rates[1] == pytest.approx(0.9 * 8 + 0.1 * 4)
    assert rates[2] == pytest.approx(0.9 * rates[1] + 0.1 * 16)
    assert t.history[0].seconds == pytest.approx(1.75)  # the steps, not the evaluation
    assert t.history[0].samples_per_s == pytest.approx(12 / 1.75)


def test_a_batch_outside_run_measures_from_a_millisecond_before():
    t = make(n=4, batch_size=4, epochs=1)
    steps = records(t, StepRecord)
    t.train_one_batch()
    assert steps[0].samples_per_s == pytest.approx(4 / 1e-3, rel=1e-6)


def test_evaluation_in_chunks_gives_the_whole_batch_numbers(monkeypatch):
    t = make(n=30, split=0.5)
    x, y = t.x_val, t.y_val
    assert len(x) == 15
    with torch.no_grad():
        out = t.model(x)
        loss = float(torch.nn.functional.cross_entropy(out, y))
        accuracy = float((out.argmax(1) == y).float().mean())
    monkeypatch.setattr(trainer_module, "EVAL_CHUNK", 4)
    t.model.train()
    got_loss, got_acc = t.evaluate(x, y)
    assert got_loss == pytest.approx(loss, rel=1e-6) and got_acc == pytest.approx(accuracy)
    assert t.model.training
    assert t.evaluate(x[:0], y[:0]) == (None, None)


def test_epoch_records_carry_the_validation_numbers_of_the_updated_model():
    t = make(n=20, split=0.25, epochs=1)
    epochs = records(t, EpochRecord)
    t.run()
    loss, accuracy = t.evaluate(t.x_val, t.y_val)
    assert (epochs[0].val_loss, epochs[0].val_accuracy) == (loss, accuracy)
    assert t.history == epochs


def test_regression_has_a_validation_loss_but_no_accuracy():
    gen = torch.Generator().manual_seed(0)
    reg = Dataset("reg", torch.randn(12, 4, generator=gen), torch.randn(12, 3, generator=gen),
                  "regression")
    t = make(loss="MSELoss", split=0.5, dataset=reg)
    loss, accuracy = t.evaluate(t.x_val, t.y_val)
    with torch.no_grad():
        expected = float(torch.nn.functional.mse_loss(t.model(t.x_val), t.y_val))
    assert accuracy is None and loss == pytest.approx(expected, rel=1e-6)


def test_the_penalty_is_l1_and_l2_over_weight_matrices_only():
    layers = [("Linear", {"out_features": 5}), ("BatchNorm1d", {}),
              ("Linear", {"out_features": 3})]
    t = make(layers=layers, l1=0.25, l2=0.5)
    with torch.no_grad():
        weights = [t.model.n0.weight, t.model.n2.weight]
        expected = sum(0.25 * w.abs().sum() + 0.5 * w.pow(2).sum() for w in weights)
        assert float(t.penalty()) == pytest.approx(float(expected), rel=1e-6)
        l1_only = make(layers=layers, l1=0.25)
        assert float(l1_only.penalty()) == pytest.approx(
            float(sum(0.25 * w.abs().sum() for w in weights)), rel=1e-6)
    assert make(layers=layers).penalty() == 0.0


def test_pause_announces_once_steps_are_counted_and_stop_ends_the_wait():
    control = Control()
    said = []
    assert control.wait_turn(lambda: said.append("p"), lambda: said.append("r"))
    control.pause()
    control.step(2)
    assert control.paused
    assert control.wait_turn(lambda: said.append("p"), lambda: said.append("r"))
    assert control.wait_turn(lambda: said.append("p"), lambda: said.append("r"))
    assert said == []  # two granted steps, no pause announced yet
    done = []
    waiter = threading.Thread(target=lambda: done.append(
        control.wait_turn(lambda: said.append("p"), lambda: said.append("r"))))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and said == ["p"]
    control.resume()
    waiter.join(5)
    assert done == [True] and said == ["p", "r"] and not control.paused
    control.stop()
    assert control.stopping
    assert control.wait_turn(lambda: said.append("p"), lambda: said.append("r")) is False


def test_a_run_reports_its_states_in_order():
    t = make(epochs=1)
    states = records(t, StateRecord)
    t.control.stop()
    assert t.run() == "stopped"
    assert [s.state for s in states] == ["running", "stopped"]
    t = make(epochs=1)
    states = records(t, StateRecord)
    assert t.run() == "finished"
    assert [s.state for s in states] == ["running", "finished"]


def test_a_failing_step_ends_the_run_failed_with_its_sentence():
    t = make(epochs=1)
    states = records(t, StateRecord)
    with torch.no_grad():
        t.model.n0.weight.fill_(math.inf)
    with pytest.raises(TrainingError) as info:
        t.run()
    assert [s.state for s in states] == ["running", "failed"]
    assert states[-1].message == str(info.value)
    assert str(info.value).startswith("training stopped at epoch 1, step 1: the loss became nan")
    assert "the first non-finite output is n0's (Linear); lower the learning rate (now 0.1)" \
        in str(info.value)


def test_nan_in_the_data_is_blamed_on_the_data():
    bad = data(8)
    bad.x[3, 1] = math.nan
    t = make(n=8, batch_size=8, dataset=bad)
    with pytest.raises(TrainingError) as info:
        t.run()
    assert str(info.value) == ("training stopped at epoch 1, step 1: the input data contain "
                               "NaN or infinity")


def test_a_loss_that_overflows_with_finite_outputs_asks_for_a_lower_rate():
    t = make(loss="MSELoss", dataset=Dataset("reg", torch.full((4, 4), 1e30),
                                             torch.zeros(4, 3), "regression"), batch_size=4)
    with torch.no_grad():
        t.model.n0.weight.fill_(1.0)
    with pytest.raises(TrainingError) as info:
        t.run()
    assert str(info.value) == ("training stopped at epoch 1, step 1: the loss became inf "
                               "although every node's output is finite; lower the learning "
                               "rate (now 0.1)")


@pytest.mark.parametrize("seed", [0, 1, 3, 6])
def test_the_culprit_is_found_with_the_dropout_masks_of_the_failing_step(seed):
    """Four inputs of 1e38 through Dropout(0.5) into a sum: the Linear overflows when the
    step kept two or more of them (×2 each), else only the squared loss does. The replay
    that looks for the culprit must draw the masks the failing step drew (twin: the same
    draw from the run's random state)."""
    t = make(n=1, batch_size=1, loss="MSELoss", seed=seed,
             layers=[("Dropout", {"p": 0.5}), ("Linear", {"out_features": 1, "bias": False})],
             dataset=Dataset("reg", torch.full((1, 4), 1e38), torch.zeros(1, 1), "regression"))
    with torch.no_grad():
        t.model.n1.weight.fill_(1.0)
    torch.set_rng_state(t.rng_state)
    kept = int((torch.nn.functional.dropout(torch.ones(1, 4), 0.5, training=True) != 0).sum())
    with pytest.raises(TrainingError) as info:
        t.run()
    where = "training stopped at epoch 1, step 1: the loss became inf"
    assert str(info.value) == (
        f"{where}; the first non-finite output is n1's (Linear); lower the learning rate "
        "(now 0.1) or add normalisation" if kept >= 2 else
        f"{where} although every node's output is finite; lower the learning rate (now 0.1)")


def test_accumulation_updates_every_k_batches_and_after_the_last():
    t = make(n=10, batch_size=2, epochs=1, accumulate=2)
    updates = []
    original = t.optimizer.step
    t.optimizer.step = lambda *a, **k: (updates.append(t.batch), original(*a, **k))[1]
    t.run()
    assert updates == [1, 3, 4]  # after batches 2 and 4 (0-based 1, 3) and the last one


def test_health_records_come_every_n_updates_with_norms_and_ratios():
    t = make(n=16, batch_size=2, epochs=1)
    t.health_every = 3
    health = records(t, HealthRecord)
    weights = []
    t.add_listener(lambda r: weights.append(t.model.n0.weight.detach().clone())
                   if isinstance(r, StepRecord) else None)
    t.run()
    assert [h.step for h in health] == [3, 6]
    assert set(health[0].grad_norms) == {"n0"}
    assert set(health[0].update_ratios) == {"n0.weight", "n0.bias"}
    before, after = weights[1], weights[2]
    ratio = float((after - before).norm() / before.norm())
    assert health[0].update_ratios["n0.weight"] == pytest.approx(ratio, rel=1e-5)


def test_clipping_caps_the_norm_of_the_update():
    t = make(n=4, batch_size=4, epochs=1, clip_grad_norm=1e-3,
             optimizer={"name": "sgd", "lr": 1.0})
    before = {k: v.detach().clone() for k, v in t.model.named_parameters()}
    t.run()
    moved = torch.cat([(p.detach() - before[k]).reshape(-1)
                       for k, p in t.model.named_parameters()])
    assert float(moved.norm()) == pytest.approx(1e-3, rel=1e-4)


def test_a_checkpoint_holds_the_position_and_restores_it(tmp_path):
    t = make(n=10, batch_size=4, epochs=3)
    for _ in range(4):  # one epoch and a batch
        t.train_one_batch()
    state = t.checkpoint()
    assert state["position"] == {"epoch": 1, "batch": 1, "step": 4,
                                 "epoch_loss": t._epoch_loss, "epoch_samples": 4,
                                 "epoch_seconds": t._epoch_seconds}
    assert state["scheduler"] == {} and len(state["history"]) == 1
    t.save_checkpoint(tmp_path / "c.pt")
    other = make(n=10, batch_size=4, epochs=3)
    other.load_checkpoint(tmp_path / "c.pt")
    assert (other.epoch, other.batch, other.step) == (1, 1, 4)
    assert other._epoch_samples == 4 and other._epoch_loss == t._epoch_loss
    assert other._epoch_seconds == t._epoch_seconds > 0
    assert other.history == t.history
    t.run()
    other.run()
    for (name, p), q in zip(t.model.named_parameters(), other.model.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_a_file_that_is_not_a_checkpoint_cannot_be_resumed(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"model": {}}, path)  # a dict, but not only tensors: not a weights file
    with pytest.raises(TrainingError, match=r"c\.pt is not a run's checkpoint: it holds "
                                            r"something else, not the optimizer state"):
        make().load_checkpoint(path)


def test_a_checkpoint_whose_state_does_not_fit_says_torchs_reason_in_words(tmp_path):
    path = tmp_path / "c.pt"
    make().save_checkpoint(path)
    state = torch.load(path, weights_only=True)
    state["shuffle"] = torch.zeros(3, dtype=torch.uint8)  # not a generator's state
    torch.save(state, path)
    with pytest.raises(TrainingError) as info:
        make().load_checkpoint(path)
    assert str(info.value).startswith(f"{path} does not fit this run (another optimizer or "
                                      "schedule?): Expected a CPUGeneratorImplState of size ")
    assert "RuntimeError" not in str(info.value)  # torch's sentence, not its exception


def test_a_checkpoint_without_optimizer_groups_is_another_optimizers(tmp_path):
    path = tmp_path / "c.pt"
    make().save_checkpoint(path)
    state = torch.load(path, weights_only=True)
    state["optimizer"] = {"state": {}}
    torch.save(state, path)
    with pytest.raises(TrainingError, match=r"c\.pt was written with another optimizer than "
                                            r"this run's \(sgd\)$"):
        make().load_checkpoint(path)


def test_a_plain_step_calls_the_optimizers_own_step_past_torchs_wrapper(monkeypatch):
    """optimizer.step() wraps the step in a profiler annotation and the hooks (25 µs a step);
    with neither in use the trainer calls the step underneath, and with a hook the wrapper."""
    t = make(n=4, batch_size=4, epochs=3)
    cls = type(t.optimizer)
    raw, calls = cls.step.__wrapped__, []

    def wrapper(self, *args, **kwargs):
        calls.append(t.step)
        return raw(self, *args, **kwargs)

    wrapper.__wrapped__ = raw
    monkeypatch.setattr(cls, "step", wrapper)
    before = [p.detach().clone() for p in t.model.parameters()]
    t.train_one_batch()
    assert calls == [] and not all(map(torch.equal, before, t.model.parameters()))
    t.optimizer.register_step_pre_hook(lambda *args: None)
    t.train_one_batch()
    assert calls == [1]


def test_tracing_the_next_batch_returns_its_trace_and_forgets_the_listener():
    t = make(n=8, batch_size=4)
    listeners = len(t.listeners)
    trace = t.trace_next_batch(keep=2)
    assert trace.kept["samples"] == 2 and trace.kept["batch"] == 4
    assert len(t.listeners) == listeners and t.step == 1


def test_a_graph_without_a_loss_or_with_an_unknown_device_cannot_train():
    g = chain_graph([4], ("Linear", {"out_features": 3}))
    project = Project(graph=g)
    with pytest.raises(TrainingError, match="the graph has no loss node"):
        Trainer(project, settings_from(project.training), data=data())
