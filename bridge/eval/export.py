"""`--from-journal`: recent inputs of a rule, filed by the answer they got, ready to relabel."""

import json
import sqlite3
from pathlib import Path
from typing import Any

from bridge.errors import Llm2MqttError

_MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG", ".png"), (b"RIFF", ".webp"))


def export(journal_path: Path, rule: str, since: float, out: Path) -> int:
    """Write each done job's input as `out/<answer>/<job id>.<ext>` and a manifest; returns the count.

    A person checks each folder and moves the files that are wrong into the right one; the
    folder is then a labelled set for `llm2mqtt eval`. The journal is opened read-only, so this
    is safe while the daemon runs.
    """
    if not journal_path.is_file():
        raise Llm2MqttError(f"no journal at {journal_path}: has the daemon run with this configuration?")
    db = sqlite3.connect(f"{journal_path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT id, image, input, result, finished FROM jobs"
            " WHERE rule = ? AND state = 'done' AND finished >= ? ORDER BY finished",
            (rule, since),
        ).fetchall()
        written = 0
        out.mkdir(parents=True, exist_ok=True)
        with (out / "_journal.jsonl").open("w", encoding="utf-8") as manifest:
            for job_id, image, given, result_json, finished in rows:
                result: dict[str, Any] = json.loads(result_json) if result_json else {}
                path = _write_input(db, out, job_id, image, json.loads(given), result.get("state"))
                if path is None:
                    continue
                written += 1
                row = {
                    "job_id": job_id,
                    "file": str(path.relative_to(out)),
                    "answer": result.get("state"),
                    "confidence": result.get("confidence"),
                    "model": result.get("model"),
                    "finished": finished,
                }
                manifest.write(json.dumps(row, ensure_ascii=False) + "\n")
    finally:
        db.close()
    return written


def _write_input(
    db: sqlite3.Connection, out: Path, job_id: str, image: str | None, given: dict[str, Any], state: Any
) -> Path | None:
    """The job's input as a file under the folder of its answer; None when it cannot be kept."""
    if not isinstance(state, str) or not state or "/" in state or state.startswith((".", "_")):
        return None
    folder = out / state
    if image is not None:
        blob = db.execute("SELECT data FROM blobs WHERE hash = ?", (image,)).fetchone()
        if blob is None:
            return None  # pruned since
        data = bytes(blob[0])
        suffix = next((ext for magic, ext in _MAGIC if data.startswith(magic)), ".jpg")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{job_id}{suffix}"
        path.write_bytes(data)
        return path
    text = given.get("text")
    if not isinstance(text, str) or not text:
        return None  # e.g. an image_url job: the picture was never stored
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{job_id}.txt"
    path.write_text(text, encoding="utf-8")
    return path
