"""The backup catalog mirrored in Redis (:class:`exporter.ports.CatalogMirror`).

Keys, per backup set (``<set>``: ``backup:`` and a hash of the real path of ``BACKUP_DIR``, see
``exporter.backup_manager.catalog.set_name``):

- ``opsstack:catalog-gen:<set>``: the set's generation, ``INCR``-ed by every process after it
  made, deleted, verified or drilled a backup (missing, as after ``FLUSHALL``: 0);
- ``opsstack:catalog:<set>``: one JSON value ``{"generation", "stamp", "entries"}`` written
  whole by the reader that rebuilt it from the files, only while the generation is still the one
  it read before reading them (a Lua compare-and-set), expiring a day after it was written.

A copy is served only when its generation is the set's and its stamp (the directory's inode and
mtime) the directory's now, so a change whose ``INCR`` never happened (a process killed between
the two, Redis down at that moment, a restart that lost the last second of the append-only file)
still sends readers to the files. Redis unreachable: the files are read, logged once per outage,
and Redis is left alone for a few seconds after each failure (:class:`.redis.Breaker`). A copy is
a shortcut, so a Redis that hangs (suspended, a peer gone without a reset) is given up after
:data:`TIMEOUT`, not the locks' 3 s: a scrape or a listing never waits longer for it.
"""
from __future__ import annotations

import json
from typing import Any

from .redis import Breaker, connect

KEEP_SECONDS = 86_400  # a mirror nobody reads for a day goes
TIMEOUT = 0.5  # seconds a call may wait for Redis before the files are read instead
_STORE = ("if (redis.call('get', KEYS[1]) or '0') == ARGV[1] then "
          "redis.call('set', KEYS[2], ARGV[2], 'EX', ARGV[3]) return 1 end return 0")


class RedisCatalog:
    def __init__(self, url: Any) -> None:
        self._client, errors = connect(url, TIMEOUT)
        self._breaker = Breaker(errors)

    def load(self, set_name: str, stamp: str) -> tuple[list[dict[str, Any]] | None, int | None]:
        found = self._breaker.call(None, "the backup catalog is not mirrored; the backup files are "
                                   "read instead", self._client.mget, f"opsstack:catalog-gen:{set_name}",
                                   f"opsstack:catalog:{set_name}")
        if found is None:
            return None, None
        generation, raw = int(found[0] or 0), found[1]
        try:
            copy = json.loads(raw) if raw else None
        except ValueError:  # not ours, or torn by hand: rebuilt over
            copy = None
        if isinstance(copy, dict) and copy.get("generation") == generation \
                and copy.get("stamp") == stamp and isinstance(copy.get("entries"), list):
            return copy["entries"], generation
        return None, generation

    def store(self, set_name: str, generation: int, stamp: str, entries: list[dict[str, Any]]) -> None:
        payload = json.dumps({"generation": generation, "stamp": stamp, "entries": entries},
                             separators=(",", ":"))
        self._breaker.call(None, "the backup catalog is not mirrored", self._client.eval, _STORE, 2,
                           f"opsstack:catalog-gen:{set_name}", f"opsstack:catalog:{set_name}",
                           generation, payload, KEEP_SECONDS)

    def changed(self, set_name: str) -> None:
        self._breaker.call(None, "a change of the backup catalog is seen through its directory only",
                           self._client.incr, f"opsstack:catalog-gen:{set_name}")
