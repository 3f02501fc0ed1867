"""The data directory: the daemon's own, and nobody else's on this machine."""

from pathlib import Path


def make_private(folder: Path) -> None:
    """The data directory 0700 and everything in it 0600: door pictures and notes are nobody
    else's business on this machine (files made before this rule included)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    for path in folder.rglob("*"):
        if path.is_symlink():
            continue  # never change something outside the folder
        path.chmod(0o700 if path.is_dir() else 0o600)
