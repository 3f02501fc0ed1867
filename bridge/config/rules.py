"""The parts of a rule that every handler shares. Handlers extend `RuleBase` with their own keys."""

from typing import Annotated, Any, Literal

from jinja2 import TemplateSyntaxError
from pydantic import Field, WithJsonSchema, field_validator, model_validator

from bridge.config.aws import QUEUE_URL_PATTERN, SnsTarget
from bridge.config.base import StrictModel
from bridge.config.cameras import ChangeOptions, RuleKind, ScheduleOptions, SnapshotOptions
from bridge.config.homeassistant import RuleHomeAssistant
from bridge.config.notify import NotifyTarget
from bridge.config.templates import compile_template
from bridge.config.units import Duration

RULE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_]*$"


# What rule files may write, which the loader turns into `model` + `models` and a list:
# `model: {mini: qwen2.5vl:3b, cloud: gpt-4o-mini}` and `backend: mini`.
_MODEL_OR_MAP: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string", "minLength": 1}},
    ]
}
_NAME_OR_LIST: dict[str, Any] = {
    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}]
}


class MqttInput(StrictModel):
    """An MQTT topic (filter) whose messages become jobs for the rule."""

    mqtt: str = Field(description="Topic or topic filter, e.g. cameras/front_door/snapshot")
    qos: Literal[0, 1] = Field(1, description="Subscription QoS; 1 means nothing is lost")

    @field_validator("mqtt")
    @classmethod
    def _valid_filter(cls, topic: str) -> str:
        problem = topic_filter_problem(topic)
        if problem:
            raise ValueError(problem)
        return topic


class ImageOptions(StrictModel):
    """How an image is shrunk before it reaches the model."""

    crop: tuple[float, float, float, float] | None = Field(
        None, description="x, y, width, height as fractions of the image, e.g. [0.4, 0.3, 0.25, 0.3]"
    )
    max_side: int | None = Field(1024, ge=32, description="Longest side sent to the model, pixels")
    quality: int = Field(85, ge=30, le=100, description="JPEG quality of the re-encoded image")

    @field_validator("crop")
    @classmethod
    def _valid_crop(
        cls, crop: tuple[float, float, float, float] | None
    ) -> tuple[float, float, float, float] | None:
        if crop is None:
            return None
        x, y, w, h = crop
        if not all(0.0 <= v <= 1.0 for v in crop):
            raise ValueError("crop values are fractions between 0 and 1")
        if w <= 0 or h <= 0:
            raise ValueError("crop width and height must be above 0")
        if x + w > 1.0 + 1e-9 or y + h > 1.0 + 1e-9:
            raise ValueError("crop reaches outside the image (x + width and y + height must be <= 1)")
        return crop


class Outputs(StrictModel):
    """Where and how a rule's answers are published."""

    retain: bool = Field(True, description="Retain the result and state topics")
    state: bool = Field(True, description="Publish the plain value on <base>/<rule>/state")


