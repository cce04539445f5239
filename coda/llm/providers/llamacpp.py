"""A GGUF model run in this process by llama.cpp (xllamacpp's in-process server).

Loading (file checks, sha256, weights, a warm-up of the system prompt) happens once, in a worker
thread, so the event loop never waits on it. A generation runs `handle_chat_completions` in a worker
thread; its callback hands every chunk to the event loop and stops llama.cpp (by returning True)
as soon as the consumer closes the stream, so a cancel costs at most one more token.

Tool calls are constrained, not hoped for: with tools on offer the output must match a grammar
(LLGuidance) that allows either a plain-text answer (not starting with `{`) or exactly one JSON object
`{"name": <an offered tool>, "arguments": <valid against that tool's schema>}`. The tool signatures
go into the system message in the Hermes/Qwen convention small models are trained on.

Priority: on Linux the model's threads run `nice` steps below the rest of the process. A spoken
answer's first audio is synthesized while the model goes on generating the next sentences, and on
a small machine both want every core; the listener waits on the audio, not on tokens that are
spoken seconds later. The load thread lowers itself before it starts llama.cpp, whose threads
inherit its priority.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import secrets
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from coda.config import AssistantConfig, LlmProviderConfig
from coda.llm.models import ModelFileError, bundled, check_file, resolve
from coda.llm.types import (
    Finish,
    GenerationRequest,
    Message,
    Prefilled,
    ProviderError,
    StreamItem,
    TextDelta,
    Tool,
    ToolCallDelta,
    Usage,
)

log = logging.getLogger(__name__)

#: Low temperature and a fixed seed: a small model rambles when hot, and answers stay reproducible.
DEFAULT_TEMPERATURE = 0.2
SEED = 42
#: Penalty on tokens repeated within the last 128: 1.1 stops the loops and leaves answers natural.
REPEAT_PENALTY = 1.1
#: Cap of an answer when the request sets none, so a model that never says stop cannot run away.
DEFAULT_MAX_TOKENS = 1024
#: Budget of a tool call: the request's max_tokens is meant for spoken text, and a call cut short
#: is worthless, so a call may always take this many tokens (text is still held to the request's).
TOOL_CALL_TOKENS = 256
#: Greetings and small talk otherwise tempt a small model into calling some tool.
_TOOLS_NOTE = "Greetings and small talk get a short plain-text answer."
_FINISH_REASONS = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}


def tools_prompt(tools: tuple[Tool, ...]) -> str:
    """The tool signatures for the system message, in the Hermes convention of Qwen's chat template."""
    signatures = "\n".join(
        json.dumps(
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
            }
        )
        for t in tools
    )
    return (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{signatures}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>\n\n' + _TOOLS_NOTE
    )


