"""The error hierarchy every manager raises from.

Each error carries a message meant for a person and the exit code the CLI uses for it.
Causes are chained with ``raise ... from``.
"""
from __future__ import annotations


class OpsError(Exception):
    """Base of every error opsstack raises on purpose."""

    exit_code = 1


class ConfigError(OpsError):
    """A setting has a value that cannot be used. Names the key, where it came from, the value."""

    exit_code = 2

    def __init__(self, key: str, source: str, value: object, reason: str) -> None:
        self.key = key
        self.source = source
        self.value = value
        self.reason = reason
        super().__init__(f"{key}={value!r} (from {source}): {reason}")


class NotConfirmedError(OpsError):
    """A destructive command was not confirmed (declined, or no terminal to ask and no --yes)."""


class NotEnabledError(OpsError):
    """A call that needs a manager to be enabled was made while it is off."""


class LoggingSetupError(OpsError):
    """The logger manager could not open its files (missing or read-only directory, ...)."""


class ShippingError(OpsError):
    """Log shipping to Elasticsearch failed in a way the caller must know about."""


class AlertError(OpsError):
    """An alert, subscriber or channel was used wrongly."""


class ChannelConfigError(ConfigError):
    """A notification channel lacks a setting it needs (token, URL, address)."""


class DeliveryError(OpsError):
    """A notification channel could not deliver a message (retryable)."""


class BackupError(OpsError):
    """A backup could not be created, listed, restored or cleaned up."""


class BackupNotFoundError(BackupError):
    """No backup has the requested name."""


class LockHeldError(OpsError):
    """A lock shared across processes or hosts is held by another holder."""


class LockLostError(OpsError):
    """A shared lock expired or went to another holder while its work was under way."""


class BackupLockedError(BackupError, LockHeldError):
    """Another live process holds the lock of this backup set."""


class BackupUnreadableError(BackupError):
    """A backup could not be read at all (no key, the wrong key, its archive missing or not
    readable): that says nothing about whether it is good, so verify records nothing for it."""


class IntegrityError(OpsError):
    """Data (an archive, a manifest, a file) does not match its recorded hashes or structure."""

    exit_code = 3


class UnsafeArchiveError(IntegrityError):
    """An archive member would escape the restore target (absolute, ``..``, link, device)."""


class DecryptionError(IntegrityError):
    """An encrypted backup could not be decrypted: wrong key or tampered data."""


class BackupKeyError(DecryptionError, BackupUnreadableError):
    """BACKUP_ENCRYPTION_KEY is not set, or is not the key this backup was encrypted with."""

    exit_code = BackupUnreadableError.exit_code


class RecoveryError(OpsError):
    """A repair or auto-recovery could not be carried out."""


class AssetsExportError(OpsError):
    """The packaged configuration files could not be written out (a file in the way, no access)."""
