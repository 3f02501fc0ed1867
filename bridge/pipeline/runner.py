"""Running one job: its input, the model call, the answer, and what is published."""

import asyncio
import gc
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from bridge.config.rules import RuleBase
from bridge.config.settings import LimitsSettings, Settings, rule_backends
from bridge.errors import AnswerError, BackendError, BackendUnavailable, InputError
from bridge.pipeline import results
from bridge.pipeline.backend_pool import BackendPool, NoBackend
from bridge.pipeline.hooks import JobHooks
from bridge.pipeline.images import ImageError, ImageSpec, PreparedImage, prepare_image
from bridge.pipeline.journal import Job, JobState, Journal
from bridge.pipeline.jsontext import dumps
from bridge.pipeline.ollama_backend import LlmReply
from bridge.pipeline.outbox import Outbox
from bridge.pipeline.prefetch import Prefetcher
from bridge.pipeline.queue import JobQueue
from bridge.pipeline.results import done_messages, event, failure_messages, input_summary, iso
from bridge.pipeline.topics import Topics
from handlers import Answer, Handler, PromptInput, handler_for

log = logging.getLogger(__name__)


@dataclass
class RuleStats:
    """Counters per rule, for bridge/info and the benchmarks."""

    done: int = 0
    failed: int = 0
    model_calls: int = 0
    model_ms: float = 0.0
    last_model_ms: float | None = None
    checks: int = 0  # snapshots checked (scheduled, /check, or a state rule's input)
    unchanged: int = 0  # checks skipped because the picture had not changed
    superseded: int = 0  # waiting snapshots replaced by a newer one
    skipped: Counter[str] = field(default_factory=Counter)  # by reason: paused, unchanged, …

    def as_dict(self) -> dict[str, Any]:
        mean = self.model_ms / self.model_calls if self.model_calls else None
        return {
            "done": self.done,
            "failed": self.failed,
            "model_calls": self.model_calls,
            "mean_model_ms": round(mean, 1) if mean is not None else None,
            "last_model_ms": round(self.last_model_ms, 1) if self.last_model_ms is not None else None,
            "checks": self.checks,
            "unchanged": self.unchanged,
            "superseded": self.superseded,
        }


