"""Diff and history: terminal tables and Markdown."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from promptctl.render import fmt
from promptctl.render.markdown import code, plain, usage_markdown
from promptctl.render.terminal import cell
from promptctl.results import (
    DiffResult,
    FlippedRow,
    HistoryResult,
    MetricDelta,
    PartSearch,
    RunBrief,
    UsageDiff,
)

SPARKS = "▁▂▃▄▅▆▇█"


def fmt_delta(entry: MetricDelta) -> str:
    return fmt.signed(entry.delta)


def fmt_ci(entry: MetricDelta) -> str:
    return fmt.interval(entry.ci95)


def fmt_p(entry: MetricDelta) -> str:
    return fmt.p_value(entry.p_value)


def _side(run: RunBrief) -> tuple[str, str, str, str]:
    """A run's id, model, commit (`*` when dirty) and prompt version: untrusted text each."""
    commit = str(run.git_commit or "-")[:10] + ("*" if run.git_dirty else "")
    return (str(run.id), str(run.model), commit, str(run.prompt_version)[:8])


def _side_terminal(run: RunBrief) -> str:
    rid, model, commit, version = (cell(v, 80) for v in _side(run))
    return f"{rid} ({model}, {commit}, prompt {version})"


def _side_markdown(run: RunBrief) -> str:
    rid, model, commit, version = _side(run)
    return f"{code(rid)} ({code(model)}, {code(commit)}, prompt {code(version)})"


SHOWN_ROWS = 20
SPARK_WIDTH = 60


def _verdict(e: MetricDelta, markup: bool = True) -> str:
    """The metric's verdict (`results.verdict`: the paired test decides), coloured on a
    terminal when the change is significant."""
    text = e.verdict.text
    if markup and e.verdict.change == "worse":
        return f"[red]{cell(text)}[/]"
    if markup and e.verdict.change == "better":
        return f"[green]{cell(text)}[/]"
    return cell(text) if markup else plain(text)


def verdict_notes(metrics: Mapping[str, MetricDelta]) -> list[tuple[str, str]]:
    """(metric, note) where a metric's interval and its paired test disagree."""
    return [(name, e.verdict.note) for name, e in metrics.items() if e.verdict.note]


def _flip_groups(result: DiffResult) -> list[tuple[str, tuple[FlippedRow, ...]]]:
    flipped = result.flipped
    return [("pass → fail", flipped.pass_to_fail), ("fail → pass", flipped.fail_to_pass),
            ("biggest error increases", flipped.biggest_error_increases)]


def _metric_label(name: str, e: MetricDelta) -> str:
    return name + (" (lower is better)" if not e.higher_is_better else "")


def usage_terminal(con: Console, usage: UsageDiff | None) -> None:
    if usage is None:
        return
    table = Table(show_edge=False, header_style="bold")
    for col in fmt.USAGE_COLUMNS:
        table.add_column(col, justify="left" if col == fmt.USAGE_COLUMNS[0] else "right")
    for cells in fmt.usage_cells(usage):
        table.add_row(*(cell(c) for c in cells))
    con.print(table)
    for note in fmt.usage_notes(usage):
        con.print(cell(note, 1000), soft_wrap=True)


