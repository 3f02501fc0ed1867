"""What a reload may change while the daemon runs, and what waits for a restart. Pure."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.config.rules import RuleBase
from bridge.config.settings import Settings

# Rule keys that other parts set up at start (subscriptions, timers, discovery, sinks):
# changing them needs a restart. Every other key (prompt, system, model, labels, options,
# image, keep_alive, timeout, priority, outputs, handler-specific keys) applies to the next job.
RESTART_RULE_KEYS = frozenset(
    {
        "handler",
        "enabled",
        "inputs",
        "schedule",
        "snapshot",
        "change",
        "kind",
        "hysteresis",
        "recheck_below",
        "sns",
        "mirror_to_sqs",
        "notify",
        "homeassistant",
    }
)


@dataclass
class ReloadPlan:
    """Rules to swap in now, the keys they change, and the changes that need a restart."""

    replace: dict[str, RuleBase] = field(default_factory=dict)
    applied: list[str] = field(default_factory=list)
    restart_required: list[str] = field(default_factory=list)


def plan_reload(
    running_settings: Settings,
    running_rules: Mapping[str, RuleBase],
    new_settings: Settings,
    new_rules: Mapping[str, RuleBase],
) -> ReloadPlan:
    """Compare the configuration on disk with the one running (enabled rules only)."""
    plan = ReloadPlan()
    # Python-mode dumps: secrets compare by value there, so a changed password is seen too.
    plan.restart_required += _changed_paths(running_settings.model_dump(), new_settings.model_dump(), "")
    for name in sorted(set(running_rules) - set(new_rules)):
        plan.restart_required.append(f"rules.{name} (removed or disabled)")
    for name in sorted(set(new_rules) - set(running_rules)):
        plan.restart_required.append(f"rules.{name} (added)")
    for name in sorted(set(running_rules) & set(new_rules)):
        old = running_rules[name].model_dump()
        new = new_rules[name].model_dump()
        changed = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
        if not changed:
            continue
        paths = [f"rules.{name}.{key}" for key in changed]
        if any(key in RESTART_RULE_KEYS for key in changed):
            plan.restart_required += paths  # a rule is swapped whole or not at all
        else:
            plan.replace[name] = new_rules[name]
            plan.applied += paths
    return plan


def _changed_paths(old: Any, new: Any, prefix: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        paths: list[str] = []
        for key in sorted(old.keys() | new.keys()):
            paths += _changed_paths(old.get(key), new.get(key), f"{prefix}{key}.")
        return paths
    return [] if old == new else [prefix.rstrip(".")]
