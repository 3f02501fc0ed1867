"""The web console's guard, as pure functions: Host allow-list, signed sessions, token rule."""

import pytest

from bridge.config.http import HttpSettings
from bridge.web.guard import host_allowed, session_valid, sign_session


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost:8765", True),
        ("127.0.0.1:8765", True),
        ("[::1]:8765", True),
        ("192.168.1.20:8765", True),  # an address cannot be rebound
        ("llm2mqtt.home.arpa", True),  # listed in http.hosts
        ("LLM2MQTT.home.arpa:8765", True),
        ("attacker.example", False),
        ("localhost.attacker.example", False),
        ("", False),
    ],
)
def test_host_allow_list(host: str, allowed: bool) -> None:
    assert host_allowed(host, frozenset({"llm2mqtt.home.arpa"})) is allowed


def test_sessions_are_signed_with_the_token_and_expire() -> None:
    value = sign_session("token-a" * 3, 1_000_000)
    assert session_valid("token-a" * 3, value, 3600, 1_000_100)
    assert not session_valid("token-b" * 3, value, 3600, 1_000_100)  # a new token ends every session
    assert not session_valid("token-a" * 3, value, 3600, 1_004_000)  # expired
    assert not session_valid("token-a" * 3, value.replace("1000000", "1000001"), 3600, 1_000_100)
    assert not session_valid("token-a" * 3, "garbage", 3600, 1_000_100)


def test_off_loopback_a_token_is_required() -> None:
    with pytest.raises(ValueError, match=r"set http\.token"):
        HttpSettings(enabled=True, host="0.0.0.0")
