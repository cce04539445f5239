"""The Tools service over real gRPC, hosted with the real bus: streams, limits, events, breaker."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import zoneinfo
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import make_config, running_host
from prometheus_client import REGISTRY
from tools_helpers import ExecuteStream, collect_events, of_type, tools_of

from coda.tools import ErrorCode, Tool, ToolContext, tool
from coda.tools.timezones import NIGHT_ENDS_HOUR
from coda.v1 import events_pb2, tools_pb2, tools_pb2_grpc

E = ErrorCode
SESSION = "session-1"
CORRELATION = "turn-7"


class Gate:
    """Test tools that wait for the test, fail on demand, or return big outputs."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.running = asyncio.Event()
        self.cleaned_up = asyncio.Event()
        self.failing = True

    def tools(self) -> list[Tool]:
        @tool(name="wait", parameters={"type": "object", "properties": {"tag": {"type": "string"}}})
        async def wait(ctx: ToolContext, tag: str = "") -> dict[str, str]:
            ctx.progress("waiting", 0.0)
            self.running.set()
            try:
                await self.release.wait()
            finally:
                self.cleaned_up.set()
            ctx.progress("released", 1.0)
            return {"tag": tag}

        @tool(name="forever")
        async def forever(ctx: ToolContext) -> None:
            ctx.progress("started")
            await asyncio.Event().wait()

        @tool(name="flaky")
        async def flaky() -> str:
            if self.failing:
                raise RuntimeError("backend exploded")
            return "fine"

        @tool(name="big", parameters={"type": "object", "properties": {"size": {"type": "integer"}}})
        def big(size: int) -> str:
            return "x" * size

        @tool(name="not_json")
        async def not_json() -> object:
            return object()

        return [wait, forever, flaky, big, not_json]


@pytest.fixture
def gate() -> Gate:
    return Gate()


async def start(tmp_path: Path, gate: Gate, **env: str):  # type: ignore[no-untyped-def]
    config = make_config(tmp_path, **env)
    host_cm = running_host(config, only="bus,tools")
    host = await host_cm.__aenter__()
    for extra in gate.tools():
        tools_of(host).registry.add(extra, origin="test")
    return host_cm, host


@pytest.fixture
async def host(tmp_path: Path, gate: Gate):  # type: ignore[no-untyped-def]
    host_cm, host = await start(tmp_path, gate)
    try:
        yield host
    finally:
        await host_cm.__aexit__(None, None, None)


@pytest.fixture
async def channel(host):  # type: ignore[no-untyped-def]
    async with grpc.aio.insecure_channel(host.address) as channel:
        yield channel


async def test_list_tools_offers_enabled_tools_with_schemas(channel: grpc.aio.Channel) -> None:
    response = await tools_pb2_grpc.ToolsStub(channel).ListTools(tools_pb2.ListToolsRequest())
    specs = {spec.name: spec for spec in response.tools}
    for name in ("get_time", "calculate", "remember", "recall", "set_timer", "system_status"):
        assert name in specs
        assert specs[name].description
    assert "shell" not in specs and "http_get" not in specs
    calculate = json.loads(specs["calculate"].parameters_json_schema)
    assert calculate["required"] == ["expression"]
    assert json.loads(specs["set_timer"].parameters_json_schema)["properties"]["seconds"]["exclusiveMinimum"] == 0


async def test_calculate_round_trip(channel: grpc.aio.Channel) -> None:
    stream = ExecuteStream(channel)
    stream.call("c1", "calculate", {"expression": "(2 + 3) * 4"})
    first = await stream.next()
    assert first[0] == "started" and first[1].call_id == "c1" and first[1].name == "calculate"
    kind, result = (await stream.until_final("c1"))["c1"]
    assert kind == "result"
    assert json.loads(result.result_json) == {"expression": "(2 + 3) * 4", "result": 20}
    assert result.duration_ms > 0
    stream.close()
    assert await stream.rpc.read() is grpc.aio.EOF


async def test_bad_calls_get_error_results_and_the_stream_goes_on(channel: grpc.aio.Channel) -> None:
    stream = ExecuteStream(channel)
    stream.call("bad-type", "calculate", {"expression": 5})
    stream.call("missing", "calculate", {})
    stream.call("extra", "calculate", {"expression": "1", "verbose": True})
    stream.call("unknown", "no_such_tool", {})
    stream.call("malformed", "calculate", '{"expression": ')
    stream.call("math", "calculate", {"expression": "1 / 0"})
    stream.call("zone", "get_time", {"timezone": "Atlantis"})
    stream.call("disabled", "shell", {"command": "true"})
    stream.call("", "calculate", {"expression": "1"})
    stream.send_raw(tools_pb2.ExecuteRequest())
    stream.call("good", "calculate", {"expression": "6 * 7"})
    finals = await stream.until_final(
        "bad-type", "missing", "extra", "unknown", "malformed", "math", "zone", "disabled", "good"
    )
    expected = {
        "bad-type": (E.TOOL_ERROR_CODE_INVALID_ARGUMENTS, "/expression"),
        "missing": (E.TOOL_ERROR_CODE_INVALID_ARGUMENTS, "/expression"),
        "extra": (E.TOOL_ERROR_CODE_INVALID_ARGUMENTS, "/verbose"),
        "unknown": (E.TOOL_ERROR_CODE_NOT_FOUND, ""),
        "malformed": (E.TOOL_ERROR_CODE_INVALID_ARGUMENTS, ""),
        "math": (E.TOOL_ERROR_CODE_INVALID_ARGUMENTS, "/expression"),
        "zone": (E.TOOL_ERROR_CODE_INVALID_ARGUMENTS, "/timezone"),
        "disabled": (E.TOOL_ERROR_CODE_DISABLED, ""),
    }
    for call_id, (code, field) in expected.items():
        kind, error = finals[call_id]
        assert kind == "error", call_id
        assert error.code == code, (call_id, error)
        assert error.field == field, (call_id, error)
        assert error.message, call_id
    assert "division by zero" in finals["math"][1].message
    assert "not valid JSON" in finals["malformed"][1].message
    assert finals["good"][0] == "result"
    assert json.loads(finals["good"][1].result_json)["result"] == 42
    nameless = [m for k, m in stream.received if k == "error" and m.call_id == ""]
    assert len(nameless) == 2 and {m.field for m in nameless} == {"/call_id", ""}
    # Every call's first message is its ToolCallStarted.
    for call_id in expected:
        assert stream.of(call_id)[0][0] == "started"
    stream.close()


