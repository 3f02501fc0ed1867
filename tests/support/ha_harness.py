"""A real Home Assistant for tests: installed once from PyPI into a cached venv, started per test.

    hass = HomeAssistant(tmp_path / "ha", mqtt_port=broker.port)
    hass.add_entry("local_todo", "Shopping", {"todo_list_name": "Shopping"})   # any config entry
    hass.start()                      # writes .storage, starts `hass`, onboards, gets a token
    hass.state("binary_sensor.front_door_lock")
    hass.rest_post("/api/services/todo/add_item", {...})
    hass.restart(); hass.stop()

Home Assistant runs under Python 3.13 (`LLM2MQTT_HA_PYTHON`, else `python3.13` on PATH or in
pyenv). The venv lives under `LLM2MQTT_HA_CACHE` (default ~/.cache/llm2mqtt-ha) and survives
between runs; `python -m tests.support.ha_harness` installs it ahead of a test run (it takes minutes).
"""

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.mqtt_helpers import free_port

HA_VERSION = "2025.4.4"  # the last release that runs on Python 3.13.0
REQUIREMENTS = [
    f"homeassistant=={HA_VERSION}",
    # What the integrations set up by the tests ask for, so `hass` installs nothing at start.
    "paho-mqtt==2.1.0",
    "home-assistant-frontend==20250411.0",
    "ical==9.1.0",
    "colorlog==6.8.2",  # for `hass --script check_config`
    # ical asks for pyparsing>=3.0.9 and Home Assistant's constraints leave it open; with 3.3
    # Local To-do cannot read its own .ics file back after a restart.
    "pyparsing==3.2.5",
]
CONSTRAINTS = "homeassistant/package_constraints.txt"  # inside the homeassistant wheel
CACHE = Path(os.environ.get("LLM2MQTT_HA_CACHE", Path.home() / ".cache" / "llm2mqtt-ha"))
PYENV_PYTHON = Path("/root/.pyenv/versions/3.13.0/bin/python")
USER, PASSWORD = "llm2mqtt", "llm2mqtt-test-password"


class HarnessError(RuntimeError):
    """Home Assistant could not be installed or started; the message says what to look at."""


def find_python() -> str | None:
    """A Python 3.13 interpreter for Home Assistant, or None."""
    for candidate in (os.environ.get("LLM2MQTT_HA_PYTHON"), shutil.which("python3.13"), str(PYENV_PYTHON)):
        if candidate and Path(candidate).exists():
            probe = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 13))"],
                capture_output=True,
                text=True,
                check=False,
            )
            if probe.stdout.strip() == "True":
                return candidate
    return None


