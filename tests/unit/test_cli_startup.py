"""`llm2mqtt --version` and `--help` start as quickly as Python: nothing heavy is imported."""

import subprocess
import sys

import pytest

from tests.support.mqtt_helpers import ROOT

HEAVY = ("pydantic", "paho", "ollama", "PIL", "yaml", "httpx", "numpy", "jinja2", "boto3", "asyncio")


@pytest.mark.parametrize("option", ["--version", "--help"])
def test_version_and_help_import_nothing_heavy(option: str) -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bridge", option],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "llm2mqtt" in done.stdout
    # -X importtime lists every module imported, one per line: "import time: self | cumulative | name".
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    heavy = sorted(name for name in imported if name.split(".")[0] in HEAVY)
    assert heavy == []
    assert not [
        name for name in imported if name.startswith(("bridge.config", "bridge.pipeline", "handlers"))
    ]
