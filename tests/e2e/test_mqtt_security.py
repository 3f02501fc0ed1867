"""TLS with a private CA, and username/password, against a real Mosquitto."""

import datetime
import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.mqtt_helpers import Collector, Daemon, free_port, wait_for_port
from tests.support.samples import jpeg

pytestmark = pytest.mark.broker


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llm2mqtt test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


@pytest.fixture
def secure_broker(tmp_path: Path):
    """Mosquitto with a TLS listener needing a password, and a plain one for the test's client."""
    folder = tmp_path / "secure"
    folder.mkdir()
    ca, cert, key = _certificates(folder)
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
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with (folder / "mosquitto.log").open("wb") as log:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    wait_for_port(tls_port)
    wait_for_port(plain_port)
    yield tls_port, plain_port, ca
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