class _Skipped(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Outcome:
    """What asking the model produced."""

    answer: Answer
    replies: list[LlmReply] = field(default_factory=list)
    image: PreparedImage | None = None
    backend: str | None = None  # the name of the backend that gave the last answer
    calls: list[dict[str, Any]] = field(default_factory=list)  # what was sent and answered, per call


class Runner:
    """Runs jobs from the journal against the backend; safe to call from several workers."""

    def __init__(
        self,
        journal: Journal,
        pool: BackendPool,
        outbox: Outbox,
        queue: JobQueue,
        rules: Mapping[str, RuleBase],
        topics: Topics,
        settings: Settings,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._journal = journal
        self._pool = pool
        self._backends = settings.backend_settings()
        self._outbox = outbox
        self._rules = rules
        self._queue = queue
        self._settings = settings
        self._topics = topics
        self._handlers: dict[str, Handler[Any]] = {name: handler_for(rule) for name, rule in rules.items()}
        self._clock = clock
        self.stats: dict[str, RuleStats] = {name: RuleStats() for name in rules}
        self.running: set[str] = set()
        self.prefetch = Prefetcher(journal, queue, settings, self._fail, self.running, http)
        self.extensions: Sequence[JobHooks] = ()
        self.observers: list[Callable[[str, dict[str, Any]], None]] = []  # rule, result of each done job
        self._settled = False  # start-up's objects moved out of the collector's way (first job)

    def replace_rule(self, rule: RuleBase) -> None:
        """Use a changed rule (same name) from the next job on."""
        self._handlers[rule.name] = handler_for(rule)

    async def close(self) -> None:
        """Stop the image_url fetches under way (their jobs stay queued)."""
        await self.prefetch.close()

    async def run(self, job_id: str) -> None:
        """Run one job to an outcome: done, failed, dead, or back in the queue (or, for a job
        whose image_url is not fetched yet, start that fetch and return at once)."""
        if not self._settled:
            self._settled = True
            settle_start_up()
        job = self.prefetch.start(job_id)
        if job is None:
            return
        rule = self._rules.get(job.rule)
        if rule is None:
            self._fail(job, f"rule {job.rule!r} is no longer in the configuration")
            return
        max_attempts = self._settings.journal.max_attempts
        if job.attempts > max_attempts:
            last = f"; last error: {job.error}" if job.error else " (the daemon stopped while running it)"
            self._fail(job, f"gave up after {max_attempts} attempts{last}", state="dead")
            return
        self.running.add(job_id)
        self._outbox.add([event(self._topics, "job_started", job.id, job.rule, self._clock())], urgent=False)
        calls: list[dict[str, Any]] = []
        try:
            outcome = await self._ask(job, rule, calls)
        except asyncio.CancelledError:
            # Stopping: the job goes back to the queue and this run does not count.
            self._journal.requeue(job.id, not_before=0, error=job.error, refund=True)
            raise
        except _Skipped as skip:
            self._skip(job, skip.reason)
        except NoBackend as exc:
            self._hold(job, exc)
        except BackendUnavailable as exc:
            if exc.job_fault:
                self._retry_or_give_up(job, str(exc))
            else:
                self._retry_later(job, str(exc))
        except (InputError, ImageError, BackendError, AnswerError) as exc:
            self._fail(job, str(exc), calls=calls)
        except Exception as exc:  # a bug must not stop the daemon; the job is reported
            log.exception("%s: job %s failed unexpectedly", job.rule, job.id)
            self._fail(job, f"internal error: {type(exc).__name__}: {exc}")
        else:
            self._finish(job, rule, outcome)
        finally:
            self.running.discard(job_id)

    async def _ask(self, job: Job, rule: RuleBase, calls: list[dict[str, Any]]) -> Outcome:
        image = await self._image(job, rule)
        prompt = PromptInput(
            text=job.input.get("text"),
            image=image.data if image else None,
            fields=job.input.get("fields", {}),
        )
        stats = self.stats[rule.name]

        def count(reply: LlmReply) -> None:
            stats.model_calls += 1
            stats.model_ms += reply.wall_ms
            stats.last_model_ms = reply.wall_ms

        for extension in self.extensions:
            reason = extension.before_model(job, rule, image)
            if reason:
                raise _Skipped(reason)
        for extension in self.extensions:
            prompt = await extension.prepare(job, rule, prompt)
        backends = rule_backends(rule, self._backends, image=prompt.image is not None)
        outcome = await ask_model(
            self._pool,
            self._handlers[rule.name],
            rule,
            prompt,
            on_reply=count,
            calls=calls,
            backends=backends,
        )
        outcome.image = image
        for extension in self.extensions:
            outcome.answer = await extension.after_answer(job, rule, prompt, outcome.answer)
        return outcome

    async def _image(self, job: Job, rule: RuleBase) -> PreparedImage | None:
        limits = self._settings.limits
        if job.image is not None:
            data = self._journal.get_blob(job.image)
        elif job.input.get("image_url"):
            data = await self.prefetch.fetch(job)  # normally fetched before the slot
        else:
            return None
        # Decoding and resizing take tens of milliseconds: off the event loop.
        return await asyncio.to_thread(prepare_image, data, image_spec(rule, limits))

    def _finish(self, job: Job, rule: RuleBase, outcome: Outcome) -> None:
        now = self._clock()
        started = job.started or now
        replies = outcome.replies
        result: dict[str, Any] = {
            "job_id": job.id,
            "rule": rule.name,
            "source": job.source,
            **outcome.answer.fields,
            "model": replies[-1].model,
            "backend": outcome.backend,
            "timings": {
                "queued": round((started - job.created) * 1000, 1),
                "llm": round(sum(r.wall_ms for r in replies), 1),
                "load": round(sum(r.load_ms for r in replies), 1),
                "prompt_eval": round(sum(r.prompt_ms for r in replies), 1),
                "eval": round(sum(r.eval_ms for r in replies), 1),
                "total": round((now - job.created) * 1000, 1),
            },
            "tokens": {
                "prompt": sum(r.prompt_tokens for r in replies),
                "eval": sum(r.eval_tokens for r in replies),
            },
            "ts": iso(now),
        }
        if job.input.get("id") is not None:
            result["id"] = job.input["id"]
        if outcome.image is not None:
            result["image"] = {"width": outcome.image.width, "height": outcome.image.height}
        self.stats[rule.name].done += 1
        for observe in self.observers:
            observe(rule.name, result)
        # An extension that tracks the rule's confirmed state publishes the state topic itself.
        owned = any(extension.owns_state(rule) for extension in self.extensions)
        state = None if owned else outcome.answer.state
        payload = dumps(result)  # once: published and journaled alike
        messages = done_messages(self._topics, rule, job, payload, state, now)
        for extension in self.extensions:
            messages += extension.after_done(job, rule, result, outcome.answer.state, outcome.image)
        detail = {"calls": outcome.calls}
        self._journal.finish(job.id, "done", result=payload, messages=messages, detail=detail)
        self._outbox.notify()
        if log.isEnabledFor(logging.INFO):
            log.info("%s", results.decision_line(result, outcome.answer.state))

    def _skip(self, job: Job, reason: str) -> None:
        now = self._clock()
        log.debug("%s: job %s skipped: %s", job.rule, job.id, reason)
        if job.rule in self.stats:
            self.stats[job.rule].skipped[reason.split(" ", 1)[0]] += 1  # "unchanged (distance 2)"
        messages = [event(self._topics, "job_skipped", job.id, job.rule, now, reason=reason)]
        self._journal.finish(job.id, "skipped", error=reason, messages=messages)
        self._outbox.notify()

    def _hold(self, job: Job, waiting: NoBackend) -> None:
        """Every backend of the job is away: back to the journal as it was, until one returns."""
        log.debug("%s: job %s held: %s", job.rule, job.id, waiting)
        self._journal.requeue(job.id, not_before=0, error=job.error, refund=True)
        self._pool.hold(waiting.names, lambda: self._journal.after_commit(lambda: self._requeued(job, 0)))

    def _retry_later(self, job: Job, error: str) -> None:
        """A fault of the server, not of the job (busy): again after a pause, attempt refunded."""
        now = self._clock()
        delay = self._settings.journal.retry_delay
        log.info("%s: job %s: %s; again in %.0fs (no attempt spent)", job.rule, job.id, error, delay)
        self._journal.requeue(job.id, not_before=now + delay, error=error, refund=True)
        self._journal.after_commit(lambda: self._requeued(job, now + delay))

    def _requeued(self, job: Job, not_before: float) -> None:
        self._queue.push(job.id, priority=job.priority, created=job.created, not_before=not_before)

    def _retry_or_give_up(self, job: Job, error: str) -> None:
        attempts, limit = job.attempts, self._settings.journal.max_attempts
        if attempts >= limit:
            self._fail(job, f"{error} (gave up after {attempts} attempts)", state="dead")
            return
        delay = self._settings.journal.retry_delay * 2 ** (attempts - 1)
        now = self._clock()
        log.warning("%s: job %s: %s; will retry in %.0fs", job.rule, job.id, error, delay)
        self._journal.requeue(job.id, not_before=now + delay, error=error)
        self._outbox.add(
            failure_messages(self._topics, job.rule, job.id, error, input_summary(job), now, retry_in=delay)
        )
        self._journal.after_commit(lambda: self._requeued(job, now + delay))

    def _fail(
        self, job: Job, error: str, *, state: str = "failed", calls: list[dict[str, Any]] | None = None
    ) -> None:
        now = self._clock()
        log.warning("%s: job %s %s: %s", job.rule, job.id, state, error)
        if job.rule in self.stats:
            self.stats[job.rule].failed += 1
        messages = failure_messages(self._topics, job.rule, job.id, error, input_summary(job), now, job=job)
        for extension in self.extensions:
            messages += extension.after_failed(job, error)
        final: JobState = "dead" if state == "dead" else "failed"
        detail = {"calls": calls} if calls else None
        self._journal.finish(job.id, final, error=error, messages=messages, detail=detail)
        self._outbox.notify()


def settle_start_up() -> None:
    """Keep what start-up built (most of the heap) out of the collector's full passes: each
    walked all of it, holding a job 65 to 165 ms on a busy two-core machine. Once, at job one."""
    gc.freeze()


def image_spec(rule: RuleBase, limits: LimitsSettings) -> ImageSpec:
    """How the rule wants its images prepared."""
    return ImageSpec(
        crop=rule.image.crop,
        max_side=rule.image.max_side,
        quality=rule.image.quality,
        max_pixels=limits.max_image_pixels,
        max_decode_bytes=limits.max_decode_memory,
    )


async def ask_model(
    pool: BackendPool,
    handler: Handler[Any],
    rule: RuleBase,
    prompt: PromptInput,
    *,
    backends: Sequence[str],
    on_reply: Callable[[LlmReply], None] | None = None,
    calls: list[dict[str, Any]] | None = None,
) -> Outcome:
    """Ask the rule's question; an answer that does not fit is asked again once, more strictly.

    `calls` (also filled when the job fails) gets each call's messages, schema and raw answer."""
    problem = handler.check_input(prompt)
    if problem:
        raise InputError(problem)
    outcome = Outcome(answer=Answer({}, None), calls=[] if calls is None else calls)
    correction: str | None = None
    for attempt in (1, 2):
        if not backends:
            raise InputError(
                "no backend may take this job: it has an image and the rule's backends are all "
                "remote (allow_remote: true in the rule lets images leave the house)"
            )
        messages = handler.messages(prompt, correction=correction)
        call: dict[str, Any] = {"messages": _without_images(messages), "schema": handler.schema()}
        outcome.calls.append(call)
        outcome.backend, reply = await pool.chat(
            backends,
            rule.model_for,
            messages=messages,
            schema=handler.schema(),
            options=rule.options,
            keep_alive=rule.keep_alive,
            deadline=rule.timeout,
        )
        outcome.replies.append(reply)
        call.update(answer=reply.content[:20_000], model=reply.model, ms=round(reply.wall_ms, 1))
        if on_reply is not None:
            on_reply(reply)
        try:
            outcome.answer = handler.parse(reply.content)
            return outcome
        except AnswerError as exc:
            call["refused"] = str(exc)
            if attempt == 2:
                raise AnswerError(
                    f"the model's answer did not fit the schema, twice: {exc} "
                    f"(answer: {reply.content[:200]!r})"
                ) from None
            log.info("%s: answer refused (%s); asking once more", rule.name, exc)
            correction = str(exc)
    raise AssertionError("unreachable")


def _without_images(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat messages as the journal keeps them: each image as its size, not its bytes."""
    kept = []
    for message in messages:
        images = message.get("images")
        if images:
            message = {**message, "images": [f"<JPEG, {len(i):,} bytes>" for i in images]}
        kept.append(message)
    return kept
