"""Locks and once-per-window marks in Redis. Locks: ``SET key value NX PX ttl``, kept alive by a thread while held, released only
by their holder (a Lua compare-and-delete), with a fencing token from ``INCR``.

Keys: ``opsstack:lock:<name>`` holds ``<token> <host> <pid>`` and expires ``LOCK_TTL`` seconds
after its last renewal, so a holder killed with SIGKILL blocks the next one for at most that
long; ``opsstack:fence:<name>`` counts holders (the token). Redis unreachable when a lock is
taken: logged, and the caller goes on with its local lock only (a Redis outage must not stop
backups on a single host); a lock lost while held (expired during a pause, or taken over) is
found by :meth:`Hold.check`, which the caller runs before making its work visible.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import LockHeldError, LockLostError

log = logging.getLogger("exporter.shared_state")
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class Hold:
    def __init__(self, name: str, token: int) -> None:
        self.name, self.token = name, token
        self.lost = threading.Event()

    def check(self) -> None:
        if self.lost.is_set():
            raise LockLostError(f"the shared lock {self.name!r} (token {self.token}) expired or was "
                                "taken over while the work was under way; nothing was made visible")


class RedisLocks:
    def __init__(self, url: Any, ttl: float) -> None:
        from .._extras import require_extra

        redis = require_extra("redis", "redis", "REDIS_URL is set")
        self._errors = redis.exceptions.RedisError
        self._client = redis.Redis.from_url(url.get(), socket_connect_timeout=3, socket_timeout=3)
        self.ttl = ttl
        self._owner = f"{socket.gethostname()} {os.getpid()}"

    @contextmanager
    def hold(self, name: str) -> Iterator[Hold]:
        key = f"opsstack:lock:{name}"
        try:
            token = int(self._client.incr(f"opsstack:fence:{name}"))
            value = f"{token} {self._owner}"
            if not self._client.set(key, value, nx=True, px=int(self.ttl * 1000)):
                holder = self._client.get(key)
                raise LockHeldError(f"the shared lock {name!r} is held by "
                                    f"{holder.decode(errors='replace') if holder else 'another holder'}")
        except self._errors as exc:
            log.warning("Redis unreachable for the shared lock %r (%s): going on with the local "
                        "lock only", name, type(exc).__name__)
            yield Hold(name, 0)
            return
        hold = Hold(name, token)
        stop = threading.Event()
        keeper = threading.Thread(target=self._keep, args=(key, value, hold, stop),
                                  name=f"opsstack-lock-{name}", daemon=True)
        keeper.start()
        try:
            yield hold
        finally:
            stop.set()
            keeper.join(timeout=5)
            try:
                self._client.eval(_RELEASE, 1, key, value)
            except self._errors as exc:  # it expires on its own
                log.warning("could not release the shared lock %r (%s)", name, type(exc).__name__)

    def first_in_window(self, key: str, seconds: float) -> bool:
        """``SET opsstack:once:<key> NX PX``: True where this call set it. Redis unreachable:
        True (better a duplicate notification than a lost one), logged."""
        try:
            return bool(self._client.set(f"opsstack:once:{key}", self._owner, nx=True,
                                         px=max(1, int(seconds * 1000))))
        except self._errors as exc:
            log.warning("Redis unreachable for the mark %r (%s): going on as the first", key,
                        type(exc).__name__)
            return True

    def _keep(self, key: str, value: str, hold: Hold, stop: threading.Event) -> None:
        """Renew every third of the TTL; a renewal refused means the lock is lost."""
        while not stop.wait(self.ttl / 3):
            try:
                if not self._client.eval(_RENEW, 1, key, value, int(self.ttl * 1000)):
                    hold.lost.set()
                    return
            except self._errors as exc:
                log.warning("could not renew the shared lock at %s (%s)", key, type(exc).__name__)
