"""The main job and its config: runs end to end, writes its files, rejects bad configs."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import deltastats as ds
from deltastats.cli import main
from deltastats.config import Experiment

SMALL = """
name = "small"
width = 16
depth = 3
n_networks = 12
batch = 8
chunk = 5
activation = "relu"
sigma_w = 1.4142135623730951
"""


def test_run_small_config_writes_table_plot_and_metadata(tmp_path, capsys):
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL)
    assert main(["run", str(cfg), "--out", str(tmp_path / "small"), "--quiet"]) == 0
    folder = tmp_path / "small"  # --out is the results folder itself, for run as for sweep
    for name in (
        "per_layer.csv",
        "fig_delta_sq.png",
        "fig_delta_sq.svg",
        "metadata.json",
        "report.md",
        "report.html",
        "comparison.tex",
        "fig_z_qq.png",
    ):
        assert (folder / name).exists(), name
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["config"]["width"] == 16 and meta["seed"] == 0
    assert "numpy" in meta["versions"] and "numba" in meta["versions"]
    assert isinstance(meta["numerics"]["use_compiled_kernels"], bool) and meta["numerics"]["blas"]
    assert "layer" in capsys.readouterr().out
    table = pd.read_csv(folder / "per_layer.csv")
    assert {"prediction", "verdict", "ci_low", "ci_high"} <= set(table.columns)
    html = (folder / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4 and "Monte Carlo vs theory" in html


def test_run_table_matches_a_direct_computation():
    """The run's delta_sq is the mean over networks of per-network averages (the CLT row)."""
    from deltastats.runner import run_experiment

    exp = Experiment.from_dict(dict(width=8, depth=2, n_networks=6, batch=4, chunk=4))
    table = run_experiment(exp, None, progress=False).table
    net = exp.net()
    params = net.sample(6, 0)
    x = exp.input_law().sample(8, 4, 0, n_networks=6)
    y = exp.target_law().sample(x, 1, 0)
    trace = ds.backprop(net, params, x, y)
    for l, d in enumerate(trace.delta, start=1):
        row = table[(table.layer == l) & (table.statistic == "delta_sq")].iloc[0]
        per_net = np.mean(d**2, axis=(1, 2))
        np.testing.assert_allclose(row.estimate, per_net.mean(), rtol=1e-12)
        np.testing.assert_allclose(row.std_error, per_net.std(ddof=1) / np.sqrt(6), rtol=1e-10)


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("sigmaw = 1.0\n")
    assert main(["run", str(cfg), "--out", str(tmp_path)]) == 2
    assert "did you mean 'sigma_w'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="n_networks"):
        Experiment(n_networks=0)
    with pytest.raises(ValueError, match="sigma_w"):
        Experiment(sigma_w="big")
    with pytest.raises(ValueError, match="unknown inputs"):
        Experiment(inputs="cauchy")


def test_python_dash_m_help():
    out = subprocess.run(
        [sys.executable, "-m", "deltastats", "run", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "examples" in out.stdout
