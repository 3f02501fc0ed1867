"""Todo pieces without a network: folding, retrieval, the store, the decision rules, the handler."""

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bridge.config.handler_rules import TodoMatchRule
from bridge.config.http import HttpSettings
from bridge.errors import AnswerError
from bridge.todo.decide import plan_change
from bridge.todo.normalize import contains, fold, forms
from bridge.todo.retrieval import CandidateIndex
from bridge.todo.store import TodoError, TodoNotSaved, TodoStore, public
from handlers.base import PromptInput
from handlers.todo_match import TodoMatchHandler
from tests.support.disk import files_cannot_grow

TASKS = {
    "milk": "牛乳を買う",
    "paper": "トイレットペーパー",
    "dentist": "歯医者の予約",
    "buy_milk": "Buy oat milk",
    "bill": "Pay electricity bill",
    "trash": "ゴミ出し",
    "tax": "確定申告",
    "cat": "猫のエサ",
}


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("ＭＩＬＫ!!", "milk"),
        ("ｷﾞｭｳﾆｭｳ", "ぎゅうにゅう"),
        ("ギュウニュウ", "ぎゅうにゅう"),
        ("牛乳、きれてた。", "牛乳 きれてた"),
    ],
)
def test_fold_width_case_kana_and_punctuation(text: str, folded: str) -> None:
    assert fold(text) == folded


def test_forms_read_kanji_as_kana_and_romaji() -> None:
    assert forms("牛乳") == ("牛乳", "ぎゅうにゅう", "gyunyu")


@pytest.mark.parametrize(
    ("note", "expected"),
    [
        ("ぎゅうにゅう買っといて", "milk"),
        ("牛乳きれてた", "milk"),
        ("gyuunyuu", "milk"),
        ("Milk!!", "buy_milk"),
        ("mlik", "buy_milk"),
        ("といれっとぺーぱー切れた", "paper"),
        ("ﾄｲﾚｯﾄﾍﾟｰﾊﾟｰ", "paper"),
        ("はいしゃ", "dentist"),
        ("electric bill", "bill"),
        ("ごみ", "trash"),
        ("ねこのえさ", "cat"),
    ],
)
def test_retrieval_finds_the_task_among_the_first_three(note: str, expected: str) -> None:
    index = CandidateIndex(TASKS.items())
    assert expected in [c.uid for c in index.top(note, 3)]


def test_retrieval_follows_changes_and_limits_k() -> None:
    index = CandidateIndex(TASKS.items())
    assert len(index.top("a", 8)) <= 8
    index.remove("milk")
    assert "milk" not in [c.uid for c in index.top("牛乳", 8)]
    index.add("milk2", "牛乳")
    assert index.top("牛乳", 1)[0].uid == "milk2"
    assert index.top("zzzz qqqq", 8) == []


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("ぎゅうにゅう", {"milk"}),  # the reading of 牛乳
        ("ギュウニュウ", {"milk"}),
        ("gyuunyuu", {"milk"}),  # romaji, long vowels as typed
        ("牛乳", {"milk"}),
        ("MILK", {"buy_milk"}),
        ("ｍｉｌｋ", {"buy_milk"}),  # full width
        ("electricity", {"bill"}),
        ("ごみ", {"trash"}),  # ゴミ in katakana
        ("はいしゃ", {"dentist"}),
        ("かう", {"milk"}),
        ("zzz", set()),
    ],
)
def test_search_reads_titles_as_note_matching_does(query: str, found: set[str], tmp_path: Path) -> None:
    assert {key for key, title in TASKS.items() if contains(title, query)} == found
    store = TodoStore(tmp_path / "todo.sqlite3")
    uids = {store.create(title, source="test").uid: key for key, title in TASKS.items()}
    assert {uids[t.uid] for t in store.tasks(query=query)} == found
    assert len(store.tasks(query="a", limit=2)) <= 2
    store.close()


def test_each_todo_commit_is_synced_and_on_macos_past_the_drive_cache(tmp_path: Path) -> None:
    store = TodoStore(tmp_path / "todo.sqlite3")
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: every commit
    assert store._db.execute("PRAGMA fullfsync").fetchone()[0] == 1  # F_FULLFSYNC where there is one
    store.close()


