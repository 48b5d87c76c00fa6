"""How many prompt tokens a chat request takes, for estimates made before sending."""

from __future__ import annotations

from collections.abc import Callable

# Chat formatting adds a few tokens per message around the content (OpenAI's
# published accounting for its chat models).
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_REPLY = 3


def message_tokens(messages: list[dict[str, str]], count: Callable[[str], int]) -> int:
    """Estimated prompt tokens of one chat request."""
    return _TOKENS_PER_REPLY + sum(_TOKENS_PER_MESSAGE + count(m["content"]) for m in messages)
