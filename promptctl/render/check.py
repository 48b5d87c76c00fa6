"""`promptctl check` in the terminal: a verdict per prompt and a table of its gates; and
`promptctl compat`: one table of every file's metrics on two models."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from promptctl.errors import EXIT_GATE, EXIT_INPUT, EXIT_OK, EXIT_PROVIDER
from promptctl.render import fmt
from promptctl.render.markdown import (
    compat_headline,
    compat_lines,
    compat_status,
    compat_verdict,
    gate_label,
    headline,
)
from promptctl.render.terminal import block, cell
from promptctl.results import CheckResult, CompatResult

STYLES = {"pass": "[green]pass[/]", "warn": "[yellow]warn[/]", "fail": "[bold red]FAIL[/]",
          "error": "[bold red]ERROR[/]", "skip": "[dim]skip[/]"}


def _status(status: str) -> str:
    return STYLES.get(status) or cell(status)


def check_terminal(con: Console, result: CheckResult) -> None:
    """Per prompt: verdict, why it was checked, runs, gates; then deleted prompts and a summary."""
    base = result.base
    con.print(f"base {cell(base.ref)} ({cell(base.how)}, {cell(str(base.commit)[:12])})  "
              f"significance {result.significance:g}" + ("  strict" if result.strict else ""))
    note = result.config.note() if result.config else None
    if note:
        con.print(f"[yellow]promptctl.yaml:[/] {cell(note, 2000)}", soft_wrap=True)
    if not result.prompts:
        con.print(f"no prompt changed since the base ({cell(result.summary.unchanged)} "
                  "unchanged)")
    for entry in result.prompts:
        con.print()
        con.print(f"[bold]{cell(entry.prompt)}[/]  {_status(entry.status)}"
                  f"  {cell('; '.join(entry.reasons), 400)}")
        runs = []
        if entry.model:
            runs.append(f"model {cell(entry.model)}")
        if entry.baseline_run:
            runs.append(f"baseline {cell(entry.baseline_run)} ({cell(entry.baseline_source)})")
        if entry.current_run:
            reused = " (stored, reused)" if entry.current_source == "stored" else ""
            runs.append(f"current {cell(entry.current_run)}{reused}")
        if runs:
            con.print("  " + "  ".join(runs))
        if entry.error:
            con.print(f"  [bold red]{'provider failure' if entry.error.kind == 'provider' else 'error'}"
                      f":[/] {block(entry.error.message)}", soft_wrap=True)
        if entry.gates:
            table = Table(show_edge=False, header_style="bold", padding=(0, 1))
            for col in ("gate", "current", "baseline", "change", "95% CI", "p", "verdict", "why"):
                table.add_column(col, justify="right" if col in ("current", "baseline", "change",
                                                                 "95% CI", "p") else "left",
                                 overflow="fold" if col == "why" else "ellipsis")
            for g in entry.gates:
                table.add_row(cell(gate_label(g)), fmt.num(g.value),
                              fmt.num(g.baseline),
                              fmt.signed(g.delta) if g.regression else "-",
                              fmt.interval(g.ci95) if g.regression else "-",
                              fmt.p_value(g.p_value), _status(g.status),
                              cell(g.message, 1000))
            con.print(table)
        elif not entry.error:
            con.print("  no thresholds in this prompt file: nothing to gate")
        comparison = entry.comparison
        if comparison is not None and comparison.usage is not None:
            con.print(f"  per row: {cell(fmt.usage_line(comparison.usage), 1000)}",
                      soft_wrap=True)
        if comparison is not None:
            worse = len(comparison.flipped.pass_to_fail)
            better = len(comparison.flipped.fail_to_pass)
            if worse or better:
                con.print(f"  flipped rows: {worse} pass → fail, {better} fail → pass "
                          f"(promptctl diff {cell(entry.baseline_run)} {cell(entry.current_run)})")
        for w in entry.warnings + (comparison.warnings if comparison is not None else ()):
            con.print(f"  [yellow]warning:[/] {cell(w, 2000)}", soft_wrap=True)
    for d in result.deleted:
        con.print(f"\n[bold]{cell(d.prompt)}[/]  deleted ({cell(d.path)})")
    con.print()
    code = result.exit_code
    verdict = {EXIT_OK: "[green]check passed[/]", EXIT_GATE: "[bold red]check failed[/]",
               EXIT_INPUT: "[bold red]check could not run: input error[/]",
               EXIT_PROVIDER: "[bold red]check could not run: provider failure[/]"
               }.get(code, f"exit {code}")
    con.print(f"{verdict}: {headline(result)}")


def compat_terminal(con: Console, result: CompatResult) -> None:
    """The one table of `promptctl compat` (per file, each metric's B - A with its interval,
    p-value, verdict and gate), then what failed or could not run, and the verdict."""
    con.print(f"from {cell(result.from_model)} (A) to {cell(result.to_model)} (B)  "
              f"significance {result.significance:g}" + ("  strict" if result.strict else ""))
    if result.files:
        table = Table(show_edge=False, header_style="bold", padding=(0, 1))
        # A path and a gate are read whole on one line; a verdict or an interval may wrap.
        for col in ("file", "metric", "A", "B", "change", "95% CI", "p", "verdict", "gate"):
            table.add_column(col, justify="right" if col in ("A", "B", "change", "95% CI", "p")
                             else "left", no_wrap=col in ("file", "gate"),
                             overflow="fold" if col in ("file", "verdict") else "ellipsis")
        lines = compat_lines(result)
        for i, line in enumerate(lines):
            e, d = line.entry, line.delta
            table.add_row(cell(e.path) if line.first else "", cell(line.metric or "-"),
                          fmt.num(d.a if d else None), fmt.num(d.b if d else None),
                          fmt.signed(d.delta if d else None),
                          fmt.interval(d.ci95 if d else None),
                          fmt.p_value(d.p_value if d else None),
                          cell(compat_verdict(line)), _status(compat_status(line)),
                          # A rule under each file's last metric.
                          end_section=i + 1 < len(lines) and lines[i + 1].first)
        con.print(table)
    for e in result.files:
        notes = [g for g in e.gates if g.status in ("fail", "warn", "skip")]
        for g in notes:
            con.print(f"{cell(e.path)}: {_status(g.status)} {cell(gate_label(g))}: "
                      f"{cell(g.message, 1000)}", soft_wrap=True)
        if e.error:
            kind = "provider failure" if e.error.kind == "provider" else "error"
            con.print(f"{cell(e.path)}: [bold red]{kind}:[/] {block(e.error.message)}",
                      soft_wrap=True)
        for r in e.reasons:
            con.print(f"{cell(e.path)}: {_status('skip')} {cell(r, 1000)}", soft_wrap=True)
        comparison = e.comparison
        if comparison is not None:
            worse, better = len(comparison.flipped.pass_to_fail), len(comparison.flipped.fail_to_pass)
            if worse or better:
                con.print(f"{cell(e.path)}: flipped rows: {worse} pass → fail, {better} fail → "
                          f"pass (promptctl diff {cell(e.baseline_run)} {cell(e.current_run)})")
            for w in comparison.warnings:
                con.print(f"{cell(e.path)}: [yellow]warning:[/] {cell(w, 2000)}", soft_wrap=True)
    con.print()
    verdict = {EXIT_OK: "[green]compatible[/]", EXIT_GATE: "[bold red]regression[/]",
               EXIT_INPUT: "[bold red]compat could not run: input error[/]",
               EXIT_PROVIDER: "[bold red]compat could not run: provider failure[/]"
               }.get(result.exit_code, f"exit {result.exit_code}")
    con.print(f"{verdict}: {compat_headline(result)}")

