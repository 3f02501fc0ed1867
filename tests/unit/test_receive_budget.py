"""The byte budget of received input: what it counts, when it waits, and every way bytes return."""

import gc
import threading
import time

import pytest

from bridge.config.settings import MqttSettings
from bridge.pipeline.mqtt import Inbound
from bridge.pipeline.receive_budget import Claim, ReceiveBudget

LONG = 60.0  # patience that is never reached in these tests


def _waiting(budget: ReceiveBudget, waits: int) -> None:
    """Until `waits` claims have started to wait (a thread waits inside claim)."""
    deadline = time.monotonic() + 10
    while budget.waits < waits:
        assert time.monotonic() < deadline, "no claim started to wait"
        time.sleep(0.01)


def _claim_in_thread(budget: ReceiveBudget, size: int) -> tuple[threading.Thread, list[Claim]]:
    got: list[Claim] = []
    thread = threading.Thread(target=lambda: got.append(budget.claim(size, patience=LONG)), daemon=True)
    thread.start()
    return thread, got


def test_claims_within_the_limit_are_counted_and_given_back_once() -> None:
    budget = ReceiveBudget(100)
    first, second = budget.claim(60, patience=LONG), budget.claim(40, patience=LONG)
    assert budget.held == 100
    first.release()
    first.release()  # again: nothing more is given back
    assert budget.held == 40
    second.release()
    assert (budget.held, budget.waits, budget.overruns) == (0, 0, 0)


def test_a_claim_freed_without_release_gives_its_bytes_back() -> None:
    """A message dropped, refused or from a lost connection is never acked: freeing it is enough."""
    budget = ReceiveBudget(100)
    claim = budget.claim(70, patience=LONG)
    assert budget.held == 70
    del claim
    gc.collect()
    assert budget.held == 0


def test_a_claim_freed_after_release_is_not_given_back_twice() -> None:
    budget = ReceiveBudget(100)
    kept = budget.claim(30, patience=LONG)
    claim = budget.claim(50, patience=LONG)
    claim.release()
    del claim
    gc.collect()
    assert budget.held == 30
    kept.release()


def test_an_inbound_message_holds_its_claim_until_it_is_freed() -> None:
    budget = ReceiveBudget(1_000_000)
    message = Inbound("cam/snap", b"x" * 500, 1, 7, False, claim=budget.claim(500, patience=LONG))
    twin = Inbound("cam/snap", b"x" * 500, 1, 7, False)
    assert message == twin  # the claim takes no part in comparing messages
    assert budget.held == 500
    del message
    gc.collect()
    assert budget.held == 0


def test_over_the_limit_a_claim_waits_until_bytes_come_back() -> None:
    budget = ReceiveBudget(100)
    held = budget.claim(80, patience=LONG)
    thread, got = _claim_in_thread(budget, 30)
    _waiting(budget, 1)
    assert thread.is_alive()
    assert not got
    assert budget.held == 80
    held.release()
    thread.join(10)
    assert not thread.is_alive()
    assert budget.held == 30
    assert budget.overruns == 0


def test_a_message_larger_than_the_limit_passes_alone() -> None:
    budget = ReceiveBudget(100)
    big = budget.claim(250, patience=LONG)  # nothing else held: no wait, else it never could pass
    assert (budget.held, budget.waits) == (250, 0)
    thread, got = _claim_in_thread(budget, 1)
    _waiting(budget, 1)
    big.release()
    thread.join(10)
    assert got
    assert budget.held == 1


def test_past_its_patience_a_claim_passes_and_is_counted() -> None:
    """So that paho's thread still sends acknowledgements and keep-alives in time."""
    budget = ReceiveBudget(100)
    held = budget.claim(90, patience=LONG)
    late = budget.claim(20, patience=0)
    assert (budget.held, budget.waits, budget.overruns) == (110, 1, 1)
    late.release()
    held.release()
    assert budget.held == 0


def test_closing_wakes_a_waiting_claim_and_later_ones_do_not_wait() -> None:
    budget = ReceiveBudget(100)
    held = budget.claim(100, patience=LONG)
    thread, got = _claim_in_thread(budget, 50)
    _waiting(budget, 1)
    budget.close()
    thread.join(10)
    assert not thread.is_alive()
    assert got
    budget.claim(500, patience=LONG)  # returns at once
    assert budget.waits == 1
    held.release()


def test_the_setting_takes_sizes_and_refuses_less_than_a_megabyte() -> None:
    assert MqttSettings(receive_memory="16MB").receive_memory == 16_000_000
    assert MqttSettings().receive_memory is None  # off: a default Mosquitto drops for a slow reader
    with pytest.raises(ValueError, match="too little: at least 1MB"):
        MqttSettings(receive_memory="500KB")


def test_without_a_limit_nothing_ever_waits() -> None:
    budget = ReceiveBudget(None)
    claims = [budget.claim(10_000_000, patience=0.0) for _ in range(5)]
    assert budget.held == 50_000_000
    assert (budget.waits, budget.overruns) == (0, 0)
    del claims
