"""The byte budget of received input: what it counts, when it is full, and every way bytes return."""

import gc

import pytest

from bridge.config.settings import MqttSettings
from bridge.pipeline.mqtt import Inbound
from bridge.pipeline.receive_budget import ReceiveBudget


def _budget(limit: int | None) -> tuple[ReceiveBudget, list[int]]:
    """A budget that records the bytes held each time it says there is room again."""
    rooms: list[int] = []
    budget = ReceiveBudget(limit)
    budget.on_room = lambda: rooms.append(budget.held)
    return budget, rooms


def test_claims_are_counted_and_given_back_once() -> None:
    budget, rooms = _budget(100)
    first, second = budget.claim(60), budget.claim(30)
    assert budget.held == 90
    assert not budget.full()
    first.release()
    first.release()  # again: nothing more is given back
    assert budget.held == 30
    second.release()
    assert budget.held == 0
    assert rooms == []  # never full: nothing to resume


def test_a_claim_freed_without_release_gives_its_bytes_back() -> None:
    """A message dropped, refused or from a lost connection is never acked: freeing it is enough."""
    budget, _ = _budget(100)
    claim = budget.claim(70)
    assert budget.held == 70
    del claim
    gc.collect()
    assert budget.held == 0


def test_a_claim_freed_after_release_is_not_given_back_twice() -> None:
    budget, _ = _budget(100)
    kept = budget.claim(30)
    claim = budget.claim(50)
    claim.release()
    del claim
    gc.collect()
    assert budget.held == 30
    kept.release()


def test_an_inbound_message_holds_its_claim_until_it_is_freed() -> None:
    budget, _ = _budget(1_000_000)
    message = Inbound("cam/snap", b"x" * 500, 1, 7, False, claim=budget.claim(500))
    twin = Inbound("cam/snap", b"x" * 500, 1, 7, False)
    assert message == twin  # the claim takes no part in comparing messages
    assert budget.held == 500
    del message
    gc.collect()
    assert budget.held == 0


def test_at_the_limit_it_is_full_and_says_once_when_room_comes_back() -> None:
    """A claim never waits (it runs on the loop); the link stops reading while `full()`."""
    budget, rooms = _budget(100)
    held = [budget.claim(40), budget.claim(40)]
    assert not budget.full()
    held.append(budget.claim(40))  # the message that reaches the limit is still taken
    assert budget.full()
    assert budget.held == 120
    held.pop().release()
    assert not budget.full()
    assert rooms == [80]
    held.pop().release()
    assert rooms == [80]  # only the way from full to not full is told


def test_a_message_larger_than_the_limit_is_taken_and_then_it_is_full() -> None:
    budget, rooms = _budget(100)
    big = budget.claim(250)
    assert budget.full()
    big.release()
    assert (budget.held, rooms) == (0, [0])


def test_closing_tells_of_room_and_it_is_never_full_again() -> None:
    budget, rooms = _budget(100)
    held = budget.claim(100)
    assert budget.full()
    budget.close()
    assert rooms == [100]
    assert not budget.full()
    more = budget.claim(500)
    assert not budget.full()
    held.release()
    more.release()
    assert rooms == [100]


def test_the_setting_takes_sizes_and_refuses_less_than_a_megabyte() -> None:
    assert MqttSettings(receive_memory="16MB").receive_memory == 16_000_000
    assert MqttSettings().receive_memory is None  # off: a default Mosquitto drops for a slow reader
    with pytest.raises(ValueError, match="too little: at least 1MB"):
        MqttSettings(receive_memory="500KB")


def test_without_a_limit_it_is_never_full() -> None:
    budget, rooms = _budget(None)
    claims = [budget.claim(10_000_000) for _ in range(5)]
    assert budget.held == 50_000_000
    assert not budget.full()
    del claims
    gc.collect()
    assert rooms == []