def diff_terminal(con: Console, result: DiffResult) -> None:
    """Per-metric deltas with intervals and p-values, then flipped rows and warnings."""
    con.print(f"A: {_side_terminal(result.a)}")
    con.print(f"B: {_side_terminal(result.b)}")
    table = Table(show_edge=False, header_style="bold")
    for col in ("metric", "A", "B", "delta (B-A)", "95% CI", "p", "test", "n", ""):
        table.add_column(col, justify="left" if col in ("metric", "test", "") else "right")
    for name, e in result.metrics.items():
        table.add_row(cell(_metric_label(name, e)), fmt.num(e.a), fmt.num(e.b),
                      fmt_delta(e), fmt_ci(e), fmt_p(e), cell(e.test or "-"),
                      cell(e.n), _verdict(e))
    con.print(table)
    for name, note in verdict_notes(result.metrics):
        con.print(f"{cell(name)}: {cell(note, 400)}", soft_wrap=True)
    usage_terminal(con, result.usage)
    samples = result.samples
    repeat = ""
    if max(samples.a, samples.b) > 1:
        repeat = (f"  samples per row A {cell(samples.a)}, B {cell(samples.b)} "
                  "(a row's samples move together)")
    con.print(f"paired rows {cell(result.paired_rows)}  errors excluded "
              f"{cell(result.errors_excluded)}  only in A {cell(result.only_in_a)}  "
              f"only in B {cell(result.only_in_b)}{repeat}")
    for title, rows in _flip_groups(result):
        if not rows:
            continue
        errors = title.startswith("biggest")
        t = Table(title=f"{title} ({len(rows)})", show_edge=False, header_style="bold",
                  title_justify="left")
        cols = ["row", "input", "expected", "answer A", "answer B"]
        if errors:
            cols += ["|error| A", "|error| B"]
        elif rows[0].pass_a is not None:
            cols += ["pass A", "pass B"]
        for col in cols:
            t.add_column(col, overflow="fold")
        for r in rows[:SHOWN_ROWS]:
            cells = [cell(r.row_id, 80)] + [cell(v, 120) for v in
                                            (r.input, r.expected, r.answer_a, r.answer_b)]
            if errors:
                cells += [fmt.num(r.error_a), fmt.num(r.error_b)]
            elif r.pass_a is not None:
                cells += [fmt.num(r.pass_a, 2), fmt.num(r.pass_b, 2)]
            t.add_row(*cells)
        con.print(t)
        if len(rows) > SHOWN_ROWS:
            con.print(f"… and {len(rows) - SHOWN_ROWS} more (all of them with --json)")
    for w in result.warnings:
        con.print(f"[yellow]warning:[/] {cell(w, 2000)}", soft_wrap=True)


