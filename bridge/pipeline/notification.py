"""What a notification's condition and templates may read, and how a condition is judged.

Shared by every notification sink (SNS, Apprise), so one `when:` means the same everywhere.
"""

import logging
from typing import Any

from bridge.config.rules import RuleBase
from bridge.config.templates import SANDBOX
from bridge.pipeline.journal import Job

log = logging.getLogger(__name__)


def notification_vars(
    job: Job, rule: RuleBase, result: dict[str, Any], state: str | None, previous: str | None
) -> dict[str, Any]:
    """What a condition or template may read."""
    return {
        "rule": rule.name,
        "job_id": job.id,
        "source": job.source,
        "state": state,
        "previous_state": previous,
        "changed": state != previous,
        "result": result,
        "input": job.input.get("fields", {}),
    }


def condition_holds(when: str | None, variables: dict[str, Any], sink: str) -> bool:
    """Does `when` hold (no condition: always)? A condition that fails to evaluate counts as false."""
    if when is None:
        return True
    try:
        return bool(SANDBOX.compile_expression(when)(**variables))
    except Exception as exc:
        log.warning("%s: %s condition %r failed: %s", variables["rule"], sink, when, exc)
        return False


def render_text(template: str, variables: dict[str, Any]) -> str:
    """Render a notification template in the sandbox; raises on a template error."""
    return SANDBOX.from_string(template).render(**variables)
