"""The dead-letter file of a sink: records the backend refused for good, kept with the reason.

``state_dir/dead-letter.ndjson`` (0600) holds one JSON object a line: ``_id``, ``index``,
``reason`` (the backend's error), ``level`` (a ``bot_log_*`` level label) and ``document`` (the
record, as JSON where it parses). Lines are appended and synced before the records are counted.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..metrics import log_level_label
from .spool import Record

FILE_NAME = "dead-letter.ndjson"


class DeadLetters:
    def __init__(self, state_dir: Path, index: str):
        self.path = Path(state_dir) / FILE_NAME
        self.index = index

    def append(self, dead: list[tuple[Record, object]]) -> None:
        """Append each ``(record, reason)`` and sync the file."""
        lines = [json.dumps(self._entry(record, reason), default=str) + "\n" for record, reason in dead]
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as handle:  # a buffered file writes all of it, short writes too
            handle.write("".join(lines).encode())
            handle.flush()
            os.fsync(handle.fileno())

    def _entry(self, record: Record, reason: object) -> dict:
        level, rid, line = record
        try:
            document = json.loads(line)
        except ValueError:
            document = line.decode("utf-8", "replace")
        return {"_id": rid, "index": self.index, "reason": reason, "level": log_level_label(level),
                "document": document}
