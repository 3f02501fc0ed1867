"""Where a job's answer may be sent besides the rule's own topics. Pure.

A reply topic comes from the requester (an MQTT 5 response topic, an SQS message's `reply`),
and the bridge publishes with its own broker permissions: a reply must never land on the
bridge's own topics, on Home Assistant's discovery topics, on another rule's input (a loop, or
a job for that rule), or on a topic the user denied; and with `mqtt.reply_allow`, only under
the prefixes listed there.
"""

from collections.abc import Iterable, Sequence

import paho.mqtt.client as paho

from bridge.config.settings import Settings


def reply_problem(topic: str, settings: Settings, inputs: Iterable[str]) -> str | None:
    """Why the bridge may not publish a reply on `topic`, or None."""
    mqtt = settings.mqtt
    if not topic or "+" in topic or "#" in topic or "\x00" in topic or topic.startswith("$"):
        return "not a topic one can publish to"
    if _under(topic, [mqtt.base_topic]):
        return f"under the bridge's own topics ({mqtt.base_topic}/): refused"
    prefix = settings.homeassistant.discovery_prefix
    if _under(topic, [prefix]):
        return f"under Home Assistant's discovery prefix ({prefix}/): refused"
    for topic_filter in inputs:
        if paho.topic_matches_sub(topic_filter, topic):
            return f"the input of a rule ({topic_filter}): refused"
    for topic_filter in mqtt.reply_deny:
        if paho.topic_matches_sub(topic_filter, topic):
            return f"denied by mqtt.reply_deny ({topic_filter}): refused"
    if mqtt.reply_allow and not any(topic.startswith(prefix) for prefix in mqtt.reply_allow):
        return "not under a prefix of mqtt.reply_allow: refused"
    return None


def sqs_reply_problem(reply: dict[str, str], allowed: Sequence[str]) -> str | None:
    """Why an SQS job may not reply there: only SNS ARNs and MQTT prefixes in aws.reply_topics."""
    if "sns" in reply:
        if reply["sns"] in allowed:
            return None
        return f"reply: {reply['sns']} is not listed in aws.reply_topics"
    topic = reply.get("topic", "")
    if any(not entry.startswith("arn:") and topic.startswith(entry) for entry in allowed):
        return None
    return f"reply: {topic!r} is not under an MQTT prefix listed in aws.reply_topics"


def _under(topic: str, prefixes: Iterable[str]) -> bool:
    return any(topic == prefix or topic.startswith(f"{prefix}/") for prefix in prefixes)
