"""The candidate tasks a note is matched against: the same for a job, `try` and `eval`.

The model never sees the whole list, only the `candidates` tasks most like the note: lexical
retrieval over the titles, fused with embeddings when `todo.embed_model` is set. The tasks come
from the built-in list, or from Home Assistant when `todo.backend` is `homeassistant`.
"""

import asyncio
import datetime
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bridge.config.handler_rules import TodoMatchRule
from bridge.config.rules import RuleBase
from bridge.config.settings import Config
from bridge.todo.embeddings import EmbeddingRanker
from bridge.todo.ha_backend import HomeAssistantTodo
from bridge.todo.normalize import warm_up
from bridge.todo.retrieval import CandidateIndex, fuse
from bridge.todo.store import Status, Task, TodoStore

PROMPT_KEYS = ("uid", "title", "genre", "status", "due")

# The fields a note's prompt gets: its own fields, with candidates and today's date.
NoteFields = Callable[[str | None, dict[str, Any]], Awaitable[dict[str, Any]]]


def ha_task(item: dict[str, Any]) -> Task:
    status: Status = "completed" if item.get("status") == "completed" else "needs_action"
    return Task(
        str(item["uid"]), str(item.get("summary", "")), None, status,
        item.get("due"), item.get("description"), False, 0.0, 0.0,
    )  # fmt: skip


class Candidates:
    """Finds the tasks a note most likely means, on the built-in list or Home Assistant's."""

    def __init__(
        self,
        store: TodoStore | None,
        *,
        ha: HomeAssistantTodo | None = None,
        embedder: EmbeddingRanker | None = None,
    ) -> None:
        self.store, self.ha, self.embedder = store, ha, embedder
        self.titles: dict[str, str] = {}
        self.index = CandidateIndex([])

    def load(self, *, warm: bool = True) -> None:
        """Read every title of the built-in list into the index (blocking: call it off the loop).
        pykakasi reads its dictionaries on first use, about half a second: `warm` does that now."""
        if warm:
            warm_up()
        if self.store is not None:
            self.titles = {t.uid: t.title for t in self.store.tasks()}
        self.index = CandidateIndex(self.titles.items())

    def reindex(self, before: Task | None, after: Task | None) -> None:
        """Keep the index current after a committed change of the built-in list."""
        if after is not None:
            self.index.add(after.uid, after.title)
            self.titles[after.uid] = after.title
        elif before is not None:
            self.index.remove(before.uid)
            self.titles.pop(before.uid, None)

    async def find(self, text: str, k: int) -> list[Task]:
        """The at most `k` tasks most like `text`, best first."""
        if self.ha is not None:
            tasks = {t.uid: t for t in map(ha_task, await self.ha.items())}
            titles = {uid: t.title for uid, t in tasks.items()}
            index = CandidateIndex(titles.items())
        else:
            tasks, titles, index = {}, self.titles, self.index
        ranked = [c.uid for c in index.top(text, k)]
        if self.embedder is not None:
            await self.embedder.sync(titles)
            ranked = fuse(ranked, await self.embedder.top(text, k), k=k)
        if self.ha is not None:
            return [tasks[uid] for uid in ranked]
        store = self.store
        return [t for uid in ranked if (t := store.get(uid))] if store is not None else []


def prompt_fields(fields: dict[str, Any], found: list[Task]) -> dict[str, Any]:
    """The prompt's fields: the note's own, with the candidates and today's date. Always
    overwritten: a note's own JSON must not smuggle in candidates."""
    listed = [{key: task.as_dict()[key] for key in PROMPT_KEYS} for task in found]
    return {**fields, "candidates": listed, "today": datetime.date.today().isoformat()}


@asynccontextmanager
async def trial_fields(config: Config, rule: RuleBase) -> AsyncIterator[NoteFields | None]:
    """For `try` and `eval`: a function that gives a note the candidates a job of `rule` would
    get now, read from the daemon's list (never changed), or None when `rule` takes no notes.
    Without a list yet (the daemon never ran here) a note gets no candidates."""
    if not isinstance(rule, TodoMatchRule):
        yield None
        return
    todo = config.settings.todo
    path = config.data_dir / "todo.sqlite3"
    ha = todo.homeassistant if todo.backend == "homeassistant" else None
    store = _open_list(path, rule) if ha is None else None
    model = todo.embed_model
    candidates = Candidates(
        store,
        ha=HomeAssistantTodo(ha) if ha is not None else None,
        embedder=EmbeddingRanker(config.settings.ollama.url, model) if model else None,
    )
    await asyncio.to_thread(candidates.load)

    async def fields(text: str | None, own: dict[str, Any]) -> dict[str, Any]:
        return prompt_fields(own, await candidates.find(text or "", rule.candidates))

    try:
        yield fields
    finally:
        if candidates.ha is not None:
            await candidates.ha.close()
        if candidates.embedder is not None:
            await candidates.embedder.close()
        if store is not None:
            store.close()


def _open_list(path: Path, rule: TodoMatchRule) -> TodoStore | None:
    return TodoStore(path, genres=list(rule.genres)) if path.exists() else None
