"""The bridge's pure cores, tested without sockets: codec, token bucket, coalescer, auth, admission, fan-out."""

from __future__ import annotations

import itertools
import json
import time

import jwt
import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from bridge import codec
from bridge.assistant import SessionRefused, implicit_open, principal_open
from bridge.auth import Authenticator, HandshakeRefused, OriginPolicy, Principal, bearer_token
from bridge.batching import COST_SHARE, Coalescer
from bridge.codec import JSON_PROTOCOL, PROTO_PROTOCOL, EncodedEvent, ErrorCode, FrameError
from bridge.fanout import FanOut, FilterError, compile_filter, select
from bridge.health import ComponentStates
from bridge.limits import ConnectionAdmission, DropNotices
from bridge.metrics import BridgeMetrics
from bridge.upstream import Backoff
from coda.runtime.ratelimit import TokenBucket
from coda.schema import new_event
from coda.v1 import assistant_pb2, bridge_pb2, events_pb2

# --- codec


def test_decode_text_accepts_canonical_json() -> None:
    frame = codec.decode_text('{"id":"a","subscribe":{"types":["llm.*"],"sessionId":"s","afterSeq":"7"}}')
    assert frame.id == "a"
    assert list(frame.subscribe.types) == ["llm.*"]
    assert frame.subscribe.session_id == "s"
    assert frame.subscribe.after_seq == 7


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{bad", ErrorCode.ERROR_CODE_MALFORMED_FRAME),
        ("[1,2]", ErrorCode.ERROR_CODE_MALFORMED_FRAME),
        ('{"ping":{"nonce":"x"}}', ErrorCode.ERROR_CODE_MALFORMED_FRAME),
        ('{"subscribe":{"types":"llm.*"}}', ErrorCode.ERROR_CODE_MALFORMED_FRAME),
        ('{"subscribe":{"colour":1}}', ErrorCode.ERROR_CODE_MALFORMED_FRAME),
        ('{"teleport":{}}', ErrorCode.ERROR_CODE_UNKNOWN_FRAME_TYPE),
        ("{}", ErrorCode.ERROR_CODE_UNKNOWN_FRAME_TYPE),
        ('{"id":"only-an-id"}', ErrorCode.ERROR_CODE_UNKNOWN_FRAME_TYPE),
        ("[" * 10_000 + "]" * 10_000, ErrorCode.ERROR_CODE_MALFORMED_FRAME),
        ('{"converse":' + '{"a":' * 5_000 + "1" + "}" * 5_001, ErrorCode.ERROR_CODE_MALFORMED_FRAME),
        ('{"id":"\\ud800","ping":{}}', ErrorCode.ERROR_CODE_MALFORMED_FRAME),
        ('{"converse":{"text":{"text":"\\udfff"}}}', ErrorCode.ERROR_CODE_MALFORMED_FRAME),
    ],
)
def test_decode_text_errors_have_precise_codes(text: str, code: int) -> None:
    with pytest.raises(FrameError) as caught:
        codec.decode_text(text)
    assert caught.value.code == code
    assert caught.value.message


def test_decode_binary_refuses_unknown_fields_at_any_depth() -> None:
    frame = bridge_pb2.ClientFrame(id="p1", ping=bridge_pb2.PingFrame(nonce=3)).SerializeToString()
    assert codec.decode_binary(frame).ping.nonce == 3
    unknown = b"\xf8\x07\x01"  # field 127, varint 1: from a newer schema, or garbage
    with pytest.raises(FrameError) as caught:
        codec.decode_binary(frame + unknown)
    assert caught.value.code == ErrorCode.ERROR_CODE_MALFORMED_FRAME and "#127" in caught.value.message
    ping = bridge_pb2.PingFrame(nonce=3).SerializeToString() + unknown
    nested = bridge_pb2.ClientFrame(id="p2").SerializeToString() + b"\x2a" + bytes([len(ping)]) + ping
    with pytest.raises(FrameError) as caught:
        codec.decode_binary(nested)
    assert "ClientFrame.ping #127" in caught.value.message


def test_a_surrogate_pair_escape_is_a_character_not_an_error() -> None:
    assert codec.decode_text('{"id":"\\ud83d\\ude00","ping":{}}').id == "\U0001f600"


