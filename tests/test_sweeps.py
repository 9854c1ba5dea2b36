"""Sweeps: parallel = serial bit for bit, kill -9 and resume, failing points, bad configs."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from deltastats.engine import usable_cpus
from deltastats.sweeps import load_sweep, point_seed, run_sweep

CONFIG = {
    "name": "tiny",
    "seed": 3,
    "base": {"depth": 3, "n_networks": 8, "batch": 4, "chunk": 3, "activation": "tanh"},
    "grid": {"width": [4, 8], "sigma_w2": [1.0, 2.0]},
}


def test_jobs_two_equals_jobs_one_exactly(tmp_path):
    a = run_sweep(CONFIG, out=tmp_path / "a", jobs=1, progress=False)
    b = run_sweep(CONFIG, out=tmp_path / "b", jobs=2, progress=False)
    n_stats = a.table["statistic"].nunique()
    assert len(a.table) == 4 * 3 * n_stats and n_stats >= 19  # points × layers × statistics
    pd.testing.assert_frame_equal(a.table, b.table)
    assert {"width", "sigma_w2", "point", "point_seed"} <= set(a.table.columns)
    assert (tmp_path / "a" / "results.parquet").exists()
    assert (tmp_path / "a" / "metadata.json").exists()


def _threads_table(exp):
    """A point that reports how many threads the engine would use inside its worker."""
    from deltastats._parallel import default_threads as _default_threads

    return pd.DataFrame({"threads": [_default_threads()], "pid": [os.getpid()]})


@pytest.mark.skipif(usable_cpus() < 2, reason="needs 2 cores")
def test_jobs_is_a_core_budget(tmp_path):
    one_point = dict(CONFIG, grid={"width": [4]})
    # one point, two cores: it runs in this process with two threads …
    t = run_sweep(one_point, out=tmp_path / "a", jobs=2, progress=False, point_fn=_threads_table)
    assert t.table["threads"].tolist() == [2] and t.table["pid"].tolist() == [os.getpid()]
    # … and --jobs 1 is one core, whatever the number of points
    t = run_sweep(CONFIG, out=tmp_path / "b", jobs=1, progress=False, point_fn=_threads_table)
    assert set(t.table["threads"]) == {1} and set(t.table["pid"]) == {os.getpid()}
    # four points, two cores: two single-threaded worker processes
    t = run_sweep(CONFIG, out=tmp_path / "c", jobs=2, progress=False, point_fn=_threads_table)
    assert set(t.table["threads"]) == {1} and os.getpid() not in set(t.table["pid"])
    meta = json.loads((tmp_path / "c" / "metadata.json").read_text())
    assert (meta["jobs"], meta["workers"], meta["threads_per_worker"]) == (2, 2, 1)


def test_point_seed_depends_on_parameters_not_position():
    s1 = load_sweep(CONFIG)
    reordered = dict(CONFIG, grid={"sigma_w2": [2.0, 1.0], "width": [8, 4]})
    s2 = load_sweep(reordered)
    assert sorted(e.seed for e in s1.experiments) == sorted(e.seed for e in s2.experiments)
    assert len({e.seed for e in s1.experiments}) == 4
    assert point_seed(3, {"a": 1}) != point_seed(4, {"a": 1})


def _boom(exp):
    from deltastats.runner import analyse

    if exp.width == 8 and exp.sigma_w > 1.2:
        raise RuntimeError("this point is broken on purpose")
    return analyse(exp)


def test_failing_point_is_recorded_and_others_finish(tmp_path):
    res = run_sweep(CONFIG, out=tmp_path, jobs=2, progress=False, point_fn=_boom)
    assert len(res.failed) == 1 and "broken on purpose" in next(iter(res.failed.values()))
    assert res.table["point"].nunique() == 3
    summary = pd.read_csv(tmp_path / "points.csv")
    assert (summary["status"] == "failed").sum() == 1


SLOW = """
name = "slow"
seed = 1
[base]
depth = 4
width = 64
n_networks = 160
batch = 32
chunk = 8
[grid]
sigma_w2 = [1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 2.4]
"""


@pytest.mark.slow
def test_kill_minus_nine_then_resume_gives_the_uninterrupted_table(tmp_path):
    cfg = tmp_path / "slow.toml"
    cfg.write_text(SLOW)
    part = tmp_path / "part"
    cmd = [sys.executable, "-m", "deltastats", "sweep", str(cfg), "--out", str(part), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    points = part / "points"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(points.glob("*.parquet"))) < 2:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in points.glob("*.parquet")}
    assert 2 <= len(done_before) < 8, "the sweep should have been killed part-way"
    resumed = run_sweep(cfg, out=part, resume=True, progress=False)
    assert len(resumed.ran) == 8 - len(done_before)
    for name, mtime in done_before.items():  # finished points were not re-run
        assert (points / name).stat().st_mtime_ns == mtime
    full = run_sweep(cfg, out=tmp_path / "full", progress=False)
    pd.testing.assert_frame_equal(resumed.table, full.table)
    np.testing.assert_array_equal(
        pd.read_parquet(part / "results.parquet")["estimate"], full.table["estimate"]
    )


def test_rerun_without_resume_refuses_to_clobber(tmp_path):
    run_sweep(CONFIG, out=tmp_path, progress=False)
    with pytest.raises(ValueError, match="--resume"):
        run_sweep(CONFIG, out=tmp_path, progress=False)
    again = run_sweep(CONFIG, out=tmp_path, resume=True, progress=False)
    assert again.ran == ()


@pytest.mark.parametrize(
    "change,match",
    [
        ({"grid": {"widht": [4]}}, "did you mean 'width'"),
        ({"bsae": {}}, "did you mean 'base'"),
        ({"grid": {"width": []}}, "empty"),
        ({"grid": {"width": 4}}, "must be a list"),
        ({"grid": {"width": ["wide"]}}, "width must be a positive int"),
        ({"grid": {"sigma_w2": [-1.0]}}, "sigma_w2"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_bad_configs_fail_before_any_work(tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        run_sweep({**CONFIG, **change}, out=tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="cannot write"):
        run_sweep(CONFIG, out=blocker / "sub", progress=False)


@pytest.mark.slow
def test_dask_local_cluster_equals_local_run(tmp_path):
    distributed = pytest.importorskip("distributed")
    local = run_sweep(CONFIG, out=tmp_path / "local", progress=False)
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        remote = run_sweep(
            CONFIG, out=tmp_path / "dask", progress=False, scheduler=cluster.scheduler_address
        )
    pd.testing.assert_frame_equal(local.table, remote.table)
    assert len(remote.ran) == 4


def test_paired_sweep_shares_random_streams_so_the_half_is_exactly_a_factor_four(tmp_path):
    cfg = {
        "name": "paired",
        "seed": 5,
        "paired": True,
        "base": {
            "depth": 3,
            "width": 8,
            "n_networks": 6,
            "batch": 4,
            "targets": "gaussian",
            "target_value": 1.0,
        },
        "grid": {"loss": ["mse", "sum_squares"]},
    }
    t = run_sweep(cfg, out=tmp_path, progress=False).table
    sq = t[t.statistic == "delta_sq"].pivot_table(index="layer", columns="loss", values="estimate")
    np.testing.assert_allclose(sq["sum_squares"] / sq["mse"], 4.0, rtol=1e-12)
    with pytest.raises(ValueError, match="paired"):
        load_sweep({**cfg, "paired": "yes"})


def test_square_readout_output_width_is_the_width():
    """``output_width = "width"`` keeps n_L = n across a grid over width (a Parquet column of
    mixed values 1 and "width" is stored as text)."""
    from deltastats.workflow.config import Experiment

    assert Experiment(width=8, depth=3, output_width="width").layer_widths() == (8, 8, 8, 8)
    assert Experiment(width=8, depth=3).layer_widths()[-1] == 1
    with pytest.raises(ValueError, match='output_width must be a positive int or "width"'):
        Experiment(output_width="square")
    with pytest.raises(ValueError, match="output_width"):
        Experiment(output_width=0)


def test_a_sweep_is_one_multiple_testing_family():
    """p = 2·10⁻⁴ disagrees alone at α = 0.01 but agrees among 100 judged rows (Holm: ×100);
    rows without a verdict are neither adjusted nor counted."""
    from statsmodels.stats.multitest import multipletests

    from deltastats.workflow.compare import family_verdicts

    p = np.r_[2e-4, np.full(99, 0.5), np.nan]
    verdict = ["disagrees"] + ["agrees"] * 99 + ["no verdict"]
    t = pd.DataFrame({"p_value": p, "p_adjusted": p, "verdict": verdict})
    out = family_verdicts(t, alpha=0.01, correction="holm")
    np.testing.assert_allclose(out["p_adjusted"][:100], multipletests(p[:100], method="holm")[1])
    assert out["verdict"].tolist() == ["agrees"] * 100 + ["no verdict"]
    alone = family_verdicts(t.iloc[[0, 100]], alpha=0.01)
    assert alone["verdict"].tolist() == ["disagrees", "no verdict"]
    with pytest.raises(ValueError, match="unknown correction"):
        family_verdicts(t, correction="nope")
