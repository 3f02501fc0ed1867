"""The keys each built-in handler adds to a rule (`handler: yes_no`, `classify`, …).

They live with the rest of the configuration so that loading and checking a config needs no
handler code; each handler in `handlers/` names its model here.
"""

from typing import Any, Literal

import jsonschema
from pydantic import Field, field_validator, model_validator

from bridge.config.base import StrictModel
from bridge.config.rules import RuleBase

DEFAULT_GENRES = ["shopping", "household", "errands", "health", "family", "work", "other"]


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


class ExtractRule(RuleBase):
    """A rule answered with a record of the rule's own JSON Schema."""

    handler: Literal["extract"]
    schema_: dict[str, Any] = Field(
        alias="schema", description="JSON Schema (an object) of the record to extract"
    )
    state_field: str | None = Field(
        None, description="Record field published on the state topic; default: the whole record"
    )

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        if schema.get("type") != "object":
            raise ValueError('the schema must describe an object ("type": "object")')
        return schema


class DescribeRule(RuleBase):
    """A rule answered with a sentence or two."""

    handler: Literal["describe"]
    max_chars: int = Field(300, ge=10, le=4000, description="Longest description accepted")


class TodoMatchRule(RuleBase):
    """A rule that turns notes into changes of the Todo list."""

    handler: Literal["todo_match"]
    genres: list[str] = Field(
        default_factory=lambda: list(DEFAULT_GENRES),
        min_length=1,
        description="The genres a task may have; the model must pick one",
    )
    candidates: int = Field(8, ge=1, le=50, description="How many similar tasks the model sees")
    confirm_below: float = Field(
        0.6, ge=0, le=1, description="Below this confidence, an existing task is never changed"
    )
    low_confidence: Literal["needs_confirmation", "ask"] = Field(
        "needs_confirmation",
        description="needs_confirmation: create a new task flagged for a person to check; "
        "ask: change nothing and publish a confirmation request on <base>/todo/confirm",
    )

    @field_validator("genres")
    @classmethod
    def _unique(cls, genres: list[str]) -> list[str]:
        if len(set(genres)) != len(genres) or any(not g.strip() for g in genres):
            raise ValueError("genres must be unique and not empty")
        return genres


RULE_MODELS: dict[str, type[RuleBase]] = {
    "yes_no": YesNoRule,
    "classify": ClassifyRule,
    "extract": ExtractRule,
    "describe": DescribeRule,
    "todo_match": TodoMatchRule,
}
"""Each handler's rule model, by the name a rule gives in `handler:`."""
