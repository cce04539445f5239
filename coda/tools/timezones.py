"""Time zone lookup by IANA name or by city, and the clock reading `get_time` returns."""

from __future__ import annotations

import functools
import re
import zoneinfo
from datetime import UTC, datetime, timedelta, tzinfo

from coda.tools.api import InvalidArguments

#: Cities people ask about that are not themselves the name of an IANA zone.
CITY_ZONES: dict[str, str] = {
    "san francisco": "America/Los_Angeles",
    "seattle": "America/Los_Angeles",
    "portland": "America/Los_Angeles",
    "las vegas": "America/Los_Angeles",
    "san diego": "America/Los_Angeles",
    "silicon valley": "America/Los_Angeles",
    "salt lake city": "America/Denver",
    "houston": "America/Chicago",
    "dallas": "America/Chicago",
    "austin": "America/Chicago",
    "minneapolis": "America/Chicago",
    "new orleans": "America/Chicago",
    "boston": "America/New_York",
    "washington": "America/New_York",
    "washington dc": "America/New_York",
    "miami": "America/New_York",
    "atlanta": "America/New_York",
    "philadelphia": "America/New_York",
    "nyc": "America/New_York",
    "montreal": "America/Toronto",
    "ottawa": "America/Toronto",
    "calgary": "America/Edmonton",
    "rio de janeiro": "America/Sao_Paulo",
    "rio": "America/Sao_Paulo",
    "brasilia": "America/Sao_Paulo",
    "munich": "Europe/Berlin",
    "frankfurt": "Europe/Berlin",
    "hamburg": "Europe/Berlin",
    "cologne": "Europe/Berlin",
    "milan": "Europe/Rome",
    "florence": "Europe/Rome",
    "venice": "Europe/Rome",
    "naples": "Europe/Rome",
    "barcelona": "Europe/Madrid",
    "seville": "Europe/Madrid",
    "geneva": "Europe/Zurich",
    "lyon": "Europe/Paris",
    "marseille": "Europe/Paris",
    "manchester": "Europe/London",
    "edinburgh": "Europe/London",
    "birmingham": "Europe/London",
    "st petersburg": "Europe/Moscow",
    "saint petersburg": "Europe/Moscow",
    "krakow": "Europe/Warsaw",
    "geneve": "Europe/Zurich",
    "the hague": "Europe/Amsterdam",
    "rotterdam": "Europe/Amsterdam",
    "antwerp": "Europe/Brussels",
    "beijing": "Asia/Shanghai",
    "shenzhen": "Asia/Shanghai",
    "guangzhou": "Asia/Shanghai",
    "mumbai": "Asia/Kolkata",
    "bombay": "Asia/Kolkata",
    "delhi": "Asia/Kolkata",
    "new delhi": "Asia/Kolkata",
    "bangalore": "Asia/Kolkata",
    "bengaluru": "Asia/Kolkata",
    "chennai": "Asia/Kolkata",
    "hyderabad": "Asia/Kolkata",
    "calcutta": "Asia/Kolkata",
    "osaka": "Asia/Tokyo",
    "kyoto": "Asia/Tokyo",
    "abu dhabi": "Asia/Dubai",
    "hanoi": "Asia/Ho_Chi_Minh",
    "saigon": "Asia/Ho_Chi_Minh",
    "ho chi minh city": "Asia/Ho_Chi_Minh",
    "tel aviv": "Asia/Jerusalem",
    "canberra": "Australia/Sydney",
    "gold coast": "Australia/Brisbane",
    "wellington": "Pacific/Auckland",
    "cape town": "Africa/Johannesburg",
    "pretoria": "Africa/Johannesburg",
    "abuja": "Africa/Lagos",
    "hawaii": "Pacific/Honolulu",
    "alaska": "America/Anchorage",
}

_ALIASES: dict[str, str] = {"utc": "UTC", "gmt": "UTC", "z": "UTC", "zulu": "UTC"}


def _normalize(text: str) -> str:
    return re.sub(r"[\s_]+", " ", text.strip().lower().replace(".", ""))


