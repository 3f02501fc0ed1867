"""The floor of `python -m bench compare` does llm2mqtt's outside work per job: every job answered
from the model's reply, its result and state at QoS 1 and three lifecycle events, the job
journaled, and the outbox emptied as the broker acknowledges."""

import json
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from tests.support.mqtt_helpers import ROOT, Collector, Mosquitto
from tests.support.ollama_standin import ChatRequest, OllamaStandin

pytestmark = [pytest.mark.broker]
BASE = "llm2mqtt/bench_text/"


def _label(req: ChatRequest) -> str:
    return json.dumps({"label": "shopping" if "milk" in req.text else "other"})


def test_the_floor_answers_journals_and_publishes_what_llm2mqtt_does(
    broker: Mosquitto, ollama: OllamaStandin, tmp_path: Path
) -> None:
    ollama.responder = _label
    db = tmp_path / "floor.db"
    collector = Collector(broker.port, [f"{BASE}#", "llm2mqtt/bridge/event"])
    log = tmp_path / "floor.log"
    with log.open("wb") as out:
        floor = subprocess.Popen(
            [sys.executable, "-m", "bench.floor", str(broker.port), ollama.url, str(db)],
            cwd=ROOT,
            stderr=out,
        )
    try:
        deadline = time.monotonic() + 30
        while not collector.on(f"{BASE}result"):  # it keeps no session: probe until it listens
            assert floor.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the floor never answered"
            collector.publish("bench/in", json.dumps({"id": "probe", "text": "probe"}))
            time.sleep(0.2)
        time.sleep(0.5)  # a probe still on its way
        probes = len(collector.on(f"{BASE}result"))
        for ident, text in (("a", "we are out of milk"), ("b", "the porch light is on"), ("c", "milk again")):
            collector.publish("bench/in", json.dumps({"id": ident, "text": text}))
        results = collector.wait_for(f"{BASE}result", probes + 3)
        time.sleep(0.5)  # the broker's acknowledgements of their results and states
        collector.publish("bench/in", json.dumps({"id": "d", "text": "last"}))  # commits their deletes
        collector.wait_for(f"{BASE}result", probes + 4)
        collector.wait_for("llm2mqtt/bridge/event", 3 * (probes + 4))
    finally:
        floor.terminate()
        floor.wait(10)
        collector.close()
    answers = {m.json()["id"]: m.json()["label"] for m in results}
    assert {k: answers[k] for k in "abc"} == {"a": "shopping", "b": "other", "c": "shopping"}
    states = [m.payload.decode() for m in collector.on(f"{BASE}state")]
    assert states[-4:] == ["shopping", "other", "shopping", "other"]
    kinds = [m.json()["type"] for m in collector.on("llm2mqtt/bridge/event")]
    assert kinds[-3:] == ["job_queued", "job_started", "job_done"]
    with closing(sqlite3.connect(db)) as journal:
        jobs = journal.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
        outbox = [row[0] for row in journal.execute("SELECT payload FROM outbox WHERE topic LIKE '%/result'")]
    assert jobs == [("done", probes + 4)]
    # Acknowledged rows go with the next job's commit: only the last job's may be left.
    assert [json.loads(payload)["id"] for payload in outbox] in ([], ["d"])
