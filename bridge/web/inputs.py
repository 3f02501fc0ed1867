"""Turning what a browser or a script sends into job input, and the Try page's one-off run."""

import asyncio
from typing import Any

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile

from bridge.config.handler_rules import DescribeRule
from bridge.config.rules import RuleBase
from bridge.errors import AnswerError, BackendError, BackendUnavailable, InputError
from bridge.pipeline.images import ImageError, prepare_image
from bridge.pipeline.payloads import JobInput, looks_like_image, parse_payload
from bridge.web.console import Console
from handlers import PromptInput

NOT_AN_IMAGE = "the upload is not a JPEG, PNG or WebP image"


async def read_upload(console: Console, upload: UploadFile | None) -> bytes | None:
    """The bytes of an uploaded image (None for an empty file field); 413/415 when unusable."""
    if upload is None or (not upload.filename and not upload.size):
        return None
    limit = console.core.limits.max_payload
    data = await upload.read(limit + 1)
    if not data:
        return None
    if len(data) > limit:
        raise HTTPException(413, f"the image is over the limit of {limit:,} bytes (limits.max_payload)")
    if not looks_like_image(data):
        raise HTTPException(415, NOT_AN_IMAGE)
    return data


async def read_input(console: Console, request: Request) -> JobInput:
    """A rule's input from multipart (`image`, `text`), JSON as on MQTT, raw image bytes or text."""
    limits = console.core.limits
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form(max_files=1, max_fields=10)
        upload = form.get("image")
        image = await read_upload(console, upload if isinstance(upload, UploadFile) else None)
        text = form.get("text")
        text = text if isinstance(text, str) and text.strip() else None
        if text is not None and len(text.encode()) > limits.max_text:
            raise HTTPException(
                422, f"the text is over the limit of {limits.max_text:,} bytes (limits.max_text)"
            )
        if image is None and text is None:
            raise HTTPException(422, "give an image, a text, or both")
        return JobInput(kind="image" if text is None else "json", text=text, image=image)
    payload = await request.body()
    if kind.startswith("image/") and not looks_like_image(payload):
        raise HTTPException(415, NOT_AN_IMAGE)
    try:
        parsed = parse_payload(payload, max_bytes=limits.max_payload, max_text=limits.max_text)
    except InputError as exc:
        raise HTTPException(422, str(exc)) from None
    if parsed.image_url is not None:
        raise HTTPException(422, "'image_url' is not taken from the web API: upload the image")
    return parsed


def try_rule(console: Console, rule: str | None, prompt: str | None, model: str | None) -> RuleBase:
    """The rule a Try runs: a configured one (its prompt or model replaced), or a free prompt."""
    if rule:
        found = console.core.rules.get(rule)
        if found is None:
            raise HTTPException(404, f"unknown rule {rule!r}")
        update = {k: v for k, v in (("prompt", prompt), ("model", model)) if v}
        return found.model_copy(update=update) if update else found
    if not prompt or not model:
        raise HTTPException(422, "pick a rule, or give both a prompt and a model")
    return DescribeRule(name="try", handler="describe", model=model, prompt=prompt, max_chars=1000)


async def try_once(
    console: Console,
    *,
    rule: str | None,
    prompt: str | None,
    model: str | None,
    text: str | None,
    image: bytes | None,
) -> dict[str, Any]:
    """Run once against the backend and answer with the result; nothing is published."""
    chosen = try_rule(console, rule, prompt, model)
    text = text if text and text.strip() else None
    if text is None and image is None:
        raise HTTPException(422, "give an image, a text, or both")
    prepared = None
    if image is not None:
        spec = console.core.image_spec(chosen)
        try:
            prepared = await asyncio.to_thread(prepare_image, image, spec)
        except ImageError as exc:
            raise HTTPException(415, f"{NOT_AN_IMAGE}: {exc}") from None
    try:
        result = await console.core.ask(
            chosen, PromptInput(text=text, image=prepared.data if prepared else None)
        )
    except InputError as exc:
        raise HTTPException(422, str(exc)) from None
    except (BackendUnavailable, BackendError, AnswerError) as exc:
        raise HTTPException(502, str(exc)) from None
    if prepared is not None:
        result["image"] = {"width": prepared.width, "height": prepared.height}
    return {"rule": chosen.name, "model": chosen.model, "result": result}
