"""The JSON documents printed by `--json`."""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Iterable, Mapping
from typing import Any

from promptctl.metrics.registry import internal_key
from promptctl.redact import redact
from promptctl.render.inert import UNSAFE_BEYOND_C0
from promptctl.runs import RunResult
from promptctl.toolcalls import SAMPLES_KEY, TOOL_CALLS_KEY, TRAJECTORY_KEY


def coverage(run: RunResult) -> dict[str, Any]:
    """Whether a run covered its whole eval set: only such a run stands for its prompt version
    (a --limit run, an unfinished one or an interrupted resume does not)."""
    return {"full": run.covers_evalset, "rows": run.summary.n, "planned": run.n_planned,
            "evalset_rows": run.options.get("evalset_rows"), "limit": run.options.get("limit")}


def run_json(run: RunResult) -> dict[str, Any]:
    """One run as `eval`, `rescore` and `runs` print it (docs/schema/run.schema.json)."""
    s = run.summary
    return {
        "id": run.id,
        "prompt": run.prompt_name,
        "prompt_path": run.prompt_path,
        "prompt_version": run.prompt_version,
        "git_commit": run.git_commit,
        "git_dirty": run.git_dirty,
        "git_branch": run.git_branch,
        "model": run.model,
        "endpoint": run.endpoint,
        "base_url": run.base_url,
        "evalset": run.evalset_path,
        "evalset_version": run.evalset_version,
        "status": run.status,
        "coverage": coverage(run),
        "kind": run.kind,
        "parent_run": run.parent_run,
        "created_at": run.created_at,
        # The eval set's rows, and the answers stored for them (K per row with --repeat K).
        "n": s.rows,
        "samples": s.n,
        "errors": s.errors,
        "no_text": s.no_text,
        "metrics": {k: v.to_json() for k, v in run.metrics.items()},
        "fewshot_metrics": {k: v.to_json() for k, v in run.fewshot_metrics.items()},
        "tokens": {"prompt": s.tokens.prompt, "completion": s.tokens.completion},
        # What the answers cost as if none were cached, what this run paid, what the cache
        # saved: scorers' usage below has the same cost_usd and spent_usd.
        "cost_usd": s.cost_usd,
        "spent_usd": s.spent_usd,
        "saved_usd": s.saved_usd,
        "latency_ms": {k: s.latency_ms.get(k) for k in ("p50", "p75", "p90", "p99")},
        "cached": s.cached,
        # Requests of judges and embeddings models, by model, apart from the evaluated one's.
        "scorers": s.scorers,
        "retries": s.retries,
        "system_fingerprints": list(s.system_fingerprints),
        "consistency": s.consistency,
        # eval --samples K: the vote against the first sample on the same rows, and its cost.
        **({"self_consistency": dict(s.samples.figures)} if s.samples is not None else {}),
        # How the requests were served or sent, when not plainly in-process.
        **({"server": s.server} if s.server else {}),
        **({"batch": s.batch} if s.batch else {}),
        **_pipeline_json(run),
        # An agent run's turns, tool errors, turn limit, tool selection, gap and time.
        **({"agent": {**s.agent, "cost_usd_per_row": _per_row(s.cost_usd, s.rows)}}
           if run.kind == "agent" and s.agent is not None else {}),
        # A probe run's per-label round-trip agreement.
        **({"probe": s.probe.to_json()} if s.probe is not None else {}),
        # Rows a configured metric could not score, with their messages.
        **({"scoring_errors": {k: {"count": v.count, "samples": v.samples,
                                   "fewshot": v.fewshot, "rows": list(v.rows)}
                               for k, v in s.scoring_errors.items()}}
           if s.scoring_errors else {}),
    }


def _scores_only(value: Any) -> Any:
    """A stored row's (or step's) scores without internal markers (see `internal_key`)."""
    if not isinstance(value, Mapping):
        return value
    return {k: v for k, v in value.items() if not internal_key(str(k))}


