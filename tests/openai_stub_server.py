"""A real OpenAI-compatible HTTP server on 127.0.0.1 with scripted answers, for tests and benchmarks.

It speaks the parts of the API the openai backend uses, the way `vllm serve` does:
POST /v1/completions, POST /v1/chat/completions (with vLLM's continue_final_message) and
GET /v1/models. What it answers comes from a `responder(request) -> list[str | (text, finish) | dict]`
given the parsed request (`ScriptedRequest`), so a test decides exactly which solutions and
rollouts the "model" writes; a dict is merged into the choice's message (chat) or the choice
(completions), e.g. {"content": None, "reasoning_content": "..."}, and a `Raw` answer is sent
as it is (an HTML page, an empty body, JSON of the wrong shape) to play a broken server. It can delay every request (to show concurrency), fail the next
requests with given HTTP statuses (to exercise retries), and it counts what it served.

    with StubServer(responder, delay=0.05) as server:
        load_dataset(..., backend="openai", base_url=server.url)
        server.count()  # successful generation requests
"""

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ASSISTANT_MARK = "<|im_start|>assistant\n"


@dataclass(frozen=True)
class ScriptedRequest:
    endpoint: str  # "completions" or "chat"
    user: str  # the user message (for completions: the text between the chat markers)
    prefix: str  # the partial assistant message being continued ("" for a fresh answer)
    n: int
    seed: int | None
    body: dict


@dataclass(frozen=True)
class Raw:
    body: str
    content_type: str = "text/html"


Responder = Callable[[ScriptedRequest], "list | Raw"]


class StubServer:
    def __init__(self, responder: Responder, *, model: str | None = None, delay: float = 0.0):
        self.responder = responder
        self.model = model  # when set, other model names get 404 like a real server
        self.delay = delay
        self.lock = threading.Lock()
        self.served: list[ScriptedRequest] = []
        self.failures: list[int] = []  # statuses for the next requests, in order
        self.failed: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.spans: list[tuple[float, float]] = []  # (start, end) of every request handled, monotonic clock
        self.httpd = _QuietServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def fail_next(self, *statuses: int) -> None:
        with self.lock:
            self.failures.extend(statuses)

    def count(self, endpoint: str | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.served if endpoint is None or r.endpoint == endpoint)

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no request is being handled (e.g. those of a client that was just killed)."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)

    def reset_counts(self) -> None:
        with self.lock:
            self.served.clear()
            self.failed.clear()
            self.max_in_flight = 0
            self.spans.clear()

    def start(self) -> "StubServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "StubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- request handling (runs on the server's threads) --

    def handle(self, path: str, body: dict) -> tuple[int, dict, dict]:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            status = self.failures.pop(0) if self.failures else None
        start = time.monotonic()
        try:
            if self.delay:
                time.sleep(self.delay)
            if status is not None:
                with self.lock:
                    self.failed.append(status)
                # Retry-After in milliseconds keeps the client's backoff short in tests.
                return status, {"error": {"message": f"injected {status}", "type": "server_error"}}, {"retry-after-ms": "5"}
            if self.model is not None and body.get("model") != self.model:
                return 404, {"error": {"message": f"The model `{body.get('model')}` does not exist.", "type": "NotFoundError"}}, {}
            request = _parse(path, body)
            answers = self.responder(request)
            with self.lock:
                self.served.append(request)
            if isinstance(answers, Raw):
                return 200, answers, {}
            answers = [a if isinstance(a, (tuple, dict)) else (a, "stop") for a in answers]
            return 200, _response(request, answers, body.get("model")), {}
        finally:
            with self.lock:
                self.in_flight -= 1
                self.spans.append((start, time.monotonic()))


def most_in_flight(*servers: StubServer) -> int:
    """The most requests the servers were handling at one time, all of them together.

    (The sum of each server's own maximum can exceed it: those maxima may come at different times.)
    A request ends, here, before its response is sent, so before the client can send the next.
    """
    events = sorted(event for server in servers for start, end in server.spans for event in ((start, 1), (end, -1)))
    most = current = 0
    for _, change in events:  # at equal moments -1 sorts first: an end frees its slot before a start takes one
        current += change
        most = max(most, current)
    return most


def busy_seconds(server: StubServer, other: StubServer) -> tuple[float, float]:
    """Seconds `server` was handling a request, and of those, seconds `other` was handling one too
    (a policy's server and a judge's: do they work at the same time, or take turns?)."""
    events = sorted((moment, change, side) for side, each in enumerate((server, other))
                    for start, end in each.spans for moment, change in ((start, 1), (end, -1)))  # fmt: skip
    busy, total, both, last = [0, 0], 0.0, 0.0, None
    for moment, change, side in events:
        if last is not None and busy[0]:
            total += moment - last
            both += (moment - last) if busy[1] else 0.0
        busy[side] += change
        last = moment
    return total, both


def _parse(path: str, body: dict) -> ScriptedRequest:
    n, seed = int(body.get("n") or 1), body.get("seed")
    if path.endswith("/chat/completions"):
        messages = body["messages"]
        user = next(m["content"] for m in messages if m["role"] == "user")
        prefix = messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""
        return ScriptedRequest("chat", user, prefix, n, seed, body)
    prompt = body["prompt"]
    # A chat-templated prompt: "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{prefix}".
    head, _, prefix = prompt.partition(ASSISTANT_MARK)
    user = head.split("<|im_start|>user\n", 1)[-1].rsplit("<|im_end|>", 1)[0]
    return ScriptedRequest("completions", user, prefix, n, seed, body)


def _response(request: ScriptedRequest, answers: list, model: str) -> dict:
    choices = []  # as many as the responder gave: a test may play a server that sends too few
    for i, answer in enumerate(answers):
        fields = answer if isinstance(answer, dict) else {"content": answer[0], "finish_reason": answer[1]}
        finish = fields.get("finish_reason", "stop")
        if request.endpoint == "chat":
            message = {"role": "assistant", **{k: v for k, v in fields.items() if k != "finish_reason"}}
            choices.append({"index": i, "message": message, "finish_reason": finish, "logprobs": None})
        else:
            text = fields.get("text", fields.get("content"))
            choices.append({"index": i, "text": text, "finish_reason": finish, "logprobs": None})
    kind = "chat.completion" if request.endpoint == "chat" else "text_completion"
    return {
        "id": "stub",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A client killed mid-request (the kill -9 test) leaves a broken pipe: not the server's error.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def _handler(server: StubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the openai client expects

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if not self.path.endswith(("/completions", "/chat/completions")):
                self._send(404, {"error": {"message": f"no route {self.path}"}}, {})
                return
            self._send(*server.handle(self.path, body))

        def do_GET(self):
            if self.path.endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": server.model or "stub", "object": "model"}]}, {})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}}, {})

        def _send(self, status: int, payload, headers: dict) -> None:
            raw = isinstance(payload, Raw)
            data = payload.body.encode() if raw else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", payload.content_type if raw else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:  # quiet: tests read the counters instead
            pass

    return Handler
