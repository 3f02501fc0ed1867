"""Showing URLs without the credentials they may carry. Pure; imports nothing of the bridge."""

from urllib.parse import parse_qsl, urlencode, urlsplit

HIDDEN = "***"


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
    """`text` with every http(s) URL in it redacted (for error texts that quote a URL)."""
    words = text.split(" ")
    return " ".join(
        redact_url(word) if word.startswith(("http://", "https://", "mqtt://", "mqtts://")) else word
        for word in words
    )
