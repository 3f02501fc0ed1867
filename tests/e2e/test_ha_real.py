"""Against a real Home Assistant (tests/ha_harness.py): discovery makes working entities.

Skipped where no Python 3.13 exists. The first run installs Home Assistant into a cached
venv (minutes): `python -m tests.support.ha_harness` does that ahead of the tests.
"""

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LOCK_RULE
from tests.support.camera import Camera
from tests.support.ha_harness import HomeAssistant, ensure_installed, find_python
from tests.support.mqtt_helpers import Collector, Mosquitto
from tests.support.samples import jpeg

pytestmark = [
    pytest.mark.homeassistant,
    pytest.mark.broker,
    pytest.mark.skipif(find_python() is None, reason="Home Assistant needs Python 3.13"),
    pytest.mark.timeout(900),  # the first run installs Home Assistant
]

ROOT = Path(__file__).resolve().parents[2]
BLUEPRINTS = ROOT / "homeassistant" / "blueprints"
AUTOMATIONS = """\
automation:
  - id: llm2mqtt_lock_notify
    alias: llm2mqtt lock notify
    use_blueprint:
      path: llm2mqtt/lock_unlocked_notify.yaml
      input:
        lock_sensor: binary_sensor.front_door_lock
        snapshot: image.front_door_lock_image
        notify_action: notify.notify
  - id: llm2mqtt_add_note
    alias: llm2mqtt add note
    use_blueprint:
      path: llm2mqtt/assist_add_note.yaml
  - id: llm2mqtt_motion_check
    alias: llm2mqtt motion check
    use_blueprint:
      path: llm2mqtt/motion_check_camera.yaml
      input:
        motion_sensor: binary_sensor.hall_motion
        rule: front_door_lock
conversation:
"""
RULE: dict[str, Any] = {**LOCK_RULE, "homeassistant": {"device_class": "lock", "name": "Front door lock"}}


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    ensure_installed()


@pytest.fixture
def camera() -> Iterator[Camera]:
    """The rule's `snapshot:` source; the test sets the picture it shows."""
    cam = Camera(jpeg(230))
    yield cam
    cam.close()


def _home_assistant(folder: Path, mqtt_port: int | None) -> HomeAssistant:
    hass = HomeAssistant(folder, mqtt_port=mqtt_port, configuration=AUTOMATIONS)
    shutil.copytree(BLUEPRINTS, folder / "blueprints", dirs_exist_ok=True)
    return hass


def test_blueprints_pass_home_assistants_config_check(tmp_path: Path) -> None:
    hass = _home_assistant(tmp_path / "ha", None)
    checked = hass.check_config(info="automation")
    # A blueprint that resolved shows as triggers and actions; one that did not stays `use_blueprint`.
    assert "use_blueprint" not in checked
    for automation in ("llm2mqtt_lock_notify", "llm2mqtt_add_note", "llm2mqtt_motion_check"):
        assert f"id: {automation}" in checked
    # The check can fail: the motion blueprint without its required inputs is not resolved.
    broken = _home_assistant(tmp_path / "broken", None)
    broken.configuration = AUTOMATIONS.replace(
        "      input:\n        motion_sensor: binary_sensor.hall_motion\n        rule: front_door_lock\n",
        "      input: {}\n",
    )
    assert "use_blueprint" in broken.check_config(info="automation")


def test_rules_become_working_entities(
    daemon, collector: Collector, broker: Mosquitto, camera: Camera, tmp_path: Path
) -> None:
    rule = {**RULE, "snapshot": {"url": camera.url}, "schedule": {"every": "1h"}}
    hass = _home_assistant(tmp_path / "ha", broker.port)
    hass.start()
    try:
        bridge = daemon([rule])
        collector.wait_for("llm2mqtt/bridge/state")

        lock = hass.wait_for_state("binary_sensor.front_door_lock")
        assert lock["attributes"]["device_class"] == "lock"
        assert lock["attributes"]["friendly_name"] == "Front door lock"
        for entity in (
            "image.front_door_lock_image",
            "event.front_door_lock_job",
            "button.front_door_lock_check",
            "switch.front_door_lock_paused",
            "sensor.llm2mqtt_queue_depth",
            "sensor.llm2mqtt_jobs_failed",
            "sensor.llm2mqtt_last_model_latency",
            "binary_sensor.llm2mqtt_connected",
        ):
            hass.wait_for_state(entity)
        latency = hass.state("sensor.llm2mqtt_last_model_latency")
        assert latency is not None
        assert latency["attributes"]["unit_of_measurement"] == "ms"

        # A bright thumb-turn is locked (off: Home Assistant's lock class says on = unlocked).
        collector.publish("cameras/front_door/snapshot", jpeg(230))
        hass.wait_for_state("binary_sensor.front_door_lock", lambda s: s["state"] == "off")
        collector.publish("cameras/front_door/snapshot", jpeg(20))
        unlocked = hass.wait_for_state("binary_sensor.front_door_lock", lambda s: s["state"] == "on")
        assert unlocked["attributes"]["answer"] is False  # the full result as attributes
        event = hass.wait_for_state(
            "event.front_door_lock_job", lambda s: s["attributes"].get("event_type") == "done"
        )
        assert event["attributes"]["job_id"] == unlocked["attributes"]["job_id"]
        hass.wait_for_state(
            "image.front_door_lock_image", lambda s: s["state"] not in ("unknown", "unavailable")
        )

        # The button asks the bridge to take the snapshot now; the camera shows a locked door.
        hass.rest_post("/api/services/button/press", {"entity_id": "button.front_door_lock_check"})
        collector.wait_for("llm2mqtt/front_door_lock/check")
        checked = collector.wait_for(
            "llm2mqtt/front_door_lock/result", where=lambda m: m.json()["source"].startswith("check")
        )
        assert checked[0].json()["state"] == "locked"
        hass.wait_for_state("binary_sensor.front_door_lock", lambda s: s["state"] == "off")

        # Assist: the blueprint's sentence publishes the note for the Todo rule.
        reply = hass.rest_post(
            "/api/conversation/process", {"text": "add oat milk to my list", "language": "en"}
        )
        note = collector.wait_for("llm2mqtt/todo/note")[0].json()
        assert note == {"text": "oat milk", "source": "assist"}
        assert reply["response"]["speech"]["plain"]["speech"] == "OK, noted."
        hass.rest_post("/api/conversation/process", {"text": "牛乳を追加", "language": "ja"})
        notes = collector.wait_for("llm2mqtt/todo/note", 2)
        assert notes[1].json() == {"text": "牛乳", "source": "assist"}

        # Home Assistant restarting: the entities come back with their states.
        hass.restart()
        hass.wait_for_state("binary_sensor.front_door_lock", lambda s: s["state"] == "off")
        for automation in ("llm2mqtt_lock_notify", "llm2mqtt_add_note", "llm2mqtt_motion_check"):
            assert hass.wait_for_state(f"automation.{automation}")["state"] == "on"

        # The daemon stopping makes its entities unavailable (its last will / offline state).
        bridge.stop()
        hass.wait_for_state("binary_sensor.front_door_lock", lambda s: s["state"] == "unavailable")
        hass.wait_for_state("sensor.llm2mqtt_queue_depth", lambda s: s["state"] == "unavailable")
        connected = hass.wait_for_state("binary_sensor.llm2mqtt_connected", lambda s: s["state"] == "off")
        assert connected["attributes"]["device_class"] == "connectivity"
    except Exception:
        print(hass.log()[-6000:])
        raise
    finally:
        hass.stop()


def _json(message: Any) -> Any:
    return json.loads(message.payload)
