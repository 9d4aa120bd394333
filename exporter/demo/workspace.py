"""The demo's sample data: a config file, a token file, media files and a live SQLite database."""
from __future__ import annotations

import json
import os
import random
import sqlite3
from pathlib import Path

from .._files import make_dirs


def create_workspace(data_dir: Path, rng: random.Random) -> dict[str, Path]:
    """Make (or reuse) the sample data folder; return the paths the demo works with."""
    make_dirs(data_dir)
    config_dir = data_dir / "config"
    media_dir = data_dir / "media"
    make_dirs(config_dir)
    make_dirs(media_dir)
    settings_file = config_dir / "bot_settings.json"
    if not settings_file.exists():
        settings_file.write_text(json.dumps({"max_parallel_downloads": 4, "chunk_size": 524288,
                                             "allowed_chats": [1001, 1002]}, indent=2))
    token_file = config_dir / "session.txt"
    if not token_file.exists():
        token_file.write_text("demo-session-" + "".join(rng.choice("abcdef0123456789") for _ in range(32)))
        os.chmod(token_file, 0o600)
    for index in range(3):
        media = media_dir / f"sample_{index}.bin"
        if not media.exists():
            media.write_bytes(rng.randbytes(64 * 1024 * (index + 1)))
    database = data_dir / "tasks.sqlite3"
    with sqlite3.connect(database) as connection:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS transfers (id INTEGER PRIMARY KEY, task_id TEXT, "
            "direction TEXT, filename TEXT, size_bytes INTEGER, status TEXT, finished_at REAL)")
    connection.close()
    return {"data": data_dir, "config": config_dir, "media": media_dir, "database": database}


def record_transfer(database: Path, task_id: str, direction: str, filename: str, size: int,
                    status: str, finished_at: float) -> None:
    """The bot's own bookkeeping: a row per finished transfer (keeps the database live)."""
    connection = sqlite3.connect(database)
    try:
        with connection:
            connection.execute(
                "INSERT INTO transfers (task_id, direction, filename, size_bytes, status, finished_at) "
                "VALUES (?, ?, ?, ?, ?, ?)", (task_id, direction, filename, size, status, finished_at))
    finally:
        connection.close()
