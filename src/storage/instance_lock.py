"""One bot per SQLite file (issue 16): an exclusive ``flock`` on ``<SQLITE_PATH>.lock`` held while the bot runs.

With SQLite the bot is a single instance and always the leader; a second live bot on the same database file
would post every signal twice. The lock is taken without waiting (``LOCK_EX | LOCK_NB``); when another
process holds it, :class:`InstanceLocked` says which pid (written into the file by the holder) and what to do.
The kernel releases the lock when the process exits in any way (kill -9 included), so a crash never leaves a
stale lock behind; the file itself stays (it is empty of meaning without the lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class InstanceLocked(RuntimeError):
    """Another process holds the database's instance lock."""


class InstanceLock:
    """The exclusive lock on ``<database>.lock``; :meth:`acquire` raises :class:`InstanceLocked` when taken."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(database.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise InstanceLocked(
                f"another WyEli instance (pid {holder}) is running on the SQLite database {self.database} "
                f"(lock file {self.path}). With SQLite only one instance can run: stop the other one, or set "
                "DATABASE_URL (Postgres) to run several instances with a leader lease (RUNBOOK: several instances)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
