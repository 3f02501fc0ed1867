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
    def request_filter(self) -> str:
        return f"{self.base}/bridge/request/#"

    def request(self, name: str) -> str:
        return f"{self.base}/bridge/request/{name}"

    def response(self, name: str) -> str:
        return f"{self.base}/bridge/response/{name}"

    def request_name(self, topic: str) -> str | None:
        """The request named by `<base>/bridge/request/<name>` (name may have levels), or None."""
        prefix = f"{self.base}/bridge/request/"
        return topic[len(prefix) :] or None if topic.startswith(prefix) else None

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

    def image(self, rule: str) -> str:
        """The last judged picture of a rule (retained JPEG)."""
        return f"{self.base}/{rule}/image"

    def check(self, rule: str) -> str:
        return f"{self.base}/{rule}/check"

    def paused(self, rule: str) -> str:
        return f"{self.base}/{rule}/paused"

    def paused_set(self, rule: str) -> str:
        return f"{self.base}/{rule}/paused/set"

    @property
    def check_filter(self) -> str:
        return self.check("+")

    @property
    def paused_set_filter(self) -> str:
        return self.paused_set("+")

    def rule_of(self, topic: str, suffix: str) -> str | None:
        """The rule named by `<base>/<rule>/<suffix>`, or None for any other topic."""
        prefix = f"{self.base}/"
        if not topic.startswith(prefix) or not topic.endswith(f"/{suffix}"):
            return None
        name = topic[len(prefix) : -len(suffix) - 1]
        return name if name and "/" not in name else None

    @property
    def todo_note(self) -> str:
        return f"{self.base}/todo/note"

    @property
    def todo_event(self) -> str:
        return f"{self.base}/todo/event"

    @property
    def todo_list(self) -> str:
        return f"{self.base}/todo/list"

    @property
    def todo_confirm(self) -> str:
        return f"{self.base}/todo/confirm"

    def rule_of_run_topic(self, topic: str) -> str | None:
        """The rule named by `<base>/<rule>/run`, or None for any other topic."""
        return self.rule_of(topic, "run")
