"""The Assistant gRPC service: moves Converse messages between the network and `Conversation`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import grpc

from coda.assistant.announcements import Attached
from coda.assistant.conversation import ClientError, Conversation
from coda.assistant.ports import EngineError, Engines
from coda.assistant.sessions import SessionStore
from coda.assistant.turn import ToolCatalog
from coda.bus.publisher import EventPublisher
from coda.config import AssistantConfig
from coda.runtime.refusal import refuse
from coda.v1 import assistant_pb2, assistant_pb2_grpc

log = logging.getLogger(__name__)

_END = object()
LIST_LIMIT_DEFAULT = 50
LIST_LIMIT_MAX = 1000


class AssistantServicer(assistant_pb2_grpc.AssistantServicer):
    def __init__(self, config: AssistantConfig, engines: Engines, publisher: Callable[[], EventPublisher]) -> None:
        self._config = config
        self._store: SessionStore | None = None
        self._engines = engines
        #: The host sets its publisher after creating the components, hence a getter.
        self._publisher = publisher
        self._tools = ToolCatalog(engines, config.tools_cache_seconds)
        #: Turns still running, across streams (a turn outlives a dropped stream while it saves itself).
        self._turns: set[asyncio.Future[None]] = set()
        #: The streams attached to each session, for timer events addressed to the session.
        self.attached = Attached()

    def attach_store(self, store: SessionStore) -> None:
        self._store = store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    async def _ready_store(self, context: grpc.aio.ServicerContext) -> SessionStore:
        if self._store is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the assistant is not started yet (or is stopping)")
        return self._store  # type: ignore[return-value]

    def _keep(self, task: asyncio.Future[None]) -> None:
        self._turns.add(task)
        task.add_done_callback(self._turns.discard)

    async def Converse(
        self, request_iterator: AsyncIterator[assistant_pb2.ConverseRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[assistant_pb2.ConverseResponse]:
        store = await self._ready_store(context)
        outbox: asyncio.Queue[object] = asyncio.Queue()
        conversation = Conversation(
            store=store,
            engines=self._engines,
            tools=self._tools,
            config=self._config,
            publisher=self._publisher(),
            send=outbox.put_nowait,
            spawn=self._keep,
        )
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None:
            return
        if first.WhichOneof("request") != "open":
            await refuse(
                context,
                requests,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the first Converse message must be `open` (SessionOpen), got `{first.WhichOneof('request')}`",
            )
        try:
            info = await conversation.open(first.open)
        except ClientError as exc:
            # A client sends open and its first text together: it must learn why it was refused.
            await refuse(context, requests, grpc.StatusCode[exc.code], exc.message)
        yield assistant_pb2.ConverseResponse(session=info)
        session_id = info.session_id
        self.attached.attach(session_id, conversation)

        async def pump() -> None:
            try:
                async for request in requests:
                    if not await conversation.handle(request):
                        return
                # The client said all it had to say: let the running answer finish, then end.
                await conversation.wait_idle()
            except Exception as exc:
                if not isinstance(exc, (grpc.aio.AioRpcError, asyncio.CancelledError)):
                    session_id = conversation.session.session_id if conversation.session else ""
                    log.exception("converse failed", extra={"session_id": session_id})
            finally:
                outbox.put_nowait(_END)

        reader = asyncio.create_task(pump())
        try:
            while (item := await outbox.get()) is not _END:
                yield item  # type: ignore[misc]
            # Whatever the pump's last step queued after _END is not lost: drain it.
            while not outbox.empty():
                item = outbox.get_nowait()
                if item is not _END:
                    yield item  # type: ignore[misc]
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self.attached.detach(session_id, conversation)
            conversation.detach()
            self._keep(asyncio.ensure_future(conversation.release_session()))

    async def GetSession(
        self, request: assistant_pb2.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> assistant_pb2.GetSessionResponse:
        if not request.session_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "session_id is required")
        session = (await self._ready_store(context)).get(request.session_id)
        if session is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no session {request.session_id!r}")
        try:
            history = await self._engines.memory.history(session.session_id, self._config.history_turns)
        except EngineError:
            history = list(session.recent)
        return assistant_pb2.GetSessionResponse(
            session=assistant_pb2.SessionInfo(
                session_id=session.session_id,
                user_id=session.user_id,
                settings=session.settings,
                history=history,
                resumed=session.turns > 0,
            )
        )

    async def ListSessions(
        self, request: assistant_pb2.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> assistant_pb2.ListSessionsResponse:
        limit = min(request.limit or LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)
        return assistant_pb2.ListSessionsResponse(
            sessions=[
                assistant_pb2.SessionSummary(
                    session_id=s.session_id, user_id=s.user_id, turns=s.turns, last_user_text=s.last_user_text
                )
                for s in (await self._ready_store(context)).list(request.user_id, limit)
            ]
        )

    async def drain(self, timeout: float) -> None:
        """Give running turns a moment to save themselves, then cancel the rest."""
        if self._turns:
            _, pending = await asyncio.wait(set(self._turns), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
