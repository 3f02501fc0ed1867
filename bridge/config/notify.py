"""A rule's `notify:` entries. Pure pydantic models."""

from typing import Literal

from pydantic import Field, field_validator

from bridge.config.base import StrictModel
from bridge.config.templates import check_condition, check_message_template


class NotifyTarget(StrictModel):
    """One Apprise URL that hears about the rule's results, with the picture when it can take one."""

    url: str = Field(
        min_length=4,
        pattern=r"^[A-Za-z][A-Za-z0-9+.-]*://",
        description="An Apprise URL: ntfys://topic, pover://user@token, tgram://bot/chat, mailtos://…"
        " (use !secret: it holds tokens)",
    )
    when: str | None = Field(
        None,
        description="A condition over state, previous_state, changed, result, rule, job_id, "
        "e.g. \"state == 'unlocked' and changed\"; default: every result",
    )
    title: str = Field("{{ rule }}: {{ state }}", description="Title template")
    message: str = Field(
        "{{ rule }} is {{ state }}{% if result.confidence is defined %}"
        " ({{ (result.confidence * 100) | round | int }}% sure){% endif %}",
        description="Message template",
    )
    attach: Literal["picture", "crop", "none"] = Field(
        "picture",
        description="picture: the image the job judged, as received; crop: what the model saw "
        "(cropped, resized); none",
    )

    @field_validator("when")
    @classmethod
    def _condition_compiles(cls, text: str | None) -> str | None:
        return check_condition(text)

    @field_validator("title", "message")
    @classmethod
    def _template_compiles(cls, text: str) -> str:
        check_message_template(text)
        return text
