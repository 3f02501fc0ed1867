"""Scheduled camera checks through the real daemon: snapshots, change detection, states, faults."""

import io
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from tests.support.camera import Camera
from tests.support.mqtt_helpers import Collector, Daemon
from tests.support.ollama_standin import OllamaStandin

pytestmark = [pytest.mark.broker, pytest.mark.slow]

TOKEN = "s3cret-token"


def scene(locked: bool, *, seed: int = 0) -> bytes:
    """A lock picture: bright with a bar across (locked, mean >= 128) or dark with a bar upright."""
    image = Image.new("L", (160, 120), 200 if locked else 60)
    draw = ImageDraw.Draw(image)
    if locked:
        draw.rectangle([30, 50, 130, 70], fill=20)
    else:
        draw.rectangle([70, 10, 90, 110], fill=230)
    draw.point([(seed % 160, seed // 160 % 120)], fill=128)  # different bytes, same picture
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture
def camera() -> Iterator[Camera]:
    cam = Camera(scene(True))
    yield cam
    cam.close()


def lock_rule(camera: Camera | None = None, **keys: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "name": "door",
        "handler": "yes_no",
        "model": "qwen2.5vl:3b",
        "prompt": "Is the thumb-turn in the locked position?",
        "labels": {"true": "locked", "false": "unlocked"},
        "image": {"max_side": 128},
        "change": {"max_distance": 4, "max_age": "1h"},
    }
    if camera is not None:
        rule["snapshot"] = {"url": camera.url, "token": TOKEN, "timeout": "1s"}
    rule.update(keys)
    return rule


def events(collector: Collector, kind: str) -> list[dict[str, Any]]:
    return [m.json() for m in collector.on("llm2mqtt/bridge/event") if m.json()["type"] == kind]


def _journal(config: Path) -> dict[str, int]:
    with closing(sqlite3.connect(config.parent / "data" / "journal.sqlite3")) as db:
        return dict(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())


def test_schedule_checks_only_changed_pictures_and_publishes_state_on_change(
    daemon: Callable[..., Daemon], collector: Collector, camera: Camera, ollama: OllamaStandin, broker: Any
) -> None:
    daemon([lock_rule(camera, schedule={"every": "1s"})], stats_interval=0.5)
    collector.wait_for("llm2mqtt/door/state", where=lambda m: m.payload == b"locked")
    collector.wait_for(
        "llm2mqtt/bridge/event", 3, where=lambda m: m.json().get("reason", "").startswith("unchanged")
    )
    calls = len(ollama.requests)
    assert calls == 1  # the same picture was looked at once, however often it was taken
    camera.image = scene(False, seed=5)
    collector.wait_for("llm2mqtt/door/state", where=lambda m: m.payload == b"unlocked")
    collector.wait_for("llm2mqtt/bridge/event", where=lambda m: m.json().get("new") == "unlocked")
    changed = [(e["old"], e["new"]) for e in events(collector, "changed")]
    assert changed == [(None, "locked"), ("locked", "unlocked")]
    collector.wait_for(
        "llm2mqtt/bridge/event", 5, where=lambda m: m.json().get("reason", "").startswith("unchanged")
    )
    states = [m.payload for m in collector.on("llm2mqtt/door/state")]
    assert states == [b"locked", b"unlocked"]
    results = collector.on("llm2mqtt/door/result")
    assert len(results) == len(ollama.requests) == 2  # a result for every judged check, no more
    assert results[0].json()["source"] == "schedule:door"
    assert set(camera.auth) == {f"Bearer {TOKEN}"}
    collector.wait_for("llm2mqtt/bridge/models")
    late = Collector(broker.port, ["llm2mqtt/bridge/models", "llm2mqtt/door/state"])  # sees what is retained
    try:
        models = late.wait_for("llm2mqtt/bridge/models")[0]
        state = late.wait_for("llm2mqtt/door/state")[0]
    finally:
        late.close()
    assert models.retain
    assert models.json() == ["qwen2.5vl:3b"]
    stats = collector.wait_for(
        "llm2mqtt/bridge/stats", where=lambda m: m.json()["rules"]["door"]["unchanged"] >= 8
    )
    door = stats[-1].json()["rules"]["door"]
    assert door["model_calls"] == 2
    assert door["checks"] == door["unchanged"] + 2
    assert door["superseded"] == 0
    assert (state.retain, state.payload) == (True, b"unlocked")


def test_check_topic_runs_the_model_now_as_an_interactive_job(
    daemon: Callable[..., Daemon], collector: Collector, camera: Camera, ollama: OllamaStandin
) -> None:
    proc = daemon([lock_rule(camera, schedule={"every": "1h"})])
    collector.wait_for("llm2mqtt/bridge/state")
    for n in (1, 2):
        collector.publish("llm2mqtt/door/check", b"")
        collector.wait_for("llm2mqtt/door/result", n)
    # The same picture twice: a person asked, so the model looked both times.
    assert len(ollama.requests) == 2
    assert [m.json()["source"] for m in collector.on("llm2mqtt/door/result")] == ["check:door"] * 2
    assert [m.payload for m in collector.on("llm2mqtt/door/state")] == [b"locked"]
    with closing(sqlite3.connect(proc.config.parent / "data" / "journal.sqlite3")) as db:
        priorities = {row[0] for row in db.execute("SELECT priority FROM jobs WHERE source = 'check:door'")}
    assert priorities == {1000}


def test_pause_stops_ticks_and_survives_a_restart(
    daemon: Callable[..., Daemon], collector: Collector, camera: Camera
) -> None:
    proc = daemon([lock_rule(camera, schedule={"every": "1s"})])
    collector.wait_for("llm2mqtt/door/paused", where=lambda m: m.payload == b"OFF")
    collector.wait_for("llm2mqtt/door/result")
    collector.publish("llm2mqtt/door/paused/set", b"ON")
    collector.wait_for("llm2mqtt/door/paused", where=lambda m: m.payload == b"ON")
    time.sleep(0.5)
    hits = camera.hits
    time.sleep(2.5)
    assert camera.hits == hits
    proc.stop()
    proc.start()
    collector.wait_for("llm2mqtt/door/paused", 2, where=lambda m: m.payload == b"ON")
    time.sleep(2.5)
    assert camera.hits == hits
    collector.publish("llm2mqtt/door/paused/set", b"off")
    collector.wait_for("llm2mqtt/door/paused", 2, where=lambda m: m.payload == b"OFF")
    deadline = time.monotonic() + 5
    while camera.hits == hits and time.monotonic() < deadline:
        time.sleep(0.1)
    assert camera.hits > hits


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("404", "answered HTTP 404"),
        ("html", "sent text/html, not an image"),
        ("slow", "timed out"),
        ("huge", "above the limit"),
    ],
)
def test_a_failed_snapshot_is_an_error_and_the_next_tick_tries_again(
    daemon: Callable[..., Daemon],
    collector: Collector,
    camera: Camera,
    ollama: OllamaStandin,
    mode: str,
    message: str,
) -> None:
    camera.mode = mode
    daemon([lock_rule(camera, schedule={"every": "1s"})])
    errors = collector.wait_for("llm2mqtt/door/error", 2, timeout=20)
    for error in errors:
        assert message in error.json()["error"]
        assert error.json()["input"]["source"] == "schedule:door"
    # No picture, no question; but the model was preloaded for the check.
    assert ollama.requests == []
    assert "qwen2.5vl:3b" in ollama.loaded
    camera.mode = "image"
    collector.wait_for("llm2mqtt/door/state", where=lambda m: m.payload == b"locked", timeout=20)


def test_mqtt_snapshot_request_and_reply(
    daemon: Callable[..., Daemon], collector: Collector, broker: Any
) -> None:
    camera = Collector(broker.port, ["cameras/door/snapshot/get"])
    replies = {"on": True}

    def answer(client: Any, userdata: Any, message: Any) -> None:
        if replies["on"]:
            client.publish("cameras/door/snapshot/image", scene(True), qos=1)

    camera.client.on_message = answer
    try:
        snapshot = {"mqtt_request": "cameras/door/snapshot/get", "mqtt_reply": "cameras/door/snapshot/image"}
        daemon([lock_rule(snapshot={**snapshot, "timeout": "1s"})])
        collector.wait_for("llm2mqtt/bridge/state")
        collector.publish("llm2mqtt/door/check", b"")
        assert collector.wait_for("llm2mqtt/door/result")[0].json()["state"] == "locked"
        replies["on"] = False  # a camera that never answers
        collector.publish("llm2mqtt/door/check", b"")
        error = collector.wait_for("llm2mqtt/door/error")[0].json()
        assert "no image on cameras/door/snapshot/image within 1s" in error["error"]
    finally:
        camera.close()


def test_same_bytes_forever_still_checked_at_max_age_with_a_stale_warning(
    daemon: Callable[..., Daemon], collector: Collector, camera: Camera, ollama: OllamaStandin
) -> None:
    daemon([lock_rule(camera, schedule={"every": "1s"}, change={"max_age": "2s"})])
    collector.wait_for("llm2mqtt/door/result", 2, timeout=10)
    stale = collector.wait_for("llm2mqtt/bridge/event", where=lambda m: m.json()["type"] == "stale_image")
    assert stale[0].json()["rule"] == "door"
    assert [m.payload for m in collector.on("llm2mqtt/door/state")] == [b"locked"]


@pytest.mark.parametrize(("last_run_ago", "runs_at_start"), [(95.0, 1), (5.0, 0), (-3600.0, 0)])
def test_checks_missed_while_down_run_once_at_start(
    daemon_config: Callable[..., Path],
    collector: Collector,
    camera: Camera,
    last_run_ago: float,
    runs_at_start: int,
) -> None:
    # The daemon last ticked `last_run_ago` seconds ago (negative: the clock was set back since).
    config = daemon_config([lock_rule(camera, schedule={"every": "30s"})])
    (config.parent / "data").mkdir(exist_ok=True)
    (config.parent / "data" / "schedules.json").write_text(
        json.dumps({"last_run": {"door": time.time() - last_run_ago}})
    )
    proc = Daemon(config)
    proc.start()
    try:
        collector.wait_for("llm2mqtt/bridge/state", where=lambda m: m.json() == {"state": "online"})
        time.sleep(3)
        assert camera.hits == runs_at_start  # three missed ticks: one check, not three
        if runs_at_start:
            assert "missed while the daemon was down" in proc.output()
    finally:
        proc.kill()


def test_state_rule_coalesces_waiting_snapshots_event_rule_does_not(
    daemon: Callable[..., Daemon], collector: Collector, ollama: OllamaStandin
) -> None:
    ollama.latency = 0.5
    state_rule = lock_rule(kind="state", inputs=[{"mqtt": "cam/door"}], change=None)
    event_rule = lock_rule(name="doorbell", kind="event", inputs=[{"mqtt": "cam/bell"}], change=None)
    proc = daemon([state_rule, event_rule], ollama={"parallel": 1})
    collector.wait_for("llm2mqtt/bridge/state")
    for seed in range(5):
        collector.publish("cam/door", scene(seed == 4, seed=seed))  # only the newest is "locked"
    for seed in range(5):
        collector.publish("cam/bell", scene(True, seed=seed))
    collector.wait_for("llm2mqtt/doorbell/result", 5, timeout=20)
    door = collector.wait_for("llm2mqtt/door/result", where=lambda m: m.json()["state"] == "locked")
    time.sleep(1)
    superseded = [e for e in events(collector, "job_skipped") if e["reason"] == "superseded"]
    assert {e["rule"] for e in superseded} == {"door"}
    assert len(superseded) >= 3  # all but the newest, and the one already running if any
    assert len(collector.on("llm2mqtt/door/result")) == 5 - len(superseded)
    assert door[-1].json() == collector.on("llm2mqtt/door/result")[-1].json()  # the newest ran last
    assert _journal(proc.config).get("superseded") == len(superseded)


def test_hysteresis_needs_two_agreeing_answers_and_doubt_is_checked_again(
    daemon: Callable[..., Daemon], collector: Collector, ollama: OllamaStandin
) -> None:
    rule = lock_rule(kind="state", hysteresis=2, inputs=[{"mqtt": "cam/door"}])
    daemon([rule])
    collector.wait_for("llm2mqtt/bridge/state")
    sequence = [True, True, False, True, False, False]  # one odd frame in the middle
    for n, locked in enumerate(sequence, start=1):
        collector.publish("cam/door", scene(locked, seed=n))
        collector.wait_for("llm2mqtt/door/result", n)
    collector.wait_for("llm2mqtt/door/state", 2)
    time.sleep(0.5)
    assert [m.payload for m in collector.on("llm2mqtt/door/state")] == [b"locked", b"unlocked"]
    changed = events(collector, "changed")
    assert [(e["old"], e["new"]) for e in changed] == [(None, "locked"), ("locked", "unlocked")]


def test_low_confidence_answer_triggers_one_immediate_recheck(
    daemon: Callable[..., Daemon], collector: Collector, camera: Camera, ollama: OllamaStandin
) -> None:
    daemon([lock_rule(camera, schedule={"every": "1h"}, recheck_below=0.6)])
    collector.wait_for("llm2mqtt/bridge/state")
    ollama.script_reply(json.dumps({"answer": True, "confidence": 0.3}))
    collector.publish("llm2mqtt/door/check", b"")
    results = collector.wait_for("llm2mqtt/door/result", 2)
    assert [r.json()["confidence"] for r in results] == [0.3, 0.9]
    assert results[1].json()["source"] == "schedule:door"  # a fresh snapshot, at once
    assert camera.hits == 2
    collector.wait_for("llm2mqtt/door/state")
    time.sleep(0.5)
    assert [m.payload for m in collector.on("llm2mqtt/door/state")] == [b"locked"]  # once, after the re-check
