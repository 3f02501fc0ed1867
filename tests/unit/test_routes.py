"""Where a message goes by its topic (bridge.pipeline.routes), with rules from real YAML."""

from pathlib import Path
from typing import Any

import yaml

from bridge.config.loader import load_config
from bridge.pipeline import routes as routes_module
from bridge.pipeline.mqtt import Inbound
from bridge.pipeline.routes import Route, Routes
from bridge.pipeline.topics import Topics


def _rule(name: str, *inputs: str) -> dict[str, Any]:
    return {
        "name": name,
        "handler": "classify",
        "model": "qwen2.5:3b",
        "prompt": "Which area?",
        "labels": ["shopping", "other"],
        "inputs": [{"mqtt": topic} for topic in inputs],
    }


def _rules(tmp_path: Path, *rules: dict[str, Any]) -> dict[str, Any]:
    (tmp_path / "rules").mkdir(parents=True, exist_ok=True)
    for rule in rules:
        (tmp_path / "rules" / f"{rule['name']}.yaml").write_text(yaml.safe_dump(rule))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"ollama": {"url": "http://127.0.0.1:9"}}))
    return {rule.name: rule for rule in load_config(tmp_path / "config.yaml", environ={}).rules}


def _handler(message: Inbound) -> None:
    pass


def test_topics_go_to_a_routed_handler_the_matching_rules_or_a_named_rule(tmp_path: Path) -> None:
    rules = _rules(tmp_path, _rule("notes", "notes/+/in"), _rule("all", "notes/#"), _rule("door", "cam/door"))
    routes = Routes(Topics(), rules)
    routes.add("notes/control/#", _handler)
    assert set(routes.of("notes/kitchen/in").targets) == {("notes", False), ("all", False)}
    assert routes.of("notes/kitchen/in/extra") == Route(None, (("all", False),))
    assert routes.of("notes/control/x") == Route(_handler, ())  # a feature's own topic first
    assert routes.of("llm2mqtt/door/run") == Route(None, (("door", True),))
    assert routes.of("elsewhere") == Route(None, ())


def test_answers_are_kept_per_topic_until_the_rules_or_routes_change(tmp_path: Path) -> None:
    rules = _rules(tmp_path, _rule("notes", "notes/in"))
    routes = Routes(Topics(), rules)
    assert routes.of("notes/in").targets == (("notes", False),)
    assert routes.of("notes/other").targets == ()
    # A rule replaced in place (a reload) with one more input: the kept answers are forgotten.
    other = _rules(tmp_path / "other", _rule("x", "notes/other"))["x"].inputs
    rules["notes"] = rules["notes"].model_copy(update={"inputs": [*rules["notes"].inputs, *other]})
    assert routes.of("notes/other").targets == ()  # still the kept answer
    routes.changed()
    assert routes.of("notes/other").targets == (("notes", False),)
    routes.add("notes/#", _handler)
    assert routes.of("notes/in").handler is _handler


def test_the_answers_kept_are_bounded(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(routes_module, "MAX_TOPICS", 3)
    routes = Routes(Topics(), _rules(tmp_path, _rule("cams", "cam/+")))
    for i in range(10):
        assert routes.of(f"cam/{i}").targets == (("cams", False),)
        assert len(routes._known) <= 3
