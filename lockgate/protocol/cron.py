"""Cron schedules: five fields with an optional TZ=/CRON_TZ= zone (spec §5.1)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter


@dataclass(frozen=True, slots=True)
class CronSchedule:
    expression: str
    zone: ZoneInfo

    def next_after(self, ms: int) -> int:
        start = datetime.fromtimestamp(ms / 1000, tz=self.zone)
        return int(croniter(self.expression, start).get_next(datetime).timestamp() * 1000)


def parse_cron(spec: str) -> CronSchedule:
    text = str(spec).strip()
    zone = ZoneInfo("UTC")
    if text.startswith(("TZ=", "CRON_TZ=")):
        head, _, text = text.partition(" ")
        name = head.split("=", 1)[1]
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}") from None
        text = text.strip()
    if text.startswith("@"):
        raise ValueError("descriptors such as @daily are not accepted; write the five fields")
    if len(text.split()) != 5:
        raise ValueError("a cron expression has exactly five fields: minute hour day-of-month month day-of-week")
    if not croniter.is_valid(text):
        raise ValueError(f"{text!r} is not a valid cron expression")
    return CronSchedule(text, zone)
