"""Typed configuration: `config.yaml` and the rules it points at."""

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, get_args
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from bridge.config.aws import AwsSettings
from bridge.config.base import StrictModel
from bridge.config.homeassistant import HomeAssistantSettings
from bridge.config.http import HttpSettings
from bridge.config.rules import RuleBase
from bridge.config.todo import TodoSettings
from bridge.config.units import Duration, Size, SizeOrZero

DEFAULT_MQTT_URL = "mqtt://localhost:1883"
DEFAULT_OLLAMA_URL = "http://localhost:11434"

JobEvent = Literal["job_queued", "job_started", "job_done", "job_failed", "job_skipped"]
JOB_EVENTS: tuple[JobEvent, ...] = get_args(JobEvent)


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
    receive_memory: Size | None = Field(
        None,
        description="Most bytes of received input payloads held in memory until they are journaled"
        " (default: no bound); past it the daemon reads no more from the broker until the journal"
        " catches up. Only with a broker that never drops for a slow reader (Mosquitto:"
        " max_queued_messages 0): a default Mosquitto drops what it cannot write. At least 1MB",
    )
    tls: TlsSettings | None = None
    reply_deny: list[str] = Field(
        default_factory=list,
        description="Topic filters an MQTT 5 response topic (or an SQS reply) may never match "
        "(e.g. zigbee2mqtt/#); the base topic, the discovery prefix and rule inputs always are",
    )
    reply_allow: list[str] = Field(
        default_factory=list, description="When set, replies go only to topics starting with one of these"
    )
    shared_group: str | None = Field(
        None,
        pattern=r"^[^/#+\x00]+$",
        description="MQTT 5: subscribe to inputs as $share/NAME/…, so several daemons split the work",
    )
    job_events: list[JobEvent] = Field(
        default_factory=lambda: list(JOB_EVENTS),
        description="Which lifecycle events are published on <base>/bridge/event (default: all; [] for"
        " none). Each costs a message per job; the web console shows every one either way, and"
        " other events (pull_progress, changed, stale_image) are always published",
    )

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

    @field_validator("receive_memory")
    @classmethod
    def _room_for_a_batch(cls, size: int | None) -> int | None:
        if size is not None and size < 1_000_000:
            raise ValueError(
                f"{size:,} bytes is too little: at least 1MB, so that a group commit journals more"
                " than one picture at a time (8MB is a good size)"
            )
        return size

    @property
    def quiet_events(self) -> frozenset[str]:
        """The lifecycle events kept off the broker (those left out of `job_events`)."""
        return frozenset(JOB_EVENTS) - set(self.job_events)

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


class OllamaBackendSettings(OllamaSettings):
    """An Ollama server under `backends:`."""

    type: Literal["ollama"]
    local: bool = Field(True, description="In the house: may get images and private rules")


class OpenAIBackendSettings(StrictModel):
    """An OpenAI-compatible server (LM Studio, llama.cpp server, vLLM, a hosted provider)."""

    type: Literal["openai"]
    base_url: str = Field(pattern=r"^https?://", description="The API's base URL, usually ending in /v1")
    api_key: SecretStr | None = Field(None, description="Sent as a bearer token; use !secret")
    parallel: int = Field(4, ge=1, le=256, description="Requests in flight at once")
    timeout: Duration = Field(120, gt=0, description="Longest a single request may take")
    connect_timeout: Duration = Field(5, gt=0)
    retries: int = Field(2, ge=0, le=10, description="Retries on connection errors, 429 and 5xx")
    retry_backoff: Duration = Field(1.0, description="First wait between retries; doubles each time")
    local: bool = Field(False, description="In the house (a LAN server): may get images and private rules")
    strict: bool = Field(True, description="Ask for strict JSON Schema output (off for servers without it)")
    stream: bool = Field(False, description="Stream the answer (some servers only time streamed answers)")

    @property
    def url(self) -> str:
        return self.base_url


BackendSettings = Annotated[OllamaBackendSettings | OpenAIBackendSettings, Field(discriminator="type")]
BACKEND_NAME = r"^[A-Za-z0-9_-]+$"


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
    min_free: SizeOrZero = Field(
        100_000_000,
        description="Least free space on the journal's disk; below it new input is refused with an "
        "error, and jobs already taken still finish (0: no floor)",
    )


class LimitsSettings(StrictModel):
    """Input limits; anything larger is refused with an error."""

    max_payload: Size = Field(20_000_000, description="Largest accepted payload")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Larger images are refused")
    max_text: Size = Field(32_000, description="Longest text sent to a model, in bytes")
    max_decode_memory: Size = Field(
        100_000_000,
        gt=0,
        description="Most memory a PNG or WebP may take to decode (they are decoded in full; a JPEG "
        "is shrunk while decoding): about 10 MB per megapixel for PNG, 18 for WebP",
    )
    max_queued: int = Field(
        10_000, ge=1, description="Jobs waiting at most; beyond it new input is refused with an error"
    )


