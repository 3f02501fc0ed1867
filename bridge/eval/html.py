"""The self-contained HTML report: table, accuracy against latency, and every misjudged input."""

import base64
import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from bridge.eval.report import HEADERS, cells
from bridge.eval.run import Variant
from bridge.pipeline.images import PreparedImage

THUMB_SIDE = 160
_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}
th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}
.miss{display:flex;gap:1rem;margin:.6rem 0;align-items:flex-start}
.miss img{border:1px solid #999}.miss pre{white-space:pre-wrap;margin:.2rem 0;font-size:12px;color:#555}
.bad{color:#b00}.sub{color:#666}
"""


def render(
    rule: str,
    reports: Sequence[dict[str, Any]],
    chosen: Sequence[Variant],
    images: Mapping[str, PreparedImage],
    texts: Mapping[str, str],
) -> str:
    """The whole page as one string; images are inline data URLs."""
    prompts = {v.name: v.rule.prompt for v in chosen}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>llm2mqtt eval: {html.escape(rule)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>llm2mqtt eval: {html.escape(rule)}</h1>",
        _table(reports),
        "<h2>Accuracy against latency (p50)</h2>",
        plot(reports),
    ]
    thumbs: dict[str, str] = {}
    for report in reports:
        misses = report["misjudged"]
        parts.append(f"<h2>Misjudged by {html.escape(report['variant'])}: {len(misses)}</h2>")
        parts.append(f"<pre class='sub'>prompt: {html.escape(prompts.get(report['variant'], ''))}</pre>")
        for miss in misses:
            name = miss["input"]
            if name in images and name not in thumbs:
                thumbs[name] = thumbnail(images[name])
            picture = (
                f"<img alt='{html.escape(name)}' src='{thumbs[name]}'>"
                if name in thumbs
                else f"<pre>{html.escape(texts.get(name, ''))}</pre>"
            )
            said = miss.get("error") or miss["answer"]
            confidence = f", confidence {miss['confidence']}" if "confidence" in miss else ""
            parts.append(
                f"<div class='miss'>{picture}<div><b>{html.escape(name)}</b><br>"
                f"expected <b>{html.escape(miss['expected'])}</b>, answered "
                f"<b class='bad'>{html.escape(str(said))}</b>{confidence}"
                f" (round {miss['repeat'] + 1})</div></div>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def _table(reports: Sequence[dict[str, Any]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in HEADERS)
    rows = ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(r)) + "</tr>" for r in reports]
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def plot(reports: Sequence[dict[str, Any]], width: int = 520, height: int = 300) -> str:
    """An inline SVG scatter plot: one labelled point per variant."""
    pad = 48
    latencies = [r["latency_ms"]["p50"] or 0.0 for r in reports]
    top = max([*latencies, 1.0]) * 1.1

    def x(ms: float) -> float:
        return pad + (width - 2 * pad) * ms / top

    def y(accuracy: float) -> float:
        return height - pad - (height - 2 * pad) * accuracy

    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' font-size='11'>",
        f"<line x1='{pad}' y1='{height - pad}' x2='{width - pad}' y2='{height - pad}' stroke='#333'/>",
        f"<line x1='{pad}' y1='{pad}' x2='{pad}' y2='{height - pad}' stroke='#333'/>",
        f"<text x='{width / 2}' y='{height - 10}' text-anchor='middle'>latency p50 (ms)</text>",
        f"<text x='12' y='{height / 2}' transform='rotate(-90 12 {height / 2})'"
        " text-anchor='middle'>accuracy</text>",
    ]
    for tick in (0.0, 0.5, 1.0):
        out.append(f"<text x='{pad - 6}' y='{y(tick) + 4}' text-anchor='end'>{tick:.0%}</text>")
    for tick in (0.0, top / 2, top):
        out.append(f"<text x='{x(tick)}' y='{height - pad + 14}' text-anchor='middle'>{tick:.0f}</text>")
    for report, ms in zip(reports, latencies, strict=True):
        cx, cy = x(ms), y(report["accuracy"])
        out.append(f"<circle cx='{cx:.1f}' cy='{cy:.1f}' r='5' fill='#2a6fdb'/>")
        out.append(f"<text x='{cx + 8:.1f}' y='{cy - 6:.1f}'>{html.escape(report['variant'])}</text>")
    out.append("</svg>")
    return "".join(out)


def thumbnail(image: PreparedImage) -> str:
    """A small JPEG of the picture the model saw, as a data URL."""
    with Image.open(io.BytesIO(image.data)) as picture:
        picture.thumbnail((THUMB_SIDE, THUMB_SIDE))
        buffer = io.BytesIO()
        picture.convert("RGB").save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
