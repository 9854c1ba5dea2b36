"""Labelled data: inputs.from_arrays(X, Y) with targets.paired, and TOML inputs = "data"."""

import warnings

import numpy as np
import pytest

import deltastats as ds
from deltastats import inputs, targets
from deltastats.workflow.config import Experiment


def _data(rng, N=50, n0=3):
    """Rows with distinct values and a label that is a known function of the row."""
    X = rng.standard_normal((N, n0))
    w = np.array([1.0, -2.0, 0.5])[:n0]
    return X, X @ w, w


def test_rows_keep_their_labels_whatever_the_chunking():
    rng = np.random.default_rng(0)
    X, y, w = _data(rng)
    law = inputs.from_arrays(X, y)
    x = law.sample(3, 7, seed=4, n_networks=10)
    # The same rows as from_array(X): the labels do not change which inputs are drawn.
    np.testing.assert_array_equal(x, inputs.from_array(X).sample(3, 7, seed=4, n_networks=10))
    lab = targets.paired(law).sample(x, 1, seed=4)
    assert lab.shape == (10, 7, 1)
    np.testing.assert_allclose(lab[..., 0], x @ w, rtol=1e-14)
    # Networks 6 … 9 drawn on their own give the same rows and labels.
    x6 = law.sample(3, 7, seed=4, n_networks=4, start=6)
    np.testing.assert_array_equal(x6, x[6:])
    np.testing.assert_array_equal(targets.paired(law).sample(x6, 1, seed=4, start=6), lab[6:])
    # Shared inputs (B, n0) pair too; float32 inputs keep float32 targets.
    xs = law.sample(3, 5, seed=1)
    np.testing.assert_allclose(targets.paired(law).sample(xs, 1, seed=1)[:, 0], xs @ w)
    x32 = law.sample(3, 5, seed=1, n_networks=2, dtype=np.float32)
    assert targets.paired(law).sample(x32, 1, seed=1).dtype == np.float32


def test_class_indices_become_one_hot_and_two_dim_labels_are_kept():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 2))
    classes = np.arange(30) % 3
    law = inputs.from_arrays(X, classes)
    x = law.sample(2, 8, seed=0, n_networks=3)
    y = targets.paired(law).sample(x, 3, seed=0)
    rows = np.array([[np.flatnonzero((X == r).all(1))[0] for r in xm] for xm in x])
    np.testing.assert_array_equal(y.argmax(-1), classes[rows])
    assert np.all(y.sum(-1) == 1.0)
    Y2 = np.stack([X[:, 0], 2 * X[:, 1]], axis=1)
    y2 = targets.paired(inputs.from_arrays(X, Y2)).sample(x, 2, seed=0)
    np.testing.assert_array_equal(y2, Y2[rows])


def test_estimate_uses_each_rows_label_by_default():
    rng = np.random.default_rng(2)
    X, y, _ = _data(rng, N=40)
    net = ds.MLP((3, 6, 1), activation="tanh")
    law = inputs.from_arrays(X, 3.0 * y)
    kw = dict(n_networks=60, batch=4, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ds.FewNetworksWarning)
        default = ds.estimate(net, law, **kw)
        explicit = ds.estimate(net, law, targets.paired(law), chunk=7, **kw)
        zeros = ds.estimate(net, law, targets.zeros(), **kw)
    np.testing.assert_array_equal(
        default.table["estimate"].to_numpy(), explicit.table["estimate"].to_numpy()
    )
    a, b = default.result("delta_sq", 2).estimate, zeros.result("delta_sq", 2).estimate
    assert a > 2 * b  # the labels (std ≈ 3·2.3) dominate the output error


def test_bad_labelled_data_is_refused_with_one_line_errors():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((10, 2))
    cases = [
        (lambda: inputs.from_arrays(X, np.zeros(9)), r"Y must have shape \(N,\) or \(N, n_L\)"),
        (lambda: inputs.from_arrays(X[0], np.zeros(10)), r"X must have shape \(N, n0\)"),
        (lambda: inputs.from_arrays(X, np.full(10, np.nan)), r"Y contains NaN or inf"),
        (lambda: inputs.from_arrays(X, None), r"Y is missing"),
        (lambda: inputs.from_arrays(X, np.array(["a"] * 10)), r"Y must be a numeric array"),
        (lambda: targets.paired(inputs.from_array(X)), r"source must be the input law"),
    ]
    law = inputs.from_arrays(X, np.arange(10) % 2 + 0.5)
    x = law.sample(2, 3, seed=0, n_networks=2)
    cases += [
        (lambda: targets.paired(law).sample(x, 2, seed=0), r"class indices 0 … 1"),
        (lambda: targets.paired(law).sample(x, 1, seed=1), r"not the batch that"),
        (lambda: targets.paired(law).sample(x, 1, seed=0, start=3), r"not the batch that"),
        (lambda: law.sample(3, 2, seed=0), r"X has 2 columns but the network's n_0 is 3"),
    ]
    for fn, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            fn()
        assert "\n" not in str(info.value)


