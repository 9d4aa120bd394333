"""exporter.integrations.celery_redis against a real redis-server stopped at the worst moment.

kombu's own Redis transport loses a message when Redis stops after the consumer took it and
before it recorded it as unacked; the transport of the integration returns such a message to its
queue, and one whose take Redis ran but never answered (its reply dropped at shutdown).
"""
from __future__ import annotations

import pytest
import redis as redis_py
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.transport import redis as kombu_redis

from exporter.integrations import celery_redis

QUEUE = Queue("celery", Exchange("celery", type="direct"), routing_key="celery")
TAKING = celery_redis.Channel.taking_list("celery")
ALL_PRIORITIES = {"priority_steps": [0, 3, 6, 9]}  # kombu's default: BRPOP over four lists


def _publish(url: str, *bodies: dict) -> None:
    with Connection(url) as connection:
        producer = Producer(connection.channel())
        for body in bodies:
            producer.publish(body, exchange=QUEUE.exchange, routing_key="celery", declare=[QUEUE])


def _consume(url: str, expected: int, options: dict | None = None, no_ack: bool = False) -> list:
    """Bodies (and whether redelivered) a consumer with the integration's transport receives."""
    received: list = []

    def on_message(body, message):
        received.append((body, bool(message.delivery_info.get("redelivered"))))
        if not no_ack:
            message.ack()

    with Connection(url, transport=celery_redis.Transport, transport_options=options or {}) as connection:
        with Consumer(connection.channel(), [QUEUE], callbacks=[on_message], no_ack=no_ack):
            while len(received) < expected:
                connection.drain_events(timeout=5)
    return received


def _lists(url: str) -> dict:
    client = redis_py.Redis.from_url(url)
    try:
        return {"queue": client.llen("celery"), "taking": client.llen(TAKING), "unacked": client.hlen("unacked")}
    finally:
        client.close()


def _take_while_redis_stops(redis, monkeypatch, transport, options=None) -> list:
    """One message published; a consumer takes it and Redis stops (SIGTERM) before the consumer
    records it as unacked; Redis starts again on the same append-only file. What ran."""
    _publish(redis.url, {"id": "dl-1"})
    original_append = kombu_redis.QoS.append

    def append_after_redis_stops(self, message, delivery_tag):
        redis.stop()
        return original_append(self, message, delivery_tag)

    monkeypatch.setattr(kombu_redis.QoS, "append", append_after_redis_stops)
    received: list = []
    connection = Connection(redis.url, transport=transport, transport_options=options or {})
    with pytest.raises(connection.connection_errors):
        with Consumer(connection.channel(), [QUEUE], callbacks=[lambda body, message: received.append(body)]):
            connection.drain_events(timeout=5)
    monkeypatch.setattr(kombu_redis.QoS, "append", original_append)
    redis.start()
    return received


def test_kombus_own_transport_loses_a_message_taken_as_redis_stops(start_redis, monkeypatch):
    redis = start_redis()
    assert _take_while_redis_stops(redis, monkeypatch, None) == []
    # In neither the queue nor unacked: no visibility timeout can bring it back.
    assert _lists(redis.url) == {"queue": 0, "taking": 0, "unacked": 0}


def test_a_message_taken_as_redis_stops_runs_once_when_redis_is_back(start_redis, monkeypatch):
    redis = start_redis()
    assert _take_while_redis_stops(redis, monkeypatch, celery_redis.Transport) == []
    assert _lists(redis.url) == {"queue": 0, "taking": 1, "unacked": 0}  # kept by Redis, not the process
    assert celery_redis._stranded == []

    assert _consume(redis.url, 1) == [({"id": "dl-1"}, False)]
    assert _lists(redis.url) == {"queue": 0, "taking": 0, "unacked": 0}


def test_a_take_redis_ran_but_never_answered_runs_once(start_redis):
    """Redis ran the consumer's BLMOVE in its last moment after SIGTERM and exited without the
    reply (or the consumer was killed before recording it): the message waits in the taking list
    and the next consumer of the queue gets it back, once."""
    redis = start_redis()
    _publish(redis.url, {"id": "dl-1"}, {"id": "dl-2"})
    client = redis_py.Redis.from_url(redis.url)
    assert client.lmove("celery", TAKING, "RIGHT", "LEFT") is not None  # what the unanswered BLMOVE did
    client.close()
    redis.stop()
    redis.start()

    received = _consume(redis.url, 2)
    assert sorted(body["id"] for body, _ in received) == ["dl-1", "dl-2"]
    assert _lists(redis.url) == {"queue": 0, "taking": 0, "unacked": 0}


def test_with_several_priorities_it_falls_back_to_brpop_and_keeps_the_message_in_memory(start_redis, monkeypatch):
    redis = start_redis()
    try:
        received = _take_while_redis_stops(redis, monkeypatch, celery_redis.Transport, ALL_PRIORITIES)
        assert received == []
        assert len(celery_redis._stranded) == 1  # only this process holds it
        assert _consume(redis.url, 1, ALL_PRIORITIES) == [({"id": "dl-1"}, True)]
        assert celery_redis._stranded == []
        assert _lists(redis.url) == {"queue": 0, "taking": 0, "unacked": 0}
    finally:
        celery_redis._stranded.clear()


@pytest.mark.parametrize("no_ack", [False, True], ids=["acks", "no-acks"])
def test_steady_work_leaves_nothing_taken(start_redis, no_ack):
    redis = start_redis()
    bodies = [{"id": f"dl-{number}"} for number in range(200)]
    _publish(redis.url, *bodies)

    received = _consume(redis.url, len(bodies), no_ack=no_ack)
    assert sorted(body["id"] for body, _ in received) == sorted(body["id"] for body in bodies)
    assert _lists(redis.url) == {"queue": 0, "taking": 0, "unacked": 0}
