"""Pure parts of `llm2mqtt eval`."""

from typing import Any

import pytest

from bridge.eval.report import percentile


@pytest.mark.parametrize(
    ("values", "share", "expected"),
    [
        ([], 0.5, None),
        ([5.0], 0.95, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
        ([float(i) for i in range(1, 21)], 0.95, 19.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], share: float, expected: Any) -> None:
    assert percentile(values, share) == expected
