"""Fetching an image over HTTP(S): bounded in time and size, and checked to be an image."""

import httpx

from bridge.errors import InputError


async def fetch_image(
    client: httpx.AsyncClient,
    url: str,
    *,
    max_bytes: int,
    timeout: float = 10.0,
    headers: dict[str, str] | None = None,
) -> bytes:
    """The body at `url`; InputError says why it is not a usable image."""
    try:
        async with client.stream("GET", url, timeout=timeout, headers=headers) as response:
            if response.status_code != 200:
                raise InputError(f"fetching {url} answered HTTP {response.status_code}")
            kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind and not kind.startswith("image/") and kind != "application/octet-stream":
                raise InputError(f"{url} sent {kind}, not an image")
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise InputError(f"{url} sends {int(declared):,} bytes, above the limit of {max_bytes:,}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise InputError(f"{url} sent more than the limit of {max_bytes:,} bytes")
            return bytes(body)
    except httpx.TimeoutException:
        raise InputError(f"fetching {url} timed out after {timeout:.0f}s") from None
    except httpx.HTTPError as exc:
        raise InputError(f"fetching {url} failed: {exc}") from None
