"""The wire format of OpenAI-compatible chat completions, shared by direct requests
(`openai`) and batches (`batch`): the request body, a completion document read into a
`ChatResponse` (its text and its tool calls), an SDK error's message, server text made
storable."""

from __future__ import annotations

import json
import re
from typing import Any

from promptctl import redact
from promptctl.providers.base import ChatRequest, ChatResponse, Choice, RequestFailed

_MAX_TOKENS = 2**53
_SURROGATES = re.compile("[\ud800-\udfff]")


def clean_text(value: Any) -> str:
    """Server text made storable: lone surrogates (invalid in UTF-8) replaced, secrets masked."""
    text = value if isinstance(value, str) else str(value)
    return redact.redact(_SURROGATES.sub("\ufffd", text))


def _opt_text(value: Any, limit: int = 200) -> str | None:
    """A short string field of a response (model name, fingerprint): None unless a string."""
    if not isinstance(value, str):
        return None
    return clean_text(value[:limit])


def error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return str(getattr(exc, "message", None) or exc)


def int_or_none(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MAX_TOKENS:
        return value
    return None


def _content(message: Any) -> tuple[str | None, str | None]:
    """(text, why there is none) of a response message.

    Content may be a string, a list of parts (`[{"type": "text", "text": ...}]`), or null
    beside tool calls or a refusal.
    """
    if not isinstance(message, dict):
        return None, "the response has no choices[0].message"
    content = message.get("content")
    if isinstance(content, str) and content:
        return content, None
    if isinstance(content, list):
        parts = [str(p["text"]) for p in content
                 if isinstance(p, dict) and isinstance(p.get("text"), str)]
        if parts:
            return "".join(parts), None
    calls = message.get("tool_calls") or message.get("function_call")
    if calls:
        names = []
        for call in calls if isinstance(calls, list) else [calls]:
            fn = call.get("function", call) if isinstance(call, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                names.append(fn["name"][:60])
        return None, "the model called a tool" + (f" ({', '.join(names)})" if names else "")
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        return None, f"the model refused: {message['refusal'][:200]}"
    if content == "":
        return "", None
    return None, "the message content was null"


def _call_text(value: Any, limit: int = 200) -> str | None:
    """A short string field of a tool call (its id, type, function name): None unless a
    non-empty string."""
    return clean_text(value[:limit]) if isinstance(value, str) and value else None


def _arguments(value: Any) -> str | None:
    """A call's arguments as the JSON text the API sends: a string as it came (storable);
    a JSON value some servers send in its place, as its JSON text."""
    if value is None:
        return None
    if isinstance(value, str):
        return clean_text(value)
    try:
        return clean_text(json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError, RecursionError):
        return None


def _storable_call(call: Any) -> dict[str, Any]:
    """One tool call of a response in the API's shape, `{"id", "type", "function": {"name",
    "arguments"}}`, whatever the server sent: missing or mistyped fields become null, a call
    that is not an object a call without a function (reading it says so)."""
    if not isinstance(call, dict):
        return {"id": None, "type": None, "function": None}
    function = call.get("function")
    if "function" not in call and ("name" in call or "arguments" in call):
        function = call  # the legacy `function_call` shape: {"name", "arguments"}
    return {"id": _call_text(call.get("id")), "type": _call_text(call.get("type")),
            "function": {"name": _call_text(function.get("name"), 500),
                         "arguments": _arguments(function.get("arguments"))}
            if isinstance(function, dict) else None}


def tool_calls(message: Any) -> list[dict[str, Any]] | None:
    """The tool calls of a response message, storable (see `_storable_call`); None when it
    made none. `function_call` (the API's older single call) counts as one call."""
    if not isinstance(message, dict):
        return None
    calls = message.get("tool_calls") or message.get("function_call")
    if not calls:
        return None
    items = calls if isinstance(calls, list) else [calls]
    return [_storable_call(c) for c in items] or None


def request_body(request: ChatRequest) -> dict[str, Any]:
    """The JSON body of a chat completions request (sent directly or as a batch line)."""
    params = dict(request.params)
    extra = params.pop("extra_body", None)  # the SDK's spelling, accepted in prompt params
    return {**params, **(extra if isinstance(extra, dict) else {}),
            "model": request.model, "messages": request.messages}


def _choices(choices: list[Any]) -> tuple[Choice, ...]:
    """Every choice of a response to `n` > 1, in the order of their `index` (servers need not
    send them in order); a choice without a message is one without text."""
    def order(item: tuple[int, Any]) -> tuple[int, int]:
        position, choice = item
        index = choice.get("index") if isinstance(choice, dict) else None
        return (index if isinstance(index, int) and not isinstance(index, bool) else position,
                position)

    out = []
    for _, choice in sorted(enumerate(choices), key=order):
        text, no_text = _content(choice.get("message") if isinstance(choice, dict) else None)
        out.append(Choice(clean_text(text) if text is not None else "",
                          clean_text(no_text) if no_text is not None else None))
    return tuple(out)


def chat_response(data: Any, *, latency_ms: float, attempts: int) -> ChatResponse:
    """A chat completion document as a response; RequestFailed when it holds no message."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise RequestFailed("the response has no choices[0].message", attempts=attempts)
    text, no_text = _content(choices[0].get("message"))
    if text is None and no_text == "the response has no choices[0].message":
        raise RequestFailed(no_text, attempts=attempts)
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return ChatResponse(
        choices=_choices(choices) if len(choices) > 1 else (),
        tool_calls=tool_calls(choices[0].get("message")),
        text=clean_text(text) if text is not None else "",
        prompt_tokens=int_or_none(usage.get("prompt_tokens")),
        completion_tokens=int_or_none(usage.get("completion_tokens")),
        model=_opt_text(data.get("model")),
        system_fingerprint=_opt_text(data.get("system_fingerprint")),
        latency_ms=latency_ms,
        attempts=attempts,
        no_text=clean_text(no_text) if no_text is not None else None,
    )
