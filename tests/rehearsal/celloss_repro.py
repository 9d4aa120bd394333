"""Reproduction of the rehearsal's lost Celery download: a real redis-server (appendonly yes), a
real ``celery worker`` (prefork, concurrency 1) with the rehearsal's settings, a producer sending
numbered tasks, and the rehearsal's broker faults repeated in a loop.

    python -m tests.rehearsal.celloss_repro --minutes 10 --faults redis,worker [--rate 4]

Prints sent/ran/lost/duplicated and, for each lost id, its send time and the faults around it;
keeps the work directory (redis.log, worker.log, events.jsonl, sent.jsonl, done.jsonl).

The drain must outlast the visibility timeout plus kombu's restore period: a message held by a
SIGKILLed worker is restored only by a ``restore_visible`` scan, at each channel start and then
every ``unacked_restore_interval`` x ``unacked_restore_throttle`` = 10 x 10 s = 100 s, so it may
run up to ~120 s after the kill (a 90 s drain once reported such a message, still in ``unacked``,
as lost).

Runs of 2026-12-05 (Redis SIGTERM faults, 1-2 s down, every 4-8 s, real worker):
  without the fix: 4 task/s 60 restarts, 40/s 51, 80/s 47: 0 lost;
  with ``--conf '{"broker_transport": "exporter.integrations.celery_redis:Transport"}'``:
  40/s 35 restarts, 80/s 47: 0 lost, and 3 messages taken by the worker as Redis stopped (the
  window of test_celloss.py, lost without the fix) requeued and run once; one of them, t-5433,
  was sent (apply_async returned) 5 ms after the SIGTERM, 3 ms before Redis exited.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.harness.base import free_port

HERE = Path(__file__).resolve().parent



def pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class Proc:
    def __init__(self, argv, log: Path, env=None, cwd=None):
        self.argv, self.log, self.env, self.cwd, self.p = argv, log, env, cwd, None

    def start(self):
        out = open(self.log, "ab")
        self.p = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
                                  start_new_session=True)
        out.close()
        return self

    def signal(self, sig) -> None:
        if self.p is not None and self.p.poll() is None:
            os.killpg(self.p.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.p.wait()

    def stop(self, timeout=15) -> None:
        self.signal(signal.SIGTERM)
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate", type=float, default=4.0)
    ap.add_argument("--faults", default="redis,worker")
    ap.add_argument("--period", type=float, default=15.0, help="seconds between faults")
    ap.add_argument("--redis-down", type=float, default=4.0)
    ap.add_argument("--appendfsync", default="everysec")
    ap.add_argument("--conf", default="{}", help="JSON: extra app.conf")
    ap.add_argument("--transport", default="{}", help="JSON: extra broker_transport_options")
    ap.add_argument("--drain", type=float, default=150)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="celloss-"))
    port = free_port()
    redis = Proc(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(work), "--save", "",
                  "--appendonly", "yes", "--appendfsync", args.appendfsync, "--protected-mode", "yes"],
                 work / "redis.log")
    url = f"redis://127.0.0.1:{port}/0"
    env = {**os.environ, "CELERY_BROKER_URL": url, "CELLOSS_DIR": str(work), "PYTHONPATH": str(HERE),
           "CELLOSS_CONF": args.conf, "CELLOSS_TRANSPORT_OPTIONS": args.transport}
    worker = Proc([sys.executable, "-m", "celery", "-A", "celloss_app", "worker", "--pool", "prefork",
                   "--concurrency", "1", "--without-heartbeat", "--without-gossip", "--without-mingle",
                   "--loglevel", "INFO"], work / "worker.log", env=env, cwd=work)
    events = open(work / "events.jsonl", "a")

    def event(kind, **kw):
        events.write(json.dumps({"t": time.time(), "event": kind, **kw}) + "\n")
        events.flush()

    def start_redis():
        redis.start()
        while not pings(port):
            time.sleep(0.05)
        event("redis_up")

    start_redis()
    worker.start()
    event("worker_start")
    os.environ.update({k: v for k, v in env.items() if k.startswith(("CELERY_", "CELLOSS_"))})
    sys.path.insert(0, str(HERE))
    from celloss_app import app  # noqa: E402

    stop = threading.Event()
    failures = [0]

    def producer():
        n = 0
        with open(work / "sent.jsonl", "a") as sent:
            while not stop.is_set():
                n += 1
                name = f"t-{n}"
                while True:
                    t0 = time.time()
                    try:
                        app.send_task("celloss.finish", args=(name,), task_id=name)
                        break
                    except Exception as exc:
                        failures[0] += 1
                        event("send_failed", id=name, exc=type(exc).__name__, t0=t0)
                        time.sleep(1.0)
                sent.write(json.dumps({"id": name, "t0": t0, "t": time.time()}) + "\n")
                sent.flush()
                time.sleep(1.0 / args.rate)

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    faults = args.faults.split(",") if args.faults else []
    end = time.time() + args.minutes * 60
    i = 0
    try:
        while time.time() < end:
            time.sleep(args.period)
            if not faults:
                continue
            kind = faults[i % len(faults)]
            i += 1
            if kind == "redis":
                event("redis_sigterm")
                redis.stop()
                event("redis_down", rc=redis.p.returncode)
                time.sleep(args.redis_down)
                start_redis()
            elif kind == "worker":
                event("worker_sigkill")
                worker.kill()
                time.sleep(2)
                worker.start()
                event("worker_start")
            elif kind == "combo":  # the rehearsal's cycle: worker killed, back after 5 s, Redis down 5 s later
                event("worker_sigkill")
                worker.kill()
                time.sleep(5)
                worker.start()
                event("worker_start")
                time.sleep(5)
                event("redis_sigterm")
                redis.stop()
                event("redis_down", rc=redis.p.returncode)
                time.sleep(args.redis_down)
                start_redis()
        stop.set()
        thread.join(30)
        sent = [json.loads(x) for x in (work / "sent.jsonl").read_text().splitlines()]
        ids = [s["id"] for s in sent]

        def ran():
            path = work / "done.jsonl"
            return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

        deadline = time.time() + args.drain
        while time.time() < deadline and not set(ids) <= {r["id"] for r in ran()}:
            time.sleep(1)
        runs = ran()
        done = {r["id"] for r in runs}
        lost = [s for s in sent if s["id"] not in done]
        counts = {}
        for r in runs:
            counts[r["id"]] = counts.get(r["id"], 0) + 1
        evs = [json.loads(x) for x in (work / "events.jsonl").read_text().splitlines()]
        result = {"work": str(work), "args": vars(args), "sent": len(ids), "ran": len(runs), "distinct_ran": len(done),
                  "lost": len(lost), "lost_ids": [s["id"] for s in lost],
                  "duplicated": sum(1 for c in counts.values() if c > 1),
                  "redelivered_runs": sum(1 for r in runs if r["redelivered"]), "send_failures": failures[0],
                  "faults": sum(1 for e in evs if e["event"] in ("redis_sigterm", "worker_sigkill"))}
        for s in lost:
            near = [dict(e, dt=round(e["t"] - s["t"], 3)) for e in evs if abs(e["t"] - s["t"]) < 15]
            result.setdefault("lost_detail", []).append({"sent": s, "events_near": near})
        print(json.dumps(result, indent=1))
        (work / "result.json").write_text(json.dumps(result, indent=1))
    finally:
        stop.set()
        worker.stop()
        redis.stop()
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
