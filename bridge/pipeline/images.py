"""Shrink camera snapshots before they go to a vision model, decoding no more pixels than needed.

A model looks at a few hundred pixels per side, so decoding a 12-megapixel JPEG in full is waste:
``prepare_image`` uses JPEG DCT scaling (``draft``), honours EXIF orientation, crops, downscales and
re-encodes plain RGB JPEG. Non-images and decompression bombs raise ``ImageError``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from io import BytesIO

from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from bridge.errors import InputError

__all__ = [
    "ImageError",
    "ImageSpec",
    "PreparedImage",
    "check_image_header",
    "image_size",
    "prepare_image",
    "sniff_image",
]

_ACCEPTED = ("JPEG", "PNG", "WEBP")
# EXIF orientations 5-8 turn the picture by 90 degrees, swapping the width and height people see.
_SWAPS_AXES = frozenset({5, 6, 7, 8})
_Crop = tuple[float, float, float, float]
_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF87a": "GIF", b"GIF89a": "GIF"}
# Formats we refuse, recognised only so the error can name them ("not an image" would puzzle
# someone sending a phone's HEIC photo): magic bytes at offset 0, ISO-BMFF brands at offset 4.
_OTHER_MAGIC = {b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}
_OTHER_BRANDS = {b"ftypheic": "HEIC", b"ftypheix": "HEIC", b"ftypmif1": "HEIF", b"ftypavif": "AVIF"}
# Pillow's errors for broken or hostile data; Warning too, as warnings may be configured as errors.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)
_PILLOW_ERRORS = (*_DECODE_ERRORS, Image.DecompressionBombError, Warning)
# Peak memory per source pixel, in bytes, of preparing a PNG or WebP (decoded in full: no draft),
# worst mode measured with `python -m bench.image_rss` (PNG: 16-bit grey and RGBA about 9.6 and
# 9.0; WebP: RGB 15.4 and RGBA 17.3), rounded up. A JPEG is shrunk while it is decoded.
_DECODE_COST = {"PNG": 10, "WEBP": 18}


class ImageError(InputError, ValueError):
    """An input that is not a usable image; the message says why, for a person."""


@dataclass(frozen=True)
class ImageSpec:
    """How to prepare an image for the model."""

    crop: _Crop | None = None  # x, y, width, height as fractions of the picture as seen (EXIF-rotated)
    max_side: int | None = 1024  # downscale so the longer side is at most this; None keeps the size
    quality: int = 85  # JPEG quality of the re-encoded image
    max_pixels: int = 40_000_000  # refuse bigger images (decompression bombs) before decoding
    max_decode_bytes: int = 100_000_000  # refuse a PNG or WebP whose full decode would cost more

    def __post_init__(self) -> None:
        """Reject nonsensical settings where the mistake is made, not deep inside a job."""
        if self.crop is not None:
            x, y, width, height = self.crop
            if not all(0.0 <= value <= 1.0 for value in self.crop):  # written so that NaN fails too
                raise ValueError(f"crop values must be fractions between 0 and 1, not {self.crop}")
            # The tolerance lets fractions such as 0.7 + 0.3 reach "1" despite float rounding.
            if width == 0 or height == 0 or x + width > 1 + 1e-9 or y + height > 1 + 1e-9:
                raise ValueError(f"crop {self.crop} must be non-empty, with x + width and y + height <= 1")
        if self.max_side is not None and self.max_side < 1:
            raise ValueError(f"max_side must be at least 1 (or None), not {self.max_side}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be between 1 and 100, not {self.quality}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be at least 1, not {self.max_pixels}")
        if self.max_decode_bytes < 1:
            raise ValueError(f"max_decode_bytes must be at least 1, not {self.max_decode_bytes}")


@dataclass(frozen=True)
class PreparedImage:
    """A JPEG ready for the model; source sizes are as stored (before EXIF orientation)."""

    data: bytes = field(repr=False)  # kept out of repr: log lines must not carry megabytes
    width: int
    height: int
    source_width: int
    source_height: int
    source_format: str
    source_bytes: int


def sniff_image(data: bytes) -> str | None:
    """Name the image format from magic bytes alone: "JPEG", "PNG", "WEBP", "GIF" or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _MAGIC.items() if data.startswith(magic)), None)


