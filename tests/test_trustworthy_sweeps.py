"""Issue 13: sweeps that are never silently wrong and never write where they should not.

Replicate seeds, folder names, duplicates, the manifest checked on resume, the folder lock,
killed workers and killed sweeps (real processes), point limits, leftover temporaries.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deltastats.workflow.folder import FolderLock, FolderLockedError, StaleLockWarning
from deltastats.workflow.sweeps import (
    MAX_POINTS,
    ResumeWarning,
    SweepInterrupted,
    load_sweep,
    point_seed,
    run_sweep,
)

TINY = {
    "name": "tiny",
    "seed": 3,
    "base": {"depth": 2, "width": 4, "n_networks": 4, "batch": 2, "chunk": 2},
    "grid": {"sigma_w2": [1.0, 2.0], "width": [4, 6]},
}


def _first_weight(exp):
    """A cheap point: the mean and first entry of the first network's W⁽¹⁾ (depends on seed)."""
    w = exp.net().sample(1, exp.seed).weights[0][0]
    return pd.DataFrame({"statistic": ["w_mean", "w_00"], "estimate": [w.mean(), w[0, 0]]})


def _other_fn(exp):
    return _first_weight(exp)


def _run(cfg, out, **kw):
    kw.setdefault("point_fn", _first_weight)
    kw.setdefault("progress", False)
    kw.setdefault("jobs", 1)
    return run_sweep(cfg, out=out, **kw)


# -- 1. a seed in [grid]/[base]/[[points]] is a replicate -----------------------------------------


def test_grid_seed_gives_one_point_per_replicate_with_its_own_seed(tmp_path):
    cfg = {**TINY, "grid": {"seed": [0, 1, 2]}}
    sweep = load_sweep(cfg)
    ids = {sweep.point_id(i) for i in range(3)}
    seeds = [e.seed for e in sweep.experiments]
    assert len(ids) == 3 and len(set(seeds)) == 3
    # replicate r's seed is the point seed of the parameters plus "seed": r
    params = {k: v for k, v in sweep.experiments[0].to_dict().items() if k not in ("name", "chunk")}
    assert seeds == [point_seed(3, {**params, "seed": r}) for r in (0, 1, 2)]
    # replicate 0 is the point without replicates (existing sweeps keep their seeds)
    assert seeds[0] == load_sweep({**TINY, "grid": {}}).experiments[0].seed
    table = _run(cfg, tmp_path).table
    assert sorted(table["seed"].unique()) == [0, 1, 2] and table["point"].nunique() == 3
    w00 = table[table.statistic == "w_00"].set_index("seed")["estimate"]
    assert w00.nunique() == 3  # three independent draws, not one row repeated
    for r in (0, 1, 2):  # each replicate's numbers are its own seed's draw
        exp = sweep.experiments[r]
        assert w00[r] == exp.net().sample(1, exp.seed).weights[0][0][0, 0]


def test_seed_in_base_and_points_is_a_replicate_too():
    base = load_sweep({**TINY, "base": {**TINY["base"], "seed": 7}, "grid": {}})
    none = load_sweep({**TINY, "grid": {}})
    assert base.experiments[0].seed != none.experiments[0].seed
    pts = load_sweep({**TINY, "grid": {}, "points": [{"seed": 7}, {"seed": 8}]})
    assert pts.experiments[0].seed == base.experiments[0].seed
    assert len({e.seed for e in pts.experiments}) == 2
    with pytest.raises(ValueError, match=r"seed in \[grid\] must be a non-negative int"):
        load_sweep({**TINY, "grid": {"seed": [0, -1]}})


def test_paired_replicates_share_streams_within_a_replicate_only():
    cfg = {**TINY, "paired": True, "grid": {"sigma_w2": [1.0, 2.0], "seed": [0, 1]}}
    s = load_sweep(cfg)
    by = {(p["sigma_w2"], p["seed"]): e.seed for p, e in zip(s.points, s.experiments)}
    assert by[(1.0, 0)] == by[(2.0, 0)] != by[(1.0, 1)] == by[(2.0, 1)]


