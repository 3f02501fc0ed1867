"""classify: pick one of the rule's labels for an image or a text."""

from typing import Any, Literal

from pydantic import Field, field_validator

from bridge.rules import RuleBase
from handlers.base import Answer, Handler, PromptInput, confidence_property


class ClassifyRule(RuleBase):
    """A rule answered with one label from a fixed list."""

    handler: Literal["classify"]
    labels: list[str] | dict[str, str] = Field(
        description="The labels, or a mapping label -> what it means (shown to the model)"
    )
    confidence: bool = True

    @field_validator("labels")
    @classmethod
    def _at_least_two(cls, labels: list[str] | dict[str, str]) -> list[str] | dict[str, str]:
        names = list(labels)
        if len(names) < 2:
            raise ValueError("a classify rule needs at least two labels")
        if len(set(names)) != len(names):
            raise ValueError("labels must be unique")
        if any(not str(n).strip() for n in names):
            raise ValueError("a label cannot be empty")
        return labels


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
