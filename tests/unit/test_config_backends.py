"""`backends:` in config.yaml and the rule keys that pick them: names, order, privacy."""

from pathlib import Path

import pytest

from bridge.config.loader import load_config
from bridge.config.settings import leaves_the_house, rule_backends
from bridge.errors import ConfigError
from tests.unit.test_config import _write

BACKENDS = """\
backends:
  mini: {type: ollama, url: http://mini.lan:11434, parallel: 1}
  pc: {type: ollama, url: http://pc.lan:11434, parallel: 2}
  cloud: {type: openai, base_url: https://api.example.com/v1, api_key: sk-test, parallel: 4}
"""
LOCK = """\
name: front_door_lock
handler: yes_no
model: {mini: qwen2.5vl:3b, cloud: gpt-4o-mini}
prompt: Is it locked?
backend: [mini, cloud]
"""
NOTE = """\
name: note
handler: describe
model: qwen2.5:3b
prompt: Summarise.
"""


def test_backends_in_order_with_their_defaults(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, BACKENDS, lock=LOCK, note=NOTE), {})
    backends = config.settings.backend_settings()
    assert list(backends) == ["mini", "pc", "cloud"]
    assert [b.local for b in backends.values()] == [True, True, False]
    lock, note = config.rule("front_door_lock"), config.rule("note")
    assert lock is not None
    assert note is not None
    assert (lock.model_for("mini"), lock.model_for("cloud"), lock.model_for("pc")) == (
        "qwen2.5vl:3b",
        "gpt-4o-mini",
        "qwen2.5vl:3b",
    )
    assert rule_backends(note, backends, image=False) == ["mini", "pc"]  # default: every local one
    assert rule_backends(lock, backends, image=False) == ["mini", "cloud"]
    assert rule_backends(lock, backends, image=True) == ["mini"]  # pictures stay home
    assert leaves_the_house(lock, backends) == (["cloud"], False)
    assert leaves_the_house(note, backends) == ([], False)


def test_the_ollama_section_is_the_backend_named_ollama(tmp_path: Path) -> None:
    plain = load_config(_write(tmp_path / "a", "ollama: {url: http://mini.lan:11434}\n", note=NOTE), {})
    assert list(plain.settings.backend_settings()) == ["ollama"]
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path / "b", "ollama: {url: http://x:1}\n" + BACKENDS, note=NOTE), {})
    assert "ollama: and backends: are both set" in "\n".join(caught.value.problems)


def test_unknown_backends_and_clashing_names_are_errors(tmp_path: Path) -> None:
    bad_rule = LOCK.replace("[mini, cloud]", "[mini, gpu]").replace("cloud: gpt", "nas: gpt")
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path / "a", BACKENDS, lock=bad_rule), {})
    text = "\n".join(caught.value.problems)
    assert "backend: 'gpu' is not a configured backend (mini, pc, cloud)" in text
    assert "model: 'nas' is not a configured backend" in text
    remote_only = "backends:\n  cloud: {type: openai, base_url: https://api.example.com/v1}\n"
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path / "c", remote_only, note=NOTE), {})
    assert "no backend to use" in "\n".join(caught.value.problems)
