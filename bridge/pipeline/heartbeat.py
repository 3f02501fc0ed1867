"""The daemon's sign of life, for supervisors.

A task on the event loop rewrites `<data_dir>/heartbeat.json` every `BEAT_EVERY` seconds, so a
fresh file proves the loop still runs (a daemon stuck in a blocking call stops writing it).
`llm2mqtt health` reads it (the container's HEALTHCHECK). Under systemd the same task tells the
service manager `READY=1` once the daemon takes input and `WATCHDOG=1` on every beat
(sd_notify's datagram protocol, spoken directly: no library needed).
"""

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_NAME = "heartbeat.json"
BEAT_EVERY = 5.0
STALE_AFTER = 30.0  # six missed beats: the loop is stuck, not merely busy


def write(path: Path, status: Mapping[str, Any], now: float) -> None:
    """Replace the heartbeat file atomically (a reader never sees half a file)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"ts": now, "pid": os.getpid(), **status}))
    temporary.replace(path)


def verdict(path: Path, now: float, stale_after: float = STALE_AFTER) -> tuple[bool, str]:
    """(alive, what to tell a person) for the heartbeat file at `path`."""
    try:
        beat = json.loads(path.read_text())
        age = now - float(beat["ts"])
    except FileNotFoundError:
        return False, f"{path}: no heartbeat: the daemon is not running (or not yet started)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return False, f"{path}: unreadable heartbeat: {exc}"
    if age > stale_after:
        return False, f"{path}: last beat {age:.0f}s ago (over {stale_after:.0f}s): the daemon is stuck"
    broker = "connected" if beat.get("mqtt") else "disconnected"
    return True, (
        f"alive (pid {beat.get('pid')}): last beat {age:.1f}s ago; broker {broker}; "
        f"{beat.get('load', 0)} job(s) waiting or running"
    )


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send `message` to systemd's notification socket when there is one; True when sent."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.warning("cannot notify the service manager at %s: %s", address, exc)
        return False
    return True


async def beat(path: Path, status: Callable[[], Mapping[str, Any]], every: float = BEAT_EVERY) -> None:
    """Write the heartbeat and ping systemd's watchdog every `every` seconds, until cancelled."""
    notify("READY=1")
    failing = False
    try:
        while True:
            try:
                write(path, status(), time.time())
                failing = False
            except OSError as exc:
                if not failing:  # once per outage, not every beat
                    log.warning("cannot write the heartbeat %s: %s", path, exc)
                failing = True
            notify("WATCHDOG=1")
            await asyncio.sleep(every)
    finally:
        notify("STOPPING=1")
        clear(path)


def clear(path: Path) -> None:
    """Remove the heartbeat: the daemon stopped on purpose, it is not stuck."""
    path.unlink(missing_ok=True)


def start(data_dir: Path, status: Callable[[], Mapping[str, Any]]) -> "asyncio.Task[None]":
    """Start beating into `data_dir`; `status()` gives `mqtt` (connected) and `load` (jobs)."""
    return asyncio.create_task(beat(data_dir / FILE_NAME, status), name="heartbeat")


async def stop(task: "asyncio.Task[None]") -> None:
    """Stop beating: the file is removed and systemd hears STOPPING=1."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
