"""Common place names -> IANA time zones, for "what time is it in Tokyo"."""

from __future__ import annotations

from coda.tools.api import InvalidArguments
from coda.tools.timezones import iana_zone, resolve_zone

CITY_TIME_ZONES: dict[str, str] = {
    # Europe
    "london": "Europe/London", "uk": "Europe/London", "england": "Europe/London", "dublin": "Europe/Dublin",
    "ireland": "Europe/Dublin", "lisbon": "Europe/Lisbon", "portugal": "Europe/Lisbon", "madrid": "Europe/Madrid",
    "spain": "Europe/Madrid", "barcelona": "Europe/Madrid", "paris": "Europe/Paris", "france": "Europe/Paris",
    "brussels": "Europe/Brussels", "amsterdam": "Europe/Amsterdam", "berlin": "Europe/Berlin",
    "germany": "Europe/Berlin", "munich": "Europe/Berlin", "zurich": "Europe/Zurich", "geneva": "Europe/Zurich",
    "rome": "Europe/Rome", "italy": "Europe/Rome", "milan": "Europe/Rome", "vienna": "Europe/Vienna",
    "prague": "Europe/Prague", "warsaw": "Europe/Warsaw", "copenhagen": "Europe/Copenhagen",
    "stockholm": "Europe/Stockholm", "oslo": "Europe/Oslo", "helsinki": "Europe/Helsinki",
    "athens": "Europe/Athens", "istanbul": "Europe/Istanbul", "kyiv": "Europe/Kyiv", "kiev": "Europe/Kyiv",
    "moscow": "Europe/Moscow", "reykjavik": "Atlantic/Reykjavik",
    # Africa and the Middle East
    "cairo": "Africa/Cairo", "lagos": "Africa/Lagos", "nairobi": "Africa/Nairobi",
    "johannesburg": "Africa/Johannesburg", "cape town": "Africa/Johannesburg", "casablanca": "Africa/Casablanca",
    "dubai": "Asia/Dubai", "abu dhabi": "Asia/Dubai", "riyadh": "Asia/Riyadh", "tehran": "Asia/Tehran",
    "jerusalem": "Asia/Jerusalem", "tel aviv": "Asia/Jerusalem",
    # Asia and Oceania
    "karachi": "Asia/Karachi", "delhi": "Asia/Kolkata", "new delhi": "Asia/Kolkata", "mumbai": "Asia/Kolkata",
    "bangalore": "Asia/Kolkata", "india": "Asia/Kolkata", "kathmandu": "Asia/Kathmandu", "dhaka": "Asia/Dhaka",
    "bangkok": "Asia/Bangkok", "jakarta": "Asia/Jakarta", "singapore": "Asia/Singapore",
    "kuala lumpur": "Asia/Kuala_Lumpur", "hong kong": "Asia/Hong_Kong", "beijing": "Asia/Shanghai",
    "shanghai": "Asia/Shanghai", "china": "Asia/Shanghai", "taipei": "Asia/Taipei", "manila": "Asia/Manila",
    "seoul": "Asia/Seoul", "korea": "Asia/Seoul", "tokyo": "Asia/Tokyo", "osaka": "Asia/Tokyo",
    "japan": "Asia/Tokyo", "perth": "Australia/Perth", "adelaide": "Australia/Adelaide",
    "brisbane": "Australia/Brisbane", "sydney": "Australia/Sydney", "melbourne": "Australia/Melbourne",
    "auckland": "Pacific/Auckland", "new zealand": "Pacific/Auckland", "honolulu": "Pacific/Honolulu",
    "hawaii": "Pacific/Honolulu",
    # The Americas
    "anchorage": "America/Anchorage", "vancouver": "America/Vancouver", "seattle": "America/Los_Angeles",
    "san francisco": "America/Los_Angeles", "los angeles": "America/Los_Angeles", "la": "America/Los_Angeles",
    "las vegas": "America/Los_Angeles", "california": "America/Los_Angeles", "phoenix": "America/Phoenix",
    "denver": "America/Denver", "calgary": "America/Edmonton", "chicago": "America/Chicago",
    "houston": "America/Chicago", "dallas": "America/Chicago", "austin": "America/Chicago",
    "mexico city": "America/Mexico_City", "mexico": "America/Mexico_City", "toronto": "America/Toronto",
    "montreal": "America/Toronto", "new york": "America/New_York", "nyc": "America/New_York",
    "boston": "America/New_York", "washington": "America/New_York", "miami": "America/New_York",
    "atlanta": "America/New_York", "bogota": "America/Bogota", "lima": "America/Lima",
    "caracas": "America/Caracas", "santiago": "America/Santiago", "buenos aires": "America/Argentina/Buenos_Aires",
    "sao paulo": "America/Sao_Paulo", "são paulo": "America/Sao_Paulo", "rio de janeiro": "America/Sao_Paulo",
    "rio": "America/Sao_Paulo", "brazil": "America/Sao_Paulo",
    # Abbreviations people say
    "utc": "UTC", "gmt": "Etc/GMT",
}  # fmt: skip


def time_zone_for(place: str) -> str:
    """The IANA zone for a place name or zone name: the names people say here (countries, "LA"), then
    every city get_time knows; the place itself when unknown."""
    key = " ".join(place.lower().replace(",", " ").split())
    key = key.removeprefix("the ")
    if key in CITY_TIME_ZONES:
        return CITY_TIME_ZONES[key]
    zone = iana_zone(key)
    if zone:
        return zone
    # "Paris, France": try the first part alone.
    head = key.split(" ")[0] if " " in key else ""
    if head and head in CITY_TIME_ZONES:
        return CITY_TIME_ZONES[head]
    try:  # the cities get_time itself knows (every IANA zone's city, and its aliases)
        return resolve_zone(key)
    except InvalidArguments:
        return place.strip()
