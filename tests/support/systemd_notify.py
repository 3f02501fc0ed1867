"""A stand-in for systemd's notification socket (sd_notify's datagrams), for tests."""

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def notify_socket(folder: Path) -> Iterator[tuple[str, Callable[[], str]]]:
    """A datagram socket standing where systemd's notification socket would be."""
    path = folder / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(20)
        yield str(path), lambda: sock.recv(4096).decode()
