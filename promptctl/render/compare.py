"""Diff and history: terminal tables and Markdown."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from promptctl.render.terminal import fmt_value

SPARKS = "▁▂▃▄▅▆▇█"


def fmt_delta(entry: dict[str, Any]) -> str:
    if entry.get("delta") is None:
        return "-"
    return f"{entry['delta']:+.3f}"


def fmt_ci(entry: dict[str, Any]) -> str:
    ci = entry.get("ci95")
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "-"


def fmt_p(entry: dict[str, Any]) -> str:
    p = entry.get("p_value")
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _side(run: dict[str, Any]) -> str:
    commit = (run.get("git_commit") or "-")[:10]
    dirty = "*" if run.get("git_dirty") else ""
    return f"{run['id']} ({run['model']}, {commit}{dirty}, prompt {run['prompt_version'][:8]})"


def _compact(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


SHOWN_ROWS = 20
SPARK_WIDTH = 60


def _verdict(e: dict[str, Any], markup: bool = True) -> str:
    verdict = str(e.get("direction", ""))
    significant = e.get("p_value") is not None and e["p_value"] < 0.05
    if verdict in ("worse", "better") and not significant:
        return verdict + " (not significant)"
    if markup and verdict == "worse":
        return "[red]worse[/]"
    if markup and verdict == "better":
        return "[green]better[/]"
    return verdict


def _flip_groups(result: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    flipped = result["flipped"]
    return [("pass → fail", flipped["pass_to_fail"]), ("fail → pass", flipped["fail_to_pass"]),
            ("biggest error increases", flipped["biggest_error_increases"])]


def diff_terminal(con: Console, result: dict[str, Any]) -> None:
    """Per-metric deltas with intervals and p-values, then flipped rows and warnings."""
    con.print(f"A: {escape(_side(result['a']))}")
    con.print(f"B: {escape(_side(result['b']))}")
    table = Table(show_edge=False, header_style="bold")
    for col in ("metric", "A", "B", "delta (B-A)", "95% CI", "p", "test", "n", ""):
        table.add_column(col, justify="left" if col in ("metric", "test", "") else "right")
    for name, e in result["metrics"].items():
        label = name + (" (lower is better)" if not e.get("higher_is_better", True) else "")
        table.add_row(label, fmt_value(e["a"]), fmt_value(e["b"]), fmt_delta(e), fmt_ci(e),
                      fmt_p(e), e.get("test") or "-", str(e.get("n", 0)), _verdict(e))
    con.print(table)
    samples = result.get("samples") or {}
    repeat = ""
    if max(samples.get("a", 1), samples.get("b", 1)) > 1:
        repeat = f"  samples per row A {samples['a']}, B {samples['b']} (a row's samples move together)"
    con.print(f"paired rows {result['paired_rows']}  errors excluded {result['errors_excluded']}  "
              f"only in A {result['only_in_a']}  only in B {result['only_in_b']}{repeat}")
    for title, rows in _flip_groups(result):
        if not rows:
            continue
        errors = title.startswith("biggest")
        t = Table(title=f"{title} ({len(rows)})", show_edge=False, header_style="bold",
                  title_justify="left")
        cols = ["row", "input", "expected", "answer A", "answer B"]
        if errors:
            cols += ["|error| A", "|error| B"]
        elif "pass_a" in rows[0]:
            cols += ["pass A", "pass B"]
        for col in cols:
            t.add_column(col, overflow="fold")
        for r in rows[:SHOWN_ROWS]:
            cells = [escape(r["row_id"]), escape(_compact(r["input"])),
                     escape(_compact(r["expected"])), escape(_compact(r["answer_a"])),
                     escape(_compact(r["answer_b"]))]
            if errors:
                cells += [fmt_value(r["error_a"]), fmt_value(r["error_b"])]
            elif "pass_a" in r:
                cells += [fmt_value(r["pass_a"], 2), fmt_value(r["pass_b"], 2)]
            t.add_row(*cells)
        con.print(t)
        if len(rows) > SHOWN_ROWS:
            con.print(f"… and {len(rows) - SHOWN_ROWS} more (all of them with --json)")
    for w in result["warnings"]:
        con.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)


def _md_cell(value: Any) -> str:
    return _compact(value).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def diff_markdown(result: dict[str, Any]) -> str:
    """The diff as GitHub-flavoured Markdown (flipped rows in a collapsible section)."""
    lines = [f"**A** `{_side(result['a'])}`  ", f"**B** `{_side(result['b'])}`", "",
             "| metric | A | B | delta (B-A) | 95% CI | p | test | n | |",
             "|---|---:|---:|---:|---:|---:|---|---:|---|"]
    for name, e in result["metrics"].items():
        lines.append(f"| {name} | {fmt_value(e['a'])} | {fmt_value(e['b'])} | {fmt_delta(e)} | "
                     f"{fmt_ci(e)} | {fmt_p(e)} | {e.get('test') or '-'} | {e.get('n', 0)} | "
                     f"{_verdict(e, markup=False)} |")
    lines += ["", f"{result['paired_rows']} paired rows, {result['errors_excluded']} excluded for "
              f"errors, {result['only_in_a']} only in A, {result['only_in_b']} only in B."]
    for title, rows in _flip_groups(result):
        if not rows:
            continue
        errors = title.startswith("biggest")
        head = ["row", "input", "expected", "answer A", "answer B"]
        if errors:
            head += ["abs error A", "abs error B"]
        lines += ["", f"<details><summary>{title} ({len(rows)})</summary>", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows[:SHOWN_ROWS]:
            cells = [_md_cell(c) for c in (r["row_id"], r["input"], r["expected"], r["answer_a"],
                                           r["answer_b"])]
            if errors:
                cells += [fmt_value(r["error_a"]), fmt_value(r["error_b"])]
            lines.append("| " + " | ".join(cells) + " |")
        if len(rows) > SHOWN_ROWS:
            lines += ["", f"… and {len(rows) - SHOWN_ROWS} more (`promptctl diff --json`)"]
        lines += ["", "</details>"]
    if result["warnings"]:
        lines.append("")
    for w in result["warnings"]:
        lines.append(f"> warning: {_md_cell(w)}  ")
    return "\n".join(lines) + "\n"


def sparkline(values: list[float | None]) -> str:
    """Oldest to newest; a gap where a version has no value."""
    known = [v for v in values if v is not None]
    if not known:
        return ""
    lo, hi = min(known), max(known)
    span = hi - lo
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        else:
            out.append(SPARKS[0 if span == 0 else round((v - lo) / span * (len(SPARKS) - 1))])
    return "".join(out)


def history_terminal(con: Console, result: dict[str, Any]) -> None:
    """One line per prompt version, newest first, with a trend per metric (and model)."""
    versions = result["versions"]
    if not versions:
        scope = f" with model {result['model']}" if result.get("model") else ""
        con.print(f"no complete runs of {escape(result['prompt'])}{escape(scope)} stored yet")
        return
    metric_names: list[str] = []
    for v in versions:
        metric_names += [m for m in v["metrics"] if m not in metric_names]
    models = list(dict.fromkeys(v["model"] for v in versions))
    table = Table(show_edge=False, header_style="bold")
    for col in ("commit", "date", "author", "subject", "version", *(["model"] if len(models) > 1
                                                                    else []), "run",
                *metric_names):
        table.add_column(col, no_wrap=col != "subject",
                         justify="right" if col in metric_names else "left")
    for v in versions:
        commit = (v["git_commit"] or "-")[:10] + ("*" if v["git_dirty"] else "")
        cells = [commit, (v.get("date") or v["created_at"])[:10], escape(v.get("author") or "-"),
                 escape(_compact(v.get("subject") or "-", 50)), v["prompt_version"][:8]]
        if len(models) > 1:
            cells.append(escape(v["model"]))
        cells.append(v["run"])
        cells += [fmt_value(v["metrics"].get(m)) for m in metric_names]
        table.add_row(*cells)
    con.print(table)
    width = max(len(m) for m in metric_names) if metric_names else 0
    for model in models:
        series_of = [v for v in reversed(versions) if v["model"] == model]
        shown = series_of[-SPARK_WIDTH:]
        scope = f"  {escape(model)}" if len(models) > 1 else ""
        more = f", last {len(shown)} of {len(series_of)}" if len(shown) < len(series_of) else ""
        for m in metric_names:
            line = sparkline([v["metrics"].get(m) for v in shown])
            if line.strip():
                con.print(f"{m:>{width}}  {line}  (oldest → newest{more}){scope}")
    for w in result.get("warnings") or []:
        con.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)
