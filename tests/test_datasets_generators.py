"""The generated point sets, the CSV reader and the dataset plumbing, against the geometry and
numbers each promises (noise 0 gives the exact shapes)."""

import math

import numpy as np
import pytest
import torch

from layerlab.core.datasets import (
    Dataset,
    DatasetError,
    fit_to_input,
    load_dataset,
    resolve_options,
    split_indices,
)


def exact(name, n=400, seed=0):
    return load_dataset(name, {"n_samples": n, "noise": 0.0, "seed": seed})


def test_the_spiral_has_two_arms_half_a_turn_apart_radius_at_most_one():
    d = exact("spiral", 401)
    assert d.x.dtype == torch.float32 and d.y.dtype == torch.int64
    assert d.y.bincount().tolist() == [200, 201]
    r = d.x.double().norm(dim=1)
    assert float(r.max()) <= 1.0 and float(r.max()) > 0.95 and float(r.min()) < 0.1
    # x = r·sin(θ), y = r·cos(θ) with θ = 1.75·2π·r + kπ
    theta = 1.75 * 2 * math.pi * r + d.y.double() * math.pi
    expected = torch.stack([r * torch.sin(theta), r * torch.cos(theta)], 1)
    torch.testing.assert_close(d.x.double(), expected, atol=1e-5, rtol=0)
    # even density along the arm: r² is uniform, so about half the points have r² < 0.5
    assert abs(float((r ** 2 < 0.5).double().mean()) - 0.5) < 0.08


def test_circles_are_an_outer_unit_ring_of_class_0_and_an_inner_half_ring_of_class_1():
    d = exact("circles", 300)
    r = d.x.norm(dim=1)
    assert d.y.bincount().tolist() == [150, 150]
    torch.testing.assert_close(r[d.y == 0], torch.ones(150), atol=1e-6, rtol=0)
    torch.testing.assert_close(r[d.y == 1], torch.full((150,), 0.5), atol=1e-6, rtol=0)
    angles = torch.atan2(d.x[:, 1], d.x[:, 0])
    assert float(angles.min()) < -2.5 and float(angles.max()) > 2.5  # all the way round


def test_xor_is_class_1_where_both_coordinates_share_a_sign():
    d = exact("xor", 500)
    assert float(d.x.abs().max()) <= 1.0 and float(d.x.min()) < -0.9
    assert torch.equal(d.y, (d.x[:, 0] * d.x[:, 1] > 0).long())
    assert 150 < int(d.y.sum()) < 350


def test_gaussian_clouds_centre_on_plus_and_minus_a_half_spread_by_the_noise():
    d = load_dataset("gaussian", {"n_samples": 4000, "noise": 0.2, "seed": 1})
    assert d.y.bincount().tolist() == [2000, 2000]
    for label, centre in ((1, 0.5), (0, -0.5)):
        pts = d.x[d.y == label].double()
        torch.testing.assert_close(pts.mean(0), torch.full((2,), centre, dtype=torch.float64),
                                   atol=0.02, rtol=0)
        torch.testing.assert_close(pts.std(0), torch.full((2,), 0.2, dtype=torch.float64),
                                   atol=0.02, rtol=0)


