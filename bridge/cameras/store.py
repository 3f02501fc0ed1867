"""What scheduled checks remember across restarts, in one small JSON file in the data folder.

Paused flags, the last tick of each rule, the last judged picture and the confirmed state of
each rule and source. Written atomically (temporary file, then rename).
"""

import json
import logging
import os
from pathlib import Path
from typing import Any

from bridge.cameras.change import Judged
from bridge.cameras.confirm import Tracker

log = logging.getLogger(__name__)


class ScheduleStore:
    """The memory of scheduled checks; `save()` after changing it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.paused: dict[str, bool] = {}
        self.last_run: dict[str, float] = {}
        self.judged: dict[str, Judged] = {}
        self.trackers: dict[str, Tracker] = {}
        self.last_result: dict[str, str] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s (%s); schedules start afresh", self.path, exc)
            return
        self.paused = {k: bool(v) for k, v in data.get("paused", {}).items()}
        self.last_run = {k: float(v) for k, v in data.get("last_run", {}).items()}
        self.judged = {
            k: Judged(hash=v["hash"], at=float(v["at"]), blob=v.get("blob"))
            for k, v in data.get("judged", {}).items()
        }
        self.trackers = {k: Tracker.from_dict(v) for k, v in data.get("trackers", {}).items()}
        self.last_result = dict(data.get("last_result", {}))

    def tracker(self, key: str) -> Tracker:
        return self.trackers.setdefault(key, Tracker())

    def save(self) -> None:
        data = {
            "paused": self.paused,
            "last_run": self.last_run,
            "judged": {k: {"hash": j.hash, "at": j.at, "blob": j.blob} for k, j in self.judged.items()},
            "trackers": {k: t.to_dict() for k, t in self.trackers.items()},
            "last_result": self.last_result,
        }
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, sort_keys=True))
        os.replace(temporary, self.path)