class ImageUrlSettings(StrictModel):
    """Which URLs a job's `image_url` (MQTT or SQS) may fetch: none unless listed."""

    allow: list[str] = Field(
        default_factory=list,
        description="Host names (cam.example.com, *.example.com) and addresses or networks "
        "(192.168.1.20, 192.168.1.0/24). Empty: image_url is refused. A loopback, private, "
        "link-local or unique-local address is reached only when an address entry contains it",
    )
    timeout: Duration = Field(15, gt=0, description="Total time for one fetch, redirects included")
    max_redirects: int = Field(3, ge=0, le=10, description="Redirects followed; each is checked the same way")

    @field_validator("allow")
    @classmethod
    def _entries(cls, allow: list[str]) -> list[str]:
        for entry in allow:
            problem = allow_entry_problem(entry)
            if problem:
                raise ValueError(problem)
        return [entry.strip().lower() for entry in allow]


_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"^(\*\.)?({_LABEL}\.)*{_LABEL}$")


def allow_entry_problem(entry: str) -> str | None:
    """Why `entry` is neither a host name (optionally `*.`) nor an address or network, or None."""
    text = entry.strip().lower()
    try:
        ipaddress.ip_network(text, strict=False)
        return None
    except ValueError:
        pass
    if _HOST_NAME.match(text) and not text.replace(".", "").isdigit():
        return None
    return f"{entry!r} is neither a host name nor an address or network such as 192.168.1.0/24"


class Settings(StrictModel):
    """Everything in config.yaml."""

    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    ollama: OllamaSettings = Field(
        default_factory=OllamaSettings, description="One Ollama server: the backend named `ollama`"
    )
    backends: dict[Annotated[str, Field(pattern=BACKEND_NAME)], BackendSettings] = Field(
        default_factory=dict,
        description="Named model servers (type: ollama or openai), in order of preference",
    )
    journal: JournalSettings = Field(default_factory=JournalSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    aws: AwsSettings | None = Field(None, description="SQS jobs, S3 images, SNS results (bridge/aws/)")
    homeassistant: HomeAssistantSettings = Field(default_factory=HomeAssistantSettings)
    todo: TodoSettings = Field(default_factory=TodoSettings, description="The Todo list notes change")
    http: HttpSettings = Field(default_factory=HttpSettings, description="The REST API")
    image_url: ImageUrlSettings = Field(
        default_factory=ImageUrlSettings, description="Where a job's image_url may be fetched from"
    )
    data_dir: str = Field("data", description="Journal and images; relative to config.yaml")
    rules_dir: str = Field("rules", description="Folder of rule files; relative to config.yaml")
    shutdown_grace: Duration = Field(30, description="On stop, how long running jobs may take to finish")
    stats_interval: Duration = Field(
        10, gt=0, description="How often llm2mqtt/bridge/stats is refreshed (when it changed)"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _ollama_or_backends(self) -> "Settings":
        if self.backends and "ollama" in self.model_fields_set:
            raise ValueError(
                "ollama: and backends: are both set: move that server into backends: "
                "(e.g. `ollama: {type: ollama, url: …}`) and remove the ollama: section "
                "(and LLM2MQTT_OLLAMA_URL)"
            )
        return self

    def backend_settings(self) -> dict[str, OllamaBackendSettings | OpenAIBackendSettings]:
        """Every backend in order of preference; without `backends:`, the `ollama:` section is
        the one backend, named `ollama`."""
        if self.backends:
            return dict(self.backends)
        return {"ollama": OllamaBackendSettings(type="ollama", **self.ollama.model_dump())}


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


def rule_backends(
    rule: RuleBase, backends: dict[str, OllamaBackendSettings | OpenAIBackendSettings], *, image: bool
) -> list[str]:
    """The backends a job of `rule` may go to, in order: the rule's `backend:` list (default:
    every local backend in config order); with an image, only local ones unless `allow_remote`."""
    names = rule.backend if rule.backend is not None else [n for n, b in backends.items() if b.local]
    names = [name for name in names if name in backends]
    if image and not rule.allow_remote:
        names = [name for name in names if backends[name].local]
    return names


def backend_problems(
    rule: RuleBase, backends: dict[str, OllamaBackendSettings | OpenAIBackendSettings]
) -> list[str]:
    """Rule keys that name backends that do not exist, or leave a rule with none to use."""
    problems = []
    known = ", ".join(backends)
    for name in rule.backend or []:
        if name not in backends:
            problems.append(f"backend: {name!r} is not a configured backend ({known})")
    for name in rule.models:
        if name not in backends:
            problems.append(f"model: {name!r} is not a configured backend ({known})")
    if not problems and not rule_backends(rule, backends, image=False):
        problems.append(
            "backend: no backend to use (every listed one is remote, or no backend is local); "
            "name one in backend:"
        )
    return problems


def leaves_the_house(
    rule: RuleBase, backends: dict[str, OllamaBackendSettings | OpenAIBackendSettings]
) -> tuple[list[str], bool]:
    """The remote backends a rule's jobs may reach, and whether its images may go there too."""
    remote = [n for n in rule_backends(rule, backends, image=False) if not backends[n].local]
    return remote, bool(remote) and rule.allow_remote
