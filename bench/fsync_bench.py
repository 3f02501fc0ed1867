"""What the journal's durability costs on this disk: `python -m bench fsync`.

A commit appends about ten pages to the write-ahead log (`python -m bench wal_pages`), and with
`journal.synchronous: full` the journal then syncs the log in a thread of its own
(bridge/pipeline/wal_sync.py): `F_FULLFSYNC` on macOS, which asks the drive to write its
cache out, and `fsync` elsewhere. This appends that much to a file and syncs it the journal's
way, then with plain `fsync` (the same call outside macOS), alternating, and prints the time
per sync. A job takes one such sync at 50 jobs/s (the commit with its result; its input's
acknowledgement waits for it), so the figure is also what durability adds to each result's
latency, and what it costs the disk.

The file goes to a temporary folder under `LLM2MQTT_BENCH_DIR` (default: the system's temporary
folder): point it at the disk the daemon's data directory is on.
"""

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.pipeline.wal_sync import FULLFSYNC, sync_file

PAGE = 4096
PAGES_PER_COMMIT = 10  # frames per commit, `python -m bench wal_pages`


def _timed(fd: int, sync: Callable[[int], None], offset: int) -> float:
    os.pwrite(fd, os.urandom(PAGE * PAGES_PER_COMMIT), offset)
    started = time.perf_counter()
    sync(fd)
    return (time.perf_counter() - started) * 1000


def fsync_cost(syncs: int = 200) -> dict[str, Any]:
    """ms per sync of a commit's worth of pages appended: the journal's way and plain fsync."""
    ways = {"journal_sync": sync_file, "plain_fsync": os.fsync}
    times: dict[str, list[float]] = {name: [] for name in ways}
    folder = os.environ.get("LLM2MQTT_BENCH_DIR") or tempfile.gettempdir()
    with tempfile.TemporaryDirectory(prefix="llm2mqtt-fsync-", dir=folder) as tmp:
        path = Path(tmp) / "wal"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            offset = 0
            for _ in range(syncs):
                for name, sync in ways.items():  # alternating: a busy disk hits both alike
                    times[name].append(_timed(fd, sync, offset))
                    offset += PAGE * PAGES_PER_COMMIT
        finally:
            os.close(fd)
    result: dict[str, Any] = {
        "folder": folder,
        "journal_sync_is": "F_FULLFSYNC" if FULLFSYNC is not None else "fsync",
    }
    for name, values in times.items():
        values.sort()
        result[f"{name}_ms_p50"] = round(statistics.median(values), 3)
        result[f"{name}_ms_p90"] = round(values[int(len(values) * 0.9)], 3)
        result[f"{name}_ms_max"] = round(values[-1], 3)
    result["journal_over_plain"] = round(result["journal_sync_ms_p50"] / result["plain_fsync_ms_p50"], 2)
    return result
