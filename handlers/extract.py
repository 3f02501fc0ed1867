"""extract: a JSON record that follows a JSON Schema given in the rule."""

import json
from typing import Any, Literal

import jsonschema
from pydantic import Field, field_validator

from bridge.rules import RuleBase
from handlers.base import Answer, Handler


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
