"""The confirmed state of a state-like rule, per source: hysteresis and re-checks. Pure.

An answer does not flip the state at once: with `hysteresis: N` it takes N agreeing answers in
a row. A doubtful answer (`unknown`, or confidence below `recheck_below`) is checked once more
before it counts.
"""

from dataclasses import asdict, dataclass
from typing import Any, Literal

UNKNOWN = "unknown"


@dataclass
class Tracker:
    """What is known of one rule and source; JSON-able through `asdict`/`from_dict`."""

    confirmed: str | None = None
    candidate: str | None = None
    votes: int = 0
    rechecking: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Tracker":
        return cls(
            confirmed=data.get("confirmed"),
            candidate=data.get("candidate"),
            votes=int(data.get("votes", 0)),
            rechecking=bool(data.get("rechecking", False)),
        )

    @property
    def waiting(self) -> bool:
        """A flip or a doubtful answer waits for its confirmation from the model."""
        return self.rechecking or self.candidate is not None


@dataclass(frozen=True)
class Step:
    """What an answer did: `changed` carries old and new; `recheck`/`pending` want another look."""

    kind: Literal["same", "pending", "recheck", "changed"]
    old: str | None = None
    new: str | None = None


def doubtful(value: str | None, confidence: float | None, recheck_below: float) -> bool:
    if value is None or value.strip().lower() == UNKNOWN:
        return True
    return confidence is not None and confidence < recheck_below


def observe(
    tracker: Tracker,
    value: str | None,
    confidence: float | None,
    *,
    hysteresis: int = 1,
    recheck_below: float = 0.0,
) -> Step:
    """Feed one judged answer; updates `tracker` and says what happened."""
    if doubtful(value, confidence, recheck_below) and not tracker.rechecking:
        tracker.rechecking = True
        return Step("recheck")
    tracker.rechecking = False
    if value is None:
        return Step("same")  # nothing to count even after the re-check
    if value == tracker.confirmed:
        tracker.candidate, tracker.votes = None, 0
        return Step("same")
    if value == tracker.candidate:
        tracker.votes += 1
    else:
        tracker.candidate, tracker.votes = value, 1
    if tracker.votes < hysteresis:
        return Step("pending", tracker.confirmed, value)
    old = tracker.confirmed
    tracker.confirmed, tracker.candidate, tracker.votes = value, None, 0
    return Step("changed", old, value)