def _step_json(step: Any) -> Any:
    if not isinstance(step, Mapping):
        return step
    out = dict(step)
    if "scores" in out:
        out["scores"] = _scores_only(out["scores"])
    if isinstance(out.get("items"), list):
        out["items"] = [_step_json(i) for i in out["items"]]
    return out


def row_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """One stored row as `show --json` prints it (docs/schema/show.schema.json): as stored,
    but only scores in `scores` (a run stored by an older version kept internal markers such
    as `NAME__unscored` there), and the response's tool calls as `tool_calls` (null when it
    kept none) rather than inside `judges`, which holds what configured metrics keep."""
    judges = row.get("judges")
    calls = None
    trajectory = None
    if isinstance(judges, Mapping) and TOOL_CALLS_KEY in judges:
        calls = judges[TOOL_CALLS_KEY]
        judges = {k: v for k, v in judges.items() if k != TOOL_CALLS_KEY} or None
    sampled = None
    if isinstance(judges, Mapping) and SAMPLES_KEY in judges:
        sampled = judges[SAMPLES_KEY]
        judges = {k: v for k, v in judges.items() if k != SAMPLES_KEY} or None
    if isinstance(judges, Mapping) and TRAJECTORY_KEY in judges:
        trajectory = judges[TRAJECTORY_KEY]
        judges = {k: v for k, v in judges.items() if k != TRAJECTORY_KEY} or None
    out = {**row, "judges": judges, "tool_calls": calls}
    if trajectory is not None:
        # An agent row's turns, calls and results (stored in `judges`, shown apart).
        out["trajectory"] = trajectory
    if sampled is not None:
        # A sampled row's K samples and its vote (stored in `judges`, shown apart).
        out["self_consistency"] = sampled
    if "scores" in out:
        out["scores"] = _scores_only(out["scores"])
    if isinstance(out.get("steps"), Mapping):
        out["steps"] = {k: _step_json(v) for k, v in out["steps"].items()}
    return out


def show_json(run: RunResult, rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """`promptctl show RUN --json` (docs/schema/show.schema.json): the run and its rows, which
    the HTML report reads too."""
    return {"run": run_json(run), "rows": [row_json(r) for r in rows]}


def _per_row(total: float | None, rows: int) -> float | None:
    """What a run's `total` comes to per eval row (None when unknown or no rows)."""
    return None if total is None or not rows else round(total / rows, 8)


def _pipeline_json(run: RunResult) -> dict[str, Any]:
    """A pipeline run's steps with their own metrics, its composability gap and its
    control-flow correctness."""
    if run.kind != "pipeline":
        return {}
    s = run.summary
    gap = s.composability_gap
    return {"steps": {k: v.to_json() for k, v in s.steps.items()},
            "composability_gap": {"value": gap.value if gap else None, "n": gap.n if gap else 0,
                                  "wrong": gap.wrong if gap else 0},
            "control_flow": s.control_flow.to_json() if s.control_flow is not None else None}


def _plain(value: Any) -> Any:
    """`value` as plain JSON data: secrets masked in every string (keys too), NaN and
    infinities as null (they have no JSON form), other numbers as numbers, anything else
    as its text."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {redact(str(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return _plain(float(value))
    return redact(str(value))


# Characters JSON may carry raw but a terminal or a reader acts on (DEL, C1 controls such
# as U+009B CSI, bidi controls, line separators) or no encoder can write (lone surrogates):
# written as \u escapes, which parse back to the same text.
_RAW_UNSAFE = re.compile(f"[{UNSAFE_BEYOND_C0}]")


def dumps(document: Any) -> str:
    """Strict, stable, readable JSON for `--json`: the exact text of every value, secrets
    masked, NaN and infinities as null, and nothing a terminal would act on."""
    text = json.dumps(_plain(document), ensure_ascii=False, indent=2, allow_nan=False)
    # Outside strings JSON is ASCII punctuation, digits and letters, so every match lies
    # inside a string, where a \u escape means the same character.
    return _RAW_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
