"""Importing the package or any of its modules opens no file, socket or thread; `runtime.start()`
with every feature off loads no heavy module either."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.probes import AUDIT_SIDE_EFFECTS

PROBE = textwrap.dedent("""
    import os, pkgutil, importlib, sys, threading

""") + AUDIT_SIDE_EFFECTS + textwrap.dedent("""
    fds_before = set(os.listdir("/proc/self/fd"))

    import exporter
    names = [m.name for m in pkgutil.walk_packages(exporter.__path__, "exporter.")]
    for name in names:
        if not name.endswith("__main__"):
            importlib.import_module(name)

    fds_after = set(os.listdir("/proc/self/fd"))
    print("modules", len(names))
    print("threads", threading.active_count())
    print("new_fds", len(fds_after - fds_before))
    print("events", events)
    print("cwd_entries", os.listdir("."))
""")

HEAVY = textwrap.dedent("""
    import sys
    import exporter.tracing, exporter.config, exporter.runtime
    from exporter.logger_manager import logger_manager
    from exporter.alert_manager import alert_manager
    from exporter.backup_manager import backup_manager
    from exporter.profiler import profiler
    from exporter.recovery_manager import recovery_manager
    heavy = ["elasticsearch", "httpx", "opentelemetry.sdk", "grpc", "aiosmtpd", "smtplib",
             "asyncio", "ssl", "concurrent.futures",  # loaded on enable() or the first async call
             "tarfile", "sqlite3", "_hashlib",  # loaded by the first backup, check or alert
             "tomllib", "exporter.logger_manager._ecs_fields",  # a TOML file; logging enabled
             "dataclasses", "inspect", "ast", "dis",  # ~1 MiB: exporter._record stands in
             "datetime",  # a C extension: loaded with the first alert timestamp shown
             "json", "array", "contextvars",  # with the first state file, measured block, log line
             "exporter.alert_manager.store", "exporter.logger_manager._handler",  # on enable()
             "exporter.sinks.elasticsearch", "exporter.channels._common", "exporter.profiler._stats"]
    print([name for name in heavy if name in sys.modules])
""")


def test_import_opens_nothing(tmp_path):
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    report = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert int(report["modules"]) >= 10
    assert report["threads"] == "1"
    assert report["new_fds"] == "0"
    assert report["events"] == "[]"
    assert report["cwd_entries"] == "[]"


def test_managers_do_not_load_heavy_clients_at_import(tmp_path):
    result = subprocess.run([sys.executable, "-c", HEAVY], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


STARTED_WITH_NOTHING_ON = textwrap.dedent("""
    import sys, threading

""") + AUDIT_SIDE_EFFECTS + textwrap.dedent("""
    from exporter import runtime
    handle = runtime.start()
    assert handle.enabled == [], handle.enabled
    handle.stop()
    heavy = ["prometheus_client", "opentelemetry", "elasticsearch", "asyncio", "ssl", "sqlite3",
             "tarfile", "hashlib", "_hashlib"]
    print("loaded", [name for name in heavy if name in sys.modules])
    print("threads", threading.active_count())
    print("events", events)
""")


def test_runtime_start_with_every_feature_off_loads_no_heavy_module(tmp_path):
    from exporter.config import KEYS_BY_NAME

    env = {k: v for k, v in os.environ.items() if k not in KEYS_BY_NAME and k != "OPSSTACK_CONFIG"}
    result = subprocess.run([sys.executable, "-c", STARTED_WITH_NOTHING_ON], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert report == {"loaded": "[]", "threads": "1", "events": "[]"}


BACKUP_ENABLED = textwrap.dedent("""
    import sys, tempfile
    from exporter.backup_manager import BackupManager
    from exporter.config import default_settings
    from exporter.metrics import Metrics
    work = tempfile.mkdtemp()
    manager = BackupManager(default_settings().replace(BACKUP_DIR=work + "/backups",
                                                       STATE_DIR=work + "/state"), Metrics())
    manager.enable(schedule=False)
    manager.disable()
    archive_code = ["sqlite3", "tarfile", "exporter.backup_manager.writer", "exporter.backup_manager.tarstream"]
    print([name for name in archive_code if name in sys.modules])
""")


def test_enabling_the_backup_manager_leaves_the_archive_code_to_the_first_backup(tmp_path):
    result = subprocess.run([sys.executable, "-c", BACKUP_ENABLED], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