def test_moons_are_the_upper_unit_half_circle_and_the_shifted_lower_one():
    d = exact("moons", 300)
    upper, lower = d.x[d.y == 0].double(), d.x[d.y == 1].double()
    torch.testing.assert_close(upper.norm(dim=1), torch.ones(150, dtype=torch.float64),
                               atol=1e-6, rtol=0)
    assert float(upper[:, 1].min()) >= 0
    centre = torch.tensor([1.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close((lower - centre).norm(dim=1),
                               torch.ones(150, dtype=torch.float64), atol=1e-6, rtol=0)
    assert float(lower[:, 1].max()) <= 0.5
    # the angle covers the whole [0, π]: both ends of each half circle are reached
    assert float(upper[:, 0].min()) < -0.95 and float(upper[:, 0].max()) > 0.95
    assert float(lower[:, 0].min()) < 0.05 and float(lower[:, 0].max()) > 1.95


def test_points_are_shuffled_and_the_noise_is_gaussian_with_the_asked_spread():
    clean, noisy = exact("circles", 2000, 5), load_dataset(
        "circles", {"n_samples": 2000, "noise": 0.05, "seed": 5})
    assert clean.y[:20].tolist() != [0, 1] * 10  # not in generation order
    jitter = noisy.x.norm(dim=1) - torch.where(noisy.y == 0, 1.0, 0.5)
    assert abs(float(jitter.std()) - 0.05) < 0.005 and abs(float(jitter.mean())) < 0.005


def test_options_are_checked_and_filled_with_their_defaults():
    assert resolve_options("moons", {"seed": 2}) == {"n_samples": 1000, "noise": 0.1,
                                                     "seed": 2}
    assert resolve_options("spiral", {})["noise"] == 0.05
    assert resolve_options("gaussian", {})["noise"] == 0.3
    with pytest.raises(DatasetError) as info:
        resolve_options("xor", {"n_samples": 3})
    assert str(info.value).startswith("dataset xor: option n_samples ")
    with pytest.raises(DatasetError) as info:
        resolve_options("digits", {"x": 1})
    assert str(info.value) == "dataset digits has no option 'x' (its options: none)"
    assert len(load_dataset("xor")) == 1000


def write(tmp_path, text):
    path = tmp_path / "data.csv"
    path.write_text(text, encoding="utf-8")
    return {"path": str(path)}


def test_csv_numbers_as_classes_are_ordered_by_value(tmp_path):
    d = load_dataset("csv", write(tmp_path, "a, b ,label\n1,2,10\n3,4,9\n5,6,10\n7,8,2\n"))
    assert d.task == "classification" and d.classes == ("2", "9", "10")
    assert d.y.tolist() == [2, 1, 2, 0] and d.x.dtype == torch.float32
    assert d.x.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]


def test_csv_target_column_in_the_middle_and_the_task_asked_for(tmp_path):
    opts = write(tmp_path, "a,y,b\n1,0.5,2\n3,1.5,4\n")
    d = load_dataset("csv", {**opts, "target": "y"})
    assert d.task == "regression" and d.x.tolist() == [[1, 2], [3, 4]]
    assert d.y.dtype == torch.float32 and d.y.tolist() == [[0.5], [1.5]]
    forced = load_dataset("csv", {**opts, "target": "a", "task": "regression"})
    assert forced.y.tolist() == [[1.0], [3.0]]
    classes = load_dataset("csv", {**opts, "target": "y", "task": "classification"})
    assert classes.classes == ("0.5", "1.5") and classes.y.tolist() == [0, 1]


def test_csv_whole_numbers_are_classes_up_to_twenty_distinct_values(tmp_path):
    rows = "".join(f"{i},{i % 20}\n" for i in range(100))
    assert load_dataset("csv", write(tmp_path, "a,t\n" + rows)).task == "classification"
    rows = "".join(f"{i},{i % 21}\n" for i in range(102))
    assert load_dataset("csv", write(tmp_path, "a,t\n" + rows)).task == "regression"


def test_csv_refusals_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(DatasetError, match="the csv dataset needs option path"):
        load_dataset("csv", {"path": ""})
    opts = write(tmp_path, "a,b\n")
    with pytest.raises(DatasetError) as info:
        load_dataset("csv", opts)
    assert str(info.value) == f"{opts['path']} needs a header row and at least one data row"
    opts = write(tmp_path, "a,label\n1,cat\n2,dog\n")
    with pytest.raises(DatasetError) as info:
        load_dataset("csv", {**opts, "task": "regression"})
    assert str(info.value) == (f"{opts['path']}: target column label holds text, so it "
                               "cannot be a regression target")
    (tmp_path / "bin.csv").write_bytes(b"a,b\n\xff\xfe,1\n")
    with pytest.raises(DatasetError, match=r"bin\.csv is not a UTF-8 text file"):
        load_dataset("csv", {"path": str(tmp_path / "bin.csv")})
    with pytest.raises(DatasetError, match=r"cannot read .*missing\.csv: No such file"):
        load_dataset("csv", {"path": str(tmp_path / "missing.csv")})


def test_csv_blank_rows_and_a_byte_order_mark_are_ignored(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffx,label\n1,a\n , \n\n2,b\n".encode())
    d = load_dataset("csv", {"path": str(path)})
    assert d.x.tolist() == [[1.0], [2.0]] and d.classes == ("a", "b")


def test_fitting_reshapes_both_splits_and_leaves_a_fitting_dataset_alone():
    x, tx = torch.arange(24.0).reshape(2, 12), torch.arange(12.0).reshape(1, 12)
    d = Dataset("imgs", x, torch.tensor([0, 1]), "classification", ("a", "b"), tx,
                torch.tensor([1]), shapes=((3, 2, 2),))
    assert fit_to_input(d, "in", (12,), "float32") is d
    fitted = fit_to_input(d, "in", (3, 2, 2), "float32")
    assert fitted.x.shape == (2, 3, 2, 2) and fitted.test_x.shape == (1, 3, 2, 2)
    assert torch.equal(fitted.x.reshape(2, 12), x) and fitted.y is d.y
    no_test = Dataset("imgs", x, torch.tensor([0, 1]), "classification", shapes=((3, 4),))
    assert fit_to_input(no_test, "in", (3, 4), "float32").test_x is None
    with pytest.raises(DatasetError, match="Input node tok asks for int64 token ids, but "
                                           "dataset imgs gives real values"):
        fit_to_input(d, "tok", (12,), "int64")


@pytest.mark.parametrize("n, split, n_val", [(10, 0.25, 2), (10, 0.35, 4), (3, 0.1, 1),
                                             (5, 0.0, 0), (7, 0.5, 4)])
def test_the_split_holds_out_the_rounded_share_and_at_least_one_row(n, split, n_val):
    train, val = split_indices(n, split, seed=1)
    assert len(val) == n_val and len(train) == n - n_val
    assert sorted(train.tolist() + val.tolist()) == list(range(n))
    assert train.tolist() == sorted(train.tolist()) and val.tolist() == sorted(val.tolist())
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    assert set(val.tolist()) == set(order[:n_val].tolist())


def test_generated_data_matches_numpy_driven_by_hand():
    d = load_dataset("xor", {"n_samples": 6, "noise": 0.1, "seed": 9})
    rng = np.random.default_rng(9)
    x = rng.uniform(-1, 1, (6, 2))
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
    x = x + rng.normal(0, 0.1, x.shape)
    order = rng.permutation(6)
    torch.testing.assert_close(d.x, torch.tensor(x[order], dtype=torch.float32))
    assert d.y.tolist() == y[order].tolist()
