"""Tools that reach outside Coda: `shell` and `http_get`. Both are off unless the config turns them on.

`shell` runs one program with arguments (split like a POSIX shell, but no shell syntax: no pipes,
redirections or variables); a timeout or cancel kills it. `http_get` fetches an http(s) URL.
Their outputs are cut to fit the output cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import urllib.error
import urllib.request
from typing import Any

from coda.tools.api import InvalidArguments, Tool, ToolContext, ToolFailure

SHELL_PARAMETERS = {
    "type": "object",
    "properties": {
        "command": {
            "type": "string",
            "minLength": 1,
            "maxLength": 4000,
            "description": "A program and its arguments, e.g. 'ls -l /tmp' (no pipes or redirections).",
        },
        "cwd": {"type": "string", "description": "Working directory (default: the service's)."},
    },
    "required": ["command"],
    "additionalProperties": False,
}

HTTP_PARAMETERS = {
    "type": "object",
    "properties": {
        "url": {"type": "string", "pattern": "^https?://", "maxLength": 2048, "description": "http or https URL."},
        "max_bytes": {"type": "integer", "minimum": 1, "description": "Most body bytes to return."},
    },
    "required": ["url"],
    "additionalProperties": False,
}


def _cut(data: bytes, limit: int) -> tuple[str, bool]:
    return data[:limit].decode("utf-8", errors="replace"), len(data) > limit


def shell_tool(output_max_bytes: int) -> Tool:
    # stdout and stderr share the cap, leaving room for the JSON around them.
    per_stream = max(256, (output_max_bytes - 256) // 2)

    async def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        try:
            argv = shlex.split(args["command"])
        except ValueError as exc:
            raise InvalidArguments(f"cannot split the command: {exc}", field="/command") from None
        if not argv:
            raise InvalidArguments("the command is empty", field="/command")
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=args.get("cwd") or None,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            field = "/cwd" if args.get("cwd") and exc.filename == args.get("cwd") else "/command"
            raise InvalidArguments(f"not found: {exc.filename or argv[0]}", field=field) from None
        except PermissionError as exc:
            raise InvalidArguments(f"permission denied: {exc.filename or argv[0]}", field="/command") from None
        try:
            stdout, stderr = await process.communicate()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        out, out_cut = _cut(stdout, per_stream)
        err, err_cut = _cut(stderr, per_stream)
        return {"exit_code": process.returncode, "stdout": out, "stderr": err, "truncated": out_cut or err_cut}

    return Tool(
        name="shell",
        description="Run a local program with arguments and return its exit code and output.",
        parameters=SHELL_PARAMETERS,
        run=run,
    )


def http_get_tool(output_max_bytes: int) -> Tool:
    body_cap = max(256, output_max_bytes - 1024)

    def fetch(url: str, limit: int, timeout: float) -> dict[str, Any]:
        request = urllib.request.Request(url, headers={"User-Agent": "coda-tools/1"})
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            response = exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ToolFailure(f"cannot fetch {url}: {reason}") from None
        with response:
            data = response.read(limit + 1)
            body, truncated = _cut(data, limit)
            return {
                "url": response.geturl(),
                "status": response.status,
                "content_type": response.headers.get("Content-Type", ""),
                "body": body,
                "truncated": truncated,
            }

    async def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        limit = min(args.get("max_bytes", body_cap), body_cap)
        return await asyncio.to_thread(fetch, args["url"], limit, 30.0)

    return Tool(
        name="http_get",
        description="Fetch a web page or API response by URL (GET) and return its status and body text.",
        parameters=HTTP_PARAMETERS,
        run=run,
    )
