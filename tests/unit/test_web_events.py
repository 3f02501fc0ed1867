"""The console's live events: outbox messages in, SSE frames out, waiters told."""

import asyncio
import json

from bridge.pipeline.journal import OutboxMessage
from bridge.web.events import EventHub

EVENT = "llm2mqtt/bridge/event"


def hub() -> EventHub:
    return EventHub(EVENT, {"llm2mqtt/door/result"}.__contains__)


def event(kind: str, job_id: str, **extra: object) -> OutboxMessage:
    body = {"type": kind, "job_id": job_id, "rule": "door", **extra}
    return OutboxMessage(topic=EVENT, payload=json.dumps(body).encode(), qos=0)


def frames(chunk: bytes) -> list[dict[str, object]]:
    return [json.loads(line[6:]) for line in chunk.decode().splitlines() if line.startswith("data: ")]


def test_a_commit_becomes_one_write_with_the_result_attached() -> None:
    async def scenario() -> bytes:
        events = hub()
        stream = events.stream()
        assert await anext(stream) == b"retry: 2000\n\n"
        reading = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        result = OutboxMessage(topic="llm2mqtt/door/result", payload=b'{"state": "locked"}', job_id="j1")
        events.on_messages([event("job_started", "j1"), result, event("job_done", "j1")])
        events.on_messages([event("job_queued", "j2")])
        chunk = await asyncio.wait_for(reading, 2)
        await stream.aclose()
        return chunk

    sent = frames(asyncio.run(scenario()))
    assert [f["type"] for f in sent] == ["job_started", "job_done", "job_queued"]
    assert sent[1]["result"] == {"state": "locked"}


def test_run_waits_for_its_job_and_gives_up_after_the_timeout() -> None:
    async def scenario() -> tuple[object, object]:
        events = hub()
        waiting = asyncio.ensure_future(events.wait_for("j1", 2))
        await asyncio.sleep(0)
        events.on_messages([event("job_started", "j1"), event("job_failed", "j1", error="bad")])
        return await waiting, await events.wait_for("j2", 0.05)

    done, nothing = asyncio.run(scenario())
    assert done == {"type": "job_failed", "job_id": "j1", "rule": "door", "error": "bad"}
    assert nothing is None


def test_a_reconnecting_browser_gets_what_it_missed() -> None:
    async def scenario() -> bytes:
        events = hub()
        events.on_messages([event("job_queued", "j1"), event("job_queued", "j2")])
        stream = events.stream(last_event_id="1")
        await anext(stream)  # retry
        missed = await anext(stream)
        await stream.aclose()
        return missed

    assert [f["job_id"] for f in frames(asyncio.run(scenario()))] == ["j2"]


def test_paused_flags_are_remembered() -> None:
    events = hub()
    events.on_messages([OutboxMessage(topic="llm2mqtt/gate/paused", payload=b"ON", retain=True)])
    assert events.retained == {"llm2mqtt/gate/paused": b"ON"}
