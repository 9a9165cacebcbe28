"""Assemble a streamed response (server-sent events) into the object a non-streamed call would
have returned, as chunks go by. Partial streams assemble into what arrived."""

from __future__ import annotations

import zlib
from typing import Any

import orjson

TERMINAL_RESPONSE_EVENTS = frozenset(
    {"response.completed", "response.failed", "response.incomplete"}
)


class BodyDecoder:
    """Undo the upstream's content-encoding on capture's own copy of the bytes."""

    def __init__(self, encoding: str):
        self._inflater: Any = None
        if encoding == "gzip":
            self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._inflater = zlib.decompressobj()

    def decode(self, data: bytes) -> bytes:
        if self._inflater is None:
            return data
        try:
            return bytes(self._inflater.decompress(data))
        except zlib.error:
            return b""


class EventSplitter:
    """Server-sent events out of an upstream's body read in pieces cut anywhere: each complete
    event's lines without its blank line, CRLF made LF (also when a read ends between the CR
    and the LF). An unterminated event at the end is never returned (SSE clients drop it)."""

    def __init__(self, encoding: str = ""):
        self._decoder = BodyDecoder(encoding)
        self._buffer = b""
        self._cr = False

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._decoder.decode(chunk)
        if self._cr:
            data, self._cr = b"\r" + data, False
        if data.endswith(b"\r"):  # maybe half a CRLF: wait for the next read
            data, self._cr = data[:-1], True
        self._buffer += data.replace(b"\r\n", b"\n")
        events: list[bytes] = []
        start = 0
        while (end := self._buffer.find(b"\n\n", start)) != -1:
            events.append(self._buffer[start:end])
            start = end + 2
        if start:
            self._buffer = self._buffer[start:]
        return events


class StreamAssembler:
    """Parses SSE incrementally; subclasses fold each event into a result."""

    def __init__(self, encoding: str = ""):
        self._events = EventSplitter(encoding)
        self.done = False
        self.events = 0
        self.error: Any = None

    def feed(self, chunk: bytes) -> None:
        for raw in self._events.feed(chunk):
            self._event(raw)

    def _event(self, raw: bytes) -> None:
        name: str | None = None
        data_lines: list[bytes] = []
        for line in raw.split(b"\n"):
            if line.startswith(b"data:"):
                data_lines.append(line[5:].lstrip(b" "))
            elif line.startswith(b"event:"):
                name = line[6:].strip().decode("utf-8", "replace")
        if not data_lines:
            return
        data = b"\n".join(data_lines)
        if data.strip() == b"[DONE]":
            self.done = True
            return
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(payload, dict):
            return
        self.events += 1
        if "error" in payload and name is None:
            self.error = payload["error"]
        self.handle(name or payload.get("type"), payload)

    def handle(self, name: Any, payload: dict[str, Any]) -> None:
        raise NotImplementedError

    def result(self) -> dict[str, Any] | None:
        raise NotImplementedError


HEAD_KEYS = ("id", "created", "model", "system_fingerprint", "service_tier")


def _keep_head(head: dict[str, Any], chunk: dict[str, Any], usage: Any) -> Any:
    """Copy a chunk's envelope fields the first time they appear; the latest usage wins."""
    for key in HEAD_KEYS:
        if key in chunk and key not in head:
            head[key] = chunk[key]
    return chunk["usage"] if chunk.get("usage") else usage


