"""Hypothesis 1 of the lost rehearsal download, made deterministic: kombu's Redis transport pops
a message with BRPOP and only afterwards writes it into the unacked hash/zset (QoS.append, a
separate pipeline on another connection). If Redis goes away in between, the message is in the
worker's memory only: gone from the queue, absent from ``unacked``, so the visibility timeout
never brings it back.

The test stops Redis (SIGTERM, as the rehearsal's fault does) exactly inside that window and
shows that after Redis is back the message is neither in the queue nor in ``unacked``.
"""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time

import pytest

kombu = pytest.importorskip("kombu")
from kombu import Connection, Consumer, Exchange, Producer, Queue  # noqa: E402
from kombu.transport import redis as kredis  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class _Redis:
    def __init__(self, workdir, port):
        self.argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir),
                     "--save", "", "--appendonly", "yes"]
        self.port, self.log, self.proc = port, workdir / "redis.log", None

    def start(self):
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not _pings(self.port):
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.05)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)


def _take_while_redis_stops(tmp_path, monkeypatch, transport):
    """Publish one message, stop Redis inside the BRPOP -> unacked window of a consumer, start
    Redis again; the callback's bodies, the Redis URL and the running Redis."""
    port = _free_port()
    redis = _Redis(tmp_path, port)
    redis.start()
    url = f"redis://127.0.0.1:{port}/0"
    with Connection(url) as producer_conn:
        Producer(producer_conn.channel()).publish({"id": "dl-lost"}, exchange=QUEUE.exchange,
                                                  routing_key="celery", declare=[QUEUE])
    original_append = kredis.QoS.append

    def append_after_redis_stops(self, message, delivery_tag):
        redis.stop()  # the message has been popped (BRPOP) but is not in "unacked" yet
        return original_append(self, message, delivery_tag)

    monkeypatch.setattr(kredis.QoS, "append", append_after_redis_stops)
    received = []
    conn = Connection(url, transport=transport, transport_options={"visibility_timeout": 20})
    try:
        with pytest.raises(conn.connection_errors):
            with Consumer(conn.channel(), [QUEUE], callbacks=[lambda body, msg: received.append(body)]):
                conn.drain_events(timeout=5)
    finally:
        monkeypatch.setattr(kredis.QoS, "append", original_append)
        try:
            conn.release()
        except Exception:
            pass
    redis.start()  # same port, same append-only file
    return received, url, redis


def _queued(url):
    import redis as redis_py

    client = redis_py.Redis.from_url(url)
    try:
        return client.llen("celery"), client.hlen("unacked")
    finally:
        client.close()


QUEUE = Queue("celery", Exchange("celery", type="direct"), routing_key="celery")
needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")


@needs_redis
def test_kombu_redis_loses_a_message_taken_as_redis_stops(tmp_path, monkeypatch):
    received, url, redis = _take_while_redis_stops(tmp_path, monkeypatch, None)
    try:
        assert received == []  # the task never ran
        # Lost: neither in the queue nor in unacked, so no restore can ever bring it back.
        assert _queued(url) == (0, 0)
    finally:
        redis.stop()


@needs_redis
def test_celery_redis_transport_requeues_it_on_reconnect(tmp_path, monkeypatch):
    from exporter.integrations import celery_redis

    received, url, redis = _take_while_redis_stops(tmp_path, monkeypatch, celery_redis.Transport)
    try:
        assert received == []
        assert len(celery_redis._stranded) == 1
        with Connection(url, transport=celery_redis.Transport) as conn:
            with Consumer(conn.channel(), [QUEUE], callbacks=[lambda body, msg: (received.append(
                    (body, msg.delivery_info.get("redelivered"))), msg.ack())]):
                conn.drain_events(timeout=5)
        assert received == [({"id": "dl-lost"}, True)]
        assert celery_redis._stranded == []
        assert _queued(url) == (0, 0)
    finally:
        celery_redis._stranded.clear()
        redis.stop()
