"""secrets.yaml, and hiding what came from `!secret` or `!env` in every problem shown."""

from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[str | int, ...]


def format_path(at: Path_) -> str:
    """A key path as problems show it: `mqtt.tls.ca_certs`, `inputs.0.mqtt`."""
    return ".".join(str(p) for p in at) or "(top level)"


class Secrets:
    """secrets.yaml beside config.yaml, read on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._values: dict[str, Any] | None = None
        # Where a !secret or !env value was put (file, key path, label, value): never echoed.
        self.used: list[tuple[Path, Path_, str, str]] = []

    def hide(self, problems: list[str]) -> list[str]:
        """`problems` with every value that came from !secret or !env replaced by its label."""
        return [self._hide(problem) for problem in problems]

    def _hide(self, problem: str) -> str:
        for file, at, label, value in self.used:
            here = problem.startswith(f"{file}: {format_path(at)}")
            # Short values are hidden only in their own key's message: "1" is in many texts.
            if value and (here or len(value) >= 6):
                problem = problem.replace(repr(value), label).replace(value, label)
        return problem

    def get(self, name: str) -> Any:
        if self._values is None:
            loaded = yaml.safe_load(self.path.read_text("utf-8")) if self.path.exists() else {}
            self._values = loaded if isinstance(loaded, dict) else {}
        return self._values.get(name)
