"""Cache keys: the sha256 of everything that determines a stored answer or embedding."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def cache_key(cache_url: str, model: str, messages: list[dict[str, str]], params: dict[str, Any],
              sample: int, extra: str | None = None) -> str:
    """sha256 of everything that determines the answer."""
    blob = json.dumps({"url": cache_url, "model": model, "messages": messages, "params": params,
                       "sample": sample, **({"extra": extra} if extra else {})},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def embedding_key(cache_url: str, model: str, text: str) -> str:
    """sha256 of what determines an embedding: the server, the model and the text."""
    blob = json.dumps({"url": cache_url, "model": model, "embed": text}, sort_keys=True,
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
