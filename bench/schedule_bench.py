"""Scheduled door checks: a 24-hour trace through the real daemon, and an interactive job's wait.

The trace (tests/support/doortrace.py, one frame per 30 s) is fed through the rule's MQTT input as fast
as the pipeline takes it: each frame is published once the previous one has an outcome (judged
or skipped), so a day runs in a minute and frame counts stand in for time. The stand-in Ollama
answers from the pixels (which way the thumb-turn's bar lies).
"""

import json
import time
from typing import Any

from bench.common import Client, stack, wait_online
from tests.support.doortrace import CHANGE_FRAMES, FRAMES, LOCK_CROP, frames, judge_locked, locked_at
from tests.support.ollama_standin import ChatRequest, default_reply

DOOR = "door_lock"
MAX_AGE_S = 1.5
BATCH = "bench_batch"
EVENT_TOPIC = "llm2mqtt/bridge/event"

DOOR_RULE: dict[str, Any] = {
    "name": DOOR,
    "handler": "yes_no",
    "model": "qwen2.5vl:3b",
    "prompt": "Is the thumb-turn of this door lock in the locked position?",
    "labels": {"true": "locked", "false": "unlocked"},
    "inputs": [{"mqtt": "bench/door"}],
    "image": {"crop": list(LOCK_CROP), "max_side": 256},
    "kind": "state",
    "hysteresis": 2,
    # The trace runs ~100 times faster than real time, so max_age is in wall seconds: at the
    # measured pace it stands for about an hour of trace time (reported as max_age_trace_min).
    "change": {"max_distance": 4, "max_age": MAX_AGE_S},
}
BATCH_RULE: dict[str, Any] = {
    "name": BATCH,
    "handler": "classify",
    "model": "qwen2.5:3b",
    "prompt": "Which area?",
    "labels": ["shopping", "chores", "security", "other"],
    "inputs": [{"mqtt": "bench/batch"}],
    "kind": "event",
    "outputs": {"retain": False},
}


def respond(req: ChatRequest) -> str:
    """The stand-in's answer: the door from its pixels, anything else as usual."""
    if req.images:
        return json.dumps({"answer": judge_locked(req.images[-1]), "confidence": 0.9})
    return default_reply(req)


class Events:
    """Reads the bridge's events as they arrive."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.seen = 0

    def new(self) -> list[dict[str, Any]]:
        arrived = self.client.arrivals.get(EVENT_TOPIC, [])[self.seen :]
        self.seen += len(arrived)
        return [json.loads(body) for _, body in arrived]


def _until(events: Events, predicate: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Collect events until one satisfies `predicate`; returns all collected."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = events.new()
        got.extend(fresh)
        if any(predicate(e) for e in fresh):
            return got
        time.sleep(0.0005)
    raise TimeoutError("no outcome within the timeout")


def trace(client: Client, count: int) -> dict[str, Any]:
    events = Events(client)
    events.new()
    frame_of: dict[str, int] = {}
    collected: list[dict[str, Any]] = []
    started = time.perf_counter()
    for frame in frames(count):
        client.publish("bench/door", frame.jpeg)
        got = _until(events, lambda e: e["rule"] == DOOR and e["type"] in ("job_done", "job_skipped"))
        collected.extend(got)
        for e in got:
            if e["type"] in ("job_done", "job_skipped") and e["rule"] == DOOR:
                frame_of.setdefault(e["job_id"], frame.index)
    wall = time.perf_counter() - started
    time.sleep(1.0)
    collected.extend(events.new())
    changed = [e for e in collected if e["type"] == "changed" and e["rule"] == DOOR]
    skipped = [e for e in collected if e["type"] == "job_skipped" and e["rule"] == DOOR]
    true_changes = [c for c in CHANGE_FRAMES if c < count]
    delays: list[int] = []
    flips = 0
    matched: set[int] = set()
    for e in changed:
        at = frame_of[e["job_id"]]
        if e["old"] is None:
            flips += e["new"] != ("locked" if locked_at(at) else "unlocked")
            continue
        change = max((c for c in true_changes if c <= at), default=None)
        expected = "locked" if locked_at(at) else "unlocked"
        if change is None or change in matched or e["new"] != expected:
            flips += 1
            continue
        matched.add(change)
        delays.append(at - change)
    return {
        "frames": count,
        "frames_per_s": round(count / wall, 1),
        "max_age_trace_min": round(MAX_AGE_S * count / wall * 0.5),
        "skipped_unchanged": sum(1 for e in skipped if str(e.get("reason", "")).startswith("unchanged")),
        "changes_detected": f"{len(matched)} of {len(true_changes)}",
        "mean_delay_frames": round(sum(delays) / len(delays), 2) if delays else None,
        "max_delay_frames": max(delays) if delays else None,
        "false_flips": flips,
    }


def interactive_next(client: Client, standin: Any, queued: int = 100) -> dict[str, Any]:
    """100 background jobs waiting, then one interactive: how many others start before it."""
    standin.latency = 0.1
    events = Events(client)
    events.new()
    for i in range(queued):
        client.publish("bench/batch", json.dumps({"id": f"bg{i}", "text": f"background check {i}"}))
    log: list[dict[str, Any]] = []
    while sum(1 for e in log if e["type"] == "job_queued" and e["rule"] == BATCH) < queued:
        log.extend(_until(events, lambda e: e["type"] == "job_queued"))
    client.publish(f"llm2mqtt/{BATCH}/run", json.dumps({"id": "person", "text": "is the door locked?"}))
    log.extend(_until(events, lambda e: e["type"] == "job_queued" and e.get("source", "").endswith("/run")))
    interactive = next(e["job_id"] for e in log if e.get("source", "").endswith("/run"))
    at_queue = len(log)
    started_before = sum(1 for e in log if e["type"] == "job_started" and e["rule"] == BATCH)
    log.extend(_until(events, lambda e: e["type"] == "job_started" and e["job_id"] == interactive))
    others = [e for e in log[at_queue:] if e["type"] == "job_started" and e["job_id"] != interactive]
    return {
        "background_waiting": queued - started_before,
        "started_before_interactive": len(others),
    }


def schedule(quick: bool = False) -> dict[str, Any]:
    count = 960 if quick else FRAMES
    with stack([DOOR_RULE, BATCH_RULE], parallel=1) as (broker, standin, _daemon):
        standin.responder = respond
        client = Client(broker.port, ["llm2mqtt/bridge/state", EVENT_TOPIC])
        wait_online(client)
        standin.reset_stats()
        result = trace(client, count)
        calls = sum(1 for r in standin.requests if r.model.startswith("qwen2.5vl"))
        result["model_calls"] = calls
        result["model_calls_per_frame"] = f"{calls / count:.2%}"
        result["interactive"] = interactive_next(client, standin)
        client.close()
    return result
