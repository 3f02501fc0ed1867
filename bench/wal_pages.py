"""Which pages llm2mqtt's commits write, by table and index: `python -m bench wal_pages`.

Every page a commit changed becomes a frame of the write-ahead log, and every frame costs two
`pwrite` calls (its header, then the page: the largest count in `python -m bench syscalls`). To
see which tables and indexes those pages belong to, a burst of jobs runs as `compare` runs it
(default Mosquitto, instant stand-in), and the WAL file is copied every quarter second while
jobs are taken in, run and finished at once. In each copy the frames since the last checkpoint
(those whose salt matches the header's), up to its last whole commit, are one generation's; the
longest copy of each generation is kept. Their frames are counted per commit and named by the
b-tree that owns their page, as SQLite's `dbstat` table reports after the burst; a page that is
in no b-tree then was on the free list. (`compare` gives the commits per job: about one.)
"""

import collections
import shutil
import sqlite3
import struct
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from bench.compare import _burst, _system

_HEADER = struct.Struct(">IIIIIIII")  # magic, version, page size, checkpoint, salt 1, salt 2, checksums
_FRAME = struct.Struct(">IIII")  # page number, database size after a commit (0: not a commit), salts


def frames(wal: bytes) -> tuple[tuple[int, int], list[tuple[int, bool]]]:
    """The WAL's current generation (its salts) and its whole commits' frames, in order:
    (page number, ends a commit)."""
    if len(wal) < _HEADER.size:
        return (0, 0), []
    header = _HEADER.unpack_from(wal)
    page_size, salts = header[2], (header[4], header[5])
    found: list[tuple[int, bool]] = []
    whole = 0
    at = _HEADER.size
    while at + 24 + page_size <= len(wal):
        page, commit, *salt = _FRAME.unpack_from(wal, at)
        if tuple(salt) != salts:
            break  # written before the last checkpoint (or torn): not this generation's
        found.append((page, commit != 0))
        whole = len(found) if commit else whole
        at += 24 + page_size
    return salts, found[:whole]


def owners(database: Path) -> dict[int, str]:
    """Page number -> the table or index that holds it (dbstat; page 1 is sqlite_schema's)."""
    with closing(sqlite3.connect(database)) as db:
        return {page: name for name, page in db.execute("SELECT name, pageno FROM dbstat")}


def by_owner(found: list[tuple[int, bool]], names: dict[int, str]) -> dict[str, float]:
    """Frames per commit, by owner (most first), with the total."""
    commits = max(1, sum(1 for _, ends in found if ends))
    counts = collections.Counter(names.get(page, "(free list)") for page, _ in found)
    table = {name: round(n / commits, 2) for name, n in counts.most_common()}
    return {"commits": commits, "frames_per_commit": round(len(found) / commits, 2), **table}


def wal_pages(jobs: int = 2000, every: float = 0.25) -> dict[str, Any]:
    """llm2mqtt's frames per commit by owner, from copies of its WAL taken during a burst."""
    generations: dict[tuple[int, int], list[tuple[int, bool]]] = {}
    with tempfile.TemporaryDirectory(prefix="llm2mqtt-wal-") as tmp:
        copy = Path(tmp) / "copy-wal"
        with _system("llm2mqtt", "default", mqtt={}) as (proc, client, _port, _standin):
            wal = next(Path(proc.cwd()).rglob("journal.sqlite3-wal"))
            burst = threading.Thread(target=_burst, args=(client, jobs, "wal"))
            burst.start()
            while burst.is_alive():
                time.sleep(every)
                shutil.copyfile(wal, copy)
                salts, found = frames(copy.read_bytes())
                if len(found) > len(generations.get(salts, [])):
                    generations[salts] = found
            time.sleep(0.5)
            names = owners(wal.with_name("journal.sqlite3"))
    every_frame = [frame for found in generations.values() for frame in found]
    return {"burst_jobs": jobs, "generations": len(generations), **by_owner(every_frame, names)}