def test_decode_text_error_names_the_frame_id() -> None:
    with pytest.raises(FrameError) as caught:
        codec.decode_text('{"id":"f9","ping":{"nonce":"not-a-number"}}')
    assert caught.value.client_frame_id == "f9"
    assert caught.value.to_frame().error.client_frame_id == "f9"


def test_frame_size_limit_counts_utf8_bytes() -> None:
    text = json.dumps({"ping": {"nonce": "1"}, "id": "é" * 100})
    codec.decode_text(text, max_bytes=len(text.encode()))
    with pytest.raises(FrameError) as caught:
        codec.decode_text(text, max_bytes=len(text.encode()) - 1)
    assert caught.value.code == ErrorCode.ERROR_CODE_FRAME_TOO_LARGE
    with pytest.raises(FrameError) as caught:
        codec.decode_binary(b"\x00" * 11, max_bytes=10)
    assert caught.value.code == ErrorCode.ERROR_CODE_FRAME_TOO_LARGE


def test_decode_binary() -> None:
    data = bridge_pb2.ClientFrame(id="p", ping=bridge_pb2.PingFrame(nonce=3)).SerializeToString()
    assert codec.decode_binary(data).ping.nonce == 3
    with pytest.raises(FrameError) as caught:
        codec.decode_binary(b"\xff\xff\xff\xff")
    assert caught.value.code == ErrorCode.ERROR_CODE_MALFORMED_FRAME
    with pytest.raises(FrameError) as caught:
        codec.decode_binary(b"")
    assert caught.value.code == ErrorCode.ERROR_CODE_UNKNOWN_FRAME_TYPE
    # A frame type from a newer schema (unknown field 15) is an unknown frame type, not garbage.
    with pytest.raises(FrameError) as caught:
        codec.decode_binary(b"\x7a\x00")
    assert caught.value.code == ErrorCode.ERROR_CODE_UNKNOWN_FRAME_TYPE


def _event(seq: int, text: str = "x", session: str = "") -> events_pb2.Event:
    event = new_event("llm", events_pb2.LlmToken(text=text), session_id=session)
    event.seq = seq
    return event


@given(st.lists(st.tuples(st.text(max_size=40), st.text(max_size=5)), min_size=1, max_size=20))
def test_events_frame_equals_encoding_the_whole_frame(items: list[tuple[str, str]]) -> None:
    events = [_event(i + 1, text, session) for i, (text, session) in enumerate(items)]
    whole = bridge_pb2.ServerFrame(events=events_pb2.EventBatch(events=events))
    encoded = [EncodedEvent.of(e) for e in events]
    assert codec.events_frame(encoded, PROTO_PROTOCOL) == whole.SerializeToString()
    assert json.loads(codec.events_frame(encoded, JSON_PROTOCOL)) == json_format.MessageToDict(whole)
    parsed = bridge_pb2.ServerFrame()
    json_format.Parse(codec.events_frame(encoded, JSON_PROTOCOL), parsed)
    assert parsed == whole


@given(st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=6))
def test_merged_events_frames_carry_all_events_in_order(sizes: list[int]) -> None:
    seq = 0
    groups = []
    for size in sizes:
        groups.append([EncodedEvent.of(_event(seq + i + 1, text=f"e{seq + i}")) for i in range(size)])
        seq += size
    everything = [e.event for group in groups for e in group]
    whole = bridge_pb2.ServerFrame(events=events_pb2.EventBatch(events=everything))
    for protocol in (PROTO_PROTOCOL, JSON_PROTOCOL):
        merged = codec.merge_events_frames([codec.events_frame(g, protocol) for g in groups])
        parsed = bridge_pb2.ServerFrame()
        if isinstance(merged, bytes):
            parsed.ParseFromString(merged)
        else:
            json_format.Parse(merged, parsed)
        assert parsed == whole


def test_encode_server_frame_both_protocols() -> None:
    frame = bridge_pb2.ServerFrame(pong=bridge_pb2.PongFrame(nonce=1, head_seq=9))
    assert json.loads(codec.encode(frame, JSON_PROTOCOL)) == {"pong": {"nonce": "1", "headSeq": "9"}}
    assert bridge_pb2.ServerFrame.FromString(codec.encode(frame, PROTO_PROTOCOL)) == frame


