"""Unit conversion: length, mass, volume, temperature, time, speed and area.

Each unit is a factor to its dimension's base unit (metre, kilogram, litre, kelvin, second, metre
per second, square metre) plus, for temperatures, an offset. Units are found by name, plural or
symbol in either spelling ("metre", "meters", "m", "km/h", "°F", "sq ft"). Amounts that differ by
country take the US value unless asked otherwise ("gallon" is the US gallon, "imperial gallon" the
British one). Months and years are left out on purpose: their length depends on which one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass


class ConversionError(ValueError):
    """The units are unknown or measure different things; the message says which, `argument` names
    the one at fault ("value", "source", "target")."""

    def __init__(self, message: str, argument: str) -> None:
        super().__init__(message)
        self.argument = argument


@dataclass(frozen=True)
class Unit:
    singular: str
    plural: str
    dimension: str
    #: Base units in one of this unit (a base value = value * factor + offset).
    factor: float
    offset: float = 0.0


_GALLON = 3.785411784
_IMPERIAL_GALLON = 4.54609
_INCH = 0.0254
_FOOT = 0.3048
_MILE = 1609.344

# (singular, plural, dimension, factor, offset, other names). Names are matched in lower case after
# "metre"/"litre" spellings are unified, so "meters" and "kilometer" need no entry of their own.
_TABLE: list[tuple[str, str, str, float, float, tuple[str, ...]]] = [
    ("millimetre", "millimetres", "length", 0.001, 0, ("mm",)),
    ("centimetre", "centimetres", "length", 0.01, 0, ("cm", "cms")),
    ("metre", "metres", "length", 1, 0, ("m",)),
    # "k" as runners say it ("a 10k"); kelvin has no symbol here, so it cannot be misread.
    ("kilometre", "kilometres", "length", 1000, 0, ("km", "kms", "k")),
    ("inch", "inches", "length", _INCH, 0, ("in", '"')),
    ("foot", "feet", "length", _FOOT, 0, ("ft", "foots")),
    ("yard", "yards", "length", 0.9144, 0, ("yd", "yds")),
    ("mile", "miles", "length", _MILE, 0, ("mi",)),
    ("nautical mile", "nautical miles", "length", 1852, 0, ("nmi",)),
    ("milligram", "milligrams", "mass", 1e-6, 0, ("mg",)),
    ("gram", "grams", "mass", 0.001, 0, ("g", "gm", "gms", "gramme", "grammes")),
    ("kilogram", "kilograms", "mass", 1, 0, ("kg", "kgs", "kilo", "kilos", "kilogramme", "kilogrammes")),
    ("tonne", "tonnes", "mass", 1000, 0, ("metric ton", "metric tons", "t")),
    ("ounce", "ounces", "mass", 0.028349523125, 0, ("oz",)),
    ("pound", "pounds", "mass", 0.45359237, 0, ("lb", "lbs")),
    ("stone", "stone", "mass", 6.35029318, 0, ("stones", "st")),
    ("millilitre", "millilitres", "volume", 0.001, 0, ("ml", "mls", "cc")),
    ("centilitre", "centilitres", "volume", 0.01, 0, ("cl",)),
    ("decilitre", "decilitres", "volume", 0.1, 0, ("dl",)),
    ("litre", "litres", "volume", 1, 0, ("l",)),
    ("cubic metre", "cubic metres", "volume", 1000, 0, ("m3", "m³")),
    ("teaspoon", "teaspoons", "volume", _GALLON / 768, 0, ("tsp",)),
    ("tablespoon", "tablespoons", "volume", _GALLON / 256, 0, ("tbsp", "tbs")),
    ("fluid ounce", "fluid ounces", "volume", _GALLON / 128, 0, ("fl oz", "floz")),
    ("cup", "cups", "volume", _GALLON / 16, 0, ()),
    ("pint", "pints", "volume", _GALLON / 8, 0, ("pt", "us pint", "us pints")),
    ("quart", "quarts", "volume", _GALLON / 4, 0, ("qt",)),
    ("gallon", "gallons", "volume", _GALLON, 0, ("gal", "us gallon", "us gallons")),
    ("imperial pint", "imperial pints", "volume", _IMPERIAL_GALLON / 8, 0, ("uk pint", "uk pints", "british pint")),
    ("imperial gallon", "imperial gallons", "volume", _IMPERIAL_GALLON, 0, ("uk gallon", "uk gallons")),
    ("degree Celsius", "degrees Celsius", "temperature", 1, 273.15, ("celsius", "centigrade", "c", "°c")),
    ("degree Fahrenheit", "degrees Fahrenheit", "temperature", 5 / 9, 273.15 - 32 * 5 / 9,
     ("fahrenheit", "f", "°f")),
    ("kelvin", "kelvin", "temperature", 1, 0, ("kelvins",)),
    ("millisecond", "milliseconds", "time", 0.001, 0, ("ms",)),
    ("second", "seconds", "time", 1, 0, ("s", "sec", "secs")),
    ("minute", "minutes", "time", 60, 0, ("min", "mins")),
    ("hour", "hours", "time", 3600, 0, ("h", "hr", "hrs")),
    ("day", "days", "time", 86400, 0, ()),
    ("week", "weeks", "time", 604800, 0, ("wk", "wks")),
    ("metre per second", "metres per second", "speed", 1, 0, ("m/s", "metres a second")),
    ("kilometre per hour", "kilometres per hour", "speed", 1000 / 3600, 0,
     ("km/h", "kmh", "kph", "kmph", "kilometres an hour", "km an hour", "km per hour")),
    ("mile per hour", "miles per hour", "speed", _MILE / 3600, 0, ("mph", "miles an hour")),
    ("knot", "knots", "speed", 1852 / 3600, 0, ("kn", "kt", "kts")),
    ("square millimetre", "square millimetres", "area", 1e-6, 0, ("mm2", "mm²", "sq mm")),
    ("square centimetre", "square centimetres", "area", 1e-4, 0, ("cm2", "cm²", "sq cm")),
    ("square metre", "square metres", "area", 1, 0, ("m2", "m²", "sq m", "sqm")),
    ("square kilometre", "square kilometres", "area", 1e6, 0, ("km2", "km²", "sq km")),
    ("square inch", "square inches", "area", _INCH**2, 0, ("sq in", "in2", "in²")),
    ("square foot", "square feet", "area", _FOOT**2, 0, ("sq ft", "ft2", "ft²", "sqft")),
    ("square yard", "square yards", "area", 0.9144**2, 0, ("sq yd", "yd2", "yd²")),
    ("square mile", "square miles", "area", _MILE**2, 0, ("sq mi", "mi2", "mi²")),
    ("acre", "acres", "area", 4046.8564224, 0, ()),
    ("hectare", "hectares", "area", 10000, 0, ("ha",)),
]  # fmt: skip

_UNITS: dict[str, Unit] = {}
for _singular, _plural, _dimension, _factor, _offset, _names in _TABLE:
    _unit = Unit(_singular, _plural, _dimension, _factor, _offset)
    for _name in (_singular, _plural, *_names):
        _UNITS[_name.lower()] = _unit

#: Temperatures said without their scale ("30 degrees in Fahrenheit"): the other common scale.
_OTHER_SCALE = {"degree Fahrenheit": "celsius", "degree Celsius": "fahrenheit", "kelvin": "celsius"}


def _key(name: str) -> str:
    text = name.strip().lower().replace("meter", "metre").replace("liter", "litre").rstrip(".")
    text = re.sub(r"°\s*", "°", re.sub(r"\s+", " ", text))
    text = re.sub(r"^(?:a |an |one |the )", "", text)
    text = re.sub(r"^(?:degrees?|deg) (?=\S)", "", text)  # "degrees fahrenheit" -> "fahrenheit"
    return re.sub(r"^(?:sq\.?|square) ", "square ", text) if not text.startswith("sq ") else text


def find_unit(name: str) -> Unit | None:
    """The unit a name, plural or symbol stands for ("kilometers", "lbs", "°F"), or None."""
    key = _key(name)
    return _UNITS.get(key) or _UNITS.get(key.replace("square ", "sq ", 1))


def is_degrees(name: str) -> bool:
    """A temperature said without its scale: "degrees", "deg"."""
    return _key(name) in ("degree", "degrees", "deg", "°")


@dataclass(frozen=True)
class Conversion:
    value: float
    source: Unit
    target: Unit
    result: float


def convert(value: float, source: str, target: str) -> Conversion:
    """`value` in the unit named `source`, in the unit named `target`."""
    if not math.isfinite(value):
        raise ConversionError(f"value must be a finite number, got {value}", "value")
    to_unit = find_unit(target)
    if to_unit is None:
        raise ConversionError(f"unknown unit {target!r}", "target")
    from_unit = find_unit(source)
    if from_unit is None and is_degrees(source) and to_unit.dimension == "temperature":
        from_unit = find_unit(_OTHER_SCALE[to_unit.singular])
    if from_unit is None:
        raise ConversionError(f"unknown unit {source!r}", "source")
    if from_unit.dimension != to_unit.dimension:
        raise ConversionError(
            f"cannot convert {from_unit.plural} ({from_unit.dimension}) to {to_unit.plural} ({to_unit.dimension})",
            "target",
        )
    base = value * from_unit.factor + from_unit.offset
    if from_unit.dimension == "temperature" and base < -1e-9:
        raise ConversionError(f"{format_amount(value)} {from_unit.plural} is below absolute zero", "value")
    return Conversion(value, from_unit, to_unit, (base - to_unit.offset) / to_unit.factor)


def format_amount(value: float) -> str:
    """A number as said aloud: whole numbers with thousands commas, others to 3 significant figures
    but never fewer than the whole part ("8.05", "37.8", "1,609", "0.0394")."""
    if value == 0:
        return "0"
    if abs(value - round(value)) < 1e-9 * max(1.0, abs(value)):
        return f"{round(value):,}"
    decimals = max(0, 2 - math.floor(math.log10(abs(value))))
    text = f"{value:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def spelled(unit: Unit, amount: str, *, american: bool = False) -> str:
    """The unit's name for an amount as written ("1 mile", "8.05 kilometres")."""
    name = unit.singular if amount in ("1", "-1") else unit.plural
    return name.replace("metre", "meter").replace("litre", "liter") if american else name
