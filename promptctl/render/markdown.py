"""`promptctl check` as GitHub-flavoured Markdown, for the job summary and a PR comment.

Anything a model or a user wrote (inputs, answers, error messages) is HTML-escaped
inside <code>, so it can neither break a table nor render as a link or image.
"""

from __future__ import annotations

import html
import json
from typing import Any

MARKER = "<!-- promptctl-check -->"
FLIPPED_SHOWN = 10
CELL_LIMIT = 80

ICONS = {"pass": "✅ pass", "warn": "⚠️ warn", "fail": "❌ fail", "error": "💥 error",
         "skip": "➖ skip"}


def _text(value: Any, limit: int = CELL_LIMIT) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def code(value: Any, limit: int = CELL_LIMIT) -> str:
    """Untrusted text as an inline code cell: escaped, one line, pipes neutralised."""
    if value is None:
        return "-"
    escaped = html.escape(_text(value, limit), quote=True).replace("|", "&#124;")
    return f"<code>{escaped}</code>" if escaped else "-"


def plain(value: Any, limit: int = 400) -> str:
    """Our own messages (which may quote a server's error): escaped, one line."""
    return html.escape(_text(value, limit), quote=False).replace("|", "&#124;")


def num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def signed(value: Any) -> str:
    return "-" if value is None else f"{value:+.3f}"


def interval(ci: Any) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "-"


def p_text(p: Any) -> str:
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def gate_label(gate: dict[str, Any]) -> str:
    """`rmse ≤ 1.5`, `format_validity ≥ 0.95`, `exact_match drop ≤ 0.02`."""
    if gate["kind"] == "min":
        return f"{gate['metric']} ≥ {gate['limit']:g}"
    if gate["kind"] == "max":
        return f"{gate['metric']} ≤ {gate['limit']:g}"
    return f"{gate['metric']} drop ≤ {gate['limit']:g}"


def headline(result: dict[str, Any]) -> str:
    s = result["summary"]
    if not result["prompts"]:
        return "no prompt changed"
    parts = [f"{s[k]} {label}" for k, label in (("fail", "failed"), ("error", "could not be checked"),
                                                 ("warn", "warned"), ("pass", "passed")) if s[k]]
    return ", ".join(parts)


def overall(result: dict[str, Any]) -> str:
    code_ = result["exit_code"]
    return {0: "✅ passed", 1: "❌ failed", 2: "💥 input error", 3: "💥 provider failure"}.get(
        code_, f"exit {code_}")