def tools_grammar(tools: tuple[Tool, ...]) -> str:
    """LLGuidance lark grammar: one tool call as a bare JSON object, or text that cannot start one.

    Measured with Qwen2.5-Coder-0.5B: it writes calls as bare JSON (never its `<tool_call>` tags), so
    the grammar takes that form; text may not start with `{`, a backtick (a ```json fence), `<` or
    whitespace, which makes the first token decide between answer and call.
    """
    schema = {
        "oneOf": [
            {
                "type": "object",
                "properties": {"name": {"const": t.name}, "arguments": t.parameters or {"type": "object"}},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for t in tools
        ]
    }
    return (
        "%llguidance {}\n"
        "start: call | text\n"
        f"call: %json {json.dumps(schema)}\n"
        "text: TEXT\n"
        "TEXT: /[^{`<\\s](.|\\n)*/\n"
    )


#: A tool result is back: text only, and still not a bare JSON object.
TEXT_ONLY_GRAMMAR = "%llguidance {}\nstart: TEXT\nTEXT: /[^{`<\\s](.|\\n)*/\n"


def may_call_tools(request: GenerationRequest) -> bool:
    """Whether this generation may call a tool: tools are offered and none was called this turn.

    Measured with Qwen2.5-Coder-0.5B: given a tool's result, it calls a tool again (the same one, or
    any other) instead of answering from it, round after round until the assistant's limit. So once
    a result is back, the grammar allows text only; chains of several tools are left to larger
    models behind an OpenAI-compatible server.
    """
    if not request.tools:
        return False
    for message in reversed(request.messages):
        if message.role == "user":
            return True
        if message.role == "tool" or message.tool_calls:
            return False
    return True


def chat_messages(request: GenerationRequest) -> list[dict[str, str]]:
    """The conversation as plain chat-template messages; tool traffic is written out as text.

    Calls and results are rendered the way the model writes and reads them (bare JSON, Qwen's
    <tool_response>), so no chat template's own tool handling is needed.
    """
    out: list[dict[str, str]] = []
    for message in request.messages:
        out.append(_chat_message(message))
    if request.tools:
        section = tools_prompt(request.tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content'].rstrip()}\n\n{section}"}
        else:
            out.insert(0, {"role": "system", "content": section})
    return out


def _chat_message(message: Message) -> dict[str, str]:
    if message.role == "tool":
        return {"role": "user", "content": f"<tool_response>\n{message.content}\n</tool_response>"}
    if message.role == "assistant" and message.tool_calls:
        calls = [json.dumps({"name": c.name, "arguments": c.arguments}) for c in message.tool_calls]
        return {"role": "assistant", "content": "\n".join([message.content.strip(), *calls]).strip()}
    return {"role": message.role, "content": message.content}


#: The largest nice increment (Linux nice values run from -20 to 19).
MAX_NICE = 19


def lower_this_thread(steps: int) -> None:
    """Run the calling thread, and the threads it starts from now on, `steps` nice values below the
    process's main thread (again on the same thread: no further).

    Linux only: there a thread has a nice value of its own (setpriority with its thread id) and new
    threads inherit their creator's; elsewhere the same call would lower the whole process.
    Lowering needs no privilege; raising back would, which is why only dedicated threads do this."""
    if steps <= 0 or sys.platform != "linux":
        return
    tid = threading.get_native_id()
    try:
        target = min(MAX_NICE, os.getpriority(os.PRIO_PROCESS, os.getpid()) + steps)
        if os.getpriority(os.PRIO_PROCESS, tid) < target:
            os.setpriority(os.PRIO_PROCESS, tid, target)
    except OSError as exc:  # a sandbox that forbids it: only a lost speed-up
        log.warning("cannot lower the llm threads' priority: %s", exc)


@dataclass(frozen=True)
class _End:
    """The worker thread is done: `error` is what handle_chat_completions raised or answered instead."""

    error: BaseException | dict[str, Any] | None = None


class LlamaCppProvider:
    kind = "llamacpp"
    base_url = ""

    def __init__(self, config: LlmProviderConfig, warm_prompt: str | None = None) -> None:
        if not 0 <= config.nice <= MAX_NICE:
            raise ValueError(f"llm provider {config.name!r}: nice must be 0 to {MAX_NICE}, got {config.nice}")
        self.name = config.name
        self._config = config
        model = bundled(config.path)
        self.model = model.name if model is not None else resolve(config.path).name
        #: Evaluated at load so the first turn finds the system prompt's opening already in the cache.
        self._warm_prompt = AssistantConfig().persona if warm_prompt is None else warm_prompt
        self._server: Any = None
        self._prefilling = False
        self._loading: concurrent.futures.Future[None] | None = None
        self._state = threading.Lock()
        # Loading and generations block in native code; they get their own threads, never the loop's
        # default executor, so a long generation cannot starve unrelated to_thread work.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix=f"llamacpp-{self.name}"
        )

    @property
    def loaded(self) -> bool:
        return self._server is not None

    async def load(self) -> None:
        """Load the model once; concurrent and repeated calls share the one load (and its error)."""
        with self._state:
            if self._loading is None or self._loading.cancelled():
                self._loading = self._executor.submit(self._load_sync)
            loading = self._loading
        # shield: a caller giving up must not cancel the load the other callers wait for.
        await asyncio.shield(asyncio.wrap_future(loading))

    def _fail(self, message: str) -> ProviderError:
        return ProviderError(self.name, message, transient=False)

    def _load_sync(self) -> None:
        started = time.perf_counter()
        path = resolve(self._config.path)
        log.info("llm model loading", extra={"provider": self.name, "path": str(path)})
        try:
            path = check_file(self._config.path, self._config.sha256)
        except ModelFileError as exc:
            raise self._fail(str(exc)) from None
        except OSError as exc:
            raise self._fail(f"cannot read model file {path}: {exc}; check llm.providers.{self.name}.path") from None
        try:
            import xllamacpp
        except ImportError as exc:
            raise self._fail(f"llama.cpp bindings (xllamacpp) are not installed: {exc}; run `make run` again") from None
        checked = time.perf_counter()
        lower_this_thread(self._config.nice)
        threads = self._config.threads or os.cpu_count() or 1
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = self._config.context_tokens
        params.n_parallel = 1  # one slot: on a CPU, parallel sequences only split the same cores
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.sampling.seed = SEED
        params.sampling.temp = DEFAULT_TEMPERATURE
        params.cache_prompt = True
        params.verbosity = -1  # llama.cpp's own progress chatter on stderr; failures still raise
        # The in-process server also listens on a loopback HTTP port; a random key keeps other
        # local processes out (calls from Python bypass it).
        params.api_keys = [secrets.token_urlsafe(24)]
        try:
            server = xllamacpp.Server(params)
        except Exception as exc:  # llama.cpp reports a bad file only as "failed to init"
            raise self._fail(
                f"llama.cpp could not load {path} ({exc}); the file may be damaged or not a model llama.cpp "
                f"supports: check llm.providers.{self.name}.path or run `make run` again for the bundled model"
            ) from None
        loaded = time.perf_counter()
        if self._warm_prompt:
            warm = {
                "messages": [{"role": "system", "content": self._warm_prompt}, {"role": "user", "content": "hi"}],
                "max_tokens": 1,
                "cache_prompt": True,
            }
            try:
                server.handle_chat_completions(warm)
            except Exception as exc:  # only a lost speed-up
                log.warning("llm warm-up failed: %s", exc, extra={"provider": self.name})
        self._server = server
        log.info(
            "llm model loaded",
            extra={
                "provider": self.name,
                "path": str(path),
                "seconds": round(time.perf_counter() - started, 2),
                "check_seconds": round(checked - started, 2),
                "load_seconds": round(loaded - checked, 2),
                "warm_seconds": round(time.perf_counter() - loaded, 2),
                "threads": threads,
                "context_tokens": self._config.context_tokens,
            },
        )

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        limit = request.max_tokens or DEFAULT_MAX_TOKENS
        body: dict[str, Any] = {
            "messages": chat_messages(request),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": max(limit, TOOL_CALL_TOKENS) if request.tools else limit,
            "temperature": DEFAULT_TEMPERATURE if request.temperature is None else request.temperature,
            "seed": SEED,
            "cache_prompt": True,
            # Progress chunks arrive while the prompt is evaluated: a cancel is noticed then too.
            "return_progress": True,
        }
        if not request.tools:
            # A small model at low temperature falls into loops ("1 cup of paprika, 1 cup of paprika...").
            # Not with tools: JSON repeats its quotes and braces by nature, and the penalty turned
            # tool calls into text.
            body["repeat_penalty"] = REPEAT_PENALTY
            body["repeat_last_n"] = 128
        if may_call_tools(request):
            body["grammar"] = tools_grammar(request.tools)
        elif request.tools:
            body["grammar"] = TEXT_ONLY_GRAMMAR
        return body

    async def prefill(self, request: GenerationRequest) -> Prefilled:
        """Evaluate the prompt into the slot's cache; nothing generated. One at a time: while one runs
        another is skipped (Prefilled()), since a later generation would queue behind them all."""
        await self.load()
        if self._prefilling:
            return Prefilled()
        self._prefilling = True
        body = {"messages": chat_messages(request), "max_tokens": 0, "cache_prompt": True}
        server = self._server
        try:
            answer = await asyncio.get_running_loop().run_in_executor(
                self._executor, lambda: server.handle_chat_completions(body)
            )
        except Exception as exc:
            raise self._answer_error(exc) from None
        finally:
            self._prefilling = False
        if not isinstance(answer, dict) or answer.get("error"):
            raise self._answer_error(answer if isinstance(answer, dict) else RuntimeError(repr(answer)))
        usage = answer.get("usage") or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        evaluated = int((answer.get("timings") or {}).get("prompt_n") or max(0, prompt - cached))
        return Prefilled(prompt, cached, evaluated)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamItem]:
        await self.load()
        body = self._body(request)
        text_limit = request.max_tokens or DEFAULT_MAX_TOKENS
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | _End] = asyncio.Queue()
        stop = threading.Event()
        server = self._server

        def deliver(item: dict[str, Any] | _End) -> bool:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                stop.set()
            return not stop.is_set()

        def callback(chunk: dict[str, Any]) -> bool:
            # Returning True makes llama.cpp stop this generation after the current token.
            return stop.is_set() or not deliver(chunk)

        def run() -> None:
            if stop.is_set():  # cancelled while waiting for a thread
                deliver(_End())
                return
            try:
                answer = server.handle_chat_completions(body, callback)
            except Exception as exc:
                deliver(_End(exc))
                return
            deliver(_End(answer if isinstance(answer, dict) and answer.get("error") else None))

        self._executor.submit(run)
        mode = ""  # "text" or "call", decided by the first visible character
        pending = ""
        call: list[str] = []
        text_tokens = 0
        finish = ""
        usage: Usage | None = None
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        raise self._answer_error(item.error)
                    break
                if item.get("error"):
                    raise self._answer_error(item)
                if isinstance(item.get("usage"), dict):
                    u = item["usage"]
                    usage = Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))
                for choice in item.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if isinstance(content, str) and content:
                        if not mode:
                            pending += content
                            if not pending.strip():
                                continue
                            mode = "call" if "grammar" in body and pending.lstrip().startswith("{") else "text"
                            content, pending = pending, ""
                        if mode == "call":
                            call.append(content)
                            continue
                        yield TextDelta(content)
                        text_tokens += 1
                        if text_tokens >= text_limit:
                            finish = "length"
                            stop.set()
                            break
                    reason = choice.get("finish_reason")
                    if reason:
                        finish = _FINISH_REASONS.get(reason, "stop")
                if stop.is_set():
                    break
        finally:
            # Also on cancellation (GeneratorExit, CancelledError): llama.cpp stops at its next token.
            stop.set()
        if mode == "call":
            yield self._tool_call("".join(call), request, finish)
            yield usage or Usage(0, 0)
            yield Finish("tool_calls")
            return
        if not finish:
            raise ProviderError(self.name, "llama.cpp ended the stream without a finish reason", transient=False)
        yield usage or Usage(0, text_tokens)
        yield Finish(finish)

    def _tool_call(self, text: str, request: GenerationRequest, finish: str) -> ToolCallDelta:
        if finish == "length":
            raise self._fail(f"tool call cut off after {TOOL_CALL_TOKENS} tokens: {text[:120]!r}")
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:  # the grammar rules this out; never pass on a broken call
            raise self._fail(f"tool call is not JSON ({exc.msg}): {text[:120]!r}") from None
        name = parsed.get("name") if isinstance(parsed, dict) else None
        arguments = parsed.get("arguments") if isinstance(parsed, dict) else None
        if name not in request.tool_names() or not isinstance(arguments, dict):
            raise self._fail(f"tool call does not name an offered tool with an arguments object: {text[:120]!r}")
        return ToolCallDelta(index=0, id=f"call_{uuid.uuid4().hex[:12]}", name=name, arguments=json.dumps(arguments))

    def _answer_error(self, error: BaseException | dict[str, Any]) -> ProviderError:
        if isinstance(error, BaseException):
            return self._fail(f"llama.cpp rejected the request: {error}")
        detail = error.get("error")
        message = detail.get("message") if isinstance(detail, dict) else detail
        return self._fail(f"llama.cpp error: {message or error}")
