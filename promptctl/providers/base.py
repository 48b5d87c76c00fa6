"""The provider interface: one async method that turns a chat request into a completion,
optional capabilities (embeddings), and the `Backend` a provider module registers."""

from __future__ import annotations

import builtins
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

from promptctl.errors import InputError

if TYPE_CHECKING:
    from promptctl.providers import ResolvedModel


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float


@dataclass(frozen=True)
class Endpoint:
    """A model server named in promptctl.yaml: its backend `type` and that backend's settings.

    The common settings are fields; backend-specific ones (base_url, gguf, ...) live in
    `settings`, checked against what the backend declares (see `providers.Backend`).
    """

    name: str
    type: str = "openai"
    settings: dict[str, Any] = field(default_factory=dict)
    concurrency: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    timeout: float | None = None
    max_response_mb: float | None = None

    def setting(self, key: str, default: Any = None) -> Any:
        return self.settings.get(key, default)

    @property
    def base_url(self) -> str | None:
        value = self.settings.get("base_url")
        return str(value) if value is not None else None

    @property
    def api_key_env(self) -> str | None:
        value = self.settings.get("api_key_env")
        return str(value) if value is not None else None


@dataclass(frozen=True)
class ChatRequest:
    """What is sent: model, rendered messages and the request parameters."""

    model: str
    messages: list[dict[str, str]]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChatResponse:
    """What came back, with the accounting the run records."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model: str | None = None
    system_fingerprint: str | None = None
    latency_ms: float = 0.0
    attempts: int = 1
    # Why the model gave no text (a tool call, null content), when it gave none.
    no_text: str | None = None
    # The tool calls the model made, storable, in the API's shape (see _openai_wire).
    tool_calls: list[dict[str, Any]] | None = None
    # Every choice of a request sent with `n` > 1, in the server's order (the first is the
    # one above); empty for a request with one choice.
    choices: tuple[Choice, ...] = ()


@dataclass(frozen=True)
class Choice:
    """One of the choices of a response: its text, or why it has none."""

    text: str
    no_text: str | None = None


@dataclass(frozen=True)
class EmbeddingResponse:
    """One vector per input text, in order, and the tokens the request used."""

    vectors: list[list[float]]
    prompt_tokens: int | None = None
    attempts: int = 1


class RequestFailed(Exception):
    """A request that failed after every retry: the row becomes an error, not a wrong answer."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1,
                 unreachable: bool = False) -> None:
        self.status = status
        self.attempts = attempts
        # A timeout or a refused connection: the server may be down, not just this request.
        self.unreachable = unreachable
        super().__init__(message)


