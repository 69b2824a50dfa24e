"""Generated text and the user's text file: every sample parses and is right, next-token
targets are the input shifted by one, labels say the truth, and the objective scores a
target per position."""

import re

import pytest
import torch

import layerlab
from layerlab.core.datasets import (
    DATASETS,
    Dataset,
    DatasetError,
    fit_to_input,
    load_dataset,
    with_data,
)
from layerlab.core.insight import preview_training
from layerlab.core.objective import make_objective
from layerlab.core.text_data import ADDITION_VOCAB, decode, exact_answers
from layerlab.core.trainer import Trainer

from conftest import EXAMPLES

SUM = re.compile(r"^(\d+)\+(\d+)=(\d+)$")


def full_text(data, i):
    """Sample i's whole sequence: its input and the last target."""
    return decode(data.x[i], data.vocab) + data.vocab[int(data.y[i, -1])]


@pytest.mark.parametrize("digits", [1, 2, 3])
def test_every_addition_sample_is_a_correct_sum_of_fixed_width(digits):
    data = load_dataset("addition", {"digits": digits, "n_samples": 500, "seed": digits})
    assert data.vocab == ADDITION_VOCAB == data.classes
    assert data.x.dtype == torch.int64 and data.x.shape == (500, 3 * digits + 2)
    for i in range(len(data)):
        a, b, total = SUM.match(full_text(data, i)).groups()
        assert (len(a), len(b), len(total)) == (digits, digits, digits + 1)
        assert int(a) + int(b) == int(total)
    assert torch.equal(data.y[:, :-1], data.x[:, 1:])  # the input shifted by one


def test_the_same_seed_gives_the_same_sums_and_another_seed_others():
    first = load_dataset("addition", {"n_samples": 50, "seed": 3})
    assert torch.equal(first.x, load_dataset("addition", {"n_samples": 50, "seed": 3}).x)
    assert not torch.equal(first.x, load_dataset("addition", {"n_samples": 50, "seed": 4}).x)


def test_is_this_sum_correct_labels_say_the_truth_and_are_balanced():
    data = load_dataset("addition", {"task": "classify", "n_samples": 1000, "seed": 1})
    assert data.classes == ("wrong", "right") and data.y.shape == (1000,)
    for i in range(len(data)):
        a, b, total = SUM.match(decode(data.x[i], data.vocab)).groups()
        assert int(data.y[i]) == (int(a) + int(b) == int(total))
    assert 400 < int(data.y.sum()) < 600


def test_every_reverse_sample_is_a_word_and_its_reverse():
    data = load_dataset("reverse", {"length": 5, "letters": 3, "n_samples": 300})
    assert data.vocab == ("a", "b", "c", ">")
    for i in range(len(data)):
        word, back = full_text(data, i).split(">")
        assert len(word) == 5 and back == word[::-1]
    assert torch.equal(data.y[:, :-1], data.x[:, 1:])
    labelled = load_dataset("reverse", {"task": "classify", "n_samples": 300})
    for i in range(len(labelled)):
        word, back = decode(labelled.x[i], labelled.vocab).split(">")
        assert int(labelled.y[i]) == (back == word[::-1])


def test_a_text_file_becomes_windows_of_its_characters(tmp_path):
    path = tmp_path / "poem.txt"
    path.write_text("the cat sat on the mat, é!", encoding="utf-8")
    data = load_dataset("text", {"path": "poem.txt", "context": 5, "stride": 2},
                        base=tmp_path)
    assert data.vocab == tuple(sorted(set("the cat sat on the mat, é!")))
    assert decode(data.x[0], data.vocab) == "the c" and decode(data.y[0], data.vocab) == "he ca"
    assert decode(data.x[1], data.vocab) == "e cat"
    assert len(data) == (26 - 6) // 2 + 1
    assert torch.equal(data.y[:, :-1], data.x[:, 1:])


def test_a_file_that_is_not_utf8_or_too_short_is_refused_by_name(tmp_path):
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin\.txt is not UTF-8 text"):
        load_dataset("text", {"path": str(latin)})
    short = tmp_path / "short.txt"
    short.write_text("abc", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"short\.txt holds 3 characters.*context"):
        load_dataset("text", {"path": str(short), "context": 8})
    with pytest.raises(DatasetError, match="needs option path"):
        load_dataset("text", {})


def test_token_data_needs_an_int64_input_and_the_datasets_are_listed():
    data = load_dataset("addition", {"n_samples": 10})
    with pytest.raises(DatasetError, match="gives token ids, but Input node inp asks for "
                                           "real values"):
        fit_to_input(data, "inp", (8,), "float32")
    assert fit_to_input(data, "inp", (8,), "int64") is data
    assert {"addition", "reverse", "text"} <= set(DATASETS)