async def test_concurrent_calls_interleave_and_match_by_call_id(channel: grpc.aio.Channel, gate: Gate) -> None:
    stream = ExecuteStream(channel)
    stream.call("slow", "wait", {"tag": "s"})
    await stream.until(lambda kind, msg: kind == "progress" and msg.call_id == "slow")
    stream.call("a", "calculate", {"expression": "1 + 1"})
    stream.call("b", "get_time", {"timezone": "Tokyo"})
    stream.call("slow", "calculate", {"expression": "2"})  # duplicate of a call in flight
    finals = await stream.until_final("a", "b")
    assert json.loads(finals["a"][1].result_json)["result"] == 2
    assert json.loads(finals["b"][1].result_json)["timezone"] == "Asia/Tokyo"
    _, duplicate = await stream.until(lambda kind, msg: kind == "error" and msg.call_id == "slow")
    assert duplicate.field == "/call_id" and "already in flight" in duplicate.message
    gate.release.set()
    await stream.until(lambda kind, msg: kind == "result" and msg.call_id == "slow")
    slow = stream.of("slow")
    assert [k for k, _ in slow] == ["started", "progress", "error", "progress", "result"]
    assert json.loads(slow[-1][1].result_json) == {"tag": "s"}
    # The slow call began first and ended last: the others were not held up by it.
    order = [m.call_id for k, m in stream.received if k == "result"]
    assert order == ["a", "b", "slow"]
    stream.close()


async def test_cancel_a_call_by_id(channel: grpc.aio.Channel, gate: Gate) -> None:
    stream = ExecuteStream(channel)
    stream.call("w", "wait")
    await gate.running.wait()
    stream.cancel("w")
    stream.cancel("not-running")  # ignored
    kind, error = (await stream.until_final("w"))["w"]
    assert kind == "error" and error.code == E.TOOL_ERROR_CODE_CANCELLED
    assert gate.cleaned_up.is_set()
    stream.call("after", "calculate", {"expression": "3"})
    assert (await stream.until_final("after"))["after"][0] == "result"
    stream.close()


async def test_cancel_right_after_the_call_still_answers(channel: grpc.aio.Channel) -> None:
    stream = ExecuteStream(channel)
    stream.call("quick", "forever")
    stream.cancel("quick")
    kind, error = (await stream.until_final("quick"))["quick"]
    assert kind == "error" and error.code == E.TOOL_ERROR_CODE_CANCELLED
    assert stream.of("quick")[0][0] == "started"
    stream.close()


async def test_requested_timeout(channel: grpc.aio.Channel) -> None:
    stream = ExecuteStream(channel)
    stream.call("t", "forever", timeout_ms=200)
    kind, error = (await stream.until_final("t"))["t"]
    assert kind == "error" and error.code == E.TOOL_ERROR_CODE_TIMEOUT
    assert "0.2s" in error.message
    stream.close()


async def test_configured_per_tool_timeout_and_output_cap(tmp_path: Path, gate: Gate) -> None:
    host_cm, host = await start(
        tmp_path, gate, CODA_TOOLS__TIMEOUTS='{"forever": 0.2}', CODA_TOOLS__OUTPUT_MAX_BYTES="1000"
    )
    try:
        async with grpc.aio.insecure_channel(host.address) as channel:
            stream = ExecuteStream(channel)
            stream.call("t", "forever")
            stream.call("small", "big", {"size": 900})
            stream.call("large", "big", {"size": 2000})
            stream.call("weird", "not_json")
            finals = await stream.until_final("t", "small", "large", "weird")
            assert finals["t"][1].code == E.TOOL_ERROR_CODE_TIMEOUT
            assert finals["small"][0] == "result" and len(json.loads(finals["small"][1].result_json)) == 900
            assert finals["large"][1].code == E.TOOL_ERROR_CODE_OUTPUT_TOO_LARGE
            assert "1000-byte cap" in finals["large"][1].message
            assert finals["weird"][1].code == E.TOOL_ERROR_CODE_FAILED
            assert "not JSON" in finals["weird"][1].message
            stream.close()
    finally:
        await host_cm.__aexit__(None, None, None)


