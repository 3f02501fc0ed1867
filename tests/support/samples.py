"""Inputs made on the spot with pillow: images whose brightness the stand-in answers from."""

from io import BytesIO

from PIL import Image


def jpeg(brightness: int, size: tuple[int, int] = (320, 240), quality: int = 90) -> bytes:
    buffer = BytesIO()
    Image.new("L", size, brightness).convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def png(brightness: int, size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = BytesIO()
    Image.new("RGB", size, (brightness,) * 3).save(buffer, "PNG")
    return buffer.getvalue()