# --- token bucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_burst_then_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert [bucket.try_take() for _ in range(6)] == [True] * 5 + [False]
    assert bucket.retry_after() == pytest.approx(0.1)
    clock.now += 0.25
    assert [bucket.try_take() for _ in range(3)] == [True, True, False]
    clock.now += 100
    assert sum(bucket.try_take() for _ in range(50)) == 5  # never more than the burst
    assert not bucket.try_take(6)
    assert bucket.retry_after(6) == float("inf")


def test_token_bucket_zero_rate_is_unlimited() -> None:
    bucket = TokenBucket(rate=0, burst=0)
    assert all(bucket.try_take(1e9) for _ in range(100))


def test_drop_notices_report_the_first_drop_at_once_and_the_rest_once_per_window() -> None:
    notices = DropNotices(window=1.0)
    assert notices.due is None
    assert notices.drop(10.0) == 1  # after a quiet spell: reported at once
    assert [notices.drop(10.0 + i / 2000) for i in range(1, 1101)] == [0] * 1100
    assert notices.due == 11.0
    assert notices.flush(10.99) == 0  # the window is not over
    assert notices.flush(11.0) == 1100
    assert notices.due is None and notices.flush(50.0) == 0
    # Drops in the next window wait for its end; a drop after it is reported with them.
    assert notices.drop(11.5) == 0
    assert notices.drop(12.2) == 2


@given(st.lists(st.floats(min_value=0, max_value=0.3), min_size=1, max_size=300))
def test_drop_notices_counts_add_up_and_reports_are_a_window_apart(steps: list[float]) -> None:
    notices = DropNotices(window=1.0)
    now = 0.0
    reports: list[tuple[float, int]] = []
    for step in steps:
        now += step
        for count in (notices.flush(now), notices.drop(now)):  # the shell's timer, then a drop
            if count:
                reports.append((now, count))
    final = notices.flush(now + 1.0)
    if final:
        reports.append((now + 1.0, final))
    assert sum(count for _, count in reports) + notices.pending == len(steps)
    # (a + 1.0) - a may come out a hair under 1.0 in floating point
    assert all(b[0] - a[0] >= 1.0 - 1e-9 for a, b in itertools.pairwise(reports))


# --- coalescer


def test_coalescer_sends_a_lone_item_at_once_and_coalesces_what_follows() -> None:
    coalescer: Coalescer[int] = Coalescer(window=0.005, max_items=4)
    assert coalescer.add([1], now=1.0) is True  # nothing flushed for a window: no wait
    assert coalescer.take(1.0) == [1]
    assert coalescer.add([2], now=1.001) is False  # within a window of the last flush
    assert coalescer.deadline == pytest.approx(1.005)
    assert coalescer.add([3], now=1.003) is False
    assert coalescer.deadline == pytest.approx(1.005)
    assert not coalescer.due(1.004)
    assert coalescer.due(1.005)
    assert coalescer.take(1.005) == [2, 3]
    assert coalescer.deadline is None
    assert coalescer.add([4, 5, 6, 7], now=1.006) is True  # full: at once
    assert coalescer.take(1.006) == [4, 5, 6, 7]
    assert coalescer.add([8], now=2.0) is True  # quiet again
    assert Coalescer(window=0, max_items=10).add([1], now=0) is True


def test_coalescer_window_stretches_under_load_and_relaxes() -> None:
    coalescer: Coalescer[int] = Coalescer(window=0.010, max_items=100, max_window=0.050)
    coalescer.add([1], now=0.0)
    coalescer.take(0.0)
    coalescer.flushed(0.030)  # a flush of 30 ms: the quiet window after it grows with it
    assert coalescer.window == pytest.approx(min(0.050, COST_SHARE * 0.030))
    window = coalescer.window
    coalescer.add([2], now=0.001)
    assert coalescer.deadline == pytest.approx(0.030 + window)  # counted from the end of the flush
    coalescer.take(0.030 + window + 0.024)  # the timer fired 24 ms late: twice that, within the cap
    coalescer.flushed(0.001)
    assert coalescer.window == pytest.approx(max(window, 0.048))
    coalescer.add([3], now=1.0)
    coalescer.take(1.0)  # on time and light: relaxes by half per flush, not below the base
    coalescer.flushed(0.0001)
    assert coalescer.window == pytest.approx(0.024)
    for step in range(3):
        coalescer.add([step], now=2.0 + step)
        coalescer.take(2.0 + step)
        coalescer.flushed(0.0001)
    assert coalescer.window == pytest.approx(0.010)
    coalescer.flushed(1.0)  # never beyond the cap
    assert coalescer.window == pytest.approx(0.050)


