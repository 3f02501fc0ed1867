"""Where a message from the broker goes, by its topic: to the handler a feature routed there,
or to the rules whose inputs match it (or the one a `<base>/<rule>/run` topic names).

Devices publish to the same few topics over and over, so each topic is matched against the
filters once and the answer kept; a replaced rule or a new route forgets the answers.
"""

from collections.abc import Callable, Mapping
from typing import NamedTuple

import paho.mqtt.client as paho

from bridge.config.rules import RuleBase
from bridge.pipeline.mqtt import Inbound
from bridge.pipeline.topics import Topics

MAX_TOPICS = 1024  # answers kept; past it they are forgotten and found again as topics come


class Route(NamedTuple):
    """A handler for the message, or the rules it makes jobs for (name, run by its run topic)."""

    handler: Callable[[Inbound], None] | None
    targets: tuple[tuple[str, bool], ...]


class Routes:
    def __init__(self, topics: Topics, rules: Mapping[str, RuleBase]) -> None:
        self._topics = topics
        self._rules = rules  # the daemon's own, changed in place by a reload
        self._handlers: list[tuple[str, Callable[[Inbound], None]]] = []
        self._known: dict[str, Route] = {}

    def add(self, topic_filter: str, handler: Callable[[Inbound], None]) -> None:
        self._handlers.append((topic_filter, handler))
        self._known.clear()

    def changed(self) -> None:
        """The rules changed: their inputs may have."""
        self._known.clear()

    def of(self, topic: str) -> Route:
        route = self._known.get(topic)
        if route is None:
            if len(self._known) >= MAX_TOPICS:
                self._known.clear()
            route = self._known[topic] = self._find(topic)
        return route

    def _find(self, topic: str) -> Route:
        for topic_filter, handler in self._handlers:
            if paho.topic_matches_sub(topic_filter, topic):
                return Route(handler, ())
        run_rule = self._topics.rule_of_run_topic(topic)
        if run_rule is not None:
            return Route(None, ((run_rule, True),))
        return Route(
            None,
            tuple(
                (rule.name, False)
                for rule in self._rules.values()
                if any(paho.topic_matches_sub(spec.mqtt, topic) for spec in rule.inputs)
            ),
        )
