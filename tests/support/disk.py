"""A disk that refuses to grow files: write errors as a full or failing disk gives them."""

import os
import resource
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def files_cannot_grow(past: Path) -> Iterator[None]:
    """No file of this process may grow past `past`'s present size: the next write beyond it
    fails with EFBIG (SQLite: "disk I/O error", and it rolls the transaction back)."""
    limit = os.path.getsize(past)
    before = resource.getrlimit(resource.RLIMIT_FSIZE)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the process is killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, before)
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
