"""System calls per job, by name, for the three bridges of `compare`: `python -m bench syscalls`.

CPU time on a shared machine moves with its load (the same code measured 1.5 to 3.1 ms per job
within an hour); the number of system calls a job costs does not. strace counts every call of
every thread of the bridge's process (`strace -c -f -p`) during a burst of jobs, on a default
Mosquitto and an instant-answering Ollama stand-in, as `compare` runs them. What the kinds of
call stand for in llm2mqtt:

- `pwrite64`: the journal's WAL (SQLite writes a frame's header and its page apart: two per
  page a commit changed), `fsync` / `fdatasync`: its durability;
- `fcntl`: SQLite's file locks, taken and released per transaction;
- `recvfrom` / `sendto`: MQTT and HTTP (paho reads a packet's header a byte or two at a time
  and writes each packet with a call of its own);
- `futex`: threads waiting for each other (the fsync thread and the event loop, over the
  interpreter's lock); `epoll_*`: the event loop.

strace slows the process it traces several times over, so the burst's rate here says nothing;
the counts are what this measures. Without strace (`apt-get install strace`) it says so.
"""

import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.compare import System, _burst, _system, measurable

_ROW = re.compile(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$")
SHOWN = 10  # the most frequent calls listed per system


def summary(text: str) -> dict[str, int]:
    """Calls by name from `strace -c` output (its total line left out)."""
    calls = {m.group(2): int(m.group(1)) for m in map(_ROW.match, text.splitlines()) if m}
    calls.pop("total", None)
    return calls


def counted(system: System, jobs: int) -> dict[str, float]:
    """Calls per job of `system` during a burst of `jobs`, by name, and their total."""
    with tempfile.TemporaryDirectory(prefix="llm2mqtt-syscalls-") as tmp:
        out = Path(tmp) / "strace.txt"
        with _system(system, "default", mqtt={}) as (proc, client, _port, _standin):
            strace = subprocess.Popen(
                ["strace", "-c", "-f", "-p", str(proc.pid), "-o", str(out)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.5)  # attached to every thread
            _burst(client, jobs, "burst")
            time.sleep(0.5)  # the burst's last acks, deletes and fsyncs
            strace.send_signal(signal.SIGINT)
            strace.wait(60)
        calls = summary(out.read_text())
    per_job = {name: round(n / jobs, 2) for name, n in sorted(calls.items(), key=lambda kv: -kv[1])}
    return {"total": round(sum(calls.values()) / jobs, 1), **dict(list(per_job.items())[:SHOWN])}


def syscalls(jobs: int = 1000) -> dict[str, Any]:
    """Each system once, as `compare` runs it, with its system calls counted per job."""
    if shutil.which("strace") is None:
        return {"skipped": "strace is not installed (apt-get install strace)"}
    table: dict[str, Any] = {"burst_jobs": jobs}
    for system in measurable(table):
        table[system] = counted(system, jobs)
    return table
