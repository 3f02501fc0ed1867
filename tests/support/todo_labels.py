"""The labelled Todo notes of todo_data/: tasks, notes with the task each means, and how well
candidate retrieval finds them (used by the unit tests and by `python -m bench todo`)."""

import statistics
import time
from pathlib import Path
from typing import Any

from bridge.todo.retrieval import CandidateIndex

DATA = Path(__file__).parent / "todo_data"
K = 8
# A top candidate scoring at least this is a "strong" lexical match; used only to count how
# often a note that should create a task looks like an existing one to the retrieval.
STRONG = 0.5


def load() -> tuple[dict[str, dict[str, Any]], list[tuple[str, str | None]]]:
    """Tasks by key, and (note, expected task key or None for "create") pairs."""
    tasks: dict[str, dict[str, Any]] = {}
    notes: list[tuple[str, str | None]] = []
    for line in (DATA / "tasks.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, title, genre, variants = (part.strip() for part in line.split("|"))
        tasks[key] = {"uid": key, "title": title, "genre": genre, "status": "needs_action", "due": None}
        notes += [(v.strip(), key) for v in variants.split(";") if v.strip()]
    for line in (DATA / "new_notes.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            notes.append((line.strip(), None))
    return tasks, notes


def evaluate(tasks: dict[str, dict[str, Any]], notes: list[tuple[str, str | None]]) -> dict[str, Any]:
    index = CandidateIndex((key, t["title"]) for key, t in tasks.items())
    matched = [(n, k) for n, k in notes if k is not None]
    hits = top1 = 0
    misses = []
    times = []
    for note, key in matched:
        started = time.perf_counter()
        found = index.top(note, K)
        times.append((time.perf_counter() - started) * 1000)
        uids = [c.uid for c in found]
        hits += key in uids
        top1 += bool(uids) and uids[0] == key
        if key not in uids:
            misses.append(note)
    creates = [n for n, k in notes if k is None]
    strong = 0
    for note in creates:
        started = time.perf_counter()
        found = index.top(note, K)
        times.append((time.perf_counter() - started) * 1000)
        strong += bool(found) and found[0].score >= STRONG
    return {
        "tasks": len(tasks),
        "recall_at_8": round(hits / len(matched), 3),
        "top1": round(top1 / len(matched), 3),
        "missed": misses,
        "create_notes_with_strong_lexical_match": f"{strong}/{len(creates)}",
        "retrieval_ms_median": round(statistics.median(times), 3),
        "retrieval_ms_p95": round(sorted(times)[int(0.95 * (len(times) - 1))], 3),
    }
