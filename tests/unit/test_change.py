"""The pure parts of scheduled checks: change decisions, confirmed states, schedule arithmetic, queue."""

import asyncio
import io
import itertools
from datetime import UTC, datetime, timedelta

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageDraw
from pydantic import ValidationError

from bridge.cameras.change import Judged, average_hash, blurred_grey, decide, distance, region_hash
from bridge.cameras.confirm import Tracker, observe
from bridge.cameras.extension import rule_kind, wants_schedules
from bridge.cameras.schedules import clock_jumped, missed_tick, next_start, within_hours
from bridge.config.cameras import ChangeOptions, ScheduleOptions, SnapshotOptions
from bridge.config.handler_rules import YesNoRule
from bridge.pipeline.images import ImageSpec, prepare_image
from bridge.pipeline.queue import JobQueue, JobTraits
from tests.support.doortrace import LOCK_CROP, frames

OPTS = ChangeOptions(max_distance=4, max_age=3600)
H0 = "0" * 16
H3 = "0000000000000007"  # 3 bits away from H0
H9 = "00000000000001ff"  # 9 bits away


@pytest.mark.parametrize(
    ("current", "last", "now", "kw", "run", "reason"),
    [
        (H0, None, 100.0, {}, True, "first"),
        (H0, Judged(H0, 90.0), 100.0, {}, False, "unchanged"),
        (H3, Judged(H0, 90.0), 100.0, {}, False, "unchanged"),
        (H9, Judged(H0, 90.0), 100.0, {}, True, "changed"),
        (H0, Judged(H0, 0.0), 3600.0, {}, True, "max_age"),
        (H0, Judged(H0, 5000.0), 100.0, {}, True, "max_age"),  # the clock went back
        (H0, Judged(H0, 90.0), 100.0, {"confirming": True}, True, "confirm"),
        (H0, Judged(H0, 90.0), 100.0, {"forced": True}, True, "forced"),
    ],
)
def test_decide(
    current: str, last: Judged | None, now: float, kw: dict[str, bool], run: bool, reason: str
) -> None:
    decision = decide(current, last, now, OPTS, **kw)
    assert (decision.run, decision.reason) == (run, reason)


@pytest.mark.parametrize(("blob", "stale"), [("same", True), ("other", False), (None, False)])
def test_max_age_reports_a_camera_that_sends_the_same_bytes(blob: str | None, stale: bool) -> None:
    decision = decide(H0, Judged(H0, 0.0, blob="same"), 4000.0, OPTS, blob=blob)
    assert decision.reason == "max_age"
    assert decision.stale is stale


def test_hash_ignores_noise_and_light_but_sees_the_thumb_turn() -> None:
    spec = ImageSpec(crop=LOCK_CROP, max_side=256, quality=85, max_pixels=10**8)
    trace = list(frames(700))
    hashes = [
        region_hash(prepare_image(f.jpeg, spec).data) for f in [*trace[:300:25], trace[309], trace[310]]
    ]
    steady = [distance(a, b) for a, b in itertools.pairwise(hashes[:-2])]
    assert max(steady) <= 3
    assert distance(hashes[-2], hashes[-1]) > 8  # frame 310 turns the thumb-turn


def test_hash_has_the_same_bits_as_imagehash_on_the_door_trace() -> None:
    # The hash is ours (Pillow and numpy); imagehash, a test dependency only, is the reference.
    # The first six hours of the trace: night and dawn light, two turns of the thumb-turn.
    spec = ImageSpec(crop=LOCK_CROP, max_side=256, quality=85, max_pixels=10**8)
    checked = 0
    for frame in frames(720):
        for image in (blurred_grey(prepare_image(frame.jpeg, spec).data), Image.open(io.BytesIO(frame.jpeg))):
            assert average_hash(image) == str(imagehash.average_hash(image)), frame.index
            checked += 1
    assert checked == 2 * 720


@pytest.mark.parametrize("level", [0, 255])
def test_hash_of_a_flat_image_matches_imagehash(level: int) -> None:
    flat = Image.fromarray(np.full((32, 48), level, dtype=np.uint8), "L")
    assert average_hash(flat) == str(imagehash.average_hash(flat)) == "0" * 16


