"""When a user's next digest is due: their local `digest_hour` (on `digest_weekday` for weekly
digests) in their IANA `timezone`, as a UTC instant. The zone database handles daylight saving: a
Tokyo user's 08:00 is always 23:00 UTC the day before, a Los Angeles user's moves between 15:00 and
16:00 UTC with the clocks. An hour that does not exist locally (the spring-forward gap) is read with
the offset before the change, so it lands just after the gap; an hour that happens twice (the fall
back) is the first of the two."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@lru_cache(maxsize=1)
def known_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def is_known_zone(name: str) -> bool:
    """An IANA zone name this installation knows (checked against the list, never opened as a path)."""
    return name in known_zones()


@lru_cache(maxsize=1024)
def zone_of(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name) if is_known_zone(name) else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _local_instant(day: date, hour: int, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=zone).astimezone(UTC)


def next_digest_at(
    now: datetime,
    *,
    enabled: bool,
    frequency: str,
    zone: str,
    hour: int,
    weekday: str,
) -> datetime | None:
    """The first local `hour` o'clock strictly after `now` (on `weekday` when weekly), in UTC; None
    when digests are off."""
    if not enabled or str(frequency) == "off":
        return None
    tz = zone_of(str(zone))
    local_day = now.astimezone(tz).date()
    weekly = str(frequency) == "weekly"
    wanted = WEEKDAYS.index(str(weekday)) if weekly else None
    for offset in range(0, 9):
        day = local_day + timedelta(days=offset)
        if wanted is not None and day.weekday() != wanted:
            continue
        candidate = _local_instant(day, hour, tz)
        if candidate > now:
            return candidate
    raise AssertionError("unreachable: a day and a week always hold the next digest time")
