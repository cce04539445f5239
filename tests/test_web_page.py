"""The web page in a real browser: headless Chromium (Debian's package) driven by Playwright, against
a real `coda serve` (all components) and a real `python -m bridge`, all on loopback.

One Coda and one bridge serve the whole module; each test gets a fresh browser. Screenshots go to
test-artifacts/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import subprocess
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from conftest import ROOT, Processes
from test_bridge_helpers import publisher

from coda.schema import new_event
from coda.v1 import events_pb2, voice_pb2, voice_pb2_grpc
from coda.voice.quality import word_error_rate

playwright_api = pytest.importorskip("playwright.async_api")

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"
SPOKEN = "set a timer for five minutes"  # a command: the default STT model is built from them

if not CHROMIUM.exists():
    pytest.skip("Chromium is not installed (make test installs Debian's chromium)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Stack:
    """Coda (all components) and the bridge as processes; the bridge can be killed and restarted."""

    processes: Processes
    coda_address: str
    bridge_port: int
    bridge: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.bridge_port}/"

    def start_bridge(self) -> None:
        env = {"CODA_BRIDGE__PORT": str(self.bridge_port), "CODA_BRIDGE__CODA_ADDRESS": self.coda_address}
        self.bridge, banner = self.processes.start(["-m", "bridge"], env=env, banner="coda bridge serving on")
        assert f":{self.bridge_port}/v1/ws" in banner, banner

    def kill_bridge(self) -> None:
        assert self.bridge is not None
        self.processes.stop(self.bridge, signal.SIGKILL)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("web")
    processes = Processes()
    try:
        env = {
            "CODA_BUS__PATH": str(tmp / "bus"),
            "CODA_MEMORY__PATH": str(tmp / "memory.db"),
            "CODA_ASSISTANT__SESSIONS_PATH": str(tmp / "sessions.db"),
            "CODA_TOOLS__TIMERS_PATH": str(tmp / "timers.db"),
            "CODA_GRPC__SHUTDOWN_GRACE_SECONDS": "1",
        }
        command = ["-m", "coda", "serve", "--address", "127.0.0.1:0", "--metrics-address", ""]
        _, banner = processes.start(command, env=env, banner="coda serving", timeout=90)
        address = re.search(r" on (\S+) ", banner).group(1)  # type: ignore[union-attr]
        stack = Stack(processes, address, free_port())
        stack.start_bridge()
        yield stack
    finally:
        processes.cleanup()


@contextlib.asynccontextmanager
async def browser_page(url: str, *extra_args: str, viewport: tuple[int, int] = (1440, 900)) -> AsyncIterator[object]:
    """A fresh Chromium with the page loaded and connected; page errors fail the test."""
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *extra_args])
        try:
            # The page's CSP forbids eval, which Playwright's string predicates need. Bypassing it also
            # makes the injection test stronger: the page must be safe without its CSP.
            page = await browser.new_page(viewport={"width": viewport[0], "height": viewport[1]}, bypass_csp=True)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(url)
            await page.wait_for_function("window.coda && window.coda.session", timeout=20_000)
            yield page
            assert not errors, errors
        finally:
            await browser.close()


async def screenshot(page: object, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name))  # type: ignore[attr-defined]


async def test_typed_turn_streams_with_its_tool_call(stack: Stack) -> None:
    async with browser_page(stack.url) as page:
        await page.evaluate(
            """() => {
                window.tokens = [];
                window.coda.addEventListener("turn", (e) => {
                    if (e.detail.type === "llm.token") window.tokens.push(e.detail.event.llmToken.text || "");
                });
            }"""
        )
        await page.fill("#composer-input", "what time is it in Tokyo")
        await page.press("#composer-input", "Enter")
        user = page.locator(".msg.user .bubble").last
        assert await user.text_content() == "what time is it in Tokyo"
        answer = page.locator(".msg.assistant").last
        tool = answer.locator("details.tool[data-tool='get_time']")
        await tool.locator(".tool-status.ok").wait_for(timeout=20_000)
        assert "Asia/Tokyo" in await tool.locator(".tool-args").text_content()
        await answer.locator(".meta span").first.wait_for(timeout=20_000)
        text = (await answer.locator(".answer").last.text_content()).strip()
        assert "Tokyo" in text
        # Streamed token by token, and the page shows exactly what streamed.
        tokens = await page.evaluate("window.tokens")
        assert len(tokens) > 3
        assert "".join(tokens).strip() == text
        await tool.locator("summary").click()
        assert "Asia/Tokyo" in await tool.locator("pre").last.text_content()
        await screenshot(page, "chat.png")

        # The monitor got the same turn from the bus, and the waterfall was built from its trace spans.
        await page.locator("#event-list li[data-type='conversation.turn']").last.wait_for(timeout=10_000)
        await page.locator("#event-list li[data-type='tool.result'] button").last.click()
        assert "get_time" in await page.locator("#event-detail-body").text_content()
        await screenshot(page, "events.png")
        await page.click("#tab-latency")
        spans = await page.locator("#waterfall .wf-row").evaluate_all("rows => rows.map(r => r.dataset.span)")
        assert {"memory", "llm", "tool:get_time", "first_token", "total"} <= set(spans), spans
        await screenshot(page, "waterfall.png")
        # A phone-sized screen: one column, chat and watch as two views.
        await page.set_viewport_size({"width": 390, "height": 844})
        assert await page.locator("#watch").is_hidden()
        await asyncio.sleep(0.3)  # the sessions drawer slides away
        await screenshot(page, "phone-chat.png")
        await page.click(".view-tab[data-view='watch']")
        assert await page.locator("#watch").is_visible()
        assert await page.locator("#chat").is_hidden()


async def synthesize_wav(address: str, path: Path, text: str, rate: int = 16_000) -> None:
    """Speech from the Voice service's embedded TTS, padded with silence, as a mono PCM16 WAV."""

    async def requests() -> AsyncIterator[voice_pb2.SynthesizeRequest]:
        yield voice_pb2.SynthesizeRequest(config=voice_pb2.SynthesizeConfig(sample_rate=rate))
        yield voice_pb2.SynthesizeRequest(text=voice_pb2.SynthesizeText(text=text, flush=True))

    async with grpc.aio.insecure_channel(address) as channel:
        stub = voice_pb2_grpc.VoiceStub(channel)
        pcm = b"".join([r.audio.pcm async for r in stub.Synthesize(requests()) if r.WhichOneof("response") == "audio"])
    assert len(pcm) > rate, "the TTS made less than half a second of audio"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(rate * 2) + pcm + bytes(rate * 2 * 4))


