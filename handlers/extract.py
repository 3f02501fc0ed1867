"""extract: a JSON record that follows a JSON Schema given in the rule."""

import json
from typing import Any

from bridge.config.handler_rules import ExtractRule
from handlers.base import Answer, Handler


class ExtractHandler(Handler[ExtractRule]):
    """Answers with `data`, a record valid against the rule's schema."""

    name = "extract"
    rule_model = ExtractRule
    instruction = "You extract the requested information from the input as a JSON record."

    def schema(self) -> dict[str, Any]:
        return self.rule.schema_

    def interpret(self, answer: dict[str, Any]) -> Answer:
        if self.rule.state_field is not None:
            value = answer.get(self.rule.state_field)
            state = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        else:
            state = json.dumps(answer, ensure_ascii=False, separators=(",", ":"))
        return Answer(fields={"data": answer, "state": state}, state=state)