@functools.cache
def _index() -> tuple[dict[str, str], dict[str, str]]:
    """(lower-case IANA name -> name, city part of an IANA name -> name)."""
    by_name: dict[str, str] = {}
    by_city: dict[str, str] = {}
    for name in sorted(zoneinfo.available_timezones()):
        by_name[name.lower()] = name
        if "/" in name and not name.startswith(("Etc/", "SystemV/", "US/")):
            by_city.setdefault(_normalize(name.rsplit("/", 1)[1]), name)
    return by_name, by_city


def iana_zone(name: str) -> str | None:
    """The IANA zone `name` spells, in any case and with spaces for underscores ("america/new york")."""
    by_name = _index()[0]
    text = name.strip().lower()
    return by_name.get(text) or by_name.get(text.replace(" ", "_"))


def resolve_zone(name: str) -> str:
    """The IANA zone for an IANA name (any case) or a city; raises InvalidArguments otherwise."""
    text = name.strip()
    by_city = _index()[1]
    key = _normalize(text)
    found = _ALIASES.get(key) or iana_zone(text) or CITY_ZONES.get(key) or by_city.get(key)
    if found is None:
        raise InvalidArguments(
            f"unknown time zone {name!r}: give an IANA name such as 'Europe/Paris' or a city such as 'Tokyo'",
            field="/timezone",
        )
    return found


def local_zone() -> tuple[tzinfo, str]:
    """This machine's zone and a name for it."""
    now = datetime.now().astimezone()
    zone = now.tzinfo or UTC
    return zone, getattr(zone, "key", None) or now.tzname() or "local"


def clock_reading(zone: tzinfo, zone_name: str, now: datetime | None = None) -> dict[str, str]:
    """What `get_time` returns: the time in a zone, in several handy forms."""
    moment = (now or datetime.now(UTC)).astimezone(zone)
    offset = moment.strftime("%z")
    return {
        "iso": moment.isoformat(timespec="seconds"),
        "time": moment.strftime("%H:%M"),
        "date": moment.date().isoformat(),
        "weekday": moment.strftime("%A"),
        "timezone": zone_name,
        "utc_offset": f"{offset[:3]}:{offset[3:]}" if offset else "+00:00",
    }


def zone_or_local(asked: str) -> tuple[tzinfo, str]:
    """The zone a zone name or city stands for, and its IANA name; this machine's zone when `asked` is ""."""
    if not asked:
        return local_zone()
    name = resolve_zone(asked)
    return zoneinfo.ZoneInfo(name), name


#: Until this hour, "tomorrow" still means the day that has just begun ("wake me up at 7 tomorrow" at 00:45).
NIGHT_ENDS_HOUR = 4


def next_clock_time(
    now: datetime,
    hour: int,
    minute: int,
    *,
    twelve_hour: bool = False,
    tomorrow: bool = False,
    weekday: int | None = None,
) -> datetime:
    """The first moment after `now` (timezone-aware) when its zone's clock shows hour:minute.

    `twelve_hour`: the hour was said without am or pm ("at 7"), so whichever of 7:00 and 19:00 comes
    first. `tomorrow`: not before tomorrow's date ("tomorrow at 9"); said in the small hours (before
    NIGHT_ENDS_HOUR), "tomorrow" is the morning to come, as people mean it before they have slept.
    `weekday` (0 Monday to 6 Sunday): on that day of the week ("on Friday at 9"), today included
    while the time is still to come, so never more than a week away.
    """
    hours = sorted({hour % 12, hour % 12 + 12}) if twelve_hour else [hour]
    first_day = now.date() + timedelta(days=1 if tomorrow and now.hour >= NIGHT_ENDS_HOUR else 0)
    offsets: tuple[int, ...] = (0, 1)
    if weekday is not None:
        offsets = tuple(d for d in range(8) if (first_day + timedelta(days=d)).weekday() == weekday)
    later = [
        moment
        for offset in offsets
        for moment in (
            datetime.combine(first_day + timedelta(days=offset), datetime.min.time(), now.tzinfo).replace(
                hour=h, minute=minute
            )
            for h in hours
        )
        if moment > now
    ]
    return min(later)
