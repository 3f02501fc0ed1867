"""The Todo extension: candidates into the prompt, the model's decision onto the list.

`prepare` finds the candidate tasks for a note and gives them to the `todo_match` prompt;
`after_answer` turns the answer into a change (decide.py) and makes it, remembering the
note so that it never changes anything twice; `after_done` publishes `<base>/todo/event`
and the retained `<base>/todo/list` in the job's own transaction.
"""

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from bridge.config.handler_rules import TodoMatchRule
from bridge.config.rules import RuleBase
from bridge.config.todo import TodoSettings
from bridge.errors import AnswerError
from bridge.extension import Core, Extension
from bridge.pipeline.images import PreparedImage
from bridge.pipeline.intake import Submission
from bridge.pipeline.journal import Job, OutboxMessage
from bridge.pipeline.jsontext import dumps
from bridge.pipeline.mqtt import Inbound
from bridge.pipeline.results import iso
from bridge.todo.api import todo_router
from bridge.todo.candidates import Candidates, ha_task, prompt_fields
from bridge.todo.decide import Plan, plan_change
from bridge.todo.embeddings import EmbeddingRanker
from bridge.todo.ha_backend import HomeAssistantTodo
from bridge.todo.normalize import fold
from bridge.todo.store import Change, Task, TodoError, TodoStore, public
from handlers.base import Answer, PromptInput

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    """What a running note job carries from prepare to after_done."""

    candidates: dict[str, dict[str, Any]]
    messages: list[OutboxMessage] | None = None


def note_key(job: Job) -> str:
    """Notes with an `id` are the same note whenever they come; others are their job."""
    ident = job.input.get("id")
    return f"{job.rule}:id:{ident}" if ident is not None else f"{job.rule}:job:{job.id}"


