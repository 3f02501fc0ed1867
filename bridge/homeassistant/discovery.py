"""Home Assistant MQTT discovery: what each rule looks like as entities. Pure.

`discovery(rules, ...)` turns rules into `(topic, payload)` pairs; the extension in
`bridge.homeassistant.extension` publishes them. Nothing here touches the network or the disk.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bridge.config.homeassistant import EVENT_TYPES, RuleHomeAssistant, slugify
from bridge.config.rules import RuleBase
from bridge.homeassistant.kinds import device_class, has_image, on_answer
from bridge.pipeline.topics import Topics

ORIGIN_NAME = "llm2mqtt"
# The handlers whose answer is free text or a record: a plain sensor may carry a class.
SENSOR_HANDLERS = ("extract", "describe")


@dataclass(frozen=True)
class Node:
    """The bridge as Home Assistant sees it: one device, one discovery node id."""

    base_topic: str
    prefix: str = "homeassistant"
    version: str = "0"
    quiet_events: frozenset[str] = frozenset()  # lifecycle events not published (mqtt.job_events)

    @property
    def node_id(self) -> str:
        return slugify(self.base_topic) or "llm2mqtt"

    @property
    def bridge_device_id(self) -> str:
        return f"{self.node_id}_bridge"

    @property
    def topics(self) -> Topics:
        return Topics(self.base_topic)

    @property
    def state_topic(self) -> str:
        return self.topics.state


def humanize(name: str) -> str:
    """front_door_lock -> Front door lock."""
    text = name.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def _availability(node: Node) -> dict[str, Any]:
    return {
        "availability_topic": node.state_topic,
        "availability_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
    }


def _origin(node: Node) -> dict[str, Any]:
    return {"name": ORIGIN_NAME, "sw_version": node.version}


def _entity(
    node: Node, component: str, object_id: str, device: dict[str, Any], **fields: Any
) -> tuple[str, dict[str, Any]]:
    payload = {
        "unique_id": f"{node.node_id}_{object_id}",
        "object_id": object_id,
        # Home Assistant from 2025.10 names the entity id this way; older ones drop the key.
        "default_entity_id": f"{component}.{object_id}",
        "device": device,
        "origin": _origin(node),
        **_availability(node),
        **fields,
    }
    # None drops a key (no icon, always available), except a None name: "the device's name alone".
    payload = {k: v for k, v in payload.items() if v is not None or k == "name"}
    return f"{node.prefix}/{component}/{node.node_id}/{object_id}/config", payload


def rule_device(node: Node, rule: RuleBase) -> dict[str, Any]:
    options: RuleHomeAssistant | None = rule.homeassistant
    name = options.name if options is not None and options.name else humanize(rule.name)
    return {
        "identifiers": [f"{node.node_id}_{slugify(rule.name)}"],
        "name": name,
        "manufacturer": "llm2mqtt",
        "model": f"{rule.handler} rule ({rule.model})",
        "sw_version": node.version,
        "via_device": node.bridge_device_id,
    }


def rule_entities(node: Node, rule: RuleBase) -> list[tuple[str, dict[str, Any]]]:
    """The discovery configs of one rule: its answer, last image, job events, and controls."""
    options: RuleHomeAssistant = rule.homeassistant or RuleHomeAssistant()
    if not options.enabled or not rule.enabled:
        return []
    slug = slugify(rule.name)
    topics = node.topics
    device = rule_device(node, rule)
    answer: dict[str, Any] = {
        "name": None,  # the device's name alone: "Front door lock"
        "state_topic": topics.result(rule.name),
        "json_attributes_topic": topics.result(rule.name),
        "icon": options.icon,
    }
    entities = []
    if rule.handler == "yes_no":
        on = "true" if on_answer(rule) else "false"
        template = f"{{{{ 'ON' if (value_json.answer | string | lower) == '{on}' else 'OFF' }}}}"
        entities.append(
            _entity(
                node,
                "binary_sensor",
                slug,
                device,
                **answer,
                value_template=template,
                device_class=device_class(rule),
            )
        )
    elif rule.handler == "classify":
        labels = [str(label) for label in getattr(rule, "labels", [])]
        entities.append(
            _entity(
                node,
                "sensor",
                slug,
                device,
                **answer,
                value_template="{{ value_json.label }}",
                device_class="enum",
                options=labels,
            )
        )
    else:
        entities.append(
            _entity(
                node,
                "sensor",
                slug,
                device,
                **answer,
                value_template="{{ value_json.state[:255] }}",
                device_class=options.device_class if rule.handler in SENSOR_HANDLERS else None,
            )
        )
    if has_image(rule):
        entities.append(
            _entity(
                node,
                "image",
                f"{slug}_image",
                device,
                name="Last image",
                image_topic=topics.image(rule.name),
                content_type="image/jpeg",
            )
        )
    # Job events come from the bridge's event topic; other rules' events render empty and are ignored.
    kinds = [k for k in EVENT_TYPES if k in options.events and f"job_{k}" not in node.quiet_events]
    types = ", ".join(f"'job_{kind}'" for kind in kinds)
    event_template = (
        f"{{% if value_json.rule == '{rule.name}' and value_json.type in [{types}] %}}"
        "{{ {'event_type': value_json.type[4:], 'job_id': value_json.job_id, "
        "'error': value_json.error | default(value_json.reason | default(none))} | tojson }}{% endif %}"
    )
    if kinds:  # `events: []`: no event entity at all
        entities.append(
            _entity(
                node,
                "event",
                f"{slug}_job",
                device,
                name="Job",
                state_topic=topics.event,
                value_template=event_template,
                event_types=kinds,
                entity_category="diagnostic",
            )
        )
    if rule.snapshot is not None:
        entities.append(
            _entity(
                node,
                "button",
                f"{slug}_check",
                device,
                name="Check now",
                command_topic=topics.check(rule.name),
                payload_press="PRESS",
                icon="mdi:camera-iris",
            )
        )
    if rule.schedule is not None:
        entities.append(
            _entity(
                node,
                "switch",
                f"{slug}_paused",
                device,
                name="Paused",
                command_topic=topics.paused_set(rule.name),
                state_topic=topics.paused(rule.name),
                payload_on="ON",
                payload_off="OFF",
                entity_category="config",
                icon="mdi:pause-circle",
            )
        )
    return entities


def bridge_entities(node: Node, backends: Iterable[str] = ()) -> list[tuple[str, dict[str, Any]]]:
    """The bridge's own device: diagnostics from `bridge/stats`, `bridge/models` and `bridge/health`."""
    device = {
        "identifiers": [node.bridge_device_id],
        "name": "llm2mqtt" if node.node_id == "llm2mqtt" else f"llm2mqtt {node.node_id}",
        "manufacturer": "llm2mqtt",
        "model": "LLM to MQTT bridge",
        "sw_version": node.version,
    }
    stats = node.topics.stats
    common = {"entity_category": "diagnostic", "state_topic": stats}
    prefix = node.node_id
    reachable = [
        _entity(
            node,
            "binary_sensor",
            f"{prefix}_{slugify(name)}_reachable",
            device,
            name="Ollama reachable" if name == "ollama" else f"Backend {name} reachable",
            state_topic=node.topics.health,
            value_template=(
                f"{{{{ 'ON' if value_json.backends.get('{name}', {{}}).get('reachable') else 'OFF' }}}}"
            ),
            json_attributes_topic=node.topics.health,
            json_attributes_template=f"{{{{ value_json.backends.get('{name}', {{}}) | tojson }}}}",
            device_class="connectivity",
            entity_category="diagnostic",
        )
        for name in backends
    ]
    return [
        *reachable,
        _entity(
            node,
            "binary_sensor",
            f"{prefix}_connected",
            device,
            name="Connected",
            state_topic=node.state_topic,
            value_template="{{ value_json.state }}",
            payload_on="online",
            payload_off="offline",
            device_class="connectivity",
            entity_category="diagnostic",
            availability_topic=None,
            availability_template=None,
            payload_available=None,
            payload_not_available=None,
        ),
        _entity(
            node,
            "sensor",
            f"{prefix}_queue_depth",
            device,
            name="Queue depth",
            **common,
            value_template="{{ value_json.queue_depth }}",
            state_class="measurement",
            unit_of_measurement="jobs",
            icon="mdi:tray-full",
        ),
        _entity(
            node,
            "sensor",
            f"{prefix}_running",
            device,
            name="Running jobs",
            **common,
            value_template="{{ value_json.running }}",
            state_class="measurement",
            unit_of_measurement="jobs",
        ),
        _entity(
            node,
            "sensor",
            f"{prefix}_last_model_latency",
            device,
            name="Last model latency",
            **common,
            value_template="{{ value_json.last_model_ms }}",
            device_class="duration",
            unit_of_measurement="ms",
            state_class="measurement",
        ),
        _entity(
            node,
            "sensor",
            f"{prefix}_jobs_failed",
            device,
            name="Jobs failed",
            **common,
            value_template="{{ value_json.jobs_failed }}",
            state_class="total_increasing",
            icon="mdi:alert-circle-outline",
        ),
        _entity(
            node,
            "sensor",
            f"{prefix}_loaded_model",
            device,
            name="Loaded model",
            state_topic=node.topics.models,
            entity_category="diagnostic",
            value_template="{{ value_json | join(', ') if value_json else 'none' }}",
            icon="mdi:brain",
        ),
    ]


def discovery(node: Node, rules: Iterable[RuleBase], backends: Iterable[str] = ()) -> dict[str, bytes]:
    """Every discovery config topic of the bridge, its backends and its rules, with its JSON payload."""
    pairs = bridge_entities(node, backends)
    for rule in rules:
        pairs.extend(rule_entities(node, rule))
    return {
        topic: json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        for topic, payload in pairs
    }


def absent_images(node: Node, rules: Iterable[RuleBase]) -> list[str]:
    """Image config topics of rules that show no image: each gets an empty retained message,
    so an entity left by an older version or an earlier configuration goes away."""
    return [
        f"{node.prefix}/image/{node.node_id}/{slugify(rule.name)}_image/config"
        for rule in rules
        if not (has_image(rule) and rule.enabled and rule.homeassistant.enabled)
    ]


def removals(published: Iterable[str], current: Iterable[str]) -> list[str]:
    """Config topics published before and gone now: each gets an empty retained message."""
    keep = set(current)
    return sorted(t for t in set(published) if t not in keep)