async def test_spoken_turn_shows_transcript_and_answer(stack: Stack, tmp_path: Path) -> None:
    wav = tmp_path / "question.wav"
    await synthesize_wav(stack.coda_address, wav, SPOKEN)
    fake_mic = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
    ]
    async with browser_page(stack.url, *fake_mic) as page:
        await page.click("#handsfree")
        await page.wait_for_function(
            "document.querySelector('#handsfree').getAttribute('aria-pressed') === 'true'"
            " || document.querySelector('#mic-status').classList.contains('bad')",
            timeout=15_000,
        )
        assert await page.get_attribute("#handsfree", "aria-pressed") == "true", await page.text_content("#mic-status")
        spoken = page.locator(".msg.user:not(.pending)").filter(has=page.locator(".via"))
        await spoken.first.wait_for(timeout=30_000)
        heard = (await spoken.first.locator(".bubble").text_content()).strip()
        assert word_error_rate(SPOKEN, heard) <= 0.5, heard
        turn_id = await spoken.first.get_attribute("data-turn")
        answer = page.locator(f".msg.assistant[data-turn='{turn_id}']")
        await answer.locator(".meta span").first.wait_for(timeout=30_000)
        assert (await answer.locator(".body").text_content()).strip()
        assert "speech" in await answer.locator(".meta").text_content()  # the turn's STT timing
        await screenshot(page, "spoken.png")
        await page.click("#handsfree")
        assert await page.get_attribute("#handsfree", "aria-pressed") == "false"


async def test_bridge_restart_resumes_without_gap_or_duplicate(stack: Stack) -> None:
    async with browser_page(stack.url) as page, publisher(stack.coda_address) as pub:
        stop = asyncio.Event()

        async def publish() -> None:
            i = 0
            while not stop.is_set():
                pub.publish(new_event("llm", events_pb2.LlmToken(text=f"flow {i}", index=i), session_id="s-flow"))
                i += 1
                await asyncio.sleep(0.01)
            await pub.flush(10)

        flowing = asyncio.create_task(publish())
        try:
            await page.wait_for_function(
                "document.querySelectorAll(\"#event-list li[data-session='s-flow']\").length > 30", timeout=15_000
            )
            await asyncio.to_thread(stack.kill_bridge)
            await page.locator("#banner:not([hidden])").wait_for(timeout=10_000)
            assert "Reconnecting" in await page.locator("#banner-text").text_content()
            await asyncio.sleep(0.5)
            await asyncio.to_thread(stack.start_bridge)
            await page.locator("#connection[data-state='open']").wait_for(timeout=20_000)
            await asyncio.sleep(0.5)
        finally:
            stop.set()
            await flowing
        last = pub.last_seq
        await page.wait_for_function(
            f"Math.max(...[...document.querySelectorAll('#event-list li[data-seq]')].map(li => +li.dataset.seq)) >= {last}",
            timeout=20_000,
        )
        seqs = await page.locator("#event-list li[data-seq]").evaluate_all("rows => rows.map(r => +r.dataset.seq)")
        assert len(seqs) == len(set(seqs)), "an event is shown twice"
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "an event is missing"
        assert await page.locator("#event-list li.mark").count() >= 1
        assert await page.locator("#event-list li.gap").count() == 0
        await screenshot(page, "reconnected.png")


HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script> [click](javascript:window.pwned=3)'