class TodoExtension(Extension):
    """Matches notes to tasks for every `todo_match` rule, on the built-in list or Home Assistant."""

    name = "todo"

    def __init__(self, settings: TodoSettings, rules: Iterable[RuleBase]) -> None:
        self.settings = settings
        self.rules = {r.name: r for r in rules if isinstance(r, TodoMatchRule)}
        self.genres = list(dict.fromkeys(g for r in self.rules.values() for g in r.genres))
        self._pending: dict[str, _Pending] = {}
        self._router: Any = None

    async def start(self, core: Core) -> None:
        self.core = core
        self.store = TodoStore(core.data_dir / "todo.sqlite3", genres=self.genres)
        ha = self.settings.homeassistant
        self.ha = HomeAssistantTodo(ha) if self.settings.backend == "homeassistant" and ha else None
        model = self.settings.embed_model
        self.embedder = EmbeddingRanker(core.settings.ollama.url, model) if model else None
        self.candidates = Candidates(self.store, ha=self.ha, embedder=self.embedder)
        # The index reads every title, and pykakasi its dictionaries when notes are taken:
        # now, off the loop, so the first note is as quick as the next.
        await asyncio.to_thread(self.candidates.load, warm=bool(self.rules))
        self.store.on_change(self.candidates.reindex)
        topics = core.topics
        self.event_topic, self.list_topic = topics.todo_event, topics.todo_list
        self.confirm_topic, self.note_topic = topics.todo_confirm, topics.todo_note
        self._router = todo_router(self.store, lambda change: core.publish(self.change_messages(change)))
        if self.rules:
            # The note topic sits under the base topic, where rules may not listen: routed here.
            core.route(self.note_topic, self._on_note)
        if self.ha is None:
            core.publish([self.list_message()], urgent=False)

    def input_topics(self, rule: RuleBase) -> list[str]:
        return [self.core.topics.todo_note] if self.rules and rule.name == min(self.rules) else []

    def routers(self) -> list[Any]:
        return [self._router] if self._router is not None else []

    def _on_note(self, message: Inbound) -> None:
        """A note on <base>/todo/note becomes a job of the first todo_match rule (durable before ack)."""
        reply = None
        if message.response_topic:
            data = message.correlation_data.hex() if message.correlation_data else None
            reply = {"topic": message.response_topic, "correlation_data": data}
        self.core.submit(
            Submission(
                rule=min(self.rules),
                source=f"mqtt:{message.topic}",
                payload=message.payload,
                reply=reply,
                retained=message.retain,
            )
        )

    async def stop(self) -> None:
        if self.ha is not None:
            await self.ha.close()
        if self.embedder is not None:
            await self.embedder.close()
        self.store.close()

    # -- the note's way through a job --------------------------------------------------------

    def before_model(self, job: Job, rule: RuleBase, image: PreparedImage | None) -> str | None:
        if rule.name in self.rules and self.store.note_outcome(note_key(job)) is not None:
            return "this note was already applied to the Todo list"
        return None

    async def prepare(self, job: Job, rule: RuleBase, prompt: PromptInput) -> PromptInput:
        if not isinstance(rule, TodoMatchRule):
            return prompt
        found = await self.candidates.find(prompt.text or "", rule.candidates)
        self._pending[job.id] = _Pending({t.uid: t.as_dict() for t in found})
        return replace(prompt, fields=prompt_fields(prompt.fields, found))

    async def after_answer(self, job: Job, rule: RuleBase, prompt: PromptInput, answer: Answer) -> Answer:
        if not isinstance(rule, TodoMatchRule):
            return answer
        pending = self._pending.get(job.id)
        if pending is None:
            raise AnswerError("the Todo candidates of this job were lost; the note is not applied")
        plan = plan_change(
            answer.fields,
            pending.candidates,
            confirm_below=rule.confirm_below,
            low_confidence=rule.low_confidence,
            confirm=self.settings.confirm,
        )
        source = f"note:{job.source}"
        before = pending.candidates.get(plan.uid) if plan.uid else None
        twin = self._open_twin(plan) if plan.kind == "create" else None
        if twin is not None:
            # Another note created this very task while the model was thinking (parallel jobs).
            why = f"an open task titled {twin.title!r} exists already; updated it instead"
            plan, before = replace(plan, kind="update", uid=twin.uid, why=why), twin.as_dict()
        try:
            after, change_id = await self._apply(plan, job, source)
        except TodoError as exc:
            raise AnswerError(f"the Todo list refused the change: {exc}") from None
        before, after = (public(task) if task else None for task in (before, after))
        now = time.time()
        note = {"text": (prompt.text or "")[:500], "id": job.input.get("id")}
        if prompt.fields.get("source") is not None:
            note["source"] = prompt.fields["source"]
        body = {
            "action": plan.kind,
            "model_action": answer.fields["action"],
            "change_id": change_id,
            "uid": (after or before or {}).get("uid"),
            "before": before if plan.kind in ("update", "complete") else None,
            "after": after,
            "note": note,
            "confidence": answer.fields["confidence"],
            "reason": answer.fields["reason"],
            "job_id": job.id,
            "ts": iso(now),
        }
        if plan.why:
            body["why"] = plan.why
        if plan.kind != "none":
            task = after or before or {}
            log.info(
                "todo: %s %r (uid %s) from note %r, confidence %.2f%s",
                plan.kind, task.get("title", plan.title), body["uid"], (prompt.text or "")[:80],
                answer.fields["confidence"], f"; {plan.why}" if plan.why else "",
            )  # fmt: skip
        messages = []
        if plan.kind != "none":
            messages.append(OutboxMessage(topic=self.event_topic, payload=dumps(body)))
        if plan.kind == "confirm":
            proposal = {**body, "proposed": answer.fields["action"], "task": before}
            messages.append(OutboxMessage(topic=self.confirm_topic, payload=dumps(proposal)))
        if plan.kind in ("create", "update", "complete"):
            messages.append(await self._list_message())
        pending.messages = messages
        fields = {**answer.fields, "applied": plan.kind, "task": after, "change_id": change_id}
        if plan.why:
            fields["why"] = plan.why
        return Answer(fields=fields, state=plan.kind)

    def after_done(
        self, job: Job, rule: RuleBase, result: dict[str, Any], state: str | None, image: PreparedImage | None
    ) -> list[OutboxMessage]:
        pending = self._pending.pop(job.id, None)
        return (pending.messages or []) if pending else []

    def after_failed(self, job: Job, error: str) -> list[OutboxMessage]:
        if job.rule not in self.rules:
            return []
        self._pending.pop(job.id, None)
        body = {
            "action": "error",
            "error": error,
            "note": {"text": str(job.input.get("text") or "")[:200], "id": job.input.get("id")},
            "job_id": job.id,
            "ts": iso(time.time()),
        }
        return [OutboxMessage(topic=self.event_topic, payload=dumps(body))]

    # -- changing the list ----------------------------------------------------------------

    async def _apply(self, plan: Plan, job: Job, source: str) -> tuple[dict[str, Any] | None, int | None]:
        key = note_key(job)
        outcome = {"action": plan.kind, "job_id": job.id}
        if self.ha is not None:
            after = await self._apply_ha(plan)
            with self.store.transaction():
                self.store.remember_note(key, outcome)
            return after, None
        change: Change | None = None
        with self.store.transaction():
            if plan.kind == "create":
                change = self.store.create(
                    plan.title,
                    genre=plan.genre,
                    due=plan.due,
                    description=plan.description,
                    needs_confirmation=plan.needs_confirmation,
                    source=source,
                    note=key,
                )
            elif plan.kind == "update" and plan.uid:
                fields: dict[str, Any] = {"status": "needs_action"}
                if plan.due:
                    fields["due"] = plan.due
                change = self.store.update(plan.uid, source=source, note=key, **fields)
            elif plan.kind == "complete" and plan.uid:
                change = self.store.complete(plan.uid, source=source, note=key)
            self.store.remember_note(key, {**outcome, "change_id": change.id if change else None})
        return (change.after if change else None), (change.id if change else None)

    def _open_twin(self, plan: Plan) -> Task | None:
        """An open task of the built-in list with the same title (after folding), if any."""
        if self.ha is not None or plan.needs_confirmation:
            return None
        wanted = fold(plan.title)
        for task in self.store.tasks(status="needs_action", query=plan.title.strip()[:50]):
            if fold(task.title) == wanted:
                return task
        return None

    async def _apply_ha(self, plan: Plan) -> dict[str, Any] | None:
        assert self.ha is not None
        if plan.kind == "create":
            await self.ha.add(plan.title, due=plan.due, description=plan.description)
            return {"uid": None, "title": plan.title, "status": "needs_action", "due": plan.due}
        if plan.kind in ("update", "complete") and plan.uid:
            status = "completed" if plan.kind == "complete" else "needs_action"
            await self.ha.update(plan.uid, status=status, due=plan.due)
            return {"uid": plan.uid, "title": plan.title, "status": status, "due": plan.due}
        return None

    # -- what is published ------------------------------------------------------------------

    def list_message(self) -> OutboxMessage:
        """The retained list of open tasks (built-in list)."""
        tasks = self.store.tasks(status="needs_action", limit=self.settings.list_limit or None)
        return self._list_payload([t.as_dict() for t in tasks])

    async def _list_message(self) -> OutboxMessage:
        if self.ha is None:
            return self.list_message()
        items = [ha_task(i).as_dict() for i in await self.ha.items()]
        return self._list_payload([i for i in items if i["status"] == "needs_action"])

    def _list_payload(self, tasks: list[dict[str, Any]]) -> OutboxMessage:
        keep = ("uid", "title", "genre", "status", "due", "needs_confirmation")
        body = {
            "count": len(tasks),
            "items": [{k: t.get(k) for k in keep} for t in tasks],
            "ts": iso(time.time()),
        }
        return OutboxMessage(topic=self.list_topic, payload=dumps(body), retain=True)

    def change_messages(self, change: Change) -> list[OutboxMessage]:
        """Event and list for a change made through the REST API."""
        task = change.after or change.before or {}
        log.info("todo: %s %r (uid %s) through the REST API", change.action, task.get("title"), change.uid)
        body = {**public(change.as_dict()), "change_id": change.id}
        return [OutboxMessage(topic=self.event_topic, payload=dumps(body)), self.list_message()]
