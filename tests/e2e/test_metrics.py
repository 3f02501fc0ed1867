"""/metrics on the daemon's web server, after real jobs through broker and stand-in."""

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import LOCK_RULE
from tests.support.mqtt_helpers import ROOT, Collector, Daemon, free_port, wait_for_port
from tests.support.samples import jpeg

pytestmark = pytest.mark.broker


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as (name, sorted labels) → value."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_jobs_skips_latency_and_state(
    daemon: Callable[..., Daemon], collector: Collector
) -> None:
    port = free_port()
    daemon([LOCK_RULE], http={"enabled": True, "port": port})
    collector.wait_for("llm2mqtt/bridge/state", where=lambda m: m.json() == {"state": "online"})
    wait_for_port(port)
    picture = jpeg(200)
    collector.publish("cameras/front_door/snapshot", picture)
    collector.wait_for("llm2mqtt/front_door_lock/result")
    collector.publish("cameras/front_door/snapshot", picture)  # within the dedupe window
    collector.publish("cameras/front_door/snapshot", b"\xff\xd8 not a jpeg")
    collector.wait_for("llm2mqtt/front_door_lock/error")
    collector.wait_for("llm2mqtt/bridge/event", where=lambda m: m.json().get("reason") == "duplicate")
    request = {"rule": "front_door_lock", "transaction": 1}
    collector.publish("llm2mqtt/bridge/request/rule/pause", json.dumps(request))
    collector.wait_for("llm2mqtt/bridge/response/rule/pause")
    collector.publish("cameras/front_door/snapshot", jpeg(90))
    collector.wait_for("llm2mqtt/bridge/event", where=lambda m: m.json().get("reason") == "paused")

    samples = scrape(port)
    rule = (("rule", "front_door_lock"),)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted({**dict(rule), **labels}.items())))]

    assert value("llm2mqtt_jobs_total", outcome="done") == 1
    assert value("llm2mqtt_jobs_total", outcome="rejected") == 1  # not an image: refused at intake
    assert value("llm2mqtt_jobs_total", outcome="failed") == 0
    assert value("llm2mqtt_model_calls_total") == 1
    assert value("llm2mqtt_skips_total", reason="duplicate") == 1
    assert value("llm2mqtt_skips_total", reason="paused") == 1
    assert value("llm2mqtt_model_seconds_count") == 1
    assert 0 < value("llm2mqtt_model_seconds_sum") < 10
    assert value("llm2mqtt_job_seconds_bucket", le="+Inf") == 1
    assert value("llm2mqtt_tokens_total", kind="prompt") > 256
    assert samples[("llm2mqtt_queue_depth", ())] == 0
    assert samples[("llm2mqtt_jobs_running", ())] == 0
    assert samples[("llm2mqtt_journal_bytes", ())] > 0
    assert samples[("llm2mqtt_journal_jobs", (("state", "done"),))] == 1
    assert not [key for key in samples if key[0].startswith("llm2mqtt_receive_")]  # receive_memory off
    backends = [key for key in samples if key[0] == "llm2mqtt_backend_up"]
    assert len(backends) == 1
    assert samples[backends[0]] == 1


def test_grafana_dashboard_uses_only_metrics_the_daemon_exports(
    daemon: Callable[..., Daemon], collector: Collector
) -> None:
    dashboard: dict[str, Any] = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"\bllm2mqtt_[a-z_]+", expr)}
    assert len(used) >= 10
    port = free_port()
    daemon([LOCK_RULE], http={"enabled": True, "port": port})
    collector.wait_for("llm2mqtt/bridge/state", where=lambda m: m.json() == {"state": "online"})
    wait_for_port(port)
    collector.publish("cameras/front_door/snapshot", jpeg(200))
    collector.wait_for("llm2mqtt/front_door_lock/result")
    exported = {name for name, _ in scrape(port)}
    assert used <= exported, used - exported
