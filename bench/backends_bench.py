"""Several servers: two Ollama hosts behind one daemon, and two daemons sharing one group.

- `two_hosts`: two stand-ins with `parallel` 2 at 200 ms each (20 jobs/s together); throughput as
  a fraction of that, and each stand-in's peak concurrency (counted before its own limit).
- `shared_group`: the instant-answer burst through one daemon, then through two daemons in one
  `mqtt.shared_group`, against one stand-in with `parallel` 4; the ratio of their throughputs.
"""

import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from bench.common import TEXT_RULE, Client, wait_online
from tests.support.mqtt_helpers import Daemon, Mosquitto
from tests.support.ollama_standin import OllamaStandin

RESULTS = "llm2mqtt/bench_text/result"


def _start_daemon(folder: Path, settings: dict[str, Any]) -> Daemon:
    (folder / "rules").mkdir(parents=True)
    (folder / "rules" / "bench_text.yaml").write_text(yaml.safe_dump(TEXT_RULE))
    base = {"journal": {"dedupe_window": 0}, "log_level": "warning", "homeassistant": {"enabled": False}}
    (folder / "config.yaml").write_text(yaml.safe_dump({**base, **settings}))
    daemon = Daemon(folder / "config.yaml")
    daemon.start()
    return daemon


@contextmanager
def _broker() -> Iterator[tuple[Path, Mosquitto]]:
    with tempfile.TemporaryDirectory(prefix="llm2mqtt-bench-") as tmp:
        broker = Mosquitto(Path(tmp) / "mosquitto")
        broker.start()
        try:
            yield Path(tmp), broker
        finally:
            broker.stop()


def _burst(client: Client, jobs: int, tag: str) -> float:
    """Publish `jobs` at once; jobs per second until the last result."""
    before = client.count(RESULTS)
    start = time.perf_counter()
    for i in range(jobs):
        client.publish("bench/in", json.dumps({"id": f"{tag}{i}", "text": f"buy item {tag}{i}"}))
    arrivals = client.wait(RESULTS, before + jobs, 600)
    return jobs / (arrivals[-1][0] - start)


def two_hosts(jobs: int = 200, latency: float = 0.2, parallel: int = 2) -> dict[str, Any]:
    """Two Ollama stand-ins behind one daemon."""
    with _broker() as (folder, broker):
        standins = [OllamaStandin(parallel=8, latency=latency, max_queue=100_000).start() for _ in range(2)]
        backends = {
            name: {"type": "ollama", "url": s.url, "parallel": parallel, "timeout": 600}
            for name, s in zip(("mini", "pc"), standins, strict=True)
        }
        daemon = _start_daemon(folder / "d", {"mqtt": {"url": broker.url}, "backends": backends})
        try:
            client = Client(broker.port, ["llm2mqtt/bridge/state", RESULTS])
            wait_online(client)
            _burst(client, 8, "warm")
            for s in standins:
                s.reset_stats()
            rate = _burst(client, jobs, "j")
            client.close()
        finally:
            daemon.stop(60)
            for s in standins:
                s.stop()
    limit = 2 * parallel / latency
    return {
        "jobs": jobs,
        "limit_jobs_per_s": limit,
        "jobs_per_s": round(rate, 2),
        "fraction_of_limit": round(rate / limit, 3),
        "peak_concurrency": [s.peak_concurrency for s in standins],
        "parallel": parallel,
        "requests": [len(s.requests) for s in standins],
    }


def shared_group(jobs: int = 2000, parallel: int = 4) -> dict[str, Any]:
    """One daemon, then two in one shared group, against one instant stand-in."""
    rates: dict[int, float] = {}
    for count in (1, 2):
        with _broker() as (folder, broker), OllamaStandin(parallel=parallel, max_queue=100_000) as standin:
            daemons = [
                _start_daemon(
                    folder / f"d{i}",
                    {
                        "mqtt": {"url": broker.url, "client_id": f"bench-{i}", "shared_group": "bench"},
                        "ollama": {"url": standin.url, "parallel": parallel, "timeout": 600},
                    },
                )
                for i in range(count)
            ]
            try:
                client = Client(broker.port, ["llm2mqtt/bridge/state", RESULTS])
                wait_online(client)
                time.sleep(1.0)  # every daemon subscribed
                _burst(client, 50, "warm")
                rates[count] = _burst(client, jobs, "j")
                client.close()
            finally:
                for daemon in daemons:
                    daemon.stop(60)
    return {
        "jobs": jobs,
        "one_daemon_jobs_per_s": round(rates[1], 1),
        "two_daemons_jobs_per_s": round(rates[2], 1),
        "ratio": round(rates[2] / rates[1], 2),
    }
