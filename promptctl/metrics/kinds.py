"""Kinds of configured metrics (a `metrics:` entry that is a mapping): each registers itself
when its module is imported here."""

from __future__ import annotations
