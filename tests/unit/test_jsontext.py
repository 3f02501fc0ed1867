"""The JSON the bridge writes per job (bridge/pipeline/jsontext.py): the standard library's
compact text, from orjson, with the standard library for what orjson refuses."""

import json
from pathlib import Path
from typing import Any

import pytest

from bridge.pipeline.journal import Job, Journal
from bridge.pipeline.jsontext import dumps


def _standard(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "value",
    [
        {"rule": "door", "answer": "施錠", "confidence": 0.93, "ok": True, "none": None},
        {"text": 'quote " backslash \\ newline \n tab \t bell \x07 line sep \u2028 emoji 🚪'},
        [0.1, 1.0, -0.0, 100.0, 1e16, 1.5e300, 2**63 - 1, -(2**63), 2**64 - 1],
        {"calls": [{"request": {"messages": [{"role": "user", "content": "x"}]}, "ms": 12.5}]},
        ("a", 1),
        [],
        {},
    ],
)
def test_the_text_is_the_standard_librarys_compact_utf8(value: Any) -> None:
    assert dumps(value) == _standard(value)


def test_small_exponents_are_written_shorter_and_read_the_same() -> None:
    assert dumps(1e-7) == b"1e-7"  # the standard library: 1e-07
    assert json.loads(dumps([1e-7, 2.5e-10])) == [1e-7, 2.5e-10]


@pytest.mark.parametrize("value", [{"id": 2**70}, [-(2**64)], {1: "one", "2": "two"}])
def test_what_orjson_refuses_the_standard_library_writes(value: Any) -> None:
    assert dumps(value) == _standard(value)


def test_what_neither_can_write_is_refused() -> None:
    with pytest.raises(TypeError):
        dumps({"raw": b"bytes"})


def test_not_a_number_is_written_as_null() -> None:
    assert dumps({"confidence": float("nan"), "big": float("inf")}) == b'{"confidence":null,"big":null}'


def test_an_input_with_a_big_integer_is_journaled_exactly(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    text = "一二三 " * 3
    job = Job(
        id="j", rule="r", source="t", state="queued", priority=0, created=1.0, attempts=0,
        input={"id": 2**70, "text": text, "fields": {"n": 0.1}},
    )  # fmt: skip
    journal.add_job(job)
    journal.finish("j", "done", result={"id": 2**70, "answer": "x"}, detail={"calls": [{"n": 2**65}]})
    stored = journal.get("j")
    assert stored is not None
    assert stored.input == {"id": 2**70, "text": text, "fields": {"n": 0.1}}
    assert isinstance(stored.input["id"], int)
    assert stored.result == {"id": 2**70, "answer": "x"}
    journal.close()