class ChatAssembler(StreamAssembler):
    def __init__(self, encoding: str = ""):
        super().__init__(encoding)
        self._head: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: Any = None

    def handle(self, name: Any, payload: dict[str, Any]) -> None:
        self._usage = _keep_head(self._head, payload, self._usage)
        for choice in payload.get("choices") or []:
            index = choice.get("index", 0)
            slot = self._choices.setdefault(
                index, {"role": "assistant", "content": None, "tool_calls": {},
                        "refusal": None, "finish_reason": None}
            )
            delta = choice.get("delta") or {}
            if delta.get("role"):
                slot["role"] = delta["role"]
            for key in ("content", "refusal"):
                if delta.get(key):
                    slot[key] = (slot[key] or "") + delta[key]
            for call in delta.get("tool_calls") or []:
                self._merge_tool_call(slot["tool_calls"], call)
            if choice.get("finish_reason"):
                slot["finish_reason"] = choice["finish_reason"]

    @staticmethod
    def _merge_tool_call(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
        index = delta.get("index", len(calls))
        call = calls.setdefault(
            index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if delta.get("id"):
            call["id"] = delta["id"]
        if delta.get("type"):
            call["type"] = delta["type"]
        function = delta.get("function") or {}
        if function.get("name"):
            call["function"]["name"] += function["name"]
        if function.get("arguments"):
            call["function"]["arguments"] += function["arguments"]

    def result(self) -> dict[str, Any] | None:
        if not self._head and not self._choices:
            return None
        choices = []
        for index in sorted(self._choices):
            slot = self._choices[index]
            message: dict[str, Any] = {"role": slot["role"], "content": slot["content"]}
            if slot["refusal"]:
                message["refusal"] = slot["refusal"]
            if slot["tool_calls"]:
                message["tool_calls"] = [slot["tool_calls"][i] for i in sorted(slot["tool_calls"])]
            choices.append({"index": index, "message": message,
                            "finish_reason": slot["finish_reason"]})
        return {**self._head, "object": "chat.completion", "choices": choices,
                "usage": self._usage}


class CompletionAssembler(StreamAssembler):
    def __init__(self, encoding: str = ""):
        super().__init__(encoding)
        self._head: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: Any = None

    def handle(self, name: Any, payload: dict[str, Any]) -> None:
        self._usage = _keep_head(self._head, payload, self._usage)
        for choice in payload.get("choices") or []:
            slot = self._choices.setdefault(choice.get("index", 0),
                                            {"text": "", "finish_reason": None})
            slot["text"] += choice.get("text") or ""
            if choice.get("finish_reason"):
                slot["finish_reason"] = choice["finish_reason"]

    def result(self) -> dict[str, Any] | None:
        if not self._head and not self._choices:
            return None
        choices = [{"index": i, "text": s["text"], "finish_reason": s["finish_reason"]}
                   for i, s in sorted(self._choices.items())]
        return {**self._head, "object": "text_completion", "choices": choices,
                "usage": self._usage}


class ResponsesAssembler(StreamAssembler):
    def __init__(self, encoding: str = ""):
        super().__init__(encoding)
        self._final: dict[str, Any] | None = None
        self._started: dict[str, Any] | None = None
        self._text: dict[tuple[int, int], str] = {}

    def handle(self, name: Any, payload: dict[str, Any]) -> None:
        if name == "response.created" and isinstance(payload.get("response"), dict):
            self._started = payload["response"]
        elif name == "response.output_text.delta":
            key = (payload.get("output_index", 0), payload.get("content_index", 0))
            self._text[key] = self._text.get(key, "") + (payload.get("delta") or "")
        elif name in TERMINAL_RESPONSE_EVENTS and isinstance(payload.get("response"), dict):
            self._final = payload["response"]
            self.done = True
        elif name == "error":
            self.error = payload

    def result(self) -> dict[str, Any] | None:
        if self._final is not None:
            return self._final
        if self._started is None and not self._text:
            return None
        partial = dict(self._started or {"object": "response"})
        partial["status"] = "incomplete"
        partial["output"] = [
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": text, "annotations": []}]}
            for _, text in sorted(self._text.items())
        ]
        return partial


ASSEMBLERS: dict[str, type[StreamAssembler]] = {
    "chat.completions": ChatAssembler,
    "completions": CompletionAssembler,
    "responses": ResponsesAssembler,
}
