"""A burst of 10,000 QoS 1 jobs at a Mosquitto with its default limits: none lost, none twice."""

import pytest

from bench.floods import burst

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(900)]  # minutes on a loaded machine


def test_ten_thousand_jobs_at_once_at_a_default_broker_are_each_answered_once() -> None:
    outcome = burst(jobs=10_000)
    assert outcome["journaled"] == 10_000, outcome
    assert outcome["journal_states"] == {"done": 10_000}, outcome
    assert (outcome["answered"], outcome["lost"]) == (10_000, 0), outcome
    assert outcome["repeats_same_job"] == 0, outcome
    assert outcome["answered_by_two_jobs"] == 0, outcome
