"""The rehearsal's stack: the installed wheel, the harness's real services, and the bot process.

Everything lives under one work directory outside the checkout; every child is stopped by its
own PID (process group) only.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import alertmanager, otelcol
from tests.harness import elasticsearch as es_harness
from tests.harness.base import ServiceUnavailable, free_port
from tests.harness.es_proxy import EsProxy
from tests.harness.smtp import SMTPServer
from tests.harness.telegram import TelegramBotAPI
from tests.harness.webhook import WebhookReceiver

from .celery_stack import CeleryStack

ROOT = Path(__file__).resolve().parents[2]
BOT_SCRIPT = Path(__file__).with_name("bot.py")
BACKUP_FS_BYTES = 48 << 20  # the backup directory's file system (a tmpfs): small enough to fill
RETENTION_HOURLY, RETENTION_DAILY, RETENTION_WEEKLY = 4, 2, 1


def install_wheel(work: Path) -> Path:
    """Build the checkout's wheel and install it (no dependencies: this interpreter has them)
    into ``work/site``, the directory the bot puts first on its path."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(work / "dist"),
                    str(ROOT)], check=True, capture_output=True, timeout=600)
    [wheel] = (work / "dist").glob("opsstack-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                    str(work / "site"), str(wheel)], check=True, capture_output=True, timeout=600)
    return work / "site"


def mount_tmpfs(path: Path, size: int) -> None:
    """A size-limited file system for BACKUP_DIR (root can mount a tmpfs; nothing else fills the
    real disk). ServiceUnavailable when this machine cannot mount one."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceUnavailable(f"cannot mount a tmpfs for the backup directory: {result.stderr.strip()}")


def unmount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True)


def make_data(data: Path) -> dict[str, bytes]:
    """The bot's critical files: config and media. Returns their bytes by path relative to ``data``."""
    files = {
        "config/bot_settings.json": json.dumps({"max_parallel_downloads": 4, "chunk_size": 524288}).encode(),
        "config/session.txt": b"rehearsal-session-" + os.urandom(16).hex().encode(),
        **{f"media/sample_{n}.bin": os.urandom(64 * 1024 * (n + 1)) for n in range(3)},
    }
    for rel, content in files.items():
        (data / rel).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        (data / rel).write_bytes(content)
    return files


@dataclass
class BotProcess:
    """The bot: the installed wheel first on its path, run from outside the checkout."""

    work: Path
    env: dict[str, str]
    metrics_url: str
    rate: float
    backup_every: float
    tasks_per_second: float
    process: subprocess.Popen | None = None
    state: str = "down"  # down | running | suspended
    boots: int = 0

    def start(self, timeout: float = 60.0) -> None:
        log = open(self.work / "bot.out", "ab")
        try:
            self.process = subprocess.Popen(
                [sys.executable, str(self.work / BOT_SCRIPT.name), str(self.work / "bot"), "--rate", str(self.rate),
                 "--backup-every", str(self.backup_every), "--tasks-per-second", str(self.tasks_per_second)],
                cwd=self.work, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            log.close()
        self.boots += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the bot exited with {self.process.returncode} at start:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.metrics_url, timeout=2):
                    self.state = "running"
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the bot's /metrics did not answer within {timeout:.0f}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join((self.work / "bot.out").read_text(errors="replace").splitlines()[-lines:])

    def signal(self, signum: int) -> None:
        os.killpg(self.process.pid, signum)

    def kill(self) -> None:
        self.state = "down"
        self.signal(signal.SIGKILL)
        self.process.wait(30)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: the exit code (a bot that needs longer is killed and that is a failure)."""
        self.state = "down"
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait(30)
            raise RuntimeError(f"the bot did not stop within {timeout:.0f}s of SIGTERM:\n{self.tail()}") from None

    def suspend(self) -> None:
        self.state = "suspended"
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.state = "running"


@dataclass
class Stack:
    work: Path
    es: object = None
    proxy: EsProxy | None = None
    collector: object = None
    am: object = None
    telegram: TelegramBotAPI | None = None
    smtp: SMTPServer | None = None
    webhook: WebhookReceiver | None = None
    bot: BotProcess | None = None
    celery: CeleryStack | None = None
    data: Path | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    backup_dir: Path | None = None
    mounted: bool = False

    def start(self, rate: float, backup_every: float, tasks_per_second: float) -> "Stack":
        self.work.mkdir(parents=True, exist_ok=True)
        site = install_wheel(self.work)
        # The bot script as it is now: a checkout edited during a long run changes nothing in it.
        shutil.copy2(BOT_SCRIPT, self.work / BOT_SCRIPT.name)
        self.backup_dir = self.work / "backups"
        mount_tmpfs(self.backup_dir, BACKUP_FS_BYTES)
        self.mounted = True
        self.es = es_harness.start(self.work / "elasticsearch")
        self.proxy = EsProxy(self.es.url).start()
        self.collector = otelcol.start(self.work / "otelcol", elasticsearch_url=self.es.url)
        self.am = alertmanager.start(self.work / "alertmanager", {
            "route": {"receiver": "null", "group_wait": "1s"}, "receivers": [{"name": "null"}]})
        self.telegram = TelegramBotAPI().start()
        self.smtp = SMTPServer().start()
        self.webhook = WebhookReceiver().start()
        self.data = self.work / "data"
        self.files = make_data(self.data)
        (self.work / "bot").mkdir(exist_ok=True)
        self.celery = CeleryStack(self.work)
        broker = self.celery.start_redis()
        port = free_port()
        self.bot = BotProcess(self.work, {**self.bot_env(site, port), "CELERY_BROKER_URL": broker},
                              f"http://127.0.0.1:{port}/metrics", rate, backup_every, tasks_per_second)
        self.celery.start(self.bot.env)
        self.bot.start()
        return self

    def bot_env(self, site: Path, metrics_port: int) -> dict[str, str]:
        routed = ["telegram", "email", "webhook", "alertmanager"]
        keep = {k: v for k, v in os.environ.items()
                if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "REHEARSAL_TRACEMALLOC")}
        return {**keep,
                "PYTHONPATH": str(site), "PYTHONUNBUFFERED": "1",
                "ENABLE_ENHANCED_LOGGING": "true", "LOG_DIR": str(self.work / "bot" / "logs"),
                "LOG_CONSOLE": "false", "LOG_MAX_SIZE": str(256 << 20), "LOG_BACKUP_COUNT": "20",
                "LOG_SHUTDOWN_TIMEOUT": "15", "STATE_DIR": str(self.work / "bot" / "state"),
                "ELASTICSEARCH_URL": self.proxy.url,
                "ENABLE_ALERT_SYSTEM": "true", "ALERT_RATE_LIMIT": "1000",
                "ALERT_CHANNELS": json.dumps({"critical": routed, "high": routed, "medium": ["log"],
                                              "low": ["log"]}),
                "TELEGRAM_BOT_TOKEN": self.telegram.token, "TELEGRAM_CHAT_ID": "1001",
                "TELEGRAM_API_URL": self.telegram.url,
                "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(self.smtp.port), "SMTP_STARTTLS": "false",
                "ALERT_EMAIL_FROM": "bot@example.org", "ALERT_EMAIL_TO": "ops@example.org",
                "ALERT_WEBHOOK_URL": f"{self.webhook.url}/hook", "ALERTMANAGER_URL": self.am.url,
                "ENABLE_BACKUP_SYSTEM": "true", "BACKUP_DIR": str(self.backup_dir),
                "BACKUP_FREQUENCY": "hourly", "CRITICAL_BACKUP_PATHS": str(self.data),
                "BACKUP_RETENTION": f"hourly={RETENTION_HOURLY},daily={RETENTION_DAILY},weekly={RETENTION_WEEKLY}", "BACKUP_SCHEDULER": "celery",
                "BACKUP_DRILL_INTERVAL": "0",
                "ENABLE_PROFILER": "true", "PROFILE_THRESHOLD": "0.5",
                "ENABLE_RECOVERY_MANAGER": "true", "ENABLE_AUTO_RECOVERY": "true",
                "RECOVERY_CRITICAL_PATHS": f"{self.data / 'config'},{self.data / 'media'}",
                "INTEGRITY_CHECK_INTERVAL": "3",
                "METRICS_PORT": str(metrics_port),
                "ENABLE_TRACING": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": self.collector.http_endpoint}

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """``opsstack`` of the installed wheel with the bot's settings."""
        return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=self.work, env=self.bot.env,
                              capture_output=True, text=True, timeout=300)

    def listed_backups(self) -> list[str]:
        listing = self.cli("backup", "list", "--json")
        if listing.returncode != 0:
            raise RuntimeError(f"backup list failed: {listing.stderr.strip()}")
        return [backup["name"] for backup in json.loads(listing.stdout)]

    def stop(self) -> None:
        """Stop what was started, each by its own handle; never raises half-way."""
        if self.bot is not None and self.bot.process is not None and self.bot.process.poll() is None:
            self.bot.signal(signal.SIGCONT)
            self.bot.kill()
        if self.celery is not None:
            self.celery.stop()
        for server in (self.webhook, self.smtp, self.telegram, self.proxy):
            if server is not None:
                server.stop()
        for service in (self.am, self.collector, self.es):
            if service is not None:
                service.stop()
        if self.mounted:
            unmount(self.backup_dir)
            self.mounted = False
