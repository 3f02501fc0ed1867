"""One rule run once on one input, outside the daemon: what `try` prints and `eval` measures.

The input is prepared as the runner prepares it (crop, resize) and asked through the runner's
own `ask_model` (schema, re-ask, labels); nothing is journaled or published.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.config.rules import RuleBase
from bridge.config.settings import LimitsSettings
from bridge.pipeline.backend_pool import BackendPool, Member, ModelServer
from bridge.pipeline.images import PreparedImage, prepare_image
from bridge.pipeline.runner import Outcome, ask_model, image_spec
from handlers import Handler, PromptInput


@dataclass(frozen=True)
class Trial:
    """A rule's answer to one input, with what it cost."""

    outcome: Outcome
    image: PreparedImage | None

    @property
    def llm_ms(self) -> float:
        return sum(reply.wall_ms for reply in self.outcome.replies)

    @property
    def tokens(self) -> int:
        return sum(reply.prompt_tokens + reply.eval_tokens for reply in self.outcome.replies)

    def result(self, rule: RuleBase) -> dict[str, Any]:
        """The result JSON as `llm2mqtt try` prints it."""
        replies = self.outcome.replies
        result: dict[str, Any] = {
            "rule": rule.name,
            **self.outcome.answer.fields,
            "model": replies[-1].model,
            "backend": self.outcome.backend,
            "timings": {
                "llm": round(self.llm_ms, 1),
                "load": round(sum(r.load_ms for r in replies), 1),
                "prompt_eval": round(sum(r.prompt_ms for r in replies), 1),
                "eval": round(sum(r.eval_ms for r in replies), 1),
            },
            "tokens": {
                "prompt": sum(r.prompt_tokens for r in replies),
                "eval": sum(r.eval_tokens for r in replies),
            },
            "calls": len(replies),
        }
        if self.image is not None:
            image = self.image
            result["image"] = {"width": image.width, "height": image.height, "bytes": len(image.data)}
        return result


def prepare(rule: RuleBase, limits: LimitsSettings, data: bytes) -> PreparedImage:
    """The image as the rule's jobs see it (cropped, resized); raises ImageError."""
    return prepare_image(data, image_spec(rule, limits))


async def run_trial(
    backend: BackendPool | ModelServer,
    handler: Handler[Any],
    rule: RuleBase,
    *,
    text: str | None,
    image: PreparedImage | None,
    fields: dict[str, Any] | None = None,
    backends: Sequence[str] = ("ollama",),
) -> Trial:
    """Ask `rule` about one prepared input, exactly as a job would: through the configured
    pool and the rule's `backends`, or through one server (the caller bounds its concurrency).
    `fields` are what a feature's `prepare` would add (a note's Todo candidates)."""
    prompt = PromptInput(text=text, image=image.data if image else None, fields=fields or {})
    if isinstance(backend, BackendPool):
        outcome = await ask_model(backend, handler, rule, prompt, backends=backends)
    else:
        single = BackendPool([Member(backends[0], backend, parallel=1_000)])
        try:
            outcome = await ask_model(single, handler, rule, prompt, backends=backends[:1])
        finally:
            await single.close(servers=False)
    outcome.image = image
    return Trial(outcome, image)
