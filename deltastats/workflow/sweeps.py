"""Parameter sweeps: a grid of experiments, run in parallel, checkpointed, resumable.

A sweep config is a TOML file::

    name = "order-chaos"           # results go to results/<name>/ unless --out is given
    seed = 1                       # the sweep seed
    description = "tanh gradients across the order/chaos transition"

    [base]                         # Experiment fields shared by every point
    activation = "tanh"
    width = 128
    depth = 20

    [grid]                         # cartesian product over these (lists)
    sigma_w2 = [1.0, 1.5, 2.0]     # σ_w² (sigma_w2/sigma_b2 are accepted as aliases)
    sigma_b2 = [0.0, 0.05]

    [quick]                        # overrides of [base] for --quick (tests, smoke runs)
    n_networks = 16

``[[points]]`` tables list explicit points instead of (or combined with) the grid.
``paired = true`` gives every point the sweep seed itself (common random numbers): points then
share their networks' random streams, so differences between points are paired (e.g. the loss
with and without the ½ sees the very same networks and inputs).

Each point's seed is derived from (sweep seed, the point's full parameters) through
``np.random.SeedSequence``, so a point's numbers do not depend on the order of the points, the
number of jobs, or which other points are in the sweep. Each finished point is written
atomically (temporary file + rename) to ``points/<point id>.parquet``; ``resume=True`` skips
finished points, and a point that raises is recorded in ``points/<id>.error.json`` while the
others go on.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import os
import tempfile
import time
import tomllib
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._parallel import usable_cpus
from .config import Experiment
from .config import sigma_aliases as _aliases
from .metadata import metadata, now, write_json_atomic

SWEEP_KEYS = ("name", "seed", "paired", "description", "base", "grid", "points", "quick")
PointFn = Callable[[Experiment], pd.DataFrame]


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: the experiments of every point, in grid order.

    Attributes
    ----------
    name : str
    seed : int
    points : tuple of dict
        The swept parameters of each point (only the keys that vary).
    experiments : tuple of Experiment
        The full experiment of each point, with its derived seed.
    config : dict
        The config as read (for ``metadata.json``).
    """

    name: str
    seed: int
    points: tuple[dict, ...]
    experiments: tuple[Experiment, ...]
    config: dict = field(repr=False)
    description: str = ""

    @property
    def swept(self) -> list[str]:
        """Names of the parameters that vary across points, in config order."""
        keys: list[str] = []
        for p in self.points:
            keys += [k for k in p if k not in keys]
        return keys

    def point_id(self, i: int) -> str:
        """Stable id of point i: a hash of its full experiment (not of its position)."""
        return _digest(self.experiments[i].to_dict())[:16]


