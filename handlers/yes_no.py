"""yes_no: a boolean answer about an image or a text, e.g. "is the door locked?"."""

from typing import Any

from bridge.config.handler_rules import YesNoLabels, YesNoRule
from handlers.base import Answer, Handler, confidence_property


class YesNoHandler(Handler[YesNoRule]):
    """Answers the rule's question with a boolean `answer`."""

    name = "yes_no"
    rule_model = YesNoRule
    instruction = "You answer a yes/no question about the input. answer is true for yes, false for no."

    def schema(self) -> dict[str, Any]:
        properties: dict[str, Any] = {"answer": {"type": "boolean"}}
        required = ["answer"]
        if self.rule.confidence:
            properties["confidence"] = confidence_property()
            required.append("confidence")
        return {"type": "object", "properties": properties, "required": required}

    def interpret(self, answer: dict[str, Any]) -> Answer:
        value = bool(answer["answer"])
        labels = self.rule.labels or YesNoLabels(true="y", false="n")
        state = labels.true if value else labels.false
        fields: dict[str, Any] = {"answer": value, "state": state}
        if "confidence" in answer:
            fields["confidence"] = answer["confidence"]
        return Answer(fields=fields, state=state)
