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


def door(locked: bool, size: tuple[int, int] = (640, 480)) -> bytes:
    """A drawn front door with its thumb-turn; daylight when locked, dusk when not, so that the
    stand-in (which answers from brightness) says locked/unlocked, and screenshots show a scene."""
    from PIL import ImageDraw

    width, height = size
    light = 1.0 if locked else 0.45
    shade = lambda rgb: tuple(int(c * light) for c in rgb)  # noqa: E731
    picture = Image.new("RGB", size, shade((226, 222, 210)))
    draw = ImageDraw.Draw(picture)
    draw.rectangle((0, int(height * 0.82), width, height), fill=shade((170, 160, 150)))
    left, top, right = int(width * 0.3), int(height * 0.08), int(width * 0.7)
    draw.rectangle(
        (left, top, right, int(height * 0.82)),
        fill=shade((120, 84, 60)),
        outline=shade((70, 50, 36)),
        width=6,
    )
    for y in (0.18, 0.5):
        draw.rectangle(
            (left + 24, int(height * y), right - 24, int(height * (y + 0.24))),
            outline=shade((92, 64, 46)),
            width=4,
        )
    cx, cy = int(width * 0.64), int(height * 0.47)
    draw.ellipse(
        (cx - 22, cy - 22, cx + 22, cy + 22),
        fill=shade((200, 196, 186)),
        outline=shade((90, 90, 90)),
        width=3,
    )
    if locked:
        draw.rectangle((cx - 5, cy - 18, cx + 5, cy + 18), fill=shade((60, 60, 60)))
    else:
        draw.rectangle((cx - 18, cy - 5, cx + 18, cy + 5), fill=shade((60, 60, 60)))
    buffer = BytesIO()
    picture.save(buffer, "JPEG", quality=88)
    return buffer.getvalue()
