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


def diff_terminal(con: Console, result: dict[str, Any]) -> None:
    """Per-metric deltas with intervals and p-values, then flipped rows and warnings."""
    con.print(f"A: {escape(_side(result['a']))}")
    con.print(f"B: {escape(_side(result['b']))}")
    table = Table(show_edge=False, header_style="bold")
    for col in ("metric", "A", "B", "delta (B-A)", "95% CI", "p", "test", "n", ""):
        table.add_column(col, justify="left" if col in ("metric", "test", "") else "right")
    for name, e in result["metrics"].items():
        verdict = e.get("direction", "")
        if verdict == "worse" and (e.get("p_value") or 1) < 0.05:
            verdict = "[red]worse[/]"
        elif verdict == "better" and (e.get("p_value") or 1) < 0.05:
            verdict = "[green]better[/]"
        elif verdict in ("worse", "better"):
            verdict += " (not significant)"
        table.add_row(name, fmt_value(e["a"]), fmt_value(e["b"]), fmt_delta(e), fmt_ci(e),
                      fmt_p(e), e.get("test") or "-", str(e.get("n", 0)), verdict)
    con.print(table)
    con.print(f"paired rows {result['paired_rows']}  errors excluded {result['errors_excluded']}  "
              f"only in A {result['only_in_a']}  only in B {result['only_in_b']}")
    flipped = result["flipped"]
    for title, rows in (("pass → fail", flipped["pass_to_fail"]),
                        ("fail → pass", flipped["fail_to_pass"]),
                        ("biggest error increases", flipped["biggest_error_increases"])):
        if not rows:
            continue
        t = Table(title=f"{title} ({len(rows)})", show_edge=False, header_style="bold",
                  title_justify="left")
        for col in ("row", "input", "expected", "answer A", "answer B"):
            t.add_column(col, overflow="fold")
        for r in rows[:20]:
            t.add_row(escape(r["row_id"]), escape(_compact(r["input"])),
                      escape(_compact(r["expected"])), escape(_compact(r["answer_a"])),
                      escape(_compact(r["answer_b"])))
        con.print(t)
    for w in result["warnings"]:
        con.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)


def _md_cell(value: Any) -> str:
    return _compact(value).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def diff_markdown(result: dict[str, Any]) -> str:
    """The diff as GitHub-flavoured Markdown (flipped rows in a collapsible section)."""
    lines = [f"**A** `{_side(result['a'])}`  ", f"**B** `{_side(result['b'])}`", "",
             "| metric | A | B | delta (B-A) | 95% CI | p | test | n |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    for name, e in result["metrics"].items():
        lines.append(f"| {name} | {fmt_value(e['a'])} | {fmt_value(e['b'])} | {fmt_delta(e)} | "
                     f"{fmt_ci(e)} | {fmt_p(e)} | {e.get('test') or '-'} | {e.get('n', 0)} |")
    flipped = result["flipped"]
    rows = flipped["pass_to_fail"] + flipped["fail_to_pass"]
    if rows:
        lines += ["", f"<details><summary>Flipped rows ({len(flipped['pass_to_fail'])} pass → fail, "
                  f"{len(flipped['fail_to_pass'])} fail → pass)</summary>", "",
                  "| row | change | input | expected | answer A | answer B |",
                  "|---|---|---|---|---|---|"]
        for change, group in (("pass → fail", flipped["pass_to_fail"]),
                              ("fail → pass", flipped["fail_to_pass"])):
            for r in group[:20]:
                cells = [r["row_id"], change, r["input"], r["expected"], r["answer_a"], r["answer_b"]]
                lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        lines += ["", "</details>"]
    for w in result["warnings"]:
        lines.append(f"> warning: {_md_cell(w)}")
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
    """One line per prompt version, newest first, with a trend per metric."""
    versions = result["versions"]
    if not versions:
        con.print(f"no complete runs of {escape(result['prompt'])} stored yet")
        return
    metric_names: list[str] = []
    for v in versions:
        metric_names += [m for m in v["metrics"] if m not in metric_names]
    table = Table(show_edge=False, header_style="bold")
    for col in ("commit", "date", "author", "subject", "version", "model", "run", *metric_names):
        table.add_column(col, no_wrap=col not in ("subject",))
    for v in versions:
        commit = (v["git_commit"] or "-")[:10] + ("*" if v["git_dirty"] else "")
        table.add_row(commit, (v.get("date") or v["created_at"])[:10], escape(v.get("author") or "-"),
                      escape(_compact(v.get("subject") or "-", 50)), v["prompt_version"][:8],
                      escape(v["model"]), v["run"],
                      *(fmt_value(v["metrics"].get(m)) for m in metric_names))
    con.print(table)
    for m in metric_names:
        series = [v["metrics"].get(m) for v in reversed(versions)]
        con.print(f"{m:>16}  {sparkline(series)}  (oldest → newest)")
