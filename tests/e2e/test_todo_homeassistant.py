"""The Home Assistant to-do backend: its REST calls, its errors, and notes through the daemon.

Error paths run against tests/ha_todo_standin.py; `test_real_home_assistant_local_todo` runs
the same calls against a real Home Assistant with the Local To-do integration (marker
homeassistant, tests/ha_harness.py).
"""

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bridge.config.todo import HomeAssistantTodoSettings
from bridge.todo.ha_backend import HomeAssistantError, HomeAssistantTodo, HomeAssistantUnavailable
from tests.support.ha_harness import HomeAssistant, find_python
from tests.support.ha_todo_standin import HaTodoStandin
from tests.support.mqtt_helpers import Collector, free_port
from tests.support.ollama_standin import ChatRequest, OllamaStandin

RULE: dict[str, Any] = {
    "name": "todo_note",
    "handler": "todo_match",
    "model": "qwen2.5:3b",
    "prompt": "Which task does this note mean?",
    "outputs": {"retain": False},
}


@pytest.fixture
def fake_ha() -> Iterator[HaTodoStandin]:
    with HaTodoStandin() as ha:
        yield ha


def backend(url: str, token: str = "good-token", entity: str = "todo.shopping") -> HomeAssistantTodo:
    return HomeAssistantTodo(HomeAssistantTodoSettings(url=url, token=SecretStr(token), entity_id=entity))


async def _round_trip(ha: HomeAssistantTodo) -> list[dict[str, Any]]:
    try:
        await ha.add("牛乳", due="2026-12-01")
        items = await ha.items()
        await ha.update(items[0]["uid"], status="completed")
        return await ha.items()
    finally:
        await ha.close()


def test_backend_adds_reads_and_completes(fake_ha: HaTodoStandin) -> None:
    items = asyncio.run(_round_trip(backend(fake_ha.url)))
    assert [(i["summary"], i["status"], i["due"]) for i in items] == [("牛乳", "completed", "2026-12-01")]
    assert fake_ha.calls[0] == (
        "add_item",
        {"entity_id": "todo.shopping", "item": "牛乳", "due_date": "2026-12-01"},
    )


async def _items(ha: HomeAssistantTodo) -> list[dict[str, Any]]:
    try:
        return await ha.items()
    finally:
        await ha.close()


def test_backend_errors_say_what_to_do(fake_ha: HaTodoStandin) -> None:
    with pytest.raises(HomeAssistantError, match=r"refused the token \(401\)"):
        asyncio.run(_items(backend(fake_ha.url, token="wrong")))
    with pytest.raises(HomeAssistantError, match=r"todo\.nothing"):
        asyncio.run(_items(backend(fake_ha.url, entity="todo.nothing")))
    with pytest.raises(HomeAssistantUnavailable, match="cannot reach Home Assistant"):
        asyncio.run(_items(backend(f"http://127.0.0.1:{free_port()}")))


def always_create(req: ChatRequest) -> str:
    body = {"action": "create", "uid": "", "title": "牛乳", "genre": "shopping", "due": "2026-12-01"}
    return json.dumps({**body, "confidence": 0.9, "reason": "new"})


def ha_settings(url: str, token: str = "good-token", entity: str = "todo.shopping") -> dict[str, Any]:
    return {"backend": "homeassistant", "homeassistant": {"url": url, "token": token, "entity_id": entity}}


@pytest.mark.broker
def test_notes_change_the_home_assistant_list(
    daemon: Callable[..., Any], collector: Collector, ollama: OllamaStandin, fake_ha: HaTodoStandin
) -> None:
    fake_ha.items.append({"summary": "Toilet paper", "uid": "tp-1", "status": "needs_action"})
    ollama.responder = always_create
    daemon([RULE], todo=ha_settings(fake_ha.url))
    collector.wait_for("llm2mqtt/bridge/state")
    collector.publish("llm2mqtt/todo/note", "牛乳きれてた")
    event = collector.wait_for("llm2mqtt/todo/event")[0].json()
    assert event["action"] == "create"
    assert [i["summary"] for i in fake_ha.items] == ["Toilet paper", "牛乳"]
    # The model saw Home Assistant's items as candidates, with their uids.
    assert "tp-1 | Toilet paper" in ollama.requests[0].messages[1]["content"]
    listed = collector.wait_for("llm2mqtt/todo/list")[-1].json()
    assert {i["title"] for i in listed["items"]} == {"Toilet paper", "牛乳"}


