"""Schedules: when a rule takes a snapshot, and the time arithmetic around it.

The pure parts (triggers, active hours, missed ticks, clock jumps) live here; the extension
that runs them is bridge/cameras/extension.py. Ticks are run by apscheduler 3's
AsyncIOScheduler on the daemon's loop, from an in-memory job store: what must survive a
restart (the last tick of each rule) is kept by the extension in the data folder, so a tick
missed while the daemon was down runs once at start, not once per missed tick.
"""

from datetime import datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bridge.config.cameras import ScheduleOptions, parse_active_hours

CLOCK_JUMP_TOLERANCE = 60.0  # seconds of wall clock against the monotonic clock


def make_trigger(options: ScheduleOptions, *, start: datetime | None = None) -> BaseTrigger:
    """The apscheduler trigger of a schedule (jitter included)."""
    jitter = int(options.jitter) or None
    if options.every is not None:
        return IntervalTrigger(seconds=options.every, start_date=start, jitter=jitter)
    assert options.cron is not None
    trigger = CronTrigger.from_crontab(options.cron)
    trigger.jitter = jitter  # from_crontab takes no jitter; the attribute is what the trigger reads
    return trigger


def within_hours(moment: datetime, active_hours: str | None) -> bool:
    """Whether local time `moment` is inside "HH:MM-HH:MM" (which may wrap past midnight)."""
    if active_hours is None:
        return True
    start, end = parse_active_hours(active_hours)
    minute = moment.hour * 60 + moment.minute
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end


def missed_tick(options: ScheduleOptions, last_run: datetime | None, now: datetime) -> bool:
    """Whether a tick fell due between `last_run` and `now` (then it runs once, at start).

    Nothing is due before a rule ever ran, or when the clock now reads earlier than the last
    run (it was set back): that would otherwise fire at once, or never.
    """
    if last_run is None or last_run >= now:
        return False
    trigger = make_trigger(options.model_copy(update={"jitter": 0}), start=last_run)
    due = trigger.get_next_fire_time(last_run, now)
    return due is not None and due <= now


def next_start(options: ScheduleOptions, last_run: datetime | None, now: datetime) -> datetime | None:
    """Where an interval schedule resumes: its rhythm continues from the last run when it can."""
    if options.every is None or last_run is None or last_run >= now:
        return None
    step = timedelta(seconds=options.every)
    periods = (now - last_run) // step + 1
    start: datetime = last_run + step * periods
    return start


def clock_jumped(wall_before: float, mono_before: float, wall_now: float, mono_now: float) -> bool:
    """The wall clock moved by more than the tolerance apart from the monotonic clock."""
    drift = (wall_now - wall_before) - (mono_now - mono_before)
    return abs(drift) > CLOCK_JUMP_TOLERANCE
