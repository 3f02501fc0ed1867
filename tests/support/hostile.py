"""A corpus of hostile inputs: each must become that input's error, never a stuck daemon."""

import base64
import json
import struct
import zlib
from io import BytesIO

from PIL import Image

from tests.support.samples import jpeg

TEXT_RUN = "llm2mqtt/message_topic/run"
CAMERA = "cameras/front_door/snapshot"


def deep_json(levels: int = 10_000) -> bytes:
    """An object nested `levels` deep: Python's parser recurses on it."""
    return ('{"a":' * levels + "1" + "}" * levels).encode()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims width x height: a pixel bomb without the memory."""
    buffer = BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def png_text_bomb() -> bytes:
    """A small PNG with a compressed text chunk that inflates to 64 MB."""
    buffer = BytesIO()
    Image.new("L", (8, 8)).save(buffer, "PNG")
    data = buffer.getvalue()
    bomb = _png_chunk(b"zTXt", b"comment\x00\x00" + zlib.compress(bytes(64_000_000), 9))
    return data[:33] + bomb + data[33:]


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG whose SOF0 header was rewritten to claim width x height."""
    data = bytearray(jpeg(200, size=(16, 16)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_claiming(width: int, height: int) -> bytes:
    """A WebP (VP8X) header claiming a canvas of width x height."""
    canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    chunk = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + canvas
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


# (id, topic, payload, a piece of the expected error)
CORPUS: list[tuple[str, str, bytes, str]] = [
    ("deep-json", TEXT_RUN, deep_json(), "nested deeper"),
    ("deep-array", TEXT_RUN, b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}", "nested deeper"),
    ("huge-integer", TEXT_RUN, b'{"text":"x","n":' + b"9" * 100_000 + b"}", "invalid JSON"),
    ("huge-float", TEXT_RUN, b'{"text":"x","n":1e999999}', "too large"),
    ("nan", TEXT_RUN, b'{"text":"x","n":NaN}', "NaN"),
    ("lone-surrogate", TEXT_RUN, b'{"text":"milk \\ud800"}', "surrogate"),
    ("surrogate-key", TEXT_RUN, b'{"\\udfff":1,"text":"milk"}', "surrogate"),
    ("nul-bytes", TEXT_RUN, b"milk\x00\x00eggs", "NUL"),
    ("nul-in-json", TEXT_RUN, b'{"text":"milk\\u0000"}', "NUL"),
    ("zero-bytes", TEXT_RUN, b"", "empty"),
    ("20MB", TEXT_RUN, b"a" * (20 * 1024 * 1024), "above the limit"),
    ("not-utf8", TEXT_RUN, bytes(range(128, 256)) * 4, "nor UTF-8"),
    ("id-object", TEXT_RUN, json.dumps({"id": {"a": 1}, "text": "x"}).encode(), "'id' must be"),
    ("png-bomb", CAMERA, png_claiming(100_000, 100_000), "megapixels"),
    ("png-text-bomb", CAMERA, png_text_bomb(), "image"),
    ("jpeg-bomb", CAMERA, jpeg_claiming(65_000, 65_000), "megapixels"),
    ("webp-bomb", CAMERA, webp_claiming(16_000, 16_000), "megapixels"),
    ("garbage-after-jpeg-magic", CAMERA, b"\xff\xd8\xff" + b"\x00garbage" * 1000, "decoded"),
    (
        "base64-png-bomb",
        TEXT_RUN,
        json.dumps({"image": base64.b64encode(png_claiming(50_000, 50_000)).decode()}).encode(),
        "megapixels",
    ),
    ("text-to-camera", CAMERA, b"not a jpeg", "accepts only images"),
    ("number-to-camera", CAMERA, b"42", "accepts only images"),
]
