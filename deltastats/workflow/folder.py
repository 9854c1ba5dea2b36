"""The output folder of a run or sweep: one writer at a time, checksums, leftover temporaries.

- :class:`FolderLock` — a lock file (pid, host, start time) so that two sweeps never write
  the same folder; a lock whose process is gone (same host, dead pid) is taken over with a
  warning.
- :func:`clean_temporaries` — removes the ``<file>*.tmp`` files an atomic write leaves behind
  when the process is killed or the disk fills up between writing and renaming.
- :func:`sha256_file` — the checksum a sweep's manifest records for each point file.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import warnings
from pathlib import Path

from .metadata import now

#: The lock file that keeps a second sweep out of a results folder (pid, host, start time).
LOCK_NAME = "sweep.lock"


class FolderLockedError(ValueError):
    """Another live process holds the output folder's lock."""


class StaleLockWarning(UserWarning):
    """A lock left by a process that no longer exists was taken over."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OverflowError:
        return False
    return True


class FolderLock:
    """Exclusive right to write ``folder``: the file ``folder/sweep.lock`` holding the owner's
    pid, host and start time.

    The lock file is written to a temporary name and hard-linked into place, so it appears
    complete or not at all, and ``link`` fails when the name exists: of two processes only
    one gets it. Use as a context manager; :meth:`release` removes the file only if it is
    still this process's.

    Raises
    ------
    FolderLockedError
        On :meth:`acquire`, when a live process (or one on another host, which cannot be
        checked) holds the lock.
    """

    def __init__(self, folder: str | Path, purpose: str = "sweep") -> None:
        self.path = Path(folder) / LOCK_NAME
        self.record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": now(),
            "purpose": purpose,
        }
        self.held = False

    def _read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> FolderLock:
        """Take the lock (taking over a stale one with a :class:`StaleLockWarning`)."""
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=LOCK_NAME, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.record, f)
            for _ in range(3):
                try:
                    os.link(tmp, self.path)
                    self.held = True
                    return self
                except FileExistsError:
                    pass
                other = self._read()
                if other is None:
                    raise FolderLockedError(
                        f"{self.path.parent} is locked by an unreadable {self.path.name}; if "
                        "no sweep is writing there, delete that file"
                    ) from None
                pid, host = other.get("pid"), other.get("host")
                mine = host == self.record["host"]
                if mine and isinstance(pid, int) and not _alive(pid):
                    warnings.warn(
                        f"{self.path} was left by process {pid} (started {other.get('started')}),"
                        " which no longer runs; taking the lock over",
                        StaleLockWarning,
                        stacklevel=3,
                    )
                    self.path.unlink(missing_ok=True)
                    continue
                where = "" if mine else f" on host {host}"
                hint = "" if mine else f"; if no sweep runs there, delete {self.path}"
                raise FolderLockedError(
                    f"another sweep (pid {pid}{where}, started {other.get('started')}) is "
                    f"writing to {self.path.parent}; wait for it to end or use another "
                    f"--out{hint}"
                )
            raise FolderLockedError(f"could not take the lock {self.path}")
        finally:
            os.unlink(tmp)

    def release(self) -> None:
        """Remove the lock file if this process holds it."""
        if self.held and self._read() == self.record:
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def clean_temporaries(folder: str | Path, names: tuple[str, ...]) -> list[Path]:
    """Remove the temporaries ``<name>*.tmp`` that atomic writes of ``names`` left in ``folder``.

    A write goes to ``<name><random>.tmp`` and is renamed over ``<name>``; a kill or a full disk
    between the two leaves the temporary. Only names this package writes are matched, so other
    files in the folder are never touched. Call it while holding the folder's lock.

    Returns
    -------
    list of Path
        The files removed.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for name in names:
        for p in folder.glob(f"{name}*.tmp"):
            if p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
