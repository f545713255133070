"""A scripted model API on 127.0.0.1 for running the real `claude` binary in tests.

It answers the Anthropic Messages API (`POST /v1/messages`, streamed or not): while the
conversation has no `tool_result` it asks for one `Bash` call (the scripted command); once it
sees the result it answers with text that quotes the result, so a test can read what claude saw.
Every request body is kept in `requests` so a test can check what the model was told.

Standard library only (a `ThreadingHTTPServer` on a daemon thread), started and stopped by the
test fixture.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Script:
    """What the model does: the tool calls of its first turn, then a closing text."""

    calls: list[tuple[str, dict[str, Any]]] = field(
        default_factory=lambda: [("Bash", {"command": "rm -rf build", "description": "Remove build"})]
    )
    final_text: str = "Done."


def _tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            found.extend(c for c in content if isinstance(c, dict) and c.get("type") == "tool_result")
    return found


def _result_text(result: dict[str, Any]) -> str:
    content = result.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return ""


class ModelAPI:
    """The server; `base_url` goes into ANTHROPIC_BASE_URL."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="model-api", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ModelAPI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def tool_results(self) -> list[str]:
        """Texts of every tool result the model was sent (Messages or Responses API), in order."""
        with self._lock:
            bodies = list(self.requests)
        texts: list[str] = []
        for body in bodies:
            found = [_result_text(result) for result in _tool_results(body)]
            found += [  # the Responses API (codex): *_call_output items
                json.dumps(item.get("output"))
                for item in body.get("input", [])
                if isinstance(item, dict) and str(item.get("type", "")).endswith("call_output")
            ]
            texts.extend(text for text in found if text not in texts)
        return texts

    # -- the reply -----------------------------------------------------------------------

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        """The assistant message for a request: tool calls first, then text on their results."""
        results = _tool_results(body)
        if not results and self.script.calls and body.get("tools"):
            content: list[dict[str, Any]] = [
                {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:20]}", "name": name, "input": args}
                for name, args in self.script.calls
            ]
            stop = "tool_use"
        else:
            seen = " | ".join(_result_text(r) for r in results)
            text = f"{self.script.final_text} Tool said: {seen}" if results else self.script.final_text
            content = [{"type": "text", "text": text}]
            stop = "end_turn"
        return {
            "id": f"msg_{uuid.uuid4().hex[:20]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude-scripted"),
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 10},
        }

    def response(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """OpenAI Responses API output items (codex): the scripted commands, then text.

        Per turn: a user message with no tool output after it gets the scripted commands, so a
        resumed session (`codex exec resume`, a new user message) asks for them again.
        """
        items = [item for item in body.get("input", []) if isinstance(item, dict)]
        user = ("message", "user")
        last_user = max(
            (i for i, item in enumerate(items) if (item.get("type"), item.get("role")) == user), default=-1
        )
        outputs = [
            item for item in items[last_user + 1 :] if str(item.get("type", "")).endswith("call_output")
        ]
        if not outputs and self.script.calls:
            commands = [args.get("command", "") for _, args in self.script.calls]
            names = {t.get("name") for t in body.get("tools", []) if isinstance(t, dict)}
            if "exec_command" in names:  # plain function tools (a model codex has no metadata for)
                return [
                    {"type": "function_call", "call_id": f"call_{uuid.uuid4().hex[:12]}",
                     "name": "exec_command", "status": "completed",
                     "arguments": json.dumps({"cmd": c})}
                    for c in commands
                ]
            code = "\n".join(
                f"text(await tools.exec_command({{cmd: {json.dumps(c)}}}));" for c in commands
            )
            return [{"type": "custom_tool_call", "call_id": f"call_{uuid.uuid4().hex[:12]}",
                     "name": "exec", "input": code, "status": "completed"}]
        seen = " | ".join(json.dumps(o.get("output"))[:500] for o in outputs)
        text = f"{self.script.final_text} Tool said: {seen}" if outputs else self.script.final_text
        return [{"type": "message", "role": "assistant", "id": f"msg_{uuid.uuid4().hex[:12]}",
                 "content": [{"type": "output_text", "text": text, "annotations": []}]}]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test output is the place for failures, not access logs

            def do_GET(self) -> None:
                self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": "no"}})

            def do_HEAD(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    error = {"type": "invalid_request_error", "message": "not JSON"}
                    self._json(400, {"type": "error", "error": error})
                    return
                path = self.path.split("?")[0]
                if path.endswith("/count_tokens"):
                    self._json(200, {"input_tokens": 10})
                    return
                if path.endswith("/responses"):
                    with api._lock:
                        api.requests.append(body)
                    self._sse_raw(b"".join(_sse(e) for e in _response_events(api.response(body))))
                    return
                if not path.endswith("/v1/messages"):
                    self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": path}})
                    return
                with api._lock:
                    api.requests.append(body)
                message = api.reply(body)
                if body.get("stream"):
                    self._stream(message)
                else:
                    self._json(200, message)

            def _json(self, status: int, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, message: dict[str, Any]) -> None:
                self._sse_raw(b"".join(_sse(event) for event in _events(message)))

            def _sse_raw(self, data: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def _events(message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The Messages API's streaming events for one complete message."""
    start = {**message, "content": [], "stop_reason": None}
    yield {"type": "message_start", "message": start}
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            empty_text = {"type": "text", "text": ""}
            yield {"type": "content_block_start", "index": index, "content_block": empty_text}
            yield {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "text_delta", "text": block["text"]},
            }
        else:
            empty = {**block, "input": {}}
            yield {"type": "content_block_start", "index": index, "content_block": empty}
            yield {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])},
            }
        yield {"type": "content_block_stop", "index": index}
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": 10},
    }
    yield {"type": "message_stop"}


def _response_events(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The Responses API's streaming events for one response made of `items`."""
    response_id = f"resp_{uuid.uuid4().hex[:12]}"
    yield {"type": "response.created", "response": {"id": response_id}}
    for index, item in enumerate(items):
        yield {"type": "response.output_item.added", "output_index": index, "item": item}
        yield {"type": "response.output_item.done", "output_index": index, "item": item}
    usage = {"input_tokens": 10, "output_tokens": 10, "total_tokens": 20,
             "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
    yield {"type": "response.completed", "response": {"id": response_id, "usage": usage, "output": items}}


if __name__ == "__main__":  # run by hand: python tests/agents/model_api.py
    import time

    server = ModelAPI().start()
    print(server.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
