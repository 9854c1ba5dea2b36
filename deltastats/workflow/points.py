"""Running sweep points and checking their files: the worker, its checkpoint record, worker
processes killed from outside, Dask, and the verification of point files on resume.

A point's table is written atomically to ``points/<id>.parquet`` after its record
``points/<id>.json`` (id, config hash, size, SHA-256), so a kill never leaves a table without
its record; :func:`_verify` holds a file against its record (and ``manifest.json``) before a
resumed sweep trusts it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from .config import Experiment
from .folder import sha256_file
from .metadata import write_json_atomic

#: What computes one sweep point: an :class:`Experiment` → its tidy table of rows.
PointFn = Callable[[Experiment], pd.DataFrame]


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def _write_bytes_atomic(data: bytes, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    _write_bytes_atomic(_parquet_bytes(df), path)


_WATCHING: list[int] = []


def _watch_parent(main_pid: int) -> None:
    """In a worker process: exit as soon as the sweep's main process is gone.

    loky workers outlive a main process killed by SIGKILL (nothing runs its clean-up), and
    would go on computing and writing point files. When the parent dies the worker is
    re-parented, so ``os.getppid()`` no longer equals the sweep's pid.
    """
    if _WATCHING or os.getpid() == main_pid or os.getppid() != main_pid:
        return
    _WATCHING.append(main_pid)

    def watch() -> None:
        while os.getppid() == main_pid:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="deltastats-parent-watch", daemon=True).start()


def _run_point(
    fn: PointFn,
    exp: Experiment,
    point: dict,
    pid: str,
    folder: Path,
    blas_threads: int,
    write: bool = True,
    main_pid: int | None = None,
    chash: str = "",
) -> tuple[str, str, float, object]:
    """Worker: run one point and write its table atomically (or return it), or its error.

    A marker ``<id>.running`` exists while the point runs, so that when a worker process is
    killed (e.g. out of memory) the sweep knows which points were in flight. With
    ``write=False`` (a Dask cluster, whose workers may not share this file system) the
    table or error record is returned and the client writes it.
    """
    from threadpoolctl import threadpool_limits

    if main_pid is not None:
        _watch_parent(main_pid)
    t0 = time.perf_counter()
    marker = folder / f"{pid}.running"
    if write:
        marker.write_text(str(os.getpid()))
    try:
        with threadpool_limits(limits=blas_threads):
            table = fn(exp)
        table = table.copy()
        for i, (k, v) in enumerate(point.items()):
            table.insert(i, k, [v] * len(table))
        table.insert(0, "point", pid)
        table.insert(1, "point_seed", exp.seed)
        if write:
            record = _store(folder, pid, table, chash)
            return pid, "done", time.perf_counter() - t0, record
        return pid, "done", time.perf_counter() - t0, table
    except Exception as err:  # a failing point must not stop the sweep
        record = {"point": point, "error": repr(err), "traceback": traceback.format_exc()}
        if write:
            _store(folder, pid, record, chash)
        return pid, "failed", time.perf_counter() - t0, None if write else record
    finally:
        if write:
            marker.unlink(missing_ok=True)


def _store(folder: Path, pid: str, payload: pd.DataFrame | dict, chash: str) -> dict | None:
    """Write a point's table with its manifest record, or its error record.

    The record (``<id>.json``: id, config hash, file name, size, SHA-256) is written before
    the table, so a kill in between leaves a record without a table (the point is missing
    and runs again), never a table without its record.
    """
    if isinstance(payload, pd.DataFrame):
        data = _parquet_bytes(payload)
        record = {
            "point": pid,
            "config_hash": chash,
            "file": f"{pid}.parquet",
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "rows": len(payload),
        }
        write_json_atomic(folder / f"{pid}.json", record)
        _write_bytes_atomic(data, folder / f"{pid}.parquet")
        (folder / f"{pid}.error.json").unlink(missing_ok=True)
        return record
    write_json_atomic(folder / f"{pid}.error.json", payload)
    return None


def _run_local(tasks: list[tuple], workers: int, backend: str):
    from joblib import Parallel, delayed

    runner = Parallel(n_jobs=workers, backend=backend, return_as="generator_unordered")
    yield from runner(delayed(_run_point)(*t) for t in tasks)


def _run_alone(task: tuple) -> tuple[str, str, float, object]:
    """Run one point in a fresh worker process of its own; a point whose process dies again
    (killed by the system, e.g. out of memory) is recorded as failed with that cause."""
    from joblib.externals.loky import get_reusable_executor
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    pid, folder = task[3], task[4]
    t0 = time.perf_counter()
    try:
        executor = get_reusable_executor(max_workers=1, reuse=False)
        return executor.submit(_run_point, *task).result()
    except TerminatedWorkerError as err:
        cause = " ".join(str(err).split()) or repr(err)
        record = {
            "point": task[2],
            "error": "the worker process computing this point died (killed by the system, "
            f"e.g. out of memory): {cause}",
            "traceback": "",
        }
        _store(folder, pid, record, task[8])
        (folder / f"{pid}.running").unlink(missing_ok=True)
        return pid, "failed", time.perf_counter() - t0, None


def _run_local_robust(tasks: list[tuple], workers: int, backend: str):
    """:func:`_run_local`, surviving worker processes killed from outside.

    joblib aborts every point when one worker dies. The points then in flight (those with a
    ``.running`` marker) are run again one by one, each in a process of its own, so the one
    that kills its worker is recorded as failed and the others finish; the rest go on in
    parallel.
    """
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    remaining = {t[3]: t for t in tasks}
    while remaining:
        try:
            for result in _run_local(list(remaining.values()), workers, backend):
                remaining.pop(result[0], None)
                yield result
        except TerminatedWorkerError:
            folder = next(iter(remaining.values()))[4]
            suspects = [p for p in remaining if (folder / f"{p}.running").exists()]
            for p in suspects or list(remaining)[:1]:
                result = _run_alone(remaining.pop(p))
                yield result


def _check_scheduler(scheduler: str, timeout: float = 5.0) -> None:
    """Refuse an unreachable Dask scheduler at once (before any work)."""
    if not isinstance(scheduler, str) or not scheduler:
        raise ValueError(f"scheduler must be an address such as tcp://HOST:8786, got {scheduler!r}")
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ValueError(
            "scheduler= needs Dask distributed: pip install 'dask[distributed]'"
        ) from None
    address = scheduler.split("://", 1)[-1]
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"scheduler must be an address such as tcp://HOST:8786, got {scheduler!r}")
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout).close()
    except OSError as err:
        raise ValueError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None


def _run_dask(tasks: list[tuple], scheduler: str):
    """Run points on a Dask cluster; results come back to this process, which writes them."""
    from distributed import Client, as_completed

    with Client(scheduler, timeout="10s") as client:
        futures = [client.submit(_run_point, *t[:6], False, None, t[8], pure=False) for t in tasks]
        for fut in as_completed(futures):
            pid, state, seconds, payload = fut.result()
            chash = next(t[8] for t in tasks if t[3] == pid)
            record = _store(tasks[0][4], pid, payload, chash)
            yield pid, state, seconds, record


_POINT_FILE = re.compile(r"^[0-9a-f]{16}$")
_MANIFEST = "manifest.json"


def _point_files(points_dir: Path) -> set[str]:
    """Ids of the point tables in ``points_dir`` (files named like this package names them)."""
    return {p.stem for p in points_dir.glob("*.parquet") if _POINT_FILE.match(p.stem)}


def _load_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _verify(points_dir: Path, pid: str, chash: str, manifest: dict) -> str | None:
    """Why the table of point ``pid`` cannot be trusted, or ``None`` when it matches its
    record: same id, same config hash, same size and SHA-256 (the manifest's as well)."""
    record = _load_json(points_dir / f"{pid}.json")
    if record is None:
        return "no manifest record"
    if record.get("point") != pid or record.get("file") != f"{pid}.parquet":
        return f"its record belongs to point {record.get('point')!r}"
    if record.get("config_hash") != chash:
        return "it was computed from another config (config hash differs)"
    listed = manifest.get(pid)
    if isinstance(listed, dict) and listed.get("sha256") not in (None, record.get("sha256")):
        return "its checksum differs from the manifest's"
    path = points_dir / f"{pid}.parquet"
    try:
        size = path.stat().st_size
    except OSError as err:
        return f"unreadable ({err.strerror})"
    if size != record.get("bytes"):
        return f"size {size} bytes, the manifest says {record.get('bytes')} (truncated or edited)"
    if sha256_file(path) != record.get("sha256"):
        return "checksum differs from the manifest (edited or corrupted)"
    return None


def _recorded_files(points_dir: Path, manifest: dict) -> set[Path]:
    """Files in ``points_dir`` that a sweep recorded: the manifest's entries and the per-point
    records with the table and error files they name (plain names only)."""
    ids = set(manifest) | {p.stem for p in points_dir.glob("*.json") if _POINT_FILE.match(p.stem)}
    files = set()
    for pid in ids:
        if not _POINT_FILE.match(str(pid)):
            continue
        for suffix in (".parquet", ".json", ".error.json", ".running"):
            files.add(points_dir / f"{pid}{suffix}")
    return {p for p in files if p.is_file()}
