"""A ``LogRecord`` that costs the caller less to make, installed while the logger manager is on.

``logging.LogRecord.__init__`` splits the source path of every record again (``basename`` and
``splitext``, about a quarter of its cost) and looks up the thread and the process through
several calls. :class:`FastRecord` keeps the split per path and makes the same attributes, in
the same order, with the same values: every handler, the bot's own included, sees a record it
cannot tell from the standard one (``tests/test_fast_record.py`` compares them). The process id
is kept too (``os.getpid()`` is a system call) and renewed in a forked child.

Installed with ``logging.setLogRecordFactory`` by :func:`install` only where it has been
compared with the standard record (CPython 3.11: 3.12 adds ``taskName``, 3.13 takes the time in
nanoseconds) and only over the standard factory: a bot's own factory is left alone.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Mapping

SUPPORTED = sys.version_info[:2] == (3, 11)
_PATH_CACHE_LIMIT = 4096

_split_paths: dict[str, tuple[str, str]] = {}
_level_names = logging._levelToName  # the dict getLevelName reads first
_modules = sys.modules
# The process id, a system call each time otherwise: set by install(), renewed in a forked child.
_pid = [0]
_fork_hook = []  # whether the hook is registered (os.register_at_fork has no undo)


def _renew_pid() -> None:
    _pid[0] = os.getpid()


def _split(pathname: str) -> tuple[str, str]:
    try:
        filename = os.path.basename(pathname)
        split = (filename, os.path.splitext(filename)[0])
    except (TypeError, ValueError, AttributeError):
        return (pathname, "Unknown module")
    if len(_split_paths) >= _PATH_CACHE_LIMIT:
        _split_paths.clear()
    _split_paths[pathname] = split
    return split


class FastRecord(logging.LogRecord):
    """The standard record of CPython 3.11, made with fewer calls (see the module's text)."""

    def __init__(self, name, level, pathname, lineno, msg, args, exc_info, func=None, sinfo=None,
                 **kwargs):  # noqa: PLR0913 - LogRecord's signature
        if not (logging.logThreads and logging.logMultiprocessing and logging.logProcesses):
            super().__init__(name, level, pathname, lineno, msg, args, exc_info, func, sinfo, **kwargs)
            return  # a bot that switched some of them off gets the standard record
        created = time.time()
        self.name = name
        self.msg = msg
        if args and len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
            args = args[0]
        self.args = args
        self.levelname = _level_names.get(level) or logging.getLevelName(level)
        self.levelno = level
        self.pathname = pathname
        self.filename, self.module = _split_paths.get(pathname) or _split(pathname)
        self.exc_info = exc_info
        self.exc_text = None
        self.stack_info = sinfo
        self.lineno = lineno
        self.funcName = func
        self.created = created
        self.msecs = int((created - int(created)) * 1000) + 0.0  # as the standard record (gh-89047)
        self.relativeCreated = (created - logging._startTime) * 1000
        self.thread = threading.get_ident()
        self.threadName = threading.current_thread().name
        self.processName = "MainProcess"
        multiprocessing = _modules.get("multiprocessing")
        if multiprocessing is not None:
            try:
                self.processName = multiprocessing.current_process().name
            except Exception:  # noqa: BLE001 - as the standard record: the default name stays
                pass
        self.process = _pid[0]


def install() -> bool:
    """Make records with :class:`FastRecord` where it is supported and the factory is the
    standard one; True when installed (then :func:`uninstall` puts the standard one back)."""
    if not SUPPORTED or logging.getLogRecordFactory() is not logging.LogRecord:
        return False
    _renew_pid()
    if not _fork_hook:
        os.register_at_fork(after_in_child=_renew_pid)
        _fork_hook.append(True)
    logging.setLogRecordFactory(FastRecord)
    return True


def uninstall() -> None:
    """The standard factory again, unless someone has installed another one since."""
    if logging.getLogRecordFactory() is FastRecord:
        logging.setLogRecordFactory(logging.LogRecord)
