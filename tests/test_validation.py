"""The one validation of the training section (core/validation.py): ranges on both sides,
messages that name the field as a person knows it, every problem at once, names of choices
in any case, and agreement with what torch itself accepts."""

import copy

import pytest
import torch

import layerlab
from layerlab.core.project import DEFAULT_TRAINING, Project
from layerlab.core.settings import make_optimizer, settings_from
from layerlab.core.validation import FIELDS, normalise_training, training_problems


def section(**changes):
    """The default training section with dotted keys changed ('optimizer.lr': 0)."""
    t = copy.deepcopy(DEFAULT_TRAINING)
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if rest:
            t[head][rest] = value
        else:
            t[head] = value
    return t


def where(t):
    return {w for w, _ in training_problems(t)}


# (dotted key, optimizer it needs or None, accepted values, refused values); the bounds are
# written out here, not read from FIELDS, so that a changed range fails a test
RANGES = [
    ("optimizer.lr", None, [1e-9, 0.001, 1e6], [0, -1, 1.000001e6, float("nan"), "0.1", True]),
    ("batch_size", None, [1, 1_000_000], [0, -5, 1_000_001, 2.5, True, "32"]),
    ("epochs", None, [1, 100_000], [0, 100_001, 1.5]),
    ("dataset.validation_split", None, [0, 0.5, 0.9], [-0.01, 0.91, 1.5, None, "0.1"]),
    ("l1", None, [0, 10], [-1e-9, 10.5]),
    ("l2", None, [0, 10], [-1e-9, 10.5]),
    ("seed", None, [0, 2**31 - 1], [-1, 2**31, 1.0]),
    ("optimizer.momentum", "momentum", [0, 0.99], [1.0, -0.1]),
    ("optimizer.betas", "adam", [[0.0, 0.999]], [[0.9, 1.0], [0.9], [-0.1, 0.9], 0.9]),
    ("optimizer.eps", "adam", [1e-12, 1], [0, 1.5]),
    ("optimizer.weight_decay", "adamw", [0, 1], [-0.1, 1.1]),
    ("optimizer.alpha", "rmsprop", [0, 1], [1.1, -0.1]),
    ("optimizer.amsgrad", "adam", [True, False], [1, "yes"]),
    ("clip_grad_norm", None, [None, 1e-6, 1e6], [0, -1, 1e7]),
    ("accumulate", None, [1, 10_000], [0, 10_001, 2.0]),
    ("precision", None, ["float32", "bfloat16"], ["float16", None]),
    ("device", None, ["auto", "cpu", "cuda", "mps"], ["tpu", ""]),
]


@pytest.mark.parametrize(("key", "optimizer", "good", "bad"), RANGES,
                         ids=[r[0] for r in RANGES])
def test_each_field_is_bounded_on_both_sides(key, optimizer, good, bad):
    base = {} if optimizer is None else {"optimizer.name": optimizer}
    for value in good:
        assert training_problems(section(**base, **{key: value})) == [], value
    for value in bad:
        assert where(section(**base, **{key: value})) == {f"training.{key}"}, value


@pytest.mark.parametrize(("changes", "location", "message"), [
    ({"optimizer.lr": 0}, "training.optimizer.lr",
     "learning rate (--lr) must be a number above 0 and at most 1,000,000, not 0"),
    ({"optimizer.lr": 1e30}, "training.optimizer.lr",
     "learning rate (--lr) must be a number above 0 and at most 1,000,000, not 1e+30"),
    ({"dataset.validation_split": 1.5}, "training.dataset.validation_split",
     "validation split must be a number at least 0 and at most 0.9, not 1.5"),
    ({"batch_size": -5}, "training.batch_size",
     "batch size (--batch-size) must be a whole number at least 1 and at most 1,000,000, "
     "not -5"),
    ({"device": "tpu"}, "training.device",
     "device (--device) must be one of auto, cpu, cuda, mps, not 'tpu'"),
    ({"optimizer.name": "momentum", "optimizer.nesterov": True, "optimizer.dampening": 0.5},
     "training.optimizer.nesterov", "nesterov needs a momentum above 0 and a dampening of 0"),
    ({"optimizer.momentum": 0.9}, "training.optimizer.momentum",
     "optimizer adam takes no argument 'momentum' (it takes lr, betas, eps, weight_decay, "
     "amsgrad)"),
    ({"dataset.options": {"noise": -1}}, "training.dataset.options",
     "dataset spiral: option noise must be at least 0, not -1"),
    ({"scheduler": {"name": "step", "gamma": 0}}, "training.scheduler.gamma",
     "the schedule's gamma must be a number above 0 and at most 1, not 0"),
])
def test_messages_name_the_field_once(changes, location, message):
    assert training_problems(section(**changes)) == [(location, message)]


