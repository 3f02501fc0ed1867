"""Todo matching without the model: candidate recall, prompt size, retrieval time.

The labelled set is tests/support/todo_data/: tasks.txt (64 tasks, each with the notes that mean it)
and new_notes.txt (notes that should create a task). Prompt tokens are estimated (1 token per
4 ASCII characters, 1 per other character, about what Qwen's tokenizer does for Japanese),
the same way for both prompts, so their ratio is what counts.
"""

import random
import statistics
import time
from typing import Any

import numpy as np

from bridge.config.handler_rules import TodoMatchRule
from bridge.todo.retrieval import CandidateIndex
from handlers.base import PromptInput
from handlers.todo_match import TodoMatchHandler
from tests.support.todo_labels import K, evaluate, load

_JA = ["台所", "玄関", "子供", "会社", "庭", "車", "実家", "冷蔵庫", "ベランダ", "寝室", "倉庫", "自転車"]
_JA_DO = ["の片付け", "の修理", "の点検", "を掃除", "の整理", "の準備", "の見積もり", "の手続き"]
_EN = ["garage", "attic", "basement", "kids room", "office", "garden shed", "balcony", "pantry", "boat"]
_EN_DO = ["tidy up", "inspect", "repaint", "organize", "measure", "insure", "declutter", "repair"]


def distractors(count: int, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Plausible other tasks, to grow the list to `count` without adding right answers."""
    rng = random.Random(seed)
    out: dict[str, dict[str, Any]] = {}
    while len(out) < count:
        n = len(out)
        if n % 2:
            title = f"{rng.choice(_JA)}{rng.choice(_JA_DO)} {n}"
        else:
            title = f"{rng.choice(_EN_DO).capitalize()} the {rng.choice(_EN)} #{n}"
        out[f"x{n}"] = {
            "uid": f"x{n}",
            "title": title,
            "genre": "other",
            "status": "needs_action",
            "due": None,
        }
    return out


def tokens(text: str) -> int:
    ascii_chars = sum(1 for ch in text if ch.isascii())
    return (ascii_chars + 3) // 4 + (len(text) - ascii_chars)


def prompt_tokens(handler: TodoMatchHandler, note: str, candidates: list[dict[str, Any]]) -> int:
    fields = {"candidates": candidates, "today": "2026-11-29"}
    messages = handler.messages(PromptInput(text=note, fields=fields))
    return sum(tokens(m["content"]) for m in messages)


def bench_todo(quick: bool = False) -> dict[str, Any]:
    tasks, notes = load()
    rule = TodoMatchRule(
        name="todo_note", handler="todo_match", model="m", prompt="Which task does this note mean?"
    )
    handler = TodoMatchHandler(rule)
    out: dict[str, Any] = {
        "notes": len(notes),
        "match_notes": sum(1 for _, k in notes if k),
        "create_notes": sum(1 for _, k in notes if k is None),
        "labelled_tasks": len(tasks),
    }
    out["at_64"] = evaluate(tasks, notes)
    big = {**tasks, **distractors(1000 - len(tasks))}
    out["at_1000"] = evaluate(big, notes)
    sizes: dict[str, Any] = {}
    note = "ぎゅうにゅう買っといて"
    for size in (10, 100, 1000):
        listed = dict(list(big.items())[:size])  # the labelled tasks first, then others
        index = CandidateIndex((key, t["title"]) for key, t in listed.items())
        shown = [listed[c.uid] for c in index.top(note, K)]
        ours = prompt_tokens(handler, note, shown)
        naive = prompt_tokens(handler, note, list(listed.values()))
        sizes[str(size)] = {"candidates": ours, "naive": naive, "ratio": round(ours / naive, 3)}
    out["prompt_tokens"] = sizes
    out["embed_rank_ms_median"] = embed_rank_ms(len(big))
    return out


def embed_rank_ms(tasks: int, dim: int = 1024, repeat: int = 200) -> dict[str, Any]:
    """The bridge's share of semantic ranking (todo.embed_model): one matrix product and sort
    over `tasks` vectors. The embed call to Ollama for the note comes on top (not measured:
    no model weights here)."""
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((tasks, dim)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    times = []
    for _ in range(repeat):
        query = rng.standard_normal(dim).astype(np.float32)
        started = time.perf_counter()
        np.argsort(-(matrix @ query), kind="stable")[:K]
        times.append((time.perf_counter() - started) * 1000)
    return {"tasks": tasks, "dim": dim, "ms": round(statistics.median(times), 3)}