# --- auth


SECRET = "s3cret-for-tests-only-32-bytes-long!"


def _token(**claims: object) -> str:
    return jwt.encode({"exp": int(time.time()) + 3600, "aud": "coda-bridge", **claims}, SECRET, algorithm="HS256")


def test_bearer_token_from_header_or_query() -> None:
    assert bearer_token("Bearer abc", "") == "abc"
    assert bearer_token("bearer  abc ", "token=zzz") == "abc"
    assert bearer_token(None, "x=1&token=zzz") == "zzz"
    assert bearer_token("Basic Zm9v", "") is None
    assert bearer_token(None, "") is None


def test_auth_off_admits_anyone() -> None:
    assert Authenticator().authenticate(None).method == "none"


def test_jwt_claims_give_user_and_session() -> None:
    auth = Authenticator(jwt_secret=SECRET, jwt_audience="coda-bridge")
    principal = auth.authenticate(_token(sub="ada", sid="sess-1"))
    assert (principal.user_id, principal.session_id, principal.method) == ("ada", "sess-1", "jwt")


@pytest.mark.parametrize(
    ("token", "label"),
    [
        (None, "missing_token"),
        ("not-a-jwt", "invalid_token"),
        (jwt.encode({"exp": int(time.time()) - 10, "aud": "coda-bridge"}, SECRET, algorithm="HS256"), "expired_token"),
        (jwt.encode({"exp": int(time.time()) + 3600, "aud": "other"}, SECRET, algorithm="HS256"), "invalid_token"),
        (jwt.encode({"aud": "coda-bridge"}, SECRET, algorithm="HS256"), "invalid_token"),
        (
            jwt.encode(
                {"exp": int(time.time()) + 3600, "aud": "coda-bridge"},
                "wrong-secret-32-bytes-long-xxxxx",
                algorithm="HS256",
            ),
            "invalid_token",
        ),
    ],
)
def test_jwt_refusals_are_401_with_a_reason(token: str | None, label: str) -> None:
    auth = Authenticator(jwt_secret=SECRET, jwt_audience="coda-bridge")
    with pytest.raises(HandshakeRefused) as caught:
        auth.authenticate(token)
    assert caught.value.status == 401
    assert caught.value.label == label
    assert caught.value.reason


def test_static_tokens_map_to_sessions() -> None:
    auth = Authenticator(static_tokens={"tok-a": "sess-a", "tok-admin": ""})
    assert auth.authenticate("tok-a").session_id == "sess-a"
    assert auth.authenticate("tok-admin").session_id == ""
    with pytest.raises(HandshakeRefused):
        auth.authenticate("tok-b")


def test_the_token_decides_the_session_and_the_user_of_an_open() -> None:
    Open = assistant_pb2.SessionOpen
    static = Principal(session_id="kitchen", method="static")
    # A static token opens its session with no user: memory stays in the session; no user can be claimed.
    assert principal_open(static, Open(user_id="ada")) == Open(session_id="kitchen")
    with pytest.raises(SessionRefused):
        principal_open(static, Open(session_id="hall"))
    ada = Principal(user_id="ada", session_id="s-ada", method="jwt")
    assert principal_open(ada, Open(user_id="bob")) == Open(session_id="s-ada", user_id="ada")
    # A JWT with a user and no session: the user is the token's, the session the client's choice.
    roaming = Principal(user_id="ada", method="jwt")
    assert principal_open(roaming, Open(session_id="s-1", user_id="bob")) == Open(session_id="s-1", user_id="ada")
    # Auth off, or an operator token bound to nothing: the client names both.
    for trusted in (Principal(), Principal(method="static")):
        assert principal_open(trusted, Open(session_id="s-2", user_id="cy")) == Open(session_id="s-2", user_id="cy")
    assert implicit_open(static).open == Open(session_id="kitchen")
    assert implicit_open(Principal()).open == Open()  # a new session