# -- 2. name is a plain folder name; --overwrite removes only recorded files ----------------------


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "a/b", "..", "", 5, "a\\b", " x"])
def test_name_must_be_a_plain_folder_name_before_any_work(tmp_path, name):
    with pytest.raises(ValueError, match="name must be"):
        run_sweep({**TINY, "name": name}, progress=False, point_fn=_first_weight)
    from deltastats.workflow.config import Experiment

    with pytest.raises(ValueError, match="name must be"):
        Experiment(name=name)
    assert not (tmp_path / "x").exists()


def test_overwrite_removes_only_the_files_the_manifest_records(tmp_path):
    first = _run(TINY, tmp_path)
    points = tmp_path / "points"
    (points / "thesis.txt").write_text("years of work")
    (points / "sub").mkdir()
    (points / "sub" / "keep.parquet").write_text("x")
    again = _run(TINY, tmp_path, overwrite=True)
    assert (points / "thesis.txt").read_text() == "years of work"
    assert (points / "sub" / "keep.parquet").exists()
    assert len(again.ran) == 4
    pd.testing.assert_frame_equal(first.table, again.table)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {e["point"] for e in manifest["points"]} == set(first.table["point"])
    assert all(e["status"] == "done" and len(e["sha256"]) == 64 for e in manifest["points"])


# -- 6. duplicate points --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"grid": {"sigma_w2": [1.0, 1.0]}},
        {"grid": {}, "points": [{"sigma_w2": 2.0}, {"sigma_w": 2.0**0.5}]},
        {"grid": {"name": ["a", "b"]}},
    ],
)
def test_duplicate_points_are_an_error_listing_them(tmp_path, change):
    with pytest.raises(ValueError, match="duplicates") as err:
        _run({**TINY, **change}, tmp_path / "x")
    assert "{" in str(err.value)  # the duplicate points themselves are listed
    assert not (tmp_path / "x").exists()


# -- 7. resume trusts only files that match the manifest ----------------------------------------


def _corrupt_edit(path, other):
    df = pd.read_parquet(path)
    df["estimate"] *= 1000
    df.to_parquet(path, index=False)


def _corrupt_copy(path, other):
    path.write_bytes(other.read_bytes())


def _corrupt_truncate(path, other):
    path.write_bytes(path.read_bytes()[:50])


def _corrupt_flip(path, other):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _corrupt_schema(path, other):
    pd.DataFrame({"junk": [1, 2, 3]}).to_parquet(path, index=False)


@pytest.mark.parametrize(
    "corrupt", [_corrupt_edit, _corrupt_copy, _corrupt_truncate, _corrupt_flip, _corrupt_schema]
)
def test_resume_reruns_a_point_file_that_does_not_match_its_record(tmp_path, corrupt):
    full = _run(TINY, tmp_path)
    ids = list(dict.fromkeys(full.table["point"]))
    victim, other = ids[1], ids[2]
    points = tmp_path / "points"
    corrupt(points / f"{victim}.parquet", points / f"{other}.parquet")
    untouched = {p: (points / f"{p}.parquet").stat().st_mtime_ns for p in ids if p != victim}
    with pytest.warns(ResumeWarning, match=victim):
        resumed = _run(TINY, tmp_path, resume=True)
    assert resumed.ran == (victim,) and set(resumed.rerun) == {victim}
    pd.testing.assert_frame_equal(resumed.table, full.table)
    for p, mtime in untouched.items():
        assert (points / f"{p}.parquet").stat().st_mtime_ns == mtime


def test_resume_reruns_points_computed_by_another_point_function(tmp_path):
    _run(TINY, tmp_path)
    with pytest.warns(ResumeWarning, match="another config"):
        resumed = _run(TINY, tmp_path, resume=True, point_fn=_other_fn)
    assert len(resumed.ran) == 4


def test_a_record_of_another_point_is_not_trusted(tmp_path):
    full = _run(TINY, tmp_path)
    a, b = list(dict.fromkeys(full.table["point"]))[:2]
    points = tmp_path / "points"
    for suffix in (".parquet", ".json"):
        (points / f"{b}{suffix}").write_bytes((points / f"{a}{suffix}").read_bytes())
    with pytest.warns(ResumeWarning, match=f"belongs to point '{a}'"):
        resumed = _run(TINY, tmp_path, resume=True)
    assert resumed.ran == (b,)
    pd.testing.assert_frame_equal(resumed.table, full.table)


