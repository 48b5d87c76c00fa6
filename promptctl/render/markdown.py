"""`promptctl check` and `promptctl compat` as GitHub-flavoured Markdown, for the job summary
and a PR comment.

A pull request controls much of what this report shows: prompt, metric and model
names, eval-set rows, and through the model the answers. Every such value goes
through `plain` or `code`, that is through `inert.markdown`, so that on GitHub it
reads as the literal text it is: no image, link, mention, emphasis, heading or HTML,
no control character, and a table cell stays one cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from promptctl.errors import EXIT_GATE, EXIT_INPUT, EXIT_OK, EXIT_PROVIDER
from promptctl.render import fmt, inert
from promptctl.results import (
    CheckResult,
    CompatResult,
    Flipped,
    Gate,
    MetricDelta,
    PromptCheck,
    UsageDiff,
)

MARKER = "<!-- promptctl-check -->"
COMPAT_MARKER = "<!-- promptctl-compat -->"
FLIPPED_SHOWN = 10
CELL_LIMIT = 80

ICONS = {"pass": "✅ pass", "warn": "⚠️ warn", "fail": "❌ fail", "error": "💥 error",
         "skip": "➖ skip"}

# The number formats every output shares (kept under these names for the other renderers).
num, signed, interval, p_text = fmt.num, fmt.signed, fmt.interval, fmt.p_value


def plain(value: Any, limit: int = 400) -> str:
    """Untrusted text (or a message quoting it) as literal Markdown on one line; `-` when empty."""
    return inert.markdown(value, limit) or "-"


def code(value: Any, limit: int = CELL_LIMIT) -> str:
    """Untrusted text as literal Markdown in monospace (<code>), on one line; `-` for none."""
    if value is None:
        return "-"
    shown = inert.markdown(value, limit)
    return f"<code>{shown}</code>" if shown else "-"


def quoted(label: str, message: Any, limit: int = 1000) -> list[str]:
    """A message as a block quote, `label` in bold before its first line, and each further
    line of it (its `fix:` above all) a paragraph of its own, so a reader sees at a glance
    what went wrong and what to do."""
    text = inert.as_text(message).replace("\r\n", "\n")
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    first, rest = (lines[0], lines[1:]) if lines else ("", [])
    out = [f"> **{label}:** {plain(first, limit)}"]
    for line in rest:
        if line.startswith("fix:"):
            out += [">", f"> **fix:** {plain(line.removeprefix('fix:').strip(), limit)}"]
        else:
            out += [">", f"> {plain(line, limit)}"]
    return [*out, ""]


def gate_label(gate: Gate) -> str:
    """`rmse ≤ 1.5`, `format_validity ≥ 0.95`, `exact_match drop ≤ 0.02` (untrusted: the
    metric name comes from the prompt file)."""
    if gate.kind == "min":
        return f"{gate.metric} ≥ {gate.limit:g}"
    if gate.kind == "max":
        return f"{gate.metric} ≤ {gate.limit:g}"
    return f"{gate.metric} drop ≤ {gate.limit:g}"


def headline(result: CheckResult) -> str:
    s = result.summary
    if not result.prompts:
        return "no prompt changed"
    parts = [f"{n} {label}" for n, label in ((s.fail, "failed"), (s.error, "could not be checked"),
                                              (s.warn, "warned"), (s.pass_, "passed")) if n]
    return ", ".join(parts)


def overall(result: CheckResult) -> str:
    code_ = result.exit_code
    return {EXIT_OK: "✅ passed", EXIT_GATE: "❌ failed", EXIT_INPUT: "💥 input error",
            EXIT_PROVIDER: "💥 provider failure"}.get(code_, f"exit {plain(code_)}")


def _prompt_section(entry: PromptCheck) -> list[str]:
    lines = [f"### {plain(entry.prompt)}: {ICONS.get(entry.status, plain(entry.status))}",
             ""]
    facts = [plain("; ".join(entry.reasons))]
    if entry.model:
        facts.append(f"model {code(entry.model)}")
    if entry.baseline_run:
        facts.append(f"baseline run {code(entry.baseline_run)} "
                     f"({plain(entry.baseline_source)}"
                     + (f", {code(entry.baseline_model)}"
                        if entry.baseline_model not in (None, entry.model) else "")
                     + ")")
    if entry.current_run:
        reused = " (stored, reused)" if entry.current_source == "stored" else ""
        facts.append(f"current run {code(entry.current_run)}{reused}")
    lines += [" · ".join(facts), ""]
    if entry.error:
        kind = "provider failure" if entry.error.kind == "provider" else "error"
        lines += quoted(kind, entry.error.message)
    if entry.gates:
        lines += ["| gate | current | baseline | change | 95% CI | p | verdict |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for g in entry.gates:
            lines.append(f"| {plain(gate_label(g))} | {num(g.value)} | "
                         f"{num(g.baseline)} | {signed(g.delta) if g.regression else '-'}"
                         f" | {interval(g.ci95) if g.regression else '-'}"
                         f" | {p_text(g.p_value)} | "
                         f"{ICONS.get(g.status, plain(g.status))} |")
        lines.append("")
        notes = [g for g in entry.gates if g.status in ("fail", "warn", "skip")]
        for g in notes:
            lines.append(f"- **{plain(gate_label(g))}**: {plain(g.message)}")
        if notes:
            lines.append("")
    elif not entry.error:
        lines += ["No thresholds in this prompt file: nothing to gate.", ""]
    comparison = entry.comparison
    if comparison and comparison.metrics:
        lines += ["<details><summary>All metrics versus the baseline</summary>", "",
                  "| metric | baseline | current | delta | 95% CI | p | test | n |",
                  "|---|---:|---:|---:|---:|---:|---|---:|"]
        for name, e in comparison.metrics.items():
            # The verdict of `diff` at the check's significance level (results.verdict).
            mark = f" ({e.verdict.change})" if e.verdict.change in ("better", "worse") else ""
            lines.append(f"| {plain(name)}{mark} | {num(e.a)} | {num(e.b)} | "
                         f"{signed(e.delta)} | {interval(e.ci95)} | "
                         f"{p_text(e.p_value)} | {plain(e.test or '-')} | "
                         f"{plain(e.n)} |")
        disagree = [(name, e.verdict.note) for name, e in comparison.metrics.items()
                    if e.verdict.note]
        if disagree:
            lines.append("")
        lines += [f"- {plain(name)}: {plain(note)}" for name, note in disagree]
        lines += ["", f"Paired rows {plain(comparison.paired_rows)}, errors excluded "
                  f"{plain(comparison.errors_excluded)}, only in baseline "
                  f"{plain(comparison.only_in_a)}, only in current "
                  f"{plain(comparison.only_in_b)}."]
        lines += usage_markdown(comparison.usage)
        lines += ["", "</details>", ""]
        lines += _flipped(comparison.flipped, entry)
    warnings = entry.warnings + (comparison.warnings if comparison is not None else ())
    for w in warnings:
        lines += [f"> ⚠️ {plain(w)}", ""]
    return lines


def _flipped(flipped: Flipped, entry: PromptCheck,
             sides: tuple[str, str] = ("baseline", "current")) -> list[str]:
    worse, better = flipped.pass_to_fail, flipped.fail_to_pass
    errors_up = flipped.biggest_error_increases
    if not (worse or better or errors_up):
        return []
    lines = [f"<details><summary>Flipped rows: {len(worse)} pass → fail, {len(better)} fail → pass"
             "</summary>", ""]
    if worse or better:
        lines += [f"| row | change | input | expected | {sides[0]} answer | {sides[1]} answer |",
                  "|---|---|---|---|---|---|"]
        for change, group in (("pass → fail", worse), ("fail → pass", better)):
            for r in group[:FLIPPED_SHOWN]:
                lines.append(f"| {code(r.row_id)} | {change} | {code(r.input)} | "
                             f"{code(r.expected)} | {code(r.answer_a)} | "
                             f"{code(r.answer_b)} |")
        hidden = max(0, len(worse) - FLIPPED_SHOWN) + max(0, len(better) - FLIPPED_SHOWN)
        if hidden:
            command = f"promptctl diff {entry.baseline_run} {entry.current_run}"
            lines += ["", f"{hidden} more: {code(command, 200)}"]
        lines.append("")
    if errors_up:
        lines += ["Biggest error increases:", "",
                  f"| row | input | expected | {sides[0]} answer | {sides[1]} answer |",
                  "|---|---|---|---|---|"]
        for r in errors_up[:FLIPPED_SHOWN]:
            lines.append(f"| {code(r.row_id)} | {code(r.input)} | {code(r.expected)} | "
                         f"{code(r.answer_a)} | {code(r.answer_b)} |")
        lines.append("")
    return [*lines, "</details>", ""]


def check_markdown(result: CheckResult) -> str:
    """The whole report: headline, one verdict row per prompt, then a section per prompt."""
    base = result.base
    head = result.head
    lines = [MARKER, f"## promptctl check: {overall(result)}", "",
             f"{headline(result)}. Base {code(base.ref)} ({plain(base.how)}, "
             f"{code(str(base.commit)[:12])}), head {code(str(head.commit or '-')[:12])}"
             + (" with uncommitted changes" if head.dirty else "")
             + f"; significance {plain(format(result.significance, 'g'))}"
             + (", strict" if result.strict else "") + ".", ""]
    note = result.config.note() if result.config else None
    if note:
        lines += [f"> **promptctl.yaml:** {plain(note)}", ""]
    prompts = result.prompts
    if prompts:
        lines += ["| prompt | verdict | why checked | gates |", "|---|---|---|---|"]
        for p in prompts:
            failed = [gate_label(g) for g in p.gates if g.status == "fail"]
            warned = [gate_label(g) for g in p.gates if g.status == "warn"]
            gates = []
            if failed:
                gates.append("failed: " + plain(", ".join(failed)))
            if warned:
                gates.append("warned: " + plain(", ".join(warned)))
            if p.error:
                gates.append("not checked")
            if not gates:
                passed = sum(1 for g in p.gates if g.status == "pass")
                gates.append(f"{passed} passed")
            lines.append(f"| {plain(p.prompt)} | {ICONS.get(p.status, plain(p.status))} | "
                         f"{plain('; '.join(p.reasons))} | {'; '.join(gates)} |")
        lines.append("")
        for p in prompts:
            lines += _prompt_section(p)
    if result.deleted:
        lines += ["### Deleted prompts", ""]
        lines += [f"- {plain(d.prompt)} ({code(d.path)})" for d in result.deleted]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def usage_markdown(usage: UsageDiff | None) -> list[str]:
    """The tokens, cost and latency table of a diff (or of check's comparison), with its
    notes: why a figure is unknown, which rows latency leaves out."""
    if usage is None:
        return []
    lines = ["", "| " + " | ".join(fmt.USAGE_COLUMNS) + " |", "|---|---:|---:|---:|---:|---:|---:|"]
    # Our own figures, not untrusted text; a `$` escaped, or two in a cell would be math.
    lines += ["| " + " | ".join(c.replace("$", "\\$") for c in cells) + " |"
              for cells in fmt.usage_cells(usage)]
    notes = fmt.usage_notes(usage)
    if notes:
        lines.append("")
    lines += [f"- {plain(n, 1000)}" for n in notes]
    return lines


# --- compat -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompatLine:
    """One line of the `compat` table: a metric of a file (or the file alone, when it could
    not be compared), B - A, and the status of its `max_regression` gate (None: no limit)."""

    entry: PromptCheck
    first: bool
    metric: str | None
    delta: MetricDelta | None
    gate: Gate | None


def compat_lines(result: CompatResult) -> list[CompatLine]:
    """The table every `compat` output shows: per file, each metric compared, then a gate
    whose metric could not be compared; one line for a file with neither."""
    out: list[CompatLine] = []
    for entry in result.files:
        gates = {g.metric: g for g in entry.gates if g.regression}
        metrics = entry.comparison.metrics if entry.comparison is not None else {}
        names = list(metrics) + [m for m in gates if m not in metrics]
        if not names:
            out.append(CompatLine(entry, True, None, None, None))
        for i, name in enumerate(names):
            out.append(CompatLine(entry, i == 0, name, metrics.get(name), gates.get(name)))
    return out


def compat_status(line: CompatLine) -> str:
    """What the verdict column says: the gate's status where there is a limit, else the file's
    (error, skip) or `-`."""
    if line.gate is not None:
        return line.gate.status
    if line.metric is None:
        return line.entry.status
    return "-"


def compat_verdict(line: CompatLine) -> str:
    """The metric's verdict (`results.verdict`), or why there is none."""
    return line.delta.verdict.text if line.delta is not None else "not compared"


def compat_headline(result: CompatResult) -> str:
    s = result.summary
    if not result.files:
        return "no file compared"
    parts = [f"{n} {label}" for n, label in ((s.fail, "regressed"), (s.error, "could not be compared"),
                                              (s.warn, "warned"), (s.pass_, "passed"),
                                              (s.skip, "skipped")) if n]
    return ", ".join(parts)


def compat_overall(result: CompatResult) -> str:
    return {EXIT_OK: "✅ compatible", EXIT_GATE: "❌ regression",
            EXIT_INPUT: "💥 input error", EXIT_PROVIDER: "💥 provider failure"
            }.get(result.exit_code, f"exit {plain(result.exit_code)}")


def compat_markdown(result: CompatResult) -> str:
    """The `compat` report: headline, the one table (per file, each metric's B - A with its
    interval, p-value, verdict and gate), then what failed, errors and flipped rows."""
    lines = [COMPAT_MARKER, f"## promptctl compat: {compat_overall(result)}", "",
             f"{compat_headline(result)}. From {code(result.from_model)} (A) to "
             f"{code(result.to_model)} (B); a drop beyond a file's max_regression fails when "
             f"the paired test finds it significant at p < "
             f"{plain(format(result.significance, 'g'))}"
             + (" (strict: any drop beyond the limit fails)" if result.strict else "") + ".", ""]
    if result.files:
        lines += ["| file | metric | A | B | change | 95% CI | p | verdict | gate |",
                  "|---|---|---:|---:|---:|---:|---:|---|---|"]
        for line in compat_lines(result):
            e, d = line.entry, line.delta
            file = f"{plain(e.prompt)} ({code(e.path)})" if line.first else ""
            status = compat_status(line)
            lines.append(f"| {file} | {plain(line.metric or '-')} | {num(d.a if d else None)} | "
                         f"{num(d.b if d else None)} | {signed(d.delta if d else None)} | "
                         f"{interval(d.ci95 if d else None)} | "
                         f"{p_text(d.p_value if d else None)} | "
                         f"{plain(compat_verdict(line))} | "
                         f"{ICONS.get(status, plain(status))} |")
        lines.append("")
    for e in result.files:
        notes = [g for g in e.gates if g.status in ("fail", "warn", "skip")]
        section = [f"### {plain(e.prompt)}: {ICONS.get(e.status, plain(e.status))}", ""]
        if e.baseline_run and e.current_run:
            section += [f"A run {code(e.baseline_run)}, B run {code(e.current_run)}: "
                        f"{code(f'promptctl diff {e.baseline_run} {e.current_run}', 200)}", ""]
        section += [f"- **{plain(gate_label(g))}**: {plain(g.message)}" for g in notes]
        if notes:
            section.append("")
        if e.error:
            section += quoted("provider failure" if e.error.kind == "provider" else "error",
                              e.error.message)
        section += [f"> {plain(r)}" for r in e.reasons]
        if e.reasons:
            section.append("")
        if e.comparison is not None:
            section += [f"> ⚠️ {plain(w)}" for w in e.comparison.warnings]
            if e.comparison.warnings:
                section.append("")
            section += _flipped(e.comparison.flipped, e, sides=("A", "B"))
        if len(section) > 2:
            lines += section
    return "\n".join(lines).rstrip("\n") + "\n"
