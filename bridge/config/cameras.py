"""The rule keys of scheduled checks: schedule, snapshot source, change detection, state kind.

Pure pydantic models; `bridge.rules` imports them, so this module imports nothing of the
daemon. Every key is optional: a rule without them behaves as before.
"""

import re
from typing import Literal

from apscheduler.triggers.cron import CronTrigger
from pydantic import Field, field_validator, model_validator

from bridge.config.base import StrictModel
from bridge.config.units import Duration, Size

_HOURS = re.compile(r"^\s*([01]?\d|2[0-4]):([0-5]\d)\s*-\s*([01]?\d|2[0-4]):([0-5]\d)\s*$")


def parse_active_hours(text: str) -> tuple[int, int]:
    """ "07:00-23:00" → (420, 1380) minutes of the day; the end may be before the start (overnight)."""
    match = _HOURS.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a time range; write e.g. 07:00-23:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start > 1440 or end > 1440:
        raise ValueError(f"{text!r}: hours go up to 24:00")
    if start == end:
        raise ValueError(f"{text!r} is an empty range")
    return start, end


class ScheduleOptions(StrictModel):
    """When the rule takes a snapshot and checks it."""

    every: Duration | None = Field(None, description="Interval between checks, e.g. 10m")
    cron: str | None = Field(None, description='A crontab expression, e.g. "*/10 * * * *"')
    active_hours: str | None = Field(
        None, description='Only check within these local hours, e.g. "07:00-23:00" (may wrap midnight)'
    )
    jitter: Duration = Field(0, description="Random delay up to this long added to each tick, e.g. 30s")

    @field_validator("every")
    @classmethod
    def _sensible_interval(cls, every: float | None) -> float | None:
        if every is not None and every < 1:
            raise ValueError("every must be at least 1s")
        return every

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, cron: str | None) -> str | None:
        if cron is not None:
            try:
                CronTrigger.from_crontab(cron)
            except ValueError as exc:
                raise ValueError(f"cron {cron!r}: {exc}") from None
        return cron

    @field_validator("active_hours")
    @classmethod
    def _hours_parse(cls, hours: str | None) -> str | None:
        if hours is not None:
            parse_active_hours(hours)
        return hours

    @model_validator(mode="after")
    def _one_kind(self) -> "ScheduleOptions":
        if (self.every is None) == (self.cron is None):
            raise ValueError("a schedule needs exactly one of every or cron")
        return self


class SnapshotOptions(StrictModel):
    """Where a scheduled check gets its image: an HTTP(S) URL, or an MQTT request and reply."""

    url: str | None = Field(
        None, description="Snapshot URL, e.g. http://ha:8123/api/camera_proxy/camera.front_door"
    )
    token: str | None = Field(None, description="Bearer token for the URL (use !secret)")
    mqtt_request: str | None = Field(None, description="Topic to publish a snapshot request on")
    mqtt_reply: str | None = Field(None, description="Topic the camera answers on with the image")
    request_payload: str = Field("", description="Payload of the MQTT request")
    timeout: Duration = Field(10, description="How long to wait for the image")
    max_size: Size | None = Field(None, description="Largest image accepted; default limits.max_payload")

    @field_validator("url")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        if url is not None and not url.lower().startswith(("http://", "https://")):
            raise ValueError("the snapshot url must start with http:// or https://")
        return url

    @model_validator(mode="after")
    def _one_source(self) -> "SnapshotOptions":
        mqtt = self.mqtt_request is not None or self.mqtt_reply is not None
        if (self.url is not None) == mqtt:
            raise ValueError("a snapshot needs either url, or mqtt_request with mqtt_reply")
        if mqtt and (self.mqtt_request is None or self.mqtt_reply is None):
            raise ValueError("an MQTT snapshot needs both mqtt_request and mqtt_reply")
        for topic in (self.mqtt_request, self.mqtt_reply):
            if topic is not None and (not topic or "+" in topic or "#" in topic):
                raise ValueError(f"snapshot topic {topic!r} must be a plain topic without wildcards")
        return self


class ChangeOptions(StrictModel):
    """Skip the model when the picture did not change since the last judged one."""

    max_distance: int = Field(
        4, ge=0, le=64, description="Perceptual hash distance (of 64 bits) still counted as unchanged"
    )
    max_age: Duration = Field(3600, description="Check with the model at least this often anyway")
    republish: bool = Field(False, description="Publish the last result again when a check is skipped")


RuleKind = Literal["state", "event"]