def _prompt_section(entry: dict[str, Any], significance: float) -> list[str]:
    lines = [f"### {plain(entry['prompt'])}: {ICONS.get(entry['status'], entry['status'])}", ""]
    facts = [plain("; ".join(entry["reasons"]))]
    if entry.get("model"):
        facts.append(f"model {code(entry['model'])}")
    if entry.get("baseline_run"):
        facts.append(f"baseline run `{entry['baseline_run']}` ({entry['baseline_source']}"
                     + (f", {plain(entry['baseline_model'])}"
                        if entry.get("baseline_model") not in (None, entry.get("model")) else "")
                     + ")")
    if entry.get("current_run"):
        facts.append(f"current run `{entry['current_run']}`")
    lines += [" · ".join(facts), ""]
    if entry.get("error"):
        kind = "provider failure" if entry["error"]["kind"] == "provider" else "error"
        lines += [f"> **{kind}:** {plain(entry['error']['message'], 1000)}", ""]
    if entry["gates"]:
        lines += ["| gate | current | baseline | change | 95% CI | p | verdict |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for g in entry["gates"]:
            change = signed(g.get("delta")) if g["kind"] == "max_regression" else "-"
            lines.append(f"| {gate_label(g)} | {num(g.get('value'))} | {num(g.get('baseline'))} | "
                         f"{change} | {interval(g.get('ci95')) if g['kind'] == 'max_regression' else '-'}"
                         f" | {p_text(g.get('p_value'))} | {ICONS.get(g['status'], g['status'])} |")
        lines.append("")
        notes = [g for g in entry["gates"] if g["status"] in ("fail", "warn", "skip")]
        for g in notes:
            lines.append(f"- **{gate_label(g)}**: {plain(g['message'])}")
        if notes:
            lines.append("")
    elif not entry.get("error"):
        lines += ["No thresholds in this prompt file: nothing to gate.", ""]
    comparison = entry.get("comparison")
    if comparison and comparison.get("metrics"):
        lines += ["<details><summary>All metrics versus the baseline</summary>", "",
                  "| metric | baseline | current | delta | 95% CI | p | test | n |",
                  "|---|---:|---:|---:|---:|---:|---|---:|"]
        for name, e in comparison["metrics"].items():
            mark = ""
            if e.get("direction") in ("better", "worse") and (e.get("p_value") or 1) < significance:
                mark = f" ({e['direction']})"
            lines.append(f"| {name}{mark} | {num(e.get('a'))} | {num(e.get('b'))} | "
                         f"{signed(e.get('delta'))} | {interval(e.get('ci95'))} | "
                         f"{p_text(e.get('p_value'))} | {e.get('test') or '-'} | {e.get('n', 0)} |")
        lines += ["", f"Paired rows {comparison['paired_rows']}, errors excluded "
                  f"{comparison['errors_excluded']}, only in baseline {comparison['only_in_a']}, "
                  f"only in current {comparison['only_in_b']}.", "", "</details>", ""]
        lines += _flipped(comparison["flipped"], entry)
    for w in entry["warnings"] + ((comparison or {}).get("warnings") or []):
        lines.append(f"> ⚠️ {plain(w)}  ")
    if entry["warnings"] or (comparison or {}).get("warnings"):
        lines.append("")
    return lines


def _flipped(flipped: dict[str, list[dict[str, Any]]], entry: dict[str, Any]) -> list[str]:
    worse, better = flipped.get("pass_to_fail") or [], flipped.get("fail_to_pass") or []
    errors_up = flipped.get("biggest_error_increases") or []
    if not (worse or better or errors_up):
        return []
    lines = [f"<details><summary>Flipped rows: {len(worse)} pass → fail, {len(better)} fail → pass"
             "</summary>", ""]
    if worse or better:
        lines += ["| row | change | input | expected | baseline answer | current answer |",
                  "|---|---|---|---|---|---|"]
        for change, group in (("pass → fail", worse), ("fail → pass", better)):
            for r in group[:FLIPPED_SHOWN]:
                lines.append(f"| {code(r['row_id'])} | {change} | {code(r['input'])} | "
                             f"{code(r.get('expected'))} | {code(r.get('answer_a'))} | "
                             f"{code(r.get('answer_b'))} |")
        hidden = max(0, len(worse) - FLIPPED_SHOWN) + max(0, len(better) - FLIPPED_SHOWN)
        if hidden:
            lines.append(f"\n{hidden} more: `promptctl diff {entry['baseline_run']} "
                         f"{entry['current_run']}`")
        lines.append("")
    if errors_up:
        lines += ["Biggest error increases:", "",
                  "| row | input | expected | baseline answer | current answer |",
                  "|---|---|---|---|---|"]
        for r in errors_up[:FLIPPED_SHOWN]:
            lines.append(f"| {code(r['row_id'])} | {code(r['input'])} | {code(r.get('expected'))} | "
                         f"{code(r.get('answer_a'))} | {code(r.get('answer_b'))} |")
        lines.append("")
    return [*lines, "</details>", ""]


def check_markdown(result: dict[str, Any]) -> str:
    """The whole report: headline, one verdict row per prompt, then a section per prompt."""
    base = result["base"]
    head = result["head"]
    lines = [MARKER, f"## promptctl check: {overall(result)}", "",
             f"{headline(result)}. Base {code(base['ref'])} ({plain(base['how'])}, "
             f"`{base['commit'][:12]}`), head `{(head.get('commit') or '-')[:12]}`"
             + (" with uncommitted changes" if head.get("dirty") else "")
             + f"; significance {result['significance']:g}"
             + (", strict" if result["strict"] else "") + ".", ""]
    prompts = result["prompts"]
    if prompts:
        lines += ["| prompt | verdict | why checked | gates |", "|---|---|---|---|"]
        for p in prompts:
            failed = [gate_label(g) for g in p["gates"] if g["status"] == "fail"]
            warned = [gate_label(g) for g in p["gates"] if g["status"] == "warn"]
            gates = []
            if failed:
                gates.append("failed: " + ", ".join(failed))
            if warned:
                gates.append("warned: " + ", ".join(warned))
            if p.get("error"):
                gates.append("not checked")
            if not gates:
                passed = sum(1 for g in p["gates"] if g["status"] == "pass")
                gates.append(f"{passed} passed")
            lines.append(f"| {plain(p['prompt'])} | {ICONS.get(p['status'], p['status'])} | "
                         f"{plain('; '.join(p['reasons']))} | {'; '.join(gates)} |")
        lines.append("")
        for p in prompts:
            lines += _prompt_section(p, result["significance"])
    if result["deleted"]:
        lines += ["### Deleted prompts", ""]
        lines += [f"- {plain(d['prompt'])} ({code(d['path'])})" for d in result["deleted"]]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
