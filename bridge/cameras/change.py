"""Change detection before the model: a perceptual hash of the region the rule looks at. Pure.

The hash is taken from the prepared image (already cropped to the rule's region and shrunk),
so a change elsewhere in the frame does not count. It is an average hash (8×8, 64 bits, the
same bits as imagehash's `average_hash`) of the slightly blurred grey region: uniform lighting
changes and JPEG artefacts leave it alone, a moved object flips many bits. Why not pHash: on a
small, mostly flat region (a lock plate) its DCT coefficients sit near their median and sensor
noise alone flipped up to 16 of 64 bits between two frames of the same scene, while the blurred
average hash moved by at most 2 (tests/support/doortrace.py trace; a thumb-turn turning moved it by 8
to 12).
"""

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageFilter

from bridge.config.cameras import ChangeOptions

HASH_BITS = 64
_SIDE = 8  # the hash is an 8×8 grid of "brighter than the mean" bits
_THUMB = (64, 64)  # JPEG draft decoding to about this size: the hash needs 8×8


def region_hash(data: bytes) -> str:
    """The perceptual hash (hex) of an image; `data` is the prepared (cropped) JPEG."""
    return average_hash(blurred_grey(data))


def blurred_grey(data: bytes) -> Image.Image:
    """The image in grey, decoded small and blurred: what the hash is taken of."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("L", _THUMB)  # decode at 1/2…1/8 scale: most of the cost is skipped
        grey = image.convert("L")
    # Blur in proportion to the size, so the noise of single pixels averages out.
    return grey.filter(ImageFilter.GaussianBlur(max(1.0, min(grey.size) / 40)))


def average_hash(image: Image.Image) -> str:
    """The 64-bit average hash as 16 hex digits: a bit per cell of an 8×8 Lanczos thumbnail,
    set where the cell is brighter than the thumbnail's mean, read row by row."""
    cells = np.asarray(image.convert("L").resize((_SIDE, _SIDE), Image.Resampling.LANCZOS))
    bits = (cells > cells.mean()).flatten()
    return np.packbits(bits).tobytes().hex()


def distance(a: str, b: str) -> int:
    """Differing bits between two hashes from `region_hash`."""
    return bin(int(a, 16) ^ int(b, 16)).count("1")


@dataclass(frozen=True)
class Judged:
    """The last image the model actually judged for one rule and source."""

    hash: str
    at: float
    blob: str | None = None  # content hash of the raw bytes, to see a camera that never changes


@dataclass(frozen=True)
class Decision:
    """Whether to ask the model, and why."""

    run: bool
    reason: Literal["first", "changed", "unchanged", "max_age", "confirm", "forced"]
    distance: int | None = None
    stale: bool = False  # forced by max_age, and the camera sent the very same bytes


def decide(
    current: str,
    last: Judged | None,
    now: float,
    options: ChangeOptions,
    *,
    blob: str | None = None,
    confirming: bool = False,
    forced: bool = False,
) -> Decision:
    """Run the model or skip as unchanged. `confirming`: a state flip waits for its confirmation
    (hysteresis, re-check), which must come from the model; `forced`: a person asked."""
    if last is None:
        return Decision(True, "first")
    dist = distance(current, last.hash)
    if forced:
        return Decision(True, "forced", dist)
    if confirming:
        return Decision(True, "confirm", dist)
    if dist > options.max_distance:
        return Decision(True, "changed", dist)
    # A clock that went backwards (now < at) must not suppress checks for the jump's length.
    age = now - last.at
    if age >= options.max_age or age < 0:
        return Decision(True, "max_age", dist, stale=blob is not None and blob == last.blob)
    return Decision(False, "unchanged", dist)
