"""The `llm2mqtt` command as a person runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import referencing
import referencing.jsonschema
import yaml

from tests.support.mqtt_helpers import ROOT
from tests.support.ollama_standin import OllamaStandin
from tests.support.samples import jpeg


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("LLM2MQTT_")}
    full_env = {**inherited, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )


def test_check_accepts_the_shipped_config() -> None:
    done = cli("check", "-c", str(ROOT / "config.yaml"))
    assert done.returncode == 0, done.stderr
    assert "front_door_lock" in done.stdout
    assert "warning" not in done.stderr


@pytest.mark.parametrize(
    ("rules", "warning"),
    [
        ([], "no rules (no *.yaml files): nothing will run"),
        ([{"name": "x", "handler": "yes_no", "model": "m", "prompt": "p", "enabled": False}], "every rule"),
    ],
)
def test_check_warns_when_nothing_would_run(
    write_config, rules: list[dict[str, object]], warning: str
) -> None:
    path = write_config(rules)
    done = cli("check", "-c", str(path))
    assert done.returncode == 0  # valid: a warning, not an error
    assert f"warning: {path.parent / 'rules'}: {warning}" in done.stderr


def test_check_lists_every_problem_and_exits_2(write_config) -> None:
    path = write_config(
        [{"name": "x", "handler": "yes_no", "model": "m", "prompt": "p", "colour": "red"}],
        mqtt={"url": "nope://"},
    )
    done = cli("check", "-c", str(path))
    assert done.returncode == 2
    assert "mqtt.url" in done.stderr
    assert "colour" in done.stderr
    assert "unknown key" in done.stderr
    assert "2 problem(s) found" in done.stderr
    assert "Traceback" not in done.stderr


def test_config_from_environment_variable(write_config) -> None:
    path = write_config()
    done = cli("check", env={"LLM2MQTT_CONFIG": str(path)})
    assert done.returncode == 0
    assert str(path) in done.stdout


@pytest.mark.broker
def test_check_live_reaches_broker_and_ollama(daemon_config, ollama: OllamaStandin) -> None:
    path = daemon_config()
    done = cli("check", "--live", "-c", str(path))
    assert done.returncode == 0, done.stderr
    assert "every rule's model is pulled" in done.stdout
    ollama.models = {"qwen2.5:3b"}
    done = cli("check", "--live", "-c", str(path))
    assert done.returncode == 1
    assert "'qwen2.5vl:3b' is not pulled; run `ollama pull qwen2.5vl:3b`" in done.stderr
    assert "front_door_lock.yaml" in done.stderr


def test_check_live_reports_unreachable_broker_and_ollama(write_config) -> None:
    path = write_config(mqtt={"url": "mqtt://127.0.0.1:9"}, ollama={"url": "http://127.0.0.1:9"})
    done = cli("check", "--live", "-c", str(path))
    assert done.returncode == 1
    assert "cannot reach the broker at mqtt://127.0.0.1:9" in done.stderr
    assert "cannot reach Ollama at http://127.0.0.1:9" in done.stderr


def test_try_runs_a_rule_on_an_image_without_a_broker(
    write_config, ollama: OllamaStandin, tmp_path: Path
) -> None:
    path = write_config(ollama={"url": ollama.url}, mqtt={"url": "mqtt://127.0.0.1:9"})
    image = tmp_path / "door.jpg"
    image.write_bytes(jpeg(30, size=(1600, 1200)))
    done = cli("try", "front_door_lock", "--image", str(image), "-c", str(path))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["answer"], result["state"]) == (False, "unlocked")
    assert result["image"]["width"] == 256
    assert result["timings"]["llm"] > 0
    assert result["tokens"]["prompt"] > 0


def test_try_with_text_and_errors(write_config, ollama: OllamaStandin, tmp_path: Path) -> None:
    path = write_config(ollama={"url": ollama.url})
    done = cli("try", "message_topic", "--text", "buy shopping for dinner", "-c", str(path))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["label"] == "shopping"
    missing = cli("try", "nope", "--text", "x", "-c", str(path))
    assert missing.returncode == 2
    assert "unknown rule 'nope'" in missing.stderr
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    bad = cli("try", "front_door_lock", "--image", str(tmp_path / "bad.jpg"), "-c", str(path))
    assert bad.returncode == 2
    assert "not a JPEG, PNG or WebP" in bad.stderr
    ollama.models = set()
    gone = cli("try", "message_topic", "--text", "x", "-c", str(path))
    assert gone.returncode == 1
    assert "ollama pull qwen2.5:3b" in gone.stderr


def test_config_option_before_the_command(write_config, tmp_path: Path) -> None:
    path = write_config()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for args in (("-c", str(path), "check"), ("check", "-c", str(path)), ("--config", str(path), "check")):
        done = cli(*args)
        assert done.returncode == 0, (args, done.stderr)
        assert done.stdout.startswith(f"{path}: valid"), args
    # After the command, -c wins over one given before it.
    done = cli("-c", str(elsewhere / "missing.yaml"), "check", "-c", str(path))
    assert done.returncode == 0, done.stderr


class _YamlWithTags(yaml.SafeLoader):
    """Reads `!secret name` and `!env NAME` as the plain strings an editor sees."""


_YamlWithTags.add_constructor("!secret", lambda loader, node: loader.construct_scalar(node))
_YamlWithTags.add_constructor("!env", lambda loader, node: loader.construct_scalar(node))


def _as_json(path: Path) -> Any:
    """A YAML file as a JSON Schema validator sees it (keys such as `true:` become strings)."""
    return json.loads(json.dumps(yaml.load(path.read_text(), Loader=_YamlWithTags)))


def _schema(*args: str) -> dict[str, Any]:
    done = cli("schema", *args)
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    jsonschema.Draft202012Validator.check_schema(document)
    return document


def test_schema_documents_validate_the_shipped_config_and_rules(tmp_path: Path) -> None:
    config = jsonschema.Draft202012Validator(_schema("--config"))
    rule_file = jsonschema.Draft202012Validator(_schema("--rule"))
    config.validate(_as_json(ROOT / "config.yaml"))
    rules = [_as_json(path) for path in sorted((ROOT / "rules").glob("*.yaml"))]
    assert len(rules) >= 3
    for rule in rules:
        rule_file.validate(rule)
    rule_file.validate(rules)  # a rule file may hold a list of rules
    # What the loader accepts in shorter forms, the schema accepts too.
    rule_file.validate(
        {**rules[0], "model": {"mini": "qwen2.5vl:3b", "pc": "qwen2.5vl:7b"}, "backend": "mini"}
    )
    assert not rule_file.is_valid({**rules[0], "model": {}})
    # What the loader refuses, the schema refuses too.
    assert not config.is_valid({**_as_json(ROOT / "config.yaml"), "colour": "red"})
    assert not config.is_valid({"ollama": {"parallel": "two"}})
    assert not rule_file.is_valid({**rules[0], "colour": 1})
    assert not rule_file.is_valid([rules[0], {**rules[1], "handler": "nope"}])
    assert not rule_file.is_valid({"name": "x", "handler": "yes_no"})  # model and prompt missing


def test_schema_out_writes_both_documents_and_bare_schema_combines_them(tmp_path: Path) -> None:
    done = cli("schema", "--out", str(tmp_path / "schemas"))
    assert done.returncode == 0, done.stderr
    written = {path.name: json.loads(path.read_text()) for path in (tmp_path / "schemas").iterdir()}
    assert written == {"config.schema.json": _schema("--config"), "rule.schema.json": _schema("--rule")}
    combined = _schema()
    registry = referencing.Registry().with_resource(
        "urn:llm2mqtt", referencing.jsonschema.DRAFT202012.create_resource(combined)
    )
    for pointer, instance in (
        ("config", _as_json(ROOT / "config.yaml")),
        ("rule_file", _as_json(ROOT / "rules" / "message_topic.yaml")),
        ("rule", _as_json(ROOT / "rules" / "front_door_lock.yaml")),
    ):
        validator = jsonschema.Draft202012Validator(
            {"$ref": f"urn:llm2mqtt#/$defs/{pointer}"}, registry=registry
        )
        validator.validate(instance)
        assert not validator.is_valid({"colour": 1}), pointer


def test_check_says_which_rules_could_leave_the_house(write_config) -> None:
    cloud = {"type": "openai", "base_url": "https://api.example.com/v1", "api_key": "sk-test"}
    rules = [
        {"name": "door", "handler": "yes_no", "model": "m", "prompt": "p", "backend": ["mini", "cloud"]},
        {
            "name": "note",
            "handler": "describe",
            "model": "m",
            "prompt": "p",
            "backend": ["cloud"],
            "allow_remote": True,
        },
        {"name": "home", "handler": "describe", "model": "m", "prompt": "p"},
    ]
    path = write_config(
        rules, backends={"mini": {"type": "ollama", "url": "http://mini.lan:11434"}, "cloud": cloud}
    )
    done = cli("check", "-c", str(path))
    assert done.returncode == 0, done.stderr
    assert "door: may leave the house: text only (images stay home) to cloud" in done.stdout
    assert "note: may leave the house: text and images to cloud" in done.stdout
    assert "home:" not in done.stdout
