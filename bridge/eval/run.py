"""Running every variant over every sample, through the same path as `llm2mqtt try`."""

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from jinja2 import TemplateSyntaxError

from bridge.config.rules import RuleBase
from bridge.config.settings import LimitsSettings, OllamaSettings
from bridge.config.templates import compile_template
from bridge.errors import AnswerError, BackendError, InputError
from bridge.eval.dataset import Sample
from bridge.pipeline.images import ImageError, PreparedImage
from bridge.pipeline.ollama_backend import OllamaBackend, has_model
from bridge.pipeline.trial import prepare, run_trial
from handlers import Handler, handler_for


@dataclass(frozen=True)
class Variant:
    """The rule with one model and one prompt."""

    name: str
    rule: RuleBase
    prompt_source: str
    handler: Handler[Any]


@dataclass
class Judgement:
    """One variant's answer to one sample (one repeat)."""

    sample: Sample
    variant: str
    repeat: int
    state: str | None = None
    error: str | None = None
    confidence: float | None = None
    calls: int = 0
    llm_ms: float = 0.0
    tokens: int = 0
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def predicted(self) -> str:
        """What the rule answered, as compared with the label ("error" when it did not)."""
        return self.state if self.state is not None else "error"

    @property
    def correct(self) -> bool:
        return self.state is not None and self.state == self.sample.expected


def variants(rule: RuleBase, models: Sequence[str], prompt_files: Sequence[Path]) -> list[Variant]:
    """Models × prompts; the rule's own model and prompt when none are given."""
    prompts = [("rule prompt", rule.prompt)] + [(p.name, p.read_text(encoding="utf-8")) for p in prompt_files]
    out = []
    for model in models or [rule.model]:
        for label, prompt in prompts:
            name = model if len(prompts) == 1 else f"{model} · {label}"
            try:
                compile_template(prompt)
            except TemplateSyntaxError as exc:
                raise InputError(f"{label}: template error on line {exc.lineno}: {exc.message}") from None
            copy = rule.model_copy(update={"model": model, "prompt": prompt})
            out.append(Variant(name=name, rule=copy, prompt_source=label, handler=handler_for(copy)))
    return out


async def missing_models(settings: OllamaSettings, wanted: Sequence[Variant]) -> list[str]:
    """Models the variants need that Ollama has not pulled; raises BackendError when unreachable."""
    backend = OllamaBackend(settings)
    try:
        pulled = await backend.models()
    finally:
        await backend.close()
    return sorted({v.rule.model for v in wanted if not has_model(pulled, v.rule.model)})


class Progress:
    """A bar on a terminal, a line per tenth of the work otherwise."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total, self.done = total, 0
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._last_tenth = -1
        self._started = time.monotonic()

    def step(self, variant: str) -> None:
        self.done += 1
        if self._tty:
            filled = int(30 * self.done / self.total)
            bar = "#" * filled + "." * (30 - filled)
            self._stream.write(f"\r[{bar}] {self.done}/{self.total} {variant[:40]:<40}")
            if self.done == self.total:
                self._stream.write("\n")
        else:
            tenth = 10 * self.done // self.total
            if tenth != self._last_tenth:
                self._last_tenth = tenth
                elapsed = time.monotonic() - self._started
                self._stream.write(f"eval: {self.done}/{self.total} ({elapsed:.1f}s) {variant}\n")
        self._stream.flush()


async def evaluate(
    settings: OllamaSettings,
    limits: LimitsSettings,
    chosen: Sequence[Variant],
    samples: Sequence[Sample],
    *,
    repeat: int = 1,
    progress: Callable[[str], None] = lambda variant: None,
    note_fields: Callable[[str | None, dict[str, Any]], Awaitable[dict[str, Any]]] | None = None,
) -> tuple[list[Judgement], dict[str, PreparedImage]]:
    """Every variant's judgement of every sample, `repeat` times; `settings.parallel` at once.

    Variants run one after the other, so Ollama keeps one model loaded at a time.
    Also returns the prepared images (as the model saw them) by sample name. `note_fields`
    gives a text the fields a job's features would add (a note's Todo candidates), once each.
    """
    images, unreadable = _prepare_all(chosen[0].rule, limits, samples)
    fields = {s.name: await note_fields(s.text, {}) for s in samples} if note_fields else {}
    slots = asyncio.Semaphore(settings.parallel)
    backend = OllamaBackend(settings)
    judgements: list[Judgement] = []

    async def judge(variant: Variant, sample: Sample, round_: int) -> Judgement:
        verdict = Judgement(sample=sample, variant=variant.name, repeat=round_)
        if sample.name in unreadable:
            verdict.error = unreadable[sample.name]
        else:
            async with slots:
                image, extra = images.get(sample.name), fields.get(sample.name)
                await _ask(backend, variant, sample, image, extra, verdict)
        progress(variant.name)
        return verdict

    try:
        for variant in chosen:
            for round_ in range(repeat):
                judgements += await asyncio.gather(*(judge(variant, s, round_) for s in samples))
    finally:
        await backend.close()
    return judgements, images


async def _ask(
    backend: OllamaBackend,
    variant: Variant,
    sample: Sample,
    image: PreparedImage | None,
    fields: dict[str, Any] | None,
    into: Judgement,
) -> None:
    try:
        trial = await run_trial(
            backend, variant.handler, variant.rule, text=sample.text, image=image, fields=fields
        )
    except (InputError, BackendError, AnswerError) as exc:
        into.error = str(exc)
        return
    answer = trial.outcome.answer
    into.state = answer.state
    confidence = answer.fields.get("confidence")
    into.confidence = float(confidence) if isinstance(confidence, int | float) else None
    into.calls = len(trial.outcome.replies)
    into.llm_ms = trial.llm_ms
    into.tokens = trial.tokens
    into.fields = answer.fields


def _prepare_all(
    rule: RuleBase, limits: LimitsSettings, samples: Sequence[Sample]
) -> tuple[dict[str, PreparedImage], dict[str, str]]:
    """Each image once, as the rule's jobs would see it; variants differ only in model and prompt."""
    images: dict[str, PreparedImage] = {}
    unreadable: dict[str, str] = {}
    for sample in samples:
        if sample.path is None:
            continue
        try:
            images[sample.name] = prepare(rule, limits, sample.path.read_bytes())
        except OSError as exc:
            unreadable[sample.name] = f"cannot read {sample.path}: {exc.strerror}"
        except ImageError as exc:
            unreadable[sample.name] = f"{sample.path}: {exc}"
    return images, unreadable
