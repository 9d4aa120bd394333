"""Locks and counted once-per-window marks in Redis. Locks: ``SET key value NX PX ttl``, kept
alive by a thread while held, released only by their holder (a Lua compare-and-delete), with a
fencing token from ``INCR``. Marks: ``opsstack:raised:<key>``, ``INCR``-ed by each process that
raises an alert and expiring one window after the first (whose count of 1 makes it the notifier).

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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import LockHeldError, LockLostError

log = logging.getLogger("exporter.shared_state")
RETRY_AFTER = 5.0  # seconds without asking Redis after it failed
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_MARK = ("local n = redis.call('incr', KEYS[1]) "
         "if n == 1 then redis.call('pexpire', KEYS[1], ARGV[1]) end return n")
# A token bucket of ARGV[1] a minute in a hash {tokens, at}, on the server's clock: 0 when a token
# was taken, else the seconds until one is there (as text: Lua numbers become integers).
_TAKE_SLOT = """
local capacity = tonumber(ARGV[1])
local clock = redis.call('time')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local saved = redis.call('hmget', KEYS[1], 'tokens', 'at')
local tokens = tonumber(saved[1]) or capacity
tokens = math.min(capacity, tokens + (now - (tonumber(saved[2]) or now)) * capacity / 60)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) * 60 / capacity end
redis.call('hset', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('expire', KEYS[1], 120)
return tostring(wait)
"""
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class Hold:
    def __init__(self, name: str, token: int) -> None:
        self.name, self.token = name, token
        self.lost = threading.Event()

    def check(self) -> None:
        if self.lost.is_set():
            raise LockLostError(f"the shared lock {self.name!r} (token {self.token}) expired or was "
                                "taken over while the work was under way; nothing was made visible")


class Breaker:
    """Calls to Redis that fail fast while it is down: after a failure none is made for
    :data:`RETRY_AFTER` seconds (an unreachable server costs the caller's thread no timeouts),
    the first failure of an outage is logged as a warning and the recovery as info."""

    def __init__(self, errors: type[Exception], clock: Callable[[], float] = time.monotonic) -> None:
        self.errors, self.clock, self.down_until = errors, clock, 0.0

    def call(self, fallback: Any, what: str, method: Callable[..., Any], *args: Any) -> Any:
        """``method(*args)``, or ``fallback`` when Redis fails or failed in the last seconds."""
        if self.clock() < self.down_until:
            return fallback
        try:
            result = method(*args)
        except self.errors as exc:
            if not self.down_until:
                log.warning("Redis unreachable (%s): %s", type(exc).__name__, what)
            self.down_until = self.clock() + RETRY_AFTER
            return fallback
        if self.down_until:
            log.info("Redis reachable again")
            self.down_until = 0.0
        return result


def connect(url: Any, timeout: float = 3.0) -> tuple[Any, type[Exception]]:
    """A client of the Redis at ``url`` (a Secret: never logged) with short timeouts, and the
    base class of its errors."""
    from .._extras import require_extra

    redis = require_extra("redis", "redis", "REDIS_URL is set")
    return (redis.Redis.from_url(url.get(), socket_connect_timeout=timeout, socket_timeout=timeout),
            redis.exceptions.RedisError)


class RedisLocks:
    def __init__(self, url: Any, ttl: float) -> None:
        self._client, self._errors = connect(url)
        self._breaker = Breaker(self._errors)
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

    def mark(self, key: str, seconds: float) -> int:
        """``INCR opsstack:raised:<key>``, which expires ``seconds`` after the first mark. Redis
        unreachable: 1 (better a duplicate notification than a lost one), logged."""
        return int(self._breaker.call(1, "alerts are notified by every worker that raises them",
                                      self._client.eval, _MARK, 1, f"opsstack:raised:{key}",
                                      max(1, int(seconds * 1000))))

    def count(self, key: str) -> int:
        return int(self._breaker.call(0, "alerts are notified without the other workers' count",
                                      self._client.get, f"opsstack:raised:{key}") or 0)

    def take_slot(self, key: str, per_minute: int) -> float | None:
        """``opsstack:rate:<key>``, a token bucket shared by every process (:data:`_TAKE_SLOT`)."""
        wait = self._breaker.call(None, "each process keeps its own alert rate limits",
                                  self._client.eval, _TAKE_SLOT, 1, f"opsstack:rate:{key}", per_minute)
        return None if wait is None else float(wait)

    def _keep(self, key: str, value: str, hold: Hold, stop: threading.Event) -> None:
        """Renew every third of the TTL; a renewal refused means the lock is lost."""
        while not stop.wait(self.ttl / 3):
            try:
                if not self._client.eval(_RENEW, 1, key, value, int(self.ttl * 1000)):
                    hold.lost.set()
                    return
            except self._errors as exc:
                log.warning("could not renew the shared lock at %s (%s)", key, type(exc).__name__)
