"""An exclusive ``fcntl`` lock on a directory, holding the owner's pid.

The kernel drops a ``flock`` when its process dies, so a lock file left by a killed backup
never blocks: the next run takes the lock, sees the dead pid written in it, logs that it
cleared a stale lock, and cleans that run's temp files.
"""
from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from ..errors import BackupLockedError

log = logging.getLogger("exporter.backup_manager")


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DirectoryLock:
    def __init__(self, path: Path, what: str = "backup directory") -> None:
        self.path = path
        self.what = what
        self.stale_pid: int | None = None
        self._fd: int | None = None

    def _read_pid(self, fd: int) -> int:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            return int(os.read(fd, 32).decode().strip() or 0)
        except ValueError:
            return 0

    def acquire(self) -> "DirectoryLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = self._read_pid(fd)
            os.close(fd)
            who = "this process" if owner == os.getpid() else f"process {owner}"
            raise BackupLockedError(f"{self.what} {self.path.parent} is locked by {who} "
                                    "(another backup or cleanup is running)") from None
        previous = self._read_pid(fd)
        if previous and previous != os.getpid() and not pid_alive(previous):
            self.stale_pid = previous
            log.warning("cleared a stale lock on %s left by dead process %d", self.path.parent, previous)
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:  # a full disk: give the lock back, or every later run finds it held
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
