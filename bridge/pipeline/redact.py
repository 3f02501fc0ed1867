"""Showing URLs without the credentials they may carry. Pure; imports nothing of the bridge."""

import re
from urllib.parse import parse_qsl, urlencode, urlsplit

HIDDEN = "***"
_URL = re.compile(r"\b(?:https?|mqtts?)://[^\s\"'<>]+")


def redact_url(url: str) -> str:
    """`url` as it may be logged or published: user:password@ and every query value hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return HIDDEN  # not even a URL: show nothing of it
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{HIDDEN}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(key, HIDDEN) for key, _ in pairs], safe="*") if pairs else HIDDEN
    return parts._replace(netloc=netloc, query=query, fragment="").geturl()


def redact_urls_in(text: str) -> str:
    """`text` with every URL in it redacted (error texts and payload heads that quote one)."""
    return _URL.sub(lambda match: redact_url(match.group(0)), text)
