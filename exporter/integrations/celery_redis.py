"""kombu's Redis transport without its lost-message windows on a broker restart.

kombu's Redis transport takes a message off its queue with ``BRPOP`` and only then, with a
second command (``QoS.append``: ZADD + HSET into ``unacked_index`` / ``unacked``), records it as
unacknowledged. A message taken in between two such steps is lost in two ways when Redis stops
(a restart, a failover), and then neither the visibility timeout nor ``task_acks_late`` can bring
it back, since it is in neither the queue nor ``unacked``:

1. Redis goes away after the ``BRPOP`` reply and before the unacked write: the message exists
   only in the consumer's memory.
2. Redis runs the ``BRPOP`` in its last moment after SIGTERM, saves the pop in its append-only
   file and exits without sending the reply: no client ever sees the message.

This transport takes a message the way Redis documents as a reliable queue: ``BLMOVE`` moves it
atomically from the queue into a *taking list* beside it (``<queue>\\x06\\x16taking``), and the
unacked write removes it from there in the same MULTI/EXEC. A message left in a taking list (either
case above, or a consumer killed between the two steps) is moved back onto its queue when a
consumer next starts consuming that queue: after a broker restart, at the latest when the
consumer reconnects. At worst a message runs twice (a consumer that was mid-take when another
one started), never zero times.

``BLMOVE`` reads one list, so it serves a consumer of one queue without priorities (the
transport's default ``priority_steps`` is ``[0]``; a producer must use this transport too, or
send no priority). A consumer of several queues, with several priority steps or with a
``global_keyprefix`` falls back to ``BRPOP``; there only case 1 is covered, by keeping the message
in the process and pushing it back onto its queue when a channel opens again.

    app.conf.broker_transport = "exporter.integrations.celery_redis:Transport"

(an explicit transport wins over the ``redis://`` scheme of ``broker_url``; the URL and every
``broker_transport_options`` stay as they are). Needs Redis 6.2 or later (``BLMOVE``).
"""
from __future__ import annotations

import contextlib
import logging
import threading
from queue import Empty
from time import monotonic

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

log = logging.getLogger(__name__)

TAKING_SUFFIX = "taking"

_stranded: list[tuple[dict, str, str]] = []  # (payload, exchange, routing key), oldest first
_lock = threading.Lock()


class QoS(kombu_redis.QoS):
    """Records a taken message as unacked and drops it from its taking list in one MULTI/EXEC."""

    _forget: tuple[str, bytes] | None = None  # (taking list, message) of the append under way

    def append(self, message, delivery_tag):
        self._forget = self.channel.pop_taken()
        try:
            super().append(message, delivery_tag)
        except self.channel.connection_errors:
            if self._forget is None:  # taken by BRPOP: only this process holds it now
                delivery = message.delivery_info
                with _lock:
                    _stranded.append((message._raw, delivery["exchange"], delivery["routing_key"]))
                log.warning("broker lost while taking message %s: kept to requeue on reconnect", delivery_tag)
            raise
        finally:
            self._forget = None

    @contextlib.contextmanager
    def pipe_or_acquire(self, pipe=None, client=None):
        with super().pipe_or_acquire(pipe, client) as pipe:
            if self._forget is not None:
                pipe.lrem(self._forget[0], 1, self._forget[1])
            yield pipe


class Channel(kombu_redis.Channel):
    QoS = QoS
    priority_steps = [0]

    def __init__(self, *args, **kwargs):
        self._taking: tuple[str, str] | None = None  # (queue, taking list) of the BLMOVE in flight
        self._taken: tuple[str, bytes] | None = None  # (taking list, message) until recorded unacked
        super().__init__(*args, **kwargs)  # pings Redis: raises while it is still away
        self.requeue_stranded()

    @staticmethod
    def taking_list(queue: str) -> str:
        return f"{queue}{kombu_redis.Channel.sep}{TAKING_SUFFIX}"

    def pop_taken(self) -> tuple[str, bytes] | None:
        taken, self._taken = self._taken, None
        return taken

    # ------------------------------------------------------------------ consuming a queue
    def basic_consume(self, queue, *args, **kwargs):
        if queue not in self._fanout_queues:
            self.return_taken(queue)
        return super().basic_consume(queue, *args, **kwargs)

    def return_taken(self, queue: str) -> int:
        """Move the messages left in ``queue``'s taking list back onto the queue (read next)."""
        if self.global_keyprefix:
            return 0
        key, taking = self._q_for_pri(queue, self.priority_steps[0]), self.taking_list(queue)
        count = 0
        with self.conn_or_acquire() as client:
            while client.lmove(taking, key, "RIGHT", "RIGHT") is not None:
                count += 1
        if count:
            log.warning("returned %d message(s) left taken from queue %s", count, queue)
        return count

    def _single_key(self) -> tuple[str, str] | None:
        """The queue and its one list when BLMOVE can serve this consumer, else None."""
        if self.global_keyprefix or len(self.priority_steps) != 1:
            return None
        queues = self._queue_cycle.consume(len(self.active_queues))
        if len(queues) != 1:
            return None
        return queues[0], self._q_for_pri(queues[0], self.priority_steps[0])

    def _brpop_start(self, timeout=None):
        single = self._single_key()
        if single is None:
            self._taking = None
            return super()._brpop_start(timeout)
        queue, key = single
        self._taking = (queue, self.taking_list(queue))
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        wait = self.brpop_timeout if timeout is None else timeout
        self.client.connection.send_command("BLMOVE", key, self._taking[1], "RIGHT", "LEFT", wait or 0)

    def _brpop_read(self, **options):
        if self._taking is None:
            return super()._brpop_read(**options)
        (queue, taking), self._taking = self._taking, None
        try:
            try:
                item = self.client.parse_response(self.client.connection, "BLMOVE", **options)
            except self.connection_errors:
                self.client.connection.disconnect()  # the next poll reconnects
                raise
            if item is None:
                raise Empty()
            self._taken = (taking, item)
            self._queue_cycle.rotate(queue)
            self.connection._deliver(loads(bytes_to_str(item)), queue)
            if self._taken is not None:  # consumed without acks: nothing will record it
                with self.conn_or_acquire() as client:
                    client.lrem(taking, 1, item)
            return True
        finally:
            self._taken = None
            self._in_poll = None
            flush_reauth = getattr(self, "_flush_brpop_reauth", None)  # kombu >= 5.6
            if flush_reauth is not None:
                flush_reauth()

    # ------------------------------------------------------------------ the BRPOP fallback
    def requeue_stranded(self) -> int:
        """Push the messages a lost connection left in this process back onto their queues."""
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
