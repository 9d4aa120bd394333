"""``opsstack backup create|list|verify|restore|cleanup|drill|stats``."""
from __future__ import annotations

import argparse
import signal
import time

from ..backup_manager import BackupManager
from ..config import load_settings
from ..shared_state import catalog_mirror, shared_locks
from ..errors import BackupError, IntegrityError
from ..metrics import Metrics
from ._actions import action_parsers, add_confirmation, confirm, emit
from ._types import DAYS
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
    restore.add_argument("--overwrite", action="store_true",
                         help="replace the paths the backup holds in a non-empty target")
    restore.add_argument("--delete", action="store_true",
                         help="also remove what the target holds and the backup does not "
                              "(never BACKUP_DIR, STATE_DIR or LOG_DIR)")
    restore.add_argument("--outside-links", action="store_true",
                         help="also restore symlinks that point outside the target (skipped by default)")
    add_confirmation(restore)
    cleanup = sub("cleanup", "delete old backups (never the newest verified one)")
    group = cleanup.add_mutually_exclusive_group(required=True)
    group.add_argument("--days", type=DAYS, metavar="N", help="delete backups older than N days")
    group.add_argument("--retention", action="store_true", help="apply BACKUP_RETENTION to scheduled backups")
    add_confirmation(cleanup)
    drill = sub("drill", "restore a backup into a scratch directory and check every file")
    drill.add_argument("name", nargs="?", help="the backup to drill (default: the newest)")
    sub("stats", "backup statistics")


DONE_WITH_SKIPS = 3  # done, but some paths were left out (as restic's exit code 3)


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
    manager = BackupManager(settings, Metrics(), shared_locks=shared_locks, catalog_mirror=catalog_mirror)
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
    skipped = result["skipped"]
    lines = [f"skipped {path}: not a file, directory or link (socket, FIFO or device)" for path in skipped]
    lines.append(f"created {result['backup_name']}: {result['files']} files, "
                 f"{_size(result['total_bytes'])} -> {_size(result['size'])} in "
                 f"{result['duration_seconds']:.1f}s ({result['archive']})"
                 + (f", {len(skipped)} skipped" if skipped else ""))
    emit(args, result, "\n".join(lines))
    return DONE_WITH_SKIPS if result["skipped"] else 0


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
        verified += {True: ", drilled", False: ", FAILED drill", None: ""}[b["drilled"]]
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
    options = {"overwrite": args.overwrite, "delete": args.delete, "outside_links": args.outside_links}
    if not args.dry_run and (args.overwrite or args.delete) and not args.yes:
        plan = _verified(manager, args, dry_run=True, **options)
        if plan["counts"].get("replace") or plan["counts"].get("remove"):
            confirm(args, f"Restore {args.name} into {plan['target']}: {_counts(plan)}.")
    result = _verified(manager, args, dry_run=args.dry_run, **options)
    lines = [f"{c['action']:<9} {c['path']}" for c in result["changes"]
             if args.dry_run and c["action"] != "unchanged"]
    lines += [f"protected {p['path']} ({p['setting']}): left as it is" for p in result["protected"]]
    lines += [f"skipped   {c['path']}: {c['reason']} (--outside-links restores it)"
              for c in result["skipped"] if not args.dry_run]
    if args.dry_run:
        lines.append(f"would: {_counts(result)}")
    else:
        lines.append(f"restored {args.name} into {result['target']}: {_counts(result)}")
    emit(args, result, "\n".join(lines))
    return DONE_WITH_SKIPS if result["skipped"] and not args.dry_run else 0


def _verified(manager: BackupManager, args: argparse.Namespace, **options) -> dict:
    progress = Progress.for_terminal("verifying", args.json)
    try:
        return manager.restore_backup_sync(args.name, args.target, progress=progress, **options)
    finally:
        if progress:
            progress.done()


def _counts(result: dict) -> str:
    return ", ".join(f"{action} {n}" for action, n in result["counts"].items()) or "nothing to do"


def _cleanup(manager: BackupManager, args: argparse.Namespace) -> int:
    """One JSON shape for both ways: ``{"dry_run", "deleted": [names], "count"}``."""
    def run(dry_run: bool) -> list[str]:
        if args.retention:
            return manager.apply_retention(dry_run=dry_run)
        return manager.delete_old_backups(args.days, dry_run=dry_run)

    why = "by BACKUP_RETENTION" if args.retention else f"older than {args.days:g} days"
    doomed = run(dry_run=True)
    if doomed and not args.dry_run:
        confirm(args, f"Delete {len(doomed)} backup(s) {why} ({', '.join(doomed[:5])}"
                      f"{', ...' if len(doomed) > 5 else ''})?")
    deleted = doomed if args.dry_run or not doomed else run(dry_run=False)
    verb = "would delete" if args.dry_run else "deleted"
    emit(args, {"dry_run": args.dry_run, "deleted": deleted, "count": len(deleted)},
         "\n".join([f"{verb} {len(deleted)} backup(s) {why}"] + [f"  {name}" for name in deleted]))
    return 0


def _drill(manager: BackupManager, args: argparse.Namespace) -> int:
    report = manager.drill_backup_sync(args.name)
    name = report["backup_name"]
    if report["ok"]:
        text = (f"{name}: drill passed ({report['files_checked']} files, "
                f"{report['sqlite_checked']} SQLite databases, {report['duration_seconds']:.1f}s)")
    else:
        text = "\n".join([f"{name}: drill FAILED"] + [f"  {e}" for e in report["errors"]])
    emit(args, report, text)
    return 0 if report["ok"] else IntegrityError.exit_code


def _stats(manager: BackupManager, args: argparse.Namespace) -> int:
    stats = manager.get_backup_stats()
    emit(args, stats, "\n".join(f"{k:<20} {v}" for k, v in stats.items()))
    return 0


ACTIONS = {"create": _create, "list": _list, "verify": _verify, "restore": _restore, "drill": _drill,
           "cleanup": _cleanup, "stats": _stats}

