"""Showing configuration and URLs without the secrets they may carry. Pure.

One place for it: the effective configuration (bridge/info, the web page), log lines and
error messages all show a URL the same way, with its user information and query values hidden.
"""

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from bridge.config.rules import RuleBase
from bridge.config.settings import Settings

REDACTED = "**********"
_SECRET_WORDS = ("password", "token", "secret", "access_key", "api_key", "apikey")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"'<>]+", re.IGNORECASE)


def redact(value: Any, key: str = "") -> Any:
    """`value` with every secret-named key's value replaced and every URL in it redacted."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, key) for v in value]
    if value is not None and any(word in key.lower() for word in _SECRET_WORDS):
        return REDACTED
    if isinstance(value, str) and "://" in value:
        return redact_urls_in(value)
    return value


def redact_url(url: str) -> str:
    """`url` as it may be logged or published: user:password@ and every query value hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED  # not even a URL: show nothing of it
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(key, REDACTED) for key, _ in pairs], safe="*") if pairs else REDACTED
    return parts._replace(netloc=netloc, query=query, fragment="").geturl()


def redact_urls_in(text: str) -> str:
    """`text` with every URL in it redacted (error texts and payload heads that quote one)."""
    return _URL.sub(lambda match: redact_url(match.group(0)), text)


def effective_config(settings: Settings, rules: Iterable[RuleBase]) -> dict[str, Any]:
    """Settings and rules as the daemon runs them (defaults filled in), without secrets."""
    dumped: dict[str, Any] = redact(settings.model_dump(mode="json"))
    dumped["rules"] = []
    for rule in rules:
        shown = redact(rule.model_dump(mode="json", exclude_defaults=True))
        for target in shown.get("notify", []):
            # Apprise URLs carry their tokens anywhere (tgram://bot-token/chat): only the scheme shows.
            target["url"] = f"{target['url'].partition('://')[0]}://{REDACTED}"
        dumped["rules"].append(shown)
    return dumped
