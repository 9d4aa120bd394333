"""The rehearsal's Celery side: a real redis-server (broker), a ``celery worker`` and ``celery
beat``, each run with the installed wheel first on its path from the work directory, like the bot.

The worker and beat log (ECS, shipped to Elasticsearch) into their own ``LOG_DIR`` and
``STATE_DIR``: the bot's alerts, backups and recovery stay off in them, so the alert and backup
checks see the bot's alone.
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import redis as redis_harness
from tests.harness.base import ServiceProcess

APP_MODULE = Path(__file__).with_name("rehearsal_celery.py")
# One prefork child spares the 2-core machine (the bot, Elasticsearch and the collector share it).
WORKER_ARGS = ("--pool", "prefork", "--concurrency", "1", "--without-heartbeat", "--without-gossip",
               "--without-mingle", "--loglevel", "INFO")
BEAT_SECONDS = 5.0
OFF = {"ENABLE_ALERT_SYSTEM": "false", "ENABLE_BACKUP_SYSTEM": "false", "ENABLE_RECOVERY_MANAGER": "false"}


def worker_env(bot_env: dict[str, str], work: Path, name: str) -> dict[str, str]:
    """The bot's settings, with this process's own log and state directories and no /metrics port."""
    env = {key: value for key, value in bot_env.items() if key != "METRICS_PORT"}
    return {**env, **OFF, "PYTHONPATH": f"{bot_env['PYTHONPATH']}:{work}",
            "LOG_DIR": str(work / "celery" / name / "logs"), "STATE_DIR": str(work / "celery" / name / "state")}


@dataclass
class CeleryStack:
    work: Path
    redis: redis_harness.RunningRedis | None = None
    worker: ServiceProcess | None = None
    beat: ServiceProcess | None = None
    worker_starts: int = 0
    records: Path = field(init=False)

    def __post_init__(self) -> None:
        self.records = self.work / "celery"

    def start_redis(self) -> str:
        """Redis first (the bot's environment names it); the broker URL."""
        self.records.mkdir(parents=True, exist_ok=True)
        shutil.copy2(APP_MODULE, self.work / APP_MODULE.name)
        self.redis = redis_harness.start(self.work / "redis")
        return f"{self.redis.url}/0"

    def start(self, bot_env: dict[str, str]) -> None:
        for name in ("worker", "beat"):
            (self.records / name).mkdir(exist_ok=True)
        extra = {"REHEARSAL_CELERY_DIR": str(self.records), "REHEARSAL_BEAT_SECONDS": str(BEAT_SECONDS)}
        self.worker = self._process("worker", {**worker_env(bot_env, self.work, "worker"), **extra}, *WORKER_ARGS)
        self.beat = self._process("beat", {**worker_env(bot_env, self.work, "beat"), **extra},
                                  "--schedule", str(self.records / "beat-schedule"), "--loglevel", "INFO")
        self.start_worker()
        self.beat.start()

    def _process(self, name: str, env: dict[str, str], *args: str) -> ServiceProcess:
        return ServiceProcess(f"celery {name}", [sys.executable, "-m", "celery", "-A", APP_MODULE.stem, name, *args],
                              self.work / f"celery-{name}.out", cwd=self.work, env=env)

    def start_worker(self) -> None:
        self.worker.start()
        self.worker_starts += 1

    def log_dirs(self) -> list[tuple[Path, Path]]:
        """(LOG_DIR, STATE_DIR) of the worker and of beat."""
        return [(self.records / name / "logs", self.records / name / "state") for name in ("worker", "beat")]

    def stop(self) -> None:
        """Beat, the worker (SIGTERM: a warm shutdown finishes the task in hand), then Redis."""
        for process in (self.beat, self.worker):
            if process is not None:
                process.stop(timeout=30)
        if self.redis is not None:
            self.redis.stop()
