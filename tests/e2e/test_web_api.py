"""The web console's REST API against a real daemon, broker and Ollama stand-in."""

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.support.samples import jpeg, png
from tests.support.web_console import Console, console_daemon

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    with console_daemon(tmp_path_factory.mktemp("web")) as running:
        yield running


@pytest.fixture
def api(console: Console) -> Iterator[httpx.Client]:
    with console.client() as client:
        yield client


def run_image(api: httpx.Client, brightness: int = 200, rule: str = "front_door_lock") -> dict:
    answer = api.post(f"/api/rules/{rule}/run", files={"image": ("door.jpg", jpeg(brightness), "image/jpeg")})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_health_reports_broker_backend_and_queue(api: httpx.Client) -> None:
    health = api.get("/api/health").json()
    assert health["broker"] == {"connected": True}
    assert health["backends"][0]["reachable"] is True
    assert health["queue_depth"] == 0


def test_run_with_an_uploaded_image_is_a_journaled_job_published_on_mqtt(
    console: Console, api: httpx.Client
) -> None:
    collector = console.collector()
    try:
        ran = run_image(api, brightness=200)
        assert ran["state"] == "done"
        assert ran["result"]["state"] == "locked"  # the stand-in says yes for a bright picture
        assert ran["result"]["source"] == "web"
        published = collector.wait_for(
            "llm2mqtt/front_door_lock/result", where=lambda m: m.json()["job_id"] == ran["job_id"]
        )
        assert published[-1].json()["state"] == "locked"
    finally:
        collector.close()
    dark = run_image(api, brightness=20)
    assert dark["result"]["state"] == "unlocked"


def test_run_takes_json_as_on_mqtt_and_text_in_a_form(api: httpx.Client) -> None:
    ran = api.post("/api/rules/message_topic/run", json={"text": "we are out of milk", "room": "kitchen"})
    assert ran.status_code == 200, ran.text
    assert ran.json()["result"]["label"] in {"shopping", "chores", "security", "other"}
    job = api.get(f"/api/jobs/{ran.json()['job_id']}").json()
    assert job["input"]["fields"] == {"room": "kitchen"}
    form = api.post("/api/rules/message_topic/run", data={"text": "take out the trash"})
    assert form.status_code == 200, form.text
    assert api.get(f"/api/jobs/{form.json()['job_id']}").json()["input"]["text"] == "take out the trash"


def test_run_answers_202_with_the_job_id_when_the_model_is_slow(console: Console, api: httpx.Client) -> None:
    console.ollama.hang_next(2.0)
    ran = api.post("/api/rules/message_topic/run?wait=0.3", json={"text": "slow one"})
    assert ran.status_code == 202, ran.text
    job_id = ran.json()["job_id"]
    assert ran.headers["location"] == f"/api/jobs/{job_id}"
    deadline = time.monotonic() + 15
    while api.get(f"/api/jobs/{job_id}").json()["state"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_jobs_list_filters_and_pages_by_keyset(api: httpx.Client) -> None:
    for brightness in (30, 60, 90):
        run_image(api, brightness)
    first = api.get("/api/jobs", params={"rule": "front_door_lock", "limit": 2}).json()
    assert len(first["items"]) == 2
    assert first["next"] == first["items"][-1]["job_id"]
    second = api.get(
        "/api/jobs", params={"rule": "front_door_lock", "limit": 2, "before": first["next"]}
    ).json()
    ids = [j["job_id"] for j in first["items"] + second["items"]]
    assert len(ids) == len(set(ids))
    assert ids == sorted(ids, reverse=True)
    assert all(j["rule"] == "front_door_lock" for j in first["items"] + second["items"])
    done = api.get("/api/jobs", params={"outcome": "done"}).json()["items"]
    assert done
    assert all(j["state"] == "done" for j in done)


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "-1"},
        {"limit": "0"},
        {"limit": "99999999999999999999"},
        {"before": "99999999999999999999999999999999999999999"},
        {"before": "x' OR 1=1"},
        {"outcome": "everything"},
    ],
)
def test_jobs_list_refuses_unbounded_or_odd_parameters(api: httpx.Client, query: dict[str, str]) -> None:
    assert api.get("/api/jobs", params=query).status_code == 422