def test_a_change_the_disk_cannot_keep_is_a_todo_error_and_the_list_goes_on(tmp_path: Path) -> None:
    store = TodoStore(tmp_path / "todo.sqlite3")
    heard: list[Any] = []
    store.on_change(lambda before, after: heard.append(after.title))
    store.create("牛乳を買う", source="test")
    wal = tmp_path / "todo.sqlite3-wal"
    with (
        files_cannot_grow(wal),
        pytest.raises(TodoNotSaved, match=r"^it could not be saved \(disk I/O error\)$"),
    ):
        store.create("卵を買う" * 500, source="test")
    assert [t.title for t in store.tasks()] == ["牛乳を買う"]
    store.create("パンを買う", source="test")  # not wedged, and the lost change is not announced
    assert heard == ["牛乳を買う", "パンを買う"]
    # Over the REST API the disk's fault is a 507, not the request's 4xx.
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from bridge.todo.api import todo_router

    app = FastAPI()
    app.include_router(todo_router(store, lambda change: None))
    with TestClient(app) as client:
        with files_cannot_grow(wal):
            refused = client.post("/api/todo/tasks", json={"title": "卵を買う", "description": "x" * 2000})
        assert refused.status_code == 507
        assert (
            refused.json()["detail"]
            == "the Todo list refused the change: it could not be saved (disk I/O error)"
        )
        assert client.post("/api/todo/tasks", json={"title": "卵を買う"}).status_code == 201
    store.close()


def test_tasks_and_changes_show_iso_times(tmp_path: Path) -> None:
    store = TodoStore(tmp_path / "todo.sqlite3", clock=lambda: 1764676800.0)
    change = public(store.create("牛乳を買う", source="test").as_dict())
    assert (
        change["ts"] == change["after"]["created"] == change["after"]["updated"] == "2025-12-02T12:00:00.000Z"
    )
    assert public(store.tasks()[0].as_dict())["updated"] == "2025-12-02T12:00:00.000Z"
    store.close()


def test_store_changes_history_undo_and_notes(tmp_path: Path) -> None:
    store = TodoStore(tmp_path / "todo.sqlite3", genres=["shopping", "other"])
    seen: list[Any] = []
    store.on_change(lambda before, after: seen.append((before, after)))
    created = store.create("牛乳を買う", genre="shopping", source="test")
    uid = created.uid
    assert store.get(uid) is not None
    assert seen[-1][0] is None
    done = store.complete(uid, source="test")
    assert (done.action, done.before["status"], done.after["status"]) == (
        "complete",
        "needs_action",
        "completed",
    )
    assert [t.uid for t in store.tasks(status="completed")] == [uid]
    assert store.tasks(status="needs_action") == []
    undo = store.undo(done.id, source="test")
    assert store.get(uid).status == "needs_action"
    assert store.change(done.id).undone_by == undo.id
    with pytest.raises(TodoError, match="already undone"):
        store.undo(done.id, source="test")
    with pytest.raises(TodoError, match="genre"):
        store.update(uid, genre="toys", source="test")
    deleted = store.delete(uid, source="test")
    assert store.get(uid) is None
    store.undo(deleted.id, source="test")
    assert store.get(uid).title == "牛乳を買う"
    store.undo(created.id, source="test")  # undoing the creation removes the task again
    assert store.get(uid) is None

    # A note is remembered in the transaction of its change; a second time is refused, changing nothing.
    def apply_note() -> None:
        with store.transaction():
            store.create("電池", source="note", note="k1")
            store.remember_note("k1", {"action": "create"})

    apply_note()
    count = len(store.tasks())
    with pytest.raises(TodoError, match="already applied"):
        apply_note()
    assert len(store.tasks()) == count
    assert store.note_outcome("k1") == {"action": "create"}
    store.close()


CANDS = {"u1": {"uid": "u1", "title": "牛乳を買う", "status": "completed"}}


def decision(**overrides: Any) -> dict[str, Any]:
    base = {"action": "update", "uid": "u1", "title": "牛乳", "genre": "shopping", "due": None}
    return {**base, "confidence": 0.9, **overrides}


