"""From the model's answer to the change the list gets. Pure: the safety rules live here.

The model proposes; this decides. A uid outside the candidates is never touched (the note
becomes a new task), an existing task is never changed below the rule's confidence, and
nothing here ever deletes.
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

Kind = Literal["create", "update", "complete", "none", "confirm"]


@dataclass(frozen=True)
class Plan:
    """The change to make. `why` says when the plan differs from what the model asked."""

    kind: Kind
    uid: str | None = None
    title: str = ""
    genre: str | None = None
    due: str | None = None
    needs_confirmation: bool = False
    description: str | None = None
    why: str | None = None


def plan_change(
    decision: Mapping[str, Any],
    candidates: Mapping[str, Mapping[str, Any]],
    *,
    confirm_below: float,
    low_confidence: Literal["needs_confirmation", "ask"],
    confirm: Collection[str] = (),
) -> Plan:
    """The change for a valid answer (`decision`: action, uid, title, genre, due, confidence);
    a change whose kind is in `confirm` (todo.confirm) waits for a person instead."""
    plan = _plan(decision, candidates, confirm_below=confirm_below, low_confidence=low_confidence)
    if plan.kind not in confirm:
        return plan
    why = f"todo.confirm lists {plan.kind}: waiting for a person"
    return replace(plan, kind="confirm", needs_confirmation=False, description=None, why=why)


def _plan(
    decision: Mapping[str, Any],
    candidates: Mapping[str, Mapping[str, Any]],
    *,
    confirm_below: float,
    low_confidence: Literal["needs_confirmation", "ask"],
) -> Plan:
    action = decision["action"]
    uid = decision.get("uid")
    title, genre, due = decision["title"], decision.get("genre"), decision.get("due")
    confidence = float(decision["confidence"])
    if action == "none":
        return Plan("none", why="the model found nothing to change")
    if action == "create":
        return Plan("create", title=title, genre=genre, due=due)
    if uid is None or uid not in candidates:
        return Plan(
            "create",
            title=title,
            genre=genre,
            due=due,
            why=f"the model named uid {uid!r}, which is not one of the candidates; created a new task",
        )
    if confidence < confirm_below:
        target = candidates[uid]
        if low_confidence == "ask":
            return Plan(
                "confirm",
                uid=uid,
                title=title,
                genre=genre,
                due=due,
                why=f"confidence {confidence:.2f} is below {confirm_below:.2f}; asking before {action}",
            )
        return Plan(
            "create",
            title=title,
            genre=genre,
            due=due,
            needs_confirmation=True,
            description=f"Maybe the same as “{target.get('title')}” ({uid}): {action}?",
            why=f"confidence {confidence:.2f} is below {confirm_below:.2f}; {uid} left unchanged",
        )
    return Plan(action, uid=uid, title=candidates[uid].get("title", title), genre=genre, due=due)
