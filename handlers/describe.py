"""describe: a short free-text description of an image or a text."""

from typing import Any

from bridge.config.handler_rules import DescribeRule
from handlers.base import Answer, Handler

# Home Assistant refuses states longer than this; the full text stays in the result.
_STATE_LIMIT = 255


class DescribeHandler(Handler[DescribeRule]):
    """Answers with `description`, a short text."""

    name = "describe"
    rule_model = DescribeRule
    instruction = "You describe the input briefly and factually."

    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "description": {"type": "string", "minLength": 1, "maxLength": self.rule.max_chars}
            },
            "required": ["description"],
        }

    def interpret(self, answer: dict[str, Any]) -> Answer:
        text = answer["description"].strip()
        state = text if len(text) <= _STATE_LIMIT else text[: _STATE_LIMIT - 1] + "…"
        return Answer(fields={"description": text, "state": state}, state=state)