@pytest.mark.parametrize(
    ("answer", "kind", "uid", "flagged"),
    [
        (decision(), "update", "u1", False),
        (decision(action="complete"), "complete", "u1", False),
        (decision(action="create", uid=None), "create", None, False),
        (decision(action="none"), "none", None, False),
        (decision(uid="made-up"), "create", None, False),  # an invented uid never touches a task
        (decision(action="complete", uid=None), "create", None, False),
        (decision(confidence=0.3), "create", None, True),  # low confidence: a flagged new task
    ],
)
def test_plan_change_safety_rules(answer: dict[str, Any], kind: str, uid: str | None, flagged: bool) -> None:
    plan = plan_change(answer, CANDS, confirm_below=0.6, low_confidence="needs_confirmation")
    assert (plan.kind, plan.uid, plan.needs_confirmation) == (kind, uid, flagged)


def test_plan_change_low_confidence_can_ask_instead() -> None:
    plan = plan_change(decision(confidence=0.3), CANDS, confirm_below=0.6, low_confidence="ask")
    assert (plan.kind, plan.uid) == ("confirm", "u1")


def handler() -> TodoMatchHandler:
    rule = TodoMatchRule(name="todo_note", handler="todo_match", model="m", prompt="Which task?")
    return TodoMatchHandler(rule)


def answer(**overrides: Any) -> str:
    import json

    body = {"action": "update", "uid": "u1", "title": "牛乳", "genre": "shopping", "due": ""}
    return json.dumps({**body, "confidence": 0.9, "reason": "same thing", **overrides})


def test_handler_parses_a_valid_answer_and_builds_a_prompt_with_candidates() -> None:
    h = handler()
    parsed = h.parse(answer(due="2026-12-01"))
    assert parsed.fields["due"] == "2026-12-01"
    assert parsed.state == "update"
    assert h.parse(answer(uid="")).fields["uid"] is None
    prompt = PromptInput(text="牛乳きれてた", fields={"candidates": [CANDS["u1"]], "today": "2026-11-29"})
    user = h.messages(prompt)[1]["content"]
    assert "u1 | 牛乳を買う | - | completed" in user
    assert user.index("u1 |") < user.index("牛乳きれてた")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"genre": "toys"}, "genre"),
        ({"action": "delete"}, "action"),
        ({"confidence": 3}, "confidence"),
    ],
)
def test_handler_refuses_answers_outside_the_schema(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(AnswerError, match=message):
        handler().parse(answer(**bad))


def test_due_is_a_date_in_the_grammar_and_a_bad_one_is_dropped_with_a_warning() -> None:
    h = handler()
    due = h.schema()["properties"]["due"]
    assert re.fullmatch(due["pattern"].strip("^$"), "2026-12-01")
    assert re.fullmatch(due["pattern"].strip("^$"), "")
    assert not re.fullmatch(due["pattern"].strip("^$"), "tomorrow")
    parsed = h.parse(answer(due="next tuesday"))
    assert parsed.fields["due"] is None
    assert parsed.state == "update"
    assert parsed.fields["warnings"] == [
        "due: 'next tuesday' is not a date (YYYY-MM-DD); the note was applied without it"
    ]
    assert "warnings" not in h.parse(answer(due="2026-12-01")).fields


def test_http_needs_a_token_off_loopback() -> None:
    assert HttpSettings(enabled=True).host == "127.0.0.1"
    with pytest.raises(ValidationError, match=r"http\.token"):
        HttpSettings(enabled=True, host="0.0.0.0")
    assert HttpSettings(enabled=True, host="0.0.0.0", token="t" * 16).token is not None


def test_labelled_set_recall_at_8_stays_above_098() -> None:
    from tests.support.todo_labels import evaluate, load

    tasks, notes = load()
    assert len(tasks) >= 60
    assert len(notes) >= 200
    assert evaluate(tasks, notes)["recall_at_8"] >= 0.98


def test_fuse_ranks_by_reciprocal_rank_and_keeps_k() -> None:
    from bridge.todo.retrieval import fuse

    assert fuse(["a", "b", "c"], ["c", "d"], k=3) == ["c", "a", "b"]
    assert fuse(["a"], [], k=8) == ["a"]
    assert len(fuse([str(i) for i in range(8)], [str(i) for i in range(8, 16)], k=8)) == 8


def test_plan_change_holds_the_actions_todo_confirm_names() -> None:
    plan = plan_change(
        decision(action="complete"), CANDS, confirm_below=0.6, low_confidence="ask", confirm=["complete"]
    )
    assert (plan.kind, plan.uid) == ("confirm", "u1")
    assert plan_change(
        decision(), CANDS, confirm_below=0.6, low_confidence="ask", confirm=["complete"]
    ).kind == ("update")
