"""The REST API under /api: the same actions as the console's pages, documented in OpenAPI."""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Path, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from bridge.pipeline.images import sniff_image
from bridge.pipeline.intake import Submission
from bridge.web.console import Console
from bridge.web.inputs import read_input, read_upload, try_once
from bridge.web.jobs import job_detail, job_picture, rule_summaries
from bridge.web.queries import MAX_LIMIT, Outcome, job_summary

JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{1,40}$", description="A job id")]
RuleName = Annotated[str, Path(pattern=r"^[a-z0-9_]{1,64}$", description="A rule's name")]
WAIT_MAX = 120.0


class Paused(BaseModel):
    paused: bool


def api_router(console: Console) -> APIRouter:
    """Every /api route but Todo's (which the Todo feature brings)."""
    router = APIRouter(prefix="/api", tags=["console"])
    core, view, hub = console.core, console.view, console.hub

    def rule_or_404(name: str) -> Any:
        rule = core.rules.get(name)
        if rule is None:
            raise HTTPException(404, f"unknown rule {name!r}; known rules: {', '.join(sorted(core.rules))}")
        return rule

    @router.get("/health")
    async def health() -> dict[str, Any]:
        """The broker link, the backend and the queue."""
        stats = core.stats()
        return {
            **await core.health(),
            "queue_depth": stats.get("queue_depth"),
            "running": stats.get("running"),
            "event_streams": hub.streams,
        }

    @router.get("/jobs")
    async def jobs(
        rule: Annotated[str | None, Query(max_length=64)] = None,
        outcome: Outcome | None = None,
        before: Annotated[str | None, Query(pattern=r"^[0-9a-f]{1,40}$")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    ) -> dict[str, Any]:
        """Jobs, newest first; pass the answer's `next` as `before` for the next page."""
        rows = await asyncio.to_thread(view.jobs, rule=rule, outcome=outcome, before=before, limit=limit)
        return {
            "items": [job_summary(row) for row in rows],
            "next": rows[-1].id if len(rows) == limit else None,
        }

    @router.get("/jobs/{job_id}")
    async def job(job_id: JobId) -> dict[str, Any]:
        """A job: input, result or error, what was sent to the model and what it answered."""
        return await job_detail(console, job_id)

    @router.get("/jobs/{job_id}/image", response_class=Response)
    async def image(job_id: JobId, original: bool = False, thumb: bool = False) -> Response:
        """The job's picture as sent to the model (cropped, resized), or `original=1` as received."""
        data = await job_picture(console, job_id, original=original, thumb=thumb)
        media = "image/jpeg"
        if original:
            media = {"PNG": "image/png", "WEBP": "image/webp"}.get(sniff_image(data) or "", "image/jpeg")
        return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=86400"})

    @router.get("/rules")
    async def rules() -> dict[str, Any]:
        """Every rule with its counters, paused flag and last answer."""
        return {"items": await rule_summaries(console)}

    @router.post(
        "/rules/{name}/run",
        openapi_extra={
            "requestBody": {
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "image": {"type": "string", "format": "binary"},
                                "text": {"type": "string"},
                            },
                        }
                    },
                    "application/json": {"schema": {"type": "object"}},
                    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                }
            }
        },
        responses={202: {"description": "Still running after `wait` seconds; poll /api/jobs/{job_id}"}},
    )
    async def run(
        name: RuleName,
        request: Request,
        wait: Annotated[float | None, Query(ge=0, le=WAIT_MAX)] = None,
    ) -> JSONResponse:
        """Run a rule on an image and/or text (multipart), a JSON object as on MQTT, or raw image
        bytes; the job goes through the journal and outbox like an MQTT job (source `web`)."""
        rule = rule_or_404(name)
        parsed = await read_input(console, request)
        job_id = core.submit(Submission(rule=rule.name, source="web", parsed=parsed, interactive=True))
        if job_id is None:
            raise HTTPException(409, "a job with this input's `id` was already run for this rule")
        final = await hub.wait_for(job_id, console.settings.run_timeout if wait is None else wait)
        if final is None:
            return JSONResponse(
                {"job_id": job_id, "state": "queued", "url": f"/api/jobs/{job_id}"},
                status_code=202,
                headers={"Location": f"/api/jobs/{job_id}"},
            )
        body = {"job_id": job_id, "state": final["type"].removeprefix("job_")}
        for key in ("result", "error", "reason"):
            if key in final:
                body[key] = final[key]
        return JSONResponse(body)

    @router.post("/rules/{name}/check", status_code=202)
    async def check(name: RuleName) -> dict[str, Any]:
        """Take a snapshot from the rule's camera now and judge it (rules with `snapshot:`)."""
        rule = rule_or_404(name)
        if rule.snapshot is None:
            raise HTTPException(409, f"rule {name!r} has no snapshot source to check")
        core.check(name)
        return {"rule": name, "checking": True}

    @router.put("/rules/{name}/paused")
    async def set_paused(name: RuleName, body: Paused) -> dict[str, Any]:
        """Pause or resume the rule's schedule (rules with `schedule:`); kept across restarts."""
        rule = rule_or_404(name)
        if rule.schedule is None:
            raise HTTPException(409, f"rule {name!r} has no schedule to pause")
        core.set_paused(name, body.paused)
        return {"rule": name, "paused": body.paused}

    @router.get("/models")
    async def models() -> dict[str, Any]:
        """The models the backend has pulled (for the Try page)."""
        return {"items": await core.models()}

    @router.post("/try")
    async def try_(
        rule: Annotated[str | None, Form(max_length=64)] = None,
        prompt: Annotated[str | None, Form(max_length=8000)] = None,
        model: Annotated[str | None, Form(max_length=200)] = None,
        text: Annotated[str | None, Form(max_length=32_000)] = None,
        image: Annotated[UploadFile | None, File()] = None,
    ) -> dict[str, Any]:
        """Run a rule, or a free `prompt` with a `model`, once on an image and/or text;
        nothing is journaled or published."""
        data = await read_upload(console, image)
        return await try_once(console, rule=rule, prompt=prompt, model=model, text=text, image=data)

    @router.get("/events", response_class=StreamingResponse)
    async def events(request: Request) -> StreamingResponse:
        """Server-Sent Events: every `<base>/bridge/event` message, `job_done` with its result."""
        return StreamingResponse(
            hub.stream(request.headers.get("last-event-id")),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router