class Provider(ABC):
    """A model endpoint."""

    name: str
    base_url: str

    @abstractmethod
    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Send one request (retrying transient failures) and return the completion.

        Raises `RequestFailed` for a row-level failure, `PromptctlError` for a
        failure that would hit every row (bad key, unknown model, rejected parameter).
        """

    async def embed(self, model: str, texts: list[str]) -> EmbeddingResponse:
        """Embeddings of `texts` (a capability: backends without it keep this refusal)."""
        raise InputError(f"endpoint {self.name} does not serve embeddings",
                         fix="name a model on an endpoint with an embeddings API "
                         "(similarity: {model: ENDPOINT/MODEL})")

    def describe(self) -> dict[str, Any]:
        """Facts worth keeping in the run's summary, by key (a managed server's pid and
        start-up under "server")."""
        return {}

    async def start(self) -> None:  # noqa: B027 - most providers are ready once built
        """Get ready to send: called once, before the first request (and before rate limits
        start counting)."""

    async def aclose(self) -> None:  # noqa: B027 - most providers hold nothing to release
        """Release connections and any server this provider started."""


# What a batch or file id may look like: it goes into URL paths (`/batches/ID`) and is stored
# with the run, so nothing that could leave its path segment (`/`, `?`, `..`, spaces).
_BATCH_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}")


def is_batch_ref(value: object) -> TypeGuard[str]:
    """A batch or file id as a server may give it and a run may store it."""
    return isinstance(value, str) and _BATCH_REF.fullmatch(value) is not None and ".." not in value


@dataclass(frozen=True)
class BatchInfo:
    """A submitted batch as the server last described it."""

    id: str
    status: str
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    completed: int = 0
    failed: int = 0
    total: int = 0
    # Why a batch failed as a whole (its input was refused), from the server's `errors`.
    errors: tuple[str, ...] = ()
    # When the server will give up on the batch (seconds since the epoch), if it said.
    expires_at: float | None = None
    # The string metadata it was submitted with, as the server returns it.
    metadata: Mapping[str, str] = field(default_factory=dict)

    # States after which a batch changes no more: its files are final.
    TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})

    @property
    def done(self) -> bool:
        return self.status in self.TERMINAL


# Environment variables that override ReadLimits (read by the engine, named in messages).
ENV_MAX_LINE_BYTES = "PROMPTCTL_BATCH_MAX_LINE_BYTES"
ENV_MAX_RESULT_BYTES = "PROMPTCTL_BATCH_MAX_RESULT_BYTES"


@dataclass(frozen=True)
class ReadLimits:
    """The most a batch API reads of one line of a downloaded file, and of one file.

    A chat completion line is a few kilobytes; 16 MiB leaves room for long answers with
    logprobs while a hostile line cannot fill memory. A file holds one line per request
    (at most 50,000): 4 GiB is far above any real one, and stops an endless download.
    """

    line_bytes: int = 16 * 1024 * 1024
    file_bytes: int = 4 * 1024 * 1024 * 1024


class BatchAPI(ABC):
    """A server's asynchronous batch interface (the OpenAI Batch API's shape): a file of
    requests is uploaded and submitted, polled, and its results read back.

    Requests are named by a caller's id (`custom_id`), unique within the run, by which
    results and a submitted file's requests are matched after a restart. Everything read
    back comes from the server and is checked: a batch API raises `ProviderError` for a
    batch object it cannot use, and reports a result line it cannot read as a failure.
    """

    name: str
    base_url: str
    # Set by the caller before reading files (`results`, `request_lines`).
    limits: ReadLimits = ReadLimits()

    @abstractmethod
    def request_line(self, custom_id: str, request: ChatRequest) -> bytes:
        """One request as a line of the file to upload: a JSON object ending in a newline."""

    @abstractmethod
    async def upload(self, path: str) -> str:
        """Upload a file of request lines; its file id."""

    @abstractmethod
    async def submit(self, file_id: str, metadata: dict[str, str]) -> BatchInfo:
        """Start a batch over an uploaded file."""

    @abstractmethod
    async def retrieve(self, batch_id: str) -> BatchInfo:
        """The batch's current state."""

    @abstractmethod
    def request_lines(self, file_id: str) -> AsyncGenerator[tuple[str, Any]]:
        """The requests of an uploaded file, as the server returns it: each one's custom id
        and its line as JSON (to re-attach after a restart, and check the batch still
        holds the requests this run would send)."""

    @abstractmethod
    def results(self, info: BatchInfo) -> AsyncGenerator[tuple[str | None,
                                                             ChatResponse | RequestFailed]]:
        """Each result of a finished batch, as its output and error files are read: the
        request's custom id and its response, or why it failed. A line that names no
        request (unreadable, too long, without a custom id) comes with None and why."""

    async def aclose(self) -> None:  # noqa: B027 - nothing to release by default
        """Release connections."""


@dataclass(frozen=True)
class BatchSupport:
    """A backend's batch capability: how to open its batch API, and what batch requests cost
    as a share of the standard price."""

    open: Callable[[ResolvedModel], BatchAPI]
    price_factor: float = 1.0


def _no_check(resolved: ResolvedModel, params: dict[str, Any]) -> None:
    return None


def _no_price(model: str) -> Price | None:
    return None


def _char_counter(model: str) -> tuple[Callable[[str], int], str]:
    return (lambda text: max(1, (len(text) + 3) // 4)), "estimate: characters / 4"


@dataclass(frozen=True)
class Backend:
    """What a kind of endpoint (`type:` in promptctl.yaml) needs to be used.

    `settings` are the endpoint keys it reads besides the common ones (type, concurrency,
    rpm, tpm, timeout, max_response_mb), with their Python types; `required` those it
    cannot do without. `open` builds a provider (importing its SDK then, never at module
    import), `preflight` checks what can be known wrong before a run is created.
    """

    type: str
    open: Callable[[ResolvedModel, int, dict[str, Any]], Provider]
    settings: dict[str, builtins.type] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    preflight: Callable[[ResolvedModel, dict[str, Any]], None] = _no_check
    default_concurrency: int = 8
    # A server promptctl runs itself costs nothing per token.
    free: bool = False
    builtin_price: Callable[[str], Price | None] = _no_price
    token_counter: Callable[[str], tuple[Callable[[str], int], str]] = _char_counter
    # How the server is named in cache keys and stored runs (credential-free).
    identity: Callable[[ResolvedModel], str] | None = None
    # Asynchronous batches (`eval --batch`); None: the backend only answers requests directly.
    batch: BatchSupport | None = None
    # Whether the server answers `n` > 1 with that many choices in one request
    # (`eval --samples`); an endpoint may say otherwise with `supports_n: false`.
    multiple_choices: bool = True
