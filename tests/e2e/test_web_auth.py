"""Who may use the web console: the token off loopback, the login cookie, cross-site refusal."""

from collections.abc import Iterator

import httpx
import pytest

from bridge.web.guard import sign_session
from tests.support.web_console import TOKEN, Console, console_daemon, lan_address


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    with console_daemon(tmp_path_factory.mktemp("web-auth"), host="0.0.0.0", token=TOKEN) as running:
        address = lan_address()
        if address is not None:
            running.url = f"http://{address}:{running.port}"
        yield running


@pytest.mark.broker
def test_without_the_token_nothing_is_served(remote: Console) -> None:
    with httpx.Client(base_url=remote.url, timeout=10) as anonymous:
        for path in ("/api/health", "/api/jobs", "/openapi.json", "/api/events", "/api/todo/tasks"):
            refused = anonymous.get(path)
            assert refused.status_code == 401, path
            assert "log in at /login" in refused.json()["detail"]
        page = anonymous.get("/rules?x=1", headers={"Accept": "text/html"})
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=%2Frules%3Fx%3D1"
        assert anonymous.get("/login").status_code == 200
        assert anonymous.get("/static/console.css").status_code == 200
        assert anonymous.post("/api/rules/message_topic/run", json={"text": "x"}).status_code == 401
        wrong = anonymous.get("/api/health", headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 401


@pytest.mark.broker
def test_the_bearer_token_opens_the_api(remote: Console) -> None:
    with remote.client() as api:
        assert api.get("/api/health").status_code == 200
        assert api.post("/api/rules/message_topic/run", json={"text": "hello"}).status_code == 200


@pytest.mark.broker
def test_login_gives_an_httponly_strict_session_cookie(remote: Console) -> None:
    with httpx.Client(base_url=remote.url, timeout=10) as browser:
        refused = browser.post("/login", data={"token": "not it", "next": "/rules"})
        assert refused.status_code == 401
        assert "not right" in refused.text
        signed = browser.post("/login", data={"token": TOKEN, "next": "/rules"})
        assert signed.status_code == 303
        assert signed.headers["location"] == "/rules"
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie.replace("Strict", "strict")
        assert browser.get("/api/health").status_code == 200  # the cookie jar sends it
        assert browser.get("/rules").status_code == 200
        own = {"Origin": remote.url}
        assert (
            browser.post("/api/rules/message_topic/run", json={"text": "hi"}, headers=own).status_code == 200
        )
        # The same cookie on a request another site makes is refused before anything happens.
        evil = {"Origin": "http://attacker.example"}
        assert (
            browser.post("/api/rules/message_topic/run", json={"text": "hi"}, headers=evil).status_code == 403
        )
        browser.post("/logout", headers=own)
        assert browser.get("/api/health").status_code == 401


@pytest.mark.broker
def test_login_never_redirects_off_the_console(remote: Console) -> None:
    with httpx.Client(base_url=remote.url, timeout=10) as browser:
        for target in ("https://attacker.example/", "//attacker.example/x", "javascript:alert(1)"):
            signed = browser.post("/login", data={"token": TOKEN, "next": target})
            assert signed.headers["location"] == "/"


@pytest.mark.broker
def test_a_forged_cookie_is_refused(remote: Console) -> None:
    forged = sign_session("some-other-token-000", 2_000_000_000)
    with httpx.Client(base_url=remote.url, timeout=10, cookies={"llm2mqtt_session": forged}) as browser:
        assert browser.get("/api/health").status_code == 401
