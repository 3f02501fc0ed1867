"""Typed configuration: `config.yaml` and the rules it points at."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator

from bridge.config.aws import AwsSettings
from bridge.config.base import StrictModel
from bridge.config.homeassistant import HomeAssistantSettings
from bridge.config.http import HttpSettings
from bridge.config.rules import RuleBase
from bridge.config.todo import TodoSettings
from bridge.config.units import Duration, Size

DEFAULT_MQTT_URL = "mqtt://localhost:1883"
DEFAULT_OLLAMA_URL = "http://localhost:11434"


class TlsSettings(StrictModel):
    """TLS for the broker connection (also switched on by an mqtts:// URL)."""

    ca_certs: str | None = Field(None, description="CA bundle; default: the system's")
    certfile: str | None = Field(None, description="Client certificate, for mutual TLS")
    keyfile: str | None = None
    insecure: bool = Field(False, description="Skip hostname verification (testing only)")


class MqttSettings(StrictModel):
    """The broker connection."""

    url: str = Field(DEFAULT_MQTT_URL, description="mqtt://[user:pass@]host[:port], mqtts:// for TLS")
    username: str | None = None
    password: SecretStr | None = None
    client_id: str = Field("llm2mqtt", min_length=1, description="Stable id, so the broker keeps our session")
    protocol: Literal["5", "3.1.1"] = "5"
    base_topic: str = Field("llm2mqtt", pattern=r"^[^#+\x00]+$")
    keepalive: int = Field(60, ge=5, le=65535)
    session_expiry: Duration = Field(
        7 * 86400, description="MQTT 5: how long the broker keeps our session while we are away"
    )
    reconnect_max: Duration = Field(60, description="Longest wait between reconnect attempts")
    receive_maximum: int = Field(
        65535,
        ge=1,
        le=65535,
        description="MQTT 5: how many unacknowledged QoS 1 inputs the broker may send at once;"
        " past its own queue limit (Mosquitto: max_queued_messages) a broker drops the rest",
    )
    tls: TlsSettings | None = None

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_text(cls, value: object) -> object:
        return {5: "5", 3.1: "3.1.1", 311: "3.1.1", "311": "3.1.1"}.get(value, value)

    @field_validator("url")
    @classmethod
    def _valid_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError("the URL must start with mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError("the URL has no host")
        try:
            parts.port  # noqa: B018  (raises on a port that is not a number)
        except ValueError:
            raise ValueError("the URL's port is not a number") from None
        return url

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "localhost"

    @property
    def use_tls(self) -> bool:
        return self.tls is not None or urlsplit(self.url).scheme in ("mqtts", "ssl")

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.use_tls else 1883)

    def credentials(self) -> tuple[str | None, str | None]:
        """Username and password: explicit keys win over those in the URL."""
        parts = urlsplit(self.url)
        user = self.username or (unquote(parts.username) if parts.username else None)
        if self.password is not None:
            password: str | None = self.password.get_secret_value()
        else:
            password = unquote(parts.password) if parts.password else None
        return user, password

    def safe_url(self) -> str:
        """The URL without its password, for logs."""
        parts = urlsplit(self.url)
        user = f"{parts.username}@" if parts.username else ""
        return f"{parts.scheme}://{user}{self.host}:{self.port}"


class OllamaSettings(StrictModel):
    """The Ollama server."""

    url: str = Field(DEFAULT_OLLAMA_URL, pattern=r"^https?://", description="Ollama's base URL")
    parallel: int = Field(1, ge=1, le=64, description="Requests in flight at once; match OLLAMA_NUM_PARALLEL")
    timeout: Duration = Field(120, gt=0, description="Longest a single request may take")
    connect_timeout: Duration = Field(5, gt=0)
    retries: int = Field(3, ge=0, le=10, description="Retries on connection errors and 503 busy")
    retry_backoff: Duration = Field(1.0, description="First wait between retries; doubles each time")
    keep_alive: str | float = Field("5m", description="Default keep_alive for rules")


class JournalSettings(StrictModel):
    """The durable job journal (SQLite in the data directory)."""

    retention: Duration = Field(7 * 86400, description="How long finished jobs are kept")
    dedupe_window: Duration = Field(
        10, description="An identical payload within this window is not run again"
    )
    max_attempts: int = Field(3, ge=1, le=20, description="Runs of a job before it is dead")
    retry_delay: Duration = Field(15, description="Wait before re-running a job that met a fault")
    synchronous: Literal["full", "normal"] = Field(
        "full", description="full: durable across power loss; normal: across crashes only"
    )
    max_size: Size = Field(
        1_000_000_000,
        description="Largest journal; beyond it (after pruning) new input is refused with an error",
    )


class LimitsSettings(StrictModel):
    """Input limits; anything larger is refused with an error."""

    max_payload: Size = Field(20_000_000, description="Largest accepted payload")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Larger images are refused")
    max_text: Size = Field(32_000, description="Longest text sent to a model, in bytes")
    max_queued: int = Field(
        10_000, ge=1, description="Jobs waiting at most; beyond it new input is refused with an error"
    )


class Settings(StrictModel):
    """Everything in config.yaml."""

    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    ollama: OllamaSettings = Field(default_factory=OllamaSettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    aws: AwsSettings | None = Field(None, description="SQS jobs, S3 images, SNS results (bridge/aws/)")
    homeassistant: HomeAssistantSettings = Field(default_factory=HomeAssistantSettings)
    todo: TodoSettings = Field(default_factory=TodoSettings, description="The Todo list notes change")
    http: HttpSettings = Field(default_factory=HttpSettings, description="The REST API")
    data_dir: str = Field("data", description="Journal and images; relative to config.yaml")
    rules_dir: str = Field("rules", description="Folder of rule files; relative to config.yaml")
    shutdown_grace: Duration = Field(30, description="On stop, how long running jobs may take to finish")
    stats_interval: Duration = Field(
        10, gt=0, description="How often llm2mqtt/bridge/stats is refreshed (when it changed)"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class Config:
    """Validated settings and rules, with where each came from."""

    settings: Settings
    rules: tuple[RuleBase, ...]
    path: Path
    rule_files: dict[str, Path] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return (self.path.parent / self.settings.data_dir).resolve()

    def rule(self, name: str) -> RuleBase | None:
        return next((r for r in self.rules if r.name == name), None)
