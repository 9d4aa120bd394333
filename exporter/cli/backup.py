"""``opsstack backup create|list|verify|restore|cleanup|stats``."""
from __future__ import annotations

import argparse
import signal
import time

from ..backup_manager import BackupManager
from ..config import load_settings
from ..errors import BackupError, IntegrityError
from ..metrics import Metrics
from ._actions import action_parsers, emit
from .progress import Progress


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = action_parsers(subparsers, "backup", "create, list, verify, restore and clean up backups", run,
                         json_help="print JSON (no progress display)")
    create = sub("create", "back up paths (default: CRITICAL_BACKUP_PATHS)")
    create.add_argument("paths", nargs="*", help="files or directories to back up")
    create.add_argument("--name", help="backup name (default: backup_<UTC time>)")
    create.add_argument("--description", default="", help="free text stored in the manifest")
    sub("list", "list complete backups, newest first")
    verify = sub("verify", "read a backup back and check every hash")
    verify.add_argument("name")
    restore = sub("restore", "verify, then restore a backup into a directory")
    restore.add_argument("name")
    restore.add_argument("target", help="directory to restore into")
    restore.add_argument("--overwrite", action="store_true", help="replace a non-empty target")
    restore.add_argument("--dry-run", action="store_true", help="list what would change, write nothing")
    cleanup = sub("cleanup", "delete old backups (never the newest verified one)")
    group = cleanup.add_mutually_exclusive_group(required=True)
    group.add_argument("--days", type=float, help="delete backups older than this many days")
    group.add_argument("--retention", action="store_true", help="apply BACKUP_RETENTION to scheduled backups")
    sub("stats", "backup statistics")


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(config_file=args.config)
    manager = BackupManager(settings, Metrics())
    manager.enable(settings, schedule=False)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return ACTIONS[args.backup_command](manager, args)
    finally:
        signal.signal(signal.SIGTERM, previous)
        manager.disable()


def _create(manager: BackupManager, args: argparse.Namespace) -> int:
    paths = args.paths or list(manager.settings.backups.critical_paths)
    if not paths:
        raise BackupError("nothing to back up: give paths or set CRITICAL_BACKUP_PATHS")
    progress = Progress.for_terminal("backing up", args.json)
    try:
        result = manager.create_backup_sync(paths, args.name, args.description, progress=progress)
    finally:
        if progress:
            progress.done()
    emit(args, result, f"created {result['backup_name']}: {result['files']} files, "
           f"{_size(result['total_bytes'])} -> {_size(result['size'])} in "
           f"{result['duration_seconds']:.1f}s ({result['archive']})")
    return 0


def _list(manager: BackupManager, args: argparse.Namespace) -> int:
    backups = manager.list_backups()
    if args.json:
        emit(args, backups, "")
        return 0
    if not backups:
        print(f"no backups in {manager.backup_dir}")
    for b in backups:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(b["created_at"]))
        verified = {True: "verified", False: "FAILED verify", None: "unverified"}[b["verified"]]
        print(f"{b['name']:<32} {when}Z  {b['tier']:<7} {b['files']:>7} files  {_size(b['size']):>10}  "
              f"{verified}{'  encrypted' if b['encrypted'] else ''}  {b['description']}")
    return 0


def _verify(manager: BackupManager, args: argparse.Namespace) -> int:
    progress = Progress.for_terminal("verifying", args.json)
    try:
        report = manager.verify_backup_report(args.name, progress=progress)
    finally:
        if progress:
            progress.done()
    if report["ok"]:
        text = f"{args.name}: OK ({report['files_checked']} files, {_size(report['bytes_checked'])})"
    else:
        text = "\n".join([f"{args.name}: FAILED"] + [f"  {e}" for e in report["errors"]])
    emit(args, report, text)
    return 0 if report["ok"] else IntegrityError.exit_code


def _restore(manager: BackupManager, args: argparse.Namespace) -> int:
    progress = Progress.for_terminal("verifying", args.json)
    try:
        result = manager.restore_backup_sync(args.name, args.target, overwrite=args.overwrite,
                                             dry_run=args.dry_run, progress=progress)
    finally:
        if progress:
            progress.done()
    if args.dry_run:
        lines = [f"{c['action']:<9} {c['path']}" for c in result["changes"]]
        lines.append("would " + ", ".join(f"{k} {v}" for k, v in sorted(result["counts"].items())))
        emit(args, result, "\n".join(lines))
    else:
        emit(args, result, f"restored {args.name} into {result['target']} ({result['files']} files)")
    return 0


def _cleanup(manager: BackupManager, args: argparse.Namespace) -> int:
    if args.retention:
        deleted = manager.apply_retention()
        emit(args, {"deleted": deleted}, f"retention deleted {len(deleted)} backup(s)")
    else:
        count = manager.cleanup_old_backups(args.days)
        emit(args, {"deleted": count}, f"deleted {count} backup(s) older than {args.days:g} days")
    return 0


def _stats(manager: BackupManager, args: argparse.Namespace) -> int:
    stats = manager.get_backup_stats()
    emit(args, stats, "\n".join(f"{k:<20} {v}" for k, v in stats.items()))
    return 0


ACTIONS = {"create": _create, "list": _list, "verify": _verify, "restore": _restore,
           "cleanup": _cleanup, "stats": _stats}

