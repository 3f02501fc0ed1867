"""The effective configuration as it may be shown: secrets replaced, URLs without passwords."""

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from bridge.config.rules import RuleBase
from bridge.config.settings import Settings

REDACTED = "**********"
_SECRET_WORDS = ("password", "token", "secret", "access_key", "api_key", "apikey")


def redact(value: Any, key: str = "") -> Any:
    """`value` with every secret-named key's value replaced and every URL's password removed."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, key) for v in value]
    if value is not None and any(word in key.lower() for word in _SECRET_WORDS):
        return REDACTED
    if isinstance(value, str) and "://" in value and "@" in value:
        return without_password(value)
    return value


def without_password(url: str) -> str:
    """The URL with any `:password` of its user part replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:{REDACTED}@{host}").geturl()


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
