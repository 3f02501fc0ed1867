"""The daemon with its SQL statements counted: `python -m bench.traced run -c CONFIG`.

SIGUSR1 starts counting every statement the journal executes (sqlite3's trace callback) and
every fsync; SIGUSR2 writes the counts so far to `sql_counts.json` beside the config (by kind:
`UPDATE jobs`; the fsyncs as `fsync`) and `sql_texts.json` (by statement, its values and list
lengths folded: which statements a job costs), and stops counting. Counting is off
otherwise, so it does not weigh on the CPU measured around it.
"""

import json
import os
import re
import signal
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

from bridge.cli import main

_counts: Counter[str] = Counter()
_texts: Counter[str] = Counter()
_connections: list[sqlite3.Connection] = []
_connect = sqlite3.connect
_os_fsync = os.fsync
_fsyncs: list[int] = []  # one entry per fsync while counting (appended from the fsync thread)
_counting = False


def _counted_fsync(fd: int) -> None:
    _os_fsync(fd)
    if _counting:
        _fsyncs.append(fd)


def statement_kind(sql: str) -> str:
    """`INSERT INTO outbox`, `UPDATE jobs`, `COMMIT`: what a statement does, and to which table."""
    words = sql.split()
    if not words:
        return ""
    verb = words[0].upper()
    if verb in ("INSERT", "DELETE") and len(words) > 2:
        rest = words[1:]
        if rest[0].upper() == "OR":
            rest = rest[2:]
        return f"{verb} {rest[1] if rest[0].upper() in ('INTO', 'FROM') else rest[0]}"
    if verb == "UPDATE" and len(words) > 1:
        return f"UPDATE {words[1]}"
    return verb


# The trace shows statements with their values bound: strings, blobs, numbers, NULL.
_VALUE = re.compile(r"'(?:[^']|'')*'|\bx'[0-9a-f]*'|(?<![\w.])-?\d+(?:\.\d+)?(?:e[+-]?\d+)?\b|\bNULL\b", re.I)
_REPEATED = re.compile(r"(\([^()]*\))(?:\s*,\s*\1)+")  # the rows of a multi-row INSERT
_LIST = re.compile(r"\?(?:\s*,\s*\?)+")  # IN (?, ?, ?) and the like


def statement_text(sql: str) -> str:
    """The statement without its values: `DELETE FROM outbox WHERE id IN (?…)` for any ids."""
    text = _VALUE.sub("?", " ".join(sql.split()))
    text = _REPEATED.sub(r"\1, …", text)
    return _LIST.sub("?…", text)


def _count(sql: str) -> None:
    _counts[statement_kind(sql)] += 1
    _texts[statement_text(sql)] += 1


def _tracked_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    db = _connect(*args, **kwargs)
    _connections.append(db)
    return db


def _start(signum: int, frame: FrameType | None) -> None:
    global _counting
    _counts.clear()
    _texts.clear()
    _fsyncs.clear()
    _counting = True
    for db in _connections:
        db.set_trace_callback(_count)


def _stop(signum: int, frame: FrameType | None) -> None:
    global _counting
    _counting = False
    for db in _connections:
        db.set_trace_callback(None)
    config = Path(sys.argv[sys.argv.index("-c") + 1])
    (config.parent / "sql_counts.json").write_text(json.dumps({**_counts, "fsync": len(_fsyncs)}))
    (config.parent / "sql_texts.json").write_text(json.dumps(dict(_texts.most_common()), indent=1))


if __name__ == "__main__":
    sqlite3.connect = _tracked_connect  # type: ignore[assignment]
    os.fsync = _counted_fsync  # the journal's WAL (bridge.pipeline.wal_sync.sync_file)
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
    sys.exit(main(sys.argv[1:]))
