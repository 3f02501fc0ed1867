"""Home Assistant settings: `homeassistant:` in config.yaml and in a rule file, and their checks."""

import re
import unicodedata
from collections.abc import Iterable

from pydantic import Field, field_validator

from bridge.config.base import StrictModel

_CLASS_NAMES = """battery battery_charging carbon_monoxide cold connectivity door garage_door gas heat
light lock moisture motion moving occupancy opening plug power presence problem running safety smoke
sound tamper update vibration window"""
BINARY_SENSOR_CLASSES = frozenset(_CLASS_NAMES.split())


class RuleHomeAssistant(StrictModel):
    """How a rule appears in Home Assistant (`homeassistant:` in a rule file)."""

    enabled: bool = Field(True, description="Announce this rule's entities to Home Assistant")
    name: str | None = Field(None, min_length=1, description="Device name; default: from the rule name")
    device_class: str | None = Field(
        None, description="yes_no: a binary_sensor class (lock, door, motion…); extract: a sensor class"
    )
    icon: str | None = Field(None, pattern=r"^[a-z0-9-]+:[a-z0-9-]+$", description="e.g. mdi:lock")
    on_answer: bool | None = Field(
        None,
        description="yes_no: which answer turns the binary_sensor on. Default: yes, except for "
        "device_class lock, where on means unlocked (worked out from the labels)",
    )


class HomeAssistantSettings(StrictModel):
    """Home Assistant MQTT discovery (`homeassistant:` in config.yaml)."""

    enabled: bool = Field(True, description="Announce rules as Home Assistant entities")
    discovery_prefix: str = Field("homeassistant", pattern=r"^[^#+\x00]+$")
    status_topic: str = Field(
        "homeassistant/status", description="Home Assistant's birth topic; `online` there republishes"
    )

    @field_validator("status_topic")
    @classmethod
    def _plain_topic(cls, topic: str) -> str:
        if not topic or "#" in topic or "+" in topic or "\x00" in topic:
            raise ValueError("a topic without wildcards")
        return topic


def slugify(name: str) -> str:
    """An object id for `name`: lower-case ASCII letters, digits and `_`. Names that already
    are such ids come back unchanged, so entity ids stay stable."""
    if re.fullmatch(r"[a-z0-9_]+", name):
        return name
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_")


def slug_problems(names: Iterable[tuple[str, str]]) -> list[str]:
    """Config errors for rules whose names make the same object id. `names`: (name, where)."""
    seen: dict[str, tuple[str, str]] = {}
    problems = []
    for name, where in names:
        slug = slugify(name)
        if not slug:
            problems.append(f"{where}: rule name {name!r} has no letters or digits for an entity id")
            continue
        if slug in seen and seen[slug][0] != name:
            other, other_where = seen[slug]
            problems.append(
                f"{where}: rule name {name!r} gives the same Home Assistant id {slug!r} as "
                f"{other!r} in {other_where}; rename one"
            )
        seen.setdefault(slug, (name, where))
    return problems


def rule_problems(handler: str, options: RuleHomeAssistant | None) -> list[str]:
    """What is wrong with a rule's `homeassistant:` key for its handler."""
    if options is None or options.device_class is None:
        return []
    if handler == "yes_no" and options.device_class not in BINARY_SENSOR_CLASSES:
        known = ", ".join(sorted(BINARY_SENSOR_CLASSES))
        return [
            f"homeassistant.device_class: {options.device_class!r} is not a binary_sensor class ({known})"
        ]
    if handler == "classify":
        return ["homeassistant.device_class: a classify rule is an enum sensor; leave device_class out"]
    return []