def image_size(data: bytes, max_bytes: int) -> tuple[str, int, int]:
    """(format, width, height) of a JPEG, PNG or WebP read from its header; ImageError otherwise."""
    if len(data) > max_bytes:
        raise ImageError(f"image is {len(data):,} bytes, above the limit of {max_bytes:,} bytes")
    if (webp := _webp_size(data)) is not None:
        return "WEBP", *webp  # Pillow's WebP opener allocates the whole canvas; the header suffices
    img, source_format = _open(data)
    with img:
        return source_format, img.width, img.height


def check_image_header(data: bytes, *, max_bytes: int, max_pixels: int) -> None:
    """Refuse, from the header alone, an image that is damaged, of another format or too large."""
    _, width, height = image_size(data, max_bytes)
    _check_pixels((width, height), max_pixels)


def prepare_image(data: bytes, spec: ImageSpec) -> PreparedImage:
    """Decode, orient, crop, downscale and re-encode ``data`` as an RGB JPEG without metadata."""
    if (webp := _webp_size(data)) is not None:
        _check_pixels(webp, spec.max_pixels)  # before Image.open, which allocates a WebP's canvas
        _check_decode_cost("WEBP", webp, spec.max_decode_bytes)
    img, source_format = _open(data)
    with img:
        source_size = img.size
        _check_pixels(source_size, spec.max_pixels)
        _check_decode_cost(source_format, source_size, spec.max_decode_bytes)
        try:
            # Read before load(): draft must know whether the picture lies on its side.
            orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
            if source_format == "JPEG" and (request := _draft_request(source_size, spec, orientation)):
                img.draft("RGB", request)
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
        except _PILLOW_ERRORS as exc:
            raise _as_image_error(exc) from exc
        # Crop and output size follow the full-size picture as seen, however much draft decoded.
        shown = source_size[::-1] if orientation in _SWAPS_AXES else source_size
        image: Image.Image = img
        try:
            image = _replace(image, _to_working_mode(image))
            image = _replace(image, _crop_and_scale(image, shown, spec))
            image = _replace(image, _flatten_to_rgb(image))
            out = BytesIO()
            image.save(out, "JPEG", quality=spec.quality)  # no exif=/icc_profile=: no metadata out
            return PreparedImage(out.getvalue(), *image.size, *source_size, source_format, len(data))
        finally:
            image.close()


