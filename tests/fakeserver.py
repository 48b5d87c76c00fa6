"""A local OpenAI-compatible HTTP server for the test suite and the benchmarks.

The real ``openai`` SDK talks to it over real HTTP on 127.0.0.1, so the SDK's
own request building, retries, backoff and response parsing run exactly as
they do against the real API; nothing is patched.

In-process use::

    with FakeOpenAI(latency=0.1) as server:
        client = openai.OpenAI(api_key="test", base_url=server.base_url)
        server.rules.append(("capital of France", "Paris"))
        server.fail_next(1, status=429, retry_after=0.3)

Out-of-process use (benchmarks, subprocess tests)::

    python tests/fakeserver.py --port 0 --latency 0.1 --rate-429 0.1 --rate-500 0.05

prints ``READY http://127.0.0.1:PORT/v1`` as its first stdout line, then serves
until SIGTERM or SIGINT.

The Batch API is served too: ``POST /v1/files`` (multipart, purpose batch), ``GET
/v1/files/ID/content``, ``POST /v1/batches`` and ``GET /v1/batches/ID``. A batch is
"validating" for ``batch_polls[0]`` retrieves, "in_progress" for ``batch_polls[1]`` more
(and at least ``batch_seconds``), then runs its lines through the chat endpoint's own logic
(rules, responder) and is "completed"; ``batch_fail`` puts chosen lines in the error file
(or as non-200 lines in the output file), ``batch_expire_after`` ends batches "expired" with
only that many lines answered, ``batch_refuse`` fails them whole at validation, and
``batch_api = False`` answers 404 as servers without the Batch API do::

    server.batch_polls = (1, 2)
    server.batch_fail.append(("three", 500, "error"))

A hostile batch server: ``batch_expires_in`` sets each new batch's ``expires_at`` (seconds
from its creation), ``batch_reshape`` rewrites every batch object served (create and
retrieve), ``file_reshape`` every file's content as it is downloaded, and ``file_cut_at``
sends only that many bytes of a download while announcing all of them, then closes::

    server.batch_reshape = lambda batch: {**batch, "status": 7}
    server.file_reshape = lambda file_id, content: content + b"not json\n"

A reply may call tools instead of (or beside) answering text: a responder or rule returns a
dict ``{"tool_calls": [...], "content": ...}`` (``tool_call_reply`` builds one). A call
given as ``{"name", "arguments"}`` is sent in the API's shape with an id, its arguments as
given (a string is sent as is, so a test can send text that is not JSON); any other entry
is sent exactly as it is, for hostile shapes::

    server.add_rule("refund", tool_call_reply(("refund", {"order_id": "A1"})))

Faults apply to the endpoints named in ``fault_endpoints`` (chat completions
only by default), so that a test arming ``fail_next`` is not surprised by an
embeddings or health request consuming the fault.

Two kinds of fault test a client's limits. ``large_next`` answers with a chat completion
of an exact size in bytes, plain or gzip-compressed (a "gzip bomb": about a kilobyte per
mebibyte it inflates to), built as it is written so the server never holds it whole.
``drip_next`` sends the headers at once, then the body one byte every ``interval``
seconds: for ``seconds`` and then the completion, or forever::

    server.large_next(size=1 << 30, gzip=True)
    server.drip_next(interval=0.5)
"""

from __future__ import annotations

import argparse
import base64
import email.parser
import email.policy
import hashlib
import itertools
import json
import math
import random
import signal
import socket
import struct
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import pytest

Body = dict[str, Any]
# A reply is text, or a dict that calls tools: {"tool_calls": [...], "content": text or None}.
Reply = str | dict[str, Any]
RuleReply = Reply | Callable[[Body, int], Reply]
Responder = Callable[[Body], Reply]
# Rewrites a chat completion document before it is sent: a new document, or the raw bytes
# of the body (for bodies JSON encoders would never produce).
Reshaper = Callable[[Body, Body], Body | bytes]

EMBEDDING_DIMENSIONS = 16
DEFAULT_FINGERPRINT = "fp_fake"
DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")

# (type, code, message) in the shape the real API uses, so that the SDK fills
# err.type / err.code the way production code will see them.
_ERROR_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    408: ("timeout", None, "Request timed out."),
    409: ("invalid_request_error", "conflict", "Conflict."),
    422: ("invalid_request_error", None, "Unprocessable entity."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests (fake server)."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", "overloaded", "The engine is currently overloaded."),
}

