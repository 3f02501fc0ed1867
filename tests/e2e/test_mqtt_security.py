"""TLS with a private CA, and username/password, against a real Mosquitto."""

import contextlib
import datetime
import ipaddress
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.e2e.test_cli import cli
from tests.support.certs import certificates
from tests.support.mqtt_helpers import Collector, Daemon, free_port, wait_for_port
from tests.support.samples import jpeg

pytestmark = pytest.mark.broker


@pytest.fixture
def secure_broker(tmp_path: Path):
    """Mosquitto with a TLS listener needing a password, and a plain one for the test's client."""
    folder = tmp_path / "secure"
    folder.mkdir()
    ca, cert, key = certificates(folder, x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    passwords = folder / "passwd"
    passwords.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "bridge", "s3cret pass"], check=True)
    tls_port, plain_port = free_port(), free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(
        "per_listener_settings true\n"
        # Started as root, Mosquitto would drop to its own user and not read the test's files.
        "user root\n"
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
        "allow_anonymous false\n"
        f"password_file {passwords}\n"
        f"listener {plain_port} 127.0.0.1\n"
        "allow_anonymous true\n"
    )
    with _mosquitto(conf, [tls_port, plain_port]):
        yield tls_port, plain_port, ca


@pytest.fixture
def mutual_tls_broker(tmp_path: Path):
    """Mosquitto with a TLS listener that wants a client certificate; (port, CA, cert, key)."""
    folder, client = tmp_path / "server", tmp_path / "client"
    folder.mkdir()
    client.mkdir()
    ca, cert, key = certificates(folder, x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    client_ca, client_cert, client_key = certificates(client, x509.DNSName("llm2mqtt"))
    bundle = folder / "trusted.pem"
    bundle.write_bytes(ca.read_bytes() + client_ca.read_bytes())
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"user root\nlistener {port} 127.0.0.1\n"
        f"cafile {bundle}\ncertfile {cert}\nkeyfile {key}\n"
        "require_certificate true\nallow_anonymous true\n"
    )
    with _mosquitto(conf, [port]):
        yield port, ca, client_cert, client_key


@contextlib.contextmanager
def _mosquitto(conf: Path, ports: list[int]) -> Iterator[None]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with (conf.parent / "mosquitto.log").open("wb") as log:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        for port in ports:
            wait_for_port(port)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def test_tls_with_password(secure_broker, write_config, ollama, tmp_path: Path) -> None:
    tls_port, plain_port, ca = secure_broker
    watcher = Collector(plain_port, ["llm2mqtt/#"])
    config = write_config(
        mqtt={"url": f"mqtts://bridge:s3cret%20pass@127.0.0.1:{tls_port}", "tls": {"ca_certs": str(ca)}},
        ollama={"url": ollama.url},
    )
    daemon = Daemon(config)
    daemon.start()
    try:
        watcher.wait_for("llm2mqtt/bridge/state", where=lambda m: m.json() == {"state": "online"})
        watcher.publish("cameras/front_door/snapshot", jpeg(240))
        assert watcher.wait_for("llm2mqtt/front_door_lock/state")[0].payload == b"locked"
        assert "s3cret" not in daemon.output()
    finally:
        daemon.stop()
        watcher.close()


def test_wrong_password_is_reported_and_retried(secure_broker, write_config, ollama) -> None:
    tls_port, _plain_port, ca = secure_broker
    config = write_config(
        mqtt={
            "url": f"mqtts://bridge:wrong@127.0.0.1:{tls_port}",
            "tls": {"ca_certs": str(ca)},
            "reconnect_max": 1,
        },
        ollama={"url": ollama.url},
    )
    daemon = Daemon(config)
    daemon.start()
    try:
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=10)
        while "refused the connection" not in daemon.output() and datetime.datetime.now() < deadline:
            subprocess.run(["sleep", "0.2"], check=True)
        assert "refused the connection" in daemon.output()
        assert "wrong" not in daemon.output()
    finally:
        assert daemon.stop() == 0


def _tls_config(write_config, ollama, tls_port: int, ca: Path, **tls: Any) -> Path:
    # The certificate names 127.0.0.1 only: "localhost" is the wrong host name for it.
    return write_config(
        mqtt={
            "url": f"mqtts://bridge:s3cret%20pass@localhost:{tls_port}",
            "tls": {"ca_certs": str(ca), **tls},
            "reconnect_max": 1,
        },
        ollama={"url": ollama.url},
    )


def test_a_tls_failure_is_logged_with_its_reason(secure_broker, write_config, ollama) -> None:
    tls_port, _plain_port, ca = secure_broker
    daemon = Daemon(_tls_config(write_config, ollama, tls_port, ca))
    daemon.start()
    try:
        deadline = time.monotonic() + 10
        while "cannot reach the broker" not in daemon.output() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.5)  # a few retries: the reason is logged once, not on every retry
        lines = [line for line in daemon.output().splitlines() if "cannot reach the broker at" in line]
        assert len(lines) == 1, lines
        assert "TLS: the broker's certificate was not accepted" in lines[0]
        assert "Hostname mismatch" in lines[0]
    finally:
        assert daemon.stop() == 0


def test_check_live_uses_the_daemons_tls_settings(secure_broker, write_config, ollama) -> None:
    tls_port, _plain_port, ca = secure_broker
    refused = cli("check", "--live", "-c", str(_tls_config(write_config, ollama, tls_port, ca)))
    assert "Hostname mismatch" in refused.stderr
    accepted = _tls_config(write_config, ollama, tls_port, ca, insecure=True)
    done = cli("check", "--live", "-c", str(accepted))
    assert "cannot reach the broker" not in done.stderr
    assert f"broker at mqtts://bridge@localhost:{tls_port}: connected" in done.stdout


def test_check_live_presents_the_client_certificate(mutual_tls_broker, write_config, ollama) -> None:
    port, ca, cert, key = mutual_tls_broker
    tls = {"ca_certs": str(ca), "certfile": str(cert), "keyfile": str(key)}
    config = write_config(mqtt={"url": f"mqtts://127.0.0.1:{port}", "tls": tls}, ollama={"url": ollama.url})
    done = cli("check", "--live", "-c", str(config))
    assert "cannot reach the broker" not in done.stderr
    assert f"broker at mqtts://127.0.0.1:{port}: connected" in done.stdout
