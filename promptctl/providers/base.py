"""The provider interface: one async method that turns a chat request into a completion."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


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


class RequestFailed(Exception):
    """A request that failed after every retry: the row becomes an error, not a wrong answer."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1) -> None:
        self.status = status
        self.attempts = attempts
        super().__init__(message)


class Provider(ABC):
    """An OpenAI-compatible chat endpoint."""

    name: str
    base_url: str

    @abstractmethod
    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Send one request (retrying transient failures) and return the completion.

        Raises `RequestFailed` for a row-level failure, `PromptctlError` for a
        failure that would hit every row (bad key, unknown model, rejected parameter).
        """

    def describe(self) -> dict[str, Any]:
        """Facts worth keeping in the run's summary, by key: a managed server's pid and
        start-up under "server", the sender processes under "senders"."""
        return {}

    async def start(self) -> None:  # noqa: B027 - most providers are ready once built
        """Get ready to send: called once, before the first request (and before rate limits
        start counting)."""

    async def aclose(self) -> None:  # noqa: B027 - most providers hold nothing to release
        """Release connections and any server this provider started."""
