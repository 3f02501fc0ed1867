"""The data directory: the daemon's own, and nobody else's on this machine."""

import fcntl
import os
from pathlib import Path
from typing import IO


def make_private(folder: Path) -> None:
    """The data directory 0700 and everything in it 0600: door pictures and notes are nobody
    else's business on this machine (files made before this rule included)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    for path in folder.rglob("*"):
        if path.is_symlink():
            continue  # never change something outside the folder
        path.chmod(0o700 if path.is_dir() else 0o600)


class FolderInUse(Exception):
    """Another process holds the data directory; the message says which, when it wrote its pid."""


def hold(folder: Path) -> IO[str]:
    """Hold `folder` for this process alone, until the returned file is closed or the process
    ends, however it ends (a kill included: the system drops the lock). Two daemons on one
    journal would both resume its jobs and take each other's broker session in turn. (The
    journal makes the folder private when it opens; the lock file is 0600 by the daemon's umask.)"""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    handle = (folder / "llm2mqtt.lock").open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise FolderInUse(
            f"another llm2mqtt (pid {holder or 'unknown'}) is running with the data directory {folder};"
            " stop it first, or give this one a data_dir of its own"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