def _draft_request(size: tuple[int, int], spec: ImageSpec, orientation: int) -> tuple[int, int] | None:
    """Size for JPEG ``draft``: the strongest DCT reduction whose crop still fills the output, or None."""
    if spec.max_side is None:
        return None
    width, height = size
    shown = (height, width) if orientation in _SWAPS_AXES else size
    needed = min(spec.max_side, max(_crop_box(shown, spec.crop)[2:]))
    for scale in (8, 4, 2):
        # Pillow picks the largest scale fitting the request, so this request gets exactly `scale`.
        if width >= scale and height >= scale:
            scaled = (-(-shown[0] // scale), -(-shown[1] // scale))  # libjpeg rounds up too
            if max(_crop_box(scaled, spec.crop)[2:]) >= needed:
                return width // scale, height // scale
    return None


def _crop_box(size: tuple[int, int], crop: _Crop | None) -> tuple[int, int, int, int]:
    """Turn crop fractions into whole pixels (left, top, width, height), at least 1x1."""
    width, height = size
    if crop is None:
        return 0, 0, width, height
    x, y, w, h = crop
    left, top = min(round(x * width), width - 1), min(round(y * height), height - 1)
    right = min(max(round((x + w) * width), left + 1), width)
    return left, top, right - left, min(max(round((y + h) * height), top + 1), height) - top


def _crop_and_scale(image: Image.Image, shown: tuple[int, int], spec: ImageSpec) -> Image.Image:
    """Crop and downscale in one resampling pass; a plain crop when no scaling is needed."""
    left, top, width, height = _crop_box(shown, spec.crop)
    target = (width, height)
    if spec.max_side is not None and max(width, height) > spec.max_side:  # never upscale
        ratio = spec.max_side / max(width, height)
        target = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    if image.size == shown and target == (width, height):
        return image if target == shown else image.crop((left, top, left + width, top + height))
    # Draft decodes at 1/2, 1/4 or 1/8 with sizes rounded up, so map the box per axis; resize()
    # takes a float box, and reducing_gap=3.0 first shrinks by whole factors (fast, same look).
    # BICUBIC, not LANCZOS: after draft the factor left is under 2, where the two differ by about
    # 0.03 dB against a LANCZOS resize of the full decode, and BICUBIC's shorter kernel costs
    # about 30 % less; the resize was a quarter of the time (`python -m bench image_path`).
    sx, sy = image.width / shown[0], image.height / shown[1]
    box = (left * sx, top * sy, (left + width) * sx, (top + height) * sy)
    return image.resize(target, Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)


def _to_working_mode(image: Image.Image) -> Image.Image:
    """Convert to a mode resampling handles properly: RGB, L, or RGBA when there is transparency."""
    if "transparency" in image.info or image.mode in ("LA", "PA", "La", "RGBa"):
        return image.convert("RGBA")  # resize() premultiplies RGBA, so edges do not darken
    if image.mode in ("RGB", "L", "RGBA"):
        return image
    if image.mode.startswith("I;16"):
        # Pillow clips 16-bit grey to 255 rather than scaling it: nearly all pixels would be white.
        return image.convert("I").point(lambda value: value / 256).convert("L")
    return image.convert("RGB")  # palette, CMYK, YCbCr, bilevel, ...


def _flatten_to_rgb(image: Image.Image) -> Image.Image:
    """Return an RGB image; transparent areas become white, as a viewer would show them."""
    if image.mode == "RGB":
        return image
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image)
        return background
    return image.convert("RGB")


def _replace(old: Image.Image, new: Image.Image) -> Image.Image:
    """Return ``new`` and free ``old``'s pixels now rather than whenever the GC gets to it."""
    if new is not old:
        old.close()
    return new


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    """Refuse images over the pixel budget; called before anything is decoded."""
    width, height = size
    if width * height > max_pixels:
        size_text = f"{width * height / 1e6:.1f} megapixels ({width}x{height})"
        raise ImageError(f"image is {size_text}, above the limit of {max_pixels / 1e6:.1f} megapixels")


def _check_decode_cost(source_format: str, size: tuple[int, int], max_bytes: int) -> None:
    """Refuse a PNG or WebP whose full decode would take more memory than allowed."""
    cost = _DECODE_COST.get(source_format, 0) * size[0] * size[1]
    if cost > max_bytes:
        pixels = size[0] * size[1] / 1e6
        raise ImageError(
            f"image is a {source_format} of {pixels:.1f} megapixels ({size[0]}x{size[1]}), which takes "
            f"about {cost / 1e6:.0f} MB to decode, above limits.max_decode_memory ({max_bytes / 1e6:.0f} MB);"
            " send a JPEG, or a smaller picture"
        )


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a WebP header (VP8X, VP8L or VP8 chunk), or None."""
    if len(data) < 30 or sniff_image(data) != "WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended format: 24-bit canvas width-1 and height-1
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and data[20] == 0x2F:  # lossless: two 14-bit fields, width-1 and height-1
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy: 14-bit sizes after start code
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None


def _open(data: bytes) -> tuple[ImageFile.ImageFile, str]:
    """Image.open restricted to the accepted formats, and the format; errors translated for people."""
    try:
        img = Image.open(BytesIO(data), formats=_ACCEPTED)
        # MPO is the multi-picture JPEG some cameras write; its first picture is a plain JPEG.
        return img, "JPEG" if img.format == "MPO" else str(img.format)
    except UnidentifiedImageError:
        pass  # Pillow's "cannot identify image file <BytesIO at 0x...>" helps nobody; see below
    except _PILLOW_ERRORS as exc:
        raise _as_image_error(exc) from exc
    name = sniff_image(data) or _OTHER_BRANDS.get(data[4:12])
    name = name or next((found for magic, found in _OTHER_MAGIC.items() if data.startswith(magic)), None)
    if name is None:
        raise ImageError("payload is not a JPEG, PNG or WebP image")
    if name in _ACCEPTED:
        raise ImageError(f"image could not be decoded: its {name} header is incomplete or damaged")
    raise ImageError(f"unsupported image format {name}; send JPEG, PNG or WebP")


def _as_image_error(exc: BaseException) -> ImageError:
    """Translate a Pillow exception (or a warning raised as an error) into an ImageError."""
    if isinstance(exc, Image.DecompressionBombError | Image.DecompressionBombWarning):
        # Pillow's limit fires inside Image.open, before ours; it is process-wide, so never raised.
        limit = (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        return ImageError(f"image is above the decoder's safety limit of {limit:.1f} megapixels")
    return ImageError(f"image could not be decoded: {exc}")
