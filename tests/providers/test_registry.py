"""The provider registry: a new backend is one module (a `Backend` with its factory) plus one
registration, and then works everywhere an endpoint does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promptctl import providers
from promptctl.providers import Backend, ChatRequest, ChatResponse, Provider, ResolvedModel
from tests.helpers import eval_json, invoke


class ReverseProvider(Provider):
    """Answers every request with its last user message reversed, after "echo: "."""

    opened: list[ReverseProvider] = []

    def __init__(self, resolved: ResolvedModel, concurrency: int) -> None:
        self.name = resolved.endpoint_name
        self.base_url = f"reverse://{resolved.endpoint.setting('word') if resolved.endpoint else ''}"
        self.concurrency = concurrency
        self.closed = False
        ReverseProvider.opened.append(self)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        text = request.messages[-1]["content"]
        return ChatResponse(text=f"echo: {text}", prompt_tokens=len(text.split()),
                            completion_tokens=2, model=request.model)

    async def aclose(self) -> None:
        self.closed = True


def _open(resolved: ResolvedModel, concurrency: int, params: dict[str, Any]) -> Provider:
    return ReverseProvider(resolved, concurrency)


BACKEND = Backend(type="reverse", open=_open, settings={"word": str, "depth": int},
                  required=("word",), default_concurrency=3, free=True,
                  identity=lambda r: f"reverse:{r.endpoint.setting('word') if r.endpoint else ''}")


@pytest.fixture
def registered() -> Iterator[None]:
    providers.register(BACKEND)
    ReverseProvider.opened.clear()
    yield
    providers.registry._loaded.pop("reverse", None)  # noqa: SLF001
    providers.BACKENDS.pop("reverse", None)


def config(project: Path, body: str) -> None:
    (project / "promptctl.yaml").write_text(f"endpoints:\n  rev: {body}\n", encoding="utf-8")


def test_a_registered_backend_runs_evaluations(registered: None, project: Path) -> None:
    config(project, "{type: reverse, word: hello, depth: 2, rpm: 6000}")
    run, _ = eval_json("prompts/echo.yaml", "--model", "rev/any-model")
    assert run["errors"] == 0 and run["metrics"]["exact_match"]["value"] == 1.0
    assert run["endpoint"] == "rev" and run["cost_usd"] == 0.0  # a free backend
    (provider,) = ReverseProvider.opened
    assert provider.concurrency == 3  # the backend's default concurrency
    assert provider.closed
    # The cache identity is the backend's: a second run sends nothing.
    again, _ = eval_json("prompts/echo.yaml", "--model", "rev/any-model")
    assert again["cached"] == 5 and len(ReverseProvider.opened) == 1


def test_settings_are_checked_against_the_backend(registered: None, project: Path) -> None:
    config(project, "{type: reverse}")
    assert "endpoint 'rev' (type reverse) needs word" in invoke(
        "eval", "prompts/echo.yaml", "--model", "rev/m", code=2).stderr
    config(project, "{type: reverse, word: hi, base_url: 'http://x'}")
    result = invoke("eval", "prompts/echo.yaml", "--model", "rev/m", code=2)
    assert "unknown key 'base_url' in endpoint 'rev' (type reverse)" in result.stderr
    assert "word" in result.stderr and "depth" in result.stderr
    config(project, "{type: reverse, word: hi, depth: many}")
    assert "depth must be a whole number" in invoke(
        "eval", "prompts/echo.yaml", "--model", "rev/m", code=2).stderr


def test_an_unknown_type_names_the_known_ones(project: Path) -> None:
    config(project, "{type: nosuch, word: x}")
    result = invoke("eval", "prompts/echo.yaml", "--model", "rev/m", code=2)
    assert "unknown endpoint type 'nosuch'" in result.stderr
    assert "llamacpp" in result.stderr and "openai" in result.stderr


def test_types_are_inferred_from_base_url_and_gguf(project: Path) -> None:
    from promptctl.config import load_config

    (project / "promptctl.yaml").write_text(
        "endpoints:\n  a: {base_url: 'http://127.0.0.1:1/v1'}\n  b: {gguf: m.gguf}\n",
        encoding="utf-8")
    endpoints = load_config(project).endpoints
    assert (endpoints["a"].type, endpoints["b"].type) == ("openai", "llamacpp")
    assert endpoints["b"].setting("gguf") == str(project / "m.gguf")