async def test_every_call_is_published_with_its_ids(channel: grpc.aio.Channel, gate: Gate) -> None:
    gate.release.set()
    stream = ExecuteStream(channel)
    ids = {"session_id": SESSION, "correlation_id": CORRELATION}
    stream.call("ok", "wait", {"tag": "x"}, **ids)
    stream.call("bad", "calculate", {"expression": 1}, **ids)
    await stream.until_final("ok", "bad")
    stream.close()

    def complete(events: list[events_pb2.Event]) -> bool:
        return bool(of_type(events, "tool.result")) and bool(of_type(events, "tool.error"))

    events = await collect_events(channel, ["tool.*"], complete)
    for event in events:
        assert event.session_id == SESSION and event.correlation_id == CORRELATION and event.source == "tools"
    ok = [e for e in events if e.WhichOneof("payload") and getattr(e, e.WhichOneof("payload")).call_id == "ok"]
    assert [e.WhichOneof("payload") for e in ok] == [
        "tool_call_started",
        "tool_progress",
        "tool_progress",
        "tool_result",
    ]
    assert ok[1].tool_progress.message == "waiting"
    errors = of_type(events, "tool.error")
    assert errors[0].tool_error.call_id == "bad" and errors[0].tool_error.field == "/expression"


async def test_breaker_opens_after_repeated_failures_and_recovers(tmp_path: Path, gate: Gate) -> None:
    host_cm, host = await start(
        tmp_path, gate, CODA_TOOLS__BREAKER_FAIL_MAX="2", CODA_TOOLS__BREAKER_RESET_SECONDS="0.5"
    )
    try:
        async with grpc.aio.insecure_channel(host.address) as channel:
            stream = ExecuteStream(channel)
            stream.call("f1", "flaky")
            assert (await stream.until_final("f1"))["f1"][1].code == E.TOOL_ERROR_CODE_FAILED
            stream.call("f2", "flaky")
            failed = (await stream.until_final("f2"))["f2"][1]
            assert failed.code == E.TOOL_ERROR_CODE_FAILED and "backend exploded" in failed.message
            stream.call("f3", "flaky")
            refused = (await stream.until_final("f3"))["f3"][1]
            assert refused.code == E.TOOL_ERROR_CODE_UNAVAILABLE and "circuit breaker is open" in refused.message
            # Other tools are unaffected.
            stream.call("other", "calculate", {"expression": "1"})
            assert (await stream.until_final("other"))["other"][0] == "result"

            gate.failing = False
            await asyncio.sleep(0.7)
            stream.call("f4", "flaky")
            recovered = (await stream.until_final("f4"))["f4"]
            assert recovered[0] == "result" and json.loads(recovered[1].result_json) == "fine"
            stream.close()

            def closed_again(events: list[events_pb2.Event]) -> bool:
                return any(e.component_breaker.state == events_pb2.BREAKER_STATE_CLOSED for e in events)

            events = await collect_events(channel, ["component.breaker"], closed_again)
            changes = [(e.component_breaker.previous_state, e.component_breaker.state) for e in events]
            assert changes == [
                (events_pb2.BREAKER_STATE_CLOSED, events_pb2.BREAKER_STATE_OPEN),
                (events_pb2.BREAKER_STATE_OPEN, events_pb2.BREAKER_STATE_HALF_OPEN),
                (events_pb2.BREAKER_STATE_HALF_OPEN, events_pb2.BREAKER_STATE_CLOSED),
            ]
            assert {e.component_breaker.target for e in events} == {"tool:flaky"}
            assert events[0].component_breaker.component == "tools"
    finally:
        await host_cm.__aexit__(None, None, None)


async def test_invalid_arguments_do_not_trip_the_breaker(tmp_path: Path, gate: Gate) -> None:
    host_cm, host = await start(tmp_path, gate, CODA_TOOLS__BREAKER_FAIL_MAX="1")
    try:
        async with grpc.aio.insecure_channel(host.address) as channel:
            stream = ExecuteStream(channel)
            for n in range(3):
                stream.call(f"bad{n}", "calculate", {"expression": "1/0"})
            await stream.until_final("bad0", "bad1", "bad2")
            stream.call("good", "calculate", {"expression": "2"})
            assert (await stream.until_final("good"))["good"][0] == "result"
            stream.close()
    finally:
        await host_cm.__aexit__(None, None, None)