def test_hash_of_a_cropped_region_ignores_changes_elsewhere() -> None:
    def picture(*spots: tuple[int, int]) -> bytes:
        image = Image.new("L", (200, 100), 120)
        for x, y in spots:
            ImageDraw.Draw(image).rectangle([x, y, x + 20, y + 20], fill=250)
        out = io.BytesIO()
        image.save(out, "JPEG")
        return out.getvalue()

    spec = ImageSpec(crop=(0.0, 0.0, 0.5, 1.0), max_side=256, quality=85, max_pixels=10**8)
    base = region_hash(prepare_image(picture((20, 20), (150, 60)), spec).data)
    elsewhere = region_hash(prepare_image(picture((20, 20), (160, 10)), spec).data)
    inside = region_hash(prepare_image(picture((60, 60), (150, 60)), spec).data)
    assert distance(base, base) == 0
    assert distance(base, elsewhere) <= 2
    assert distance(base, inside) > 4


@pytest.mark.parametrize(
    ("answers", "hysteresis", "recheck_below", "steps", "confirmed"),
    [
        ([("locked", 0.9)], 1, 0.0, ["changed"], "locked"),
        ([("locked", 0.9), ("locked", 0.9)], 1, 0.0, ["changed", "same"], "locked"),
        ([("locked", 0.9), ("locked", 0.9)], 2, 0.0, ["pending", "changed"], "locked"),
        # A single odd answer between agreeing ones flips nothing.
        (
            [("a", 0.9), ("a", 0.9), ("b", 0.9), ("a", 0.9), ("b", 0.9), ("b", 0.9)],
            2,
            0.0,
            ["pending", "changed", "pending", "same", "pending", "changed"],
            "b",
        ),
        # Doubtful answers are looked at once more, then they count.
        ([("a", 0.3), ("a", 0.3)], 1, 0.6, ["recheck", "changed"], "a"),
        ([("a", 0.3), ("a", 0.9)], 1, 0.6, ["recheck", "changed"], "a"),
        ([("unknown", 0.9), ("a", 0.9)], 1, 0.0, ["recheck", "changed"], "a"),
        ([(None, None), (None, None)], 1, 0.0, ["recheck", "same"], None),
        ([("a", None)], 1, 0.6, ["changed"], "a"),
    ],
)
def test_observe(
    answers: list[tuple[str | None, float | None]],
    hysteresis: int,
    recheck_below: float,
    steps: list[str],
    confirmed: str | None,
) -> None:
    tracker = Tracker()
    got = [
        observe(tracker, v, c, hysteresis=hysteresis, recheck_below=recheck_below).kind for v, c in answers
    ]
    assert got == steps
    assert tracker.confirmed == confirmed


def test_changed_step_carries_old_and_new_and_tracker_round_trips() -> None:
    tracker = Tracker(confirmed="locked")
    step = observe(tracker, "unlocked", 0.9)
    assert (step.kind, step.old, step.new) == ("changed", "locked", "unlocked")
    assert Tracker.from_dict(tracker.to_dict()) == tracker


@pytest.mark.parametrize(
    ("hours", "hhmm", "inside"),
    [
        (None, (3, 0), True),
        ("07:00-23:00", (6, 59), False),
        ("07:00-23:00", (7, 0), True),
        ("07:00-23:00", (22, 59), True),
        ("07:00-23:00", (23, 0), False),
        ("22:00-06:00", (23, 30), True),
        ("22:00-06:00", (5, 59), True),
        ("22:00-06:00", (12, 0), False),
    ],
)
def test_within_hours(hours: str | None, hhmm: tuple[int, int], inside: bool) -> None:
    assert within_hours(datetime(2026, 1, 1, *hhmm), hours) is inside


T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "last_run", "now", "missed"),
    [
        ({"every": "10m"}, None, T0, False),  # never ran: nothing to catch up
        ({"every": "10m"}, T0 - timedelta(minutes=5), T0, False),
        ({"every": "10m"}, T0 - timedelta(minutes=10), T0, True),
        ({"every": "10m"}, T0 - timedelta(hours=5), T0, True),  # many ticks: still one catch-up
        ({"every": "10m"}, T0 + timedelta(hours=1), T0, False),  # the clock went back
        ({"cron": "*/10 * * * *"}, T0 + timedelta(minutes=1), T0 + timedelta(minutes=8), False),
        ({"cron": "*/10 * * * *"}, T0 + timedelta(minutes=1), T0 + timedelta(minutes=15), True),
        ({"cron": "0 7 * * *"}, T0 - timedelta(hours=1), T0 + timedelta(days=2), True),  # clock jumped on
    ],
)
def test_missed_tick(
    schedule: dict[str, str], last_run: datetime | None, now: datetime, missed: bool
) -> None:
    assert missed_tick(ScheduleOptions.model_validate(schedule), last_run, now) is missed


