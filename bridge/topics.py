"""Topic names, all in one place. Pure."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    """The bridge's topics under its base topic."""

    base: str = "llm2mqtt"

    @property
    def state(self) -> str:
        return f"{self.base}/bridge/state"

    @property
    def info(self) -> str:
        return f"{self.base}/bridge/info"

    @property
    def event(self) -> str:
        return f"{self.base}/bridge/event"

    @property
    def stats(self) -> str:
        return f"{self.base}/bridge/stats"

    @property
    def models(self) -> str:
        return f"{self.base}/bridge/models"

    @property
    def health(self) -> str:
        return f"{self.base}/bridge/health"

    @property
    def run_filter(self) -> str:
        return f"{self.base}/+/run"

    def run(self, rule: str) -> str:
        return f"{self.base}/{rule}/run"

    def result(self, rule: str) -> str:
        return f"{self.base}/{rule}/result"

    def rule_state(self, rule: str) -> str:
        return f"{self.base}/{rule}/state"

    def error(self, rule: str) -> str:
        return f"{self.base}/{rule}/error"

    def rule_of_run_topic(self, topic: str) -> str | None:
        """The rule named by `<base>/<rule>/run`, or None for any other topic."""
        prefix = f"{self.base}/"
        if not topic.startswith(prefix) or not topic.endswith("/run"):
            return None
        name = topic[len(prefix) : -len("/run")]
        return name if name and "/" not in name else None
