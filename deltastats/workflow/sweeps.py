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
    seed = [0, 1, 2]               # replicates: three independent runs of every point

    [quick]                        # overrides of [base] for --quick (tests, smoke runs)
    n_networks = 16

``[[points]]`` tables list explicit points instead of (or combined with) the grid. ``name`` is
a plain folder name (no ``/``, ``..``): every file a sweep writes stays inside its output
folder. A sweep of more than :data:`MAX_POINTS` points is refused unless ``max_points``
(``--max-points``) allows it, and two points with the same experiment (``sigma_w2 = [1.0,
1.0]``, or ``sigma_w2`` beside the equivalent ``sigma_w``) are an error listing them.

**Replicates.** A ``seed`` in ``[base]``, ``[grid]`` or ``[[points]]`` is a replicate number:
each value is one more parameter of the point, with its own point id, its own derived seed and
its own rows (the ``seed`` column of the table). ``seed = 0`` is the same as no replicate.

Each point's seed is derived from (sweep seed, the point's full parameters, its replicate)
through ``np.random.SeedSequence``, so a point's numbers do not depend on the order of the
points, the number of jobs, or which other points are in the sweep. ``paired = true`` gives
every point of a replicate the same seed (the sweep seed itself without replicates; common
random numbers): points then share their networks' random streams, so differences between
points are paired (e.g. the loss with and without the ½ sees the very same networks and
inputs).

**Checkpoints.** Each finished point is written atomically (temporary file + rename) to
``points/<point id>.parquet``, after its record ``points/<point id>.json`` (id, config hash,
size, SHA-256); ``manifest.json`` lists every point's id, parameters, config hash, file and
checksum. ``resume=True`` keeps the finished points whose file matches its record and reruns
the others (missing, failed, truncated, edited, or another point's or config's file, each
with a :class:`ResumeWarning` naming it), all checked before any point runs. ``overwrite``
removes only the files the manifest records. A point that raises is recorded in
``points/<id>.error.json`` while the others go on; so is a point whose worker process is
killed (e.g. out of memory).

**One writer.** A lock file ``sweep.lock`` (pid, host, start time) keeps a second sweep out of
the folder; a lock whose process is dead is taken over with a warning. Worker processes exit
when the sweep's process dies; SIGTERM stops a sweep like Ctrl-C (finished points kept,
:class:`SweepInterrupted` says how many). Temporaries left by a kill are removed on the next
run.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import os
import signal
import tempfile
import threading
import tomllib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import checks
from .._parallel import usable_cpus
from ..configs import path as shipped_config
from .config import Experiment, analysis_table, check_folder_name
from .config import sigma_aliases as _aliases
from .folder import FolderLock, clean_temporaries
from .metadata import metadata, now, write_json_atomic
from .points import (
    _MANIFEST,
    _POINT_FILE,
    _check_scheduler,
    _load_json,
    _point_files,
    _recorded_files,
    _run_dask,
    _run_local_robust,
    _verify,
    _write_parquet_atomic,
)

#: Top-level keys a sweep TOML may have (anything else is an error naming the closest key).
SWEEP_KEYS = (
    "name",
    "seed",
    "paired",
    "description",
    "base",
    "grid",
    "points",
    "quick",
    "analysis",
)
#: What computes one sweep point: an :class:`Experiment` → its tidy table of rows.
PointFn = Callable[[Experiment], pd.DataFrame]

#: Largest sweep :func:`load_sweep` accepts unless ``max_points`` says otherwise.
MAX_POINTS = 10_000


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
    analysis: dict = field(default_factory=dict)

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