async def test_get_time_by_city_and_zone(channel: grpc.aio.Channel) -> None:
    stream = ExecuteStream(channel)
    stream.call("paris", "get_time", {"timezone": "paris"})
    stream.call("iana", "get_time", {"timezone": "America/Sao_Paulo"})
    stream.call("local", "get_time", {})
    finals = await stream.until_final("paris", "iana", "local")
    paris = json.loads(finals["paris"][1].result_json)
    assert paris["timezone"] == "Europe/Paris" and paris["utc_offset"] in ("+01:00", "+02:00")
    assert set(paris) == {"iso", "time", "date", "weekday", "timezone", "utc_offset"}
    assert json.loads(finals["iana"][1].result_json)["utc_offset"] == "-03:00"
    assert finals["local"][0] == "result"
    # Another day: "tomorrow" (days 1) and "next friday" (the coming one, never today).
    before = datetime.now(zoneinfo.ZoneInfo("Asia/Tokyo")).date()
    stream.call("tomorrow", "get_time", {"timezone": "Tokyo", "days": 1})
    stream.call("friday", "get_time", {"timezone": "Tokyo", "weekday": "friday"})
    stream.call("both", "get_time", {"days": 1, "weekday": "friday"})
    stream.call("funday", "get_time", {"weekday": "funday"})
    finals = await stream.until_final("tomorrow", "friday", "both", "funday")
    after = datetime.now(zoneinfo.ZoneInfo("Asia/Tokyo")).date()
    tomorrow = json.loads(finals["tomorrow"][1].result_json)
    assert tomorrow["days"] == 1 and tomorrow["date"] in {str(d + timedelta(days=1)) for d in (before, after)}
    friday = json.loads(finals["friday"][1].result_json)
    assert friday["weekday"] == "Friday" and 1 <= friday["days"] <= 7
    for call_id in ("both", "funday"):
        kind, error = finals[call_id]
        assert kind == "error" and error.code == events_pb2.TOOL_ERROR_CODE_INVALID_ARGUMENTS, (call_id, error)
    # A calendar date: its weekday and how many days away; the time difference between two places.
    today = datetime.now(zoneinfo.ZoneInfo("Asia/Tokyo")).date()
    stream.call("ny", "get_time", {"timezone": "Tokyo", "date": "01-01"})
    stream.call("past", "get_time", {"timezone": "Tokyo", "date": "2020-02-29"})
    stream.call("diff", "get_time", {"timezone": "Asia/Kolkata", "compared_with": "London"})
    stream.call("no-day", "get_time", {"date": "02-30"})
    stream.call("shape", "get_time", {"date": "25 December"})
    stream.call("two", "get_time", {"date": "12-25", "days": 3})
    stream.call("nowhere", "get_time", {"compared_with": "Atlantis"})
    finals = await stream.until_final("ny", "past", "diff", "no-day", "shape", "two", "nowhere")
    new_year = json.loads(finals["ny"][1].result_json)
    assert new_year["date"] == f"{today.year + 1}-01-01" or today.timetuple().tm_yday == 1
    assert new_year["days"] == (datetime.fromisoformat(new_year["date"]).date() - today).days
    past = json.loads(finals["past"][1].result_json)
    assert past["weekday"] == "Saturday" and past["days"] < 0
    diff = json.loads(finals["diff"][1].result_json)
    london = zoneinfo.ZoneInfo("Europe/London").utcoffset(datetime.now())  # type: ignore[arg-type]
    assert diff["compared_with"] == "Europe/London" and diff["hours_ahead"] == 5.5 - london.total_seconds() / 3600
    for call_id, field in (("no-day", "/date"), ("shape", "date"), ("two", ""), ("nowhere", "")):
        kind, error = finals[call_id]
        assert kind == "error" and error.code == events_pb2.TOOL_ERROR_CODE_INVALID_ARGUMENTS, (call_id, error)
        assert field in error.field or field in error.message, (call_id, error)
    # Minutes from now (or ago): "what time will it be in 45 minutes".
    began = datetime.now(UTC)
    stream.call("later", "get_time", {"timezone": "Tokyo", "minutes": 45})
    stream.call("ago", "get_time", {"minutes": -1440})
    stream.call("far", "get_time", {"minutes": 20000})
    stream.call("both-offsets", "get_time", {"minutes": 5, "days": 1})
    finals = await stream.until_final("later", "ago", "far", "both-offsets")
    later = json.loads(finals["later"][1].result_json)
    moment = datetime.fromisoformat(later["iso"])
    assert later["minutes"] == 45 and timedelta(minutes=44) < moment - began < timedelta(minutes=46)
    assert later["same_day"] == (moment.date() == began.astimezone(moment.tzinfo).date())
    assert json.loads(finals["ago"][1].result_json)["same_day"] is False
    for call_id, field in (("far", "/minutes"), ("both-offsets", "")):
        kind, error = finals[call_id]
        assert kind == "error" and error.code == events_pb2.TOOL_ERROR_CODE_INVALID_ARGUMENTS, (call_id, error)
        assert field in error.field or field in error.message, (call_id, error)
    # Calendar months away, the last such day ("since new year's day"), and a time of day elsewhere.
    today = datetime.now(zoneinfo.ZoneInfo("Asia/Tokyo")).date()
    stream.call("month", "get_time", {"timezone": "Tokyo", "months": 1})
    stream.call("since", "get_time", {"timezone": "Tokyo", "date": "01-01", "past": True})
    stream.call("at", "get_time", {"timezone": "Tokyo", "compared_with": "New York", "at": "09:00"})
    stream.call("past-alone", "get_time", {"past": True})
    stream.call("at-alone", "get_time", {"timezone": "Tokyo", "at": "09:00"})
    stream.call("months-and-days", "get_time", {"months": 1, "days": 1})
    stream.call("far-months", "get_time", {"months": 5000})
    finals = await stream.until_final("month", "since", "at", "past-alone", "at-alone", "months-and-days", "far-months")
    month = json.loads(finals["month"][1].result_json)
    assert month["months"] == 1 and 28 <= month["days"] <= 31
    assert int(month["date"][8:]) == today.day or int(month["date"][8:]) < today.day  # the 31st in a shorter month
    since = json.loads(finals["since"][1].result_json)
    assert since["date"] == f"{today.year}-01-01" and since["days"] == -(today.timetuple().tm_yday - 1)
    at = json.loads(finals["at"][1].result_json)
    assert at["other_time"] == "09:00" and at["at"] == "09:00" and at["compared_with"] == "America/New_York"
    assert at["time"] in ("23:00", "22:00") and at["days_apart"] == 0  # 14 hours ahead (13 in US summer time)
    for call_id, field in (("past-alone", ""), ("at-alone", ""), ("months-and-days", ""), ("far-months", "/months")):
        kind, error = finals[call_id]
        assert kind == "error" and error.code == events_pb2.TOOL_ERROR_CODE_INVALID_ARGUMENTS, (call_id, error)
        assert field in error.field or field in error.message, (call_id, error)
    stream.close()


