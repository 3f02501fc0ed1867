"""Pictures for the console: each job's image as its rule prepares it, and a thumbnail of it.

Made once, on first view, in a worker thread, and kept in `data/web-thumbs.sqlite3` (a cache
of the console's own: deleting it loses nothing). The journal keeps the image as received;
the version sent to the model is the rule's crop and resize of it, which is deterministic,
so it is made again here rather than stored a second time with every job.
"""

import io
import sqlite3
import threading
import time
from pathlib import Path

from PIL import Image

from bridge.pipeline.images import ImageSpec, prepare_image

THUMB_SIDE = 320


class ThumbCache:
    """Prepared images and thumbnails by (image hash, how it was prepared)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")  # a cache: a lost row is made again
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS pictures"
            " (key TEXT PRIMARY KEY, data BLOB NOT NULL, made REAL NOT NULL)"
        )
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def prune(self, older_than: float) -> None:
        with self._lock:
            self._db.execute("DELETE FROM pictures WHERE made < ?", (time.time() - older_than,))

    def picture(self, digest: str, spec: ImageSpec, original: bytes, *, thumb: bool) -> bytes:
        """The JPEG sent to the model for this image (or its thumbnail); raises ImageError."""
        key = f"{digest}:{spec.crop}:{spec.max_side}:{spec.quality}:{'t' if thumb else 's'}"
        with self._lock:
            row = self._db.execute("SELECT data FROM pictures WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return bytes(row[0])
        data = prepare_image(original, spec).data
        if thumb:
            data = _shrink(data, THUMB_SIDE)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO pictures (key, data, made) VALUES (?, ?, ?)", (key, data, time.time())
            )
        return data


def _shrink(jpeg: bytes, side: int) -> bytes:
    with Image.open(io.BytesIO(jpeg)) as image:
        image.draft("RGB", (side, side))
        image.thumbnail((side, side))
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG", quality=75)
        return out.getvalue()