def diff_markdown(result: DiffResult) -> str:
    """The diff as GitHub-flavoured Markdown (flipped rows in a collapsible section)."""
    lines = [f"**A** {_side_markdown(result.a)}  ", f"**B** {_side_markdown(result.b)}", "",
             "| metric | A | B | delta (B-A) | 95% CI | p | test | n | |",
             "|---|---:|---:|---:|---:|---:|---|---:|---|"]
    for name, e in result.metrics.items():
        lines.append(f"| {plain(_metric_label(name, e))} | {fmt.num(e.a)} | {fmt.num(e.b)} "
                     f"| {fmt_delta(e)} | {fmt_ci(e)} | {fmt_p(e)} | {plain(e.test or '-')} "
                     f"| {plain(e.n)} | {_verdict(e, markup=False)} |")
    notes = verdict_notes(result.metrics)
    if notes:
        lines.append("")
    lines += [f"- {plain(name)}: {plain(note)}" for name, note in notes]
    lines += usage_markdown(result.usage)
    lines += ["", f"{plain(result.paired_rows)} paired rows, {plain(result.errors_excluded)} "
              f"excluded for errors, {plain(result.only_in_a)} only in A, "
              f"{plain(result.only_in_b)} only in B."]
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
            cells = [code(v, 120) for v in (r.row_id, r.input, r.expected, r.answer_a,
                                            r.answer_b)]
            if errors:
                cells += [fmt.num(r.error_a), fmt.num(r.error_b)]
            lines.append("| " + " | ".join(cells) + " |")
        if len(rows) > SHOWN_ROWS:
            lines += ["", f"… and {len(rows) - SHOWN_ROWS} more (`promptctl diff --json`)"]
        lines += ["", "</details>"]
    if result.warnings:
        lines.append("")
    for w in result.warnings:
        lines += [f"> **warning:** {plain(w, 2000)}", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def sparkline(values: list[float | None]) -> str:
    """Oldest to newest; a gap where a version has no value."""
    finite = [v if isinstance(v, int | float) and math.isfinite(v) else None for v in values]
    known = [v for v in finite if v is not None]
    if not known:
        return ""
    lo, hi = min(known), max(known)
    span = hi - lo
    out = []
    for v in finite:
        if v is None:
            out.append(" ")
        else:
            out.append(SPARKS[0 if span == 0 else round((v - lo) / span * (len(SPARKS) - 1))])
    return "".join(out)


def flat_value(values: list[float | None]) -> str:
    """What a sparkline of one point, or of points all equal, cannot show (its one bar looks
    the same for 0 and for 1): the value, to print beside it. "" for a series that varies."""
    known = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not known or min(known) != max(known):
        return ""
    return fmt.num(known[0]) if len(known) == 1 else f"every version {fmt.num(known[0])}"


def history_terminal(con: Console, result: HistoryResult) -> None:
    """One line per prompt version, newest first, with a trend per metric (and model)."""
    versions = result.versions
    if not versions:
        scope = f" with model {result.model}" if result.model else ""
        con.print(f"no complete runs of {cell(result.prompt)}{cell(scope)} stored yet")
        part_searches(con, result.searches)
        return
    metric_names: list[str] = []
    for v in versions:
        metric_names += [m for m in v.metrics if m not in metric_names]
    models = list(dict.fromkeys(v.model for v in versions))
    table = Table(show_edge=False, header_style="bold")
    for col in ("commit", "date", "author", "subject", "version", *(["model"] if len(models) > 1
                                                                    else []), "run"):
        table.add_column(col, no_wrap=col != "subject")
    for m in metric_names:
        table.add_column(cell(m, 40), no_wrap=True, justify="right")
    for v in versions:
        commit = str(v.git_commit or "-")[:10] + ("*" if v.git_dirty else "")
        cells = [cell(commit), cell(str(v.date or v.created_at)[:10]),
                 cell(v.author or "-", 40), cell(v.subject or "-", 50),
                 cell(str(v.prompt_version)[:8])]
        if len(models) > 1:
            cells.append(cell(v.model, 60))
        cells.append(cell(v.run))
        cells += [fmt.num(v.metrics.get(m)) for m in metric_names]
        table.add_row(*cells)
    con.print(table)
    width = max(len(m) for m in metric_names) if metric_names else 0
    for model in models:
        series_of = [v for v in reversed(versions) if v.model == model]
        shown = series_of[-SPARK_WIDTH:]
        scope = f"  {cell(model, 60)}" if len(models) > 1 else ""
        more = f", last {len(shown)} of {len(series_of)}" if len(shown) < len(series_of) else ""
        for m in metric_names:
            values = [v.metrics.get(m) for v in shown]
            line = sparkline(values)
            if line.strip():
                flat = flat_value(values)
                line += f"  {flat}" if flat else ""
                con.print(f"{cell(m, 40):>{width}}  {line}  (oldest → newest{more}){scope}")
    for w in result.warnings:
        con.print(f"[yellow]warning:[/] {cell(w, 2000)}", soft_wrap=True)
    part_searches(con, result.searches)


def _value_n(value: Mapping[str, Any] | None) -> str:
    if not value or value.get("value") is None:
        return "-"
    n = value.get("n")
    return fmt.num(value["value"]) + (f" (n={n})" if n is not None else "")


def part_searches(con: Console, searches: Sequence[PartSearch]) -> None:
    """The runs on parts of the eval set, a table per search: they scored only some rows, so
    none of them is a point of the history above."""
    if not searches:
        return
    con.print()
    con.print(f"[bold]Runs on a part of the eval set[/] ({len(searches)} search"
              f"{'es' if len(searches) > 1 else ''}: tune's train, validation and test rows). "
              "They never stand for a version.", soft_wrap=True)
    for s in searches:
        counts = Counter(r.part for r in s.runs)
        made = ", ".join(f"{counts[p]} {p}" for p in dict.fromkeys(r.part for r in s.runs))
        name = s.search or "not recorded (runs stored before searches were)"
        con.print(f"search {cell(name)}  {cell(s.model, 60)}  started "
                  f"{cell(s.started_at[:16].replace('T', ' '))}  runs: {made}", soft_wrap=True)
        names: list[str] = []
        for r in s.runs:
            names += [m for m in r.metrics if m not in names]
        table = Table(show_edge=False, header_style="bold")
        for col in ("part", "candidate", "version", "date", "run"):
            table.add_column(col, no_wrap=col != "candidate")
        for m in names:
            table.add_column(cell(m, 40), no_wrap=True, justify="right")
        for r in s.runs:
            who = " ".join(x for x in (r.candidate, f"({r.origin})" if r.origin else None) if x)
            status = "" if r.status == "complete" else f" [{r.status}]"
            table.add_row(cell(r.part), cell(who or "-", 60),
                          cell(str(r.prompt_version)[:8]),
                          cell(r.created_at[:16].replace("T", " ")), cell(r.run + status),
                          *[_value_n(r.metrics.get(m)) for m in names])
        con.print(table)
