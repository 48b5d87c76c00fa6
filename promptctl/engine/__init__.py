"""Evaluation, one engine for every target (a prompt, a pipeline): plan every unit of work,
send it through one worker pool and one gateway (cache, rate limits, providers), store rows
as they arrive, summarise, resume.

    plan.py       what will be sent; `validate` and `--dry-run` share it
    gateway.py    one request: cache, limits, provider, accounting
    send.py       the worker pool and the row context targets run their rows in
    lifecycle.py  a run's creation, ownership, end and resume, for every target and rescore
    summary.py    a run's aggregates from its stored rows, plus what the target's kind adds
    jobs.py       targets x models x eval sets to evaluate
    batch.py      a prompt's requests through an endpoint's Batch API
    rescore.py    a stored run's completions scored again
    estimate.py   --dry-run
"""

from __future__ import annotations

from promptctl.engine.gateway import Progress, ProgressFn
from promptctl.engine.jobs import Job, build_jobs
from promptctl.engine.lifecycle import EvalOptions, resume_eval, run_eval, run_job

__all__ = ["EvalOptions", "Job", "Progress", "ProgressFn", "build_jobs", "resume_eval", "run_eval",
           "run_job"]
