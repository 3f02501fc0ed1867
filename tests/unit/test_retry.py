"""The outbox sinks' retry loop: refusals retried with growing pauses; a permanent one ends it."""

import asyncio
import logging

import pytest

from bridge.pipeline.retry import Backoff, send_until_accepted


class Refusal(Exception):
    def __init__(self, permanent: bool) -> None:
        super().__init__("permanent" if permanent else "try later")
        self.permanent = permanent


def _run(outcomes: list[Exception | None], backoff: Backoff) -> tuple[bool, int]:
    """Send against a service that answers `outcomes` in turn; returns (sent, tries)."""
    tries = 0

    async def send() -> None:
        nonlocal tries
        outcome = outcomes[tries]
        tries += 1
        if outcome is not None:
            raise outcome

    sent = asyncio.run(send_until_accepted(send, refused=Refusal, what="test: a row", backoff=backoff))
    return sent, tries


def test_transient_refusals_are_retried_until_accepted(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        sent, tries = _run([Refusal(False), Refusal(False), Refusal(False), None], Backoff(0.1, 0.2))
    assert (sent, tries) == (True, 4)
    pauses = [r.getMessage().rsplit(" ", 1)[-1] for r in caplog.records]
    assert pauses == ["0.1s", "0.2s", "0.2s"]  # doubling, up to the most
    assert all("test: a row was not sent: try later" in r.getMessage() for r in caplog.records)


def test_a_permanent_refusal_drops_the_row_at_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        sent, tries = _run([Refusal(True), None], Backoff(10, 10))
    assert (sent, tries) == (False, 1)
    assert "test: a row can never be sent: permanent; dropping it" in caplog.text


def test_other_errors_are_not_swallowed() -> None:
    with pytest.raises(KeyError):
        _run([KeyError("bug")], Backoff(0.001, 0.001))
