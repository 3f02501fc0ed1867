"""What the judgements say, per variant: pure arithmetic and a text table."""

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from bridge.eval.run import Judgement, Variant


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile (`share` between 0 and 1) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def summarize(variant: Variant, judgements: Sequence[Judgement], *, low_confidence: float) -> dict[str, Any]:
    """Accuracy, per-label precision and recall, confusion, re-asks, confidence, latency, tokens."""
    mine = [j for j in judgements if j.variant == variant.name]
    answered = [j for j in mine if j.error is None]
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    for j in mine:
        confusion[j.sample.expected][j.predicted] += 1
    labels = sorted({j.sample.expected for j in mine} | {j.state for j in answered if j.state is not None})
    per_label = {}
    for label in labels:
        true_pos = confusion[label][label]
        predicted = sum(row[label] for row in confusion.values())
        actual = sum(confusion[label].values())
        per_label[label] = {
            "precision": _ratio(true_pos, predicted),
            "recall": _ratio(true_pos, actual),
            "support": actual,
        }
    with_confidence = [j for j in answered if j.confidence is not None]
    latencies = [j.llm_ms for j in answered]
    return {
        "variant": variant.name,
        "model": variant.rule.model,
        "prompt": variant.prompt_source,
        "judgements": len(mine),
        "accuracy": _ratio(sum(j.correct for j in mine), len(mine)),
        "errors": len(mine) - len(answered),
        "labels": per_label,
        "confusion": {expected: dict(row) for expected, row in sorted(confusion.items())},
        "reask_share": _ratio(sum(j.calls > 1 for j in answered), len(answered)),
        "low_confidence_share": _ratio(
            sum(j.confidence is not None and j.confidence < low_confidence for j in with_confidence),
            len(with_confidence),
        )
        if with_confidence
        else None,
        "latency_ms": {"p50": _round(percentile(latencies, 0.5)), "p95": _round(percentile(latencies, 0.95))},
        "tokens_per_input": _round(sum(j.tokens for j in answered) / len(answered)) if answered else None,
        "stability": stability(mine),
        "misjudged": [
            {
                "input": j.sample.name,
                "expected": j.sample.expected,
                "answer": j.predicted,
                "repeat": j.repeat,
                **({"confidence": j.confidence} if j.confidence is not None else {}),
                **({"error": j.error} if j.error else {}),
            }
            for j in mine
            if not j.correct
        ],
    }


def stability(judgements: Sequence[Judgement]) -> float | None:
    """Share of inputs whose repeated answers all agree; None without repeats."""
    answers: dict[str, set[str]] = defaultdict(set)
    rounds: Counter[str] = Counter()
    for j in judgements:
        answers[j.sample.name].add(j.predicted)
        rounds[j.sample.name] += 1
    if not rounds or max(rounds.values()) < 2:
        return None
    return _ratio(sum(len(seen) == 1 for seen in answers.values()), len(answers))


HEADERS = ("variant", "accuracy", "errors", "re-asks", "low conf.", "p50 ms", "p95 ms", "tokens", "stable")


def cells(report: dict[str, Any]) -> list[str]:
    """A variant's line of the table, formatted (the terminal and the HTML page share it)."""
    return [
        report["variant"],
        pct(report["accuracy"]),
        str(report["errors"]),
        pct(report["reask_share"]),
        pct(report["low_confidence_share"]),
        num(report["latency_ms"]["p50"]),
        num(report["latency_ms"]["p95"]),
        num(report["tokens_per_input"]),
        pct(report["stability"]),
    ]


def table(reports: Sequence[dict[str, Any]]) -> str:
    """One line per variant, for a terminal."""
    headers = list(HEADERS)
    rows = [cells(r) for r in reports]
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    for r in reports:
        lines.append("")
        lines.append(
            f"{r['variant']}: per label (precision / recall / support), confusion (expected → answer)"
        )
        for label, scores in r["labels"].items():
            answers = ", ".join(f"{k} {v}" for k, v in sorted(r["confusion"].get(label, {}).items()))
            lines.append(
                f"  {label:<16} {pct(scores['precision'])} / {pct(scores['recall'])} / {scores['support']}"
                + (f"   → {answers}" if answers else "")
            )
    return "\n".join(lines)


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def num(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"
