"""Intake: turn an input into a durable job, or into a clear error, before acknowledging it."""

import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.config.rules import RuleBase
from bridge.config.settings import Settings
from bridge.errors import InputError
from bridge.pipeline.journal import Job, Journal
from bridge.pipeline.outbox import Outbox
from bridge.pipeline.payloads import JobInput, parse_payload, payload_hash, summarize
from bridge.pipeline.queue import JobQueue
from bridge.pipeline.results import event, failure_messages
from bridge.pipeline.topics import Topics

log = logging.getLogger(__name__)

# Interactive work (a person pressed a button, a requester waits for a reply) goes ahead of
# background work of any rule priority.
INTERACTIVE_BOOST = 1000


@dataclass(frozen=True)
class Submission:
    """An input for a rule, from any source. `payload` is raw bytes, or `parsed` is ready."""

    rule: str
    source: str
    payload: bytes | None = None
    parsed: JobInput | None = None
    reply: dict[str, Any] | None = None
    interactive: bool = False
    retained: bool = False


def new_job_id(now: float) -> str:
    """Sortable by time, unique without coordination."""
    return f"{int(now * 1000):011x}{secrets.token_hex(5)}"


class Intake:
    """Validates submissions, dedupes them and writes them to the journal."""

    def __init__(
        self,
        journal: Journal,
        queue: JobQueue,
        outbox: Outbox,
        rules: Mapping[str, RuleBase],
        topics: Topics,
        settings: Settings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._journal = journal
        self._queue = queue
        self._outbox = outbox
        self._rules = rules
        self._topics = topics
        self._settings = settings
        self._clock = clock
        self.counts = {"queued": 0, "rejected": 0, "duplicate": 0}
        self.duplicates: Counter[str] = Counter()  # per rule, for /metrics
        self.rejected: Counter[str] = Counter()  # per rule ("unknown" for a rule that does not exist)

    def submit(self, sub: Submission, on_durable: Callable[[], None] | None = None) -> str | None:
        """Record the submission; `on_durable` runs once it is safe to acknowledge.

        Returns the new job's id, or None for a duplicate or a rejected input.
        """
        now = self._clock()
        job_id = new_job_id(now)
        accepted: str | None = None
        try:
            rule, parsed = self._validate(sub)
        except InputError as exc:
            self._reject(sub, job_id, str(exc), now)
        else:
            accepted = self._accept(sub, rule, parsed, job_id, now)
        if on_durable is not None:
            self._journal.after_commit(on_durable)
        return accepted

    def _validate(self, sub: Submission) -> tuple[RuleBase, JobInput]:
        rule = self._rules.get(sub.rule)
        if rule is None:
            known = ", ".join(sorted(self._rules)) or "none"
            raise InputError(f"unknown rule {sub.rule!r}; known rules: {known}")
        if sub.parsed is not None:
            return rule, sub.parsed
        limits = self._settings.limits
        return rule, parse_payload(sub.payload or b"", max_bytes=limits.max_payload, max_text=limits.max_text)

    def _accept(
        self, sub: Submission, rule: RuleBase, parsed: JobInput, job_id: str, now: float
    ) -> str | None:
        digest = payload_hash(sub.payload) if sub.payload is not None else None
        window = float("inf") if sub.retained else self._settings.journal.dedupe_window
        duplicate = self._journal.find_duplicate(
            rule.name, dedupe_key=parsed.id, payload_hash=digest, window=window
        )
        if duplicate is not None:
            self.counts["duplicate"] += 1
            self.duplicates[rule.name] += 1
            log.info("%s: input from %s duplicates job %s; not run again", rule.name, sub.source, duplicate)
            self._outbox.add(
                [event(self._topics, "job_skipped", duplicate, rule.name, now, reason="duplicate")]
            )
            return None
        image = self._journal.put_blob(parsed.image) if parsed.image is not None else None
        data: dict[str, Any] = {"kind": parsed.kind, "fields": parsed.fields}
        if parsed.text is not None:
            data["text"] = parsed.text
        if parsed.image_url is not None:
            data["image_url"] = parsed.image_url
        if parsed.id is not None:
            data["id"] = parsed.id
        if sub.reply:
            data["reply"] = sub.reply
        priority = rule.priority + (INTERACTIVE_BOOST if sub.interactive or sub.reply else 0)
        job = Job(
            id=job_id,
            rule=rule.name,
            source=sub.source,
            state="queued",
            priority=priority,
            created=now,
            attempts=0,
            input=data,
            image=image,
            dedupe_key=parsed.id,
        )
        self._journal.add_job(job, payload_hash=digest)
        self._outbox.add([event(self._topics, "job_queued", job_id, rule.name, now, source=sub.source)])
        # The job may run while its commit reaches the disk: what it publishes waits for a
        # later commit, whose fsync covers this one.
        self._journal.after_commit(
            lambda: self._queue.push(job_id, priority=priority, created=now), durable=False
        )
        self.counts["queued"] += 1
        return job_id

    def _reject(self, sub: Submission, job_id: str, error: str, now: float) -> None:
        """A bad input is recorded as a failed job and reported; it is never silently dropped."""
        self.counts["rejected"] += 1
        self.rejected[sub.rule if sub.rule in self._rules else "unknown"] += 1
        summary = {"source": sub.source, **(summarize(sub.payload) if sub.payload is not None else {})}
        log.warning("%s: rejected input from %s: %s", sub.rule, sub.source, error)
        job = Job(
            id=job_id,
            rule=sub.rule,
            source=sub.source,
            state="failed",
            priority=0,
            created=now,
            attempts=0,
            input={"summary": summary, **({"reply": sub.reply} if sub.reply else {})},
            finished=now,
            error=error,
        )
        self._journal.add_job(job)
        self._outbox.add(failure_messages(self._topics, sub.rule, job_id, error, summary, now, job=job))