def ensure_installed(extra: list[str] | None = None, *, cache: Path = CACHE) -> Path:
    """The `hass` executable of the cached venv, installing what is missing (minutes, once).

    The install is pinned the way Home Assistant pins its own: by the package_constraints.txt
    shipped in its wheel, so pip resolves at once instead of backtracking for many minutes.
    """
    wanted = sorted(REQUIREMENTS + (extra or []))
    venv = cache / "venv"
    marker = venv / ".llm2mqtt-requirements"
    hass = venv / "bin" / "hass"
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs never install into one venv at once
        if hass.exists() and marker.exists() and set(wanted) <= set(marker.read_text().split()):
            return hass
        python = find_python()
        if python is None:
            raise HarnessError("Home Assistant needs Python 3.13: set LLM2MQTT_HA_PYTHON")
        started = time.monotonic()
        _say(
            f"installing Home Assistant {HA_VERSION} into {venv} for the real-Home-Assistant tests: "
            "the first time takes several minutes and about 850 MB; later runs reuse it"
        )
        if not (venv / "bin" / "python").exists():
            subprocess.run([python, "-m", "venv", str(venv)], check=True)
        constraints = _constraints(venv / "bin" / "python", cache)
        log = cache / "install.log"
        _say(f"pip install {' '.join(wanted)} with {constraints.name} (progress: tail -f {log})")
        with log.open("w") as output:
            done = subprocess.run(
                [*_pip(venv / "bin" / "python", "install"), "-c", str(constraints), *wanted],
                stdout=output,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if done.returncode != 0:
            raise HarnessError(f"pip install of Home Assistant failed:\n{log.read_text()[-5000:]}")
        marker.write_text("\n".join(wanted))
        size = sum(f.lstat().st_blocks * 512 for f in venv.rglob("*"))  # on disk, as du counts
        _say(f"Home Assistant installed in {time.monotonic() - started:.0f}s: {size / 1e6:.0f} MB in {venv}")
        return hass


def _constraints(python: Path, cache: Path) -> Path:
    """Home Assistant's own package_constraints.txt, read from its wheel (downloaded, not installed)."""
    target = cache / f"package_constraints-{HA_VERSION}.txt"
    if target.exists():
        return target
    _say(f"downloading the homeassistant {HA_VERSION} wheel (43 MB) for its package constraints")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as downloads:
        done = subprocess.run(
            [*_pip(python, "download", "-q", "--no-deps", "-d", downloads), f"homeassistant=={HA_VERSION}"],
            capture_output=True,
            text=True,
            check=False,
        )
        wheels = sorted(Path(downloads).glob(f"homeassistant-{HA_VERSION}-*.whl"))
        if done.returncode != 0 or not wheels:
            raise HarnessError(
                f"cannot download the homeassistant wheel:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            target.write_bytes(wheel.read(CONSTRAINTS))
    return target


def _pip(python: Path, *args: str) -> list[str]:
    return [str(python), "-m", "pip", *args, "--disable-pip-version-check"]


def _say(message: str) -> None:
    """Progress of the install, on the terminal even under pytest's output capture."""
    print(f"[home assistant] {message}", file=sys.__stderr__, flush=True)


def mqtt_entry(port: int, host: str = "127.0.0.1") -> dict[str, Any]:
    """A config entry of the MQTT integration for a broker (discovery on, default prefix)."""
    return {
        "domain": "mqtt",
        "title": f"{host}:{port}",
        "data": {"broker": host, "port": port, "discovery": True},
    }


class HomeAssistant:
    """One Home Assistant instance with its own config directory and HTTP port."""

    def __init__(
        self,
        config_dir: Path,
        *,
        mqtt_port: int | None = None,
        configuration: str = "",
        extra_requirements: list[str] | None = None,
    ) -> None:
        self.config_dir = config_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.configuration = configuration
        self.extra_requirements = extra_requirements or []
        self.entries: list[dict[str, Any]] = [mqtt_entry(mqtt_port)] if mqtt_port is not None else []
        self.token: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = config_dir / "hass.log"

    def add_entry(
        self, domain: str, title: str, data: dict[str, Any], options: dict[str, Any] | None = None
    ) -> None:
        """Another config entry to write into .storage before the first start (e.g. local_todo)."""
        self.entries.append({"domain": domain, "title": title, "data": data, "options": options or {}})

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 240.0) -> None:
        hass = ensure_installed(self.extra_requirements)
        first = not (self.config_dir / ".storage" / "core.config_entries").exists()
        if first:
            self._write_config()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(hass), "-c", str(self.config_dir), "--log-no-color"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))},
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        self._wait(lambda: self._get_raw("/api/onboarding") is not None, deadline, "its HTTP server")
        if self.token is None:
            self._onboard()
        self._wait(lambda: self.rest_get("/api/config").get("state") == "RUNNING", deadline, "RUNNING")

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def restart(self, timeout: float = 240.0) -> None:
        self.stop()
        self.start(timeout)

    def check_config(self, info: str | None = None) -> str:
        """`hass --script check_config` output (with `--info <domain>`: that domain's validated
        config); raises HarnessError when it reports errors."""
        hass = ensure_installed(self.extra_requirements)
        if not (self.config_dir / "configuration.yaml").exists():
            self._write_config()
        done = subprocess.run(
            [
                str(hass),
                "--script",
                "check_config",
                "-c",
                str(self.config_dir),
                *(["--info", info] if info else []),
            ],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        output = done.stdout + done.stderr
        if done.returncode != 0 or "Failed config" in output:
            raise HarnessError(f"Home Assistant's config check failed:\n{output[-5000:]}")
        return output

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- REST --------------------------------------------------------------------------

    def rest_get(self, path: str) -> Any:
        return self._request("GET", path)

    def rest_post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._request("POST", path, body or {})

    def state(self, entity_id: str) -> dict[str, Any] | None:
        """The entity's state object (`state`, `attributes`…), or None when it does not exist."""
        try:
            found: dict[str, Any] = self.rest_get(f"/api/states/{entity_id}")
        except HarnessError as exc:
            if "404" in str(exc):
                return None
            raise
        return found

    def wait_for_state(
        self,
        entity_id: str,
        where: Callable[[dict[str, Any]], bool] = lambda s: True,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """The entity's state once `where` holds, or HarnessError with the last one seen."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.state(entity_id)
            if last is not None and where(last):
                return last
            time.sleep(0.25)
        raise HarnessError(f"{entity_id} did not reach the expected state within {timeout}s; last: {last}")

    # -- internals -------------------------------------------------------------------------

    def _write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "configuration.yaml").write_text(
            "homeassistant:\n"
            "  name: llm2mqtt test\n  latitude: 35.68\n  longitude: 139.76\n  elevation: 40\n"
            "  unit_system: metric\n  time_zone: UTC\n  country: JP\n  currency: JPY\n"
            f"http:\n  server_host: 127.0.0.1\n  server_port: {self.port}\n"
            "api:\n"
            "logger:\n  default: warning\n  logs:\n    homeassistant.components.mqtt: info\n"
            f"{self.configuration}\n"
        )
        storage = self.config_dir / ".storage"
        storage.mkdir(exist_ok=True)
        entries = [
            {
                "entry_id": uuid.uuid4().hex,
                "version": 1,
                "minor_version": 1,
                "domain": entry["domain"],
                "title": entry["title"],
                "data": entry["data"],
                "options": entry.get("options", {}),
                "source": "user",
            }
            for entry in self.entries
        ]
        # Minor version 1: Home Assistant migrates it to whatever its current layout is.
        document = {
            "version": 1,
            "minor_version": 1,
            "key": "core.config_entries",
            "data": {"entries": entries},
        }
        (storage / "core.config_entries").write_text(json.dumps(document, indent=1))

    def _onboard(self) -> None:
        client_id = f"{self.url}/"
        created = self._request(
            "POST",
            "/api/onboarding/users",
            {
                "client_id": client_id,
                "name": "llm2mqtt",
                "username": USER,
                "password": PASSWORD,
                "language": "en",
            },
            auth=False,
        )
        form = urllib.parse.urlencode(
            {"grant_type": "authorization_code", "code": created["auth_code"], "client_id": client_id}
        ).encode()
        request = urllib.request.Request(f"{self.url}/auth/token", data=form, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            self.token = json.loads(response.read())["access_token"]
        for step in ("core_config", "analytics"):
            self._request("POST", f"/api/onboarding/{step}", {}, auth=True)

    def _request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            if self.token is None:
                raise HarnessError("not onboarded yet: start() first")
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            raise HarnessError(f"{method} {path}: HTTP {exc.code}: {exc.read()[:500]!r}") from None
        return json.loads(text) if text else None

    def _get_raw(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as response:
                return bytes(response.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def _wait(self, ready: Callable[[], bool], deadline: float, what: str) -> None:
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise HarnessError(f"Home Assistant exited ({self.proc.returncode}):\n{self.log()[-5000:]}")
            try:
                if ready():
                    return
            except HarnessError:
                pass
            time.sleep(0.5)
        raise HarnessError(f"Home Assistant did not reach {what} in time:\n{self.log()[-5000:]}")


if __name__ == "__main__":
    # Install (or confirm) the cached Home Assistant ahead of a test run.
    if find_python() is None:
        print("no Python 3.13: Home Assistant tests will be skipped")
        sys.exit(0)
    print(f"Home Assistant {HA_VERSION}: {ensure_installed()}")
