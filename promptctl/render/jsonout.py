"""The JSON documents printed by `--json`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def run_json(run: Mapping[str, Any]) -> dict[str, Any]:
    """One run in the shape of SPEC.md section 5 (plus a few extra keys)."""
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
        "created_at": run["created_at"],
        "n": summary.get("n", 0),
        "errors": summary.get("errors", 0),
        "metrics": run.get("metrics") or {},
        "fewshot_metrics": run.get("fewshot_metrics") or {},
        "tokens": summary.get("tokens", {"prompt": 0, "completion": 0}),
        "cost_usd": summary.get("cost_usd"),
        "latency_ms": {k: latency.get(k) for k in ("p50", "p75", "p90", "p99")},
        "cached": summary.get("cached", 0),
        "retries": summary.get("retries", 0),
        "system_fingerprints": summary.get("system_fingerprints", []),
        "consistency": summary.get("consistency"),
        # How the requests were served or sent, when not plainly in-process.
        **{k: summary[k] for k in ("server", "senders") if summary.get(k)},
    }


def dumps(document: Any) -> str:
    """Stable, readable JSON."""
    return json.dumps(document, ensure_ascii=False, indent=2, default=str)
