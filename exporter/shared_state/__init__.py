"""State shared by every process and host of a bot, in Redis (``REDIS_URL``): locks with expiry
and fencing (:class:`exporter.ports.SharedLocks`), counted once-per-window marks that let one of
many workers send a notification with their count and the channels' rate limits
(:class:`exporter.ports.SharedMarks`), and the backup catalog's
mirror (:class:`exporter.ports.CatalogMirror`). Redis loads only when configured (``pip install
'opsstack[redis]'``); without it, :func:`shared_locks` and :func:`catalog_mirror` give the no-ops.
"""
from __future__ import annotations

from typing import Any

from ..ports import LOCAL_ONLY, NO_MIRROR, CatalogMirror, SharedLocks


def shared_locks(settings: Any) -> SharedLocks:
    """The shared locks the settings configure: Redis when ``REDIS_URL`` is set."""
    if settings.general.redis_url is None:
        return LOCAL_ONLY
    from .redis import RedisLocks

    return RedisLocks(settings.general.redis_url, ttl=settings.general.lock_ttl)


def catalog_mirror(settings: Any) -> CatalogMirror:
    """The backup catalog's mirror the settings configure: Redis when ``REDIS_URL`` is set."""
    if settings.general.redis_url is None:
        return NO_MIRROR
    from .catalog import RedisCatalog

    return RedisCatalog(settings.general.redis_url)