def test_job_detail_shows_prompt_schema_raw_answer_and_where_it_went(api: httpx.Client) -> None:
    job = api.get(f"/api/jobs/{run_image(api)['job_id']}").json()
    call = job["calls"][0]
    assert call["messages"][1]["content"] == "Is the thumb-turn in the locked position?"
    assert call["messages"][1]["images"][0].startswith("<JPEG")  # the image is not copied in
    assert call["schema"]["required"] == ["answer", "confidence"]
    assert json.loads(call["answer"])["answer"] is True
    topics = {p["topic"] for p in job["published"]}
    assert {"llm2mqtt/front_door_lock/result", "llm2mqtt/front_door_lock/state"} <= topics
    assert job["try_command"].startswith("llm2mqtt try front_door_lock --image ")


def test_job_image_as_received_and_as_sent(api: httpx.Client) -> None:
    job_id = run_image(api)["job_id"]
    original = api.get(f"/api/jobs/{job_id}/image", params={"original": 1})
    assert original.headers["content-type"] == "image/jpeg"
    assert original.content == jpeg(200)
    sent = api.get(f"/api/jobs/{job_id}/image")
    with Image.open(__import__("io").BytesIO(sent.content)) as picture:
        assert max(picture.size) == 256  # the rule's max_side
    thumb = api.get(f"/api/jobs/{job_id}/image", params={"thumb": 1})
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/jpeg"


def test_unknown_job_and_job_without_image_are_404(api: httpx.Client) -> None:
    assert api.get("/api/jobs/0000000000000000").status_code == 404
    assert "no job" in api.get("/api/jobs/0000000000000000").json()["detail"]
    assert api.get("/api/jobs/not-a-job-id").status_code == 422
    text_job = api.post("/api/rules/message_topic/run", json={"text": "hello"}).json()["job_id"]
    assert api.get(f"/api/jobs/{text_job}/image").status_code == 404


def test_rules_list_with_counters_and_last_answer(api: httpx.Client) -> None:
    run_image(api)
    rules = {r["name"]: r for r in api.get("/api/rules").json()["items"]}
    assert set(rules) == {"front_door_lock", "message_topic", "todo_note", "gate"}
    lock = rules["front_door_lock"]
    assert lock["counters"]["done"] >= 1
    assert lock["last"]["answer"] in ("locked", "unlocked")
    assert rules["gate"]["can_check"] is True
    assert rules["gate"]["paused"] is False
    assert lock["paused"] is None