def _uniform_columns(table: pd.DataFrame) -> pd.DataFrame:
    """A parameter swept over values of mixed types (``output_width = [1, "width"]``) is one
    column of their text, so the table stays one Parquet file (Parquet columns have a type)."""
    for col in table.select_dtypes(include="object").columns:
        kinds = {type(v) for v in table[col].dropna()}
        if len(kinds) > 1:
            table[col] = table[col].map(lambda v: v if v is None else str(v))
    return table


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
            close = difflib.get_close_matches(str(key), list(valid), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown key {key!r} in {where}{hint}")


def _read_config(config) -> dict:
    if isinstance(config, str | Path):
        path = Path(config)
        if path.is_dir():
            raise ValueError(f"sweep config {str(path)!r} is a directory, not a TOML file")
        if not path.is_file():
            if isinstance(config, str) and "/" not in config and "\\" not in config:
                path = shipped_config(config)  # a shipped experiment: "order_chaos"
            else:
                raise ValueError(f"sweep config {str(path)!r} does not exist")
        try:
            with open(path, "rb") as f:
                cfg = tomllib.load(f)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: not valid TOML: {err}") from None
        except OSError as err:
            raise ValueError(f"cannot read sweep config {str(path)!r}: {err.strerror}") from None
        cfg.setdefault("name", path.stem)
        return cfg
    if not isinstance(config, dict):
        raise ValueError(
            f"config must be a TOML path, a dict or a Sweep, got {type(config).__name__}"
        )
    return dict(config)


def _replicate(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"seed in {where} must be a non-negative int (a replicate), got {value!r}")
    return value


def load_sweep(
    config: str | Path | dict, *, quick: bool = False, max_points: int = MAX_POINTS
) -> Sweep:
    """Read and validate a sweep config (TOML path or dict); every point is checked up front.

    Parameters
    ----------
    config : path or dict
        See the module docstring.
    quick : bool
        Apply the ``[quick]`` overrides.
    max_points : int
        Refuse a sweep of more points than this (counted before any point is built).

    Raises
    ------
    ValueError
        One line naming the key: unknown keys (with the closest valid one), values of the
        wrong type, an empty grid, a ``name`` that is not a plain folder name, more than
        ``max_points`` points, duplicate points (the same experiment twice).
    """
    max_points = checks.positive_int("max_points", max_points)
    cfg = _read_config(config)
    _check_keys(cfg, SWEEP_KEYS, "the sweep config")
    exp_keys = [f.name for f in dataclasses.fields(Experiment)] + ["sigma_w2", "sigma_b2"]
    tables = {}
    for key, where in (("base", "[base]"), ("grid", "[grid]"), ("quick", "[quick]")):
        d = cfg.get(key, {})
        if not isinstance(d, dict):
            raise ValueError(f"{where} must be a table of Experiment fields, got {d!r:.60}")
        _check_keys(d, exp_keys, where)
        tables[key] = dict(d)
    base, grid = tables["base"], tables["grid"]
    listed = cfg.get("points", [{}])
    if not isinstance(listed, list) or not all(isinstance(p, dict) for p in listed):
        raise ValueError(
            f"[[points]] must be a list of tables of Experiment fields, got {listed!r:.60}"
        )
    listed = [dict(p) for p in listed]
    for p in listed:
        _check_keys(p, exp_keys, "[[points]]")
    for key, values in grid.items():
        if not isinstance(values, list):
            raise ValueError(f"[grid] {key} must be a list of values, got {values!r}")
        if not values:
            raise ValueError(f"[grid] {key} is empty: a grid needs at least one value per key")
    if not listed:
        raise ValueError("[[points]] is empty")
    n_points = len(listed) * math.prod(len(v) for v in grid.values())
    if n_points > max_points:
        raise ValueError(
            f"the sweep has {n_points} points, more than max_points = {max_points}; pass "
            f"max_points={n_points} (--max-points {n_points}) to run it anyway"
        )
    if quick:
        base.update(tables["quick"])
    name = check_folder_name("name", cfg.get("name", "sweep"))
    description = cfg.get("description", "")
    if not isinstance(description, str):
        raise ValueError(f"description must be a string, got {description!r}")
    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    paired = cfg.get("paired", False)
    if not isinstance(paired, bool):
        raise ValueError(f"paired must be true or false, got {paired!r}")
    if "seed" in base:
        _replicate(base["seed"], "[base]")
    points, experiments = [], []
    for extra in listed:
        for combo in itertools.product(*grid.values()):
            point = {**extra, **dict(zip(grid, combo))}
            merged = _aliases({**base, **point, "name": name})
            replicate = merged.pop("seed", None)
            if "seed" in point:
                where = "[grid]" if "seed" in grid else "[[points]]"
                _replicate(replicate, where)
            try:
                exp = Experiment.from_dict(merged)
            except (TypeError, ValueError) as err:
                raise ValueError(f"point {point}: {err}") from None
            params = {k: v for k, v in exp.to_dict().items() if k not in ("name", "chunk")}
            if replicate is not None:
                # A replicate is one more parameter of the point: its own seed and id.
                params["seed"] = replicate
            if paired:
                # Common random numbers: every point of one replicate shares the streams.
                pseed = seed if replicate is None else point_seed(seed, {"seed": replicate})
            else:
                pseed = point_seed(seed, params)
            experiments.append(dataclasses.replace(exp, seed=pseed))
            points.append(point)
    analysis = analysis_table(cfg.get("analysis", {}), "[analysis]")
    sweep = Sweep(name, seed, tuple(points), tuple(experiments), cfg, description, analysis)
    _check_duplicates(sweep)
    return sweep


def _check_duplicates(sweep: Sweep) -> None:
    """Two points with the same experiment would be computed once and labelled twice."""
    groups: dict[str, list[int]] = {}
    for i in range(len(sweep.experiments)):
        groups.setdefault(sweep.point_id(i), []).append(i)
    dups = [g for g in groups.values() if len(g) > 1]
    if not dups:
        return
    shown = "; ".join(" = ".join(str(sweep.points[i]) for i in g[:3]) for g in dups[:5])
    more = f" (and {len(dups) - 5} more)" if len(dups) > 5 else ""
    hint = ""
    if "name" in sweep.swept:
        hint = " (name is the sweep's folder name, the same for every point, not a parameter)"
    raise ValueError(
        f"{sum(len(g) for g in dups)} points are duplicates, the same experiment listed "
        f"more than once{hint}: {shown}{more}; remove the repeats"
    )


def config_hash(exp: Experiment, point: dict, fn: PointFn) -> str:
    """What a point file was computed from: the point's full experiment (with its seed), its
    labels and the point function. A file whose recorded hash differs is not this point's."""
    fn_name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
    return _digest({"experiment": exp.to_dict(), "point": point, "point_fn": fn_name})


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
    n_points : int
        Points in the sweep.
    rerun : dict
        Point id → why its file was not trusted on resume (it was computed again).
    """

    table: pd.DataFrame
    out_dir: Path
    failed: dict
    ran: tuple[str, ...]
    n_points: int = 0
    rerun: dict = field(default_factory=dict)

    @property
    def table_path(self) -> Path | None:
        """``<out>/results.parquet`` when it exists."""
        path = self.out_dir / "results.parquet"
        return path if path.is_file() else None


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a sweep; finished points are saved (``--resume`` goes on)."""

    def __init__(self, saved: int, total: int, folder: Path) -> None:
        super().__init__(f"{saved} of {total} points saved; rerun with --resume (folder {folder})")
        self.saved, self.total, self.folder = saved, total, folder

    def __str__(self) -> str:
        return self.args[0]


class ResumeWarning(UserWarning):
    """A point file that does not match the manifest; the point is computed again."""


_FOLDER_FILES = ("results.parquet", "metadata.json", _MANIFEST, "points.csv")


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
    max_points: int = MAX_POINTS,
    analysis: dict | None = None,
) -> SweepResult:
    """Run every point of a sweep in parallel and write ``<out>/results.parquet``.

    Parameters
    ----------
    config : path, dict or Sweep
        The sweep config (see the module docstring).
    out : path or None
        Results folder; default ``results/<sweep name>/``. Every file the sweep writes is
        inside it.
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
        Keep finished points in ``<out>/points/`` and run only the rest (missing and failed
        points, and points whose file does not match the manifest, with a
        :class:`ResumeWarning` naming each).
    overwrite : bool
        Delete the points an earlier run recorded in its manifest and start over (other files
        in the folder are left alone). Not together with ``resume``.
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
        cluster instead of local processes (checked to be reachable before any work). Workers
        need deltastats installed; they need not share a file system (tables come back to
        this process, which writes them). Results are identical to a local run: every point's
        seed depends only on its parameters.
    max_points : int
        Refuse sweeps of more points (default :data:`MAX_POINTS`).
    analysis : dict or None
        Analysis settings (``confidence``, ``method``, ``alpha``, ``correction``) over the
        config's ``[analysis]`` table; recorded in ``metadata.json`` and read by the report.

    Returns
    -------
    SweepResult

    Raises
    ------
    ValueError
        Bad config or arguments, an output folder that cannot be written, an unreachable
        scheduler (all before any work); :class:`~deltastats.workflow.folder.FolderLockedError`
        when another sweep writes the same folder.
    SweepInterrupted
        On Ctrl-C or SIGTERM, after the finished points are saved and the lock released.

    Notes
    -----
    Worker processes exit when the main process dies (even by SIGKILL). A worker killed from
    outside (e.g. by the out-of-memory killer) fails only its point, with that cause; the
    sweep goes on and writes its tables.
    """
    from tqdm.auto import tqdm

    from .runner import Analyse, analyse

    if not isinstance(resume, bool) or not isinstance(overwrite, bool):
        raise ValueError(
            f"resume and overwrite must be True or False, got {resume!r}, {overwrite!r}"
        )
    if resume and overwrite:
        raise ValueError(
            "resume and overwrite exclude each other (--resume keeps finished points, "
            "--overwrite discards them); pass one"
        )
    if isinstance(config, Sweep):
        sweep = config
        max_points = checks.positive_int("max_points", max_points)
        if len(sweep.experiments) > max_points:
            raise ValueError(
                f"the sweep has {len(sweep.experiments)} points, more than max_points = "
                f"{max_points}"
            )
    else:
        sweep = load_sweep(config, quick=quick, max_points=max_points)
    if analysis:  # settings given here override the config's [analysis] table
        extra = analysis_table(analysis, "analysis")
        sweep = dataclasses.replace(sweep, analysis={**sweep.analysis, **extra})
    if jobs is None:
        jobs = usable_cpus()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int or None, got {jobs!r}")
    if point_fn is not None and not callable(point_fn):
        raise ValueError(f"point_fn must be a callable Experiment -> DataFrame, got {point_fn!r}")
    if scheduler is not None:
        _check_scheduler(scheduler)
    if point_fn is None:
        # The default point function; with analysis settings from the config, the same
        # function bound to them (default settings keep the plain function: the same hashes).
        fn = analyse if not sweep.analysis else Analyse(**sweep.analysis)
    else:
        fn = point_fn
    # A quick run never lands in the full run's folder (e.g. the committed results).
    default_name = f"{sweep.name}-quick" if quick else sweep.name
    folder = Path("results") / default_name if out is None else Path(out)
    points_dir = folder / "points"
    try:
        points_dir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=points_dir, delete=True)
        probe.close()
    except OSError as err:
        raise ValueError(f"cannot write to the output folder {str(folder)!r}: {err}") from None
    lock = FolderLock(folder).acquire()
    previous = _sigterm_as_interrupt()
    try:
        return _run_locked(
            sweep,
            folder,
            points_dir,
            fn,
            jobs,
            resume,
            overwrite,
            quick,
            progress,
            backend,
            scheduler,
            tqdm,
        )
    finally:
        _restore_sigterm(previous)
        lock.release()


