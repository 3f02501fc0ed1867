"""Pure parts of the control plane: what a reload applies, and what bridge/info may show."""

from typing import Any

import pytest

from bridge.config.handler_rules import YesNoRule
from bridge.config.redact import redact
from bridge.config.settings import Settings
from bridge.control.reload import plan_reload
from handlers import handler_for
from tests.conftest import LOCK_RULE


def test_plan_reload_sorts_changes_into_applied_and_restart() -> None:
    lock = YesNoRule.model_validate(LOCK_RULE)
    settings = Settings.model_validate({})
    relabelled = lock.model_copy(update={"labels": None, "model": "llava:7b"})
    moved = lock.model_copy(update={"inputs": []})
    plan = plan_reload(settings, {"front_door_lock": lock}, settings, {"front_door_lock": relabelled})
    assert plan.applied == ["rules.front_door_lock.labels", "rules.front_door_lock.model"]
    assert plan.replace == {"front_door_lock": relabelled}
    assert plan.restart_required == []
    plan = plan_reload(settings, {"front_door_lock": lock}, settings, {"front_door_lock": moved, "x": lock})
    assert plan.replace == {}
    assert plan.restart_required == ["rules.x (added)", "rules.front_door_lock.inputs"]
    assert handler_for(relabelled).rule.model == "llava:7b"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"password": "p", "user": "u"}, {"password": "**********", "user": "u"}),
        ({"token": None}, {"token": None}),
        ("mqtt://u:p@h:1883", "mqtt://u:**********@h:1883"),
        ("http://h:11434", "http://h:11434"),
        (
            {"snapshot": {"url": "http://cam", "token": "t"}},
            {"snapshot": {"url": "http://cam", "token": "**********"}},
        ),
    ],
)
def test_redact(value: Any, expected: Any) -> None:
    assert redact(value) == expected
