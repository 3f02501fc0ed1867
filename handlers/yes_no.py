"""yes_no: a boolean answer about an image or a text, e.g. "is the door locked?"."""

from typing import Any, Literal

from pydantic import Field, model_validator

from bridge.basemodel import StrictModel
from bridge.rules import RuleBase
from handlers.base import Answer, Handler, confidence_property


class YesNoLabels(StrictModel):
    """Words published on the state topic for true and false."""

    true: str = Field(min_length=1, description="State when the answer is yes, e.g. locked")
    false: str = Field(min_length=1, description="State when the answer is no, e.g. unlocked")

    @model_validator(mode="before")
    @classmethod
    def _yaml_booleans(cls, data: Any) -> Any:
        # YAML reads the keys of `{true: locked, false: unlocked}` as booleans.
        if isinstance(data, dict):
            return {str(k).lower() if isinstance(k, bool) else k: v for k, v in data.items()}
        return data


class YesNoRule(RuleBase):
    """A rule answered with true or false."""

    handler: Literal["yes_no"]
    labels: YesNoLabels | None = Field(None, description="State words; default y and n")
    confidence: bool = Field(True, description="Ask the model how sure it is (0 to 1)")


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
