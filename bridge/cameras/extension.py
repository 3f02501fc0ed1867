"""The scheduled-checks extension: timers, snapshots, change detection, confirmed states.

- a rule with `schedule:` takes a snapshot from its `snapshot:` source on every tick (paused
  rules and ticks outside `active_hours` do nothing) and queues it as a background job;
- `<base>/<rule>/check` takes a snapshot now, as an interactive job;
- `<base>/<rule>/paused/set` ON/OFF pauses the schedule; `<base>/<rule>/paused` says which;
- before the model, a picture that has not changed since the last judged one is skipped;
- a state-like rule (`kind: state`) keeps its confirmed state, flips it only after
  `hysteresis` agreeing answers, re-checks doubtful answers once, and publishes its state
  topic and a `changed` event only when the state changes;
- the queue coalesces waiting snapshots of a state-like rule and prefers the loaded model;
"""

import asyncio
import logging
import time
from datetime import datetime
from typing import Any

import httpx
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bridge.cameras.change import Judged, decide, region_hash
from bridge.cameras.confirm import observe
from bridge.cameras.schedules import clock_jumped, make_trigger, missed_tick, next_start, within_hours
from bridge.cameras.snapshots import SnapshotError, Snapshots
from bridge.cameras.store import ScheduleStore
from bridge.config.redact import redact_url
from bridge.config.rules import RuleBase
from bridge.errors import BackendError
from bridge.extension import Core, Extension
from bridge.pipeline.images import PreparedImage
from bridge.pipeline.intake import INTERACTIVE_BOOST, Submission, new_job_id
from bridge.pipeline.journal import Job, OutboxMessage
from bridge.pipeline.jsontext import dumps
from bridge.pipeline.mqtt import Inbound
from bridge.pipeline.payloads import JobInput
from bridge.pipeline.queue import JobTraits
from bridge.pipeline.results import event, failure_messages

log = logging.getLogger(__name__)

CLOCK_WATCH_EVERY = 30.0
SNAPSHOT_SOURCES = ("schedule:", "check:")


def rule_kind(rule: RuleBase) -> str:
    """state or event; a scheduled rule is state-like unless it says otherwise."""
    return rule.kind or ("state" if rule.schedule is not None else "event")


def wants_schedules(rules: list[RuleBase]) -> bool:
    """Whether any rule uses a key of this feature (then the extension is built)."""
    return any(
        r.schedule or r.snapshot or r.change or r.kind or r.hysteresis > 1 or r.recheck_below > 0
        for r in rules
    )


def state_key(job: Job) -> str:
    """Rule and source: every snapshot of a rule's own camera counts as one source."""
    source = "snapshot" if job.source.startswith(SNAPSHOT_SOURCES) else job.source
    return f"{job.rule}|{source}"


