"""The objective: which target encoding each loss and output get, the targets and predictions
computed by hand, and the refusals that name the dataset, the node and the shapes."""

import pytest
import torch
from torch import nn

from layerlab.core.datasets import Dataset, DatasetError
from layerlab.core.objective import make_objective


def classes(k, name="toy"):
    return Dataset(name, torch.zeros(4, 2), torch.tensor([0, 1, 1, 0]), "classification",
                   tuple(str(i) for i in range(k)))


def regression(width=1):
    return Dataset("reg", torch.zeros(4, 2), torch.zeros(4, width), "regression")


@pytest.mark.parametrize("loss", ["CrossEntropyLoss", "NLLLoss"])
def test_class_losses_take_class_ids_and_at_least_one_score_per_class(loss):
    obj = make_objective(loss, nn.CrossEntropyLoss(), "out", (3,), classes(3))
    assert (obj.encoding, obj.classes, obj.loss_type) == ("index", 3, loss)
    y = torch.tensor([2, 0])
    assert torch.equal(obj.target(y), y)
    assert make_objective(loss, nn.CrossEntropyLoss(), "out", (5,), classes(3)).encoding == \
        "index"


@pytest.mark.parametrize("shape", [(2,), ()])
def test_too_few_scores_for_a_class_loss_are_refused_naming_everything(shape):
    with pytest.raises(DatasetError) as info:
        make_objective("CrossEntropyLoss", nn.CrossEntropyLoss(), "fc3", shape, classes(3))
    shown = "[2]" if shape else "[]"
    assert str(info.value) == ("CrossEntropyLoss needs one score per class: dataset toy has 3 "
                               f"classes, but fc3 gives {shown}")


def test_other_losses_on_k_outputs_get_one_hot_float_targets():
    obj = make_objective("MSELoss", nn.MSELoss(), "out", (3,), classes(3))
    assert obj.encoding == "onehot"
    target = obj.target(torch.tensor([2, 0]))
    assert target.dtype == torch.float32
    assert torch.equal(target, torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))


def test_a_single_output_on_two_classes_gets_a_float_column():
    obj = make_objective("BCELoss", nn.BCELoss(), "out", (1,), classes(2))
    assert obj.encoding == "binary"
    target = obj.target(torch.tensor([1, 0, 1]))
    assert target.dtype == torch.float32 and torch.equal(target, torch.tensor([[1.0], [0.0],
                                                                               [1.0]]))


@pytest.mark.parametrize("shape, k", [((1,), 3), ((2,), 3), ((4,), 3)])
def test_an_output_that_fits_neither_encoding_is_refused(shape, k):
    with pytest.raises(DatasetError) as info:
        make_objective("MSELoss", nn.MSELoss(), "head", shape, classes(k))
    assert str(info.value) == (f"MSELoss on the {k} classes of dataset toy needs an output of "
                               f"[{k}] (one-hot) or [1] (two classes), but head gives "
                               f"[{shape[0]}]")


def test_predictions_are_the_argmax_or_the_threshold_the_loss_implies():
    scores = torch.tensor([[0.1, 0.7, 0.2], [3.0, -1.0, 2.9]])
    index = make_objective("CrossEntropyLoss", nn.CrossEntropyLoss(), "o", (3,), classes(3))
    assert index.predict(scores).tolist() == [1, 0]
    assert index.correct(scores, torch.tensor([1, 2])) == 1
    onehot = make_objective("MSELoss", nn.MSELoss(), "o", (3,), classes(3))
    assert onehot.correct(scores, torch.tensor([1, 0])) == 2
    column = torch.tensor([[0.4], [0.5], [0.6], [-0.1]])
    logits = make_objective("BCEWithLogitsLoss", nn.BCEWithLogitsLoss(), "o", (1,), classes(2))
    probabilities = make_objective("BCELoss", nn.BCELoss(), "o", (1,), classes(2))
    assert logits.logits and not probabilities.logits
    assert logits.predict(column).tolist() == [1, 1, 1, 0]  # logit > 0
    assert probabilities.predict(column).tolist() == [0, 0, 1, 0]  # probability > 0.5
    assert probabilities.predict(column).dtype == torch.int64
    assert probabilities.correct(column, torch.tensor([0, 1, 1, 0])) == 3


def test_regression_targets_pass_through_and_have_no_accuracy():
    obj = make_objective("MSELoss", nn.MSELoss(), "out", (2,), regression(2))
    assert (obj.encoding, obj.classes) == ("values", 0)
    y = torch.tensor([[0.5, 1.5]])
    assert obj.target(y) is y
    assert obj.correct(torch.zeros(1, 2), y) is None
    with pytest.raises(ValueError, match="predicts values, not classes"):
        obj.predict(torch.zeros(1, 2))


def test_regression_outputs_must_match_the_target_shape():
    with pytest.raises(DatasetError) as info:
        make_objective("L1Loss", nn.L1Loss(), "fc", (3,), regression(2))
    assert str(info.value) == "dataset reg has targets of shape [2], but fc gives [3]"


@pytest.mark.parametrize("loss", ["CrossEntropyLoss", "NLLLoss"])
def test_class_losses_on_real_valued_targets_are_refused(loss):
    with pytest.raises(DatasetError) as info:
        make_objective(loss, nn.CrossEntropyLoss(), "fc", (1,), regression())
    assert str(info.value) == (f"{loss} needs class labels, but dataset reg has real-valued "
                               "targets; use MSELoss or L1Loss")