def _digest(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def point_seed(sweep_seed: int, params: dict) -> int:
    """Seed of a point from the sweep seed and the point's parameters (not its position)."""
    words = np.frombuffer(bytes.fromhex(_digest(params)), dtype=np.uint32)
    ss = np.random.SeedSequence([int(sweep_seed), *map(int, words)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def _check_keys(d: dict, valid, where: str) -> None:
    for key in d:
        if key not in valid:
            close = difflib.get_close_matches(key, list(valid), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown key {key!r} in {where}{hint}")


def load_sweep(config: str | Path | dict, *, quick: bool = False) -> Sweep:
    """Read and validate a sweep config (TOML path or dict); every point is checked up front.

    Raises
    ------
    ValueError
        Unknown keys (with the closest valid one), values of the wrong type, an empty grid.
    """
    if isinstance(config, str | Path):
        path = Path(config)
        if not path.is_file():
            raise ValueError(f"sweep config {str(path)!r} does not exist")
        with open(path, "rb") as f:
            try:
                cfg = tomllib.load(f)
            except tomllib.TOMLDecodeError as err:
                raise ValueError(f"{path}: not valid TOML: {err}") from None
        cfg.setdefault("name", path.stem)
    else:
        cfg = dict(config)
    _check_keys(cfg, SWEEP_KEYS, "the sweep config")
    exp_keys = [f.name for f in dataclasses.fields(Experiment)] + ["sigma_w2", "sigma_b2"]
    base = dict(cfg.get("base", {}))
    grid = dict(cfg.get("grid", {}))
    listed = list(cfg.get("points", [{}]))
    for where, d in (("[base]", base), ("[grid]", grid), ("[quick]", cfg.get("quick", {}))):
        if not isinstance(d, dict):
            raise ValueError(f"{where} must be a table of Experiment fields")
        _check_keys(d, exp_keys, where)
    for p in listed:
        _check_keys(p, exp_keys, "[[points]]")
    for key, values in grid.items():
        if not isinstance(values, list):
            raise ValueError(f"[grid] {key} must be a list of values, got {values!r}")
        if not values:
            raise ValueError(f"[grid] {key} is empty: a grid needs at least one value per key")
    if not listed:
        raise ValueError("[[points]] is empty")
    if quick:
        base.update(cfg.get("quick", {}))
    name = str(cfg.get("name", "sweep"))
    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    paired = cfg.get("paired", False)
    if not isinstance(paired, bool):
        raise ValueError(f"paired must be true or false, got {paired!r}")
    points, experiments = [], []
    for extra in listed:
        for combo in itertools.product(*grid.values()):
            point = {**extra, **dict(zip(grid, combo))}
            merged = _aliases({**base, **point, "name": name})
            merged.pop("seed", None)
            try:
                exp = Experiment.from_dict(merged)
            except (TypeError, ValueError) as err:
                raise ValueError(f"point {point}: {err}") from None
            params = {k: v for k, v in exp.to_dict().items() if k not in ("name", "chunk")}
            pseed = seed if paired else point_seed(seed, params)
            experiments.append(dataclasses.replace(exp, seed=pseed))
            points.append(point)
    return Sweep(
        name, seed, tuple(points), tuple(experiments), cfg, str(cfg.get("description", ""))
    )


def _write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _run_point(
    fn: PointFn,
    exp: Experiment,
    point: dict,
    pid: str,
    folder: Path,
    blas_threads: int,
    write: bool = True,
) -> tuple[str, str, float, object]:
    """Worker: run one point and write its table atomically (or return it), or its error.

    With ``write=False`` (a Dask cluster, whose workers may not share this file system) the
    table or error record is returned and the client writes it.
    """
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    try:
        with threadpool_limits(limits=blas_threads):
            table = fn(exp)
        table = table.copy()
        for i, (k, v) in enumerate(point.items()):
            table.insert(i, k, [v] * len(table))
        table.insert(0, "point", pid)
        table.insert(1, "point_seed", exp.seed)
        if write:
            _store(folder, pid, table)
        return pid, "done", time.perf_counter() - t0, None if write else table
    except Exception as err:  # a failing point must not stop the sweep
        record = {"point": point, "error": repr(err), "traceback": traceback.format_exc()}
        if write:
            _store(folder, pid, record)
        return pid, "failed", time.perf_counter() - t0, None if write else record


def _store(folder: Path, pid: str, payload: pd.DataFrame | dict) -> None:
    if isinstance(payload, pd.DataFrame):
        _write_parquet_atomic(payload, folder / f"{pid}.parquet")
        (folder / f"{pid}.error.json").unlink(missing_ok=True)
    else:
        write_json_atomic(folder / f"{pid}.error.json", payload)


def _run_local(tasks: list[tuple], workers: int, backend: str):
    from joblib import Parallel, delayed

    runner = Parallel(n_jobs=workers, backend=backend, return_as="generator_unordered")
    yield from runner(delayed(_run_point)(*t) for t in tasks)


def _run_dask(tasks: list[tuple], scheduler: str):
    """Run points on a Dask cluster; results come back to this process, which writes them."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ValueError(
            "scheduler= needs Dask distributed: pip install 'dask[distributed]'"
        ) from None
    with Client(scheduler) as client:
        futures = [client.submit(_run_point, *t[:-1], False, pure=False) for t in tasks]
        for fut in as_completed(futures):
            pid, state, seconds, payload = fut.result()
            _store(tasks[0][4], pid, payload)
            yield pid, state, seconds, None


@dataclass(frozen=True)
class SweepResult:
    """Outcome of :func:`run_sweep`.

    Attributes
    ----------
    table : DataFrame
        One row per (point, layer, statistic); a column per swept parameter.
    out_dir : Path
    failed : dict
        Point id → error message, for points that raised.
    ran : tuple of str
        Ids of the points computed in this call (finished points skipped on resume are not).
    """

    table: pd.DataFrame
    out_dir: Path
    failed: dict
    ran: tuple[str, ...]


def run_sweep(
    config: str | Path | dict | Sweep,
    *,
    out: str | Path | None = None,
    jobs: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    quick: bool = False,
    progress: bool = True,
    point_fn: PointFn | None = None,
    backend: str = "loky",
    scheduler: str | None = None,
) -> SweepResult:
    """Run every point of a sweep in parallel and write ``<out>/results.parquet``.

    Parameters
    ----------
    config : path, dict or Sweep
        The sweep config (see the module docstring).
    out : path or None
        Results folder; default ``results/<sweep name>/``.
    jobs : int or None
        CPU cores the sweep may use; ``None`` (default) uses every core this process may use
        (affinity and container quota). The points run in ``min(jobs, points to run)`` worker
        processes (joblib, loky; one worker runs in this process), each limited to
        ``jobs // workers`` BLAS and engine threads: ``jobs=1`` is a single core, and a sweep
        with fewer points than cores gives each point several threads. Each worker process
        holds its own interpreter with numpy, scipy, pandas and numba (about 0.6 GB resident
        with a width-128 point), so on a many-core machine with little memory pass a smaller
        ``jobs``. Results are the same bits for every ``jobs``. Ignored with ``scheduler``
        (the cluster's workers decide; each point then runs single-threaded).
    resume : bool
        Keep finished points in ``<out>/points/`` and run only the rest.
    overwrite : bool
        Delete finished points of an earlier run and start over.
    quick : bool
        Apply the config's ``[quick]`` overrides (small sizes).
    progress : bool
        Show a progress bar with points done and time left.
    point_fn : callable or None
        ``Experiment → DataFrame`` evaluated at each point; default
        :func:`deltastats.runner.analyse` (estimates beside theory).
    backend : str
        joblib backend for local runs (``"loky"`` processes by default).
    scheduler : str or None
        Address of a Dask distributed scheduler (``"tcp://host:8786"``) to run the points on a
        cluster instead of local processes. Workers need deltastats installed; they need not
        share a file system (tables come back to this process, which writes them). Results are
        identical to a local run: every point's seed depends only on its parameters.

    Returns
    -------
    SweepResult
    """
    from tqdm.auto import tqdm

    from .runner import analyse, analysis_settings

    sweep = config if isinstance(config, Sweep) else load_sweep(config, quick=quick)
    if jobs is None:
        jobs = usable_cpus()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int or None, got {jobs!r}")
    fn = analyse if point_fn is None else point_fn
    folder = Path("results") / sweep.name if out is None else Path(out)
    points_dir = folder / "points"
    try:
        points_dir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=points_dir, delete=True)
        probe.close()
    except OSError as err:
        raise ValueError(f"cannot write to the output folder {str(folder)!r}: {err}") from None
    ids = [sweep.point_id(i) for i in range(len(sweep.experiments))]
    finished = {p.stem for p in points_dir.glob("*.parquet")}
    stale = finished - set(ids)
    if finished and not (resume or overwrite):
        raise ValueError(
            f"{folder} already holds {len(finished)} finished points; pass resume=True "
            "(--resume) to continue that sweep or overwrite=True (--overwrite) to start over"
        )
    if overwrite:
        for p in points_dir.iterdir():
            p.unlink()
        finished = set()
    elif stale:
        raise ValueError(
            f"{folder} holds {len(stale)} points that are not in this sweep (the config "
            "changed?); use --overwrite or another --out"
        )
    todo = [i for i, pid in enumerate(ids) if pid not in finished]
    started = now()
    # jobs is a core budget: one process per point up to `jobs`, the rest as threads.
    workers = max(1, min(jobs, len(todo)))
    blas = max(1, jobs // workers) if scheduler is None else 1
    tasks = [
        (fn, sweep.experiments[i], sweep.points[i], ids[i], points_dir, blas, True) for i in todo
    ]
    status: dict[str, str] = {}
    if todo:
        results = (
            _run_local(tasks, workers, backend)
            if scheduler is None
            else _run_dask(tasks, scheduler)
        )
        bar = tqdm(total=len(todo), disable=not progress, desc=sweep.name, unit="point")
        for pid, state, _, _ in results:
            status[pid] = state
            bar.update(1)
        bar.close()
    failed = {}
    for pid in ids:
        err = points_dir / f"{pid}.error.json"
        if err.exists() and not (points_dir / f"{pid}.parquet").exists():
            failed[pid] = json.loads(err.read_text())["error"]
    tables = [
        pd.read_parquet(points_dir / f"{pid}.parquet")
        for pid in ids
        if (points_dir / f"{pid}.parquet").exists()
    ]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if not table.empty:
        _write_parquet_atomic(table, folder / "results.parquet")
    summary = pd.DataFrame(
        [
            {
                "point": pid,
                **sweep.points[i],
                "seed": sweep.experiments[i].seed,
                "status": "failed" if pid in failed else "done",
            }
            for i, pid in enumerate(ids)
        ]
    )
    summary.to_csv(folder / "points.csv", index=False)
    write_json_atomic(
        folder / "metadata.json",
        metadata(
            sweep.config,
            kind="sweep",
            name=sweep.name,
            sweep_seed=sweep.seed,
            point_seeds=dict(zip(ids, (e.seed for e in sweep.experiments))),
            jobs=jobs if scheduler is None else None,
            workers=workers if scheduler is None and todo else None,
            threads_per_worker=blas if todo else None,
            quick=quick,
            analysis=analysis_settings() if point_fn is None else None,
            started=started,
            finished=now(),
            failed=failed,
        ),
    )
    ran = tuple(pid for pid in ids if pid in status)
    return SweepResult(table, folder, failed, ran)