class CamerasExtension(Extension):
    """Scheduled camera checks that spend the GPU only when something changed."""

    name = "cameras"

    async def start(self, core: Core) -> None:
        self.core = core
        self.rules = core.rules
        self.store = ScheduleStore(core.data_dir / "schedules.json")
        self._http = httpx.AsyncClient(follow_redirects=True)
        self.snapshots = Snapshots(
            self._http,
            lambda topic, payload: core.send(topic, payload, qos=1),
            max_bytes=core.settings.limits.max_payload,
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._hashes: dict[str, tuple[str, str | None]] = {}  # job id -> (region hash, blob)
        self._confirm_rounds: dict[str, int] = {}
        core.set_queue_policy(self._traits, self._superseded)
        core.route(core.topics.check_filter, self._on_check)
        core.route(core.topics.paused_set_filter, self._on_paused)
        snapshot_options = [r.snapshot for r in self.rules.values() if r.snapshot is not None]
        for topic in self.snapshots.reply_topics(snapshot_options):
            core.route(topic, self.snapshots.on_reply, qos=0)
        self.scheduler = AsyncIOScheduler()
        now = datetime.now().astimezone()
        for rule in self.rules.values():
            if rule.schedule is None:
                continue
            if rule.snapshot is None:
                log.warning("%s: has a schedule but no snapshot source; it will not run", rule.name)
                continue
            last = self._last_run(rule.name)
            trigger = make_trigger(rule.schedule, start=next_start(rule.schedule, last, now))
            self.scheduler.add_job(
                self._tick,
                trigger,
                args=[rule.name],
                id=rule.name,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=None,
            )
            if missed_tick(rule.schedule, last, now):
                log.info("%s: a check was missed while the daemon was down; running it now", rule.name)
                self._spawn(self._tick(rule.name, reason="missed"))
            messages = [self._paused_message(rule.name)]
            core.publish(messages, urgent=False)
        self.scheduler.start()
        self._spawn(self._watch())

    async def stop(self) -> None:
        self.scheduler.shutdown(wait=False)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()
        self.store.save()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _last_run(self, rule: str) -> datetime | None:
        at = self.store.last_run.get(rule)
        return datetime.fromtimestamp(at).astimezone() if at is not None else None

    # -- ticks, checks and snapshots ----------------------------------------------------

    async def _tick(self, rule_name: str, reason: str = "schedule") -> None:
        """One scheduled check: snapshot, then a background job."""
        rule = self.rules[rule_name]
        assert rule.schedule is not None
        if self.store.paused.get(rule_name):
            log.debug("%s: paused; tick skipped", rule_name)
            return
        now = datetime.now().astimezone()
        if not within_hours(now, rule.schedule.active_hours):
            log.debug("%s: outside active hours %s", rule_name, rule.schedule.active_hours)
            return
        log.debug("%s: %s tick", rule_name, reason)
        self._confirm_rounds.pop(rule_name, None)
        self.store.last_run[rule_name] = time.time()
        self.store.save()
        await self._preload(rule)
        await self._snapshot_job(rule, interactive=False, source=f"schedule:{rule_name}")

    async def _preload(self, rule: RuleBase) -> None:
        """Ask Ollama to load the model before the check needs it (a chat with no messages)."""
        try:
            await self.core.preload(rule)
        except BackendError as exc:
            log.info("%s: preloading %s failed: %s", rule.name, rule.model, exc)

    async def _snapshot_job(self, rule: RuleBase, *, interactive: bool, source: str) -> None:
        assert rule.snapshot is not None
        try:
            image = await self.snapshots.take(rule.snapshot)
        except SnapshotError as exc:
            now = time.time()
            log.warning("%s: %s", rule.name, exc)
            shown = redact_url(rule.snapshot.url) if rule.snapshot.url else rule.snapshot.mqtt_request
            summary = {"source": source, "snapshot": shown}
            self.core.publish(
                failure_messages(self.core.topics, rule.name, new_job_id(now), str(exc), summary, now)
            )
            return
        self.core.submit(
            Submission(
                rule=rule.name,
                source=source,
                parsed=JobInput(kind="image", image=image),
                interactive=interactive,
            )
        )

    def _on_check(self, message: Inbound) -> None:
        rule_name = self.core.topics.rule_of(message.topic, "check") or ""
        rule = self.rules.get(rule_name)
        if rule is None or rule.snapshot is None:
            now = time.time()
            why = "unknown rule" if rule is None else "the rule has no snapshot source"
            self.core.publish(
                failure_messages(
                    self.core.topics,
                    rule_name,
                    new_job_id(now),
                    f"cannot check {rule_name!r}: {why}",
                    {"source": f"mqtt:{message.topic}"},
                    now,
                )
            )
            return
        self._spawn(self._snapshot_job(rule, interactive=True, source=f"check:{rule_name}"))

    def _on_paused(self, message: Inbound) -> None:
        rule_name = self.core.topics.rule_of(message.topic, "paused/set") or ""
        value = message.payload.decode(errors="replace").strip().upper()
        if rule_name not in self.rules or value not in ("ON", "OFF"):
            log.warning("ignoring %r on %s (expected ON or OFF for a known rule)", value, message.topic)
            return
        self.store.paused[rule_name] = value == "ON"
        self.store.save()
        log.info("%s: schedule %s", rule_name, "paused" if value == "ON" else "resumed")
        self.core.publish([self._paused_message(rule_name)])

    def _paused_message(self, rule_name: str) -> OutboxMessage:
        value = b"ON" if self.store.paused.get(rule_name) else b"OFF"
        return OutboxMessage(topic=self.core.topics.paused(rule_name), payload=value, retain=True)

    async def _watch(self) -> None:
        """Reschedule when the wall clock jumps."""
        wall, mono = time.time(), time.monotonic()
        while True:
            await asyncio.sleep(CLOCK_WATCH_EVERY)
            wall_now, mono_now = time.time(), time.monotonic()
            if clock_jumped(wall, mono, wall_now, mono_now):
                log.warning(
                    "the clock jumped by %.0fs; rescheduling checks", (wall_now - wall) - (mono_now - mono)
                )
                for job in self.scheduler.get_jobs():
                    job.reschedule(job.trigger)
            wall, mono = wall_now, mono_now

    # -- the queue -----------------------------------------------------------------------

    def _traits(self, job_id: str) -> JobTraits:
        job = self.core.job(job_id)
        rule = self.rules.get(job.rule) if job is not None else None
        if job is None or rule is None:
            return JobTraits()
        interactive = job.priority >= INTERACTIVE_BOOST // 2
        coalesce = f"{job.rule}|{job.source}" if rule_kind(rule) == "state" and not interactive else None
        return JobTraits(model=rule.model, coalesce=coalesce)

    def _superseded(self, old_id: str, new_id: str) -> None:
        job = self.core.job(old_id)
        if job is None:
            return
        if job.rule in self.rules:
            self.core.rule_stats(job.rule).superseded += 1
        now = time.time()
        messages = [
            event(
                self.core.topics,
                "job_skipped",
                old_id,
                job.rule,
                now,
                reason="superseded",
                superseded_by=new_id,
            )
        ]
        self.core.finish_superseded(old_id, new_id, messages)

    # -- around the model ----------------------------------------------------------------

    def before_model(self, job: Job, rule: RuleBase, image: PreparedImage | None) -> str | None:
        if image is None or (rule.change is None and rule_kind(rule) != "state"):
            return None
        stats = self.core.rule_stats(rule.name)
        stats.checks += 1
        key = state_key(job)
        current = region_hash(image.data)
        self._hashes[job.id] = (current, job.image)
        if rule.change is None:
            return None
        decision = decide(
            current,
            self.store.judged.get(key),
            time.time(),
            rule.change,
            blob=job.image,
            confirming=self.store.tracker(key).waiting,
            forced=job.priority >= INTERACTIVE_BOOST // 2,
        )
        if decision.stale:
            log.warning("%s: the camera sent the same image since %s", rule.name, key)
            self.core.publish(
                [event(self.core.topics, "stale_image", job.id, rule.name, time.time(), source=job.source)],
                urgent=False,
            )
        if decision.run:
            return None
        self._hashes.pop(job.id, None)
        stats.unchanged += 1
        last = self.store.last_result.get(key)
        if rule.change.republish and last is not None:
            topic = self.core.topics.result(rule.name)
            self.core.publish([OutboxMessage(topic=topic, payload=last.encode(), retain=rule.outputs.retain)])
        return f"unchanged (distance {decision.distance})"

    def owns_state(self, rule: RuleBase) -> bool:
        return rule_kind(rule) == "state"

    def after_done(
        self, job: Job, rule: RuleBase, result: dict[str, Any], state: str | None, image: PreparedImage | None
    ) -> list[OutboxMessage]:
        key = state_key(job)
        seen = self._hashes.pop(job.id, None)
        if seen is not None:
            self.store.judged[key] = Judged(hash=seen[0], at=time.time(), blob=seen[1])
        if rule.change is not None and rule.change.republish:
            self.store.last_result[key] = dumps(result).decode()
        if rule_kind(rule) != "state":
            if seen is not None:
                self.store.save()
            return []
        confidence = result.get("confidence")
        step = observe(
            self.store.tracker(key),
            state,
            float(confidence) if isinstance(confidence, int | float) else None,
            hysteresis=rule.hysteresis,
            recheck_below=rule.recheck_below,
        )
        self.store.save()
        messages: list[OutboxMessage] = []
        if step.kind == "changed" and step.new is not None:
            topics = self.core.topics
            if rule.outputs.state:
                messages.append(
                    OutboxMessage(topic=topics.rule_state(rule.name), payload=step.new.encode(), retain=True)
                )
            messages.append(
                event(topics, "changed", job.id, rule.name, time.time(), old=step.old, new=step.new)
            )
            log.info("%s: state %s -> %s (job %s)", rule.name, step.old, step.new, job.id)
        elif step.kind in ("pending", "recheck") and job.source.startswith(SNAPSHOT_SOURCES):
            self._confirm(rule)
        return messages

    def _confirm(self, rule: RuleBase) -> None:
        """Look again at once rather than a full period later, a bounded number of times."""
        rounds = self._confirm_rounds.get(rule.name, 0)
        if rule.snapshot is None or rounds > rule.hysteresis:
            return
        self._confirm_rounds[rule.name] = rounds + 1
        self._spawn(self._snapshot_job(rule, interactive=False, source=f"schedule:{rule.name}"))