def test_next_token_loss_is_cross_entropy_at_every_position_and_accuracy_per_token():
    data = load_dataset("addition", {"n_samples": 6})
    vocab, steps = len(data.vocab), data.x.shape[1]
    objective = make_objective("CrossEntropyLoss", torch.nn.CrossEntropyLoss(), "scores",
                               (vocab, steps), data)
    scores = torch.randn(6, vocab, steps, requires_grad=True)
    expected = torch.stack([torch.nn.functional.cross_entropy(scores[:, :, t], data.y[:, t])
                            for t in range(steps)]).mean()
    torch.testing.assert_close(objective.loss(scores, objective.target(data.y)), expected)
    perfect = torch.nn.functional.one_hot(data.y, vocab).movedim(-1, 1).float()
    perfect[0, :, :3] = perfect[0, :, :3].roll(1, dims=0)  # 3 of sample 0's tokens wrong
    assert objective.correct(perfect, data.y) == pytest.approx(6 - 3 / steps)


def test_positions_first_scores_are_refused_with_the_transpose_that_fixes_them():
    data = load_dataset("addition", {"n_samples": 6})
    with pytest.raises(DatasetError, match=r"head gives \[8, 12\] \(positions first\).*"
                                           r"add a Transpose \(dim0=1, dim1=2\)"):
        make_objective("CrossEntropyLoss", torch.nn.CrossEntropyLoss(), "head", (8, 12), data)
    with pytest.raises(DatasetError, match=r"a target at each of \[8\] positions, but head "
                                           r"gives \[12\]; CrossEntropyLoss needs "
                                           r"\[classes, 8\]$"):
        make_objective("CrossEntropyLoss", torch.nn.CrossEntropyLoss(), "head", (12,), data)
    grid = Dataset("grid", torch.zeros(6, 2, 4, 5), torch.zeros(6, 4, 5, dtype=torch.int64),
                   "classification", classes=("a", "b", "c"))  # a class at each pixel
    with pytest.raises(DatasetError, match=r"needs \[classes, 4, 5\]$"):
        make_objective("CrossEntropyLoss", torch.nn.CrossEntropyLoss(), "head", (3, 20), grid)


class Oracle(torch.nn.Module):
    """Scores [N, V, T] that know the answer at the last `right` positions."""

    def __init__(self, y, right):
        super().__init__()
        self.y, self.right = y, right

    def forward(self, x):
        out = torch.zeros(len(x), len(ADDITION_VOCAB), x.shape[1])
        out[:, 0, :] = 1.0  # '0' everywhere…
        for t in range(x.shape[1] - self.right, x.shape[1]):
            out[torch.arange(len(x)), self.y[:, t], t] = 2.0  # …except where it knows
        return out


def test_exact_answers_counts_sums_whose_every_answer_digit_is_right():
    data = load_dataset("addition", {"n_samples": 200})
    assert exact_answers(Oracle(data.y, 3), data.x, data.y, 3) == 1.0
    partly = exact_answers(Oracle(data.y, 2), data.x, data.y, 3)
    first_digit_zero = float((data.y[:, -3] == 0).float().mean())
    assert partly == pytest.approx(first_digit_zero)


def test_the_preview_shows_text_not_token_ids():
    record = preview_training({"dataset": {"name": "addition", "options": {"n_samples": 20}}})
    assert record.kind == "table" and record.header == ("input", "target")
    for source, target in record.x.tolist():
        assert source[1:] == target[:-1] and SUM.match(source + target[-1])
    labelled = preview_training({"dataset": {"name": "reverse",
                                             "options": {"task": "classify"}}})
    assert {row[1] for row in labelled.x.tolist()} == {"wrong", "right"}


def test_a_text_file_needs_an_embedding_row_for_each_of_its_characters(tmp_path):
    (tmp_path / "abc.txt").write_text("the quick brown fox jumps", encoding="utf-8")
    project = layerlab.load_project(EXAMPLES / "tiny-gpt.layerlab.json")
    project.training["dataset"] = {"name": "text", "options": {"context": 8}}
    project.training = with_data(project.training, str(tmp_path / "abc.txt"))
    assert project.training["dataset"]["name"] == "text"  # a file, but not a table
    with pytest.raises(DatasetError, match="TokenPositionEmbedding embed has "
                                           "num_embeddings=12, but dataset text has token "
                                           "ids up to 19; set it to at least 20"):
        Trainer(project)