_MALFORMED_BODY = b'{"id": "chatcmpl-malformed", "object": "chat.completion", "choices": [{'


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it; ``status`` is 0 for a dropped connection."""

    timestamp: float
    method: str
    path: str
    body: Body
    headers: dict[str, str]
    status: int
    query: str = ""

    def __getitem__(self, key: str) -> Any:
        # Lets tests write record["body"] as well as record.body.
        return getattr(self, key)


@dataclass
class _Fault:
    status: int
    retry_after: float | None = None
    retry_after_ms: int | None = None
    body: Body | str | None = None


@dataclass
class _MatchFault:
    substring: str
    status: int
    remaining: int | None


@dataclass
class _Rejection:
    message: str
    when: Callable[[Any], bool] | None


@dataclass
class _Rates:
    rate_429: float
    retry_after: float | None
    rate_500: float
    rng: random.Random


@dataclass
class _Outcome:
    status: int
    payload: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    drop: bool = False
    # A body written piece by piece after the headers, instead of `payload`: under a
    # Content-Length of `length`, or chunked when that is None. Without pieces, `length`
    # is the Content-Length to announce instead of the payload's (then the connection
    # closes: a body cut short).
    pieces: Iterator[bytes] | None = None
    length: int | None = None


@dataclass(frozen=True)
class _Large:
    size: int
    gzip: bool
    declare_length: bool


@dataclass(frozen=True)
class _Drip:
    interval: float
    seconds: float | None


# The filler of a large completion is this letter, a mebibyte at a time.
_FILL = b"a"
_MIB = 1 << 20


@lru_cache(maxsize=4)
def _deflated(length: int) -> bytes:
    """`length` filler bytes as raw deflate blocks that end on a byte boundary and refer to
    nothing before them, so copies can follow one another in one stream."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(_FILL * length) + compressor.flush(zlib.Z_FULL_FLUSH)


