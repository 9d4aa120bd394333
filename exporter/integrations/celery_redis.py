"""kombu's Redis transport without its lost-message window on a broker restart.

kombu's Redis transport takes a message off its queue with ``BRPOP`` and only then, with a
second command on another connection (``QoS.append``: ZADD + HSET into ``unacked_index`` /
``unacked``), records it as unacknowledged. If Redis goes away between the two (a restart, a
failover), ``QoS.append`` raises a connection error, the consumer reconnects, and the message,
no longer in the queue and never in ``unacked``, exists only in the dead channel's memory: the
visibility timeout cannot bring it back and the task never runs (``task_acks_late`` does not help:
there is nothing left to redeliver).

This transport keeps such a message in the process and pushes it back onto its queue (the end
BRPOP reads next, marked ``redelivered``) as soon as a channel to Redis opens again, before that
channel consumes anything. A process killed in that window still loses it (it was only in memory).

    app.conf.broker_transport = "exporter.integrations.celery_redis:Transport"

(an explicit transport wins over the ``redis://`` scheme of ``broker_url``; the URL and every
``broker_transport_options`` stay as they are).
"""
from __future__ import annotations

import logging
import threading

from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

_stranded: list[tuple[dict, str, str]] = []  # (payload, exchange, routing key), oldest first
_lock = threading.Lock()


class QoS(kombu_redis.QoS):
    def append(self, message, delivery_tag):
        try:
            super().append(message, delivery_tag)
        except self.channel.connection_errors:
            delivery = message.delivery_info
            with _lock:
                _stranded.append((message._raw, delivery["exchange"], delivery["routing_key"]))
            log.warning("broker lost while taking message %s: kept to requeue on reconnect", delivery_tag)
            raise


class Channel(kombu_redis.Channel):
    QoS = QoS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)  # pings Redis: raises while it is still away
        self.requeue_stranded()

    def requeue_stranded(self) -> int:
        """Push the messages a lost connection left in memory back onto their queues."""
        count = 0
        with _lock:
            while _stranded:
                payload, exchange, routing_key = _stranded[0]
                with self.conn_or_acquire() as client, client.pipeline() as pipe:
                    self._do_restore_message(payload, exchange, routing_key, pipe, leftmost=False)
                    pipe.execute()
                _stranded.pop(0)
                count += 1
        if count:
            log.warning("requeued %d message(s) taken while the broker went away", count)
        return count


class Transport(kombu_redis.Transport):
    Channel = Channel
