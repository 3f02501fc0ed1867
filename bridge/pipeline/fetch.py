"""Fetching an image over HTTP(S): bounded in time and size, and checked to be an image.

Two callers with different trust: a rule's `snapshot.url` comes from config.yaml, so its
errors say exactly what went wrong; a job's `image_url` comes from whoever may publish a job,
so it goes through `UrlGuard` and its errors say only "not allowed" or "could not fetch"
(the details, which would map the network for the requester, go to the log).
"""

import asyncio
import logging

import httpx

from bridge.config.redact import redact_url, redact_urls_in
from bridge.errors import InputError
from bridge.pipeline.url_guard import UrlGuard, UrlRefused

log = logging.getLogger(__name__)

NOT_ALLOWED = "image_url is not allowed (see image_url.allow in config.yaml)"
NOT_FETCHED = "could not fetch the image_url"


async def fetch_image(
    client: httpx.AsyncClient,
    url: str,
    *,
    max_bytes: int,
    timeout: float = 10.0,
    headers: dict[str, str] | None = None,
) -> bytes:
    """The body at `url`; InputError says why it is not a usable image."""
    shown = redact_url(url)
    try:
        async with client.stream("GET", url, timeout=timeout, headers=headers) as response:
            return await _read_image(response, shown, max_bytes)
    except httpx.TimeoutException:
        raise InputError(f"fetching {shown} timed out after {timeout:.0f}s") from None
    except httpx.HTTPError as exc:
        raise InputError(f"fetching {shown} failed: {redact_urls_in(str(exc))}") from None


async def fetch_job_image(
    client: httpx.AsyncClient,
    url: str,
    guard: UrlGuard,
    *,
    max_bytes: int,
    timeout: float,
    max_redirects: int,
) -> bytes:
    """A job's image_url, fetched only from allowed addresses within `timeout` in all."""
    shown = redact_url(url)
    try:
        async with asyncio.timeout(timeout):
            return await _fetch_pinned(client, url, guard, max_bytes, max_redirects)
    except UrlRefused as exc:
        log.warning("image_url %s refused: %s", shown, exc)
        raise InputError(NOT_ALLOWED) from None
    except TimeoutError:
        log.warning("image_url %s: no complete answer within %.0fs", shown, timeout)
        raise InputError(NOT_FETCHED) from None
    except httpx.HTTPError as exc:
        log.warning("image_url %s: %s: %s", shown, type(exc).__name__, redact_urls_in(str(exc)))
        raise InputError(NOT_FETCHED) from None
    except InputError as exc:
        log.warning("image_url %s: %s", shown, exc)
        raise InputError(NOT_FETCHED) from None


async def _fetch_pinned(
    client: httpx.AsyncClient, url: str, guard: UrlGuard, max_bytes: int, max_redirects: int
) -> bytes:
    for _ in range(max_redirects + 1):
        target = await guard.check(url)
        async with client.stream(
            "GET", target.url, headers={"Host": target.host_header}, extensions=target.extensions
        ) as response:
            location = response.headers.get("location")
            if response.is_redirect and location:
                url = str(httpx.URL(url).join(location))  # checked again on the next turn
                continue
            return await _read_image(response, redact_url(url), max_bytes)
    raise UrlRefused(f"more than {max_redirects} redirects (image_url.max_redirects)")


async def _read_image(response: httpx.Response, shown: str, max_bytes: int) -> bytes:
    if response.status_code != 200:
        raise InputError(f"fetching {shown} answered HTTP {response.status_code}")
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind and not kind.startswith("image/") and kind != "application/octet-stream":
        raise InputError(f"{shown} sent {kind}, not an image")
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise InputError(f"{shown} sends {int(declared):,} bytes, above the limit of {max_bytes:,}")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise InputError(f"{shown} sent more than the limit of {max_bytes:,} bytes")
    return bytes(body)