def test_origin_policy() -> None:
    OriginPolicy([]).check("http://evil.example")
    policy = OriginPolicy(["http://127.0.0.1:8765/"])
    policy.check("http://127.0.0.1:8765")
    policy.check(None)
    with pytest.raises(HandshakeRefused) as caught:
        policy.check("http://evil.example")
    assert caught.value.status == 403
    with pytest.raises(HandshakeRefused):
        OriginPolicy(["http://a"], require_origin=True).check(None)


# --- admission


def test_connection_admission() -> None:
    admission = ConnectionAdmission(max_total=3, max_per_ip=2)
    assert admission.admit("1.1.1.1") is None
    assert admission.admit("1.1.1.1") is None
    assert admission.admit("1.1.1.1")[0] == "max_connections_per_ip"  # type: ignore[index]
    assert admission.admit("2.2.2.2") is None
    assert admission.admit("3.3.3.3")[0] == "max_connections"  # type: ignore[index]
    admission.release("1.1.1.1")
    assert admission.admit("3.3.3.3") is None
    admission.release("9.9.9.9")  # never admitted: no effect
    assert admission.total == 3


# --- fan-out


class Recorder:
    def __init__(self, protocol: str = PROTO_PROTOCOL) -> None:
        self.protocol = protocol
        self.frames: list[str | bytes] = []
        self.seqs: list[int] = []

    def offer(self, frame: str | bytes, last_seq: int, time_ns: int, count: int) -> bool:
        self.frames.append(frame)
        parsed = bridge_pb2.ServerFrame()
        if isinstance(frame, bytes):
            parsed.ParseFromString(frame)
        else:
            json_format.Parse(frame, parsed)
        seqs = [e.seq for e in parsed.events.events]
        assert (len(seqs), seqs[-1]) == (count, last_seq)
        assert time_ns == parsed.events.events[0].time.ToNanoseconds()
        self.seqs.extend(seqs)
        return self.protocol == PROTO_PROTOCOL  # as if JSON clients had to queue theirs


def test_fanout_encodes_once_per_group_and_protocol() -> None:
    events = [EncodedEvent.of(_event(1, session="s1")), EncodedEvent.of(_event(2, session="s2"))]
    fanout = FanOut(clock=lambda: events[0].time_ns + 3_000_000)
    llm = [Recorder() for _ in range(3)] + [Recorder(JSON_PROTOCOL) for _ in range(2)]
    for member in llm:
        fanout.join(member, compile_filter(["llm.*"], ""))
    session = Recorder()
    fanout.join(session, compile_filter([], "s1"))
    voice = Recorder()
    fanout.join(voice, compile_filter(["voice.*"], ""))
    fanout.dispatch(events)
    assert fanout.frames_encoded == 3  # llm/proto, llm/json, session s1/proto; nothing for voice
    assert all(m.seqs == [1, 2] for m in llm)
    assert all(m.frames[0] is llm[0].frames[0] for m in llm[:3])  # the same bytes object
    assert session.seqs == [1]
    assert voice.frames == []
    # Frames written at once are counted per group (3 llm/proto + 1 session); queued ones are not.
    stats = fanout.stats
    assert (stats.frames, stats.events) == (4, 3 * 2 + 1)
    assert stats.bytes == 3 * len(llm[0].frames[0]) + len(session.frames[0])
    assert stats.latency.counts[stats.latency.buckets.index(0.005)] == 4  # 3 ms after the oldest event
    fanout.leave(llm[0])
    fanout.leave(session)
    fanout.dispatch([EncodedEvent.of(_event(3, session="s1"))])
    assert llm[0].seqs == [1, 2]
    assert llm[1].seqs == [1, 2, 3]
    assert session.seqs == [1]
    assert fanout.groups == 2


