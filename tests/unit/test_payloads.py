"""Parsing inputs: every hostile payload is an InputError; what a rule accepts; limits in the journal."""

import json
import os
from pathlib import Path

import pytest

from bridge.config.handler_rules import ClassifyRule, YesNoRule
from bridge.config.settings import Settings
from bridge.errors import InputError
from bridge.pipeline.images import check_image_header
from bridge.pipeline.intake import Intake, Submission
from bridge.pipeline.journal import Job, Journal
from bridge.pipeline.outbox import Outbox
from bridge.pipeline.payloads import MAX_JSON_DEPTH, JobInput, accepts_problem, parse_payload
from bridge.pipeline.queue import JobQueue
from bridge.pipeline.results import answer_messages
from bridge.pipeline.topics import Topics
from tests.support.hostile import CORPUS
from tests.support.samples import jpeg

LIMITS = {"max_bytes": 20_000_000, "max_text": 32_000}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [(payload, expected) for _, _, payload, expected in CORPUS if "accepts" not in expected],
    ids=[name for name, _, _, expected in CORPUS if "accepts" not in expected],
)
def test_every_hostile_payload_is_an_input_error(payload: bytes, expected: str) -> None:
    with pytest.raises(InputError, match=expected):
        _parse_and_check(payload)


def _parse_and_check(payload: bytes) -> None:
    """What intake does before anything is stored."""
    parsed = parse_payload(payload, **LIMITS)
    if parsed.image is not None:
        check_image_header(parsed.image, max_bytes=20_000_000, max_pixels=40_000_000)


def test_nesting_up_to_the_limit_is_fine() -> None:
    fine = json.dumps(
        {"text": "x", "deep": json.loads("[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1))}
    )
    assert parse_payload(fine.encode(), **LIMITS).text == "x"
    too_deep = fine.replace("[", "[[", 1).replace("]", "]]", 1)
    with pytest.raises(InputError, match="nested deeper than 32"):
        parse_payload(too_deep.encode(), **LIMITS)
    assert parse_payload(b'{"text": "caf\\u00e9 \\ud83d\\ude00"}', **LIMITS).text == "café 😀"


@pytest.mark.parametrize(
    ("accepts", "image", "text", "refused"),
    [
        ("image", True, False, None),
        ("image", True, True, None),
        ("image", False, True, "accepts only images"),
        ("text", False, True, None),
        ("text", True, False, "accepts only text"),
        ("text", True, True, "holds an image"),
        ("any", False, True, None),
        ("any", True, False, None),
    ],
)
def test_accepts(accepts: str, image: bool, text: bool, refused: str | None) -> None:
    problem = accepts_problem(accepts, has_image=image, has_text=text)
    assert problem is None if refused is None else refused in (problem or "")


def test_a_rule_with_an_image_section_accepts_images_by_default() -> None:
    common = {"model": "m", "prompt": "p"}
    assert YesNoRule(name="a", handler="yes_no", image={"max_side": 64}, **common).accepted == "image"
    assert YesNoRule(name="a", handler="yes_no", **common).accepted == "any"
    text_only = ClassifyRule(name="b", handler="classify", labels=["x", "y"], accepts="text", **common)
    assert text_only.accepted == "text"


def _job(job_id: str, state: str, image: str | None = None, **extra: object) -> Job:
    return Job(
        id=job_id,
        rule="r",
        source="test",
        state=state,
        priority=0,
        created=1.0,
        attempts=1,
        input={"text": "x"},
        image=image,
        **extra,
    )


def test_a_failed_jobs_image_is_dropped_unless_another_job_uses_it(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    shared, alone = journal.put_blob(jpeg(10)), journal.put_blob(jpeg(20))
    journal.add_job(_job("a", "running", shared))
    journal.add_job(_job("b", "queued", shared))
    journal.add_job(_job("c", "running", alone))
    journal.finish("a", "failed", error="bad")
    journal.finish("c", "dead", error="bad")
    assert journal.get_blob(shared)
    with pytest.raises(KeyError):
        journal.get_blob(alone)
    journal.close()


def test_finished_jobs_images_are_dropped_to_get_under_a_size(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    blobs = [journal.put_blob(os.urandom(100_000)) for _ in range(10)]
    for n, digest in enumerate(blobs):
        journal.add_job(
            _job(f"j{n}", "queued" if n >= 8 else "done", digest, finished=None if n >= 8 else 2.0)
        )
    assert journal.size() > 1_000_000
    dropped = journal.drop_finished_images(400_000)
    assert 6 <= dropped <= 8
    assert journal.size() <= 400_000
    assert journal.get_blob(blobs[9])  # waiting jobs keep theirs
    assert journal.get_blob(blobs[8])
    assert journal.get("j0") is not None  # the job stays: its id still dedupes
    journal.close()


def test_a_repeated_request_is_answered_from_the_finished_job() -> None:
    topics = Topics("llm2mqtt")
    done = _job("j1", "done", result={"job_id": "j1", "label": "x"})
    reply = {"topic": "replies/b", "correlation_data": "0102"}
    [message] = answer_messages(topics, None, done, reply, 5.0)
    assert (message.topic, message.props, json.loads(message.payload)) == (
        "replies/b",
        {"correlation_data": "0102"},
        {"job_id": "j1", "label": "x"},
    )
    failed = _job("j2", "failed", error="model not found")
    [message] = answer_messages(topics, None, failed, {}, 5.0)
    assert message.topic == "llm2mqtt/r/error"
    assert json.loads(message.payload)["error"] == "model not found"


class _Publisher:
    """Records what the outbox hands over (the outbox's own seam, not paho)."""

    connected = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, **kwargs: object) -> int | None:
        self.sent.append((topic, payload))
        return len(self.sent)  # the message id


def _intake(tmp_path: Path) -> tuple[Intake, Journal, _Publisher]:
    journal, publisher = Journal(tmp_path / "j.sqlite3"), _Publisher()
    rule = ClassifyRule(name="r", handler="classify", model="m", prompt="p", labels=["x", "y"])
    intake = Intake(
        journal, JobQueue(), Outbox(journal, publisher), {"r": rule}, Topics("llm2mqtt"), Settings()
    )
    return intake, journal, publisher


def test_a_bad_response_topic_and_a_bug_are_each_that_inputs_error(tmp_path: Path) -> None:
    intake, journal, publisher = _intake(tmp_path)
    wildcard = Submission(rule="r", source="t", payload=b"hello", reply={"topic": "replies/#"})
    assert intake.submit(wildcard) is None
    # A feature handing over something the journal cannot store: an internal error, not a crash.
    broken = Submission(rule="r", source="t", parsed=JobInput(kind="json", text="hi", fields={"x": object()}))
    assert intake.submit(broken) is None
    assert intake.submit(Submission(rule="r", source="t", payload=b"the next one")) is not None
    errors = [json.loads(p)["error"] for t, p in publisher.sent if t == "llm2mqtt/r/error"]
    assert errors[0] == "the response topic 'replies/#' is not a topic one can publish to"
    assert errors[1].startswith("internal error: TypeError")
    assert all(t != "replies/#" for t, _ in publisher.sent)
    assert journal.counts() == {"failed": 2, "queued": 1}
    journal.close()
