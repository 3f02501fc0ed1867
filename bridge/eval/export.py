"""`--from-journal`: recent inputs of a rule, filed by the answer they got, ready to relabel."""

import json
from pathlib import Path

from bridge.errors import Llm2MqttError
from bridge.journal import Job, Journal

_MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG", ".png"), (b"RIFF", ".webp"))


def export(journal_path: Path, rule: str, since: float, out: Path) -> int:
    """Write each done job's input as `out/<answer>/<job id>.<ext>` and a manifest; returns the count.

    A person checks each folder and moves the files that are wrong into the right one; the
    folder is then a labelled set for `llm2mqtt eval`.
    """
    if not journal_path.is_file():
        raise Llm2MqttError(f"no journal at {journal_path}: has the daemon run with this configuration?")
    journal = Journal(journal_path)
    try:
        jobs = journal.done_jobs(rule, since)
        written = 0
        out.mkdir(parents=True, exist_ok=True)
        with (out / "_journal.jsonl").open("w", encoding="utf-8") as manifest:
            for job in jobs:
                path = _write_input(journal, job, out)
                if path is None:
                    continue
                written += 1
                result = job.result or {}
                row = {
                    "job_id": job.id,
                    "file": str(path.relative_to(out)),
                    "answer": result.get("state"),
                    "confidence": result.get("confidence"),
                    "model": result.get("model"),
                    "finished": job.finished,
                }
                manifest.write(json.dumps(row, ensure_ascii=False) + "\n")
    finally:
        journal.close()
    return written


def _write_input(journal: Journal, job: Job, out: Path) -> Path | None:
    """The job's input as a file under the folder of its answer; None when it cannot be kept."""
    state = (job.result or {}).get("state")
    if not isinstance(state, str) or not state or "/" in state or state.startswith((".", "_")):
        return None
    folder = out / state
    if job.image is not None:
        try:
            data = journal.get_blob(job.image)
        except KeyError:
            return None  # pruned since
        suffix = next((ext for magic, ext in _MAGIC if data.startswith(magic)), ".jpg")
        path = folder / f"{job.id}{suffix}"
        folder.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path
    text = job.input.get("text")
    if not isinstance(text, str) or not text:
        return None  # e.g. an image_url job: the picture was never stored
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{job.id}.txt"
    path.write_text(text, encoding="utf-8")
    return path
