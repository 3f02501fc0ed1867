"""Tests for bridge.images: every image is generated here with Pillow, small unless size is the point."""

from __future__ import annotations

import random
import struct
import time
import warnings
import zlib
from io import BytesIO
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageChops, ImageDraw, ImageFile, ImageStat, JpegImagePlugin

from bridge.pipeline import images
from bridge.pipeline.images import (
    ImageError,
    ImageSpec,
    PreparedImage,
    image_size,
    prepare_image,
    sniff_image,
)


def encode(img: Image.Image, fmt: str, **params: Any) -> bytes:
    out = BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


def decode(prepared: PreparedImage) -> Image.Image:
    img = Image.open(BytesIO(prepared.data))
    img.load()
    return img


def mean(img: Image.Image) -> float:
    return float(ImageStat.Stat(img.convert("L")).mean[0])


def rgb_at(img: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    pixel = img.getpixel(xy)
    assert isinstance(pixel, tuple)
    return pixel


def half_black_half_white(size: tuple[int, int] = (200, 100)) -> Image.Image:
    img = Image.new("RGB", size, "white")
    img.paste((0, 0, 0), (0, 0, size[0] // 2, size[1]))
    return img


def gradient(size: tuple[int, int]) -> Image.Image:
    """Content that changes everywhere, so a crop taken from the wrong place shows."""
    horizontal = Image.linear_gradient("L").rotate(90).resize(size)
    vertical = Image.linear_gradient("L").resize(size)
    return Image.merge("RGB", (horizontal, vertical, ImageChops.invert(horizontal)))


def with_orientation(img: Image.Image, orientation: int) -> bytes:
    exif = img.getexif()
    exif[0x0112] = orientation
    return encode(img, "JPEG", exif=exif.tobytes(), quality=95)


def png_claiming(width: int, height: int) -> bytes:
    """A valid tiny PNG whose IHDR says width x height: a decompression bomb without the memory."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # CRC covers type and payload
    return bytes(data)


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any pixel data is decoded."""

    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("image data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


# --- size ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_large_input_shrinks_to_max_side_as_rgb_jpeg(fmt: str) -> None:
    data = encode(gradient((1200, 900)), fmt)
    prepared = prepare_image(data, ImageSpec(max_side=300))
    out = decode(prepared)
    assert sniff_image(prepared.data) == "JPEG"
    assert out.format == "JPEG"
    assert out.mode == "RGB"
    assert out.size == (prepared.width, prepared.height) == (300, 225)
    assert (prepared.source_width, prepared.source_height) == (1200, 900)
    assert prepared.source_format == fmt
    assert prepared.source_bytes == len(data)


@pytest.mark.parametrize("max_side", [1024, 200, None])
def test_small_input_is_never_upscaled(max_side: int | None) -> None:
    prepared = prepare_image(encode(gradient((200, 100)), "PNG"), ImageSpec(max_side=max_side))
    assert decode(prepared).size == (200, 100)


def test_jpeg_4000x3000_to_500() -> None:
    data = encode(Image.new("RGB", (4000, 3000), "gray"), "JPEG")
    assert decode(prepare_image(data, ImageSpec(max_side=500))).size == (500, 375)


# --- draft decoding -------------------------------------------------------------------------------


def test_draft_request_picks_smallest_scale_that_fills_output() -> None:
    size = (4000, 3000)
    assert images._draft_request(size, ImageSpec(max_side=500), 1) == (500, 375)  # 1/8
    assert images._draft_request(size, ImageSpec(max_side=640), 1) == (1000, 750)  # 1/4: 1/8 is 500
    assert images._draft_request(size, ImageSpec(max_side=1024), 1) == (2000, 1500)  # 1/2
    assert images._draft_request(size, ImageSpec(max_side=2001), 1) is None  # 1/2 gives 2000 < 2001
    assert images._draft_request(size, ImageSpec(max_side=None), 1) is None
    assert images._draft_request((500, 375), ImageSpec(max_side=640), 1) is None
    # A crop needs more of the source: a quarter of each side is 1000x750, so 1/2 at most.
    assert images._draft_request(size, ImageSpec(max_side=500, crop=(0, 0, 0.25, 0.25)), 1) == (2000, 1500)
    # A quarter-width strip is 1000x3000 as stored: its 3000 fills 500 at 1/4 (750) but not 1/8 (375).
    strip = ImageSpec(max_side=500, crop=(0, 0, 0.25, 1))
    assert images._draft_request(size, strip, 1) == (1000, 750)
    # Orientation 6 stands the picture up (3000x4000 as seen): the strip is 750x4000, fine at 1/8.
    assert images._draft_request(size, strip, 6) == (500, 375)
    # A crop of the lower half as seen is 3000x2000 upright (6), but 4000x1500 unrotated (1).
    spec = ImageSpec(max_side=1600, crop=(0, 0.5, 1, 0.5))
    assert images._draft_request(size, spec, 6) is None  # 3000 / 2 = 1500 < 1600
    assert images._draft_request(size, spec, 1) == (2000, 1500)  # 4000 / 2 = 2000 >= 1600


def test_jpeg_is_decoded_through_draft(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str | None, tuple[int, int] | None]] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int] | None) -> Any:
        calls.append((mode, size))
        return original(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    data = encode(Image.new("RGB", (4000, 3000), "gray"), "JPEG")
    assert decode(prepare_image(data, ImageSpec(max_side=640))).size == (640, 480)
    assert calls == [("RGB", (1000, 750))]


@pytest.mark.parametrize("orientation", [1, 6])
@pytest.mark.parametrize("crop", [None, (0.1, 0.2, 0.33, 0.5), (0.5, 0, 0.5, 1), (0.3, 0.3, 0.01, 0.002)])
@pytest.mark.parametrize(("size", "max_side"), [((1601, 1203), 200), ((1603, 1201), 640), ((999, 1333), 333)])
def test_draft_gives_the_same_picture_as_a_full_decode(
    monkeypatch: pytest.MonkeyPatch,
    orientation: int,
    crop: tuple[float, float, float, float] | None,
    size: tuple[int, int],
    max_side: int,
) -> None:
    data = with_orientation(gradient(size), orientation)
    spec = ImageSpec(max_side=max_side, crop=crop)
    drafted = decode(prepare_image(data, spec))
    monkeypatch.setattr(images, "_draft_request", lambda *args: None)
    full = decode(prepare_image(data, spec))
    assert drafted.size == full.size  # draft never makes the result smaller
    assert mean(ImageChops.difference(drafted, full)) < 4  # and the crop comes from the same place


def photo_like(size: tuple[int, int], seed: int = 3) -> Image.Image:
    """Edges at many scales and sensor-like noise: content where the choice of resampling shows."""
    rng = np.random.default_rng(seed)
    img = gradient(size)
    draw = ImageDraw.Draw(img)
    for _ in range(150):
        x, y, r = int(rng.integers(0, size[0])), int(rng.integers(0, size[1])), int(rng.integers(2, 200))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    pixels = np.asarray(img, dtype=np.float64) + rng.normal(0, 6, (size[1], size[0], 1))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def psnr(img: Image.Image, reference: Image.Image) -> float:
    difference = np.asarray(img, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    return float(10 * np.log10(255**2 / np.mean(difference**2)))


@pytest.mark.parametrize("max_side", [300, 640])
def test_output_is_as_good_as_a_full_decode_and_thumbnail(max_side: int) -> None:
    # The shortcuts (draft, the resampling filter) must not cost picture quality: against a
    # LANCZOS resize of the full decode, the output is within 0.1 dB of what Pillow's own
    # full decode + thumbnail + save at the same JPEG quality gives.
    data = encode(photo_like((1600, 1200)), "JPEG", quality=90)
    full = Image.open(BytesIO(data))
    full.load()
    spec = ImageSpec(max_side=max_side, quality=85)
    ours = decode(prepare_image(data, spec))
    reference = full.resize(ours.size, Image.Resampling.LANCZOS)
    full.thumbnail((max_side, max_side))
    plain = Image.open(BytesIO(encode(full, "JPEG", quality=85)))
    assert plain.size == ours.size
    assert psnr(ours, reference) >= psnr(plain, reference) - 0.1


# Pillow's transposition for each EXIF orientation, and its inverse, which stores the picture so.
_ORIENTED = {
    1: (None, None),
    2: (Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_LEFT_RIGHT),
    3: (Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_180),
    4: (Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.FLIP_TOP_BOTTOM),
    5: (Image.Transpose.TRANSPOSE, Image.Transpose.TRANSPOSE),
    6: (Image.Transpose.ROTATE_270, Image.Transpose.ROTATE_90),
    7: (Image.Transpose.TRANSVERSE, Image.Transpose.TRANSVERSE),
    8: (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270),
}


@pytest.mark.parametrize("orientation", list(_ORIENTED))
def test_every_orientation_with_crop_through_draft(orientation: int) -> None:
    # A 1200x1600 picture as seen, four coloured quadrants; stored turned so that its EXIF
    # orientation turns it back. Each quarter cropped through draft must show its own colour.
    colours = {(0, 0): (220, 30, 30), (1, 0): (30, 200, 30), (0, 1): (30, 30, 220), (1, 1): (240, 240, 240)}
    seen = Image.new("RGB", (1200, 1600))
    for (column, row), colour in colours.items():
        seen.paste(colour, (column * 600, row * 800, column * 600 + 600, row * 800 + 800))
    inverse = _ORIENTED[orientation][1]
    data = with_orientation(seen if inverse is None else seen.transpose(inverse), orientation)
    for (column, row), colour in colours.items():
        spec = ImageSpec(crop=(column / 2, row / 2, 0.5, 0.5), max_side=100)
        assert images._draft_request(Image.open(BytesIO(data)).size, spec, orientation) is not None
        out = decode(prepare_image(data, spec))
        assert out.size == (75, 100)
        # Inside a margin (resampling blurs the crop's edge with its neighbour) the colour is pure.
        inner = ImageStat.Stat(out.crop((10, 10, 65, 90))).mean
        assert all(abs(got - want) < 6 for got, want in zip(inner, colour, strict=True)), (inner, colour)


# --- crop and orientation ---------------------------------------------------------------------------


def test_crop_picks_the_right_region() -> None:
    data = encode(half_black_half_white(), "PNG")
    right = decode(prepare_image(data, ImageSpec(crop=(0.5, 0, 0.5, 1))))
    left = decode(prepare_image(data, ImageSpec(crop=(0, 0, 0.5, 1))))
    assert right.size == left.size == (100, 100)
    assert mean(right) > 240
    assert mean(left) < 15


def test_crop_rounds_to_at_least_one_pixel() -> None:
    data = encode(gradient((100, 100)), "PNG")
    assert decode(prepare_image(data, ImageSpec(crop=(0.999, 0.999, 0.001, 0.001)))).size == (1, 1)


def test_exif_orientation_6_rotates() -> None:
    prepared = prepare_image(with_orientation(Image.new("RGB", (200, 100), "red"), 6), ImageSpec())
    assert (prepared.width, prepared.height) == (100, 200)
    assert (prepared.source_width, prepared.source_height) == (200, 100)  # as stored


def test_crop_applies_to_the_picture_as_seen() -> None:
    # Orientation 6 turns the stored picture 90 degrees clockwise: its black left half ends on top.
    data = with_orientation(half_black_half_white(), 6)
    top = decode(prepare_image(data, ImageSpec(crop=(0, 0, 1, 0.5))))
    bottom = decode(prepare_image(data, ImageSpec(crop=(0, 0.5, 1, 0.5))))
    assert top.size == bottom.size == (100, 100)
    assert mean(top) < 15
    assert mean(bottom) > 240


def test_output_carries_no_exif() -> None:
    img = Image.new("RGB", (64, 48), "blue")
    exif = img.getexif()
    exif[0x010F] = "CameraMaker"  # Make
    exif[0x0112] = 3
    out = decode(prepare_image(encode(img, "JPEG", exif=exif.tobytes()), ImageSpec()))
    assert "exif" not in out.info
    assert len(out.getexif()) == 0


def test_quality_is_applied() -> None:
    data = encode(Image.effect_noise((256, 256), 60).convert("RGB"), "PNG")
    low = prepare_image(data, ImageSpec(quality=30))
    high = prepare_image(data, ImageSpec(quality=95))
    assert len(low.data) < len(high.data)


# --- modes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_transparency_becomes_white(fmt: str) -> None:
    img = Image.new("RGBA", (100, 100), (0, 0, 0, 0))  # fully transparent black
    img.paste((200, 0, 0, 255), (0, 0, 50, 100))  # opaque red left half
    params = {"lossless": True} if fmt == "WEBP" else {}  # lossy WebP would blur the edge colours
    out = decode(prepare_image(encode(img, fmt, **params), ImageSpec()))
    assert out.mode == "RGB"
    r, g, b = rgb_at(out, (25, 50))
    assert r > 180
    assert g < 30
    assert b < 30
    assert min(rgb_at(out, (75, 50))) > 240


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_grayscale_becomes_rgb(fmt: str) -> None:
    out = decode(prepare_image(encode(Image.new("L", (80, 60), 100), fmt), ImageSpec()))
    assert out.mode == "RGB"
    assert all(abs(v - 100) <= 3 for v in rgb_at(out, (40, 30)))


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    data = encode(Image.new("I;16", (40, 40), 32768), "PNG")
    out = decode(prepare_image(data, ImageSpec()))
    assert all(abs(v - 128) <= 3 for v in rgb_at(out, (20, 20)))


def test_palette_image_keeps_its_colours() -> None:
    img = Image.new("P", (60, 60), 1)
    img.putpalette([0, 0, 0, 0, 200, 0] + [0] * (254 * 3))  # index 1 is green
    out = decode(prepare_image(encode(img, "PNG"), ImageSpec(max_side=30)))
    r, g, b = rgb_at(out, (15, 15))
    assert out.size == (30, 30)
    assert g > 180
    assert r < 30
    assert b < 30


def test_palette_transparency_becomes_white() -> None:
    img = Image.new("P", (60, 60), 1)
    img.putpalette([0, 0, 0, 0, 200, 0] + [0] * (254 * 3))
    out = decode(prepare_image(encode(img, "PNG", transparency=1), ImageSpec()))
    assert min(rgb_at(out, (30, 30))) > 240


def test_cmyk_jpeg_becomes_rgb() -> None:
    out = decode(prepare_image(encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG"), ImageSpec()))
    r, g, b = rgb_at(out, (20, 20))
    assert out.mode == "RGB"
    assert r > 200
    assert g < 60
    assert b < 60


def test_webp_input_works() -> None:
    prepared = prepare_image(encode(gradient((300, 200)), "WEBP"), ImageSpec(max_side=150))
    assert prepared.source_format == "WEBP"
    assert decode(prepared).size == (150, 100)


# --- refusals --------------------------------------------------------------------------------------


def test_truncated_jpeg_is_refused() -> None:
    data = encode(Image.effect_noise((400, 300), 50).convert("RGB"), "JPEG", quality=90)
    with pytest.raises(ImageError, match=r"decoded|truncated"):
        prepare_image(data[: len(data) // 2], ImageSpec())


def test_damaged_header_is_refused() -> None:
    data = encode(gradient((40, 40)), "JPEG")
    with pytest.raises(ImageError, match="could not be decoded"):
        prepare_image(data[:20], ImageSpec())


@pytest.mark.parametrize("data", [random.Random(1).randbytes(5000), b"", b"{'not': 'an image'}"])
def test_non_images_are_refused(data: bytes) -> None:
    with pytest.raises(ImageError, match="not a JPEG, PNG or WebP image"):
        prepare_image(data, ImageSpec())
    with pytest.raises(ImageError, match="not a JPEG, PNG or WebP image"):
        image_size(data, 10_000)


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (encode(Image.new("P", (10, 10)), "GIF"), "GIF"),
        (encode(Image.new("RGB", (10, 10)), "BMP"), "BMP"),
        (encode(Image.new("RGB", (10, 10)), "TIFF"), "TIFF"),
        (b"\x00\x00\x00\x18ftypheic" + bytes(40), "HEIC"),
    ],
)
def test_other_formats_are_named_and_refused(data: bytes, name: str) -> None:
    message = f"unsupported image format {name}; send JPEG, PNG or WebP"
    with pytest.raises(ImageError, match=message):
        prepare_image(data, ImageSpec())
    with pytest.raises(ImageError, match=message):
        image_size(data, 10_000)


@pytest.mark.parametrize("pillow_warning", ["error", "ignore"])
@pytest.mark.usefixtures("no_decoding")
def test_100_megapixel_bomb_is_refused_without_decoding(pillow_warning: Any) -> None:
    data = png_claiming(10_000, 10_000)
    assert len(data) < 100
    # 100 MP is also past Pillow's own warning threshold; whether that warning is an error or
    # not, the answer must be an ImageError about megapixels.
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter(pillow_warning, Image.DecompressionBombWarning)
        with pytest.raises(ImageError, match="megapixels"):
            prepare_image(data, ImageSpec())
    assert time.perf_counter() - start < 0.5  # generous: parsing 70 bytes takes microseconds


@pytest.mark.usefixtures("no_decoding")
def test_pixel_budget_is_enforced_from_the_header() -> None:
    message = r"image is 48\.0 megapixels \(8000x6000\), above the limit of 40\.0 megapixels"
    with pytest.raises(ImageError, match=message):
        prepare_image(png_claiming(8000, 6000), ImageSpec())
    with pytest.raises(ImageError, match=r"0\.1 megapixels"):
        prepare_image(encode(gradient((400, 300)), "JPEG"), ImageSpec(max_pixels=100_000))


def test_webp_bomb_is_refused_before_pillow_opens_it(monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytearray(encode(Image.new("RGB", (30, 20)), "WEBP", lossless=True))
    assert data[12:16] == b"VP8L"
    bits = int.from_bytes(data[21:25], "little")
    data[21:25] = ((bits & ~((1 << 28) - 1)) | 16383 | 16383 << 14).to_bytes(4, "little")  # 16384x16384

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Image.open allocates a WebP canvas")

    monkeypatch.setattr(Image, "open", refuse)
    with pytest.raises(ImageError, match=r"268\.4 megapixels \(16384x16384\)"):
        prepare_image(bytes(data), ImageSpec())


# --- ImageSpec -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"crop": (-0.1, 0, 0.5, 0.5)}, "between 0 and 1"),
        ({"crop": (0, 0, 1.5, 1)}, "between 0 and 1"),
        ({"crop": (0, 0, float("nan"), 1)}, "between 0 and 1"),
        ({"crop": (0.6, 0, 0.5, 1)}, r"x \+ width and y \+ height <= 1"),
        ({"crop": (0, 0.6, 1, 0.5)}, r"x \+ width and y \+ height <= 1"),
        ({"crop": (0, 0, 0, 1)}, "non-empty"),
        ({"max_side": 0}, "max_side must be at least 1"),
        ({"quality": 0}, "quality must be between 1 and 100"),
        ({"quality": 101}, "quality must be between 1 and 100"),
        ({"max_pixels": 0}, "max_pixels must be at least 1"),
    ],
)
def test_spec_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ImageSpec(**kwargs)


def test_spec_accepts_edges() -> None:
    ImageSpec(crop=(0.7, 0.0, 0.3, 1.0))  # sums to 1 only up to float rounding
    ImageSpec(crop=(0, 0, 1, 1), max_side=None, quality=100, max_pixels=1)


def test_prepared_image_repr_leaves_out_the_bytes() -> None:
    prepared = prepare_image(encode(gradient((64, 64)), "PNG"), ImageSpec())
    assert "data" not in repr(prepared)
    assert "width=64" in repr(prepared)


# --- sniff_image and image_size ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"), [("JPEG", "JPEG"), ("PNG", "PNG"), ("WEBP", "WEBP"), ("GIF", "GIF"), ("BMP", None)]
)
def test_sniff_image(fmt: str, expected: str | None) -> None:
    img = Image.new("P" if fmt == "GIF" else "RGB", (8, 8))
    assert sniff_image(encode(img, fmt)) == expected


@pytest.mark.parametrize("data", [b"", b"\xff\xd8", b"RIFF\x00\x00\x00\x00WAVE", b"GIF90a", b"hello"])
def test_sniff_image_rejects_near_misses(data: bytes) -> None:
    assert sniff_image(data) is None


@pytest.mark.parametrize(
    ("fmt", "params", "chunk"),
    [
        ("JPEG", {}, None),
        ("PNG", {}, None),
        ("WEBP", {}, b"VP8 "),
        ("WEBP", {"lossless": True}, b"VP8L"),
        ("WEBP", {"exif": b"Exif\0\0MM\0*\0\0\0\x08\0\0"}, b"VP8X"),
    ],
)
@pytest.mark.usefixtures("no_decoding")
def test_image_size_reads_the_header_only(fmt: str, params: dict[str, Any], chunk: bytes | None) -> None:
    data = encode(gradient((123, 45)), fmt, **params)
    if chunk is not None:  # the three WebP header layouts are parsed by bridge.images itself
        assert data[12:16] == chunk
    assert image_size(data, len(data)) == (fmt, 123, 45)


def test_image_size_of_a_truncated_file() -> None:
    data = encode(Image.effect_noise((400, 300), 50).convert("RGB"), "JPEG")
    assert image_size(data[:2000], 10_000) == ("JPEG", 400, 300)


def test_image_size_refuses_too_many_bytes() -> None:
    data = encode(gradient((40, 40)), "PNG")
    with pytest.raises(ImageError, match="bytes, above the limit of 100 bytes"):
        image_size(data, 100)
