"""Time prepare_image against a plain full decode and against the fastest Pillow paths we know.

Run: `python -m bench image_path`. One synthetic 4000x3000 scene, saved at JPEG quality 90 and 75,
goes through every path below to a 640-pixel JPEG at the quality a rule with `max_side: 640`
asks for. Each round runs every (source, path) pair in a new random order, so load from other
processes on the machine hits all of them alike and no path always follows the same neighbour
(after a full decode frees its 48 MB, the next path pays for fresh pages); figures are process
CPU time (steadier than wall time on a shared machine), median and min over the rounds, with
wall time beside. Ratios are the median over rounds of that round's ratio: the two paths of a
pair ran within a second or two of each other, so a change of load between rounds cancels out.

Same output quality is measured, not assumed: each output is decoded and compared (PSNR) with a
reference made by a LANCZOS resize of the full decode. A candidate counts as "as good" when its
PSNR is at most TOLERANCE_DB below the plain path's; the decode-only rows are floors, not paths.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable
from io import BytesIO
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from bridge.config.handler_rules import YesNoRule
from bridge.config.settings import LimitsSettings
from bridge.pipeline.images import ImageSpec, prepare_image
from bridge.pipeline.runner import image_spec

SIZE = (4000, 3000)
SOURCE_QUALITIES = (90, 75)
TOLERANCE_DB = 0.1  # decoding at 1/8 and upscaling loses ~0.4 dB here, a bilinear resize ~0.25
OURS, PLAIN = "prepare_image", "plain: full decode + thumbnail"
_Resample = Image.Resampling
Path = Callable[[bytes], "bytes | None"]  # None: a decode-only floor, with no output to judge
Timings = dict[tuple[int, str], tuple[list[float], list[float]]]  # (source quality, path): cpu, wall


def snapshot_scene(size: tuple[int, int] = SIZE, seed: int = 7) -> Image.Image:
    """A picture that compresses like a camera snapshot rather than like a flat test card.

    Overlapping shapes and lines give edges at every scale, a blurred noise field gives surface
    texture, and mild per-pixel noise stands in for sensor noise: saved at quality 90 it is about
    3 MB, as a 12-megapixel snapshot is. Seeded, so every run times the same bytes.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    base = np.stack(np.broadcast_arrays(30 + 200 * x, 40 + 180 * y, 230 - 150 * x + 0 * y), axis=-1)
    picture = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for _ in range(600):
        cx, cy, r = int(rng.integers(0, width)), int(rng.integers(0, height)), int(rng.integers(8, 400))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        else:
            draw.rectangle((cx - r, cy - r // 2, cx + r, cy + r // 2), fill=colour)
    for _ in range(80):
        ends = [(int(rng.integers(0, width)), int(rng.integers(0, height))) for _ in range(2)]
        draw.line(ends, fill=tuple(int(c) for c in rng.integers(0, 256, 3)), width=int(rng.integers(1, 6)))
    pixels = np.asarray(picture.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
    texture = rng.normal(128, 40, (height // 24, width // 24)).clip(0, 255).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(texture).resize(size, _Resample.BICUBIC), dtype=np.float32)
    pixels += (0.4 * (smooth - 128) + rng.normal(0, 4, (height, width)).astype(np.float32))[..., None]
    pixels += rng.normal(0, 3, pixels.shape).astype(np.float32)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def rule_image_spec(max_side: int = 640) -> ImageSpec:
    """The ImageSpec the daemon builds for a rule with `image: {max_side: 640}` and default limits."""
    rule = {"name": "bench_image", "handler": "yes_no", "model": "m", "prompt": "?"}
    return image_spec(YesNoRule.model_validate({**rule, "image": {"max_side": max_side}}), LimitsSettings())


def _encode(img: Image.Image, quality: int) -> bytes:
    out = BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _target(size: tuple[int, int], side: int) -> tuple[int, int]:
    ratio = side / max(size)
    return round(size[0] * ratio), round(size[1] * ratio)


def candidate_paths(spec: ImageSpec) -> dict[str, Path]:
    """Every path timed: ours, the plain one, Pillow alternatives, and decode-only floors."""
    side, quality = spec.max_side or max(SIZE), spec.quality

    def open_drafted(data: bytes, scale: int, mode: str = "RGB") -> Image.Image:
        img = Image.open(BytesIO(data))
        img.draft(mode, (img.width // scale, img.height // scale))
        return img

    def plain(data: bytes) -> bytes:
        img = Image.open(BytesIO(data))
        img.load()  # a full decode: thumbnail's own draft has nothing left to do
        img.thumbnail((side, side))
        return _encode(img, quality)

    def drafted_resize(scale: int, resample: _Resample, mode: str = "RGB", gap: float | None = None) -> Path:
        def run(data: bytes) -> bytes:
            img = open_drafted(data, scale, mode)
            return _encode(img.resize(_target(img.size, side), resample, reducing_gap=gap), quality)

        return run

    def thumbnail_with_draft(data: bytes) -> bytes:
        img = Image.open(BytesIO(data))
        img.thumbnail((side, side))  # drafts to 2x the target itself (reducing_gap=2.0), BICUBIC
        return _encode(img, quality)

    def half_then_reduce(data: bytes) -> bytes:
        img = open_drafted(data, 2).reduce(2)
        return _encode(img.resize(_target(img.size, side), _Resample.LANCZOS), quality)

    def decode_only(scale: int) -> Path:
        def run(data: bytes) -> None:
            open_drafted(data, scale).load()

        return run

    return {
        OURS: lambda data: prepare_image(data, spec).data,
        PLAIN: plain,
        "draft 1/4 + resize LANCZOS": drafted_resize(4, _Resample.LANCZOS),
        "draft 1/4 + resize BICUBIC": drafted_resize(4, _Resample.BICUBIC),
        "draft 1/4 + resize HAMMING": drafted_resize(4, _Resample.HAMMING),
        "draft 1/4 + resize BILINEAR": drafted_resize(4, _Resample.BILINEAR),
        "draft 1/4 + resize BOX": drafted_resize(4, _Resample.BOX),
        "draft 1/4 YCbCr kept to save + BICUBIC": drafted_resize(4, _Resample.BICUBIC, mode="YCbCr"),
        "draft 1/2 + resize BICUBIC gap 1.5": drafted_resize(2, _Resample.BICUBIC, gap=1.5),
        "draft 1/2 + reduce(2) + LANCZOS": half_then_reduce,
        "thumbnail (its own draft)": thumbnail_with_draft,
        "draft 1/8 + upscale BICUBIC": drafted_resize(8, _Resample.BICUBIC),
        "floor: decode only at 1/4": decode_only(4),
        "floor: decode only at 1/8": decode_only(8),
        "floor: full decode only": decode_only(1),
    }


def psnr(data: bytes, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio, dB, of a decoded JPEG against the reference pixels."""
    with Image.open(BytesIO(data)) as img:
        pixels = np.asarray(img.convert("RGB"), dtype=np.float64)
    if pixels.shape != reference.shape:
        return float("-inf")
    mse = float(np.mean((pixels - reference) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(255**2 / mse))


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _reference(data: bytes, side: int) -> np.ndarray:
    with Image.open(BytesIO(data)) as img:
        img.load()
        return np.asarray(img.resize(_target(img.size, side), _Resample.LANCZOS), dtype=np.float64)


def _time_rounds(sources: dict[int, bytes], paths: dict[str, Path], repeat: int) -> Timings:
    """CPU and wall milliseconds of every (source, path) pair, in a new seeded order each round."""
    pairs = [(quality, name) for quality in sources for name in paths]
    cpu: dict[tuple[int, str], list[float]] = {pair: [] for pair in pairs}
    wall: dict[tuple[int, str], list[float]] = {pair: [] for pair in pairs}
    for quality, name in pairs:  # warm-up: imports, plugin registration, first allocations
        paths[name](sources[quality])
    order = random.Random(15)
    for _ in range(repeat):
        for quality, name in order.sample(pairs, len(pairs)):
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            paths[name](sources[quality])
            cpu[(quality, name)].append((time.process_time() - cpu_start) * 1000)
            wall[(quality, name)].append((time.perf_counter() - wall_start) * 1000)
    return {pair: (cpu[pair], wall[pair]) for pair in pairs}


def _report(quality: int, data: bytes, paths: dict[str, Path], timings: Timings, side: int) -> dict[str, Any]:
    """Print one source quality's table and return its figures."""
    reference = _reference(data, side)
    rows: dict[str, dict[str, Any]] = {}
    for name, path in paths.items():
        cpu, wall = timings[(quality, name)]
        out = path(data)
        rows[name] = {
            "cpu": statistics.median(cpu),
            "cpu_min": min(cpu),
            "wall": statistics.median(wall),
            "psnr": None if out is None else psnr(out, reference),
            "bytes": None if out is None else len(out),
        }
    floor_db = rows[PLAIN]["psnr"] - TOLERANCE_DB
    good = [n for n, r in rows.items() if n != OURS and r["psnr"] is not None and r["psnr"] >= floor_db]
    fastest = min(good, key=lambda n: rows[n]["cpu"])
    any_output = [n for n, r in rows.items() if n not in (OURS, PLAIN) and r["psnr"] is not None]
    fastest_any = min(any_output, key=lambda n: rows[n]["cpu"])  # whatever its quality
    print(f"\nsource JPEG quality {quality}: {SIZE[0]}x{SIZE[1]}, {len(data):,} bytes -> {side} px")
    print(f"{'path':40} {'cpu ms':>7} {'(min)':>7} {'wall ms':>8} {'PSNR dB':>8} {'bytes':>7}  as good")
    for name, r in rows.items():
        judged = (
            "" if r["psnr"] is None else f"{r['psnr']:8.2f} {r['bytes']:7d}  {_yes(r['psnr'] >= floor_db)}"
        )
        print(f"{name:40} {r['cpu']:7.1f} {r['cpu_min']:7.1f} {r['wall']:8.1f} {judged}")

    def ratio(slower: str, faster: str) -> float:
        cpu_slower, cpu_faster = timings[(quality, slower)][0], timings[(quality, faster)][0]
        return statistics.median(a / b for a, b in zip(cpu_slower, cpu_faster, strict=True))

    figures = {
        "source_bytes": len(data),
        "ours_ms": round(rows[OURS]["cpu"], 1),
        "plain_ms": round(rows[PLAIN]["cpu"], 1),
        "fastest_as_good": fastest,
        "fastest_ms": round(rows[fastest]["cpu"], 1),
        "ours_over_fastest": round(ratio(OURS, fastest), 3),
        "plain_over_ours": round(ratio(PLAIN, OURS), 2),
        "plain_over_fastest": round(ratio(PLAIN, fastest), 2),
        "fastest_any_quality": fastest_any,
        "plain_over_fastest_any_quality": round(ratio(PLAIN, fastest_any), 2),
        "plain_over_decode_1_4": round(ratio(PLAIN, "floor: decode only at 1/4"), 2),
        "plain_over_decode_1_8": round(ratio(PLAIN, "floor: decode only at 1/8"), 2),
        "psnr_ours": round(rows[OURS]["psnr"], 2),
        "psnr_plain": round(rows[PLAIN]["psnr"], 2),
    }
    print(
        f"fastest as good (PSNR >= plain - {TOLERANCE_DB} dB): {fastest}; "
        f"ours/fastest {figures['ours_over_fastest']} (aim <= 1.1); plain/ours {figures['plain_over_ours']} "
        f"(plain/fastest {figures['plain_over_fastest']}, plain/fastest of any quality "
        f"{figures['plain_over_fastest_any_quality']}); "
        f"ceilings plain/decode-only: 1/4 {figures['plain_over_decode_1_4']}, "
        f"1/8 {figures['plain_over_decode_1_8']}"
    )
    return figures


def bench_image_path(repeat: int = 31) -> dict[str, Any]:
    """Time every path on the scene saved at each source quality; print tables, return the ratios."""
    spec = rule_image_spec()
    side = spec.max_side or max(SIZE)
    scene = snapshot_scene()
    sources = {quality: _encode(scene, quality) for quality in SOURCE_QUALITIES}
    paths = candidate_paths(spec)
    load_before = os.getloadavg()
    timings = _time_rounds(sources, paths, repeat)
    load_after = os.getloadavg()
    print(
        f"# image_path: {repeat} interleaved rounds, output {side} px at JPEG quality {spec.quality} "
        f"(the rule default); load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    result: dict[str, Any] = {"repeat": repeat, "output_quality": spec.quality}
    result["load1"] = [round(load_before[0], 2), round(load_after[0], 2)]
    for quality, data in sources.items():
        result[f"q{quality}"] = _report(quality, data, paths, timings, side)
    return result


if __name__ == "__main__":
    print(bench_image_path())
