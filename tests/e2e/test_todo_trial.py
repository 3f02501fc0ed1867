"""`llm2mqtt try` and `eval` on a todo_match rule see the candidates a job would see."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.todo.store import TodoStore
from tests.e2e.test_todo_end_to_end import RULE, SEED, candidates_of, model
from tests.support.ollama_standin import OllamaStandin


@pytest.fixture
def config(write_config: Callable[..., Path], ollama: OllamaStandin) -> Path:
    ollama.responder = model
    return write_config([RULE], ollama={"url": ollama.url, "retries": 0})


def seed(config: Path) -> dict[str, str]:
    """The daemon's list, as it would have left it: uid by title."""
    store = TodoStore(config.parent / "data" / "todo.sqlite3", genres=RULE["genres"])
    uids = {title: store.create(title, source="test").uid for title in SEED}
    store.close()
    return uids


def test_try_matches_a_note_against_the_daemons_list(
    config: Path, ollama: OllamaStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    uids = seed(config)
    code = main(["try", "-c", str(config), "todo_note", "--text", "牛乳きれてた"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert (result["action"], result["uid"]) == ("update", uids["牛乳を買う"])
    shown = candidates_of(ollama.requests[-1])
    assert (uids["牛乳を買う"], "牛乳を買う") in shown
    assert len(shown) == RULE.get("candidates", 8)  # the rule's number, not the whole list
    store = TodoStore(config.parent / "data" / "todo.sqlite3")
    assert len(store.tasks()) == len(SEED)  # tried, not applied
    store.close()


def test_try_without_a_list_yet_shows_no_candidates_and_creates_no_file(
    config: Path, ollama: OllamaStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["try", "-c", str(config), "todo_note", "--text", "牛乳きれてた"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["action"] == "create"
    assert candidates_of(ollama.requests[-1]) == []
    assert not (config.parent / "data" / "todo.sqlite3").exists()


def test_eval_scores_notes_with_their_candidates(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(config)
    labelled = tmp_path / "notes.jsonl"
    rows = [
        {"text": "牛乳きれてた", "expected": "update"},
        {"text": "done: ゴミ出し", "expected": "complete"},
        {"text": "paint the fence", "expected": "create"},
    ]
    labelled.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    code = main(["eval", "-c", str(config), "todo_note", str(labelled), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    (report,) = json.loads(out)["variants"]
    assert report["accuracy"] == 1.0, report
