"""The `aws:` section of config.yaml and the AWS keys of a rule. Pure pydantic models.

Credentials are never configured here: boto3 takes them from its standard chain
(environment, shared profile, container or instance role).
"""

import re

from pydantic import Field, field_validator, model_validator

from bridge.config.base import StrictModel
from bridge.config.templates import check_condition, check_message_template
from bridge.config.units import Duration, Size

SNS_ARN_PATTERN = r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]{1,256}$"
QUEUE_URL_PATTERN = r"^https?://\S+/\d{12}/[A-Za-z0-9_-]{1,75}(\.fifo)?$"


class AwsSettings(StrictModel):
    """AWS SQS jobs in, S3 images, SNS notifications out."""

    region: str = Field("us-east-1", description="AWS region of the queue, bucket and topics")
    endpoint_url: str | None = Field(
        None, pattern=r"^https?://", description="Another endpoint (LocalStack, moto); default: AWS"
    )
    profile: str | None = Field(None, description="A profile of ~/.aws/config; default: the standard chain")
    queue_url: str | None = Field(None, pattern=QUEUE_URL_PATTERN, description="SQS queue to take jobs from")
    queue_urls: list[str] = Field(default_factory=list, description="More queues to take jobs from")
    wait_time: Duration = Field(20, ge=0, le=20, description="SQS long polling wait")
    visibility_timeout: Duration = Field(
        60, ge=1, le=43200, description="How long a running job's message stays hidden per heartbeat"
    )
    heartbeat: Duration = Field(20, gt=0, description="How often running jobs' messages are extended")
    job_deadline: Duration = Field(
        900, gt=0, description="After this, a message is no longer extended and returns to the queue"
    )
    max_in_flight: int | None = Field(
        None, ge=1, le=1000, description="Messages held at once; default: 2 x ollama.parallel"
    )
    buckets: list[str] = Field(
        default_factory=list, description="S3 buckets a job may name for its image (nothing else is read)"
    )
    max_image: Size = Field(20_000_000, description="Largest S3 object read as an image")
    image_bucket: str | None = Field(
        None, description="Upload each notified job's picture here; SNS messages get a pre-signed link"
    )
    image_prefix: str = Field("llm2mqtt/", description="Key prefix of uploaded pictures")
    image_link_expiry: Duration = Field(
        7 * 86400, ge=60, le=7 * 86400, description="How long a picture link works (at most 7d)"
    )

    @field_validator("queue_urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not re.match(QUEUE_URL_PATTERN, url):
                raise ValueError(f"{url!r} is not an SQS queue URL (https://…/<account>/<name>)")
        return urls

    @model_validator(mode="after")
    def _heartbeat_fits(self) -> "AwsSettings":
        if self.heartbeat >= self.visibility_timeout:
            raise ValueError("heartbeat must be shorter than visibility_timeout, or messages reappear")
        return self

    @property
    def queues(self) -> list[str]:
        return ([self.queue_url] if self.queue_url else []) + list(self.queue_urls)


class SnsTarget(StrictModel):
    """Publish a rule's result to an SNS topic (a phone, an e-mail, a Lambda)."""

    topic_arn: str = Field(pattern=SNS_ARN_PATTERN, description="arn:aws:sns:<region>:<account>:<topic>")
    when: str | None = Field(
        None,
        description="A condition over state, previous_state, changed, result, rule, job_id, "
        "e.g. \"state == 'unlocked' and changed\"; default: every result",
    )
    subject: str = Field("{{ rule }}: {{ state }}", description="Subject template (e-mail)")
    message: str | None = Field(None, description="Message template; default: the result JSON")

    @field_validator("when")
    @classmethod
    def _condition_compiles(cls, text: str | None) -> str | None:
        return check_condition(text)

    @field_validator("subject", "message")
    @classmethod
    def _template_compiles(cls, text: str | None) -> str | None:
        return check_message_template(text)