def test_interval_keeps_its_rhythm_after_a_restart() -> None:
    options = ScheduleOptions(every=600)
    assert next_start(options, T0 - timedelta(minutes=25), T0) == T0 + timedelta(minutes=5)
    assert next_start(options, None, T0) is None
    assert next_start(options, T0 + timedelta(hours=1), T0) is None


@pytest.mark.parametrize(
    ("wall", "mono", "jumped"),
    [
        ((0, 30), (0, 30), False),
        ((0, 3630), (0, 30), True),
        ((1000, 30), (0, 30), True),
        ((0, 80), (0, 30), False),
    ],
)
def test_clock_jumped(wall: tuple[float, float], mono: tuple[float, float], jumped: bool) -> None:
    assert clock_jumped(wall[0], mono[0], wall[1], mono[1]) is jumped


@pytest.mark.parametrize(
    ("model", "error"),
    [
        (ScheduleOptions, {}),
        (ScheduleOptions, {"every": "10m", "cron": "* * * * *"}),
        (ScheduleOptions, {"cron": "not a cron"}),
        (ScheduleOptions, {"every": "10m", "active_hours": "7-23"}),
        (ScheduleOptions, {"every": "0.1s"}),
        (SnapshotOptions, {}),
        (SnapshotOptions, {"url": "ftp://cam/snap.jpg"}),
        (SnapshotOptions, {"mqtt_request": "cam/get"}),
        (SnapshotOptions, {"url": "http://cam", "mqtt_request": "a", "mqtt_reply": "b"}),
        (SnapshotOptions, {"mqtt_request": "cam/get", "mqtt_reply": "cam/+/img"}),
        (ChangeOptions, {"max_distance": 65}),
    ],
)
def test_bad_options_are_refused(
    model: type[ScheduleOptions | SnapshotOptions | ChangeOptions], error: dict[str, str]
) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(error)


def test_queue_coalesces_state_snapshots_and_keeps_events() -> None:
    async def scenario() -> tuple[list[str], list[tuple[str, str]]]:
        queue = JobQueue(lambda: 0.0)
        keys = {
            "s1": "door|cam",
            "s2": "door|cam",
            "s3": "door|cam",
            "e1": None,
            "e2": None,
            "o1": "gate|cam",
        }
        queue.traits = lambda job_id: JobTraits(coalesce=keys[job_id])
        superseded: list[tuple[str, str]] = []
        queue.on_superseded = lambda old, new: superseded.append((old, new))
        for created, job_id in enumerate(["s1", "e1", "s2", "o1", "e2", "s3"]):
            queue.push(job_id, created=float(created))
        assert len(queue) == 4
        got = [await queue.get() for _ in range(4)]
        queue.push("s2", created=9.0)
        queue.push("s1", created=0.0)  # an older job back from a retry: it is the stale one
        return [*got, await queue.get()], superseded

    got, superseded = asyncio.run(scenario())
    assert got == ["e1", "o1", "e2", "s3", "s2"]
    assert superseded == [("s1", "s2"), ("s2", "s3"), ("s1", "s2")]


def test_queue_prefers_the_loaded_model_but_not_over_priority_or_forever() -> None:
    async def scenario() -> list[str]:
        queue = JobQueue(lambda: 0.0, batch=3)
        queue.traits = lambda job_id: JobTraits(model=job_id[0])
        for created, job_id in enumerate(["a1", "b1", "a2", "b2", "a3", "b3", "a4", "a5"]):
            queue.push(job_id, created=float(created))
        first = [await queue.get() for _ in range(4)]
        queue.push("b9", priority=1000, created=99.0)  # interactive
        return first + [await queue.get() for _ in range(5)]

    got = asyncio.run(scenario())
    # Oldest first starts with a1, then stays on model a for three jobs, then b (oldest) ...
    assert got[:4] == ["a1", "a2", "a3", "b1"]
    assert got[4] == "b9"  # an interactive job goes first whatever the model
    assert got[5:] == ["b2", "b3", "a4", "a5"]


def test_a_schedule_needs_a_snapshot_and_old_rules_stay_plain() -> None:
    base = {"name": "door", "handler": "yes_no", "model": "m", "prompt": "locked?"}
    with pytest.raises(ValidationError, match="needs a snapshot source"):
        YesNoRule.model_validate({**base, "schedule": {"every": "10m"}})
    plain = YesNoRule.model_validate(base)
    assert not wants_schedules([plain])
    assert rule_kind(plain) == "event"
    scheduled = YesNoRule.model_validate(
        {**base, "schedule": {"every": "10m"}, "snapshot": {"url": "http://cam/x"}}
    )
    assert wants_schedules([plain, scheduled])
    assert rule_kind(scheduled) == "state"
