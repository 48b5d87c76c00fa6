"""Comparing runs: a paired diff of two runs, the history of a prompt, choosing runs by ref or model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from promptctl.errors import InputError
from promptctl.metrics import _pearson_rows, rankdata
from promptctl.prompts import LOWER_IS_BETTER
from promptctl.stats import paired_binary, paired_continuous

if TYPE_CHECKING:
    from promptctl.metrics import FloatArray
from promptctl.store.sqlite import Store

BINARY = {"format_validity": "format_validity", "exact_match": "exact_match",
          "accuracy": "exact_match", "contains": "contains", "regex": "regex"}
FLIPPED_LIMIT = 20


def _rmse(m: FloatArray) -> FloatArray:
    return np.asarray(np.sqrt(m.mean(axis=-1)), dtype=np.float64)


def _mean(m: FloatArray) -> FloatArray:
    return np.asarray(m.mean(axis=-1), dtype=np.float64)


def _pearson(m: FloatArray) -> FloatArray:
    return _pearson_rows(m[..., 0], m[..., 1])


def _spearman(m: FloatArray) -> FloatArray:
    return _pearson_rows(rankdata(m[..., 0]), rankdata(m[..., 1]))


# metric -> (per-row value from the scores dict, statistic over a (k, n[, 2]) matrix)
CONTINUOUS: dict[str, tuple[Callable[[dict[str, Any]], Any], Callable[[FloatArray], FloatArray]]] = {
    "rmse": (lambda s: s["squared_error"], _rmse),
    "mae": (lambda s: abs(s["answer_num"] - s["expected_num"]), _mean),
    "pearson": (lambda s: (s["answer_num"], s["expected_num"]), _pearson),
    "spearman": (lambda s: (s["answer_num"], s["expected_num"]), _spearman),
}


def _run_brief(run: dict[str, Any]) -> dict[str, Any]:
    keep = ("id", "created_at", "status", "prompt_name", "prompt_path", "prompt_version",
            "git_commit", "git_dirty", "git_branch", "model", "endpoint", "evalset_path",
            "evalset_version", "metrics", "summary")
    return {k: run.get(k) for k in keep}


def _rows(store: Store, run_id: str) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["row_id"], r["sample"]): r for r in store.iter_rows(run_id, kind="eval")}


def _flip(key: tuple[str, int], ra: dict[str, Any], rb: dict[str, Any]) -> dict[str, Any]:
    return {"row_id": key[0], "sample": key[1], "input": ra["input"],
            "expected": ra.get("expected"), "answer_a": ra.get("answer"),
            "answer_b": rb.get("answer"), "completion_a": ra.get("completion"),
            "completion_b": rb.get("completion")}


def compare_runs(store: Store, a_ref: str, b_ref: str) -> dict[str, Any]:
    """Paired comparison of run B against run A (B - A), by row id.

    Per metric: both values, the delta, a 95% paired bootstrap interval of the
    delta and a p-value (exact McNemar for 0/1 scores, paired permutation for
    continuous ones); then the rows that flipped and the warnings that make a
    comparison suspect.
    """
    run_a, run_b = store.get_run(a_ref), store.get_run(b_ref)
    rows_a, rows_b = _rows(store, run_a["id"]), _rows(store, run_b["id"])
    common = [k for k in rows_a if k in rows_b]
    ok = [k for k in common if rows_a[k]["error"] is None and rows_b[k]["error"] is None]
    names = [m for m in (run_b.get("metrics") or {}) if m in (run_a.get("metrics") or {})]
    metrics: dict[str, Any] = {}
    for name in names:
        entry: dict[str, Any] = {
            "a": (run_a["metrics"][name] or {}).get("value"),
            "b": (run_b["metrics"][name] or {}).get("value"),
            "higher_is_better": name not in LOWER_IS_BETTER,
        }
        if name in BINARY:
            key = BINARY[name]
            pairs = [(rows_a[k]["scores"][key], rows_b[k]["scores"][key]) for k in ok
                     if key in (rows_a[k]["scores"] or {}) and key in (rows_b[k]["scores"] or {})]
            arr = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
            entry.update(paired_binary(arr[:, 0], arr[:, 1]))
        elif name in CONTINUOUS:
            value, statistic = CONTINUOUS[name]
            pairs_c = [(value(rows_a[k]["scores"]), value(rows_b[k]["scores"])) for k in ok
                       if "answer_num" in (rows_a[k]["scores"] or {})
                       and "answer_num" in (rows_b[k]["scores"] or {})]
            a = np.asarray([p[0] for p in pairs_c], dtype=np.float64)
            b = np.asarray([p[1] for p in pairs_c], dtype=np.float64)
            if len(pairs_c) < 3 and name in ("pearson", "spearman"):
                entry.update({"delta": None, "ci95": None, "p_value": None,
                              "test": "paired_permutation", "n": len(pairs_c)})
            else:
                entry.update(paired_continuous(a, b, statistic))
        else:
            continue
        if entry["delta"] is not None:
            worse = entry["delta"] > 0 if name in LOWER_IS_BETTER else entry["delta"] < 0
            entry["direction"] = "same" if entry["delta"] == 0 else ("worse" if worse else "better")
        metrics[name] = entry
    return {
        "a": _run_brief(run_a), "b": _run_brief(run_b), "metrics": metrics,
        "paired_rows": len(ok), "only_in_a": len(rows_a) - len(common),
        "only_in_b": len(rows_b) - len(common),
        "errors_excluded": len(common) - len(ok),
        "flipped": _flipped(rows_a, rows_b, ok),
        "warnings": _warnings(run_a, run_b, rows_a, rows_b, common),
    }


def _flipped(rows_a: dict[tuple[str, int], dict[str, Any]], rows_b: dict[tuple[str, int], dict[str, Any]],
             ok: list[tuple[str, int]]) -> dict[str, list[dict[str, Any]]]:
    regressed, improved, error_up = [], [], []
    for k in ok:
        sa, sb = rows_a[k]["scores"] or {}, rows_b[k]["scores"] or {}
        key = "exact_match" if "exact_match" in sa and "exact_match" in sb else "format_validity"
        if key in sa and key in sb:
            if sa[key] > sb[key]:
                regressed.append(_flip(k, rows_a[k], rows_b[k]) | {"metric": key})
            elif sa[key] < sb[key]:
                improved.append(_flip(k, rows_a[k], rows_b[k]) | {"metric": key})
        if "squared_error" in sa and "squared_error" in sb and sb["squared_error"] > sa["squared_error"]:
            error_up.append(_flip(k, rows_a[k], rows_b[k])
                            | {"error_a": abs(sa["answer_num"] - sa["expected_num"]),
                               "error_b": abs(sb["answer_num"] - sb["expected_num"])})
    error_up.sort(key=lambda r: r["error_b"] - r["error_a"], reverse=True)
    return {"pass_to_fail": regressed, "fail_to_pass": improved,
            "biggest_error_increases": error_up[:FLIPPED_LIMIT]}


def _warnings(run_a: dict[str, Any], run_b: dict[str, Any], rows_a: dict[Any, Any],
              rows_b: dict[Any, Any], common: list[Any]) -> list[str]:
    out = []
    if run_a["evalset_version"] != run_b["evalset_version"]:
        out.append("A and B used different eval set versions: only rows with the same id are "
                   "paired, and an edited row compares different questions")
    if run_a["model"] != run_b["model"]:
        out.append(f"different models: {run_a['model']} vs {run_b['model']}")
    for side, run in (("A", run_a), ("B", run_b)):
        if run["git_dirty"]:
            out.append(f"{side} ({run['id']}) ran on a dirty work tree: its commit does not "
                       "reproduce it")
        if run["status"] != "complete":
            out.append(f"{side} ({run['id']}) is {run['status']}")
    fa = set((run_a.get("summary") or {}).get("system_fingerprints") or [])
    fb = set((run_b.get("summary") or {}).get("system_fingerprints") or [])
    if run_a["model"] == run_b["model"] and fa and fb and fa != fb:
        out.append(f"the server reported different system fingerprints ({', '.join(sorted(fa))} "
                   f"vs {', '.join(sorted(fb))}): the model behind the name may have changed")
    if len(common) < max(len(rows_a), len(rows_b)):
        out.append(f"{len(rows_a) - len(common)} row(s) only in A and {len(rows_b) - len(common)} "
                   "only in B are not compared")
    return out


def find_run(store: Store, prompt: str, *, commit: str | None = None, model: str | None = None,
             prompt_version: str | None = None) -> dict[str, Any] | None:
    """The newest complete run of a prompt matching commit / model / version, clean trees first."""
    candidates = [r for r in store.list_runs(prompt)
                  if r["status"] == "complete"
                  and (commit is None or r["git_commit"] == commit)
                  and (model is None or r["model"] == model)
                  and (prompt_version is None or r["prompt_version"] == prompt_version)]
    candidates.sort(key=lambda r: (not r["git_dirty"], r["id"]), reverse=True)
    return candidates[0] if candidates else None


def resolve_ref(root: Path, ref: str) -> str:
    """The commit sha a git ref names in the repository at `root`."""
    import git

    try:
        repo = git.Repo(root, search_parent_directories=True)
        return str(repo.commit(ref).hexsha)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise InputError("not inside a git repository", file=root,
                         fix="compare run ids instead: promptctl diff RUN_A RUN_B") from None
    except (git.BadName, ValueError, git.GitCommandError):
        raise InputError(f"{ref!r} is neither a stored run id nor a git ref",
                         fix="list runs with `promptctl runs`, or name a branch, tag or commit") from None


def history(store: Store, prompt: str, *, model: str | None = None,
            root: Path | None = None) -> dict[str, Any]:
    """One entry per (prompt version, model), newest first, with its metrics and commit facts."""
    seen: set[tuple[str, str]] = set()
    entries = []
    for run in store.list_runs(prompt):
        if run["status"] != "complete" or (model is not None and run["model"] != model):
            continue
        key = (run["prompt_version"], run["model"])
        if key in seen:
            continue
        seen.add(key)
        entries.append({"run": run["id"], "created_at": run["created_at"],
                        "prompt_version": run["prompt_version"], "model": run["model"],
                        "git_commit": run["git_commit"], "git_dirty": run["git_dirty"],
                        "metrics": {k: (v or {}).get("value") for k, v in (run["metrics"] or {}).items()},
                        "n": (run["summary"] or {}).get("n"),
                        "errors": (run["summary"] or {}).get("errors")})
    if root is not None:
        _add_commit_facts(root, entries)
    return {"prompt": prompt, "model": model, "versions": entries}


def _add_commit_facts(root: Path, entries: list[dict[str, Any]]) -> None:
    shas = {e["git_commit"] for e in entries if e["git_commit"]}
    if not shas:
        return
    import git

    try:
        repo = git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return
    facts: dict[str, dict[str, Any]] = {}
    for sha in shas:
        try:
            c = repo.commit(sha)
        except (ValueError, git.BadName):
            continue
        facts[sha] = {"date": c.committed_datetime.isoformat(), "author": c.author.name,
                      "subject": c.summary}
    for e in entries:
        e.update(facts.get(e["git_commit"] or "", {"date": None, "author": None, "subject": None}))
