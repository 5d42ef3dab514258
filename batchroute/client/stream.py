"""Client stage, streaming: one SSE answer assembled from its events as they arrive.

It reads the response body it is given and raises what a chunk or a cut stream means; it
opens no connection and sets no timeout (the session in `client.session` does).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import aiohttp
import orjson

from batchroute.client.parse import (
    _NO_USAGE,
    _choice_error,
    loads_lenient,
    parse_usage,
    with_calls,
)
from batchroute.client.status import classify_error
from batchroute.errors import RetryableError, scrub, without_secrets
from batchroute.types import CallSeen, Completion, Usage

_MAX_SSE_LINE = 8 << 20  # a "line" this long without a newline is not SSE


class _Stream:
    """One streamed answer assembled from its SSE events as they arrive (§1.4, §2.3)."""

    __slots__ = (
        "calls",
        "choices_seen",
        "content",
        "done",
        "finish",
        "gen_id",
        "headers",
        "model",
        "native",
        "provider",
        "seen",
        "served",
        "usage",
    )

    def __init__(
        self, model: str, gen_id: str | None, headers: Any, seen: CallSeen | None = None
    ) -> None:
        self.model = model
        self.gen_id = gen_id  # X-Generation-Id, else the first chunk's id
        # The caller's handle: the id is there even if the call is cancelled.
        self.seen = seen if seen is not None else CallSeen(gen_id)
        self.headers = headers
        self.content: list[str] | None = None
        self.calls: dict[int, dict[str, Any]] | None = None  # `delta.tool_calls`, by index
        self.finish: str | None = None
        self.native: str | None = None
        self.served: str | None = None
        self.provider: str | None = None
        self.usage: Usage | None = None
        self.choices_seen = False
        self.done = False  # `data: [DONE]` read

    @property
    def complete(self) -> bool:
        """The answer is whole (its finish chunk came): a cut after this loses none of it. Its
        bill comes in a later chunk (§1.4); cut before it, the answer is kept without usage,
        booked at its reservation until GET /generation says (never paid for twice)."""
        return self.finish is not None

    def billed(self) -> Decimal | None:
        if self.usage is None:
            return None
        try:
            return self.usage.billed
        except ArithmeticError:  # e.g. a cost of "sNaN": passed on as read, but no sum
            return None

    def malformed(self, message: str) -> RetryableError:
        return RetryableError(
            message,
            model=self.model,
            status=200,
            error_type="malformed_response",
            cost=self.billed(),
            generation_id=self.gen_id,
        )

    def cut(self, message: str, error_type: str) -> RetryableError:
        return RetryableError(
            message,
            model=self.model,
            error_type=error_type,
            cost=self.billed(),
            generation_id=self.gen_id,
        )

    async def read(self, content: aiohttp.StreamReader, deadline: float | None = None) -> None:
        """Read events until `[DONE]` or EOF (then `done` tells which); raise an error chunk.

        `deadline` (loop time) bounds the whole stream: keep-alive comments reset the idle
        timer, so a provider that hangs behind them would otherwise hold the call forever.
        """
        tail = b""
        data: bytes | None = None  # the `data:` of the event being read
        loop = asyncio.get_running_loop()
        while True:
            if deadline is not None and loop.time() > deadline:
                if self.complete:  # the answer is whole: only its usage chunk is late
                    return
                raise self.cut("stream went on for longer than allowed", "timeout")
            block = await content.readany()
            if not block:
                if data is not None:  # the last event lacks its blank line: take it anyway
                    self.event(data)
                return
            if tail:
                block = tail + block
            lines = block.split(b"\n")
            tail = lines.pop()
            if len(tail) > _MAX_SSE_LINE:
                raise self.malformed("stream line too long")
            data = self._lines(lines, data)
            if self.done:
                return

    def _lines(self, lines: list[bytes], data: bytes | None) -> bytes | None:
        """Feed complete lines; returns the `data:` of the event still being read."""
        for line in lines:
            if line[-1:] == b"\r":
                line = line[:-1]
            if not line:  # a blank line ends the event
                if data is not None:
                    self.event(data)
                    if self.done:
                        return None
                    data = None
            elif line[:5] == b"data:":
                value = line[6:] if line[5:6] == b" " else line[5:]
                data = value if data is None else data + b"\n" + value
            # else: a `:` comment (keep-alive) or a field we do not use (event, id, retry)
        return data

    def event(self, data: bytes) -> None:
        if data == b"[DONE]":
            self.done = True
            return
        clean = scrub(data)  # an event, whole: as `session.read_body`
        try:
            doc = loads_lenient(clean)
        except orjson.JSONDecodeError:
            raise self.malformed("undecodable data line in stream") from None
        if not isinstance(doc, dict):
            raise self.malformed("stream chunk is not a JSON object")
        keyed = clean is not data  # a key's start was in this event (rare)
        seen = len(self.content) if keyed and self.content is not None else 0
        try:
            self.chunk(doc)
        except (AttributeError, LookupError, TypeError, ValueError, ArithmeticError) as exc:
            raise self.malformed(f"unexpected stream chunk shape: {type(exc).__name__}") from None
        if keyed and self.content is not None and len(self.content) > seen:
            # the key's start was in this delta: keep it as sent, so that `completion` cleans
            # the key whole once joined (the rest of it, in a later delta, has no start to find)
            self.content[-1] = _delta_text(data, self.content[-1])

    def chunk(self, doc: dict[str, Any]) -> None:
        if self.gen_id is None and isinstance(doc.get("id"), str):
            self.gen_id = self.seen.generation_id = doc["id"]
        if self.served is None:
            self.served = doc.get("model")
        if self.provider is None:
            self.provider = doc.get("provider")
        usage = doc.get("usage")
        if isinstance(usage, dict):
            self.usage = parse_usage(usage)
        error = doc.get("error")
        choices = doc.get("choices")
        if not isinstance(error, dict) and choices:
            error = _choice_error(choices)
        if isinstance(error, dict):  # §2.3 form 3: the stream ends with this chunk
            err = classify_error(200, error, self.headers, model=self.model, in_body=True)
            err.cost = self.billed()
            err.generation_id = self.gen_id
            raise err
        if choices:  # the usage chunk has none, or one with an empty delta and no finish
            self.choices_seen = True
            choice = choices[0]
            delta = choice.get("delta")
            if delta:
                self._delta(delta)
            finish = choice.get("finish_reason")
            if finish is not None:
                self.finish, self.native = finish, choice.get("native_finish_reason")

    def _delta(self, delta: dict[str, Any]) -> None:
        text = delta.get("content")
        if isinstance(text, str):
            if self.content is None:
                self.content = [text]
            else:
                self.content.append(text)
        if delta.get("tool_calls"):  # beside content too: "" or a sentence before the call
            self._tool_calls(delta["tool_calls"])

    def _tool_calls(self, pieces: list[dict[str, Any]]) -> None:
        """Assemble streamed tool calls (OpenAI's delta form): the pieces of one call share its
        `index`; the first carries `id`, `type` and the function's `name`, each a piece of
        `function.arguments`. Without `index`, a new `id` starts a new call (parallel calls
        were merged into one corrupt call); arguments sent as an object are taken whole."""
        calls = self.calls if self.calls is not None else {}
        self.calls = calls
        for piece in pieces:
            index = piece.get("index")
            if not isinstance(index, int):
                if not calls:
                    index = 0
                else:
                    last = max(calls)
                    fresh = piece.get("id") not in (None, calls[last].get("id"))
                    index = last + 1 if fresh else last
            call = calls.setdefault(index, {"function": {"arguments": ""}})
            for field in ("id", "type"):
                if piece.get(field) is not None and field not in call:
                    call[field] = piece[field]
            function = piece.get("function") or {}
            if function.get("name") is not None and "name" not in call["function"]:
                call["function"]["name"] = function["name"]
            args = function.get("arguments")
            if isinstance(args, str):
                call["function"]["arguments"] += args
            elif args is not None:
                call["function"]["arguments"] = orjson.dumps(args).decode()

    def completion(self) -> Completion:
        if not self.choices_seen:
            raise RetryableError(
                "stream has no choices",
                model=self.model,
                status=200,
                error_type="no_choices",
                cost=self.billed(),
                generation_id=self.gen_id,
            )
        # Each event was scrubbed; a key spread over several deltas is caught once joined.
        joined = "".join(self.content) if self.content is not None else None
        if self.calls:  # a function-calling answer: its calls are the output (`with_calls`)
            joined = with_calls(joined, [self.calls[i] for i in sorted(self.calls)])
        content = None if joined is None else without_secrets(joined, short=False)  # as `scrub`
        return Completion(
            content=content,
            finish_reason=self.finish,
            native_finish_reason=self.native,
            model=str(self.served or self.model),
            provider=self.provider,
            generation_id=self.gen_id,
            usage=self.usage or _NO_USAGE,
            http_status=200,
        )


def _delta_text(data: bytes, cleaned: str) -> str:
    """The content delta of an event as it was sent (`cleaned` if it cannot be read)."""
    try:
        text = loads_lenient(data)["choices"][0]["delta"]["content"]
    except (orjson.JSONDecodeError, LookupError, TypeError):
        return cleaned
    return text if isinstance(text, str) else cleaned