async def test_set_timer_fires_an_event_on_the_bus(channel: grpc.aio.Channel) -> None:
    stream = ExecuteStream(channel)
    stream.call("timer", "set_timer", {"seconds": 0.2, "label": "tea"}, session_id=SESSION, correlation_id=CORRELATION)
    kind, result = (await stream.until_final("timer"))["timer"]
    assert kind == "result"
    body: dict[str, Any] = json.loads(result.result_json)
    assert body["timer_id"] and body["fires_at"] and body["label"] == "tea"
    stream.call("zero", "set_timer", {"seconds": 0})
    assert (await stream.until_final("zero"))["zero"][1].field == "/seconds"
    stream.close()
    events = await collect_events(channel, ["tool.timer_fired"], lambda events: bool(events))
    fired = events[0]
    assert fired.tool_timer_fired.timer_id == body["timer_id"]
    assert fired.tool_timer_fired.label == "tea"
    assert fired.tool_timer_fired.duration_seconds >= 0.2
    assert fired.session_id == SESSION and fired.correlation_id == CORRELATION


async def test_timers_are_listed_with_time_left_and_cancelled_per_session(channel: grpc.aio.Channel) -> None:
    stream = ExecuteStream(channel)
    stream.call("tea", "set_timer", {"seconds": 300, "label": "tea"}, session_id=SESSION)
    stream.call("pasta", "set_timer", {"seconds": 600, "label": "pasta"}, session_id=SESSION)
    stream.call("other", "set_timer", {"seconds": 60, "label": "eggs"}, session_id="s-other-session")
    await stream.until_final("tea", "pasta", "other")
    stream.call("list", "list_timers", {}, session_id=SESSION)
    listed = json.loads((await stream.until_final("list"))["list"][1].result_json)["timers"]
    # Only this session's timers, soonest first, with the time left on each.
    assert [t["label"] for t in listed] == ["tea", "pasta"]
    assert 295 < listed[0]["remaining_seconds"] <= 300 and listed[1]["seconds"] == 600
    stream.call("cancel", "cancel_timer", {"label": "TEA"}, session_id=SESSION)
    cancelled = json.loads((await stream.until_final("cancel"))["cancel"][1].result_json)["cancelled"]
    assert [t["label"] for t in cancelled] == ["tea"]
    stream.call("again", "list_timers", {}, session_id=SESSION)
    left = json.loads((await stream.until_final("again"))["again"][1].result_json)["timers"]
    assert [t["label"] for t in left] == ["pasta"]
    stream.call("bad", "list_timers", {"label": 5}, session_id=SESSION)
    assert (await stream.until_final("bad"))["bad"][1].field == "/label"
    stream.call("all", "cancel_timer", {}, session_id=SESSION)
    assert len(json.loads((await stream.until_final("all"))["all"][1].result_json)["cancelled"]) == 1
    stream.close()


async def test_an_alarm_at_a_time_of_day(tmp_path: Path, gate: Gate) -> None:
    host_cm, host = await start(tmp_path, gate, CODA_TOOLS__TIMEZONE="Asia/Tokyo")
    try:
        async with grpc.aio.insecure_channel(host.address) as channel:
            await _alarms(channel)
    finally:
        await host_cm.__aexit__(None, None, None)


