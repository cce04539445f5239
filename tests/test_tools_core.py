"""The tools' pure core: argument validation, registry, calculator, time zones, plugin resolution."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import sqlite3
import sys
import time
import zoneinfo
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coda.config import ToolsConfig
from coda.tools import ErrorCode, InvalidArguments, Tool, ToolContext, ToolFailure, tool
from coda.tools.builtin import builtin_tools, switched_off
from coda.tools.builtin.clock import calendar_date, months_later
from coda.tools.builtin.timers import LATE_LIMIT_SECONDS, Timers
from coda.tools.calculator import MAX_EXPRESSION_CHARS, CalculationError, evaluate
from coda.tools.converter import ConversionError, convert, find_unit, format_amount, is_degrees, spelled
from coda.tools.facts import fact_key
from coda.tools.lists import bare_entry, list_entries, list_sentence, without_entry
from coda.tools.plugins import PluginError, load_references, resolve_reference, tools_from
from coda.tools.registry import ToolRegistry
from coda.tools.timer_store import StoredTimer, TimerStore
from coda.tools.timezones import clock_reading, next_clock_time, resolve_zone
from coda.tools.validation import ToolDefinitionError, compile_schema, parse_arguments, validate_arguments
from coda.v1 import events_pb2

# --- validation

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "count": {"type": "integer", "minimum": 1, "maximum": 10},
        "mode": {"type": "string", "enum": ["fast", "slow"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "inner": {
            "type": "object",
            "properties": {"a/b": {"type": "number"}},
            "required": ["a/b"],
            "additionalProperties": False,
        },
    },
    "required": ["name"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("arguments", "field", "words"),
    [
        ({}, "/name", "required"),
        ({"name": 5}, "/name", "not of type 'string'"),
        ({"name": ""}, "/name", "should be non-empty"),
        ({"name": "x", "count": 0}, "/count", "less than the minimum"),
        ({"name": "x", "count": 11}, "/count", "greater than the maximum"),
        ({"name": "x", "count": 1.5}, "/count", "not of type 'integer'"),
        ({"name": "x", "mode": "medium"}, "/mode", "is not one of"),
        ({"name": "x", "tags": ["ok", 3]}, "/tags/1", "not of type 'string'"),
        ({"name": "x", "extra": 1}, "/extra", "Additional properties"),
        ({"name": "x", "inner": {}}, "/inner/a~1b", "required"),
        ({"name": "x", "inner": {"a/b": "no"}}, "/inner/a~1b", "not of type 'number'"),
    ],
)
def test_each_bad_argument_names_its_field(arguments: dict[str, Any], field: str, words: str) -> None:
    validator = compile_schema(SCHEMA, "t")
    with pytest.raises(InvalidArguments) as caught:
        validate_arguments(validator, arguments)
    assert caught.value.field == field
    assert caught.value.code == ErrorCode.TOOL_ERROR_CODE_INVALID_ARGUMENTS
    assert words in caught.value.message
    assert caught.value.message.startswith(field)


def test_valid_arguments_pass() -> None:
    validate_arguments(compile_schema(SCHEMA, "t"), {"name": "x", "count": 3, "inner": {"a/b": 1.5}})


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{", "not valid JSON"),
        ("[1, 2]", "must be a JSON object, got an array"),
        ('"x"', "got a string"),
        ("nul", "JSON"),
    ],
)
def test_malformed_json_is_invalid_arguments(text: str, words: str) -> None:
    with pytest.raises(InvalidArguments, match=words):
        parse_arguments(text)


def test_empty_arguments_mean_an_empty_object() -> None:
    assert parse_arguments("") == {}
    assert parse_arguments("  ") == {}


@pytest.mark.parametrize(
    ("schema", "words"),
    [({"type": "array"}, "type 'object'"), ({"type": "object", "properties": {"a": {"type": "nope"}}}, "invalid")],
)
def test_bad_schemas_are_refused_at_registration(schema: dict[str, Any], words: str) -> None:
    with pytest.raises(ToolDefinitionError, match=words):
        compile_schema(schema, "t")


# --- registry


async def _nothing(args: dict[str, Any], ctx: ToolContext) -> None:
    return None


def make_tool(name: str) -> Tool:
    return Tool(name=name, description=f"the {name} tool", parameters={"type": "object"}, run=_nothing)


def test_registry_allow_and_deny_lists() -> None:
    registry = ToolRegistry(deny={"b"})
    for name in ("a", "b", "c"):
        registry.add(make_tool(name))
    assert [t.name for t in registry.enabled()] == ["a", "c"]
    assert registry.get("a").name == "a"
    with pytest.raises(ToolFailure) as disabled:
        registry.get("b")
    assert disabled.value.code == ErrorCode.TOOL_ERROR_CODE_DISABLED
    with pytest.raises(ToolFailure) as unknown:
        registry.get("zzz")
    assert unknown.value.code == ErrorCode.TOOL_ERROR_CODE_NOT_FOUND
    assert "available: a, c" in unknown.value.message

    allow = ToolRegistry(allow={"c"})
    for name in ("a", "c"):
        allow.add(make_tool(name))
    assert [t.name for t in allow.enabled()] == ["c"]


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "semi;colon"])
def test_registry_refuses_bad_names(name: str) -> None:
    with pytest.raises(ToolDefinitionError, match="must match"):
        ToolRegistry().add(make_tool(name))


def test_registry_refuses_duplicates_and_non_tools() -> None:
    registry = ToolRegistry()
    registry.add(make_tool("a"), origin="first")
    with pytest.raises(ToolDefinitionError, match="already registered by first"):
        registry.add(make_tool("a"), origin="second")
    with pytest.raises(ToolDefinitionError, match=r"expected a coda\.tools\.Tool"):
        registry.add("a")  # type: ignore[arg-type]


def test_builtin_names_and_opt_in() -> None:
    config = ToolsConfig()
    registry = ToolRegistry(deny=switched_off(config))
    for built in builtin_tools(config, Timers(None)):
        registry.add(built)
    assert registry.names() == sorted(
        [
            "get_time",
            "calculate",
            "convert_units",
            "remember",
            "recall",
            "forget",
            "set_timer",
            "list_timers",
            "change_timer",
            "pause_timer",
            "resume_timer",
            "cancel_timer",
            "system_status",
            "shell",
            "http_get",
        ]
    )
    assert {t.name for t in registry.enabled()} == {
        "get_time",
        "calculate",
        "convert_units",
        "remember",
        "recall",
        "forget",
        "set_timer",
        "list_timers",
        "change_timer",
        "pause_timer",
        "resume_timer",
        "cancel_timer",
        "system_status",
    }
    assert switched_off(ToolsConfig(shell_enabled=True, http_enabled=True)) == set()


# --- the @tool decorator


async def test_decorator_passes_keyword_arguments_and_ctx() -> None:
    @tool(parameters={"type": "object", "properties": {"a": {"type": "number"}}})
    async def double(a: float, ctx: ToolContext) -> dict[str, Any]:
        """Double a number.

        More text that is not part of the description."""
        return {"value": a * 2, "call": ctx.call_id}

    @tool(name="sync_add")
    def add(a: int = 1, b: int = 2) -> int:
        return a + b

    assert double.name == "double"
    assert double.description == "Double a number."
    assert await double.run({"a": 2}, ToolContext(call_id="c1", tool_name="double")) == {"value": 4, "call": "c1"}
    assert add.parameters["type"] == "object"
    assert await add.run({"a": 5}, ToolContext(call_id="c2", tool_name="sync_add")) == 7


# --- unit conversion


@pytest.mark.parametrize(
    ("value", "source", "target", "result"),
    [
        (5, "miles", "km", 8.04672),
        (1, "kilometer", "metres", 1000),
        (100, "degrees fahrenheit", "celsius", 37.7778),
        (-40, "°C", "°F", -40),
        (0, "kelvin", "c", -273.15),
        (30, "degrees", "fahrenheit", 86),  # a temperature without its scale: the other common one
        (86, "degrees", "celsius", 30),
        (1, "pound", "ounces", 16),
        (1, "stone", "lbs", 14),
        (1, "gallon", "cups", 16),
        (1, "imperial gallon", "litres", 4.54609),
        (1, "tablespoon", "teaspoons", 3),
        (1, "hour", "seconds", 3600),
        (1, "week", "days", 7),
        (60, "mph", "km/h", 96.5606),
        (1, "knot", "km/h", 1.852),
        (1, "acre", "sq ft", 43560),
        (1, "hectare", "square metres", 10000),
        (1, "sq. mi", "km²", 2.58999),
    ],
)
def test_unit_conversions(value: float, source: str, target: str, result: float) -> None:
    assert convert(value, source, target).result == pytest.approx(result, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize(
    ("value", "source", "target", "argument", "words"),
    [
        (1, "parsecs", "km", "source", "unknown unit 'parsecs'"),
        (1, "km", "furlongs", "target", "unknown unit 'furlongs'"),
        (1, "kg", "km", "target", "cannot convert kilograms (mass) to kilometres (length)"),
        (1, "month", "days", "source", "unknown unit"),  # months and years have no one length
        (-300, "c", "f", "value", "below absolute zero"),
        (float("nan"), "m", "ft", "value", "finite"),
        (1, "degrees", "km", "source", "unknown unit 'degrees'"),
    ],
)
def test_unit_conversion_refuses_cleanly(value: float, source: str, target: str, argument: str, words: str) -> None:
    with pytest.raises(ConversionError, match=re.escape(words)) as raised:
        convert(value, source, target)
    assert raised.value.argument == argument


def test_unit_names_and_amounts_read_well() -> None:
    assert [format_amount(x) for x in (8.04672, 37.7778, 1609.344, 0.0393701, 3600.0, -40.0, 1e6, 0)] == [
        "8.05", "37.8", "1,609", "0.0394", "3,600", "-40", "1,000,000", "0",
    ]  # fmt: skip
    mile, foot = find_unit("mi"), find_unit("FEET")
    assert mile is not None and foot is not None
    assert spelled(mile, "1") == "mile" and spelled(foot, "3") == "feet" and spelled(foot, "1") == "foot"
    metre = find_unit("meters")
    assert metre is not None and spelled(metre, "2", american=True) == "meters" and spelled(metre, "2") == "metres"
    assert find_unit("apples") is None and is_degrees("degrees") and not is_degrees("miles")


# --- alarms: the next time the clock shows a time of day


def test_next_clock_time() -> None:
    london = zoneinfo.ZoneInfo("Europe/London")
    evening = datetime(2026, 12, 5, 23, 30, tzinfo=london)
    morning = datetime(2026, 12, 5, 8, 30, tzinfo=london)
    assert next_clock_time(evening, 7, 0) == datetime(2026, 12, 6, 7, 0, tzinfo=london)
    assert next_clock_time(evening, 23, 45) == datetime(2026, 12, 5, 23, 45, tzinfo=london)
    # "at 7" said without am or pm: whichever comes first.
    assert next_clock_time(morning, 7, 0, twelve_hour=True) == datetime(2026, 12, 5, 19, 0, tzinfo=london)
    assert next_clock_time(morning, 12, 0, twelve_hour=True) == datetime(2026, 12, 5, 12, 0, tzinfo=london)
    assert next_clock_time(morning, 9, 0) == datetime(2026, 12, 5, 9, 0, tzinfo=london)
    assert next_clock_time(morning, 9, 0, tomorrow=True) == datetime(2026, 12, 6, 9, 0, tzinfo=london)
    assert next_clock_time(morning, 7, 0, twelve_hour=True, tomorrow=True) == datetime(2026, 12, 6, 7, 0, tzinfo=london)
    # "tomorrow at 6:30" said at 00:45 is the morning to come, not the day after it.
    small_hours = datetime(2026, 12, 6, 0, 45, tzinfo=london)
    assert next_clock_time(small_hours, 6, 30, tomorrow=True) == datetime(2026, 12, 6, 6, 30, tzinfo=london)
    # Across the clocks going forward (29 March 2026 in London): 7:00 the next morning is 23 hours away.
    spring = datetime(2026, 3, 28, 8, 0, tzinfo=london)
    assert (next_clock_time(spring, 7, 0).astimezone(UTC) - spring.astimezone(UTC)).total_seconds() == 22 * 3600
    # On a day of the week (Saturday 5 December 2026, 08:30): within the next seven days, today
    # included while the time is still to come.
    friday, saturday = 4, 5
    assert next_clock_time(morning, 9, 0, weekday=friday) == datetime(2026, 12, 11, 9, 0, tzinfo=london)
    assert next_clock_time(morning, 9, 0, weekday=saturday) == datetime(2026, 12, 5, 9, 0, tzinfo=london)
    assert next_clock_time(morning, 8, 0, weekday=saturday) == datetime(2026, 12, 12, 8, 0, tzinfo=london)
    assert next_clock_time(morning, 5, 0, twelve_hour=True, weekday=saturday) == datetime(
        2026, 12, 5, 17, 0, tzinfo=london
    )
    assert next_clock_time(morning, 5, 0, twelve_hour=True, weekday=friday) == datetime(
        2026, 12, 11, 5, 0, tzinfo=london
    )


# --- timers kept across a restart


class _Published:
    def __init__(self) -> None:
        self.events: list[events_pb2.Event] = []

    def publish(self, event: events_pb2.Event) -> None:
        self.events.append(event)

    async def flush(self, timeout: float = 5.0) -> bool:
        return True

    async def close(self) -> None:
        return None


async def test_pending_timers_are_written_down_and_forgotten_when_done(tmp_path: Path) -> None:
    store = TimerStore(str(tmp_path / "timers.db"))
    timers = Timers(None, store=store, wall_clock=lambda: 1000.0)
    tea = timers.start(300, "tea", "s1", "c1")
    soon = timers.start(0.05, "eggs", "s1")
    assert [(t.timer_id, t.label, t.due) for t in store.pending()] == [(soon, "eggs", 1000.05), (tea, "tea", 1300.0)]
    await asyncio.sleep(0.2)  # eggs goes off: forgotten
    assert [t.timer_id for t in store.pending()] == [tea]
    changed = timers.change(timers.of_session("s1")[0], 60)
    assert [(t.timer_id, t.due) for t in store.pending()] == [(tea, 1060.0)] and changed.timer_id == tea
    await timers.cancel_all()  # shutting down is not cancelling: still written down
    assert [t.label for t in store.pending()] == ["tea"]
    timers = Timers(None, store=store, wall_clock=lambda: 1000.0)
    assert timers.restore() == (1, 0)
    timers.cancel([tea])
    assert store.pending() == []
    await timers.cancel_all()
    store.close()


async def test_a_paused_timer_is_kept_paused_across_a_restart(tmp_path: Path) -> None:
    store = TimerStore(str(tmp_path / "timers.db"))
    wall = [1000.0]
    timers = Timers(None, store=store, wall_clock=lambda: wall[0])
    roast = timers.start(600, "roast", "s1", "c1")
    held = timers.pause(timers.of_session("s1")[0])
    [kept] = store.pending()
    assert kept.timer_id == roast and kept.paused_left is not None and 599 < kept.paused_left <= 600
    await timers.cancel_all()
    wall[0] += 7200  # down for two hours: a paused timer is not late, it waits
    timers = Timers(None, store=store, wall_clock=lambda: wall[0])
    assert timers.restore() == (1, 0)
    [restored] = timers.of_session("s1")
    assert restored.paused and restored.remaining(time.monotonic()) == held.paused_left
    running = timers.resume(restored)
    assert not running.paused and store.pending()[0].paused_left is None
    await timers.cancel_all()
    store.close()


def test_a_timers_file_from_before_pausing_is_read_and_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "timers.db"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE timers (timer_id TEXT PRIMARY KEY, label TEXT NOT NULL, session_id TEXT NOT NULL,"
            " correlation_id TEXT NOT NULL, seconds REAL NOT NULL, due REAL NOT NULL)"
        )
        old.execute("INSERT INTO timers VALUES ('t1', 'tea', 's1', '', 300, 1300)")
    old.close()
    store = TimerStore(str(path))
    assert store.pending() == [StoredTimer("t1", "tea", "s1", "", 300, 1300, None)]
    store.save(StoredTimer("t2", "eggs", "s1", "", 60, 1060, 42.0))
    assert [t.paused_left for t in store.pending()] == [42.0, None]
    store.close()


async def test_restored_timers_go_off_late_or_are_dropped_when_long_overdue(tmp_path: Path) -> None:
    store = TimerStore(str(tmp_path / "timers.db"))
    now = 50_000.0
    store.save(StoredTimer("later", "roast", "s1", "c1", 600, now + 60))
    store.save(StoredTimer("missed", "alarm", "s1", "c2", 3600, now - 600))  # due while Coda was down
    store.save(StoredTimer("stale", "tea", "s1", "", 300, now - LATE_LIMIT_SECONDS - 1))
    published = _Published()
    timers = Timers(published, store=store, wall_clock=lambda: now)
    assert timers.restore() == (2, 1)
    assert timers.restore() == (0, 0)  # nothing twice
    await asyncio.sleep(0.1)
    [fired] = published.events
    assert fired.tool_timer_fired.timer_id == "missed" and fired.tool_timer_fired.label == "alarm"
    assert fired.session_id == "s1" and fired.correlation_id == "c2"
    [later] = timers.of_session("s1")
    assert later.timer_id == "later" and 55 < later.remaining(time.monotonic()) <= 60
    assert [t.timer_id for t in store.pending()] == ["later"]
    await timers.cancel_all()
    store.close()


# --- calculator


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("2 ** 10", 1024),
        ("2 ^ 10", 1024),
        ("7 // 2", 3),
        ("7 % 4", 3),
        ("-3 + +4", 1),
        ("10 / 4", 2.5),
        ("sqrt(16)", 4.0),
        ("abs(-2.5)", 2.5),
        ("round(2.567, 2)", 2.57),
        ("round(2.5)", 3),  # halves away from zero, as people round
        ("round(-2.5)", -3),
        ("round(1250, -2)", 1300),
        ("round(2.675, 2)", 2.68),
        ("log(8, 2)", 3.0),
        ("floor(2.7) + ceil(2.1)", 5),
        ("6 \u00d7 7", 42),
        ("2 ** -1", 0.5),
    ],
)
def test_calculator_values(expression: str, value: float) -> None:
    assert evaluate(expression) == pytest.approx(value)


def test_calculator_constants_and_trig() -> None:
    assert evaluate("pi") == pytest.approx(math.pi)
    assert evaluate("e") == pytest.approx(math.e)
    assert evaluate("sin(pi / 2) + cos(0)") == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("1 / 0", "division by zero"),
        ("5 // 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("9 ** 9 ** 9", "too large"),
        ("10.0 ** 100000", "exponent is too large"),
        ("exp(1000)", "too large"),
        ("sqrt(-1)", "math domain error"),
        ("__import__('os')", "unknown function"),
        ("x + 1", "unknown name"),
        ("'a' * 3", "only numbers"),
        ("True + 1", "only numbers"),
        ("[1, 2]", "not allowed"),
        ("1 if 1 else 2", "not allowed"),
        ("(1).real", "not allowed"),
        ("1 << 2", "not allowed"),
        ("sqrt(1, 2)", "takes 1 argument"),
        ("round(1.5, ndigits=1)", "keyword"),
        ("1 +", "not a valid expression"),
        ("", "empty"),
        ("1" * (MAX_EXPRESSION_CHARS + 1), "too long"),
        ("(" * 240 + "1" + ")" * 240, "not a valid expression"),
        ("1e400 - 1e400", "not a finite number"),
        ("(-8) ** 0.5", "not a real number"),
    ],
)
def test_calculator_refuses_cleanly(expression: str, words: str) -> None:
    with pytest.raises(CalculationError, match=words):
        evaluate(expression)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_calculator_never_raises_anything_but_a_clean_error(text: str) -> None:
    try:
        value = evaluate(text)
    except CalculationError as exc:
        assert str(exc)
    else:
        assert isinstance(value, int | float) and not isinstance(value, bool)
        json.dumps(value, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[0-9+\-*/%^().e ]{1,40}", fullmatch=True))
def test_calculator_never_raises_on_arithmetic_looking_text(text: str) -> None:
    with contextlib.suppress(CalculationError):
        evaluate(text)


def _arithmetic() -> st.SearchStrategy[tuple[str, int]]:
    leaves = st.integers(min_value=0, max_value=1000).map(lambda n: (str(n), n))

    def combine(children: st.SearchStrategy[tuple[str, int]]) -> st.SearchStrategy[tuple[str, int]]:
        def apply(op: str, left: tuple[str, int], right: tuple[str, int]) -> tuple[str, int]:
            value = {"+": left[1] + right[1], "-": left[1] - right[1], "*": left[1] * right[1]}[op]
            return f"({left[0]} {op} {right[0]})", value

        negate = children.map(lambda c: (f"-{c[0]}", -c[1]))
        return st.one_of(st.builds(apply, st.sampled_from("+-*"), children, children), negate)

    return st.recursive(leaves, combine, max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(_arithmetic())
def test_calculator_is_exact_on_generated_integer_arithmetic(case: tuple[str, int]) -> None:
    expression, expected = case
    assert evaluate(expression) == expected


# --- time zones


@pytest.mark.parametrize(
    ("asked", "zone"),
    [
        ("Europe/Paris", "Europe/Paris"),
        ("europe/paris", "Europe/Paris"),
        ("America/New York", "America/New_York"),
        ("Tokyo", "Asia/Tokyo"),
        ("new york", "America/New_York"),
        ("San Francisco", "America/Los_Angeles"),
        ("mumbai", "Asia/Kolkata"),
        ("Beijing", "Asia/Shanghai"),
        ("UTC", "UTC"),
        ("gmt", "UTC"),
        ("  Buenos Aires ", "America/Argentina/Buenos_Aires"),
    ],
)
def test_zones_resolve_by_name_or_city(asked: str, zone: str) -> None:
    assert resolve_zone(asked) == zone


@pytest.mark.parametrize("asked", ["Atlantis", "Mars/Olympus", "12345"])
def test_unknown_zone_is_a_clear_error(asked: str) -> None:
    with pytest.raises(InvalidArguments, match="unknown time zone") as caught:
        resolve_zone(asked)
    assert caught.value.field == "/timezone"


def test_clock_reading_fields() -> None:
    moment = datetime(2024, 7, 1, 12, 30, tzinfo=UTC)
    reading = clock_reading(zoneinfo.ZoneInfo("Asia/Kolkata"), "Asia/Kolkata", moment)
    assert reading == {
        "iso": "2024-07-01T18:00:00+05:30",
        "time": "18:00",
        "date": "2024-07-01",
        "weekday": "Monday",
        "timezone": "Asia/Kolkata",
        "utc_offset": "+05:30",
    }
    winter = clock_reading(zoneinfo.ZoneInfo("America/New_York"), "x", datetime(2024, 1, 1, 3, 0, tzinfo=UTC))
    assert winter["utc_offset"] == "-05:00"
    assert winter["date"] == "2023-12-31"
    assert winter["weekday"] == "Sunday"


# --- plugin resolution


def test_tools_from_accepts_tools_lists_and_factories() -> None:
    a, b = make_tool("a"), make_tool("b")
    assert tools_from(a, "x") == [a]
    assert tools_from([a, b], "x") == [a, b]
    assert tools_from(lambda: [b], "x") == [b]
    assert tools_from(lambda: a, "x") == [a]
    for bad in (42, [a, 3], lambda: "nope"):
        with pytest.raises(PluginError):
            tools_from(bad, "x")


def test_config_plugins_load_and_broken_ones_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "coda_cfg_plugin.py").write_text(
        "from coda.tools import tool\n"
        "@tool(name='shout', description='Upper-case text.',"
        " parameters={'type': 'object', 'properties': {'text': {'type': 'string'}}, 'required': ['text']})\n"
        "def shout(text):\n    return text.upper()\n"
        "def factory():\n    return [shout]\n"
    )
    (tmp_path / "coda_cfg_broken.py").write_text("import a_module_that_does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = ToolRegistry()
    added = load_references(
        registry,
        [
            "coda_cfg_broken:tools",
            "coda_cfg_plugin:nope",
            "no-colon",
            "coda_cfg_plugin:factory",
            "coda_cfg_plugin:shout",  # the same tool again: a duplicate, skipped
        ],
    )
    assert added == ["shout"]
    assert registry.names() == ["shout"]
    assert resolve_reference("coda_cfg_plugin:shout").name == "shout"
    with pytest.raises(PluginError, match="must look like"):
        resolve_reference("coda_cfg_plugin")
    for name in ("coda_cfg_plugin", "coda_cfg_broken"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("memory", "entry", "outcome"),
    [
        ("my shopping list includes eggs and bread", "the eggs", (True, "my shopping list includes bread")),
        ("my shopping list includes eggs, milk and bread", "Milk", (True, "my shopping list includes eggs and bread")),
        ("My Shopping List includes some eggs.", "eggs", (True, None)),  # the last entry: the memory goes
        ("my shopping list includes eggs", "milk", (False, "my shopping list includes eggs")),
        ("my todo list includes eggs", "eggs", (False, "my todo list includes eggs")),  # another list
        ("my sister lives in Porto", "Porto", (False, "my sister lives in Porto")),  # not a list at all
    ],
)
def test_taking_an_entry_off_a_list(memory: str, entry: str, outcome: tuple[bool, str | None]) -> None:
    assert without_entry(memory, "shopping list", entry) == outcome


def test_list_entries_and_sentences() -> None:
    assert list_entries("my shopping list includes eggs, milk, and bread", "shopping list") == ["eggs", "milk", "bread"]
    assert list_sentence("shopping list", ["eggs", "milk", "bread"]) == "my shopping list includes eggs, milk and bread"
    assert bare_entry("  the Eggs. ") == "eggs" and bare_entry("the") == ""


def test_calendar_dates_are_the_next_such_day() -> None:
    today = datetime(2026, 12, 6).date()
    assert str(calendar_date("12-25", today)) == "2026-12-25"
    assert str(calendar_date("12-06", today)) == "2026-12-06"  # today itself
    assert str(calendar_date("01-01", today)) == "2027-01-01"
    assert str(calendar_date("02-29", today)) == "2028-02-29"  # the next year that has one
    assert str(calendar_date("2020-02-29", today)) == "2020-02-29"
    for impossible in ("02-30", "13-01", "2027-02-29"):
        with pytest.raises(InvalidArguments, match="not a calendar date"):
            calendar_date(impossible, today)
    # The last such day: "how many days since new year's day".
    assert str(calendar_date("01-01", today, past=True)) == "2026-01-01"
    assert str(calendar_date("12-06", today, past=True)) == "2026-12-06"  # today itself
    assert str(calendar_date("12-25", today, past=True)) == "2025-12-25"
    assert str(calendar_date("02-29", today, past=True)) == "2024-02-29"  # the last year that had one


def test_months_later_keeps_the_day_or_takes_the_months_last() -> None:
    assert months_later(date(2026, 12, 6), 1) == date(2027, 1, 6)
    assert months_later(date(2026, 1, 31), 1) == date(2026, 2, 28)
    assert months_later(date(2028, 1, 31), 1) == date(2028, 2, 29)
    assert months_later(date(2026, 3, 31), -1) == date(2026, 2, 28)
    assert months_later(date(2026, 12, 6), -12) == date(2025, 12, 6)
    assert months_later(date(2026, 5, 15), 18) == date(2027, 11, 15)


@pytest.mark.parametrize(
    ("said", "key"),
    [
        ("my locker code is 4471", ("my locker code", "is")),
        ("My wifi password is bluefish42", ("my wifi password", "is")),
        ("my favourite colour is green", ("my favourite colour", "is")),
        ("my sister's birthday is May 3rd", ("my sister's birthday", "is")),
        ("my dog is called Biscuit", ("my dog", "called")),
        ("my brother lives in Denver", ("my brother", "home")),
        ("my brother moved to Austin", ("my brother", "home")),  # the same key: it replaces the above
        ("I live in Lisbon", ("i", "home")),
        ("my wife works as a nurse", ("my wife", "work")),
        # Facts that add to what is known, never replace it:
        ("my car is blue", None),
        ("my dog is three years old", None),
        ("my shopping list includes eggs", None),
        ("I like jazz", None),
    ],
)
def test_which_facts_have_a_single_value(said: str, key: tuple[str, str] | None) -> None:
    assert fact_key(said) == key
