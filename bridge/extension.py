"""The seam where features plug into the daemon: cameras, Todo, AWS, Home Assistant, web.

A feature is an `Extension`. It is built from its settings alone (no I/O in the constructor),
started with the `Core` (what the daemon offers a feature, and nothing else), told about the
broker connection and about every job's outcome, and stopped. Extensions never block the
event loop. The one list of features is `bridge.features`.
"""

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from bridge.config.rules import RuleBase
from bridge.config.settings import Settings
from bridge.pipeline.backend_pool import BackendPool
from bridge.pipeline.images import PreparedImage
from bridge.pipeline.intake import Submission
from bridge.pipeline.journal import Job, OutboxMessage
from bridge.pipeline.metrics import Metrics
from bridge.pipeline.mqtt import Inbound
from bridge.pipeline.ollama_backend import OllamaBackend
from bridge.pipeline.outbox import Sink
from bridge.pipeline.queue import JobTraits
from bridge.pipeline.runner import RuleStats
from bridge.pipeline.topics import Topics
from handlers.base import Answer, PromptInput


class Core(Protocol):
    """What the daemon offers a feature. Features see this, never the daemon itself."""

    @property
    def settings(self) -> Settings:
        """The whole validated config.yaml (read-only)."""

    @property
    def topics(self) -> Topics:
        """Every topic name the bridge uses."""

    @property
    def rules(self) -> Mapping[str, RuleBase]:
        """The enabled rules, by name."""

    @property
    def data_dir(self) -> Path:
        """Where a feature keeps its files."""

    def route(self, topic_filter: str, handler: Callable[[Inbound], None], qos: int = 1) -> None:
        """Subscribe and send matching messages to `handler` (on the loop); acknowledged after it."""

    def submit(self, submission: Submission, on_durable: Callable[[], None] | None = None) -> str | None:
        """Queue a job; `on_durable` runs once it is safe in the journal. The job id, or None."""

    def publish(self, messages: Iterable[OutboxMessage], *, urgent: bool = True) -> None:
        """Publish through the durable outbox (urgent: commit now rather than with the next write)."""

    def send(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish now, outside the outbox: for messages the next one replaces, or requests."""

    def add_sink(self, name: str, sink: Sink) -> None:
        """Deliver outbox rows whose `sink` is `name` through `sink` (SNS, SQS)."""

    def when_delivered(self, job_id: str, callback: Callable[[], None]) -> None:
        """Call `callback` once every output of `job_id` has left the outbox."""

    def set_queue_policy(
        self, traits: Callable[[str], JobTraits], on_superseded: Callable[[str, str], None]
    ) -> None:
        """How the queue groups and coalesces jobs, and who hears of a coalesced one."""

    def finish_superseded(self, job_id: str, by: str, messages: list[OutboxMessage]) -> None:
        """End a waiting job that a newer one replaced, with the messages that say so."""

    def job(self, job_id: str) -> Job | None:
        """A job from the journal."""

    def find_duplicate(
        self, rule: str, *, dedupe_key: str | None, payload_hash: str | None, window: float
    ) -> str | None:
        """The job an input duplicates (same `id`, or same payload recently), if any."""

    def previous_state(self, rule: str, job_id: str) -> str | None:
        """The state of the rule's last finished job before `job_id`."""

    def last_done(self, rule: str) -> Job | None:
        """The rule's last finished job, with its result (for republishing)."""

    def rule_stats(self, rule: str) -> RuleStats:
        """The rule's counters (also on llm2mqtt/bridge/stats)."""

    def load(self) -> int:
        """Jobs waiting or running now."""

    async def preload(self, rule: RuleBase) -> None:
        """Ask the Ollama backend the rule's next job would most likely use to load its model;
        raises BackendError."""

    def tap_outbox(self, tap: Callable[[list[OutboxMessage]], None]) -> None:
        """Show `tap` every outbox message once it is committed, in order (the web's live view)."""

    def broker_connected(self) -> bool:
        """Whether the broker link is up now."""

    def stats_payload(self) -> dict[str, Any]:
        """What llm2mqtt/bridge/stats says: queue depth, running jobs, per-rule counters."""

    @property
    def backend(self) -> OllamaBackend:
        """The first Ollama backend: models, loaded models, pulls."""

    @property
    def pool(self) -> BackendPool:
        """Every backend: their health (bridge/health), and asking a rule's question through them."""

    @property
    def metrics(self) -> Metrics:
        """The daemon's Prometheus registry and what it reads."""

    @property
    def config_path(self) -> Path:
        """The config.yaml the daemon was started with (for a reload)."""

    def replace_rule(self, rule: RuleBase) -> None:
        """Swap a rule for a changed one of the same name: the next job runs with it."""

    def set_restart_required(self, paths: list[str]) -> None:
        """Record what a reload could not apply, and republish bridge/info with it."""

    def blob(self, digest: str) -> bytes:
        """A picture kept in the journal by its hash; KeyError when it is gone."""

    def put_blob(self, data: bytes) -> str:
        """Keep bytes in the journal once, by content hash; returns the hash."""


class Extension:
    """Base class with do-nothing hooks; override what the feature needs.

    The constructor takes the feature's settings and does nothing else; I/O starts in `start`.
    """

    name = "extension"

    async def start(self, core: Core) -> None:
        """Called once the journal, queue, outbox and link exist, before the broker connects."""

    async def stop(self) -> None:
        """Called when the daemon stops, after the workers are done, before the link closes."""

    def routers(self) -> list[Any]:
        """FastAPI routers this feature serves on the web server (after `start`)."""
        return []

    def input_topics(self, rule: RuleBase) -> list[str]:
        """Topics this feature turns into jobs of `rule`, besides its `inputs` (for bridge/info)."""
        return []

    def on_connected(self) -> None:
        """The broker connection is (re)established."""

    def before_model(self, job: Job, rule: RuleBase, image: PreparedImage | None) -> str | None:
        """A reason to skip the model for this job (the job is then `skipped`), or None."""
        return None

    async def prepare(self, job: Job, rule: RuleBase, prompt: PromptInput) -> PromptInput:
        """The prompt input the model gets (e.g. with extra template fields); runs after before_model."""
        return prompt

    async def after_answer(self, job: Job, rule: RuleBase, prompt: PromptInput, answer: Answer) -> Answer:
        """Act on a valid answer before the job finishes; may replace it, or raise a bridge error
        (AnswerError, BackendError, BackendUnavailable) to fail or retry the job."""
        return answer

    def owns_state(self, rule: RuleBase) -> bool:
        """True when this extension publishes the rule's state topic itself (confirmed states)."""
        return False

    def after_done(
        self, job: Job, rule: RuleBase, result: dict[str, Any], state: str | None, image: PreparedImage | None
    ) -> list[OutboxMessage]:
        """Extra messages to publish with a finished job, in the same transaction."""
        return []

    def after_failed(self, job: Job, error: str) -> list[OutboxMessage]:
        """Extra messages to publish with a failed or dead job."""
        return []


def input_topics(rule: RuleBase, features: Iterable[Extension]) -> list[str]:
    """Every topic that becomes a job of `rule`: its `inputs` and what features route to it."""
    return [spec.mqtt for spec in rule.inputs] + [t for f in features for t in f.input_topics(rule)]
