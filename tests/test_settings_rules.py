"""Training settings: command-line overrides, defaults, and the torch optimizer and schedule
they build, checked field by field against torch's own objects."""

import copy

import pytest
import torch

from layerlab.core.errors import GraphError
from layerlab.core.project import DEFAULT_TRAINING
from layerlab.core.settings import (
    make_optimizer,
    make_scheduler,
    settings_from,
    with_overrides,
)


def training(**changes):
    t = copy.deepcopy(DEFAULT_TRAINING)
    t["dataset"]["options"] = {"n_samples": 200}
    t["optimizer"] = {"name": "adam", "lr": 0.005, "eps": 1e-6}
    t.update(changes)
    return t


def test_no_override_is_a_copy_that_leaves_the_original_alone():
    t = training()
    out = with_overrides(t, dataset=None, optimizer=None, lr=None, epochs=None)
    assert out == t
    out["dataset"]["name"] = "moons"
    out["optimizer"]["lr"] = 1.0
    assert t == training()


def test_another_dataset_drops_the_old_ones_options_and_keeps_its_split():
    out = with_overrides(training(), dataset="moons")
    assert out["dataset"] == {"name": "moons", "options": {}, "validation_split": 0.1}
    same = with_overrides(training(), dataset="SPIRAL")  # the same one, spelt otherwise
    assert same["dataset"] == training()["dataset"]


def test_another_optimizer_drops_the_old_ones_arguments_but_keeps_the_learning_rate():
    assert with_overrides(training(), optimizer="SGD")["optimizer"] == {"name": "sgd",
                                                                        "lr": 0.005}
    assert with_overrides(training(), optimizer="Adam")["optimizer"] == training()["optimizer"]


def test_learning_rate_and_plain_fields_override_in_place():
    out = with_overrides(training(), lr=0.3, epochs=7, batch_size=5, device="CPU")
    assert out["optimizer"] == {"name": "adam", "lr": 0.3, "eps": 1e-6}
    assert (out["epochs"], out["batch_size"], out["device"]) == (7, 5, "cpu")
    assert "lr" not in out


def test_settings_fill_the_optimizers_defaults_under_the_users_own_arguments():
    s = settings_from(training(l1=0.25, l2=0.5, seed=3, batch_size=16, epochs=4))
    assert s.optimizer == "adam" and s.lr == 0.005
    assert s.optimizer_args == {"betas": [0.9, 0.999], "eps": 1e-6, "weight_decay": 0.0,
                                "lr": 0.005}
    assert (s.dataset, s.dataset_options, s.validation_split) == ("spiral",
                                                                 {"n_samples": 200}, 0.1)
    assert (s.batch_size, s.epochs, s.l1, s.l2, s.seed, s.device) == (16, 4, 0.25, 0.5, 3,
                                                                      "auto")
    assert (s.clip_grad_norm, s.scheduler, s.precision, s.accumulate) == (None, None,
                                                                         "float32", 1)


def test_settings_carry_the_optional_fields_and_the_overrides():
    t = training(clip_grad_norm=2.5, scheduler={"name": "step", "step_size": 2},
                 precision="bfloat16", accumulate=3)
    t["dataset"]["validation_split"] = 0.3
    s = settings_from(t, optimizer="momentum", lr=0.2, epochs=9)
    assert (s.clip_grad_norm, s.scheduler, s.precision, s.accumulate) == (
        2.5, {"name": "step", "step_size": 2}, "bfloat16", 3)
    assert s.validation_split == 0.3 and s.epochs == 9
    assert s.optimizer_args == {"momentum": 0.9, "weight_decay": 0.0, "lr": 0.2}


def test_a_dataset_without_a_split_validates_on_a_tenth():
    t = training()
    del t["dataset"]["validation_split"]
    assert settings_from(t).validation_split == 0.1


def test_every_problem_is_raised_at_once():
    with pytest.raises(GraphError) as info:
        settings_from(training(batch_size=0, epochs=0))
    assert len(info.value.errors) == 2


def params():
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(3, 2))]


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("momentum", torch.optim.SGD),
                                       ("adagrad", torch.optim.Adagrad),
                                       ("rmsprop", torch.optim.RMSprop),
                                       ("adam", torch.optim.Adam),
                                       ("adamw", torch.optim.AdamW)])
def test_each_optimizer_is_torchs_own_class_with_the_settings_arguments(name, cls):
    s = settings_from(training(optimizer={"name": name, "lr": 0.125}))
    p = params()
    opt = make_optimizer(s, p)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["params"] == p and group["lr"] == 0.125
    for key, value in s.optimizer_args.items():
        assert group[key] == (tuple(value) if key == "betas" else value), key
    if name == "momentum":
        assert group["momentum"] == 0.9


def test_no_schedule_keeps_the_learning_rate():
    s = settings_from(training())
    assert make_scheduler(s, make_optimizer(s, params())) is None


def lrs(scheduler, optimizer, epochs):
    seen = []
    for _ in range(epochs):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_a_step_schedule_multiplies_by_gamma_every_step_size_epochs():
    s = settings_from(training(scheduler={"name": "step", "step_size": 2, "gamma": 0.5}))
    opt = make_optimizer(s, params())
    assert lrs(make_scheduler(s, opt), opt, 5) == pytest.approx(
        [0.005, 0.005, 0.0025, 0.0025, 0.00125])


def test_a_step_schedule_defaults_to_a_tenth_every_ten_epochs():
    s = settings_from(training(scheduler={"name": "step"}))
    opt = make_optimizer(s, params())
    sched = make_scheduler(s, opt)
    assert (sched.step_size, sched.gamma) == (10, 0.1)


def test_a_cosine_schedule_anneals_over_the_runs_epochs_to_eta_min():
    s = settings_from(training(epochs=4, scheduler={"name": "cosine", "eta_min": 0.001}))
    opt = make_optimizer(s, params())
    sched = make_scheduler(s, opt)
    assert type(sched) is torch.optim.lr_scheduler.CosineAnnealingLR
    assert (sched.T_max, sched.eta_min) == (4, 0.001)
    default = settings_from(training(scheduler={"name": "cosine"}))
    assert make_scheduler(default, make_optimizer(default, params())).eta_min == 0.0