def test_every_problem_is_reported_at_once():
    t = section(**{"optimizer.lr": "abc", "batch_size": -5, "dataset.validation_split": 1.5,
                   "epochs": 0, "dataset.name": "imagenet"})
    assert where(t) == {"training.optimizer.lr", "training.batch_size", "training.epochs",
                        "training.dataset.validation_split", "training.dataset.name"}
    with pytest.raises(layerlab.GraphError) as info:
        settings_from(t)
    assert len(info.value.errors) == 5


def test_typed_text_is_parsed_or_refused_with_the_fields_name():
    lr, batch = FIELDS["optimizer.lr"], FIELDS["batch_size"]
    assert lr.parse(" 0.5 ") == 0.5
    with pytest.raises(ValueError) as info:
        lr.parse("abc")
    assert str(info.value) == ("learning rate (--lr) must be a number above 0 and at most "
                               "1,000,000, not 'abc'")
    assert batch.parse("-5") == -5 and batch.problem(-5) is not None
    with pytest.raises(ValueError):
        batch.parse("5.5")
    assert FIELDS["optimizer.betas"].parse("(0.8, 0.99)") == [0.8, 0.99]
    assert FIELDS["clip_grad_norm"].parse("") is None
    assert FIELDS["optimizer.nesterov"].parse("True") is True


@pytest.mark.parametrize("spelling", ["adam", "Adam", "ADAM"])
def test_names_of_choices_are_case_insensitive(spelling):
    assert FIELDS["optimizer.name"].parse(spelling) == "adam"
    t = normalise_training(section(**{"optimizer.name": spelling, "device": "CPU",
                                      "dataset.name": "Fashion-MNIST"}))
    assert (t["optimizer"]["name"], t["device"], t["dataset"]["name"]) == \
        ("adam", "cpu", "fashion-mnist")
    kept = section(**{"optimizer.betas": [0.8, 0.9]})
    settings = settings_from(kept, optimizer=spelling, device="CPU")
    assert settings.optimizer == "adam" and settings.device == "cpu"
    assert settings.optimizer_args["betas"] == [0.8, 0.9]  # the same optimizer: args kept


def test_a_file_with_other_spellings_loads_canonical():
    data = Project().to_dict()
    data["training"]["optimizer"]["name"] = "RMSProp"
    data["training"]["device"] = "Auto"
    project = Project.from_dict(data)
    assert project.training["optimizer"]["name"] == "rmsprop"
    assert project.training["device"] == "auto"


@pytest.mark.parametrize(("momentum", "dampening"), [(0.9, 0), (0.9, 0.5), (0, 0)])
def test_nesterov_rule_agrees_with_torch(momentum, dampening):
    t = section(**{"optimizer.name": "momentum", "optimizer.momentum": momentum,
                   "optimizer.dampening": dampening, "optimizer.nesterov": True})
    refused = bool(training_problems(t))
    params = [torch.nn.Parameter(torch.zeros(2))]
    try:
        torch.optim.SGD(params, lr=0.1, momentum=momentum, dampening=dampening, nesterov=True)
        torch_refused = False
    except ValueError:
        torch_refused = True
    assert refused == torch_refused
    if not refused:
        optimizer = make_optimizer(settings_from(t), params)
        group = optimizer.param_groups[0]
        assert (group["momentum"], group["dampening"], group["nesterov"]) == \
            (momentum, dampening, True)


def test_every_accepted_optimizer_setting_builds_in_torch():
    """What validation lets through, torch's own constructor accepts (edges of each range)."""
    edges = {"adam": {"betas": [0.0, 0.999999], "eps": 1, "weight_decay": 1, "amsgrad": True},
             "rmsprop": {"alpha": 0, "eps": 1e-12, "momentum": 0.99, "centered": True},
             "adagrad": {"lr_decay": 1, "initial_accumulator_value": 1e6, "eps": 1},
             "sgd": {"weight_decay": 0, "dampening": 1}}
    for name, args in edges.items():
        t = section(**{"optimizer.name": name, "optimizer.lr": 1e6},
                    **{f"optimizer.{k}": v for k, v in args.items()})
        assert training_problems(t) == []
        make_optimizer(settings_from(t), [torch.nn.Parameter(torch.zeros(2))])


def test_overrides_give_a_copy_that_shares_nothing():
    from layerlab.core.settings import with_overrides

    original = section(**{"dataset.options": {"noise": 0.1}, "optimizer.betas": [0.9, 0.99]})
    before = copy.deepcopy(original)
    t = with_overrides(original, lr=0.5, epochs=3)
    t["dataset"]["options"]["noise"] = 0.3
    t["optimizer"]["betas"][0] = 0.5
    assert original == before
    assert (t["optimizer"]["lr"], t["epochs"]) == (0.5, 3)
