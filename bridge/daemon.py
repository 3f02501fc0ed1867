"""The daemon: wires sources, journal, queue, workers and sinks together, and stops cleanly."""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bridge import __version__
from bridge.config.redact import effective_config, redact_url
from bridge.config.rules import RuleBase
from bridge.config.settings import Config, rule_backends
from bridge.extension import Extension, input_topics
from bridge.features import build_features
from bridge.pipeline import heartbeat
from bridge.pipeline.backend_pool import BackendPool, build_pool
from bridge.pipeline.health import HealthReporter
from bridge.pipeline.intake import Intake, Submission
from bridge.pipeline.journal import Job, Journal, OutboxMessage
from bridge.pipeline.metrics import Metrics, MetricsSource
from bridge.pipeline.mqtt import Inbound, MqttLink
from bridge.pipeline.ollama_backend import OllamaBackend
from bridge.pipeline.outbox import Outbox, Sink
from bridge.pipeline.queue import JobQueue, JobTraits, QueueClosed
from bridge.pipeline.routes import Routes
from bridge.pipeline.runner import RuleStats, Runner
from bridge.pipeline.topics import Topics

log = logging.getLogger(__name__)

PRUNE_EVERY = 3600.0


class Bridge:
    """One running llm2mqtt. `run()` until `stop()`; everything else is wired here."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.settings = config.settings
        self.topics = Topics(self.settings.mqtt.base_topic)
        self.rules = {rule.name: rule for rule in config.rules if rule.enabled}
        self.journal = Journal(
            config.data_dir / "journal.sqlite3",
            synchronous=self.settings.journal.synchronous,
            clock=clock,
        )
        self.queue = JobQueue(clock)
        self._clock = clock
        self._stop = asyncio.Event()
        self._accepting = False
        self._routes = Routes(self.topics, self.rules)
        self._last_stats = b""
        self.extensions: list[Extension] = []
        self.config_path = config.path
        self.restart_required: list[str] = []  # changes on disk that wait for a restart (reload)
        # Created in run(): they need the running loop.
        self.link: MqttLink
        self.outbox: Outbox
        self.intake: Intake
        self.runner: Runner
        self.pool: BackendPool
        self.health: HealthReporter
        # The first Ollama backend: what backend/models and backend/pull talk to.
        self.backend: OllamaBackend
        self._ollama: list[OllamaBackend] = []
        self.metrics: Metrics

    def stop(self) -> None:
        """Ask the daemon to stop (safe from a signal handler on the loop)."""
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.journal.group_commits(loop)
        self.link = MqttLink(
            self.settings.mqtt,
            self.topics,
            loop,
            on_message=self._on_message,
            on_connected=self._on_connected,
            on_published=lambda mid: self.outbox.on_published(mid),
            info=self.info_payload,
        )
        self.outbox = Outbox(self.journal, self.link, loop=loop, unpublished=self.settings.mqtt.quiet_events)
        self.tap_outbox, self.broker_connected = self.journal.tap_messages, lambda: self.link.connected
        self.intake = Intake(
            self.journal, self.queue, self.outbox, self.rules, self.topics, self.settings, self._clock
        )
        self.pool = build_pool(self.settings, clock=self._clock, on_change=lambda: self.health.changed())
        self.health = HealthReporter(self.link, self.pool, self.topics, self.settings.mqtt)
        self._ollama = [m.server for m in self.pool.members.values() if isinstance(m.server, OllamaBackend)]
        # Without any Ollama backend, requests about Ollama see the `ollama:` settings (unused).
        self.backend = self._ollama[0] if self._ollama else OllamaBackend(self.settings.ollama)
        self.runner = Runner(
            self.journal,
            self.pool,
            self.outbox,
            self.queue,
            self.rules,
            self.topics,
            self.settings,
            clock=self._clock,
        )
        backends = self._ollama or [self.backend]
        source = MetricsSource(self.runner, self.intake, self.queue, self.journal, backends, self.link.budget)
        self.metrics = Metrics(source)
        self.runner.observers.append(self.metrics.job_done)
        self.extensions = build_features(self.config)
        self.runner.extensions = self.extensions
        for extension in self.extensions:
            await extension.start(self)  # the daemon is the Core the features see
        resumed = self._resume()
        if resumed:
            log.info("resuming %d job(s) from the journal", resumed)
        for rule in self.rules.values():
            for spec in rule.inputs:
                self.link.subscribe(spec.mqtt, spec.qos, shared=True)
        self.link.subscribe(self.topics.run_filter, 1, shared=True)
        self._accepting = True
        self.pool.start()
        await self.link.start()  # waits up to 2 s for the broker; inputs may come in meanwhile
        # One worker per slot: together they can fill every backend's `parallel`.
        slots = sum(member.parallel for member in self.pool.members.values())
        workers = [asyncio.create_task(self._work(), name=f"worker-{i}") for i in range(slots)]
        housekeeping = asyncio.create_task(self._housekeeping(), name="housekeeping")
        alive = heartbeat.start(self.data_dir, lambda: {"mqtt": self.link.connected, "load": self.load()})
        log.info(
            "llm2mqtt %s running: %d rule(s); %s",
            __version__,
            len(self.rules),
            "; ".join(f"{m.label} (parallel {m.parallel})" for m in self.pool.members.values()),
        )
        try:
            await self._stop.wait()
        finally:
            await heartbeat.stop(alive)
            await self._shutdown(workers, housekeeping)

    def _resume(self) -> int:
        jobs = self.journal.open_jobs()
        for job in jobs:
            self.queue.push(job.id, priority=job.priority, created=job.created, not_before=job.not_before)
        return len(jobs)

    async def _work(self) -> None:
        while True:
            # While no backend answers, jobs stay in the queue: none is started only to be held.
            await self.pool.wait_usable()
            try:
                job_id = await self.queue.get()
            except QueueClosed:
                return
            await self.runner.run(job_id)

    async def _housekeeping(self) -> None:
        last_prune = 0.0
        while True:
            if time.monotonic() - last_prune >= PRUNE_EVERY:
                last_prune = time.monotonic()
                removed = self.journal.prune(self.settings.journal.retention)
                if removed:
                    log.info("pruned %d finished job(s) past retention", removed)
            self._publish_stats()
            await self.health.refresh_models()
            self.health.publish()
            await asyncio.sleep(self.settings.stats_interval)

    def stats_payload(self) -> dict[str, Any]:
        """bridge/stats: how busy the bridge is, per rule and in all."""
        rules = {name: stats.as_dict() for name, stats in self.runner.stats.items()}
        latest = [s.last_model_ms for s in self.runner.stats.values() if s.last_model_ms is not None]
        return {
            "queue_depth": len(self.queue) + self.pool.held,  # held jobs wait for a backend
            "running": len(self.runner.running),
            "jobs_failed": sum(s.failed for s in self.runner.stats.values()) + self.intake.counts["rejected"],
            "jobs_done": sum(s.done for s in self.runner.stats.values()),
            "last_model_ms": round(latest[-1], 1) if latest else None,
            "outbox": self.outbox.in_flight,
            "rules": rules,
        }

    def _publish_stats(self) -> None:
        payload = json.dumps(self.stats_payload(), sort_keys=True).encode()
        if payload != self._last_stats and self.link.connected:
            # Retained QoS 0: a snapshot that the next one replaces; not worth the outbox.
            self.link.publish(self.topics.stats, payload, qos=0, retain=True)
            self._last_stats = payload

    async def _shutdown(self, workers: list[asyncio.Task[None]], housekeeping: asyncio.Task[None]) -> None:
        log.info("stopping: no new input; letting running jobs finish")
        self._accepting = False
        self.queue.close()
        self.pool.closing()  # jobs waiting for a slot go back to the journal
        housekeeping.cancel()
        grace = self.settings.shutdown_grace
        _, pending = await asyncio.wait(workers, timeout=grace) if workers else (set(), set())
        if pending:
            log.warning(
                "%d job(s) still running after %.0fs; they stay queued for the next start",
                len(pending),
                grace,
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(asyncio.CancelledError):
            await housekeeping
        await self.runner.close()
        for extension in self.extensions:
            try:
                await extension.stop()
            except Exception:
                log.exception("extension %s failed to stop cleanly", extension.name)
        self.journal.commit()
        await self._drain_outbox(timeout=3.0)
        self.outbox.flush()  # not sent again at the next start; no timed pump while closing
        await self.link.stop()
        self.outbox.flush()  # and what the broker acknowledged while the link closed
        await self.pool.close()
        if not self._ollama:
            await self.backend.close()
        self.journal.close()
        log.info("stopped")

    async def _drain_outbox(self, timeout: float) -> None:
        """Let the broker take what is in flight or being synced; the rest waits in the journal."""
        deadline = time.monotonic() + timeout
        while self.link.connected and self.outbox.busy and time.monotonic() < deadline:
            self.journal.commit()
            await asyncio.sleep(0.02)

    # -- events from the link (on the loop) --------------------------------------------

    def _on_connected(self) -> None:
        self.health.on_connected()
        self.outbox.on_connected()
        for extension in self.extensions:
            extension.on_connected()

    # -- the Core that features see (bridge.extension.Core) -------------------------------

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    def route(self, topic_filter: str, handler: Callable[[Inbound], None], qos: int = 1) -> None:
        """Subscribe and send matching messages to `handler` (on the loop). The message is
        acknowledged when the handler returns; a handler that needs durability first
        journals what it must and registers nothing else."""
        self._routes.add(topic_filter, handler)
        self.link.subscribe(topic_filter, qos)

    def replace_rule(self, rule: RuleBase) -> None:
        self.rules[rule.name] = rule
        self._routes.changed()
        self.runner.replace_rule(rule)

    def set_restart_required(self, paths: list[str]) -> None:
        self.restart_required = list(paths)
        self.send(self.topics.info, self.info_payload(), retain=True)

    def blob(self, digest: str) -> bytes:
        return self.journal.get_blob(digest)

    def put_blob(self, data: bytes) -> str:
        return self.journal.put_blob(data)

    def submit(self, submission: Submission, on_durable: Callable[[], None] | None = None) -> str | None:
        """Queue a job from any source; `on_durable` runs once it is safe in the journal."""
        return self.intake.submit(submission, on_durable)

    def publish(self, messages: Iterable[OutboxMessage], *, urgent: bool = True) -> None:
        self.outbox.add(messages, urgent=urgent)

    def send(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.link.publish(topic, payload, qos=qos, retain=retain)

    def add_sink(self, name: str, sink: Sink) -> None:
        self.outbox.add_sink(name, sink)

    def when_delivered(self, job_id: str, callback: Callable[[], None]) -> None:
        # Rows written in this loop iteration count too: look once they are committed.
        self.journal.after_commit(lambda: self.outbox.when_delivered(job_id, callback))

    def set_queue_policy(
        self, traits: Callable[[str], JobTraits], on_superseded: Callable[[str, str], None]
    ) -> None:
        self.queue.traits = traits
        self.queue.on_superseded = on_superseded

    def finish_superseded(self, job_id: str, by: str, messages: list[OutboxMessage]) -> None:
        self.journal.finish(job_id, "superseded", error=f"superseded by {by}", messages=messages)
        self.outbox.notify(urgent=False)

    def job(self, job_id: str) -> Job | None:
        return self.journal.get(job_id)

    def find_duplicate(
        self, rule: str, *, dedupe_key: str | None, payload_hash: str | None, window: float
    ) -> str | None:
        return self.journal.find_duplicate(
            rule, dedupe_key=dedupe_key, payload_hash=payload_hash, window=window
        )

    def previous_state(self, rule: str, job_id: str) -> str | None:
        return self.journal.previous_state(rule, job_id)

    def last_done(self, rule: str) -> Job | None:
        return self.journal.last_done(rule)

    def rule_stats(self, rule: str) -> RuleStats:
        return self.runner.stats[rule]

    def load(self) -> int:
        return len(self.queue) + len(self.runner.running)

    async def preload(self, rule: RuleBase) -> None:
        backends = rule_backends(rule, self.settings.backend_settings(), image=rule.accepted == "image")
        await self.pool.preload(backends, rule.model_for, keep_alive=rule.keep_alive, deadline=rule.timeout)

    def _on_message(self, message: Inbound) -> None:
        if not self._accepting:
            return  # not acknowledged: the broker delivers it again to our next session
        reply = None
        if message.response_topic:
            reply = {
                "topic": message.response_topic,
                "correlation_data": message.correlation_data.hex() if message.correlation_data else None,
            }
        handler, targets = self._routes.of(message.topic)
        if handler is not None:
            try:
                handler(message)
            except Exception:
                log.exception("handling a message on %s failed", message.topic)
            self.journal.after_commit(lambda: self.link.ack(message), ack=True)
            return
        if not targets:
            self.link.ack(message)
            return
        for index, (rule, interactive) in enumerate(targets):
            last = index == len(targets) - 1
            self.intake.submit(
                Submission(
                    rule=rule,
                    source=f"mqtt:{message.topic}",
                    payload=message.payload,
                    reply=reply,
                    interactive=interactive,
                    retained=message.retain,
                ),
                # One acknowledgement, once every job made from the message is durable.
                on_durable=(lambda: self.link.ack(message)) if last else None,
            )

    def info_payload(self) -> bytes:
        """bridge/info: what runs here, without secrets."""
        info = {
            "version": __version__,
            "base_topic": self.topics.base,
            "ollama": {
                "url": redact_url(self.settings.ollama.url),
                "parallel": self.settings.ollama.parallel,
            },
            "backends": {
                name: {
                    "type": m.kind,
                    "url": redact_url(m.server.url),
                    "parallel": m.parallel,
                    "local": m.local,
                }
                for name, m in self.pool.members.items()
            },
            "rules": [
                {
                    "name": rule.name,
                    "handler": rule.handler,
                    "model": rule.model,
                    "inputs": input_topics(rule, self.extensions),
                }
                for rule in self.rules.values()
            ],
            "models": sorted({rule.model for rule in self.rules.values()}),
            "config": effective_config(self.settings, self.rules.values()),
            "restart_required": self.restart_required,
        }
        return json.dumps(info, ensure_ascii=False).encode()