async def _alarms(channel: grpc.aio.Channel) -> None:
    stream = ExecuteStream(channel)
    tokyo = datetime.now(zoneinfo.ZoneInfo("Asia/Tokyo"))
    soon = (tokyo + timedelta(minutes=2)).strftime("%H:%M")
    stream.call("soon", "set_timer", {"at": soon, "label": "alarm"}, session_id=SESSION)
    stream.call("tomorrow", "set_timer", {"at": soon, "tomorrow": True}, session_id=SESSION)
    finals = await stream.until_final("soon", "tomorrow")
    alarm = json.loads(finals["soon"][1].result_json)
    # Read on the configured zone's clock: at most 2 minutes away, fires_at in Tokyo's offset.
    assert alarm["at"] == soon and 60 < alarm["seconds"] <= 120 and alarm["fires_at"].endswith("+09:00")
    assert alarm["day"] in ("today", "tomorrow")  # "tomorrow" when Tokyo's midnight falls in between
    later = json.loads(finals["tomorrow"][1].result_json)
    if (tokyo + timedelta(minutes=2)).date() == tokyo.date() and tokyo.hour >= NIGHT_ENDS_HOUR:
        assert 86400 < later["seconds"] <= 86400 + 120 and later["at"] == soon
    else:  # two minutes from now is already tomorrow's date, or it is the small hours ("tomorrow" is today)
        assert later["seconds"] == pytest.approx(alarm["seconds"], abs=5)
    # On a day of the week: within the next seven days.
    in_three_days = tokyo + timedelta(days=3)
    day_name = in_three_days.strftime("%A").lower()
    stream.call("weekday", "set_timer", {"at": "09:00", "weekday": day_name, "label": "dentist"}, session_id=SESSION)
    on_day = json.loads((await stream.until_final("weekday"))["weekday"][1].result_json)
    assert on_day["day"] == in_three_days.strftime("%A") and on_day["fires_at"].startswith(str(in_three_days.date()))
    stream.call("drop-weekday", "cancel_timer", {"label": "dentist"}, session_id=SESSION)
    assert len(json.loads((await stream.until_final("drop-weekday"))["drop-weekday"][1].result_json)["cancelled"]) == 1
    for call_id, arguments, field in [
        ("hour", {"at": "25:00"}, "/at"),
        ("both", {"at": "07:00", "seconds": 5}, ""),
        ("alone", {"seconds": 5, "tomorrow": True}, ""),
        ("no-day", {"at": "07:00", "weekday": "funday"}, "/weekday"),
        ("two-days", {"at": "07:00", "weekday": "friday", "tomorrow": True}, ""),
        ("day-alone", {"seconds": 60, "weekday": "friday"}, ""),
    ]:
        stream.call(call_id, "set_timer", arguments, session_id=SESSION)
        kind, error = (await stream.until_final(call_id))[call_id]
        assert kind == "error" and error.code == events_pb2.TOOL_ERROR_CODE_INVALID_ARGUMENTS, (call_id, error)
        assert error.field == field, (call_id, error)
    # The alarm moved to another time of day: the same timer, on the same zone's clock.
    # Said without am or pm ("move it to 2:35"): the half of the day nearer the alarm's old time.
    moved_to = (tokyo + timedelta(minutes=3)).strftime("%H:%M")
    twelve = f"{int(moved_to[:2]) % 12}:{moved_to[3:]}"
    stream.call("move", "change_timer", {"label": "alarm", "at": twelve, "twelve_hour": True}, session_id=SESSION)
    [moved] = json.loads((await stream.until_final("move"))["move"][1].result_json)["changed"]
    assert moved["label"] == "alarm" and moved["at"] == moved_to and 120 < moved["remaining_seconds"] <= 180
    assert moved["timer_id"] == alarm["timer_id"] and moved["day"] in ("today", "tomorrow")
    for call_id, arguments, field in [
        ("two-ways", {"at": "07:00", "add_seconds": 60}, ""),
        ("half", {"twelve_hour": True, "seconds": 60}, ""),
        ("bad-hour", {"at": "7.30"}, "/at"),
    ]:
        stream.call(call_id, "change_timer", arguments, session_id=SESSION)
        kind, error = (await stream.until_final(call_id))[call_id]
        assert kind == "error" and error.code == events_pb2.TOOL_ERROR_CODE_INVALID_ARGUMENTS, (call_id, error)
        assert error.field == field, (call_id, error)
    stream.call("all", "cancel_timer", {}, session_id=SESSION)
    assert len(json.loads((await stream.until_final("all"))["all"][1].result_json)["cancelled"]) == 2
    stream.close()


async def test_a_pending_alarm_survives_a_restart(tmp_path: Path, gate: Gate) -> None:
    host_cm, host = await start(tmp_path, gate)
    try:
        async with grpc.aio.insecure_channel(host.address) as channel:
            stream = ExecuteStream(channel)
            stream.call("tea", "set_timer", {"seconds": 600, "label": "tea"}, session_id=SESSION)
            stream.call("gone", "set_timer", {"seconds": 900, "label": "gone"}, session_id=SESSION)
            await stream.until_final("tea", "gone")
            stream.call("cancel", "cancel_timer", {"label": "gone"}, session_id=SESSION)
            await stream.until_final("cancel")
            stream.close()
    finally:
        await host_cm.__aexit__(None, None, None)
    # A new process on the same files: the tea timer is set again, with the time it had left.
    host_cm, host = await start(tmp_path, gate)
    try:
        async with grpc.aio.insecure_channel(host.address) as channel:
            stream = ExecuteStream(channel)
            stream.call("list", "list_timers", {}, session_id=SESSION)
            [tea] = json.loads((await stream.until_final("list"))["list"][1].result_json)["timers"]
            assert tea["label"] == "tea" and 560 < tea["remaining_seconds"] <= 600
            stream.call("all", "cancel_timer", {}, session_id=SESSION)
            await stream.until_final("all")
            stream.close()
    finally:
        await host_cm.__aexit__(None, None, None)


