"""Provenance written next to every result: config, seed, package versions, platform, git commit."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

#: Packages whose versions every ``metadata.json`` records.
PACKAGES = (
    "deltastats",
    "numpy",
    "scipy",
    "pandas",
    "matplotlib",
    "seaborn",
    "joblib",
    "numba",
)


def package_versions() -> dict[str, str]:
    """Installed versions of deltastats and its main dependencies."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str | None:
    """The commit of the deltastats source tree, if it is a git checkout."""
    try:
        here = Path(__file__).resolve().parent
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        return res.stdout.strip() or None if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def now() -> str:
    """UTC time stamp, ISO 8601."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def numerics() -> dict[str, Any]:
    """What besides (config, seed) decides the last bits: the BLAS build and kernel family,
    and the engine's :data:`~deltastats.engine.USE_COMPILED_KERNELS` setting (compiled tanh
    layers or numpy's tanh)."""
    from threadpoolctl import threadpool_info

    from .. import engine

    # sorted: the libraries' load order (numpy's, scipy's) varies with what ran first
    blas = sorted(
        f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    )
    return {"blas": blas, "use_compiled_kernels": bool(engine.USE_COMPILED_KERNELS)}


def metadata(config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The provenance record: ``config``, package versions, platform, numerics, git commit,
    plus ``extra``."""
    return {
        "config": config,
        "versions": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numerics": numerics(),
        "git_commit": git_commit(),
        **extra,
    }


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write JSON through a temporary file and a rename, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False, default=str)
        os.replace(tmp, path)
    finally:
        # A full disk fails inside json.dump: leave no half-written temporary behind.
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
