"""The JSON documents printed by `--json`."""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Mapping
from typing import Any

from promptctl.redact import redact
from promptctl.render.inert import UNSAFE_BEYOND_C0


def coverage(run: Mapping[str, Any]) -> dict[str, Any]:
    """Whether a run covered its whole eval set: only such a run stands for its prompt version
    (a --limit run, an unfinished one or an interrupted resume does not)."""
    from promptctl.selection import covers_evalset

    options = run.get("options") or {}
    summary = run.get("summary") or {}
    return {"full": covers_evalset(run), "rows": summary.get("n", 0),
            "planned": run.get("n_planned"), "evalset_rows": options.get("evalset_rows"),
            "limit": options.get("limit")}


def run_json(run: Mapping[str, Any]) -> dict[str, Any]:
    """One run as `eval`, `rescore` and `runs` print it (docs/schema/run.schema.json)."""
    summary = run.get("summary") or {}
    latency = summary.get("latency_ms") or {}
    return {
        "id": run["id"],
        "prompt": run["prompt_name"],
        "prompt_path": run["prompt_path"],
        "prompt_version": run["prompt_version"],
        "git_commit": run["git_commit"],
        "git_dirty": run["git_dirty"],
        "git_branch": run["git_branch"],
        "model": run["model"],
        "endpoint": run["endpoint"],
        "evalset": run["evalset_path"],
        "evalset_version": run["evalset_version"],
        "status": run["status"],
        "coverage": coverage(run),
        "kind": run.get("kind") or "prompt",
        "parent_run": run.get("parent_run"),
        "created_at": run["created_at"],
        "n": summary.get("n", 0),
        "errors": summary.get("errors", 0),
        "no_text": summary.get("no_text", 0),
        "metrics": run.get("metrics") or {},
        "fewshot_metrics": run.get("fewshot_metrics") or {},
        "tokens": summary.get("tokens", {"prompt": 0, "completion": 0}),
        "cost_usd": summary.get("cost_usd"),
        "latency_ms": {k: latency.get(k) for k in ("p50", "p75", "p90", "p99")},
        "cached": summary.get("cached", 0),
        # Requests of judges and embeddings models, by model, apart from the evaluated one's.
        "scorers": summary.get("scorers") or {},
        "retries": summary.get("retries", 0),
        "system_fingerprints": summary.get("system_fingerprints", []),
        "consistency": summary.get("consistency"),
        # How the requests were served or sent, when not plainly in-process.
        **{k: summary[k] for k in ("server", "batch") if summary.get(k)},
        **_pipeline_json(run),
        # Rows a configured metric could not score, with their messages.
        **{k: summary[k] for k in ("scoring_errors",) if summary.get(k)},
    }


def _pipeline_json(run: Mapping[str, Any]) -> dict[str, Any]:
    """A pipeline run's steps with their own metrics, its composability gap and its
    control-flow correctness."""
    if (run.get("kind") or "prompt") != "pipeline":
        return {}
    summary = run.get("summary") or {}
    gap = summary.get("composability_gap") or {}
    return {"steps": summary.get("steps") or {},
            "composability_gap": {"value": gap.get("value"), "n": gap.get("n", 0),
                                  "wrong": gap.get("wrong", 0)},
            "control_flow": summary.get("control_flow")}


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
