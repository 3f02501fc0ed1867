"""A journal that cannot be written (the disk is full): the daemon says why and stops at once,
acknowledging and publishing nothing more; started again on free space, it loses nothing."""

import errno
import json
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.cli import EXIT_JOURNAL
from tests.support.mqtt_helpers import Collector
from tests.support.ollama_standin import OllamaStandin

pytestmark = [pytest.mark.broker, pytest.mark.slow]

RESULT = "llm2mqtt/message_topic/result"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A file system of its own, 8 MB, for the data directory (mounting one needs root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {made.stderr.strip() or made.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave: int = 0) -> Path:
    """Take the free bytes of `disk`, all of them or all but about `leave`."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    chunk = b"\0" * 65536
    try:
        while len(chunk) and shutil.disk_usage(disk).free > leave:
            try:
                os.write(fd, chunk[: max(1, min(len(chunk), shutil.disk_usage(disk).free - leave))])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)
    return filler


def _send(collector: Collector, ids: list[str]) -> None:
    for ident in ids:
        text = f"buy {ident} " * 40  # a few pages per job: the journal needs room soon
        collector.publish("llm2mqtt/message_topic/run", json.dumps({"id": ident, "text": text}))


def test_a_full_disk_stops_the_daemon_with_its_reason_and_a_restart_loses_nothing(
    daemon, collector: Collector, ollama: OllamaStandin, small_disk: Path
) -> None:
    first = daemon(data_dir=str(small_disk), journal={"min_free": 0})  # no floor: the disk fills
    collector.wait_for("llm2mqtt/bridge/state", where=lambda m: m.json() == {"state": "online"})
    _send(collector, ["before"])
    collector.wait_for(RESULT)

    filler = _fill(small_disk)
    assert first.proc is not None
    ids = [f"full{i}" for i in range(40)]
    _send(collector, ids)  # QoS 1: the broker has them, the daemon acknowledges what it keeps
    assert first.proc.wait(30) == EXIT_JOURNAL  # not wedged, not running on without its journal
    first.proc = None
    output = first.output()
    assert "could not be written: database or disk is full" in output, output[-3000:]
    assert "MB free in" in output
    assert "resumes from the journal" in output
    collector.wait_for("llm2mqtt/bridge/state", where=lambda m: m.json() == {"state": "offline"})
    assert Counter(m.json()["id"] for m in collector.on(RESULT))["before"] == 1

    # Started again, as launchd or systemd would, on a disk still full.
    again = daemon(data_dir=str(small_disk), journal={"min_free": 0})
    assert again.proc is not None
    # The inputs sent again meet the same full disk (a commit or two may still fit in the WAL
    # file's space, which the failed one had taken: their jobs are published, once).
    assert again.proc.wait(30) == EXIT_JOURNAL
    again.proc = None
    # ("before" comes again at each start: the rule's result is retained, and a start publishes
    # each retained rule's last one.)
    twice = [i for i, n in Counter(m.json()["id"] for m in collector.on(RESULT)).items() if n > 1]
    assert twice == ["before"]

    filler.unlink()  # space again: the same daemon, started again, finishes every job
    second = daemon(data_dir=str(small_disk), journal={"min_free": 0})
    collector.wait_for(RESULT, where=lambda m: m.json()["id"] == ids[-1], timeout=60)
    collector.wait_for(RESULT, 1 + len(ids), timeout=30)
    time.sleep(0.5)
    results = Counter(m.json()["id"] for m in collector.on(RESULT))
    assert set(results) == {"before", *ids}
    assert [i for i in ids if results[i] != 1] == []  # each job once
    assert second.stop() == 0


def test_below_min_free_new_input_is_refused_with_an_error_and_the_daemon_runs_on(
    daemon, collector: Collector, ollama: OllamaStandin, small_disk: Path
) -> None:
    proc = daemon(data_dir=str(small_disk), journal={"min_free": "3MB"})
    collector.wait_for("llm2mqtt/bridge/state", where=lambda m: m.json() == {"state": "online"})
    filler = _fill(small_disk, leave=1_000_000)
    _send(collector, ["low"])
    error = collector.wait_for("llm2mqtt/message_topic/error")[0].json()["error"]
    assert "below journal.min_free (3,000,000); input refused until space is freed" in error
    assert str(small_disk) in error
    assert collector.on(RESULT) == []
    assert proc.proc is not None
    assert proc.proc.poll() is None  # running on

    filler.unlink()
    time.sleep(1.1)  # the free space is read at most once a second
    _send(collector, ["freed"])
    assert collector.wait_for(RESULT)[0].json()["id"] == "freed"
    assert proc.stop() == 0