async def test_a_timer_is_changed_in_place_and_fires_at_its_new_time(channel: grpc.aio.Channel) -> None:
    stream = ExecuteStream(channel)
    stream.call("tea", "set_timer", {"seconds": 300, "label": "tea"}, session_id=SESSION)
    stream.call("eggs", "set_timer", {"seconds": 600, "label": "eggs"}, session_id=SESSION)
    tea_id = json.loads((await stream.until_final("tea", "eggs"))["tea"][1].result_json)["timer_id"]
    # No label: the soonest timer. add_seconds adds to the time left; a negative one takes time off.
    stream.call("more", "change_timer", {"add_seconds": 120}, session_id=SESSION)
    changed = json.loads((await stream.until_final("more"))["more"][1].result_json)["changed"]
    assert [t["label"] for t in changed] == ["tea"] and changed[0]["timer_id"] == tea_id
    assert 415 < changed[0]["remaining_seconds"] <= 420
    stream.call("less", "change_timer", {"label": "EGGS", "add_seconds": -540}, session_id=SESSION)
    changed = json.loads((await stream.until_final("less"))["less"][1].result_json)["changed"]
    assert changed[0]["label"] == "eggs" and 55 < changed[0]["remaining_seconds"] <= 60
    # seconds sets the time left; the timer keeps its id and label and goes off at the new time.
    stream.call(
        "soon", "change_timer", {"label": "tea", "seconds": 0.2}, session_id=SESSION, correlation_id=CORRELATION
    )
    assert json.loads((await stream.until_final("soon"))["soon"][1].result_json)["changed"][0]["timer_id"] == tea_id
    events = await collect_events(channel, ["tool.timer_fired"], lambda events: bool(events))
    assert events[0].tool_timer_fired.timer_id == tea_id and events[0].tool_timer_fired.label == "tea"
    # The old schedule is gone: the list holds the eggs timer only, and tea does not fire twice.
    stream.call("list", "list_timers", {}, session_id=SESSION)
    assert [t["label"] for t in json.loads((await stream.until_final("list"))["list"][1].result_json)["timers"]] == [
        "eggs"
    ]
    stream.call("none", "change_timer", {"label": "roast", "seconds": 60}, session_id=SESSION)
    assert json.loads((await stream.until_final("none"))["none"][1].result_json) == {"changed": []}
    for call_id, arguments in [
        ("both", {"seconds": 60, "add_seconds": 60}),
        ("neither", {"label": "eggs"}),
        ("negative", {"seconds": -5}),
    ]:
        stream.call(call_id, "change_timer", arguments, session_id=SESSION)
        kind, error = (await stream.until_final(call_id))[call_id]
        assert kind == "error" and error.code == events_pb2.TOOL_ERROR_CODE_INVALID_ARGUMENTS, (call_id, error)
    stream.call("all", "cancel_timer", {}, session_id=SESSION)
    await stream.until_final("all")
    stream.close()


