"""Issue 13, items 11, 12 and 14: bad arguments are one-line errors naming the argument, before
any work; the memory pre-flight; report.md escapes user text; the pyarrow floor."""

import tomllib
from pathlib import Path

import numpy as np
import pytest

import deltastats as ds
from deltastats.stats.design import check_memory, pass_bytes
from deltastats.workflow.config import Experiment

NET = ds.MLP((3, 4, 1))
PARAMS = NET.sample(2, 0)
X, Y = np.zeros((2, 3)), np.zeros((2, 1))


# -- item 12: the public API ----------------------------------------------------------------------


def test_backprop_with_no_inputs_is_a_value_error_not_a_zero_division():
    with pytest.raises(ValueError, match=r"^x has no inputs \(B = 0"):
        ds.backprop(NET, PARAMS, np.zeros((0, 3)), np.zeros((0, 1)))
    with pytest.raises(ValueError, match=r"^x has no inputs"):
        ds.backprop(NET, PARAMS, np.zeros((2, 0, 3)), np.zeros((2, 0, 1)))


@pytest.mark.parametrize("name", ["sigma_w", "sigma_b", "mu_w", "mu_b"])
@pytest.mark.parametrize("value", ["12", "3", "1.0", ["1.0", 2.0], [True, 1.0], None, {"a": 1}])
def test_mlp_scales_are_never_parsed_from_strings_or_bools(name, value):
    with pytest.raises(TypeError, match=f"^{name} must be a number or a sequence of numbers"):
        ds.MLP((3, 4, 1), **{name: value})


def test_mlp_scales_accept_numbers_sequences_and_arrays():
    net = ds.MLP((3, 4, 1), sigma_w=np.array([1.0, 2.0]), mu_w=(0.5, 0), sigma_b=np.float32(0.1))
    assert net.layer_sigma_w == (1.0, 2.0) and net.layer_mu_w == (0.5, 0.0)
    assert net.layer_sigma_b == (float(np.float32(0.1)),) * 2
    with pytest.raises(ValueError, match="one value per weight layer"):
        ds.MLP((3, 4, 1), sigma_w=[1.0, 2.0, 3.0])


@pytest.mark.parametrize("value", [None, "a", [0.1], True])
def test_weight_decay_of_the_wrong_kind_names_it(value):
    with pytest.raises(TypeError, match="^weight_decay must be a real number"):
        ds.backprop(NET, PARAMS, X, Y, weight_decay=value)
    with pytest.raises(TypeError, match="^weight_decay must be a real number"):
        ds.estimate(NET, n_networks=2, batch=1, weight_decay=value)


def test_dtype_banana_names_dtype():
    with pytest.raises(ValueError, match="^dtype must be np.float32 or np.float64, got 'banana'"):
        NET.sample(2, 0, dtype="banana")
    with pytest.raises(ValueError, match="^dtype must be np.float32 or np.float64"):
        ds.estimate(NET, n_networks=2, batch=1, dtype="banana")
    with pytest.raises(ValueError, match="^dtype must be np.float32 or np.float64"):
        NET.sample(2, 0, dtype=np.int64)


def test_keep_layers_are_ints_not_truncated_floats():
    with pytest.raises(ValueError, match="^keep_layers entries must be an int, got 1.7"):
        ds.backprop(NET, PARAMS, X, Y, keep_layers=[1.7])
    with pytest.raises(TypeError, match="^keep_layers must be an iterable"):
        ds.backprop(NET, PARAMS, X, Y, keep_layers=1)
    trace = ds.backprop(NET, PARAMS, X, Y, keep_layers=[np.int64(2)])
    assert trace.z[0] is None and trace.z[1].shape == (2, 2, 1)


@pytest.mark.parametrize("value", [True, "0.1", [0.1]])
def test_until_rel_error_must_be_a_number(value):
    with pytest.raises(TypeError, match="^until_rel_error must be a real number"):
        ds.stream(NET, n_networks=2, batch=1, until_rel_error=value)


def test_backprop_names_a_wrong_net_and_a_ragged_x():
    with pytest.raises(ValueError, match="^net must be an MLP, got int"):
        ds.backprop(5, PARAMS, X, Y)
    with pytest.raises(ValueError, match="^x must be a numeric array"):
        ds.backprop(NET, PARAMS, [[1.0, 2.0, 3.0], [1.0]], Y)


# -- item 11: the config, the run and the memory pre-flight --------------------------------------


