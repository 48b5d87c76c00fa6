"""Kinds of configured metrics (a `metrics:` entry that is a mapping): each registers itself
when its module is imported here."""

from __future__ import annotations

import promptctl.metrics.custom  # noqa: F401,E402 - custom: FILE.py:FUNCTION or an installed scorer
import promptctl.metrics.similarity  # noqa: F401,E402 - similarity: {model: ...}, by embeddings
from promptctl.metrics import judge
from promptctl.metrics.registry import register_kind

register_kind(judge.KIND)
