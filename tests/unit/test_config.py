"""Configuration: every problem reported at once, with file, key path and line; secrets stay secret."""

from pathlib import Path

import pytest

from bridge.config.loader import load_config
from bridge.config.units import parse_duration, parse_size
from bridge.errors import ConfigError
from handlers import HANDLERS


def _write(folder: Path, config: str, **rules: str) -> Path:
    (folder / "rules").mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(config)
    for name, text in rules.items():
        (folder / "rules" / f"{name}.yaml").write_text(text)
    return folder / "config.yaml"


GOOD_RULE = """\
name: front_door_lock
handler: yes_no
model: qwen2.5vl:3b
prompt: Is it locked?
labels: {true: locked, false: unlocked}
inputs:
  - mqtt: cameras/front_door/snapshot
"""


def _problems(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env or {})
    return caught.value.problems


def test_shipped_config_and_rules_are_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    config = load_config(root / "config.yaml", {})
    names = {rule.name for rule in config.rules}
    assert {"front_door_lock", "message_topic"} <= names
    lock = config.rule("front_door_lock")
    assert lock is not None
    assert lock.handler == "yes_no"
    assert lock.model == "qwen2.5vl:3b"
    assert config.settings.mqtt.url == "mqtt://localhost:1883"
    assert config.settings.ollama.url == "http://localhost:11434"


def test_yaml_boolean_label_keys_are_understood(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, "{}", lock=GOOD_RULE), {})
    labels = config.rules[0].labels  # type: ignore[attr-defined]
    assert (labels.true, labels.false) == ("locked", "unlocked")


def test_all_problems_reported_at_once_with_file_path_and_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "mqtt:\n  url: http://wrong\n  passwrd: x\nollama:\n  parallel: 0\n",
        lock=GOOD_RULE.replace("prompt: Is it locked?", "prompt: Is it {{ locked }"),
        other="name: Bad Name\nhandler: nope\n",
    )
    problems = _problems(path)
    text = "\n".join(problems)
    assert f"{path}: mqtt.url (line 2): the URL must start with mqtt:// or mqtts://" in text
    assert f"{path}: mqtt.passwrd (line 3): unknown key" in text
    assert f"{path}: ollama.parallel (line 5)" in text
    assert "rules/lock.yaml: prompt (line 4): template error" in text
    known = ", ".join(sorted(HANDLERS))
    assert f"rules/other.yaml: handler (line 2): unknown handler; known handlers: {known}" in text
    assert len(problems) >= 5


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (GOOD_RULE + "labelz: x\n", "labelz (line 8): unknown key"),
        (GOOD_RULE.replace("handler: yes_no\n", ""), "missing `handler:`"),
        (GOOD_RULE + "image: {crop: [0.5, 0, 0.6, 1]}\n", "crop reaches outside the image"),
        (GOOD_RULE.replace("cameras/front_door/snapshot", "cameras/#/x"), "'#' must be a whole level"),
        (
            GOOD_RULE.replace("cameras/front_door/snapshot", "llm2mqtt/x/result"),
            "overlaps the bridge's own topics",
        ),
        (
            GOOD_RULE.replace("handler: yes_no", "handler: classify").replace(
                "labels: {true: locked, false: unlocked}", "labels: [one]"
            ),
            "at least two labels",
        ),
        (
            GOOD_RULE.replace("handler: yes_no", "handler: extract") + "schema: {type: string}\n",
            "must describe an object",
        ),
        (GOOD_RULE + "timeout: soon\n", "is not a duration"),
    ],
)
def test_rule_errors(tmp_path: Path, rule: str, expected: str) -> None:
    problems = _problems(_write(tmp_path, "{}", lock=rule))
    assert any(expected in p for p in problems), problems


def test_duplicate_rule_names_name_both_files(tmp_path: Path) -> None:
    problems = _problems(_write(tmp_path, "{}", a=GOOD_RULE, b=GOOD_RULE))
    assert any("rules/b.yaml" in p and "also used in" in p and "rules/a.yaml" in p for p in problems)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    problems = _problems(_write(tmp_path, "mqtt:\n  url: [unclosed\n"))
    assert any("config.yaml (line" in p and "invalid YAML" in p for p in problems)


def test_secrets_from_file_and_environment_never_printed(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "mqtt:\n  username: !env MQTT_USER\n  password: !secret mqtt_password\n",
        lock=GOOD_RULE,
    )
    (tmp_path / "secrets.yaml").write_text("mqtt_password: hunter2\n")
    config = load_config(path, {"MQTT_USER": "bridge"})
    assert config.settings.mqtt.credentials() == ("bridge", "hunter2")
    assert "hunter2" not in repr(config.settings)
    problems = _problems(path, {})
    assert any("mqtt.username (line 2): 'MQTT_USER' is not set in the environment" in p for p in problems)


def test_missing_secret_is_a_problem(tmp_path: Path) -> None:
    path = _write(tmp_path, "mqtt:\n  password: !secret nope\n", lock=GOOD_RULE)
    problems = _problems(path)
    assert any("'nope' is not set in" in p and "secrets.yaml" in p for p in problems)


def test_environment_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, "{}", lock=GOOD_RULE)
    env = {
        "LLM2MQTT_MQTT_URL": "mqtts://user:p%40ss@broker.lan",
        "LLM2MQTT_OLLAMA_URL": "http://mini.lan:11434",
        "LLM2MQTT_DATA_DIR": str(tmp_path / "state"),
    }
    config = load_config(path, env)
    mqtt = config.settings.mqtt
    assert (mqtt.host, mqtt.port, mqtt.use_tls) == ("broker.lan", 8883, True)
    assert mqtt.credentials() == ("user", "p@ss")
    assert "p@ss" not in mqtt.safe_url()
    assert "p%40ss" not in mqtt.safe_url()
    assert config.settings.ollama.url == "http://mini.lan:11434"
    assert config.data_dir == tmp_path / "state"


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, "log_level: debug\n", lock=GOOD_RULE)
    assert load_config(None, {"LLM2MQTT_CONFIG": str(path)}).settings.log_level == "debug"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (5, 5.0),
        ("250ms", 0.25),
        ("30s", 30.0),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        ("1.5", 1.5),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"), [(100, 100), ("20MB", 20_000_000), ("512KiB", 524288), ("1 gb", 10**9)]
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["soon", "-5s", True, "5 parsecs"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)
