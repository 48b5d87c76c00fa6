"""Kinds of configured metrics (a `metrics:` entry that is a mapping): each registers itself
when its module is imported here."""

from __future__ import annotations

from promptctl.metrics import judge
from promptctl.metrics.registry import register_kind

register_kind(judge.KIND)