@pytest.mark.parametrize(
    "values,match",
    [
        ({"name": 5}, "^name must be a string"),
        ({"name": "../up"}, "^name must be a plain folder name"),
        ({"targets": "one_hot"}, "^targets = 'one_hot' needs an output width >= 2"),
        ({"q0": -1.0}, "^q0 must be > 0"),
        ({"inputs": {"law": "gaussian"}}, "^inputs must be a name"),
        ({"widths": 5}, "^widths must be a list of ints"),
        ({"widths": [3, 0, 1]}, "^widths entries must be a positive int"),
        ({"weight_decay": -1.0}, "^weight_decay must be >= 0"),
        ({"width": 10**6}, "lower width, depth or batch"),
    ],
)
def test_experiment_rejects_bad_values_before_any_work(values, match):
    with pytest.raises(ValueError, match=match):
        Experiment.from_dict({"depth": 2, "width": 4, **values})


def test_one_hot_and_cross_entropy_pass_with_a_fitting_output_width():
    exp = Experiment(width=4, depth=2, output_width=3, targets="one_hot", loss="cross_entropy")
    assert exp.target_law().n_classes == 3
    Experiment(width=4, depth=2, output_width=2, targets="constant", target_value=0.5,
               loss="cross_entropy")  # fmt: skip


def test_pass_bytes_is_the_closed_form_count():
    # widths (3, 4, 2): n_w = 12 + 8, n_b = 6; parameters and gradients 2·(n_w + n_b) floats;
    # x, y, loss and z, h, δ of every layer B·(n_0 + n_L + 3·n_b + 1) floats.
    net = ds.MLP((3, 4, 2))
    per_net = 2 * (20 + 6) * 8 + 5 * (3 + 2 + 18 + 1) * 8
    assert pass_bytes(net, 5, 1) == per_net
    assert pass_bytes(net, 5, 7) == 7 * per_net
    # float32 halves the floats and adds the float64 draw of the largest weight matrix
    assert pass_bytes(net, 5, 1, np.float32) == per_net // 2 + 8 * 12


def test_memory_preflight_names_the_knob_to_lower():
    net = ds.MLP((100, 100, 1))
    one = pass_bytes(net, 16, 1)
    with pytest.raises(ValueError, match=r"^chunk = 64 networks .* lower chunk \(or n_networks\)"):
        check_memory(net, 16, 64, available=10 * one)
    check_memory(net, 16, 10, available=10 * one)  # fits exactly
    with pytest.raises(ValueError, match="lower width, depth or batch"):
        check_memory(net, 16, 1, available=one - 1)
    with pytest.raises(ValueError, match="lower chunk"):
        ds.estimate(ds.MLP((1000, 1000, 1)), n_networks=10**5, chunk=10**5, batch=4)


def test_run_checks_its_output_folder_before_computing(tmp_path, capsys, monkeypatch):
    import deltastats.workflow.runner as runner
    from deltastats.cli import main

    def no_work(*a, **k):
        raise AssertionError("the experiment was computed before the folder was checked")

    monkeypatch.setattr(runner, "analyse", no_work)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = tmp_path / "c.toml"
    cfg.write_text("width = 4\ndepth = 2\nn_networks = 4\n")
    assert main(["run", str(cfg), "--out", str(blocker), "--quiet"]) == 2
    assert "cannot write to the output folder" in capsys.readouterr().err
    cfg.write_text("name = 5\nwidth = 4\n")
    assert main(["run", str(cfg), "--out", str(tmp_path), "--quiet"]) == 2
    assert "name must be a string" in capsys.readouterr().err
    assert main(["run", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    cfg.write_text("width = [")
    assert main(["run", str(cfg), "--out", str(tmp_path)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_run_removes_its_leftover_temporaries(tmp_path):
    from deltastats.workflow.runner import _writable_folder

    folder = tmp_path / "x"
    folder.mkdir()
    left = folder / "metadata.jsonab12.tmp"
    mine = folder / "draft.tmp"
    left.write_text("half")
    mine.write_text("mine")
    _writable_folder(folder)
    assert not left.exists() and mine.exists()


# -- item 14 --------------------------------------------------------------------------------------


def test_pyarrow_floor_excludes_the_vulnerable_release():
    from packaging.requirements import Requirement

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    (spec,) = [Requirement(d).specifier for d in deps if Requirement(d).name == "pyarrow"]
    assert "14.0.0" not in spec and "14.0.1" in spec


def test_report_markdown_escapes_name_and_description(tmp_path):
    from deltastats.workflow.report import write_report
    from deltastats.workflow.sweeps import run_sweep

    cfg = {
        "name": "x<img src=1 onerror=alert(1)>",
        "description": "<script>alert('pwned')</script> & more",
        "base": {"depth": 2, "width": 4, "n_networks": 4, "batch": 2},
        "grid": {"sigma_w2": [1.0, 2.0]},
    }
    run_sweep(cfg, out=tmp_path, jobs=1, progress=False)
    md = write_report(tmp_path).markdown.read_text()
    head = md.split("## Configuration")[0]
    assert "<script>" not in head and "<img" not in head
    assert "&lt;script&gt;alert('pwned')&lt;/script&gt; &amp; more" in head
    assert "# deltastats report: x&lt;img src=1 onerror=alert(1)&gt;" in head
