"""The SQS job message: its JSON Schema and its parsing into a job input. Pure."""

import json
import re
from dataclasses import dataclass
from typing import Any

import jsonschema

from bridge.config.aws import SNS_ARN_PATTERN
from bridge.config.rules import RULE_NAME_PATTERN, topic_filter_problem
from bridge.errors import InputError

S3_URL = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.+)$")


def job_message_schema() -> dict[str, Any]:
    """JSON Schema of an SQS job message body (docs/sqs-job.schema.json is this, printed)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/llm2mqtt/llm2mqtt/docs/sqs-job.schema.json",
        "title": "llm2mqtt SQS job",
        "description": "The body of a message that a cloud producer puts on the bridge's SQS queue. "
        "Keys other than these are passed to the rule's prompt template.",
        "type": "object",
        "required": ["rule"],
        "properties": {
            "rule": {"type": "string", "pattern": RULE_NAME_PATTERN, "description": "The rule that runs"},
            "id": {
                "type": ["string", "integer"],
                "description": "Dedupe key: a job with this id runs once (default: the SQS MessageId)",
            },
            "text": {"type": "string", "description": "Text input"},
            "image": {
                "description": "Image input: an S3 object, an http(s) URL, or base64 (a data URL too)",
                "anyOf": [
                    {
                        "type": "object",
                        "required": ["s3"],
                        "properties": {"s3": {"type": "string", "pattern": S3_URL.pattern}},
                        "additionalProperties": False,
                    },
                    {"type": "string", "pattern": "^https?://"},
                    {"type": "string", "pattern": "^(data:|[A-Za-z0-9+/])"},
                ],
            },
            "reply": {
                "type": "string",
                "description": "Also send the result here: an SNS topic ARN, or an MQTT topic",
            },
        },
    }


_VALIDATOR = jsonschema.Draft202012Validator(job_message_schema())


@dataclass(frozen=True)
class SqsJob:
    """A parsed job message. `data` is the JSON input for the rule (image resolved later)."""

    rule: str
    data: dict[str, Any]
    s3: tuple[str, str] | None = None
    reply: dict[str, Any] | None = None
    id: str | None = None


def parse_job_message(body: str) -> SqsJob:
    """Parse and validate a message body; InputError says what is wrong with it."""
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"message body is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except (RecursionError, ValueError):  # nested too deep for the parser; a 5,000-digit integer
        raise InputError("message body is JSON nested too deeply or with a number too large") from None
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the message"
        raise InputError(f"{where}: {error.message}")
    data = dict(value)
    rule = data.pop("rule")
    reply = _reply(data.pop("reply", None))
    image = data.get("image")
    s3 = None
    if isinstance(image, dict):
        match = S3_URL.match(image["s3"])
        assert match is not None  # the schema checked the pattern
        s3 = (match.group(1), match.group(2))
        del data["image"]
    elif isinstance(image, str) and image.startswith(("http://", "https://")):
        data["image_url"] = data.pop("image")
    ident = data.get("id")
    return SqsJob(rule=rule, data=data, s3=s3, reply=reply, id=None if ident is None else str(ident))


def _reply(reply: str | None) -> dict[str, Any] | None:
    if reply is None:
        return None
    if reply.startswith("arn:"):
        if not re.match(SNS_ARN_PATTERN, reply):
            raise InputError(f"reply: {reply!r} is not an SNS topic ARN")
        return {"sns": reply}
    problem = topic_filter_problem(reply)
    if problem or "+" in reply or "#" in reply or reply.startswith("$"):
        raise InputError(f"reply: {reply!r} is not an MQTT topic to publish on ({problem or 'wildcard'})")
    return {"topic": reply}
