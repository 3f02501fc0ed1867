"""The web console in a real headless Chromium (Debian's), against a real daemon and broker.

Each test also saves screenshots of its page at phone and desktop widths under
test-artifacts/screenshots/.
"""

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.keys import Keys

from tests.support.browser import DESKTOP, PHONE, chromium, need_chromium, screenshot
from tests.support.samples import door
from tests.support.web_console import TOKEN, Console, console_daemon, lan_address

ALL_LOADED = "return Array.from(document.images).every((i) => i.complete)"
pytestmark = [pytest.mark.browser, pytest.mark.broker, pytest.mark.slow]


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    need_chromium()
    with console_daemon(tmp_path_factory.mktemp("web-browser")) as running:
        yield running


def wait_until(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception:  # the element is not there yet, or went stale while the page changed
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def css(driver: Any, selector: str) -> Any:
    return driver.find_element("css selector", selector)


def both_widths(console: Console, path: str, name: str, ready: str = "main") -> None:
    """Screenshots of `path` at phone and desktop widths, light and (phone) dark."""
    for size, label, dark in (
        (PHONE, "phone", False),
        (DESKTOP, "desktop", False),
        (PHONE, "phone-dark", True),
    ):
        with chromium(size, dark=dark) as driver:
            driver.get(console.url + path)
            wait_until(lambda d=driver: css(d, ready), what=ready)
            wait_until(lambda d=driver: d.execute_script(ALL_LOADED), what="the pictures")
            time.sleep(0.3)  # the live stream settles
            screenshot(driver, f"{name}-{label}")


def test_live_page_shows_a_job_published_on_mqtt_without_reloading(console: Console) -> None:
    with chromium() as driver:
        driver.get(console.url + "/")
        wait_until(lambda: "on" in css(driver, "#live").get_attribute("class"), what="the event stream")
        driver.execute_script("window.notReloaded = true")
        publisher = console.collector()
        try:
            publisher.publish("cameras/front_door/snapshot", door(locked=True))
        finally:
            publisher.close()
        item = wait_until(
            lambda: next(
                (
                    li
                    for li in driver.find_elements("css selector", "#jobs li.job")
                    if "state-done" in li.get_attribute("class")
                ),
                None,
            ),
            what="the job to show as done",
        )
        assert "front_door_lock" in item.text
        assert "locked" in css(item, ".answer").text
        assert "mqtt:cameras/front_door/snapshot" in item.text
        wait_until(
            lambda: driver.execute_script("return arguments[0].naturalWidth", css(item, ".thumb img")) > 0
        )
        assert driver.execute_script("return window.notReloaded") is True
        screenshot(driver, "live-desktop-after-mqtt-job")


def test_try_answers_an_uploaded_image(console: Console, tmp_path: Path) -> None:
    picture = tmp_path / "door.jpg"
    picture.write_bytes(door(locked=False))
    with chromium() as driver:
        driver.get(console.url + "/try?rule=front_door_lock")
        css(driver, "#try-image").send_keys(str(picture))
        css(driver, "#try-go").click()
        answer = wait_until(lambda: css(driver, "#try-answer").text, what="the answer")
        assert answer == "unlocked"  # the stand-in says no for a dark picture
        assert "qwen2.5vl:3b" in css(driver, "#try-timings").text
        for width, label in ((PHONE, "phone"), (DESKTOP, "desktop")):
            driver.set_window_size(*width)
            screenshot(driver, f"try-{label}")


def test_a_rules_history_shows_the_picture(console: Console) -> None:
    with console.client() as api:
        ran = api.post(
            "/api/rules/front_door_lock/run", files={"image": ("d.jpg", door(True), "image/jpeg")}
        ).json()
    with chromium(PHONE) as driver:
        driver.get(console.url + "/rules/front_door_lock")
        link = css(driver, f'#timeline a[href="/jobs/{ran["job_id"]}"]')
        image = css(link, "img")
        wait_until(
            lambda: driver.execute_script("return arguments[0].naturalWidth", image) > 0, what="the picture"
        )
        assert "locked" in link.text
        link.click()
        wait_until(lambda: "/jobs/" in driver.current_url)
        assert "Is the thumb-turn in the locked position?" in css(driver, "main").text  # the prompt sent
    both_widths(console, "/rules", "rules")
    both_widths(console, "/rules/front_door_lock", "rule")
    both_widths(console, f"/jobs/{ran['job_id']}", "job")


def test_a_todo_edit_and_its_undo(console: Console) -> None:
    with console.client() as api:
        task = api.post("/api/todo/tasks", json={"title": "buy milk", "genre": "shopping"}).json()
        api.post(
            "/api/todo/tasks", json={"title": "water the plants", "genre": "chores", "due": "2026-12-24"}
        )
    with chromium() as driver:
        driver.get(console.url + "/todo")
        title = wait_until(lambda: css(driver, f'li[data-uid="{task["uid"]}"] input[data-field="title"]'))
        title.send_keys(Keys.CONTROL, "a")
        title.send_keys("buy oat milk", Keys.TAB)
        undo = wait_until(
            lambda: next(
                (
                    li
                    for li in driver.find_elements("css selector", "#history li")
                    if "buy milk → buy oat milk" in li.text
                ),
                None,
            ),
            what="the edit in the history",
        )
        with console.client() as api:
            assert api.get(f"/api/todo/tasks/{task['uid']}").json()["title"] == "buy oat milk"
        screenshot(driver, "todo-desktop")
        css(undo, "button[data-undo]").click()
        wait_until(
            lambda: (
                css(driver, f'li[data-uid="{task["uid"]}"] input[data-field="title"]').get_attribute("value")
                == "buy milk"
            ),
            what="the undo",
        )
        with console.client() as api:
            assert api.get(f"/api/todo/tasks/{task['uid']}").json()["title"] == "buy milk"
    both_widths(console, "/todo", "todo", ready="#history li")
    both_widths(console, "/docs", "docs", ready=".endpoint")


def test_screenshots_of_a_busy_console(console: Console) -> None:
    """Jobs of every kind, then the Live page at both widths (the README's pictures)."""
    with console.client() as api:
        for locked in (True, False, True):
            api.post("/api/rules/front_door_lock/run", files={"image": ("d.jpg", door(locked), "image/jpeg")})
        api.post("/api/rules/message_topic/run", json={"text": "The smoke alarm in the hall is beeping"})
        api.post("/api/rules/message_topic/run", json={"text": "We are out of coffee beans"})
        api.post("/api/rules/gate/check")
        api.post(
            "/api/rules/front_door_lock/run",
            files={"image": ("bad.jpg", b"\xff\xd8\xff broken", "image/jpeg")},
        )
        wait_until(
            lambda: api.get("/api/jobs", params={"outcome": "failed"}).json()["items"], what="the failure"
        )
    both_widths(console, "/", "live", ready="#jobs li")
    both_widths(console, "/rules", "rules", ready=".rules li")
    both_widths(console, "/rules/front_door_lock", "rule", ready="#timeline li")


def test_login_with_the_token_off_loopback(tmp_path: Path) -> None:
    need_chromium()
    address = lan_address()
    if address is None:
        pytest.skip("this machine has no network address besides loopback")
    with console_daemon(tmp_path / "remote", host="0.0.0.0", token=TOKEN) as remote:
        url = f"http://{address}:{remote.port}"
        assert httpx.get(url + "/api/health").status_code == 401
        with chromium(PHONE) as driver:
            driver.get(url + "/rules")
            wait_until(lambda: "/login" in driver.current_url, what="the login page")
            screenshot(driver, "login-phone")
            css(driver, "#token").send_keys("wrong token")
            css(driver, "#sign-in").click()
            wait_until(lambda: css(driver, "#login-failed"), what="the refusal")
            css(driver, "#token").send_keys(TOKEN)
            css(driver, "#sign-in").click()
            wait_until(lambda: driver.current_url == url + "/rules", what="the rules page")
            assert "front_door_lock" in css(driver, "main").text
            cookie = driver.get_cookie("llm2mqtt_session")
            assert cookie["httpOnly"] is True
            assert cookie["sameSite"] == "Strict"
            assert driver.execute_script("return document.cookie") == ""  # scripts cannot read it