async def test_hostile_payloads_and_answers_do_not_inject(stack: Stack) -> None:
    async with browser_page(stack.url) as page, publisher(stack.coda_address) as pub:
        pub.publish(new_event("test", events_pb2.SystemError(message=HOSTILE, details=HOSTILE)))
        pub.publish(new_event("llm", events_pb2.LlmToken(text=HOSTILE)))
        pub.publish(
            new_event("test", events_pb2.ComponentStatus(component=HOSTILE, state=events_pb2.COMPONENT_STATE_DEGRADED))
        )
        pub.publish(
            new_event(
                "tools", events_pb2.ToolResult(name=HOSTILE, result_json='{"x": "' + HOSTILE.replace('"', "'") + '"}')
            )
        )
        pub.publish(new_event("tools", events_pb2.TraceSpan(name=HOSTILE, duration_ms=1), correlation_id=HOSTILE))
        await pub.flush(10)
        # The answer repeats what the user asked it to remember: model output carrying HTML and links.
        await page.fill(
            "#composer-input", f"remember that my note is {HOSTILE} see [the docs](https://example.com/docs)"
        )
        await page.press("#composer-input", "Enter")
        await page.locator(".msg.assistant .meta span").first.wait_for(timeout=20_000)
        await page.fill("#composer-input", "what is my note")
        await page.press("#composer-input", "Enter")
        answer = page.locator(".msg.assistant").nth(1)
        await answer.locator(".meta span").first.wait_for(timeout=20_000)
        assert "<script>window.pwned=2</script>" in await answer.locator(".answer").text_content()
        links = await answer.locator("a").evaluate_all("links => links.map(a => [a.getAttribute('href'), a.rel])")
        assert links == [["https://example.com/docs", "noopener noreferrer nofollow"]], links

        tile = page.locator("#health .tile[data-state='degraded']")
        assert HOSTILE in await tile.locator(".name").text_content()
        await page.locator("#event-list li[data-type='system.error'] button").last.click()
        assert "<script>window.pwned=2</script>" in await page.locator("#event-detail-body").text_content()
        await page.click("#tab-latency")
        await page.select_option("#turn-select", HOSTILE)

        injected = await page.evaluate(
            """() => ({
                flag: window.pwned ?? null,
                scripts: [...document.querySelectorAll("script")].filter(s => !s.src.endsWith("/app.js")).length,
                images: document.querySelectorAll("img").length,
                handlers: [...document.querySelectorAll("*")].filter(
                    el => [...el.attributes].some(a => a.name.startsWith("on"))).length,
                badLinks: [...document.querySelectorAll("a")].filter(a => !/^https?:/.test(a.href)).length,
            })"""
        )
        assert injected == {"flag": None, "scripts": 0, "images": 0, "handlers": 0, "badLinks": 0}, injected

        # The renderer itself, on inputs aimed at it: only its fixed elements, only http(s) hrefs.
        rendered = await page.evaluate(
            """async () => {
                const { renderMarkdown } = await import("/markdown.js");
                const box = document.createElement("div");
                box.append(renderMarkdown([
                    "# <h1>x</h1>", "**<b onmouseover=alert(1)>**", "[a](JAVASCRIPT:alert(1)) [b](data:text/html,x)",
                    "[c](//evil.example) [d](https://ok.example/?q=<x>)", "```", "<script>alert(1)</script>", "```",
                    "- <iframe src=x>", "> <svg onload=alert(1)>", "`<img src=x>` https://plain.example/path",
                ].join("\\n")));
                return {
                    tags: [...new Set([...box.querySelectorAll("*")].map(el => el.tagName.toLowerCase()))].sort(),
                    attrs: [...new Set([...box.querySelectorAll("*")].flatMap(el => [...el.attributes].map(a => a.name)))].sort(),
                    hrefs: [...box.querySelectorAll("a")].map(a => a.getAttribute("href")),
                };
            }"""
        )
        assert set(rendered["tags"]) <= {"h3", "strong", "a", "br", "pre", "code", "ul", "li", "blockquote", "p"}, (
            rendered
        )
        assert set(rendered["attrs"]) <= {"href", "rel", "target"}, rendered
        assert rendered["hrefs"] == ["https://ok.example/?q=%3Cx%3E", "https://plain.example/path"], rendered


async def test_a_page_opened_after_start_up_shows_every_component(stack: Stack) -> None:
    # Enough later events that the page's history replay (the last 300) no longer reaches the start.
    async with publisher(stack.coda_address) as pub:
        for index in range(400):
            pub.publish(new_event("llm", events_pb2.LlmToken(text=f"filler {index}")))
        await pub.flush(10)
    async with browser_page(stack.url) as page:
        tiles = page.locator("#health .tile")
        await tiles.nth(5).wait_for(timeout=20_000)
        names = set(await tiles.locator(".name").all_text_contents())
        assert {"bus", "memory", "tools", "llm", "voice", "assistant"} <= names, names
        assert await page.locator("#health .tile[data-state='ready']").count() >= 6
        await screenshot(page, "late-page-health.png")
