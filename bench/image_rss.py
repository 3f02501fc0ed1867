"""Peak memory of preparing one image, per format and size: `python -m bench.image_rss`
(`--unlimited`: without the pixel and decode-memory limits, to see what they refuse).

Each case runs in a fresh interpreter, which reads the image, records its resident memory
once everything is imported (the idle level), prepares the image as a rule with `max_side: 1024` would, and
prints how far the peak (VmHWM) rose above that level. The image is made beforehand and passed as a file.
"""

import json
import subprocess
import sys
import tempfile
from io import BytesIO
from pathlib import Path

from PIL import Image

_CHILD = """
import sys, time
from pathlib import Path
from bridge.pipeline.images import ImageSpec, prepare_image
def status(key):  # KiB; VmHWM is the peak of this process image (ru_maxrss survives exec)
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key))
    return int(line.split()[1])
data = Path(sys.argv[1]).read_bytes()
before = status("VmRSS:")
started = time.perf_counter()
try:
    spec = ImageSpec(max_side=1024)  # the defaults: 40 megapixels, limits.max_decode_memory 100 MB
    if sys.argv[2] == "unlimited":
        spec = ImageSpec(max_side=1024, max_pixels=10**9, max_decode_bytes=10**12)
    prepare_image(data, spec)
    outcome = "ok"
except Exception as exc:
    outcome = type(exc).__name__
took = time.perf_counter() - started
after = status("VmHWM:")
print(f"{(after - before) / 1024:.0f} {took * 1000:.0f} {outcome}")
"""

CASES = [
    ("JPEG", "RGB", 6300),
    ("PNG", "RGB", 6300),
    ("PNG", "RGBA", 6300),
    ("PNG", "I;16", 6300),
    ("WEBP", "RGB", 6300),
    ("PNG", "RGB", 4000),
    ("PNG", "RGBA", 4000),
    ("PNG", "I;16", 4000),
    ("PNG", "RGBA", 3500),
    ("WEBP", "RGBA", 3500),
    # just under the default limits.max_decode_memory (100 MB), the costliest modes
    ("PNG", "I;16", 3160),
    ("PNG", "RGBA", 3160),
    ("WEBP", "RGB", 2350),
    ("WEBP", "RGBA", 2350),
]


def _image(kind: str, mode: str, side: int) -> bytes:
    """A picture with content (gradients), so that decoding really writes every pixel."""
    ramp = Image.linear_gradient("L").resize((side, side))
    image = Image.merge("RGB", (ramp, ramp.rotate(90), ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    if mode == "RGBA":
        image.putalpha(ramp.rotate(180))
    elif mode == "I;16":
        image = ramp.convert("I").point(lambda value: value * 256).convert("I;16")
    out = BytesIO()
    image.save(out, kind, **({"quality": 85} if kind == "JPEG" else {}))
    return out.getvalue()


def main() -> None:
    limits = "unlimited" if "--unlimited" in sys.argv else "default"
    with tempfile.TemporaryDirectory() as folder:
        for kind, mode, side in CASES:
            path = Path(folder) / f"{kind}-{side}.img"
            path.write_bytes(_image(kind, mode, side))
            done = subprocess.run(
                [sys.executable, "-c", _CHILD, str(path), limits], capture_output=True, text=True, check=True
            )
            rise, ms, outcome = done.stdout.split()
            print(
                json.dumps(
                    {
                        "limits": limits,
                        "format": kind,
                        "mode": mode,
                        "size": f"{side}x{side}",
                        "megapixels": round(side * side / 1e6, 1),
                        "bytes": path.stat().st_size,
                        "peak_rss_rise_mb": int(rise),
                        "ms": int(ms),
                        "outcome": outcome,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
