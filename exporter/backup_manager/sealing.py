"""Sealed manifests (format versions 3 and 4): an encrypted backup's manifest keeps in the clear only
what listing needs, and encrypts and authenticates the rest.

On disk::

    {"format": "opsstack-backup", "format_version": 4, "name", "created_at", "created_at_iso",
     "tier", "settings": {"encrypted": true}, "archive": {"name", "size", "sha256"},
     "sealed": {"key_id", "nonce", "data"}}

``data`` is the whole manifest (file names, sizes, hashes, sources, description) sealed with
AES-256-GCM under a key derived from ``BACKUP_ENCRYPTION_KEY`` by HKDF-SHA256 (so the archive
key and the manifest key differ). The public part, written canonically, is the associated
data: a changed public field, or a sealed part moved to another backup's manifest, fails
authentication. The archive's size and SHA-256 are public and sealed together, so an archive
swapped for another is found by verify. ``key_id`` (an HMAC of a fixed text) tells a wrong key
apart from a changed manifest without revealing anything of the key.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any

from ..errors import BackupKeyError, DecryptionError

PUBLIC_KEYS = ("format", "format_version", "name", "created_at", "created_at_iso", "tier", "archive")
_INFO = b"opsstack backup manifest v3"


def is_sealed(manifest: dict[str, Any]) -> bool:
    return isinstance(manifest.get("sealed"), dict)


def key_id(key: bytes) -> str:
    return hmac.new(key, b"opsstack backup key id", hashlib.sha256).hexdigest()[:16]


def _manifest_key(key: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(key)


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def seal(manifest: dict[str, Any], key: bytes) -> dict[str, Any]:
    """The manifest as written to disk: its public part, with the whole of it sealed."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    public = {name: manifest[name] for name in PUBLIC_KEYS if name in manifest}
    public["settings"] = {"encrypted": True}
    nonce = os.urandom(12)
    data = AESGCM(_manifest_key(key)).encrypt(nonce, _canonical(manifest), _canonical(public))
    public["sealed"] = {"key_id": key_id(key), "nonce": base64.b64encode(nonce).decode(),
                        "data": base64.b64encode(data).decode()}
    return public


def unseal(public: dict[str, Any], key: bytes | None) -> dict[str, Any]:
    """The whole manifest of a sealed one. Raises BackupKeyError without the key or with
    another one (nothing is said about the backup), DecryptionError when the manifest was
    changed (the backup is bad)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    name = public.get("name")
    if key is None:
        raise BackupKeyError(f"backup {name!r} is encrypted and BACKUP_ENCRYPTION_KEY is not set; "
                             "its manifest cannot be read")
    sealed = public["sealed"]
    if not hmac.compare_digest(str(sealed.get("key_id", "")), key_id(key)):
        raise BackupKeyError(f"backup {name!r}: wrong key (BACKUP_ENCRYPTION_KEY does not match "
                             "the one that encrypted this backup)")
    aad = _canonical({k: v for k, v in public.items() if k != "sealed"})
    try:
        nonce = base64.b64decode(sealed["nonce"], validate=True)
        data = AESGCM(_manifest_key(key)).decrypt(nonce, base64.b64decode(sealed["data"], validate=True), aad)
        manifest = json.loads(data)
    except (InvalidTag, KeyError, TypeError, ValueError) as exc:
        raise DecryptionError(f"the manifest of backup {name!r} fails authentication: changed, "
                              "or taken from another backup") from exc
    if not isinstance(manifest, dict) or any(manifest.get(k) != public.get(k) for k in PUBLIC_KEYS):
        raise DecryptionError(f"the manifest of backup {name!r} does not match its sealed part")
    return manifest