async def test_a_paused_timer_keeps_its_time_left_and_goes_off_after_it_resumes(channel: grpc.aio.Channel) -> None:
    session = "pause-session"
    stream = ExecuteStream(channel)

    async def run(call_id: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        stream.call(call_id, tool, arguments, session_id=session)
        kind, result = (await stream.until_final(call_id))[call_id]
        assert kind == "result", result
        body: dict[str, Any] = json.loads(result.result_json)
        return body

    tea_id = (await run("tea", "set_timer", {"seconds": 0.6, "label": "tea"}))["timer_id"]
    [held] = (await run("hold", "pause_timer", {}))["paused"]
    assert held["timer_id"] == tea_id and held["paused"] is True and 0.3 < held["remaining_seconds"] <= 0.6
    await asyncio.sleep(1.0)  # past the time it would have gone off
    [listed] = (await run("list", "list_timers", {}))["timers"]
    assert listed["paused"] is True and listed["remaining_seconds"] == held["remaining_seconds"]
    assert await run("again", "pause_timer", {}) == {"paused": []}  # nothing left running
    # A paused timer changed stays paused, with the new time left.
    [changed] = (await run("change", "change_timer", {"seconds": 0.3}))["changed"]
    assert changed["paused"] is True and changed["remaining_seconds"] == 0.3
    [resumed] = (await run("go", "resume_timer", {"label": "TEA"}))["resumed"]
    assert resumed["timer_id"] == tea_id and "paused" not in resumed and 0.2 < resumed["remaining_seconds"] <= 0.3
    events = await collect_events(
        channel, ["tool.timer_fired"], lambda seen: any(e.tool_timer_fired.timer_id == tea_id for e in seen)
    )
    [fired] = [e for e in events if e.tool_timer_fired.timer_id == tea_id]  # once, after the resume
    assert fired.session_id == session and fired.tool_timer_fired.label == "tea"
    assert await run("nothing", "resume_timer", {}) == {"resumed": []}
    assert await run("left", "list_timers", {}) == {"timers": []}
    stream.close()


async def test_convert_units_round_trip_and_bad_units(channel: grpc.aio.Channel) -> None:
    stream = ExecuteStream(channel)
    stream.call("miles", "convert_units", {"value": 5, "from_unit": "miles", "to_unit": "km"})
    stream.call("oven", "convert_units", {"value": 350, "from_unit": "°F", "to_unit": "celsius"})
    finals = await stream.until_final("miles", "oven")
    miles = json.loads(finals["miles"][1].result_json)
    assert miles["result"] == pytest.approx(8.04672) and miles["text"] == "5 miles is 8.05 kilometres"
    assert json.loads(finals["oven"][1].result_json)["text"] == "350 degrees Fahrenheit is 177 degrees Celsius"
    for call_id, arguments, field in [
        ("unknown", {"value": 1, "from_unit": "parsecs", "to_unit": "km"}, "/from_unit"),
        ("mismatch", {"value": 1, "from_unit": "kg", "to_unit": "km"}, "/to_unit"),
        ("cold", {"value": -300, "from_unit": "c", "to_unit": "f"}, "/value"),
        ("text", {"value": "five", "from_unit": "kg", "to_unit": "lb"}, "/value"),
    ]:
        stream.call(call_id, "convert_units", arguments)
        kind, error = (await stream.until_final(call_id))[call_id]
        assert kind == "error" and error.field == field, (call_id, error)
        assert error.code == events_pb2.TOOL_ERROR_CODE_INVALID_ARGUMENTS
    stream.close()


async def test_system_status_reports_components_and_bus(channel: grpc.aio.Channel) -> None:
    stream = ExecuteStream(channel)
    stream.call("s", "system_status", {})
    kind, result = (await stream.until_final("s"))["s"]
    assert kind == "result", result
    status = json.loads(result.result_json)
    assert status["components"]["bus"] == "SERVING"
    assert status["components"]["tools"] == "SERVING"
    assert status["components"]["voice"] == "NOT_HOSTED"
    assert status["bus"]["head_seq"] > 0 and status["bus"]["backend"] == "memory"
    stream.close()


async def test_stopping_the_service_cancels_running_calls(tmp_path: Path, gate: Gate) -> None:
    host_cm, host = await start(tmp_path, gate)
    async with grpc.aio.insecure_channel(host.address) as channel:
        stream = ExecuteStream(channel)
        stream.call("w", "wait")
        await gate.running.wait()
        await host_cm.__aexit__(None, None, None)
        kind, error = (await stream.until_final("w"))["w"]
        assert kind == "error" and error.code == E.TOOL_ERROR_CODE_CANCELLED
        assert "stopping" in error.message
        assert gate.cleaned_up.is_set()


async def test_a_client_that_goes_away_cancels_its_calls(channel: grpc.aio.Channel, gate: Gate) -> None:
    stream = ExecuteStream(channel)
    stream.call("w", "wait")
    await gate.running.wait()
    stream.rpc.cancel()
    await asyncio.wait_for(gate.cleaned_up.wait(), 10)


async def test_shell_and_http_get_when_enabled(tmp_path: Path, gate: Gate) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hello from loopback" if self.path == "/hello" else b"missing"
            self.send_response(200 if self.path == "/hello" else 404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    host_cm, host = await start(tmp_path, gate, CODA_TOOLS__SHELL_ENABLED="true", CODA_TOOLS__HTTP_ENABLED="true")
    try:
        async with grpc.aio.insecure_channel(host.address) as channel:
            listed = await tools_pb2_grpc.ToolsStub(channel).ListTools(tools_pb2.ListToolsRequest())
            assert {"shell", "http_get"} <= {spec.name for spec in listed.tools}
            stream = ExecuteStream(channel)
            stream.call("echo", "shell", {"command": "echo 'two words'"})
            stream.call("missing", "shell", {"command": "no-such-program-here --x"})
            stream.call("sleep", "shell", {"command": "sleep 30"}, timeout_ms=300)
            stream.call("page", "http_get", {"url": f"{base}/hello"})
            stream.call("absent", "http_get", {"url": f"{base}/nope", "max_bytes": 3})
            stream.call("scheme", "http_get", {"url": "file:///etc/passwd"})
            finals = await stream.until_final("echo", "missing", "sleep", "page", "absent", "scheme", timeout=20)
            echo = json.loads(finals["echo"][1].result_json)
            assert echo == {"exit_code": 0, "stdout": "two words\n", "stderr": "", "truncated": False}
            assert finals["missing"][1].code == E.TOOL_ERROR_CODE_INVALID_ARGUMENTS
            assert finals["missing"][1].field == "/command"
            assert finals["sleep"][1].code == E.TOOL_ERROR_CODE_TIMEOUT
            page = json.loads(finals["page"][1].result_json)
            assert page["status"] == 200 and page["body"] == "hello from loopback" and not page["truncated"]
            absent = json.loads(finals["absent"][1].result_json)
            assert absent["status"] == 404 and absent["body"] == "mis" and absent["truncated"]
            assert finals["scheme"][1].field == "/url"
            stream.close()
    finally:
        await host_cm.__aexit__(None, None, None)
        server.shutdown()
        server.server_close()


async def test_metrics_count_calls_by_tool_and_outcome(channel: grpc.aio.Channel) -> None:
    def count(outcome: str) -> float:
        value = REGISTRY.get_sample_value("coda_tool_calls_total", {"tool": "calculate", "outcome": outcome})
        return value or 0.0

    ok, invalid = count("ok"), count("invalid_arguments")
    stream = ExecuteStream(channel)
    stream.call("a", "calculate", {"expression": "1"})
    stream.call("b", "calculate", {"expression": "1/0"})
    await stream.until_final("a", "b")
    stream.close()
    assert count("ok") == ok + 1
    assert count("invalid_arguments") == invalid + 1
    assert REGISTRY.get_sample_value("coda_tool_call_duration_seconds_count", {"tool": "calculate"})
