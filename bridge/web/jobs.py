"""Jobs and rules as the console shows them: detail, pictures, per-rule summaries."""

import asyncio
import shlex
from typing import Any

from fastapi import HTTPException

from bridge.pipeline.images import ImageError, ImageSpec
from bridge.pipeline.journal import Job
from bridge.web.console import Console
from bridge.web.queries import job_summary


async def job_detail(console: Console, job_id: str) -> dict[str, Any]:
    """Everything the journal knows about a job; 404 when it is unknown or pruned."""
    found = await asyncio.to_thread(console.view.job, job_id)
    if found is None:
        raise HTTPException(404, f"no job {job_id!r} in the journal (unknown, or pruned after retention)")
    row, detail = found
    data = row.input
    return {
        **job_summary(row),
        "started": row.started,
        "input": {
            "kind": data.get("kind"),
            "text": data.get("text"),
            "fields": data.get("fields") or {},
            "id": data.get("id"),
            "image_url": data.get("image_url"),
            "summary": data.get("summary"),
            "image": row.image,
        },
        "result": row.result,
        "attempts": row.attempts,
        "calls": detail.get("calls", []),
        "errors": detail.get("errors", []),
        "published": published(console, row),
        "try_command": try_command(row),
    }


def published(console: Console, row: Job) -> list[dict[str, Any]]:
    """Where the job's outcome went (the outbox row is gone once delivered; the rule says where)."""
    topics, rule = console.core.topics, console.core.rules.get(row.rule)
    out: list[dict[str, Any]] = []
    reply = (row.input.get("reply") or {}).get("topic")
    if row.state == "done" and rule is not None:
        out.append({"topic": topics.result(row.rule), "retain": rule.outputs.retain, "what": "result"})
        if rule.outputs.state and (row.result or {}).get("state") is not None:
            out.append({"topic": topics.rule_state(row.rule), "retain": rule.outputs.retain, "what": "state"})
    elif row.state in ("failed", "dead"):
        out.append({"topic": topics.error(row.rule), "retain": False, "what": "error"})
    if reply and row.state in ("done", "failed", "dead"):
        out.append({"topic": reply, "retain": False, "what": "reply"})
    if row.state not in ("queued", "running"):
        out.append({"topic": topics.event, "retain": False, "what": "events"})
    return out


def try_command(row: Job) -> str:
    """The `llm2mqtt try` line that runs this job's input again from a shell."""
    parts = ["llm2mqtt", "try", row.rule]
    if row.image is not None:
        parts += ["--image", f"{row.id}.jpg"]
    elif row.input.get("text"):
        parts += ["--text", row.input["text"]]
    return shlex.join(parts)


async def job_picture(console: Console, job_id: str, *, original: bool, thumb: bool) -> bytes:
    """The job's image as received, as sent to the model, or a thumbnail of the latter."""
    view = console.view
    found = await asyncio.to_thread(view.image_of, job_id)
    if found is None:
        raise HTTPException(404, f"job {job_id!r} has no stored image")
    rule_name, digest = found
    data = await asyncio.to_thread(view.blob, digest)
    if data is None:
        raise HTTPException(404, f"the image of job {job_id!r} was pruned")
    if original:
        return data
    rule = console.core.rules.get(rule_name)
    spec = console.core.image_spec(rule) if rule is not None else ImageSpec()
    try:
        return await asyncio.to_thread(console.thumbs.picture, digest, spec, data, thumb=thumb)
    except ImageError as exc:
        raise HTTPException(422, f"the image of job {job_id!r} cannot be shown: {exc}") from None


async def rule_summaries(console: Console) -> list[dict[str, Any]]:
    """Each rule: handler, model, inputs, counters since start, paused flag, last answer."""
    core = console.core
    counters = core.stats().get("rules", {})
    names = sorted(core.rules)
    last = await asyncio.to_thread(lambda: {n: console.view.last_done(n) for n in names})
    items = []
    for name in names:
        rule = core.rules[name]
        done = last[name]
        items.append(
            {
                "name": name,
                "handler": rule.handler,
                "model": rule.model,
                "description": rule.description,
                "inputs": [spec.mqtt for spec in rule.inputs],
                "schedule": rule.schedule.model_dump(mode="json") if rule.schedule else None,
                "can_check": rule.snapshot is not None,
                "paused": core.paused(name),
                "counters": counters.get(name, {}),
                "last": job_summary(done) if done is not None else None,
            }
        )
    return items
