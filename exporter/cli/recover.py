"""``opsstack recover check|baseline|repair|auto|status``."""
from __future__ import annotations

import argparse

from ..backup_manager import archives
from ..config import load_settings
from ..errors import IntegrityError, RecoveryError
from ..metrics import Metrics
from ..recovery_manager import RecoveryManager
from ._actions import action_parsers, emit


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = action_parsers(subparsers, "recover", "integrity checks and repair from verified backups", run)
    check = sub("check", "check paths against their baseline (read-only)")
    check.add_argument("paths", nargs="*", help="default: RECOVERY_CRITICAL_PATHS")
    check.add_argument("--fast", action="store_true", help="compare size and mtime, not hashes")
    check.add_argument("--no-structure", action="store_true", help="ignore missing and extra files")
    check.add_argument("--backup-dir", help="take the baseline from backups here (default BACKUP_DIR)")
    baseline = sub("baseline", "record the current state of paths as their baseline")
    baseline.add_argument("paths", nargs="+")
    repair = sub("repair", "restore the damaged files of a path from a verified backup")
    repair.add_argument("path")
    repair.add_argument("--from", dest="source", help="backup name or backup directory (default BACKUP_DIR)")
    auto = sub("auto", "check critical paths and repair them when ENABLE_AUTO_RECOVERY is on")
    auto.add_argument("paths", nargs="*", help="default: RECOVERY_CRITICAL_PATHS")
    auto.add_argument("--backup-dir", help="default: BACKUP_DIR")
    sub("status", "last check, counts and recent history")


def _paths(manager: RecoveryManager, given: list[str]) -> list[str]:
    paths = given or list(manager.settings.recovery.critical_paths)
    if not paths:
        raise RecoveryError("no paths given and RECOVERY_CRITICAL_PATHS is empty")
    return paths


def run(args: argparse.Namespace) -> int:
    settings = load_settings(config_file=args.config)
    manager = RecoveryManager(settings, Metrics(), backups=archives)
    manager.enable(settings, periodic=False)
    try:
        return ACTIONS[args.recover_command](manager, args)
    finally:
        manager.disable()


def _check(manager: RecoveryManager, args: argparse.Namespace) -> int:
    results, lines, ok = [], [], True
    for path in _paths(manager, args.paths):
        valid, details = manager.verify_integrity_sync(path, not args.fast, not args.no_structure,
                                                       backup_dir=args.backup_dir)
        ok &= valid
        results.append({"valid": valid, **details})
        lines.append(f"{details['path']}: {'OK' if valid else 'DAMAGED'} (baseline "
                     f"{details.get('baseline', 'none')})")
        lines += [f"  {e}" for e in details["errors"]]
    emit(args, results, "\n".join(lines))
    return 0 if ok else IntegrityError.exit_code


def _baseline(manager: RecoveryManager, args: argparse.Namespace) -> int:
    counts = manager.record_baseline(args.paths)
    emit(args, counts, "\n".join(f"{p}: {n} entries recorded" for p, n in counts.items()))
    return 0


def _repair(manager: RecoveryManager, args: argparse.Namespace) -> int:
    result = manager.repair_corrupted_data_sync(args.path, args.source)
    lines = [f"{result['path']}: {'repaired' if result['ok'] else 'NOT repaired'}"
             + (f" from {result['backup']}" if result["backup"] else "")]
    lines += [f"  restored {rel or '.'}" for rel in result["restored"]]
    lines += [f"  failed {rel or '.'}: {why}" for rel, why in result["failed"].items()]
    if result["quarantine_dir"]:
        lines.append(f"  damaged versions moved to {result['quarantine_dir']}")
    emit(args, result, "\n".join(lines))
    return 0 if result["ok"] else RecoveryError.exit_code


def _auto(manager: RecoveryManager, args: argparse.Namespace) -> int:
    report = manager.auto_recover_sync(_paths(manager, args.paths), args.backup_dir)
    text = (f"valid: {len(report['valid_paths'])}, repaired: {len(report['repaired_paths'])}, "
            f"failed: {len(report['failed_paths'])}"
            + ("" if report["auto_recovery"] else " (ENABLE_AUTO_RECOVERY is off: nothing repaired)"))
    text += "".join(f"\n  failed {p}" for p in report["failed_paths"])
    text += "".join(f"\n  repaired {p}" for p in report["repaired_paths"])
    emit(args, report, text)
    return 0 if not report["failed_paths"] else RecoveryError.exit_code


def _status(manager: RecoveryManager, args: argparse.Namespace) -> int:
    status = manager.get_recovery_status()
    status["history"] = manager.get_integrity_history(10)
    emit(args, status, "\n".join(f"{k:<16} {v}" for k, v in status.items() if k != "history"))
    return 0


ACTIONS = {"check": _check, "baseline": _baseline, "repair": _repair, "auto": _auto, "status": _status}