def test_resume_and_overwrite_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="exclude each other"):
        _run(TINY, tmp_path, resume=True, overwrite=True)
    from deltastats.cli import main

    assert main(["sweep", "x.toml", "--resume", "--overwrite"]) == 2


# -- 8. the folder lock ---------------------------------------------------------------------------


def _lock_file(folder, pid):
    folder.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "host": socket.gethostname(), "started": "earlier", "purpose": "sweep"}
    (folder / "sweep.lock").write_text(json.dumps(record))


def test_a_second_sweep_on_a_locked_folder_refuses(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock_file(tmp_path, other.pid)
        with pytest.raises(FolderLockedError, match=f"another sweep \\(pid {other.pid}"):
            _run(TINY, tmp_path)
        assert not (tmp_path / "results.parquet").exists()
        assert json.loads((tmp_path / "sweep.lock").read_text())["pid"] == other.pid
    finally:
        other.kill()
        other.wait()


def test_a_stale_lock_is_taken_over_with_a_warning_and_released(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _lock_file(tmp_path, dead.pid)
    with pytest.warns(StaleLockWarning, match=str(dead.pid)):
        res = _run(TINY, tmp_path)
    assert len(res.ran) == 4 and not (tmp_path / "sweep.lock").exists()


def test_lock_is_exclusive_between_holders(tmp_path):
    with FolderLock(tmp_path) as lock:
        record = json.loads(lock.path.read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        with pytest.raises(FolderLockedError):
            FolderLock(tmp_path).acquire()
    assert not (tmp_path / "sweep.lock").exists()


# -- 9. a worker killed from outside fails its point only -----------------------------------------

_KILL_FLAG = Path(tempfile.gettempdir()) / "deltastats-test-kill-worker-flag"


def _killed_by_the_system(exp):
    """SIGKILL its own worker process (what the OOM killer does) at one point, while the flag
    file exists."""
    try:
        main_pid = int(_KILL_FLAG.read_text())
    except (OSError, ValueError):
        main_pid = os.getpid()
    if exp.width == 6 and exp.sigma_w > 1.2 and os.getpid() != main_pid:
        os.kill(os.getpid(), signal.SIGKILL)
    return _first_weight(exp)


@pytest.mark.slow
def test_worker_killed_by_the_system_fails_only_its_point_and_resume_retries_it(tmp_path):
    _KILL_FLAG.write_text(str(os.getpid()))
    try:
        res = _run(TINY, tmp_path, jobs=2, point_fn=_killed_by_the_system)
    finally:
        _KILL_FLAG.unlink(missing_ok=True)
    assert len(res.failed) == 1
    ((pid, why),) = res.failed.items()
    assert "worker process" in why and "died" in why
    assert res.table["point"].nunique() == 3 and pid not in set(res.table["point"])
    assert (tmp_path / "results.parquet").exists()
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["failed"] == {pid: why}
    status = pd.read_csv(tmp_path / "points.csv").set_index("point")["status"]
    assert status[pid] == "failed" and (status == "done").sum() == 3
    again = _run(TINY, tmp_path, jobs=2, resume=True, point_fn=_killed_by_the_system)
    assert again.ran == (pid,) and not again.failed and again.table["point"].nunique() == 4


# -- 10. point limit ------------------------------------------------------------------------------


def test_a_huge_grid_is_refused_before_it_is_built():
    grid = {"sigma_w2": [1.0 + i / 1000 for i in range(1000)], "q0": [1.0 + i for i in range(1000)]}
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"1000000 points.*--max-points 1000000"):
        load_sweep({**TINY, "grid": grid})
    assert time.perf_counter() - t0 < 2.0  # counted, not materialised
    assert MAX_POINTS == 10_000
    with pytest.raises(ValueError, match="more than max_points = 3"):
        load_sweep(TINY, max_points=3)
    assert len(load_sweep(TINY, max_points=4).experiments) == 4


# -- 11. errors before any work -------------------------------------------------------------------


@pytest.mark.parametrize(
    "change,match",
    [
        ({"base": 5}, r"\[base\] must be a table"),
        ({"points": [1, 2]}, r"\[\[points\]\] must be a list of tables"),
        ({"grid": "abc"}, r"\[grid\] must be a table"),
        ({"quick": [1]}, r"\[quick\] must be a table"),
        ({"description": 5}, "description must be a string"),
        ({"base": {**TINY["base"], "targets": "one_hot"}}, "one_hot.*output width >= 2"),
        ({"base": {**TINY["base"], "q0": -1.0}}, "q0 must be > 0"),
        ({"base": {**TINY["base"], "loss": "cross_entropy"}}, "cross_entropy' needs targets"),
        ({"grid": {"width": [10**6]}}, "lower width, depth or batch"),
    ],
)
def test_bad_sweep_configs_fail_in_load_sweep_naming_the_key(tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        _run({**TINY, **change}, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_a_directory_as_config_is_a_clear_error(tmp_path):
    from deltastats.cli import main

    with pytest.raises(ValueError, match="is a directory"):
        load_sweep(tmp_path)
    assert main(["run", str(tmp_path)]) == 2
    assert main(["sweep", str(tmp_path)]) == 2


def test_an_unreachable_scheduler_is_refused_at_once(tmp_path):
    pytest.importorskip("distributed")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="cannot reach the Dask scheduler"):
        _run(TINY, tmp_path / "x", scheduler=f"tcp://127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 6.0 and not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="scheduler must be an address"):
        _run(TINY, tmp_path / "x", scheduler="nowhere")


# -- 13. leftover temporaries; the table path only when written ---------------------------------


def test_leftover_temporaries_are_removed_and_other_files_kept(tmp_path):
    first = _run(TINY, tmp_path)
    pid = first.table["point"].iloc[0]
    left = [
        tmp_path / "results.parquetab12cd.tmp",
        tmp_path / "metadata.jsonx9y8.tmp",
        tmp_path / "points" / f"{pid}.parquetqq.tmp",
        tmp_path / "points" / f"{pid}.running",
    ]
    mine = [tmp_path / "notes.tmp", tmp_path / "points" / "draft.tmp"]
    for p in left + mine:
        p.write_text("x")
    _run(TINY, tmp_path, resume=True)
    assert not any(p.exists() for p in left)
    assert all(p.exists() for p in mine)


def _always_fails(exp):
    raise RuntimeError("no point finishes")


def test_cli_prints_the_table_path_only_when_it_exists(tmp_path, capsys, monkeypatch):
    import deltastats.workflow.sweeps as sweeps_mod
    from deltastats.cli import main

    cfg = tmp_path / "s.toml"
    cfg.write_text('name = "s"\nseed = 1\n[base]\ndepth = 2\nwidth = 4\nn_networks = 4\n')
    real = sweeps_mod.run_sweep
    monkeypatch.setattr(
        sweeps_mod, "run_sweep", lambda *a, **k: real(*a, **{**k, "point_fn": _always_fails})
    )
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "o"), "--quiet", "--jobs", "1"]) == 1
    out = capsys.readouterr().out
    assert "0 of 1 points finished" in out and "table:" not in out
    assert not (tmp_path / "o" / "results.parquet").exists()
    monkeypatch.setattr(
        sweeps_mod, "run_sweep", lambda *a, **k: real(*a, **{**k, "point_fn": _first_weight})
    )
    args = ["sweep", str(cfg), "--out", str(tmp_path / "o"), "--quiet", "--jobs", "1"]
    assert main([*args, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "1 of 1 points finished" in out and f"table: {tmp_path / 'o' / 'results.parquet'}" in out


# -- 5. killing the sweep: real processes ---------------------------------------------------------

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


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                kids.append(int(d.name))
    return kids


def _start_and_kill(tmp_path, sig):
    cfg = tmp_path / "slow.toml"
    cfg.write_text(SLOW)
    out = tmp_path / "part"
    cmd = [sys.executable, "-m", "deltastats", "sweep", str(cfg), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(
        [*cmd, "--jobs", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "points").glob("*.parquet")):
        time.sleep(0.02)
    workers = _children(proc.pid)
    os.kill(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=60)
    deadline = time.time() + 15
    while time.time() < deadline and any(Path(f"/proc/{k}").exists() for k in workers):
        time.sleep(0.1)
    alive = [k for k in workers if Path(f"/proc/{k}").exists()]
    for k in alive:  # do not leave them behind if the test fails
        os.kill(k, signal.SIGKILL)
    return proc, stdout, stderr, workers, alive, cfg, out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigkill_of_the_sweep_ends_its_workers(tmp_path):
    proc, _, _, workers, alive, cfg, out = _start_and_kill(tmp_path, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL and len(workers) >= 2
    assert alive == [], "worker processes outlived the killed sweep"
    done = set(p.name for p in (out / "points").glob("*.parquet"))
    time.sleep(1.0)  # nothing writes point files any more
    assert set(p.name for p in (out / "points").glob("*.parquet")) == done
    with pytest.warns(StaleLockWarning):
        resumed = run_sweep(cfg, out=out, resume=True, progress=False)
    assert resumed.table["point"].nunique() == 8


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_stop_cleanly_and_resume(tmp_path, sig):
    proc, stdout, stderr, workers, alive, cfg, out = _start_and_kill(tmp_path, sig)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    saved = len(list((out / "points").glob("*.parquet")))
    assert " of 8 points saved; rerun with --resume" in stderr and str(out) in stderr
    assert alive == [] and not (out / "sweep.lock").exists()
    assert saved >= 1
    resumed = run_sweep(cfg, out=out, resume=True, progress=False)
    assert len(resumed.ran) <= 8 - 1 and resumed.table["point"].nunique() == 8


def test_sweep_interrupted_is_a_keyboard_interrupt_with_the_count():
    stop = SweepInterrupted(3, 8, Path("out"))
    assert isinstance(stop, KeyboardInterrupt)
    assert str(stop) == "3 of 8 points saved; rerun with --resume (folder out)"


def test_interrupt_inside_run_sweep_saves_the_manifest(tmp_path, monkeypatch):
    import deltastats.workflow.sweeps as sweeps_mod
    from deltastats.workflow.points import _run_point

    calls = []

    def interrupted_after_two(tasks, workers, backend):
        for t in tasks:
            if len(calls) == 2:
                raise KeyboardInterrupt
            calls.append(t[3])
            yield _run_point(*t)

    monkeypatch.setattr(sweeps_mod, "_run_local_robust", interrupted_after_two)
    with pytest.raises(SweepInterrupted, match="2 of 4 points saved"):
        _run(TINY, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert sorted(e["point"] for e in manifest["points"] if e["status"] == "done") == sorted(calls)
    assert not (tmp_path / "sweep.lock").exists()
    monkeypatch.undo()
    resumed = _run(TINY, tmp_path, resume=True)
    assert len(resumed.ran) == 2
    np.testing.assert_array_equal(
        resumed.table["estimate"], _run(TINY, tmp_path / "full").table["estimate"]
    )


@pytest.mark.slow
def test_two_real_sweeps_on_one_folder_the_second_refuses(tmp_path, capsys):
    from deltastats.cli import main

    cfg = tmp_path / "slow.toml"
    cfg.write_text(SLOW)
    out = tmp_path / "shared"
    cmd = [sys.executable, "-m", "deltastats", "sweep", str(cfg), "--out", str(out), "--quiet"]
    first = subprocess.Popen(
        [*cmd, "--jobs", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (out / "sweep.lock").exists():
            time.sleep(0.02)
        assert main(["sweep", str(cfg), "--out", str(out), "--quiet", "--resume"]) == 2
        # signal it only once it is computing a point (past its start-up, handlers installed)
        while time.time() < deadline and not list((out / "points").glob("*.running")):
            time.sleep(0.02)
        err = capsys.readouterr().err
        assert f"another sweep (pid {first.pid}" in err and str(out) in err
    finally:
        first.send_signal(signal.SIGTERM)
        # Generous: a signal waits for the running compiled call to return, and on a busy
        # machine with a cold kernel cache that call can be a long compilation.
        first.communicate(timeout=240)
    assert first.returncode == 130 and not (out / "sweep.lock").exists()


def test_numerics_lists_the_blas_libraries_in_a_fixed_order():
    """The metadata of every results file names the BLAS builds; their load order varies from
    process to process, so they are sorted (else the same run writes different files)."""
    from deltastats.workflow.metadata import numerics

    blas = numerics()["blas"]
    assert blas and blas == sorted(blas)
