"""Evaluation: plan every request, send them concurrently through one gateway (cache,
rate limits, providers), store rows as they arrive, summarise, resume.

    plan.py       what will be sent; `validate` and `--dry-run` share it
    gateway.py    one request: cache, limits, provider, accounting
    send.py       the send loop and the stored row of each answer
    lifecycle.py  a run's creation, ownership, end and resume
    summary.py    a run's aggregates from its stored rows
    jobs.py       prompts x models x eval sets to evaluate
"""

from __future__ import annotations

from promptctl.engine.gateway import Progress, ProgressFn
from promptctl.engine.jobs import Job, build_jobs
from promptctl.engine.lifecycle import EvalOptions, resume_eval, run_eval, run_job

__all__ = ["EvalOptions", "Job", "Progress", "ProgressFn", "build_jobs", "resume_eval", "run_eval",
           "run_job"]
