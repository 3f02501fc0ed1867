"""The web console at scale: page render times with 100,000 jobs in the journal, and what 20 open
event streams (browser tabs on /api/events) cost the job throughput."""

import contextlib
import json
import random
import selectors
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import TEXT_RULE, Client, median, percentile, stack, wait_online
from bench.spine import job_round_trips
from bridge.pipeline.journal import Journal
from tests.support.mqtt_helpers import free_port, wait_for_port
from tests.support.samples import door

LOCK_RULE: dict[str, Any] = {
    "name": "bench_lock",
    "handler": "yes_no",
    "model": "qwen2.5vl:3b",
    "prompt": "Is the door locked?",
    "labels": {"true": "locked", "false": "unlocked"},
    "inputs": [{"mqtt": "bench/door"}],
    "image": {"max_side": 256},
}
NOTE_RULE = {**TEXT_RULE, "name": "bench_notes", "inputs": [{"mqtt": "bench/notes"}]}
RULES = [TEXT_RULE, LOCK_RULE, NOTE_RULE]


def fill_journal(path: Path, jobs: int, *, days: float = 7.0, pictures: int = 200) -> None:
    """`jobs` finished jobs over the last `days` (a third with a picture, 2 % failed)."""
    Journal(path).close()  # the schema, as the daemon makes it
    db = sqlite3.connect(path)
    now = time.time()
    blobs = [door(locked=i % 2 == 0, size=(640, 480)) for i in range(pictures)]
    hashes = []
    for i, data in enumerate(blobs):
        digest = f"{i:064x}"
        hashes.append(digest)
        db.execute("INSERT INTO blobs (hash, data, created) VALUES (?, ?, ?)", (digest, data, now))
    rng = random.Random(7)
    rows = []
    for i in range(jobs):
        created = now - days * 86400 * (1 - i / jobs)
        rule = RULES[i % 3]["name"]
        failed = rng.random() < 0.02
        job_id = f"{int(created * 1000):011x}{i:010x}"
        image = hashes[i % pictures] if rule == "bench_lock" else None
        answer = "locked" if i % 2 else "unlocked"
        result = None if failed else {
            "job_id": job_id, "rule": rule, "source": "mqtt:bench", "state": answer, "confidence": 0.9,
            "model": "qwen2.5vl:3b", "timings": {"queued": 3.0, "llm": 640.0, "total": 650.0},
        }  # fmt: skip
        text = None if image else f"note number {i}: buy item {i}"
        rows.append(
            (job_id, rule, "mqtt:bench", "failed" if failed else "done", 0, created, created, created + 0.7,
             0, 1, None, None, image, json.dumps({"kind": "text", "fields": {}, "text": text}),
             json.dumps(result) if result else None, "model timed out" if failed else None)
        )  # fmt: skip
    db.executemany("INSERT INTO jobs (id, rule, source, state, priority, created, started, finished,"
                   " not_before, attempts, dedupe_key, payload_hash, image, input, result, error)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)  # fmt: skip
    db.commit()
    db.close()


def server_ms(client: httpx.Client, path: str, repeat: int) -> list[float]:
    """The console's own time for `path` (its Server-Timing header), `repeat` times."""
    times = []
    for _ in range(repeat):
        answer = client.get(path)
        answer.raise_for_status()
        times.append(float(answer.headers["server-timing"].split("dur=")[1]))
    return times


def render(jobs: int = 100_000, repeat: int = 30) -> dict[str, Any]:
    """Server time of the Live and Rules pages (and their API twins) over a full journal."""
    with stack_with_journal(jobs) as (port, _client, _pid):
        out: dict[str, Any] = {"jobs_in_journal": jobs}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as web:
            oldest = web.get("/api/jobs", params={"limit": 200}).json()["next"]
            pages = {
                "live": "/",
                "live_rule_failed": "/?rule=bench_lock&outcome=failed",
                "live_older_page": f"/?before={oldest}",
                "rules": "/rules",
                "rule_history": "/rules/bench_lock",
                "api_jobs": "/api/jobs?limit=50",
                "api_rules": "/api/rules",
            }
            for name, path in pages.items():
                times = server_ms(web, path, repeat)
                out[f"{name}_p50_ms"] = round(median(times), 1)
                out[f"{name}_p95_ms"] = round(percentile(times, 95), 1)
            job = web.get("/api/jobs", params={"rule": "bench_lock", "limit": 1}).json()["items"][0]["job_id"]
            first = server_ms(web, f"/api/jobs/{job}/image?thumb=1", 1)[0]
            cached = median(server_ms(web, f"/api/jobs/{job}/image?thumb=1", repeat))
            out["thumb_first_ms"], out["thumb_cached_ms"] = round(first, 1), round(cached, 1)
    return out


class _Streams:
    """`count` open /api/events streams read by one thread that discards what arrives, as cheap
    as a reader can be (browser tabs run elsewhere; this machine's CPU is the daemon's)."""

    def __init__(self, port: int, count: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.bytes = 0
        self.socks = []
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
            self.socks.append(sock)
        self._stop = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self._stop:
            for key, _ in self.selector.select(0.2):
                with contextlib.suppress(BlockingIOError):
                    self.bytes += len(key.fileobj.recv(65536))  # type: ignore[union-attr]

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        for sock in self.socks:
            sock.close()


def sse_cost(jobs: int = 1000, streams: int = 20, rounds: int = 5) -> dict[str, Any]:
    """Burst throughput and the daemon's CPU time per job, without and with `streams` open event
    streams, alternated `rounds` times. On a shared machine the CPU time per job is the steadier
    figure: other processes change the wall clock, not the daemon's own work."""
    with stack_with_journal(0) as (port, client, pid):
        daemon = psutil.Process(pid)
        job_round_trips(client, 100, 0, "warm")
        runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        delivered = 0
        for r in range(rounds):
            for with_streams in (False, True):
                readers = _Streams(port, streams) if with_streams else None
                time.sleep(0.3)
                cpu = sum(daemon.cpu_times()[:2])
                _, wall = job_round_trips(client, jobs, 0, f"{r}{with_streams}-")
                cpu_ms = (sum(daemon.cpu_times()[:2]) - cpu) * 1000 / jobs
                runs[with_streams].append((jobs / wall, cpu_ms))
                if readers is not None:
                    time.sleep(0.3)
                    delivered += readers.bytes
                    readers.close()
    base, loaded = median([t for t, _ in runs[False]]), median([t for t, _ in runs[True]])
    cpu_base, cpu_loaded = median([c for _, c in runs[False]]), median([c for _, c in runs[True]])
    return {
        "burst_jobs": jobs,
        "streams": streams,
        "rounds": rounds,
        "jobs_per_s_without_streams": round(base, 1),
        "jobs_per_s_with_streams": round(loaded, 1),
        "throughput_slowdown_pct": round((base - loaded) / base * 100, 1),
        "daemon_cpu_ms_per_job_without": round(cpu_base, 2),
        "daemon_cpu_ms_per_job_with": round(cpu_loaded, 2),
        "cpu_per_job_increase_pct": round((cpu_loaded - cpu_base) / cpu_base * 100, 1),
        "runs_jobs_per_s_without": [round(t, 1) for t, _ in runs[False]],
        "runs_jobs_per_s_with": [round(t, 1) for t, _ in runs[True]],
        "event_bytes_per_stream": delivered // (streams * rounds),
    }


@contextmanager
def stack_with_journal(jobs: int) -> Iterator[tuple[int, Client, int]]:
    """A daemon with the web console on, over a journal filled with `jobs` finished jobs."""
    with tempfile.TemporaryDirectory(prefix="llm2mqtt-webbench-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        if jobs:
            fill_journal(data / "journal.sqlite3", jobs)
        port = free_port()
        settings = {"data_dir": str(data), "http": {"enabled": True, "port": port}, "stats_interval": 10}
        with stack(RULES, **settings) as (broker, _standin, daemon):
            wait_for_port(port, 30)
            client = Client(broker.port, ["llm2mqtt/bridge/state", "llm2mqtt/bench_text/result"])
            try:
                wait_online(client)
                assert daemon.proc is not None
                yield port, client, daemon.proc.pid
            finally:
                client.close()


def bench_web(quick: bool) -> dict[str, Any]:
    """Both figures of the issue: render times at 100,000 jobs and the cost of 20 event streams."""
    pages = render(jobs=20_000 if quick else 100_000, repeat=10 if quick else 30)
    streams = sse_cost(jobs=300 if quick else 1000, rounds=2 if quick else 5)
    return {"render": pages, "sse": streams}