@pytest.mark.broker
def test_home_assistant_401_and_unreachable_fail_clearly(
    daemon: Callable[..., Any], collector: Collector, ollama: OllamaStandin, fake_ha: HaTodoStandin
) -> None:
    ollama.responder = always_create
    daemon([RULE], todo=ha_settings(fake_ha.url, token="wrong"))
    collector.wait_for("llm2mqtt/bridge/state")
    collector.publish("llm2mqtt/todo/note", "milk")
    error = collector.wait_for("llm2mqtt/todo_note/error")[0].json()
    assert "401" in error["error"]
    assert "retry_in_s" not in error
    assert collector.wait_for("llm2mqtt/todo/event")[0].json()["action"] == "error"
    assert fake_ha.items == []


@pytest.mark.broker
def test_home_assistant_unreachable_is_retried(
    daemon: Callable[..., Any], collector: Collector, ollama: OllamaStandin
) -> None:
    ollama.responder = always_create
    daemon([RULE], todo=ha_settings(f"http://127.0.0.1:{free_port()}"))
    collector.wait_for("llm2mqtt/bridge/state")
    collector.publish("llm2mqtt/todo/note", "milk")
    error = collector.wait_for("llm2mqtt/todo_note/error")[0].json()
    assert "cannot reach Home Assistant" in error["error"]
    assert error["retry_in_s"] > 0


@pytest.mark.homeassistant
@pytest.mark.skipif(find_python() is None, reason="Home Assistant needs Python 3.13")
@pytest.mark.timeout(900)  # the first run installs Home Assistant
@pytest.mark.broker
def test_real_home_assistant_local_todo(
    tmp_path: Path, daemon: Callable[..., Any], collector: Collector, ollama: OllamaStandin
) -> None:
    hass = HomeAssistant(tmp_path / "ha")
    hass.add_entry("local_todo", "Shopping", {"todo_list_name": "Shopping", "storage_key": "shopping"})
    hass.start()
    try:
        assert hass.token is not None
        items = asyncio.run(_round_trip(backend(hass.url, token=hass.token)))
        assert [(i["summary"], i["status"], i.get("due")) for i in items] == [
            ("牛乳", "completed", "2026-12-01")
        ]
        with pytest.raises(HomeAssistantError, match="401"):
            asyncio.run(_items(backend(hass.url, token="not-a-token")))
        with pytest.raises(HomeAssistantError, match=r"todo\.nothing"):
            asyncio.run(_items(backend(hass.url, token=hass.token, entity="todo.nothing")))
        # A note through the daemon: the model sees the real list's items and completes one.
        milk_uid = items[0]["uid"]

        def complete_milk(req: ChatRequest) -> str:
            assert f"{milk_uid} | 牛乳" in req.messages[1]["content"]
            body = {"action": "update", "uid": milk_uid, "title": "牛乳", "genre": "shopping", "due": ""}
            return json.dumps({**body, "confidence": 0.95, "reason": "same"})

        ollama.responder = complete_milk
        daemon([RULE], todo=ha_settings(hass.url, token=hass.token))
        collector.wait_for("llm2mqtt/bridge/state")
        collector.publish("llm2mqtt/todo/note", "ぎゅうにゅう買っといて")
        event = collector.wait_for("llm2mqtt/todo/event")[0].json()
        assert (event["action"], event["uid"]) == ("update", milk_uid)
        after = asyncio.run(_items(backend(hass.url, token=hass.token)))
        assert [(i["uid"], i["status"]) for i in after] == [(milk_uid, "needs_action")]
        # After a restart Local To-do reads its calendar file back (it could not with pyparsing 3.3).
        hass.restart()
        again = asyncio.run(_items(backend(hass.url, token=hass.token)))
        assert [(i["uid"], i["summary"], i["status"]) for i in again] == [(milk_uid, "牛乳", "needs_action")]
    finally:
        hass.stop()
