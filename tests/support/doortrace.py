"""A synthetic 24-hour camera trace of a door's thumb-turn, and a judge that reads it from pixels.

One frame every 30 seconds (2,880 frames). The thumb-turn is a dark bar on a bright round
plate: horizontal is locked, vertical is unlocked. It turns 8 times during the day. Every frame
has sensor noise, and the light follows the day (dim at night, bright at noon), so no two
frames are the same bytes, while the picture "did not change" most of the time.
"""

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

WIDTH, HEIGHT = 320, 240
FRAMES = 2880
STEP_S = 30
CHANGE_FRAMES = (310, 655, 1020, 1290, 1600, 1985, 2330, 2710)
# The rule's crop around the lock plate: x, y, w, h as fractions.
LOCK_CROP = (0.40, 0.30, 0.25, 0.35)
_PLATE = (WIDTH * 0.525, HEIGHT * 0.475, 26)  # centre x, y, radius


@dataclass(frozen=True)
class Frame:
    index: int
    locked: bool
    jpeg: bytes


def locked_at(index: int) -> bool:
    """Locked at the start of the day; every change frame turns the thumb-turn."""
    flips = sum(1 for at in CHANGE_FRAMES if index >= at)
    return flips % 2 == 0


def light_at(index: int) -> float:
    """Brightness factor through the day: 0.45 at midnight, 1.0 at noon, changing slowly."""
    hours = index * STEP_S / 3600
    return 0.45 + 0.55 * (0.5 - 0.5 * math.cos(2 * math.pi * hours / 24))


def _scene(locked: bool) -> np.ndarray:
    image = Image.new("RGB", (WIDTH, HEIGHT), (150, 110, 70))  # a wooden door
    draw = ImageDraw.Draw(image)
    for x in range(0, WIDTH, 40):  # panels, so the frame has structure outside the crop
        draw.rectangle([x + 4, 10, x + 34, HEIGHT - 10], outline=(120, 85, 50), width=2)
    cx, cy, r = _PLATE
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(215, 210, 200), outline=(90, 90, 90), width=2)
    long, thick = r * 0.8, 5
    if locked:
        draw.rectangle([cx - long, cy - thick, cx + long, cy + thick], fill=(35, 35, 35))
    else:
        draw.rectangle([cx - thick, cy - long, cx + thick, cy + long], fill=(35, 35, 35))
    return np.asarray(image, dtype=np.float32)


def frames(count: int = FRAMES, *, seed: int = 7, noise: float = 4.0) -> Iterator[Frame]:
    """The trace, frame by frame (JPEG bytes, quality 85)."""
    rng = np.random.default_rng(seed)
    scenes = {True: _scene(True), False: _scene(False)}
    for index in range(count):
        locked = locked_at(index)
        pixels = scenes[locked] * light_at(index) + rng.normal(0.0, noise, scenes[locked].shape)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        yield Frame(index, locked, out.getvalue())


def judge_locked(jpeg: bytes) -> bool:
    """Read the thumb-turn from pixels: is the dark bar lying across (a dark row) or upright?"""
    with Image.open(io.BytesIO(jpeg)) as image:
        grey = np.asarray(image.convert("L"), dtype=np.float32)
    h, w = grey.shape
    centre = grey[h // 4 : h - h // 4, w // 4 : w - w // 4]
    return bool(centre.mean(axis=1).min() < centre.mean(axis=0).min())
