"""The Node-RED flow of `python -m bench compare` does the naive script's job: the same request to
Ollama, the same result, every job answered. Installs Node-RED from npm on first use (skipped
without Node.js, npm or the registry)."""

import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from bench import nodered
from tests.support.mqtt_helpers import ROOT, Collector, Mosquitto
from tests.support.ollama_standin import ChatRequest, OllamaStandin

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(900)]  # the first npm install
RESULT = "llm2mqtt/bench_text/result"


@pytest.fixture(scope="module")
def node_red() -> None:
    try:
        nodered.install()
    except nodered.NodeRedUnavailable as exc:
        pytest.skip(str(exc))


def _label(req: ChatRequest) -> str:
    """An answer that depends on the job's text, so the text must have reached the model."""
    return json.dumps({"label": "shopping" if "milk" in req.text else "other"})


def _answered(collector: Collector, jobs: list[tuple[str, str]], timeout: float) -> dict[str, dict[str, str]]:
    """Publish until the bridge answers a probe (neither keeps a session), then the jobs."""
    deadline = time.monotonic() + 30
    while not collector.on(RESULT):
        assert time.monotonic() < deadline, "the bridge never answered"
        collector.publish("bench/in", json.dumps({"id": "probe", "text": "probe"}))
        time.sleep(0.2)
    for ident, text in jobs:
        collector.publish("bench/in", json.dumps({"id": ident, "text": text}))
    found = collector.wait_for(RESULT, len(jobs), timeout, where=lambda m: m.json()["id"] != "probe")
    return {m.json()["id"]: m.json() for m in found}


def _asked(standin: OllamaStandin) -> list[dict[str, object]]:
    """What the stand-in was asked for the jobs (probes aside), as plain fields."""
    keep = ("model", "messages", "format", "options", "stream", "endpoint")
    asked = [asdict(r) for r in standin.requests if r.text != "Which area? probe"]
    return [{k: a[k] for k in keep} for a in asked]


def test_the_flow_asks_and_answers_as_the_naive_script_does(
    node_red: None, broker: Mosquitto, ollama: OllamaStandin, tmp_path: Path
) -> None:
    ollama.responder = _label
    jobs = [("a", "we are out of milk"), ("b", "the porch light is on")]
    collector = Collector(broker.port, [RESULT])
    naive = subprocess.Popen(
        [sys.executable, "-m", "bench.naive", str(broker.port), ollama.url],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    try:
        by_naive = _answered(collector, jobs, 15)
    finally:
        naive.terminate()
        naive.wait(10)
    asked_by_naive = _asked(ollama)
    ollama.reset_stats()
    collector.messages.clear()
    with nodered.running(broker.port, ollama.url, tmp_path):
        by_flow = _answered(collector, jobs, 15)
    collector.close()
    assert by_flow == by_naive == {"a": {"id": "a", "label": "shopping"}, "b": {"id": "b", "label": "other"}}
    assert _asked(ollama) == asked_by_naive
    assert asked_by_naive[0]["messages"] == [{"role": "user", "content": "Which area? we are out of milk"}]


def test_the_flow_answers_every_job_of_a_burst(
    node_red: None, broker: Mosquitto, ollama: OllamaStandin, tmp_path: Path
) -> None:
    # Node-RED asks the model for every job as it comes, with no limit of its own: a model
    # that takes half a second and runs 300 at once sees them nearly all open together.
    ollama.max_queue, ollama.parallel, ollama.latency = 100_000, 300, 0.5
    collector = Collector(broker.port, [RESULT])
    with nodered.running(broker.port, ollama.url, tmp_path):
        answered = _answered(collector, [(f"j{i}", f"job {i}") for i in range(300)], 60)
    collector.close()
    assert sorted(answered) == sorted(f"j{i}" for i in range(300))
    assert ollama.peak_open >= 100