class RuleBase(StrictModel):
    """Keys every rule has, whatever its handler."""

    name: str = Field(
        pattern=RULE_NAME_PATTERN,
        max_length=64,
        description="Lower-case letters, digits and _; used in topics and entity ids",
    )
    handler: str = Field(description="Which built-in handler answers: yes_no, classify, ...")
    model: Annotated[str, WithJsonSchema(_MODEL_OR_MAP)] = Field(
        min_length=1,
        description="Model, e.g. qwen2.5vl:3b; or a map backend → model where the names differ",
    )
    models: dict[str, str] = Field(
        default_factory=dict, description="Model per backend where it differs from `model`"
    )
    backend: Annotated[list[str] | None, WithJsonSchema(_NAME_OR_LIST)] = Field(
        None, description="Backends to use, in order of preference (default: every local one)"
    )
    allow_remote: bool = Field(False, description="Images may go to backends that are not local")
    prompt: str = Field(
        min_length=1,
        description="The question, a Jinja template; input JSON fields are its variables",
    )
    system: str | None = Field(None, description="Replaces the handler's system instruction")
    description: str | None = None
    enabled: bool = True
    inputs: list[MqttInput] = Field(default_factory=list, description="Where jobs come from")
    accepts: Literal["image", "text", "any"] | None = Field(
        None,
        description="What the rule's inputs may carry: image, text or any; anything else is refused"
        " with an error (default: image for a rule with an image: or snapshot: section, else any)",
    )
    image: ImageOptions = Field(default_factory=ImageOptions)
    outputs: Outputs = Field(default_factory=Outputs)
    priority: int = Field(0, ge=-100, le=100, description="Higher runs first when jobs wait for the model")
    keep_alive: str | float | None = Field(
        None, description="How long Ollama keeps the model loaded after a job (default: ollama's)"
    )
    timeout: Duration | None = Field(None, description="Per request; default: ollama.timeout")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Ollama options; temperature defaults to 0"
    )
    # Scheduled checks (bridge/schedules.py); the models live in bridge/schedule_options.py.
    schedule: ScheduleOptions | None = Field(None, description="Check on a timer: every or cron")
    snapshot: SnapshotOptions | None = Field(None, description="Where scheduled and /check images come from")
    change: ChangeOptions | None = Field(None, description="Skip the model while the picture is unchanged")
    kind: RuleKind | None = Field(
        None,
        description="state: newest input wins, state published on change; event: every input runs"
        " (default: state with a schedule, else event)",
    )
    hysteresis: int = Field(1, ge=1, le=10, description="Agreeing answers needed before the state flips")
    recheck_below: float = Field(0.0, ge=0, le=1, description="Confidence below which to check once more")
    # AWS (bridge/aws/): notify SNS topics of results; copy local jobs' results to an SQS queue.
    sns: list[SnsTarget] = Field(default_factory=list, description="SNS topics that get this rule's results")
    mirror_to_sqs: str | None = Field(
        None, pattern=QUEUE_URL_PATTERN, description="SQS queue URL that gets each local job's result"
    )
    notify: list[NotifyTarget] = Field(
        default_factory=list, description="Apprise URLs told about results, with the picture"
    )
    homeassistant: RuleHomeAssistant = Field(
        default_factory=RuleHomeAssistant, description="How the rule appears in Home Assistant"
    )

    @model_validator(mode="before")
    @classmethod
    def _model_map(cls, data: Any) -> Any:
        # `model: {mini: a, cloud: b}` is `model: a` plus `models:`; `backend: mini` is a list of one.
        if isinstance(data, dict):
            if isinstance(data.get("model"), dict) and data["model"]:
                mapping = data["model"]
                data = {
                    **data,
                    "model": next(iter(mapping.values())),
                    "models": {**mapping, **data.get("models", {})},
                }
            if isinstance(data.get("backend"), str):
                data = {**data, "backend": [data["backend"]]}
        return data

    def model_for(self, backend: str) -> str:
        """The model name on `backend`."""
        return self.models.get(backend, self.model)

    @property
    def accepted(self) -> Literal["image", "text", "any"]:
        """What the rule takes, with the default filled in."""
        if self.accepts is not None:
            return self.accepts
        return "image" if "image" in self.model_fields_set or self.snapshot is not None else "any"

    @field_validator("prompt", "system")
    @classmethod
    def _template_compiles(cls, text: str | None) -> str | None:
        if text is not None:
            try:
                compile_template(text)
            except TemplateSyntaxError as exc:
                raise ValueError(f"template error on line {exc.lineno}: {exc.message}") from None
        return text

    @model_validator(mode="after")
    def _not_system_topic(self) -> "RuleBase":
        for spec in self.inputs:
            if spec.mqtt.startswith("$"):
                raise ValueError(f"input topic {spec.mqtt!r} is a broker system topic")
        return self

    @model_validator(mode="after")
    def _schedule_has_snapshot(self) -> "RuleBase":
        if self.schedule is not None and self.snapshot is None:
            raise ValueError("a rule with a schedule needs a snapshot source (snapshot: {url: …})")
        return self


def topic_filter_problem(topic: str) -> str | None:
    """Why `topic` is not a valid MQTT subscription filter, or None when it is."""
    if not topic:
        return "a topic cannot be empty"
    if "\x00" in topic:
        return "a topic cannot contain a NUL character"
    if len(topic.encode()) > 65535:
        return "a topic is at most 65535 bytes"
    levels = topic.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return f"'#' must be a whole level at the end of {topic!r}"
        if "+" in level and level != "+":
            return f"'+' must be a whole level in {topic!r}"
    return None