# -- TOML --------------------------------------------------------------------------------------
def _write_config(folder, body):
    path = folder / "exp.toml"
    path.write_text("width = 4\ndepth = 2\ninput_width = 3\nn_networks = 8\nbatch = 2\n" + body)
    return path


@pytest.mark.parametrize("kind", ["npz", "npy", "csv"])
def test_toml_data_file_relative_to_the_config(tmp_path, monkeypatch, kind):
    rng = np.random.default_rng(4)
    X, y, w = _data(rng, N=20)
    sub = tmp_path / "configs"
    (sub / "data").mkdir(parents=True)
    table = np.column_stack([X, y])
    if kind == "npz":
        np.savez(sub / "data" / "d.npz", X=X, Y=y)
    elif kind == "npy":
        np.save(sub / "data" / "d.npy", table)
    else:
        text = "x0,x1,x2,y\n" + "\n".join(",".join(repr(float(v)) for v in row) for row in table)
        (sub / "data" / "d.csv").write_text(text)
    path = _write_config(sub, f'inputs = "data"\ndata = "data/d.{kind}"\ntargets = "data"\n')
    monkeypatch.chdir(tmp_path)  # not the config's folder: the path is relative to the file
    exp = Experiment.from_toml(path)
    law = exp.input_law()
    assert isinstance(law, inputs.FromArrays) and isinstance(exp.target_law(), targets.Paired)
    x = law.sample(3, 5, exp.seed, n_networks=4)
    yy = exp.target_law().sample(x, 1, exp.seed)
    np.testing.assert_allclose(yy[..., 0], x @ w, rtol=1e-12)
    # Without targets = "data" the file's rows are inputs only, the targets another law.
    exp2 = Experiment.from_toml(_write_config(sub, f'inputs = "data"\ndata = "data/d.{kind}"\n'))
    assert isinstance(exp2.input_law(), inputs.FromArray)
    assert exp2.to_dict()["data"].endswith(f"d.{kind}")


def test_toml_data_is_checked_before_any_work(tmp_path):
    X = np.ones((5, 3))
    np.savez(tmp_path / "nolabels.npz", X=X)
    np.save(tmp_path / "wide.npy", np.ones((5, 7)))
    (tmp_path / "words.csv").write_text("a,b,c\n1,x,3\n")
    (tmp_path / "d.txt").write_text("1,2,3\n")
    cases = [
        ('inputs = "data"\n', r"inputs = 'data' needs data ="),
        ('inputs = "data"\ndata = "missing.npz"\n', r"data file .*missing.npz' does not exist"),
        ('inputs = "data"\ndata = "d.txt"\n', r"must be .npz, .npy or .csv"),
        ('data = "wide.npy"\n', r"data = .* needs inputs = 'data'"),
        ('targets = "data"\n', r"targets = 'data' needs inputs = 'data'"),
        ('inputs = "data"\ndata = "wide.npy"\n', r"has 7 columns; expected n_0 = 3"),
        ('inputs = "data"\ndata = "nolabels.npz"\ntargets = "data"\n', r"has no labels"),
        ('inputs = "data"\ndata = "words.csv"\n', r"'words.csv' is not numeric"),
        ('inputs = "digits.npy"\n', r"unknown inputs 'digits.npy'; valid: .*data"),
    ]
    for body, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            Experiment.from_toml(_write_config(tmp_path, body))
        assert "\n" not in str(info.value)


def test_configs_without_data_keep_their_dict_and_digest():
    # Sweep points are seeded from to_dict(): a config that does not use a data file must not
    # gain a key (its seeds would move).
    assert "data" not in Experiment().to_dict()
    assert Experiment.from_dict(Experiment().to_dict()) == Experiment()
