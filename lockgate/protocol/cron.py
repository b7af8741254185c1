"""Cron schedules: five fields with an optional TZ=/CRON_TZ= zone (spec §5.1)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

_UTC = ZoneInfo("UTC")


@dataclass(frozen=True, slots=True)
class CronSchedule:
    expression: str  # the five fields, without the zone prefix
    zone: ZoneInfo

    def next_after(self, ms: int) -> int:
        """The first tick strictly after `ms` (epoch milliseconds), in epoch milliseconds."""
        start = datetime.fromtimestamp(ms / 1000, tz=self.zone)
        it = croniter(self.expression, start)
        fixed_hour = not self.expression.split()[1].startswith("*")
        for _ in range(4):
            tick = it.get_next(datetime)
            tick_ms = int(tick.timestamp()) * 1000  # ticks fall on whole minutes
            # When clocks go back, a wall time such as 01:30 happens twice. A job pinned to an hour
            # runs once (at the first one), as with classic cron; "every N minutes" jobs keep going.
            if fixed_hour and _is_repeated_wall_time(tick_ms, self.zone):
                continue
            return tick_ms
        return tick_ms


def _is_repeated_wall_time(ms: int, zone: ZoneInfo) -> bool:
    local = datetime.fromtimestamp(ms / 1000, tz=timezone.utc).astimezone(zone)
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


def parse_cron(spec: str) -> CronSchedule:
    """Parse `[TZ=Zone |CRON_TZ=Zone ]m h dom mon dow`; raise ValueError saying what is wrong."""
    text = str(spec).strip()
    zone = _UTC
    if text.startswith(("TZ=", "CRON_TZ=")):
        head, _, text = text.partition(" ")
        name = head.split("=", 1)[1]
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r} (use an IANA name such as 'Europe/Paris')") from None
        text = text.strip()
    if not text:
        raise ValueError("empty cron expression")
    if text.startswith("@"):
        raise ValueError(f"descriptors such as {text.split()[0]!r} are not accepted; write the five fields")
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(
            f"a cron expression has exactly five fields (minute hour day-of-month month day-of-week), "
            f"{text!r} has {len(fields)}"
        )
    if not croniter.is_valid(text):
        raise ValueError(f"{text!r} is not a valid cron expression")
    expression = " ".join(fields)
    try:  # reject schedules that can never fire, such as "0 0 30 2 *"
        croniter(expression, datetime(2000, 1, 1, tzinfo=_UTC)).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"{text!r} never matches a date") from None
    return CronSchedule(expression, zone)
