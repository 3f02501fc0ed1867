"""classify: pick one of the rule's labels for an image or a text."""

from typing import Any

from bridge.config.handler_rules import ClassifyRule
from handlers.base import Answer, Handler, PromptInput, confidence_property


class ClassifyHandler(Handler[ClassifyRule]):
    """Answers with `label`, one of the rule's labels."""

    name = "classify"
    rule_model = ClassifyRule
    instruction = "You classify the input into exactly one of the given labels."

    def schema(self) -> dict[str, Any]:
        properties: dict[str, Any] = {"label": {"type": "string", "enum": list(self.rule.labels)}}
        required = ["label"]
        if self.rule.confidence:
            properties["confidence"] = confidence_property()
            required.append("confidence")
        return {"type": "object", "properties": properties, "required": required}

    def messages(self, job: PromptInput, *, correction: str | None = None) -> list[dict[str, Any]]:
        messages = super().messages(job, correction=correction)
        if isinstance(self.rule.labels, dict):
            meanings = "\n".join(f"- {k}: {v}" for k, v in self.rule.labels.items())
            messages[0]["content"] += f"\nThe labels mean:\n{meanings}"
        return messages

    def interpret(self, answer: dict[str, Any]) -> Answer:
        fields: dict[str, Any] = {"label": answer["label"], "state": answer["label"]}
        if "confidence" in answer:
            fields["confidence"] = answer["confidence"]
        return Answer(fields=fields, state=answer["label"])