def gzip_bomb(head: bytes, fill: int, tail: bytes) -> bytes:
    """A gzip member of `head`, `fill` filler bytes and `tail`: about 1 KB per MiB of filler.

    Compressing a gibibyte takes seconds; repeating one compressed mebibyte takes none.
    """
    crc = zlib.crc32(head)
    block = _FILL * _MIB
    for _ in range(fill // _MIB):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(_FILL * (fill % _MIB), crc)
    crc = zlib.crc32(tail, crc)
    first = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    last = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = [first.compress(head) + first.flush(zlib.Z_FULL_FLUSH)]
    body.extend([_deflated(_MIB)] * (fill // _MIB))
    if fill % _MIB:
        body.append(_deflated(fill % _MIB))
    body.append(last.compress(tail) + last.flush(zlib.Z_FINISH))
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    size = len(head) + fill + len(tail)
    return header + b"".join(body) + struct.pack("<II", crc, size & 0xFFFFFFFF)


def large_completion(size: int, model: str) -> tuple[bytes, int, bytes]:
    """A chat completion of exactly `size` bytes, as the JSON before its content, the number
    of filler bytes the content holds, and the JSON after it."""
    head = json.dumps({"id": "chatcmpl-large", "object": "chat.completion", "created": 0,
                       "model": model, "choices": [{"index": 0, "finish_reason": "stop",
                                                    "message": {"role": "assistant", "content": ""}}]})
    head_bytes, tail = head.encode()[:-len('"}}]}')], b'"}}]}'
    fill = size - len(head_bytes) - len(tail)
    if fill < 0:
        raise ValueError(f"a completion takes at least {len(head_bytes) + len(tail)} bytes")
    return head_bytes, fill, tail


def _plain_pieces(head: bytes, fill: int, tail: bytes) -> Iterator[bytes]:
    yield head
    for _ in range(fill // _MIB):
        yield _FILL * _MIB
    yield _FILL * (fill % _MIB) + tail


def error_body(
    status: int,
    message: str | None = None,
    *,
    param: str | None = None,
    code: str | None = None,
) -> Body:
    """An OpenAI-style error document for ``status``."""
    err_type, default_code, default_message = _ERROR_DEFAULTS.get(
        status, ("api_error", None, f"HTTP {status} from the fake server.")
    )
    return {
        "error": {
            "message": message if message is not None else default_message,
            "type": err_type,
            "param": param,
            "code": code if code is not None else default_code,
        }
    }


def tool_call_reply(*calls: tuple[str, Any], content: str | None = None) -> dict[str, Any]:
    """A reply that calls tools: each call a (name, arguments) pair, arguments that are not a
    string sent as their JSON text."""
    return {"content": content,
            "tool_calls": [{"name": name, "arguments": args if isinstance(args, str)
                            else json.dumps(args)} for name, args in calls]}


def _reply_message(reply: Reply, number: int) -> tuple[Body, str, str]:
    """The assistant message of a reply, its finish reason, and its text (to count tokens)."""
    if isinstance(reply, str):
        return {"role": "assistant", "content": reply, "refusal": None}, "stop", reply
    message: Body = {"role": "assistant", "content": reply.get("content"), "refusal": None}
    calls = []
    for index, call in enumerate(reply.get("tool_calls") or []):
        if isinstance(call, dict) and "name" in call and "function" not in call:
            call = {"id": call.get("id", f"call_fake{number:06d}_{index}"), "type": "function",
                    "function": {"name": call["name"], "arguments": call.get("arguments")}}
        calls.append(call)
    if "tool_calls" in reply:
        message["tool_calls"] = calls
    if "function_call" in reply:
        message["function_call"] = reply["function_call"]
    written = " ".join([str(reply.get("content") or ""), *(json.dumps(c) for c in calls)])
    return message, "tool_calls" if calls else "stop", written


def content_text(content: object) -> str:
    """The text of a message ``content``, which may be a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def last_user_message(body: Body) -> str:
    """The text of the last message with role ``user``, or "" when there is none."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def word_count(text: str) -> int:
    return len(text.split())


def embedding_vector(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A unit vector derived only from ``text``: equal texts give cosine 1 in any process."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    rng = random.Random(seed)
    raw = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def letter_vector(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """Counts of the letters a, b, c, ... of ``text`` (case folded; others ignored), the i-th
    letter of the alphabet in component i modulo ``dimensions``: cosines a test can work out
    by hand ("ab" and "aab": 3 / sqrt(10))."""
    vector = [0.0] * dimensions
    for char in text.casefold():
        if "a" <= char <= "z":
            vector[(ord(char) - ord("a")) % dimensions] += 1.0
    return vector


def _format_seconds(value: float) -> str:
    # "1" rather than "1.0": some clients only parse integer Retry-After values.
    return f"{value:g}"


def _embedding_inputs(raw: object) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list):
        if raw and all(isinstance(x, int) for x in raw):
            # A single pre-tokenised input: its token list stands in for its text.
            return [json.dumps(raw)]
        return [x if isinstance(x, str) else json.dumps(x) for x in raw]
    return [json.dumps(raw)]


class FakeOpenAI:
    """An OpenAI-compatible server on 127.0.0.1 with latency and fault injection."""

    def __init__(self, latency: float = 0.0, *, port: int = 0) -> None:
        self.latency = latency
        self.responder: Responder | None = None
        # Hostile or malformed answers: applied to every chat completion document.
        self.reshape: Reshaper | None = None
        self.rules: list[tuple[str, RuleReply]] = []
        self.model_override: str | None = None
        self.fingerprint: str | None = DEFAULT_FINGERPRINT
        self.models: list[str] = list(DEFAULT_MODELS)
        self.fault_endpoints: set[str] = {"chat"}
        # The vector of each embedded text (``letter_vector`` gives hand-computable cosines).
        self.embedder: Callable[[str, int], list[float]] = embedding_vector
        self.errors: list[BaseException] = []

        self._port = port
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self._rule_calls: dict[tuple[int, str], int] = {}
        self._fail_queue: deque[list[Any]] = deque()
        self._matching: list[_MatchFault] = []
        self._rejections: dict[str, _Rejection] = {}
        self._drops = 0
        self._malformed = 0
        self._large: deque[_Large] = deque()
        self._drips: deque[_Drip] = deque()
        # Set by stop(): a drip that would last forever ends.
        self._stopping = threading.Event()
        self._rates: _Rates | None = None
        self._in_flight = 0
        self._max_in_flight = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

        # The Batch API (see the module docstring).
        self.batch_api = True
        self.batch_polls: tuple[int, int] = (1, 1)
        self.batch_seconds = 0.0
        self.batch_fail: list[tuple[str, int, str]] = []
        self.batch_expire_after: int | None = None
        # Requests an expired batch never ran: in the error file (code batch_expired, as the
        # OpenAI API does) or left out of both files.
        self.batch_expired_in_error_file = True
        # A message: batches fail validation as a whole (status "failed", no files).
        self.batch_refuse: str | None = None
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._batch_lock = threading.Lock()
        self._batch_polls_seen: dict[str, int] = {}
        self._batch_started: dict[str, float] = {}
        # Hostile batch servers (see the module docstring).
        self.batch_expires_in: float = 86400
        self.batch_reshape: Callable[[Body], Body | bytes] | None = None
        self.file_reshape: Callable[[str, bytes], bytes] | None = None
        self.file_cut_at: int | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> FakeOpenAI:
        """Bind to 127.0.0.1 (port 0 lets the OS choose) and serve in a background thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(self, ("127.0.0.1", self._port))
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fakeopenai-{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        # Idle keep-alive connections would otherwise keep handler threads
        # blocked on a read for as long as the client holds its pool open.
        server.close_all_connections()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeOpenAI is not started; call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The server root, e.g. http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The value to pass as ``base_url`` to the OpenAI client."""
        return f"{self.url}/v1"

    # -- recording -----------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if _endpoint(r.path) == "chat"]

    @property
    def batch_creations(self) -> list[RecordedRequest]:
        """Every POST /v1/batches received (answered or not)."""
        return [r for r in self.requests if r.method == "POST" and _endpoint(r.path) == "batches"]

    @property
    def embedding_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if _endpoint(r.path) == "embeddings"]

    @property
    def max_in_flight(self) -> int:
        """The largest number of API requests that were being handled at once."""
        with self._lock:
            return self._max_in_flight

    def reset(self) -> None:
        """Forget recorded requests, rules, the responder and every armed fault."""
        with self._lock:
            self._requests.clear()
            self._rule_calls.clear()
            self._fail_queue.clear()
            self._matching.clear()
            self._rejections.clear()
            self._drops = 0
            self._malformed = 0
            self._large.clear()
            self._drips.clear()
            self._rates = None
            self._max_in_flight = self._in_flight
        self.rules.clear()
        self.responder = None
        self.reshape = None
        self.batch_reshape = None
        self.file_reshape = None
        self.file_cut_at = None
        self.embedder = embedding_vector
        self.errors.clear()

    # -- answers -------------------------------------------------------------

    def add_rule(self, substring: str, reply: RuleReply) -> None:
        """Answer ``reply`` when the last user message contains ``substring``."""
        self.rules.append((substring, reply))

    # -- faults --------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 429,
        retry_after: float | None = None,
        retry_after_ms: int | None = None,
        body: Body | str | None = None,
    ) -> None:
        """Answer the next ``n`` requests with ``status`` and an OpenAI-style error."""
        if n > 0:
            with self._lock:
                self._fail_queue.append([n, _Fault(status, retry_after, retry_after_ms, body)])

    def fail_matching(self, substring: str, status: int = 500, times: int | None = None) -> None:
        """Fail requests whose last user message contains ``substring``.

        Forever when ``times`` is None, else only the first ``times`` such requests.
        """
        with self._lock:
            self._matching.append(_MatchFault(substring, status, times))

    def drop_next(self, n: int = 1) -> None:
        """Close the connection without any response for the next ``n`` requests."""
        with self._lock:
            self._drops += n

    def malformed_next(self, n: int = 1) -> None:
        """Answer the next ``n`` requests with status 200 and a body that is not JSON."""
        with self._lock:
            self._malformed += n

    def large_next(self, n: int = 1, *, size: int, gzip: bool = False,
                   declare_length: bool = True) -> None:
        """Answer the next ``n`` requests with a chat completion of exactly ``size`` bytes (its
        content the letter a, repeated): gzip-compressed with ``gzip`` (Content-Encoding: gzip,
        about 1 KB per MiB), else plain, under a Content-Length or, without
        ``declare_length``, chunked."""
        with self._lock:
            self._large.extend([_Large(size, gzip, declare_length)] * n)

    def drip_next(self, n: int = 1, *, interval: float = 0.5, seconds: float | None = None) -> None:
        """Answer the next ``n`` requests with headers at once, then one byte (JSON's leading
        white space) every ``interval`` seconds: for ``seconds`` and then the completion
        itself, or, when ``seconds`` is None, until the client hangs up or the server stops."""
        with self._lock:
            self._drips.extend([_Drip(interval, seconds)] * n)

    def fault_rates(
        self,
        rate_429: float = 0.0,
        retry_after: float | None = 1.0,
        rate_500: float = 0.0,
        seed: int = 0,
    ) -> None:
        """Fail each request at random, from a seeded generator so a run can be replayed."""
        if rate_429 < 0 or rate_500 < 0 or rate_429 + rate_500 > 1:
            raise ValueError("fault rates must be >= 0 and sum to at most 1")
        with self._lock:
            self._rates = _Rates(rate_429, retry_after, rate_500, random.Random(seed))

    def reject_param(
        self,
        name: str,
        message: str | None = None,
        when: Callable[[Any], bool] | None = None,
    ) -> None:
        """Answer 400 naming ``name`` when the request body has that key.

        ``when`` narrows the rejection to some values, e.g. ``lambda n: n != 1``,
        the way llama.cpp's server rejects only ``n`` greater than 1.
        """
        text = message if message is not None else f"Unsupported parameter: '{name}'."
        with self._lock:
            self._rejections[name] = _Rejection(text, when)

    # -- request handling (called from handler threads) ----------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str], raw_body: bytes) -> _Outcome:
        arrived = time.monotonic()
        path = urlsplit(raw_path).path
        endpoint = _endpoint(path)
        body: Body = {}
        outcome: _Outcome | None = None

        if method == "POST" and headers.get("content-type", "").startswith("multipart/form-data"):
            body = _multipart(headers["content-type"], raw_body)
        elif method == "POST" and raw_body:
            try:
                parsed = json.loads(raw_body)
            except ValueError:
                outcome = _json_outcome(400, error_body(400, "The request body is not valid JSON."))
            else:
                if isinstance(parsed, dict):
                    body = parsed
                else:
                    outcome = _json_outcome(400, error_body(400, "The body must be a JSON object."))

        is_api = method == "POST" and endpoint in ("chat", "embeddings")
        latency = self.latency if is_api else 0.0
        drip: _Drip | None = None
        with self._lock:
            if outcome is None and endpoint in self.fault_endpoints and method == "POST":
                outcome = self._take_fault(endpoint, body)
                if outcome is None and self._drips:
                    drip = self._drips.popleft()
            if is_api:
                self._in_flight += 1
                self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            if latency > 0:
                time.sleep(latency)
            if outcome is None:
                outcome = self._answer(method, endpoint, path, body)
            if drip is not None:
                outcome = self._dripped(outcome, drip)
        except Exception as exc:
            self.errors.append(exc)
            outcome = _json_outcome(500, error_body(500, f"fake server error: {type(exc).__name__}: {exc}"))
        finally:
            if is_api:
                with self._lock:
                    self._in_flight -= 1

        record = RecordedRequest(
            timestamp=arrived,
            method=method,
            path=path,
            body=body,
            headers=headers,
            status=0 if outcome.drop else outcome.status,
            query=urlsplit(raw_path).query,
        )
        # Recorded before the response is written, so a client that has its
        # answer can rely on the record being there.
        with self._lock:
            self._requests.append(record)
        return outcome

    def _take_fault(self, endpoint: str, body: Body) -> _Outcome | None:
        """The armed fault for this request, consuming it; caller holds the lock."""
        if self._drops > 0:
            self._drops -= 1
            return _Outcome(status=0, drop=True)

        if self._fail_queue:
            entry = self._fail_queue[0]
            fault: _Fault = entry[1]
            entry[0] -= 1
            if entry[0] <= 0:
                self._fail_queue.popleft()
            return _fault_outcome(fault)

        text = _match_text(endpoint, body)
        for match in self._matching:
            if match.substring in text and (match.remaining is None or match.remaining > 0):
                if match.remaining is not None:
                    match.remaining -= 1
                return _fault_outcome(_Fault(match.status))

        if self._rates is not None:
            draw = self._rates.rng.random()
            if draw < self._rates.rate_429:
                return _fault_outcome(_Fault(429, retry_after=self._rates.retry_after))
            if draw < self._rates.rate_429 + self._rates.rate_500:
                return _fault_outcome(_Fault(500))

        for name, rejection in self._rejections.items():
            if name in body and (rejection.when is None or rejection.when(body[name])):
                return _json_outcome(
                    400,
                    error_body(400, rejection.message, param=name, code="unsupported_parameter"),
                )

        if self._malformed > 0:
            self._malformed -= 1
            return _Outcome(
                status=200,
                payload=_MALFORMED_BODY,
                headers=(("Content-Type", "application/json"),),
            )

        if self._large:
            return _large_outcome(self._large.popleft(), str(body.get("model", "")))
        return None

    def _dripped(self, outcome: _Outcome, drip: _Drip) -> _Outcome:
        """`outcome` sent a byte at a time (see `drip_next`)."""
        stopping = self._stopping
        count = None if drip.seconds is None else math.ceil(drip.seconds / drip.interval)

        def pieces() -> Iterator[bytes]:
            sent = 0
            while (count is None or sent < count) and not stopping.wait(drip.interval):
                sent += 1
                yield b" "
            if count is not None:
                yield outcome.payload

        length = None if count is None else count + len(outcome.payload)
        return replace(outcome, payload=b"", pieces=pieces(), length=length)

    def _answer(self, method: str, endpoint: str | None, path: str, body: Body) -> _Outcome:
        if method == "GET" and path == "/health":
            return _json_outcome(200, {"status": "ok"})
        if method == "GET" and endpoint == "models":
            return _json_outcome(200, self._models_document())
        if method == "POST" and endpoint == "chat":
            return self._chat(body)
        if method == "POST" and endpoint == "embeddings":
            return self._embeddings(body)
        if endpoint in ("files", "batches") and self.batch_api:
            with self._batch_lock:
                return self._batch_endpoint(method, endpoint, path, body)
        return _json_outcome(404, error_body(404, f"Unknown endpoint {method} {path}.", code="unknown_url"))

    def _models_document(self) -> Body:
        ids = list(self.models)
        if self.model_override is not None and self.model_override not in ids:
            ids.append(self.model_override)
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in ids],
        }

    def _reply_for(self, body: Body) -> Reply:
        if self.responder is not None:
            return self.responder(body)
        text = last_user_message(body)
        for index, (substring, reply) in enumerate(list(self.rules)):
            if substring in text:
                if not callable(reply):
                    return reply
                key = (index, substring)
                with self._lock:
                    call = self._rule_calls.get(key, 0)
                    self._rule_calls[key] = call + 1
                return reply(body, call)
        return "echo: " + text

    def _chat(self, body: Body) -> _Outcome:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _json_outcome(
                400, error_body(400, "'messages' must be a non-empty array.", param="messages")
            )
        if body.get("stream"):
            return _json_outcome(400, error_body(400, "The fake server does not stream.", param="stream"))
        n = body.get("n", 1)
        if n is None:
            n = 1
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            return _json_outcome(400, error_body(400, "'n' must be an integer >= 1.", param="n"))

        reply = self._reply_for(body)
        prompt_tokens = max(
            1,
            sum(word_count(content_text(m.get("content"))) for m in messages if isinstance(m, dict)),
        )
        with self._lock:
            number = next(self._ids)
        message, finish_reason, written = _reply_message(reply, number)
        completion_tokens = max(1, word_count(written)) * n
        document: Body = {
            "id": f"chatcmpl-fake{number:06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_override or str(body.get("model", "")),
            "system_fingerprint": self.fingerprint,
            "choices": [
                {
                    "index": i,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
                for i in range(n)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        if self.reshape is not None:
            reshaped = self.reshape(body, document)
            if isinstance(reshaped, bytes):
                return _Outcome(200, reshaped, (("Content-Type", "application/json"),))
            document = reshaped
        return _json_outcome(200, document)

    def _embeddings(self, body: Body) -> _Outcome:
        if "input" not in body:
            return _json_outcome(400, error_body(400, "'input' is required.", param="input"))
        texts = _embedding_inputs(body["input"])
        dimensions = body.get("dimensions") or EMBEDDING_DIMENSIONS
        if not isinstance(dimensions, int) or dimensions < 1:
            return _json_outcome(
                400, error_body(400, "'dimensions' must be a positive integer.", param="dimensions")
            )
        as_base64 = body.get("encoding_format") == "base64"
        data: list[Body] = []
        for index, text in enumerate(texts):
            vector = self.embedder(text, dimensions)
            embedding: str | list[float]
            if as_base64:
                # The SDK asks for base64 by default and decodes little-endian float32.
                packed = struct.pack(f"<{dimensions}f", *vector)
                embedding = base64.b64encode(packed).decode("ascii")
            else:
                embedding = vector
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = max(1, sum(word_count(t) for t in texts))
        document: Body = {
            "object": "list",
            "data": data,
            "model": self.model_override or str(body.get("model", "")),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return _json_outcome(200, document)

    # -- the Batch API (called with _batch_lock held) ------------------------------------------

    def _batch_endpoint(self, method: str, endpoint: str, path: str, body: Body) -> _Outcome:
        parts = [p for p in path.rstrip("/").split("/") if p][1:]  # without "v1"
        if endpoint == "files":
            if method == "POST" and len(parts) == 1:
                return self._upload(body)
            if method == "GET" and len(parts) == 3 and parts[2] == "content":
                found = self.files.get(parts[1])
                if found is None:
                    return _json_outcome(404, error_body(404, f"No such File object: {parts[1]}"))
                return self._file_content(parts[1], found["content"])
            if method == "GET" and len(parts) == 2 and parts[1] in self.files:
                return _json_outcome(200, self._file_document(parts[1]))
        if endpoint == "batches":
            if method == "POST" and len(parts) == 1:
                return self._create_batch(body)
            if method == "GET" and len(parts) == 2:
                batch = self.batches.get(parts[1])
                if batch is None:
                    return _json_outcome(404, error_body(404, f"No such Batch object: {parts[1]}"))
                self._advance(batch)
                return self._batch_outcome(batch)
        return _json_outcome(404, error_body(404, f"Unknown endpoint {method} {path}.", code="unknown_url"))

    def _new_file(self, content: bytes, filename: str, purpose: str) -> str:
        with self._lock:
            number = next(self._ids)
        file_id = f"file-fake{number:06d}"
        self.files[file_id] = {"content": content, "filename": filename, "purpose": purpose,
                               "created_at": int(time.time())}
        return file_id

    def _file_document(self, file_id: str) -> Body:
        found = self.files[file_id]
        return {"id": file_id, "object": "file", "bytes": len(found["content"]),
                "created_at": found["created_at"], "filename": found["filename"],
                "purpose": found["purpose"], "status": "processed"}

    def _upload(self, body: Body) -> _Outcome:
        upload = body.get("file")
        if not isinstance(upload, dict):
            return _json_outcome(400, error_body(400, "'file' is required.", param="file"))
        if body.get("purpose") != "batch":
            return _json_outcome(400, error_body(400, "This fake serves purpose 'batch' only.",
                                                 param="purpose"))
        file_id = self._new_file(upload["content"].encode("utf-8"), upload["filename"], "batch")
        return _json_outcome(200, self._file_document(file_id))

    def _create_batch(self, body: Body) -> _Outcome:
        file_id = body.get("input_file_id")
        if not isinstance(file_id, str) or file_id not in self.files:
            return _json_outcome(400, error_body(400, f"Invalid input_file_id {file_id!r}.",
                                                 param="input_file_id"))
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return _json_outcome(400, error_body(400, "endpoint must be /v1/chat/completions and "
                                                 "completion_window 24h.", param="endpoint"))
        lines = [ln for ln in self.files[file_id]["content"].splitlines() if ln.strip()]
        with self._lock:
            number = next(self._ids)
        batch_id = f"batch_fake{number:06d}"
        now = int(time.time())
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
            "input_file_id": file_id, "completion_window": "24h", "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": now,
            "in_progress_at": None, "expires_at": int(now + self.batch_expires_in), "completed_at": None,
            "expired_at": None, "metadata": body.get("metadata"),
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
        }
        self._batch_polls_seen[batch_id] = 0
        self._batch_started[batch_id] = time.monotonic()
        return self._batch_outcome(self.batches[batch_id])

    def _batch_outcome(self, batch: Body) -> _Outcome:
        """A batch object as served: rewritten by ``batch_reshape``, when set."""
        if self.batch_reshape is None:
            return _json_outcome(200, batch)
        reshaped = self.batch_reshape(json.loads(json.dumps(batch)))
        if isinstance(reshaped, bytes):
            return _Outcome(200, reshaped, (("Content-Type", "application/json"),))
        return _json_outcome(200, reshaped)

    def _file_content(self, file_id: str, content: bytes) -> _Outcome:
        """A file's content as served: rewritten by ``file_reshape``, cut at ``file_cut_at``."""
        if self.file_reshape is not None:
            content = self.file_reshape(file_id, content)
        headers = (("Content-Type", "application/octet-stream"),)
        if self.file_cut_at is not None and self.file_cut_at < len(content):
            return _Outcome(200, content[:self.file_cut_at], headers, length=len(content))
        return _Outcome(200, content, headers)

    def _advance(self, batch: Body) -> None:
        """One retrieve's worth of progress: validating, in_progress, then the results."""
        if batch["status"] not in ("validating", "in_progress"):
            return
        seen = self._batch_polls_seen[batch["id"]] = self._batch_polls_seen[batch["id"]] + 1
        validating, in_progress = self.batch_polls
        if seen <= validating:
            return
        if self.batch_refuse is not None:
            batch.update(status="failed", failed_at=int(time.time()), errors={
                "object": "list", "data": [{"code": "invalid_request", "message": self.batch_refuse,
                                            "param": None, "line": 1}]})
            return
        batch["status"] = "in_progress"
        batch["in_progress_at"] = batch["in_progress_at"] or int(time.time())
        if seen <= validating + in_progress or \
                time.monotonic() - self._batch_started[batch["id"]] < self.batch_seconds:
            return
        self._finish(batch)

    def _finish(self, batch: Body) -> None:
        lines = [ln for ln in self.files[batch["input_file_id"]]["content"].splitlines() if ln.strip()]
        output: list[Body] = []
        errors: list[Body] = []
        limit = self.batch_expire_after
        for index, raw in enumerate(lines):
            request = json.loads(raw)
            custom = request.get("custom_id")
            with self._lock:
                number = next(self._ids)
            line: Body = {"id": f"batch_req_fake{number:06d}", "custom_id": custom,
                          "response": None, "error": None}
            if limit is not None and index >= limit:
                if self.batch_expired_in_error_file:
                    line["error"] = {"code": "batch_expired", "message": "This request could not "
                                     "be executed before the completion window expired."}
                    errors.append(line)
                continue
            body = request.get("body") or {}
            text = last_user_message(body)
            fault = next((f for f in self.batch_fail if f[0] in text), None)
            if fault is not None:
                line["response"] = {"status_code": fault[1], "request_id": f"req_{number}",
                                    "body": error_body(fault[1])}
                (output if fault[2] == "output" else errors).append(line)
                continue
            outcome = self._chat(body)
            line["response"] = {"status_code": outcome.status, "request_id": f"req_{number}",
                                "body": json.loads(outcome.payload)}
            (output if outcome.status == 200 else errors).append(line)
        counts = batch["request_counts"]
        counts["completed"] = sum(1 for ln in output if ln["response"]["status_code"] == 200)
        counts["failed"] = len(lines) - counts["completed"] if limit is None else \
            len(errors) + len(output) - counts["completed"]
        for name, items in (("output_file_id", output), ("error_file_id", errors)):
            if items:
                content = "".join(json.dumps(x) + "\n" for x in items).encode("utf-8")
                batch[name] = self._new_file(content, f"{batch['id']}_{name[:-8]}.jsonl",
                                             "batch_output")
        now = int(time.time())
        if limit is not None and limit < len(lines):
            batch.update(status="expired", expired_at=now)
        else:
            batch.update(status="completed", completed_at=now)


def _multipart(content_type: str, raw: bytes) -> Body:
    """The fields of a multipart/form-data body; a file field as {"filename", "content"}."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw)
    fields: Body = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            fields[str(name)] = {"filename": filename, "content": data.decode("utf-8", "replace")}
        else:
            fields[str(name)] = data.decode("utf-8", "replace")
    return fields


def _endpoint(path: str) -> str | None:
    trimmed = path.rstrip("/")
    if trimmed.startswith("/v1/"):
        trimmed = trimmed[3:]
    for prefix in ("files", "batches"):
        if trimmed == f"/{prefix}" or trimmed.startswith(f"/{prefix}/"):
            return prefix
    return {
        "/chat/completions": "chat",
        "/embeddings": "embeddings",
        "/models": "models",
    }.get(trimmed)


def _match_text(endpoint: str, body: Body) -> str:
    if endpoint == "embeddings":
        return "\n".join(_embedding_inputs(body.get("input", "")))
    return last_user_message(body)


def _json_outcome(status: int, document: Body, headers: tuple[tuple[str, str], ...] = ()) -> _Outcome:
    payload = json.dumps(document).encode("utf-8")
    return _Outcome(status, payload, (("Content-Type", "application/json"), *headers))


def _large_outcome(large: _Large, model: str) -> _Outcome:
    head, fill, tail = large_completion(large.size, model)
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    if large.gzip:
        payload = gzip_bomb(head, fill, tail)
        if large.declare_length:
            return _Outcome(200, payload, (*headers, ("Content-Encoding", "gzip")))
        return _Outcome(200, headers=(*headers, ("Content-Encoding", "gzip")), pieces=iter([payload]))
    return _Outcome(200, headers=headers, pieces=_plain_pieces(head, fill, tail),
                    length=large.size if large.declare_length else None)


def _fault_outcome(fault: _Fault) -> _Outcome:
    headers: list[tuple[str, str]] = []
    if fault.retry_after is not None:
        headers.append(("retry-after", _format_seconds(fault.retry_after)))
    if fault.retry_after_ms is not None:
        headers.append(("retry-after-ms", str(fault.retry_after_ms)))
    if isinstance(fault.body, str):
        return _Outcome(
            fault.status,
            fault.body.encode("utf-8"),
            (("Content-Type", "application/json"), *headers),
        )
    document = fault.body if fault.body is not None else error_body(fault.status)
    return _json_outcome(fault.status, document, tuple(headers))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeOpenAI/1.0"
    sys_version = ""
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's
    # algorithm meets the client's delayed ACK and adds ~40 ms per response.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:
        # Per-request logging to stderr would dominate the cost of a benchmark run.
        return

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        outcome = self.server.app.handle(method, self.path, headers, raw_body)
        if outcome.drop:
            self.close_connection = True
            return
        self.send_response(outcome.status)
        for name, value in outcome.headers:
            self.send_header(name, value)
        if outcome.pieces is None:
            # `length`, when given, announces more than the payload: a body cut short.
            self.send_header("Content-Length", str(len(outcome.payload) if outcome.length is None
                                                   else outcome.length))
        elif outcome.length is not None:
            self.send_header("Content-Length", str(outcome.length))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", f"req_fake_{time.monotonic_ns()}")
        self.end_headers()
        if outcome.pieces is None:
            self.wfile.write(outcome.payload)
            if outcome.length is not None:
                self.close_connection = True
            return
        chunked = outcome.length is None
        for piece in outcome.pieces:
            if chunked and piece:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            elif piece:
                self.wfile.write(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    # Benchmarks open dozens of connections at once; the default backlog of 5
    # makes the extra ones wait for SYN retransmits.
    request_queue_size = 1024

    def __init__(self, app: FakeOpenAI, address: tuple[str, int]) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.discard(request)
        super().shutdown_request(request)

    def close_all_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        # Clients that give up mid-request (timeouts, cancelled tasks) and
        # stop() closing idle connections are normal here, not errors.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A started FakeOpenAI, stopped after the test."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    """A fake server of its own, for tests that talk to it directly rather than through the CLI
    (`fake_openai` is the one `api` points the CLI at)."""
    with FakeOpenAI() as fake:
        yield fake


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a fake OpenAI-compatible API.")
    parser.add_argument("--port", type=int, default=0, help="0 lets the OS choose")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per API request")
    parser.add_argument("--rate-429", type=float, default=0.0, help="share of requests given 429")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds sent with 429")
    parser.add_argument("--rate-500", type=float, default=0.0, help="share of requests given 500")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault generator")
    args = parser.parse_args(argv)

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server = FakeOpenAI(latency=args.latency, port=args.port)
    if args.rate_429 or args.rate_500:
        server.fault_rates(
            rate_429=args.rate_429,
            retry_after=args.retry_after,
            rate_500=args.rate_500,
            seed=args.seed,
        )
    with server:
        print(f"READY {server.base_url}", flush=True)
        # A timed wait keeps the main thread returning to the interpreter, where
        # the signal handler runs.
        while not stopping.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