def _sigterm_as_interrupt():
    """SIGTERM raises KeyboardInterrupt, so a terminated sweep stops as on Ctrl-C (points
    saved, workers stopped, lock released). Only the main thread may set handlers."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def _run_locked(
    sweep,
    folder,
    points_dir,
    fn,
    jobs,
    resume,
    overwrite,
    quick,
    progress,
    backend,
    scheduler,
    tqdm,
) -> SweepResult:
    from .compare import family_verdicts
    from .runner import Analyse, analyse, analysis_settings

    clean_temporaries(folder, _FOLDER_FILES)
    for p in [*points_dir.glob("*.tmp"), *points_dir.glob("*.running")]:
        # Temporaries of atomic writes (<id>.parquet….tmp) and markers of points in flight
        # when an earlier run died; files not named like a point's are never touched.
        if _POINT_FILE.match(p.name[:16]) and p.name[16:17] == "." and p.is_file():
            p.unlink(missing_ok=True)
    n = len(sweep.experiments)
    ids = [sweep.point_id(i) for i in range(n)]
    hashes = [config_hash(sweep.experiments[i], sweep.points[i], fn) for i in range(n)]
    manifest_doc = _load_json(folder / _MANIFEST) or {}
    manifest = {
        e["point"]: e
        for e in manifest_doc.get("points", [])
        if isinstance(e, dict) and isinstance(e.get("point"), str)
    }
    finished = _point_files(points_dir)
    stale = finished - set(ids)
    if finished and not (resume or overwrite):
        raise ValueError(
            f"{folder} already holds {len(finished)} finished points; pass resume=True "
            "(--resume) to continue that sweep or overwrite=True (--overwrite) to start over"
        )
    if overwrite:
        for p in _recorded_files(points_dir, manifest):
            p.unlink(missing_ok=True)
        for p in (folder / "results.parquet", folder / _MANIFEST):
            p.unlink(missing_ok=True)
        manifest = {}
        finished = set()
    elif stale:
        raise ValueError(
            f"{folder} holds {len(stale)} points that are not in this sweep (the config "
            "changed?); use --overwrite or another --out"
        )
    # Every kept file is checked against its record before any point runs.
    trusted: dict[str, dict] = {}
    rerun: dict[str, str] = {}
    for i, pid in enumerate(ids):
        if pid not in finished:
            continue
        why = _verify(points_dir, pid, hashes[i], manifest)
        if why is None:
            trusted[pid] = _load_json(points_dir / f"{pid}.json")
        else:
            rerun[pid] = why
            warnings.warn(
                f"point {pid} {sweep.points[i]}: its file points/{pid}.parquet is not trusted "
                f"({why}); computing it again",
                ResumeWarning,
                stacklevel=3,
            )
    todo = [i for i, pid in enumerate(ids) if pid not in trusted]
    started = now()
    # jobs is a core budget: one process per point up to `jobs`, the rest as threads.
    workers = max(1, min(jobs, len(todo)))
    blas = max(1, jobs // workers) if scheduler is None else 1
    main_pid = os.getpid()
    tasks = [
        (
            fn,
            sweep.experiments[i],
            sweep.points[i],
            ids[i],
            points_dir,
            blas,
            True,
            main_pid,
            hashes[i],
        )
        for i in todo
    ]
    status: dict[str, str] = {}
    if todo:
        results = (
            _run_local_robust(tasks, workers, backend)
            if scheduler is None
            else _run_dask(tasks, scheduler)
        )
        bar = tqdm(total=len(todo), disable=not progress, desc=sweep.name, unit="point")
        try:
            for pid, state, _, record in results:
                status[pid] = state
                if state == "done" and record is not None:
                    trusted[pid] = record
                bar.update(1)
        except KeyboardInterrupt:
            bar.close()
            _write_manifest(folder, sweep, ids, hashes, trusted, {})
            raise SweepInterrupted(len(trusted), n, folder) from None
        bar.close()
    failed = {}
    for pid in ids:
        err = points_dir / f"{pid}.error.json"
        if pid not in trusted and err.exists():
            record = _load_json(err) or {}
            failed[pid] = str(record.get("error", "failed (unreadable error record)"))
    tables = [pd.read_parquet(points_dir / f"{pid}.parquet") for pid in ids if pid in trusted]
    table = _uniform_columns(pd.concat(tables, ignore_index=True)) if tables else pd.DataFrame()
    settings = (
        analysis_settings() if fn is analyse else fn.settings() if isinstance(fn, Analyse) else None
    )
    if settings is not None and not table.empty:
        # One multiple-testing family for the whole sweep (compare's family is one point).
        table = family_verdicts(table, alpha=settings["alpha"], correction=settings["correction"])
    if not table.empty:
        _write_parquet_atomic(table, folder / "results.parquet")
    else:
        (folder / "results.parquet").unlink(missing_ok=True)
    _write_manifest(folder, sweep, ids, hashes, trusted, failed)
    summary = pd.DataFrame(
        [
            {
                "point": pid,
                **sweep.points[i],
                "point_seed": sweep.experiments[i].seed,
                "status": "done" if pid in trusted else "failed" if pid in failed else "missing",
            }
            for i, pid in enumerate(ids)
        ]
    )
    if not table.empty and "n_overflow" in table.columns:
        # Networks excluded for overflow, per point, where the reader of a sweep looks first.
        per_point = table.groupby("point").agg(
            excluded_networks=("n_overflow", "max"), used=("n_networks", "max")
        )
        summary = summary.merge(per_point, left_on="point", right_index=True, how="left")
        summary["networks"] = summary["excluded_networks"] + summary.pop("used")
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
            analysis=settings,
            started=started,
            finished=now(),
            failed=failed,
            rerun=rerun,
        ),
    )
    ran = tuple(pid for pid in ids if pid in status)
    return SweepResult(table, folder, failed, ran, n, rerun)


def _write_manifest(folder, sweep, ids, hashes, trusted, failed) -> None:
    """``manifest.json``: every point's id, parameters, config hash, file and checksum."""
    entries = []
    for i, pid in enumerate(ids):
        rec = trusted.get(pid)
        entries.append(
            {
                "point": pid,
                "params": sweep.points[i],
                "config_hash": hashes[i],
                "status": "done" if rec else "failed" if pid in failed else "missing",
                "file": rec.get("file") if rec else None,
                "bytes": rec.get("bytes") if rec else None,
                "sha256": rec.get("sha256") if rec else None,
            }
        )
    write_json_atomic(folder / _MANIFEST, {"name": sweep.name, "points": entries})
