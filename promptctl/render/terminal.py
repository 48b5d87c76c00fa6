"""Rich tables for humans; plain text when stdout is not a terminal (rich decides)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from promptctl.prompts import LOWER_IS_BETTER


def console(stderr: bool = False) -> Console:
    """A console that honours NO_COLOR; off a terminal, wide enough that tables stay readable."""
    import os
    import sys

    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not (hasattr(stream, "isatty") and stream.isatty()) and not os.environ.get("COLUMNS"):
        width = 160  # logs and pipes have no width; 80 squeezes every table into ellipses
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def fmt_value(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def fmt_metric(result: dict[str, Any] | None) -> str:
    if not result or result.get("value") is None:
        return "-"
    text = fmt_value(result["value"])
    ci = result.get("ci95")
    if ci:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def fmt_cost(cost: float | None) -> str:
    if cost is None:
        return "unknown (add the model to pricing: in promptctl.yaml)"
    return f"${cost:.4f}" if cost < 100 else f"${cost:,.2f}"


def _short(sha: str | None, n: int = 10) -> str:
    return sha[:n] if sha else "-"


def run_summary(con: Console, run: Mapping[str, Any]) -> None:
    """The summary table of one run: metrics with intervals, few-shot side by side, accounting."""
    summary = run.get("summary") or {}
    dirty = " (dirty)" if run.get("git_dirty") else ""
    status = "" if run["status"] == "complete" else f"  [bold red]{run['status']}[/]"
    con.print(f"[bold]{escape(run['prompt_name'])}[/] with [bold]{escape(run['model'])}[/]  "
              f"run {run['id']}  commit {_short(run['git_commit'])}{dirty}  "
              f"prompt {run['prompt_version'][:12]}{status}")
    table = Table(show_edge=False, header_style="bold")
    table.add_column("metric")
    table.add_column("eval set (95% CI)", justify="right")
    table.add_column("n", justify="right")
    table.add_column("few-shot examples", justify="right")
    table.add_column("n", justify="right")
    metrics = run.get("metrics") or {}
    fewshot = run.get("fewshot_metrics") or {}
    for name, result in metrics.items():
        label = name + (" (lower is better)" if name in LOWER_IS_BETTER else "")
        fs = fewshot.get(name) or {}
        table.add_row(label, fmt_metric(result), str(result.get("n", 0)),
                      fmt_metric(fs) if fs.get("n") else "-", str(fs.get("n", 0)))
    con.print(table)
    latency = summary.get("latency_ms") or {}
    tokens = summary.get("tokens") or {}
    lat = "  ".join(f"{k} {v:.0f}" for k, v in latency.items()) or "-"
    errors = summary.get("errors", 0) + summary.get("fewshot_errors", 0)
    con.print(f"rows {summary.get('n', 0)}  errors {errors}  cached {summary.get('cached', 0)}  "
              f"retries {summary.get('retries', 0)}  tokens {tokens.get('prompt', 0)} in / "
              f"{tokens.get('completion', 0)} out  cost {fmt_cost(summary.get('cost_usd'))}")
    con.print(f"latency ms  {lat}")
    consistency = summary.get("consistency")
    if consistency:
        repeat_summary(con, consistency)
    fps = summary.get("system_fingerprints") or []
    models = summary.get("response_models") or []
    if len(fps) > 1 or len(models) > 1:
        con.print(f"[yellow]warning:[/] the server answered as several models/fingerprints "
                  f"({escape(', '.join(models + fps))}): results may mix model versions")


def repeat_summary(con: Console, c: dict[str, Any]) -> None:
    """`eval --repeat K`: how stable the answers were across the K samples of each row."""
    con.print(f"repeat {c['k']} samples per row over {c['rows']} rows: mean agreement "
              f"{fmt_metric(c['mean_agreement'])}  unstable rows {fmt_metric(c['unstable_share'])}")
    con.print(f"pass@{c['k']} {fmt_metric(c['pass_at_k'])}  pass^{c['k']} "
              f"{fmt_metric(c['pass_hat_k'])}  majority-vote exact_match "
              f"{fmt_metric(c['majority_exact_match'])}")
    flaky = c.get("flaky_rows") or []
    if flaky:
        shown = ", ".join(f"{escape(str(r['row_id']))} ({r['agreement']:.0%})" for r in flaky[:10])
        more = f" and {len(flaky) - 10} more" if len(flaky) > 10 else ""
        con.print(f"[yellow]flaky rows ({len(flaky)}):[/] {shown}{more}", soft_wrap=True)
    else:
        con.print("flaky rows: none (every sample of every row gave the same answer)")


def runs_table(con: Console, runs: Sequence[Mapping[str, Any]]) -> None:
    """Stored runs, newest first."""
    table = Table(show_edge=False, header_style="bold")
    for col in ("id", "time (UTC)", "prompt", "commit", "dirty", "version", "model", "status",
                "n", "err", "metrics"):
        table.add_column(col, no_wrap=col != "metrics")
    for run in runs:
        summary = run.get("summary") or {}
        metrics = run.get("metrics") or {}
        shown = "  ".join(f"{k} {fmt_value(v.get('value'))}" for k, v in metrics.items())
        table.add_row(run["id"], run["created_at"][:19].replace("T", " "),
                      escape(run["prompt_name"]), _short(run["git_commit"], 8),
                      "yes" if run["git_dirty"] else ("-" if run["git_dirty"] is None else "no"),
                      run["prompt_version"][:8], escape(run["model"]), run["status"],
                      str(summary.get("n", 0)), str(summary.get("errors", 0)), shown)
    con.print(table)


def _compact(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", " ⏎ ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def show_rows(con: Console, run: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> None:
    """One run row by row."""
    run_summary(con, run)
    table = Table(show_edge=False, header_style="bold", show_lines=True)
    for col in ("row", "input", "completion", "answer", "expected", "scores", "tokens", "ms"):
        table.add_column(col, overflow="fold")
    for row in rows:
        tag = row["row_id"] + ("" if row["kind"] == "eval" else " (few-shot)")
        if row["sample"]:
            tag += f" #{row['sample']}"
        if row.get("error"):
            table.add_row(escape(tag), escape(_compact(row["input"])),
                          f"[red]error:[/] {escape(row['error'])}", "", "", "", "", "")
            continue
        answer = (escape(_compact(row["answer"])) if row["valid"]
                  else f"[red]invalid[/] {escape(str(row.get('extract_error')))}")
        scores = row.get("scores") or {}
        shown = " ".join(f"{k}={v:g}" for k, v in scores.items()
                         if isinstance(v, float) and k in ("exact_match", "format_validity",
                                                           "squared_error", "contains", "regex"))
        tokens = f"{row['prompt_tokens'] or 0}/{row['completion_tokens'] or 0}"
        expected = _compact(row["expected"]) if row.get("has_expected") else "-"
        table.add_row(escape(tag), escape(_compact(row["input"])),
                      escape(_compact(row["completion"] or "")),
                      answer, escape(expected), shown,
                      tokens + (" cached" if row["cached"] else ""),
                      fmt_value(row["latency_ms"], 0))
    con.print(table)


def dry_run_table(con: Console, plans: list[dict[str, Any]]) -> None:
    """What `eval --dry-run` would send."""
    table = Table(show_edge=False, header_style="bold")
    for col in ("prompt", "model", "requests", "cached", "to send", "prompt tokens",
                "completion tokens (max)", "cost (max)"):
        table.add_column(col, justify="left" if col in ("prompt", "model") else "right")
    for p in plans:
        table.add_row(escape(p["prompt"]), escape(p["model"]), str(p["requests"]),
                      str(p["cached"]), str(p["to_send"]), str(p["prompt_tokens"]),
                      "-" if p["completion_tokens_max"] is None else str(p["completion_tokens_max"]),
                      fmt_cost(p["estimated_cost_usd_max"]))
    con.print(table)
    methods = sorted({p["token_count_method"] for p in plans})
    con.print(f"prompt tokens: {', '.join(methods)}; nothing was sent")
    for p in plans:
        if p["first_request"]:
            con.print(f"\n[bold]first request of {escape(p['prompt'])}[/]:")
            for m in p["first_request"]:
                con.print(f"[dim]{m['role']}:[/] {escape(m['content'])}", soft_wrap=True)
