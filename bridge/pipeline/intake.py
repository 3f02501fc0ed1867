"""Intake: turn an input into a durable job, or into a clear error, before acknowledging it."""

import dataclasses
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
from bridge.pipeline.fetch import NOT_ALLOWED
from bridge.pipeline.images import check_image_header
from bridge.pipeline.journal import FINAL_STATES, Job, Journal, OutboxMessage
from bridge.pipeline.outbox import Outbox
from bridge.pipeline.payloads import JobInput, accepts_problem, parse_payload, payload_hash, summarize
from bridge.pipeline.queue import JobQueue
from bridge.pipeline.replies import reply_problem
from bridge.pipeline.results import answer_messages, event, failure_messages
from bridge.pipeline.topics import Topics

log = logging.getLogger(__name__)

# Interactive work (a person pressed a button, a requester waits for a reply) goes ahead of
# background work of any rule priority.
INTERACTIVE_BOOST = 1000
# When the journal is over journal.max_size, pruning is tried at most this often.
SHRINK_EVERY = 60.0
# How old (seconds) the journal's size may be when deciding that there is room.
SIZE_AGE = 1.0


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
        self._shrunk_at = -SHRINK_EVERY
        # Jobs that duplicate requesters wait for (job id -> their replies); kept in the journal.
        self._waiting = journal.waiters()
        journal.on_every_commit(self._answer_waiters)

    def submit(self, sub: Submission, on_durable: Callable[[], None] | None = None) -> str | None:
        """Record the submission; `on_durable` runs once it is safe to acknowledge.

        Returns the new job's id, or None for a duplicate or a rejected input. Whatever goes
        wrong with one input (a hostile payload, a bug, a write the journal refuses) becomes
        that input's error: it never escapes to the caller and never stops the next input.
        """
        now = self._clock()
        job_id = new_job_id(now)
        accepted: str | None = None
        refusal = self._reply_refusal(sub)
        try:
            if refusal is not None:
                # Said on the rule's error topic; nothing at all goes to the refused topic.
                sub = dataclasses.replace(sub, reply=None)
                raise InputError(refusal)
            rule, parsed = self._validate(sub)
            accepted = self._accept(sub, rule, parsed, job_id, now)
        except InputError as exc:
            self._reject(sub, job_id, str(exc), now)
        except Exception as exc:
            log.exception("%s: input from %s could not be taken", sub.rule, sub.source)
            try:
                self._reject(sub, job_id, f"internal error: {type(exc).__name__}: {exc}", now)
            except Exception:
                log.exception("%s: not even the refusal could be journaled; input dropped", sub.rule)
        if on_durable is not None:
            self._journal.after_commit(on_durable, ack=True)
        return accepted

    def _reply_refusal(self, sub: Submission) -> str | None:
        topic = (sub.reply or {}).get("topic")
        if topic is None:
            return None
        inputs = (spec.mqtt for rule in self._rules.values() for spec in rule.inputs)
        problem = reply_problem(topic, self._settings, inputs)
        return f"the response topic {topic!r} is {problem}" if problem else None

    def _validate(self, sub: Submission) -> tuple[RuleBase, JobInput]:
        rule = self._rules.get(sub.rule)
        if rule is None:
            known = ", ".join(sorted(self._rules)) or "none"
            raise InputError(f"unknown rule {sub.rule!r}; known rules: {known}")
        limits = self._settings.limits
        parsed = sub.parsed
        if parsed is None:
            parsed = parse_payload(sub.payload or b"", max_bytes=limits.max_payload, max_text=limits.max_text)
        problem = accepts_problem(rule.accepted, has_image=parsed.has_image, has_text=parsed.text is not None)
        if problem:
            raise InputError(problem)
        if parsed.image_url is not None and not self._settings.image_url.allow:
            raise InputError(NOT_ALLOWED)  # off until config.yaml lists what may be fetched
        if parsed.image is not None:
            # Only an image whose header checks out is stored; the rest is decoded in a worker.
            check_image_header(parsed.image, max_bytes=limits.max_payload, max_pixels=limits.max_image_pixels)
        return rule, parsed

    def _check_room(self) -> None:
        """Refuse new work past limits.max_queued waiting jobs, journal.max_size bytes, or below
        journal.min_free bytes free on the journal's disk."""
        waiting, limit = len(self._queue), self._settings.limits.max_queued
        if waiting >= limit:
            raise InputError(
                f"{waiting:,} jobs are waiting, the limit (limits.max_queued) is {limit:,}; input refused"
            )
        floor = self._settings.journal.min_free
        if floor and self._journal.free_space(max_age=SIZE_AGE) < floor:
            free = self._journal.free_space()
            if free < floor:
                raise InputError(
                    f"the disk holding the journal ({self._journal.path.parent}) has {free:,} bytes free,"
                    f" below journal.min_free ({floor:,}); input refused until space is freed"
                )
        max_size = self._settings.journal.max_size
        # A reading up to SIZE_AGE old, plus what was written since, will do while under the
        # limit (no query per input); a refusal is decided on a fresh one.
        if self._journal.size(max_age=SIZE_AGE) <= max_size:
            return
        if time.monotonic() - self._shrunk_at >= SHRINK_EVERY:
            self._shrunk_at = time.monotonic()
            pruned = self._journal.prune(self._settings.journal.retention)
            dropped = self._journal.drop_finished_images(int(max_size * 0.9))
            log.warning(
                "the journal is over journal.max_size (%s bytes): pruned %d old job(s), dropped %d image(s)",
                f"{max_size:,}",
                pruned,
                dropped,
            )
        size = self._journal.size()
        if size > max_size:
            raise InputError(
                f"the journal holds {size:,} bytes, above journal.max_size ({max_size:,}); input refused"
                " until jobs finish and age out (journal.retention) or the limit is raised"
            )

    def _accept(
        self, sub: Submission, rule: RuleBase, parsed: JobInput, job_id: str, now: float
    ) -> str | None:
        # An input with an `id` is a duplicate by its id alone: its bytes are not compared.
        digest = payload_hash(sub.payload) if sub.payload is not None and parsed.id is None else None
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
            # A repeated request is answered; a redelivered one (same `id`, no one waiting) is not.
            reply = sub.reply if sub.reply and sub.reply.get("topic") else {}
            if reply or (sub.interactive and parsed.id is None):
                self._answer_duplicate(duplicate, reply)
            return None
        self._check_room()
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
        queued = event(self._topics, "job_queued", job_id, rule.name, now, source=sub.source)
        self._outbox.add([queued], urgent=False)  # telemetry: it goes with the next commit
        # The job may run before its row is committed (the journal's connection sees it): what
        # it publishes and the input's acknowledgement wait for a commit that holds both.
        self._queue.push(job_id, priority=priority, created=now)
        self.counts["queued"] += 1
        return job_id

    # -- a repeated interactive request gets the first one's answer ---------------------

    def _answer_duplicate(self, original: str, reply: dict[str, Any]) -> None:
        """Answer now when the original job is finished, else when it finishes."""
        job = self._journal.get(original)
        if job is not None and job.state in FINAL_STATES:
            self._outbox.add(self._answer(job, reply))
            return
        if not reply:
            return  # its result goes to the rule's result topic anyway when it finishes
        self._journal.add_waiter(original, reply)
        self._waiting.setdefault(original, []).append(reply)

    def _answer_waiters(self) -> None:
        """After each commit: answer the requesters whose job has finished."""
        if not self._waiting:
            return
        for job_id in list(self._waiting):
            job = self._journal.get(job_id)
            if job is not None and job.state not in FINAL_STATES:
                continue
            replies = self._waiting.pop(job_id)
            messages: list[OutboxMessage] = []
            if job is not None:
                for reply in replies:
                    messages += self._answer(job, reply)
            self._journal.remove_waiters(job_id, messages)
            self._outbox.notify()

    def _answer(self, job: Job, reply: dict[str, Any]) -> list[OutboxMessage]:
        return answer_messages(self._topics, self._rules.get(job.rule), job, reply, self._clock())

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
