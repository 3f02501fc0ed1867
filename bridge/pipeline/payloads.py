"""Turning an input payload (image bytes, a JSON object or plain text) into job input. Pure."""

import base64
import binascii
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.errors import InputError

# Magic numbers of the image formats a model accepts; decoding happens later, in a worker.
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")
_RESERVED = frozenset({"id", "text", "image", "image_url"})
# Deeper JSON is refused: no input needs it, and Python's parser and encoder recurse.
MAX_JSON_DEPTH = 32
Accepts = Literal["image", "text", "any"]


@dataclass(frozen=True)
class JobInput:
    """What a job needs from its input; `fields` are the other JSON keys, for templates."""

    kind: Literal["image", "json", "text"]
    text: str | None = None
    image: bytes | None = None
    image_url: str | None = None
    id: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def has_image(self) -> bool:
        return self.image is not None or self.image_url is not None


def looks_like_image(payload: bytes) -> bool:
    return payload.startswith(_IMAGE_MAGIC) or (payload[:4] == b"RIFF" and payload[8:12] == b"WEBP")


def payload_hash(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def parse_payload(payload: bytes, *, max_bytes: int, max_text: int) -> JobInput:
    """Classify and validate a payload; InputError says what is wrong with it."""
    if len(payload) > max_bytes:
        raise InputError(
            f"payload is {len(payload):,} bytes, above the limit of {max_bytes:,} (limits.max_payload)"
        )
    if not payload:
        raise InputError("payload is empty")
    if looks_like_image(payload):
        return JobInput(kind="image", image=payload)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"payload is neither an image (JPEG, PNG, WebP) nor UTF-8 text "
            f"(invalid byte 0x{payload[exc.start]:02x} at offset {exc.start})"
        ) from None
    if text.lstrip().startswith("{"):
        return _parse_json(text, max_bytes=max_bytes, max_text=max_text)
    return JobInput(kind="text", text=_checked_text(text, max_text))


def _parse_json(text: str, *, max_bytes: int, max_text: int) -> JobInput:
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise InputError(f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise InputError(f"invalid JSON: {str(exc).partition(':')[0]}") from None
    if not isinstance(data, dict):
        raise InputError("a JSON input must be an object")
    return job_input_from_object(data, max_bytes=max_bytes, max_text=max_text)


def _no_constant(name: str) -> Any:
    raise InputError(f"invalid JSON: {name} is not a number JSON allows")


def check_json_values(data: dict[str, Any]) -> None:
    """Refuse what parses but cannot be stored or sent on: deep nesting, infinite numbers,
    strings with unpaired surrogates (`\\ud800`), which UTF-8 cannot encode."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise InputError(f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    _check_string(key)
                stack.append((item, depth + 1))
        elif isinstance(value, str):
            _check_string(value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise InputError("invalid JSON: a number is too large")


def _check_string(value: str) -> None:
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"invalid JSON: a string holds an unpaired surrogate (\\u{ord(value[exc.start]):04x}), "
            "which is not text"
        ) from None


def job_input_from_object(data: dict[str, Any], *, max_bytes: int, max_text: int) -> JobInput:
    """Validate the well-known keys of a JSON input; every other key goes to the templates."""
    check_json_values(data)
    ident = data.get("id")
    if ident is not None and (isinstance(ident, bool) or not isinstance(ident, str | int)):
        raise InputError(f"'id' must be a string or an integer, not {_type_name(ident)}")
    text = data.get("text")
    if text is not None and not isinstance(text, str):
        raise InputError(f"'text' must be a string, not {_type_name(text)}")
    image = data.get("image")
    image_bytes = None
    if image is not None:
        if not isinstance(image, str):
            raise InputError(f"'image' must be a base64 string, not {_type_name(image)}")
        image_bytes = _decode_base64(image, max_bytes)
        if not looks_like_image(image_bytes):
            raise InputError("'image' is not a JPEG, PNG or WebP image")
    url = data.get("image_url")
    if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
        raise InputError("'image_url' must be an http:// or https:// URL")
    if image_bytes is not None and url is not None:
        raise InputError("give either 'image' or 'image_url', not both")
    fields = {k: v for k, v in data.items() if k not in _RESERVED}
    return JobInput(
        kind="json",
        text=_checked_text(text, max_text) if text is not None else None,
        image=image_bytes,
        image_url=url,
        id=str(ident) if ident is not None else None,
        fields=fields,
    )


def _decode_base64(value: str, max_bytes: int) -> bytes:
    if value.startswith("data:"):
        # A data URL, as browsers produce: data:image/jpeg;base64,....
        value = value.partition(",")[2]
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("'image' is not valid base64") from None
    if len(data) > max_bytes:
        raise InputError(f"'image' is {len(data):,} bytes, above the limit of {max_bytes:,}")
    return data


def _checked_text(text: str, max_text: int) -> str:
    if not text.strip():
        raise InputError("the text is empty")
    if "\x00" in text:
        raise InputError(f"the text holds a NUL character (at offset {text.index(chr(0))}); it is not text")
    size = len(text.encode("utf-8"))
    if size > max_text:
        raise InputError(f"the text is {size:,} bytes, above the limit of {max_text:,} (limits.max_text)")
    return text


def accepts_problem(accepts: Accepts, *, has_image: bool, has_text: bool) -> str | None:
    """Why a rule that accepts `accepts` cannot take this input, or None."""
    if accepts == "image" and not has_image:
        return "this rule accepts only images (accepts: image); the input is not a JPEG, PNG or WebP image"
    if accepts == "text" and has_image:
        return "this rule accepts only text (accepts: text); the input holds an image"
    if accepts == "text" and not has_text:
        return "this rule accepts only text (accepts: text); the input has no text"
    return None


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", bool: "a boolean", float: "a number", int: "a number"}.get(
        type(value), type(value).__name__
    )


def summarize(payload: bytes) -> dict[str, Any]:
    """A short, safe description of an input for error messages (never the whole payload)."""
    summary: dict[str, Any] = {"bytes": len(payload)}
    if looks_like_image(payload):
        summary["kind"] = "image"
        return summary
    try:
        text = payload[:4096].decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        summary["kind"] = "binary"
        return summary
    summary["kind"] = "json" if text.lstrip().startswith("{") else "text"
    summary["head"] = text[:80]
    return summary
