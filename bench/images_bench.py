"""Time bridge.images.prepare_image against the obvious Pillow path on a 12-megapixel snapshot.

Run: PYTHONPATH=. python bench/images_bench.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from io import BytesIO

from PIL import Image, ImageChops

from bridge.pipeline.images import ImageSpec, prepare_image


def _snapshot_jpeg(size: tuple[int, int] = (4000, 3000)) -> bytes:
    """A 4000x3000 JPEG (quality 90) that compresses like a photo, not like a flat test card.

    Smooth colour gradients give large-scale structure; mild Gaussian noise stands in for sensor
    noise and fine texture, which is what makes real snapshots several megabytes.
    """
    horizontal = Image.linear_gradient("L").rotate(90).resize(size)
    vertical = Image.linear_gradient("L").resize(size)
    base = Image.merge("RGB", (horizontal, vertical, ImageChops.invert(horizontal)))
    noise = Image.effect_noise(size, 24).convert("RGB")
    photo = Image.blend(base, noise, 0.25)
    out = BytesIO()
    photo.save(out, "JPEG", quality=90)
    return out.getvalue()


def _median_ms(action: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``action`` in milliseconds, after one warm-up run."""
    action()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _plain(data: bytes) -> bytes:
    """What one would write without thinking about it: full decode, thumbnail, re-encode."""
    img = Image.open(BytesIO(data))
    img.load()
    img.thumbnail((640, 640))
    out = BytesIO()
    img.save(out, "JPEG", quality=85)
    return out.getvalue()


def bench_image_path(repeat: int = 15) -> dict[str, float]:
    """Median milliseconds of prepare_image and of the plain path, their ratio, and byte sizes."""
    data = _snapshot_jpeg()
    spec = ImageSpec(max_side=640)
    prepared_ms = _median_ms(lambda: prepare_image(data, spec), repeat)
    plain_ms = _median_ms(lambda: _plain(data), repeat)
    return {
        "prepared_ms": round(prepared_ms, 2),
        "plain_ms": round(plain_ms, 2),
        "speedup": round(plain_ms / prepared_ms, 2),
        "bytes_in": float(len(data)),
        "bytes_out": float(len(prepare_image(data, spec).data)),
    }


if __name__ == "__main__":
    print(bench_image_path())
