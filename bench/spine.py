"""Benchmarks of the spine: daemon overhead, saturation of the model, image path, memory."""

import json
import random
import sqlite3
import time
from contextlib import closing
from io import BytesIO
from typing import Any

from PIL import Image

from bench.common import TEXT_RULE, Client, median, percentile, rss_mb, stack, wait_online


def plain_round_trips(client: Client, count: int, rate: float) -> list[float]:
    """Publish → broker → same client, paced at `rate` per second: the floor any bridge pays."""
    sent: list[float] = []
    for i in range(count):
        sent.append(time.perf_counter())
        client.publish("bench/echo", str(i))
        _pace(sent[0], i + 1, rate)
    arrivals = client.wait("bench/echo", count, 60)
    return [(arrivals[i][0] - sent[int(arrivals[i][1])]) * 1000 for i in range(count)]


def _pace(start: float, done: int, rate: float) -> None:
    if rate <= 0:
        return
    wait = start + done / rate - time.perf_counter()
    if wait > 0:
        time.sleep(wait)


def job_round_trips(client: Client, count: int, rate: float, tag: str) -> tuple[list[float], float]:
    """Jobs through the daemon; returns per-job latency (ms) and the wall time of the run."""
    topic = "llm2mqtt/bench_text/result"
    before = client.count(topic)
    sent: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(count):
        ident = f"{tag}{i}"
        sent[ident] = time.perf_counter()
        client.publish("bench/in", json.dumps({"id": ident, "text": f"buy item {ident} for shopping"}))
        _pace(start, i + 1, rate)
    arrivals = client.wait(topic, before + count, 300)[before:]
    wall = arrivals[-1][0] - start
    latencies = [(at - sent[json.loads(body)["id"]]) * 1000 for at, body in arrivals]
    return latencies, wall


def overhead(jobs: int = 2000, paced: int = 500) -> dict[str, Any]:
    with stack([TEXT_RULE]) as (broker, _standin, _daemon):
        client = Client(broker.port, ["llm2mqtt/bridge/state", "llm2mqtt/bench_text/result", "bench/echo"])
        wait_online(client)
        job_round_trips(client, 50, 0, "warm")  # imports, first connections
        plain = plain_round_trips(client, paced, 50)
        paced_latency, _ = job_round_trips(client, paced, 50, "paced")
        _, wall = job_round_trips(client, jobs, 0, "burst")
        client.close()
    return {
        "burst_jobs": jobs,
        "jobs_per_s": round(jobs / wall, 1),
        "plain_rtt_p50_ms": round(median(plain), 2),
        "plain_rtt_p99_ms": round(percentile(plain, 99), 2),
        "job_rtt_p50_ms_at_50_per_s": round(median(paced_latency), 2),
        "job_rtt_p99_ms_at_50_per_s": round(percentile(paced_latency, 99), 2),
        "added_p50_ms": round(median(paced_latency) - median(plain), 2),
        "added_p99_ms": round(percentile(paced_latency, 99) - percentile(plain, 99), 2),
    }


def saturation(jobs: int = 200, latency: float = 0.2, parallel: int = 2) -> dict[str, Any]:
    with stack([TEXT_RULE], parallel=parallel, latency=latency) as (broker, standin, _daemon):
        client = Client(broker.port, ["llm2mqtt/bridge/state", "llm2mqtt/bench_text/result"])
        wait_online(client)
        standin.reset_stats()
        start = time.perf_counter()
        for i in range(jobs):
            client.publish("bench/in", json.dumps({"id": f"s{i}", "text": f"job {i}"}))
        arrivals = client.wait("llm2mqtt/bench_text/result", jobs, 120)
        wall = arrivals[-1][0] - start
        client.close()
        peak = standin.peak_concurrency
    limit = parallel / latency
    return {
        "jobs": jobs,
        "limit_jobs_per_s": limit,
        "jobs_per_s": round(jobs / wall, 2),
        "fraction_of_limit": round(jobs / wall / limit, 3),
        "standin_peak_concurrency": peak,
        "parallel": parallel,
    }


class _Snapshots:
    """Distinct camera-sized JPEGs (320x240, noisy, about 20 KB each), made cheaply."""

    def __init__(self) -> None:
        self.base = Image.effect_noise((320, 240), 64).convert("RGB")

    def make(self, seed: int) -> bytes:
        image = self.base.copy()
        rng = random.Random(seed)
        for _ in range(8):
            image.putpixel((rng.randrange(320), rng.randrange(240)), (255, 0, 0))
        buffer = BytesIO()
        image.save(buffer, "JPEG", quality=85)
        return buffer.getvalue()


def memory(jobs: int = 10_000, receive_memory: str | None = None) -> dict[str, Any]:
    """RSS with `jobs` pictures queued; `receive_memory` sets mqtt.receive_memory (the bench's
    broker has max_queued_messages 0, which that setting needs)."""
    rule = {
        "name": "bench_image",
        "handler": "yes_no",
        "model": "qwen2.5vl:3b",
        "prompt": "Is it bright?",
        "inputs": [{"mqtt": "bench/image"}],
    }
    # The model never answers within the run: every job stays queued.
    mqtt = {"receive_memory": receive_memory} if receive_memory else None
    with stack([rule], latency=3600, mqtt=mqtt) as (broker, _standin, daemon):
        client = Client(broker.port, ["llm2mqtt/bridge/state"])
        wait_online(client)
        assert daemon.proc is not None
        idle = rss_mb(daemon.proc.pid)
        payload_bytes = 0
        snapshots = _Snapshots()
        started = time.monotonic()
        for i in range(jobs):
            data = snapshots.make(i)
            payload_bytes += len(data)
            client.publish("bench/image", data)
            if i % 500 == 499:
                time.sleep(0.05)
        journal = daemon.config.parent / "data" / "journal.sqlite3"
        deadline = time.monotonic() + 120
        queued = 0
        while time.monotonic() < deadline:
            with closing(sqlite3.connect(journal)) as db:
                queued = db.execute(
                    "SELECT count(*) FROM jobs WHERE state IN ('queued','running')"
                ).fetchone()[0]
            if queued >= jobs:
                break
            time.sleep(0.2)
        journaled_s = time.monotonic() - started
        loaded = rss_mb(daemon.proc.pid)
        client.close()
        daemon.kill()  # its one job would otherwise wait an hour for the model
    return {
        "jobs_queued": queued,
        "images_mb": round(payload_bytes / 1e6, 1),
        "rss_idle_mb": round(idle, 1),
        "rss_queued_mb": round(loaded, 1),
        "journaled_s": round(journaled_s, 1),  # from the first publish until all are queued
    }
