"""Rule inputs that could take in what the bridge itself publishes (a loop). Pure."""

from bridge.config.settings import Settings


def input_loop_problem(topic_filter: str, settings: Settings) -> str | None:
    """Why a rule may not listen on `topic_filter`: it could match what the bridge publishes."""
    base = settings.mqtt.base_topic
    if filters_overlap(topic_filter, f"{base}/#"):
        return (
            f"overlaps the bridge's own topics under {base}/: its output would come back as "
            f"input (send jobs to {base}/<rule>/run instead)"
        )
    prefix = settings.homeassistant.discovery_prefix
    if any(filters_overlap(topic_filter, f"{prefix}/{levels}/config") for levels in ("+/+", "+/+/+")):
        return f"overlaps the Home Assistant discovery topics the bridge publishes under {prefix}/"
    return None


def filters_overlap(first: str, second: str) -> bool:
    """True when some topic matches both MQTT topic filters (`+` one level, `#` the rest)."""
    a, b = first.split("/"), second.split("/")
    for index in range(max(len(a), len(b))):
        x = a[index] if index < len(a) else None
        y = b[index] if index < len(b) else None
        if x == "#" or y == "#":
            return True
        if x is None or y is None:
            return False
        if x != y and "+" not in (x, y):
            return False
    return True
