"""The files that install and run the daemon (deploy/, Containerfile) agree with the code.

What runs here is checked here: files parse, paths and subcommands exist, the settings they
rely on are the daemon's. Neither Podman, launchd nor a running systemd is available on the
build machines; `scripts/systemd-verify` runs `systemd-analyze verify` on the unit in CI.
"""

import fnmatch
import plistlib
import re
import shlex
from typing import Any

import yaml

from bridge.cli import _parser
from bridge.config.http import HttpSettings
from bridge.config.loader import ENV_CONFIG, ENV_OVERRIDES
from bridge.pipeline import heartbeat
from tests.support.mqtt_helpers import ROOT

DEPLOY = ROOT / "deploy"
ENVIRONMENT = {ENV_CONFIG, *ENV_OVERRIDES}


def _subcommands() -> set[str]:
    actions = [a for a in _parser()._actions if a.dest == "command"]
    return set(actions[0].choices or ())


def _containerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Containerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Containerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _ignored(path: str) -> bool:
    patterns = [
        line.strip().rstrip("/")
        for line in (ROOT / ".containerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.split("/")[0], p) for p in patterns)


def test_containerfile_copies_what_exists_and_is_not_ignored() -> None:
    copies = [args.split() for kind, args in _containerfile() if kind == "COPY" and "--from" not in args]
    sources = [source for args in copies for source in args[:-1]]
    assert {"pyproject.toml", "bridge", "handlers", "config.yaml", "rules"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not _ignored(source), f"{source} is copied but .containerignore leaves it out"
    for heavy in (".venv", "data", ".git", "tests", "secrets.yaml"):
        assert _ignored(heavy), heavy


def test_containerfile_runs_and_checks_real_subcommands() -> None:
    instructions = dict(_containerfile())  # the last of each kind, as the image has it
    command = yaml.safe_load(instructions["CMD"])
    assert command[:1] == ["llm2mqtt"]
    assert command[1] in _subcommands()
    health = yaml.safe_load(instructions["HEALTHCHECK"].split("CMD", 1)[1])
    assert health == ["llm2mqtt", "health"]
    assert "health" in _subcommands()
    assert instructions["EXPOSE"] == str(HttpSettings().port)
    env = dict(pair.split("=", 1) for pair in shlex.split(instructions["ENV"]))
    assert {"LLM2MQTT_CONFIG", "LLM2MQTT_DATA_DIR"} <= set(env)
    assert env["LLM2MQTT_CONFIG"].startswith("/config/")
    assert "host.containers.internal" in env["LLM2MQTT_MQTT_URL"]
    assert "host.containers.internal" in env["LLM2MQTT_OLLAMA_URL"]
    assert set(k for k in env if k.startswith("LLM2MQTT_")) <= ENVIRONMENT


def test_compose_builds_the_containerfile_with_the_config_read_only() -> None:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    service = compose["services"]["llm2mqtt"]
    assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == (
        ROOT / "Containerfile"
    )
    volumes = {volume.split(":")[1]: volume for volume in service["volumes"]}
    assert "ro" in volumes["/config"].split(":")[2].split(",")
    assert volumes["/data"].split(":")[0] in compose["volumes"]
    assert service["healthcheck"]["test"] == ["CMD", "llm2mqtt", "health"]
    assert set(service["environment"]) <= ENVIRONMENT
    assert any(port.endswith(f":{HttpSettings().port}") for port in service["ports"])


def test_launchd_agent_runs_the_daemon_from_the_clone() -> None:
    (plist_path,) = (DEPLOY / "launchd").glob("*.plist")
    agent = plistlib.loads(plist_path.read_bytes())
    assert plist_path.stem == agent["Label"]
    program, command = agent["ProgramArguments"]
    clone = agent["WorkingDirectory"]
    assert program == f"{clone}/.venv/bin/llm2mqtt"
    assert command in _subcommands()
    assert agent["KeepAlive"] == {"SuccessfulExit": False}
    assert agent["RunAtLoad"] is True
    assert agent["StandardErrorPath"].endswith(".log")
    environment = agent["EnvironmentVariables"]
    assert set(k for k in environment if k.startswith("LLM2MQTT_")) <= ENVIRONMENT
    assert environment["LLM2MQTT_CONFIG"] == f"{clone}/config.yaml"
    # Every path is under the two placeholders the README's install command replaces.
    paths = [program, clone, agent["StandardOutPath"], agent["StandardErrorPath"], *environment.values()]
    assert all(p.startswith("/Users/you/") for p in paths if p.startswith("/"))


def _unit() -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / "llm2mqtt.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


def test_systemd_unit_points_data_and_config_at_its_directories() -> None:
    unit = _unit()
    assert unit["Restart"] == ["on-failure"]
    # Type=notify only because the daemon sends READY=1 and WATCHDOG=1 (bridge/pipeline/heartbeat.py).
    assert unit["Type"] == ["notify"]
    assert float(unit["WatchdogSec"][0]) >= 4 * heartbeat.BEAT_EVERY
    environment = dict(item.split("=", 1) for item in unit["Environment"])
    assert environment["LLM2MQTT_DATA_DIR"] == f"%S/{unit['StateDirectory'][0]}"
    assert environment["LLM2MQTT_CONFIG"] == f"%E/{unit['ConfigurationDirectory'][0]}/config.yaml"
    assert set(environment) <= ENVIRONMENT
    program, command = unit["ExecStart"][0].split()
    assert program.endswith("/bin/llm2mqtt")
    assert command in _subcommands()
    assert unit["DynamicUser"] == ["yes"]
    for hardening in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert unit[hardening] == ["yes"], hardening
    assert unit["ProtectSystem"] == ["strict"]


def test_systemd_unit_exit_code_for_invalid_config_is_the_cli_s() -> None:
    from bridge.cli import EXIT_INVALID

    assert _unit()["RestartPreventExitStatus"] == [str(EXIT_INVALID)]