def test_equivalent_filters_share_a_group() -> None:
    assert compile_filter(["llm.*"], "") == compile_filter(["llm.*", "llm.token"], "")
    with pytest.raises(FilterError):
        compile_filter(["nope.*"], "")


def test_backoff_doubles_to_the_cap_and_resets() -> None:
    backoff = Backoff(0.1, 1.0, rng=lambda: 1.0)
    assert [round(backoff.next_delay(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.1)


def test_delivery_stats_export_as_prometheus_counters_and_histogram() -> None:
    metrics = BridgeMetrics()
    metrics.delivery.sent(3, 100, 2, 0.005)  # on a bucket bound: counted in le="0.005"
    metrics.delivery.sent(1, 40, 1, 10.0)  # beyond the last bound: +Inf only
    metrics.delivery.sent(2, 10, 0, None)  # frames without events (hello, pong): no latency
    text = metrics.render().decode()
    assert "coda_bridge_frames_out_total 6.0" in text
    assert "coda_bridge_bytes_out_total 360.0" in text
    assert "coda_bridge_events_delivered_total 7.0" in text
    assert 'coda_bridge_publish_to_send_seconds_bucket{le="0.0025"} 0.0' in text
    assert 'coda_bridge_publish_to_send_seconds_bucket{le="0.005"} 3.0' in text
    assert 'coda_bridge_publish_to_send_seconds_bucket{le="5.0"} 3.0' in text
    assert 'coda_bridge_publish_to_send_seconds_bucket{le="+Inf"} 4.0' in text
    assert "coda_bridge_publish_to_send_seconds_count 4.0" in text
    assert "coda_bridge_publish_to_send_seconds_sum 10.015" in text


def test_events_after_trims_a_frame_in_both_subprotocols() -> None:
    events = [EncodedEvent.of(_event(seq)) for seq in (4, 5, 6)]
    for protocol in (JSON_PROTOCOL, PROTO_PROTOCOL):
        frame = codec.events_frame(events, protocol)
        trimmed = codec.events_after(frame, 4)
        assert trimmed is not None
        assert trimmed == (codec.events_frame(events[1:], protocol), 2, events[1].time_ns)
        assert codec.events_after(frame, 6) is None
        assert codec.events_after(frame, 0) == (frame, 3, events[0].time_ns)


def _state(seq: int, payload: object) -> EncodedEvent:
    event = new_event("coda", payload)  # type: ignore[arg-type]
    event.seq = seq
    return EncodedEvent.of(event)


def test_component_states_keep_the_newest_state_event_of_each_component() -> None:
    states = ComponentStates()
    started = _state(1, events_pb2.SystemStarted(components=["bus", "llm"]))
    old_health = _state(3, events_pb2.ComponentHealth(component="llm", latency_ms_p50=9))
    health = _state(7, events_pb2.ComponentHealth(component="llm", latency_ms_p50=4))
    breaker = _state(
        5, events_pb2.ComponentBreaker(component="llm", target="openai", state=events_pb2.BREAKER_STATE_OPEN)
    )
    degraded = _state(6, events_pb2.ComponentStatus(component="bus", state=events_pb2.COMPONENT_STATE_DEGRADED))
    token = _state(8, events_pb2.LlmToken(text="not state"))
    states.observe([started, health, breaker, token])
    states.observe([degraded])
    states.observe([old_health], from_log=True)  # older health, read late from the log, does not win
    assert [e.seq for e in states.snapshot()] == [1, 5, 6, 7]  # started still names llm
    assert [e.seq for e in states.snapshot(up_to_seq=5)] == [1, 5]
    stopping = _state(9, events_pb2.SystemStopping(reason="bye"))
    states.observe([stopping])
    assert states.snapshot()[-1] is stopping
    # A bus restarted without a durable log numbers from 1 again: what it says live is the newest.
    restarted = _state(1, events_pb2.ComponentHealth(component="llm", latency_ms_p50=1))
    states.observe([restarted])
    assert restarted in states.snapshot() and health not in states.snapshot()
    # Replayed in order, the snapshot matches a subscription's filter like any batch.
    assert [e.type for e in select(compile_filter(["component.health"], ""), states.snapshot())] == ["component.health"]