def test_check_now_and_pause_a_scheduled_rule(console: Console, api: httpx.Client) -> None:
    collector = console.collector()
    try:
        hits = console.camera.hits
        assert api.post("/api/rules/gate/check").status_code == 202
        collector.wait_for("llm2mqtt/gate/result", where=lambda m: m.json()["source"].startswith("check"))
        assert console.camera.hits > hits
        assert api.put("/api/rules/gate/paused", json={"paused": True}).json() == {
            "rule": "gate",
            "paused": True,
        }
        collector.wait_for("llm2mqtt/gate/paused", where=lambda m: m.payload == b"ON")
        deadline = time.monotonic() + 5
        while not next(r for r in api.get("/api/rules").json()["items"] if r["name"] == "gate")["paused"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        api.put("/api/rules/gate/paused", json={"paused": False})
        collector.wait_for("llm2mqtt/gate/paused", where=lambda m: m.payload == b"OFF")
    finally:
        collector.close()
    assert api.post("/api/rules/front_door_lock/check").status_code == 409
    assert api.put("/api/rules/front_door_lock/paused", json={"paused": True}).status_code == 409
    assert api.put("/api/rules/gate/paused", json={"paused": "perhaps"}).status_code == 422


def test_try_answers_without_publishing(console: Console, api: httpx.Client) -> None:
    collector = console.collector()
    try:
        tried = api.post(
            "/api/try", data={"rule": "front_door_lock"}, files={"image": ("a.png", png(230), "image/png")}
        )
        assert tried.status_code == 200, tried.text
        assert tried.json()["result"]["state"] == "locked"
        free = api.post(
            "/api/try",
            data={"prompt": "Describe the picture", "model": "qwen2.5vl:3b"},
            files={"image": ("a.jpg", jpeg(10), "image/jpeg")},
        )
        assert free.status_code == 200, free.text
        assert "brightness" in free.json()["result"]["description"]  # the stand-in saw the picture
        time.sleep(0.5)
        fresh = [m for m in collector.on("llm2mqtt/front_door_lock/result") if not m.retain]
        assert not fresh
        assert not collector.on("llm2mqtt/try/result")
    finally:
        collector.close()
    assert api.post("/api/try", data={"prompt": "no model"}, files={}).status_code == 422
    assert api.post("/api/try", data={"rule": "front_door_lock"}).status_code == 422  # nothing to judge


def test_models_come_from_the_backend(api: httpx.Client) -> None:
    assert "qwen2.5vl:3b" in api.get("/api/models").json()["items"]


def test_events_stream_shows_an_mqtt_job_with_its_result(console: Console) -> None:
    seen: list[dict] = []
    with console.client() as client, client.stream("GET", "/api/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        publisher = console.collector()
        publisher.publish("cameras/front_door/snapshot", jpeg(210))
        for line in stream.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if seen[-1]["type"] == "job_done":
                    break
        publisher.close()
    types = [e["type"] for e in seen if e.get("rule") == "front_door_lock"]
    assert types[:3] == ["job_queued", "job_started", "job_done"]
    assert seen[-1]["result"]["state"] == "locked"
    assert seen[0]["source"] == "mqtt:cameras/front_door/snapshot"


# -- bad input: each a clear 4xx ---------------------------------------------------------------


def test_bad_input_is_a_clear_4xx(api: httpx.Client) -> None:
    not_image = api.post(
        "/api/rules/front_door_lock/run", files={"image": ("a.jpg", b"hello there", "image/jpeg")}
    )
    assert not_image.status_code == 415
    assert "not a JPEG, PNG or WebP" in not_image.json()["detail"]
    raw = api.post(
        "/api/rules/front_door_lock/run", content=b"GIF89a....", headers={"content-type": "image/gif"}
    )
    assert raw.status_code == 415
    huge = api.post(
        "/api/rules/front_door_lock/run",
        files={"image": ("big.jpg", b"\xff\xd8\xff" + bytes(50 * 2**20), "image/jpeg")},
    )
    assert huge.status_code == 413
    assert "limit" in huge.json()["detail"]
    unknown = api.post("/api/rules/no_such_rule/run", json={"text": "x"})
    assert unknown.status_code == 404
    assert "unknown rule" in unknown.json()["detail"]
    bad_json = api.post(
        "/api/rules/message_topic/run", content=b'{"text": ', headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 422
    assert "invalid JSON" in bad_json.json()["detail"]
    empty = api.post("/api/rules/message_topic/run", data={"text": "  "})
    assert empty.status_code == 422
    too_long = api.post("/api/rules/message_topic/run", json={"text": "x" * 40_000})
    assert too_long.status_code == 422
    assert "limits.max_text" in too_long.json()["detail"]
    url = api.post("/api/rules/front_door_lock/run", json={"image_url": "http://192.168.1.1/x.jpg"})
    assert url.status_code == 422


def test_a_streamed_body_over_the_cap_is_413(console: Console) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"\xff" * 2**20

    with console.client() as client:
        answer = client.post(
            "/api/rules/front_door_lock/run", content=chunks(), headers={"content-type": "image/jpeg"}
        )
    assert answer.status_code == 413


# -- the guard: Host, Origin (issue 11, item 5) -------------------------------------------------


def test_a_foreign_host_name_is_refused(api: httpx.Client) -> None:
    for path in ("/api/health", "/", "/api/todo/tasks", "/openapi.json"):
        refused = api.get(path, headers={"Host": "attacker.example"})
        assert refused.status_code == 400, path
        assert "http.hosts" in refused.json()["detail"]
    assert api.get("/api/health", headers={"Host": "localhost:1234"}).status_code == 200
    assert api.get("/api/health", headers={"Host": "[::1]:1234"}).status_code == 200


def test_cross_site_changes_are_refused(console: Console, api: httpx.Client) -> None:
    task = api.post("/api/todo/tasks", json={"title": "buy eggs"}).json()
    evil = {"Origin": "http://attacker.example"}
    assert api.post(f"/api/todo/tasks/{task['uid']}/complete", headers=evil).status_code == 403
    change = api.get("/api/todo/history").json()["items"][0]["id"]
    assert api.post(f"/api/todo/history/{change}/undo", headers=evil).status_code == 403
    assert api.get(f"/api/todo/tasks/{task['uid']}").json()["status"] == "needs_action"
    simple = api.post(
        "/api/rules/message_topic/run",
        content=b"text=hi",
        headers={**evil, "content-type": "application/x-www-form-urlencoded"},
    )
    assert simple.status_code == 403
    no_origin = api.post(f"/api/todo/tasks/{task['uid']}/complete", headers={"Sec-Fetch-Site": "cross-site"})
    assert no_origin.status_code == 403
    own = {"Origin": console.url}
    assert api.post(f"/api/todo/tasks/{task['uid']}/complete", headers=own).status_code == 200


def test_todo_parameters_are_bounded(api: httpx.Client) -> None:
    assert api.get("/api/todo/tasks", params={"limit": "-1"}).status_code == 422
    assert api.get("/api/todo/tasks", params={"limit": "99999999999999999999"}).status_code == 422
    assert api.get("/api/todo/history", params={"limit": "-1"}).status_code == 422
    assert api.post("/api/todo/history/99999999999999999999/undo").status_code == 422
    assert api.get("/api/todo/tasks/" + "x" * 300).status_code == 422
    long_text = api.post("/api/todo/tasks", json={"title": "t", "description": "x" * 3_000_000})
    assert long_text.status_code in (413, 422)
    assert api.post("/api/todo/tasks", json={"title": "t", "description": "x" * 5000}).status_code == 422
    assert api.post("/api/todo/tasks", json={"title": "t", "genre": "g" * 100}).status_code == 422
    uid = api.post("/api/todo/tasks", json={"title": "keep my title"}).json()["uid"]
    assert api.patch(f"/api/todo/tasks/{uid}", json={"title": None}).status_code == 422


def test_docs_work_offline(api: httpx.Client) -> None:
    page = api.get("/docs")
    assert page.status_code == 200
    assert "http://" not in page.text
    assert "https://" not in page.text
    for asset in ("/static/console.js", "/static/console.css"):
        body = api.get(asset).text
        assert "https://" not in body
        assert "http://" not in body
    spec = api.get("/openapi.json").json()
    for path in ("/api/health", "/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/image", "/api/rules",
                 "/api/rules/{name}/run", "/api/rules/{name}/check", "/api/rules/{name}/paused", "/api/try",
                 "/api/events", "/api/todo/tasks"):  # fmt: skip
        assert path in spec["paths"], path
    assert "/" not in spec["paths"]  # pages are not API


def test_pages_render(api: httpx.Client) -> None:
    job_id = run_image(api)["job_id"]
    pages = ["/", "/?rule=front_door_lock&outcome=done", "/rules", "/rules/front_door_lock"]
    for path in [*pages, "/try", "/todo", f"/jobs/{job_id}", "/docs"]:
        page = api.get(path)
        assert page.status_code == 200, path
        assert "<main>" in page.text
    assert api.get("/rules/nope").status_code == 404
    assert api.get("/jobs/0000").status_code == 404


def test_everything_the_page_loads_ships_in_the_package() -> None:
    folder = Path(__file__).parents[2] / "bridge" / "web"
    for template in (folder / "templates").glob("*.html"):
        text = template.read_text()
        assert "https://" not in text, template.name
