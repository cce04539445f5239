"""`coda events tail | publish | describe`: watch and poke the bus from a terminal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import signal
import sys

import grpc
from google.protobuf import json_format

from coda.bus.client import subscribe
from coda.schema import FAMILIES, FIELD_BY_TYPE, event_type, new_event
from coda.v1 import bus_pb2, bus_pb2_grpc, events_pb2

PAYLOAD_PREVIEW_CHARS = 100


def register(subparsers: argparse._SubParsersAction) -> None:
    events = subparsers.add_parser("events", help="watch and publish bus events")
    commands = events.add_subparsers(dest="events_command", metavar="ACTION", required=True)

    tail = commands.add_parser("tail", help="print events as they arrive (Ctrl-C to stop)")
    tail.add_argument("--types", action="append", default=[], help="type pattern, e.g. 'llm.*' (repeatable)")
    tail.add_argument("--session", default="", help="only events of this session")
    tail.add_argument("--after-seq", type=int, default=None, help="replay retained events after this seq first")
    tail.add_argument("--json", action="store_true", help="canonical protobuf JSON, one event per line")
    tail.add_argument("--count", type=int, default=0, help="stop after this many events (0: never)")
    tail.add_argument("--address", help="bus address (default: endpoints.bus or grpc.address)")
    tail.set_defaults(func=run_tail)

    publish = commands.add_parser("publish", help="publish one event and print its seq")
    publish.add_argument("type", help="event type, e.g. system.error")
    publish.add_argument("--json", default="{}", help='payload fields as JSON, e.g. \'{"message": "hi"}\'')
    publish.add_argument("--session", default="", help="session id")
    publish.add_argument("--correlation", default="", help="correlation id")
    publish.add_argument("--source", default="cli", help="source name (default: cli)")
    publish.add_argument("--address", help="bus address (default: endpoints.bus or grpc.address)")
    publish.set_defaults(func=run_publish)

    describe = commands.add_parser("describe", help="print the log's position and limits")
    describe.add_argument("--json", action="store_true", help="as JSON")
    describe.add_argument("--address", help="bus address (default: endpoints.bus or grpc.address)")
    describe.set_defaults(func=run_describe)


def _address(args: argparse.Namespace) -> str:
    from coda.cli import load_config

    config = load_config(args)
    return args.address or config.endpoint("bus")


def _fail(message: str) -> int:
    print(f"coda events: {message}", file=sys.stderr)
    return 1


def _rpc_failure(exc: grpc.aio.AioRpcError, address: str) -> int:
    return _fail(f"{exc.code().name} from the bus at {address}: {exc.details()}")


# -- formatting ---------------------------------------------------------------------------------


def event_json(event: events_pb2.Event) -> str:
    return json.dumps(json_format.MessageToDict(event), separators=(",", ":"))


def event_line(event: events_pb2.Event) -> str:
    """One human-readable line: seq, local time, type, source, session, payload preview."""
    stamp = datetime.datetime.fromtimestamp(event.time.ToNanoseconds() / 1e9).strftime("%H:%M:%S.%f")[:-3]
    kind = event_type(event)
    payload = getattr(event, event.WhichOneof("payload") or "", None)
    preview = json.dumps(json_format.MessageToDict(payload), separators=(",", ":")) if payload is not None else ""
    if len(preview) > PAYLOAD_PREVIEW_CHARS:
        preview = preview[: PAYLOAD_PREVIEW_CHARS - 1] + "…"
    session = event.session_id or "-"
    return f"{event.seq:>8} {stamp} {kind:<28} {event.source:<10} {session:<14} {preview}"


# -- commands -----------------------------------------------------------------------------------


def run_tail(args: argparse.Namespace) -> int:
    address = _address(args)

    async def read(channel: grpc.aio.Channel) -> int:
        printed = 0
        try:
            # Closed here (the call cancelled) rather than by a finalizer after the loop is gone.
            async with contextlib.aclosing(  # type: ignore[type-var]
                subscribe(channel, args.types or ["*"], args.session, args.after_seq)
            ) as responses:
                async for response in responses:
                    if response.HasField("gap"):
                        gap = response.gap
                        print(
                            f"# gap: {gap.missed} events after seq {gap.requested_after_seq} are no longer "
                            f"retained; continuing from {gap.oldest_seq}",
                            file=sys.stderr,
                            flush=True,
                        )
                        continue
                    for event in response.batch.events:
                        print(event_json(event) if args.json else event_line(event), flush=True)
                        printed += 1
                        if args.count and printed >= args.count:
                            return 0
        except grpc.aio.AioRpcError as exc:
            return _rpc_failure(exc, address)
        return 0

    async def tail() -> int:
        # Ctrl-C sets an event instead of raising KeyboardInterrupt wherever the loop happens to be
        # (inside gRPC's call or channel code, whose finalizers then print a traceback at exit): the
        # subscription is cancelled and the channel closed before the process ends.
        loop = asyncio.get_running_loop()
        interrupted = asyncio.Event()
        loop.add_signal_handler(signal.SIGINT, interrupted.set)
        channel = grpc.aio.insecure_channel(address)
        reader = asyncio.create_task(read(channel))
        waiter = asyncio.create_task(interrupted.wait())
        try:
            await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, waiter):
                task.cancel()
            await asyncio.gather(reader, waiter, return_exceptions=True)
            await channel.close()
            loop.remove_signal_handler(signal.SIGINT)
        if interrupted.is_set() or reader.cancelled():
            return 130
        return reader.result()

    with contextlib.suppress(KeyboardInterrupt):  # a Ctrl-C before the loop took over
        return asyncio.run(tail())
    return 130


def build_event(type_name: str, payload_json: str, source: str, session: str, correlation: str) -> events_pb2.Event:
    """The event `coda events publish` sends; ValueError with a readable message when invalid."""
    field = FIELD_BY_TYPE.get(type_name)
    if field is None:
        family = type_name.split(".", 1)[0]
        known = [t for t in FIELD_BY_TYPE if t.startswith(family + ".")]
        hint = f"types of {family}.*: {', '.join(known)}" if known else f"families: {', '.join(FAMILIES)}"
        raise ValueError(f"unknown event type {type_name!r}; {hint}")
    payload_class = type(getattr(events_pb2.Event(), field))
    try:
        payload = json_format.Parse(payload_json, payload_class())
    except json_format.ParseError as exc:
        raise ValueError(f"payload of {type_name} ({payload_class.DESCRIPTOR.full_name}): {exc}") from None
    return new_event(source, payload, session_id=session, correlation_id=correlation)


def run_publish(args: argparse.Namespace) -> int:
    address = _address(args)
    try:
        event = build_event(args.type, args.json, args.source, args.session, args.correlation)
    except ValueError as exc:
        return _fail(str(exc))

    async def publish() -> int:
        async with grpc.aio.insecure_channel(address) as channel:
            call = bus_pb2_grpc.EventBusStub(channel).Publish()
            try:
                await call.write(bus_pb2.PublishRequest(events=[event]))
                await call.done_writing()
                response = await call.read()
            except grpc.aio.AioRpcError as exc:
                return _rpc_failure(exc, address)
            if not isinstance(response, bus_pb2.PublishResponse):  # grpc.aio.EOF
                return _fail("the bus ended the stream without an answer")
            ack = response.acks[0]
            if ack.error:
                return _fail(f"rejected: {ack.error}")
            print(ack.seq)
            return 0

    return asyncio.run(publish())


def run_describe(args: argparse.Namespace) -> int:
    address = _address(args)

    async def describe() -> int:
        async with grpc.aio.insecure_channel(address) as channel:
            try:
                info = await bus_pb2_grpc.EventBusStub(channel).Describe(bus_pb2.DescribeRequest())
            except grpc.aio.AioRpcError as exc:
                return _rpc_failure(exc, address)
        if args.json:
            print(json.dumps(json_format.MessageToDict(info, always_print_fields_with_no_presence=True)))
        else:
            for field in info.DESCRIPTOR.fields:
                print(f"{field.name:16} {getattr(info, field.name)}")
        return 0

    return asyncio.run(describe())
