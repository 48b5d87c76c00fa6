"""Rich tables for humans; plain text when stdout is not a terminal (rich decides).

Every console comes from `console()`: an `InertConsole`, through which no text from
data can act on the terminal (see `promptctl.render.inert`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from promptctl.metrics.registry import builtin, builtin_metrics, higher_is_better
from promptctl.render import fmt, inert
from promptctl.results import ProbeResult
from promptctl.runs import Answered, MetricResult, RowResult, RunResult, RunSummary, SelfConsistency
from promptctl.toolcalls import call_text


class InertConsole(Console):
    """A console that shows control characters in what it prints as escapes and masks secrets.

    Every string it prints or lays out in a table (markup or not) goes through
    `inert.text` before rich measures it, so columns stay aligned. What reaches it already
    built (a `Text`, a progress bar's fields) is made inert segment by segment on the way
    out, where links are dropped too: promptctl prints no hyperlinks, so an OSC 8 sequence
    can only come from someone's markup. Rich's own control segments (cursor moves of a
    progress bar) pass unchanged.
    """

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(inert.text(text), **kwargs)

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        return super()._render_buffer(_inert_segments(buffer))


def _inert_segments(segments: Iterable[Segment]) -> Iterator[Segment]:
    for segment in segments:
        text, style, control = segment
        if control:
            yield segment
            continue
        if style is not None and style.link:
            style = style.update_link(None)
        yield Segment(inert.text(text), style)


def console(stderr: bool = False) -> Console:
    """A console that honours NO_COLOR; off a terminal, wide enough that tables stay readable."""
    import os
    import sys

    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not (hasattr(stream, "isatty") and stream.isatty()) and not os.environ.get("COLUMNS"):
        width = 160  # logs and pipes have no width; 80 squeezes every table into ellipses
    return InertConsole(stderr=stderr, highlight=False, soft_wrap=False, width=width,
                        emoji=False)


def cell(value: Any, limit: int = 200) -> str:
    """A value from data as console markup that shows it literally: on one line (a newline
    shows as ⏎), cut to `limit` characters, rich markup escaped."""
    if value is None:
        return "-"
    # Made inert before it is cut, so no secret is cut to a piece too short to be recognised.
    return escape(inert.shorten(inert.text(value).replace("\n", " ⏎ "), limit))


def block(value: Any) -> str:
    """A message from data as console markup that shows it literally, its lines kept."""
    return escape(inert.text(value))


def fmt_cost(cost: float | None) -> str:
    if cost is None or not math.isfinite(cost):
        return "unknown (add the model to pricing: in promptctl.yaml)"
    return f"${cost:.4f}" if cost < 100 else f"${cost:,.2f}"


def _usd(cost: Any) -> str:
    if not isinstance(cost, int | float) or isinstance(cost, bool) or not math.isfinite(cost):
        return "unknown"
    return fmt_cost(cost)


def cost_text(cost: float | None, spent: float | None, saved: float | None) -> str:
    """`cost $0.0120` when everything was sent now; else with what this run paid and what
    the cache saved it: `cost $0.0120 (paid now $0.0000, saved by the cache $0.0120)`. The
    cost is what the answers cost as if nothing were cached."""
    text = f"cost {fmt_cost(cost)}"
    if spent is None and saved is None:  # a run stored before they were kept, or all unknown
        return text
    if cost is not None and spent is not None and abs(cost - spent) < 5e-9:
        return text
    parts = [f"paid now {_usd(spent)}"]
    if saved is not None:
        parts.append(f"saved by the cache {_usd(saved)}")
    return f"{text} ({', '.join(parts)})"


def _short(sha: Any, n: int = 10) -> str:
    return cell(sha[:n]) if isinstance(sha, str) and sha else "-"


def _partial(run: RunResult) -> str:
    """Why a complete run stands for no version: how much of its eval set it covered."""
    total = run.evalset_rows
    done = run.summary.n
    text = f"{done} of {total} rows" if total else f"{done} rows"
    if run.limit is not None:
        text += f" (--limit {run.limit})"
    return text + ", not a result for its prompt version"


def _count(value: Any) -> str:
    return str(value) if isinstance(value, int) else fmt.num(value, 0)


def run_summary(con: Console, run: RunResult) -> None:
    """The summary table of one run: metrics with intervals, few-shot side by side, accounting."""
    summary = run.summary
    dirty = " (dirty)" if run.git_dirty else ""
    status = "" if run.status == "complete" else f"  [bold red]{cell(run.status)}[/]"
    if run.status == "complete" and not run.covers_evalset:
        status = f"  [yellow]partial: {_partial(run)}[/]"
    con.print(f"[bold]{cell(run.prompt_name)}[/] with [bold]{cell(run.model)}[/]  "
              f"run {cell(run.id)}  commit {_short(run.git_commit)}{dirty}  "
              f"prompt {_short(run.prompt_version, 12)}{status}")
    table = Table(show_edge=False, header_style="bold")
    table.add_column("metric")
    table.add_column("eval set (95% CI)", justify="right")
    table.add_column("n", justify="right")
    table.add_column("few-shot examples", justify="right")
    table.add_column("n", justify="right")
    for name, result in run.metrics.items():
        better = result.higher_is_better
        label = cell(name) + ("" if (better if better is not None else higher_is_better(name))
                              else " (lower is better)")
        fs = run.fewshot_metrics.get(name)
        table.add_row(label, fmt.metric(result.to_json()), _count(result.n),
                      fmt.metric(fs.to_json()) if fs is not None and fs.n else "-",
                      _count(fs.n if fs is not None else 0))
    con.print(table)
    lat = "  ".join(f"{cell(k)} {fmt.num(v, 0)}" for k, v in summary.latency_ms.items()) or "-"
    no_text = f"  no text answer {_count(summary.no_text)}" if summary.no_text else ""
    samples = f" ({_count(summary.n)} samples)" if summary.n != summary.rows else ""
    # Counts over the eval rows, as `rows` and the metrics' n; few-shot examples apart.
    fewshot = f"  few-shot errors {_count(summary.fewshot_errors)}" \
        if summary.fewshot_errors else ""
    con.print(f"rows {_count(summary.rows)}{samples}  errors {_count(summary.errors)}{fewshot}"
              f"{no_text}  "
              f"cached {_count(summary.cached)}  "
              f"retries {_count(summary.retries)}  "
              f"tokens {_count(summary.tokens.prompt)} in / "
              f"{_count(summary.tokens.completion)} out  "
              f"{cost_text(summary.cost_usd, summary.spent_usd, summary.saved_usd)}")
    con.print(f"latency ms  {lat}")
    for metric, failed in summary.scoring_errors.items():
        shown = "; ".join(f"{cell(r.get('row_id'), 40)}"
                          + (" (few-shot)" if r.get("kind") == "fewshot" else "")
                          + f": {cell(r.get('error'), 200)}" for r in failed.rows)
        more = failed.samples + failed.fewshot - len(failed.rows)
        # Eval rows, as the metric's n counts them; samples and few-shot examples apart.
        what = f"{_count(failed.count)} rows"
        if failed.samples > failed.count:
            what += f" ({_count(failed.samples)} samples)"
        if failed.fewshot:
            what += f" and {_count(failed.fewshot)} few-shot examples"
        con.print(f"[yellow]{cell(metric)}: no score for {what}[/] "
                  f"({shown}{f'; and {more} more' if more > 0 else ''})", soft_wrap=True)
    scorer_usage(con, summary.scorers, run.metrics, summary.scoring_errors)
    if summary.consistency:
        repeat_summary(con, dict(summary.consistency))
    if summary.samples is not None:
        samples_summary(con, summary.samples)
    if run.kind == "pipeline":
        pipeline_summary(con, summary)
    if run.kind == "agent" and summary.agent is not None:
        agent_summary(con, summary.agent, summary.cost_usd, summary.rows)
    fps = list(summary.system_fingerprints)
    models = list(summary.response_models)
    if len(fps) > 1 or len(models) > 1:
        con.print(f"[yellow]warning:[/] the server answered as several models/fingerprints "
                  f"({cell(', '.join(map(str, models + fps)), 400)}): results may mix model "
                  "versions")


def pipeline_summary(con: Console, summary: RunSummary) -> None:
    """A pipeline run's steps (ran, skipped, errors, their own metrics), its composability gap
    and its control-flow correctness."""
    table = Table(show_edge=False, header_style="bold")
    for name in ("step", "ran", "skipped", "errors", "metric", "value (95% CI)", "n"):
        table.add_column(name, justify="left" if name in ("step", "metric") else "right")
    for step_id, step in summary.steps.items():
        counts = [_count(step.ran), _count(step.skipped), _count(step.errors)]
        scored = [(k, v) for k, v in step.metrics.items() if v.n]
        if not scored:
            table.add_row(cell(step_id), *counts, "-", "-", "-")
        for i, (name, result) in enumerate(scored):
            table.add_row(cell(step_id) if i == 0 else "", *(counts if i == 0 else ["", "", ""]),
                          cell(name), fmt.metric(result.to_json()), _count(result.n))
    con.print(table)
    gap = summary.composability_gap
    value = gap.value if gap is not None else None
    con.print(f"composability gap {'-' if value is None else fmt.num(value, 3)}  "
              f"(n {_count(gap.n if gap else 0)}: rows whose every step with an expected value "
              f"was right; {_count(gap.wrong if gap else 0)} of them wrong end to end)")
    flow = summary.control_flow
    if flow:
        con.print(f"control flow correct {fmt.metric(flow.to_json())}  (n {_count(flow.n)})")


def agent_summary(con: Console, agent: Mapping[str, Any], cost: float | None,
                  rows: int) -> None:
    """An agent run's turns, tool errors, turn limit, tool selection, composability gap, and
    time (the tools' apart from the model's) and cost per row."""
    con.print(f"agent  turns per row {fmt.num(agent.get('turns_mean'), 2)}  "
              f"tool calls {_count(agent.get('tool_calls', 0))}  "
              f"tool errors {_count(agent.get('tool_errors', 0))}  "
              f"invalid calls {_count(agent.get('invalid_calls', 0))}  "
              f"turn limit {_count(agent.get('turn_limit', 0))}")
    selection = agent.get("tool_selection")
    gap = agent.get("composability_gap") or {}
    value = gap.get("value")
    chosen = f"{fmt.metric(dict(selection))}  (n {_count(selection.get('n', 0))})" \
        if isinstance(selection, Mapping) else "-"
    con.print(f"tool selection {chosen}  "
              f"composability gap {'-' if value is None else fmt.num(value, 3)} "
              f"(n {_count(gap.get('n', 0))}: rows whose every tool call succeeded and matched "
              f"the expected tools; {_count(gap.get('wrong', 0))} of them wrong)")
    con.print(f"per row  ms model {fmt.num(agent.get('model_ms_mean'), 0)}  "
              f"tools {fmt.num(agent.get('tool_ms_mean'), 0)}  "
              f"total {fmt.num(agent.get('latency_ms_mean'), 0)}  cost "
              f"{_usd(cost / rows) if cost is not None and rows else '-'}")


def scorer_usage(con: Console, scorers: Mapping[str, Mapping[str, Any]],
                 metrics: Mapping[str, MetricResult], listed: Collection[str] = ()) -> None:
    """What judges and embeddings models cost, apart from the evaluated model; and the rows
    they could not score."""
    parts = [f"{cell(model)} {_count(u.get('requests', 0))} requests "
             f"(cached {_count(u.get('cached', 0))}, errors {_count(u.get('errors', 0))}) "
             f"tokens {_count(u.get('prompt_tokens', 0))} in / "
             f"{_count(u.get('completion_tokens', 0))} out {_scorer_cost(u)}"
             for model, u in scorers.items()]
    # Metrics listed with their rows' messages (scoring_errors) are not counted again.
    unscored = [f"{cell(name)} {_count(r.unscored)}" for name, r in metrics.items()
                if r.unscored and name not in listed]
    if parts:
        con.print("scorers  " + "; ".join(parts))
    if unscored:
        con.print(f"[yellow]unscored rows[/] (the scorer gave no score): {', '.join(unscored)}")


def _scorer_cost(usage: Mapping[str, Any]) -> str:
    """A scorer's cost as the run's: as if nothing were cached, then what was paid now."""
    cost, spent = usage.get("cost_usd"), usage.get("spent_usd")
    if "spent_usd" not in usage:  # stored before both were kept: cost_usd was what was paid
        return f"paid now {fmt_cost(cost)}"
    saved = cost - spent if isinstance(cost, int | float) and isinstance(spent, int | float) \
        else None
    return cost_text(cost, spent, None if saved is None else max(0.0, saved))


def repeat_summary(con: Console, c: dict[str, Any]) -> None:
    """`eval --repeat K`: how stable the answers were across the K samples of each row."""
    con.print(f"repeat {c['k']} samples per row over {c['rows']} rows: mean agreement "
              f"{fmt.metric(c['mean_agreement'])}  unstable rows {fmt.metric(c['unstable_share'])}")
    metric = cell(c["metric"])
    con.print(f"pass@{c['k']} {fmt.metric(c['pass_at_k'])}  pass^{c['k']} "
              f"{fmt.metric(c['pass_hat_k'])}  majority-vote {metric} "
              f"{fmt.metric(c['majority_vote'])}  (all three by {metric})")
    flaky = c.get("flaky_rows") or []
    if flaky:
        shown = ", ".join(f"{cell(r['row_id'], 40)} ({r['agreement']:.0%})" for r in flaky[:10])
        more = f" and {len(flaky) - 10} more" if len(flaky) > 10 else ""
        con.print(f"[yellow]flaky rows ({len(flaky)}):[/] {shown}{more}", soft_wrap=True)
    else:
        con.print("flaky rows: none (every sample of every row gave the same answer)")


def _multiple(value: float | None) -> str:
    return "-" if value is None else f"{fmt.num(value, 2)}x"


def samples_summary(con: Console, s: SelfConsistency) -> None:
    """`eval --samples K`: the vote against the first sample on the same rows (the paired
    delta, its interval and p-value, as `diff` tests two runs), and what the K samples cost
    against one."""
    how = "one request with n per row" if s.requests.get("n") else "one request per sample"
    if s.requests.get("n") and s.requests.get("separate"):
        how = (f"n on {_count(s.requests['n'])} rows, one request per sample on "
               f"{_count(s.requests['separate'])}")
    temperature = "" if s.temperature is None else f" at temperature {fmt.num(s.temperature, 2)}"
    con.print(f"samples {_count(s.k)} per row{temperature}, vote {cell(s.vote)}, over "
              f"{_count(s.rows)} rows ({how})")
    if s.note:
        con.print(f"[yellow]{cell(s.note, 400)}:[/] each sample was sent as its own request",
                  soft_wrap=True)
    table = Table(show_edge=False, header_style="bold")
    for col in ("metric", "first sample", f"vote of {s.k}", "delta", "95% CI", "p"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for m in s.metrics:
        label = cell(m.metric) + ("" if m.higher_is_better else " (lower is better)")
        table.add_row(label, fmt.num(m.single), fmt.num(m.voted), fmt.signed(m.delta),
                      fmt.interval(list(m.ci95) if m.ci95 is not None else None),
                      fmt.p_value(m.p_value))
    con.print(table)
    latency = _multiple(s.latency_multiple) if s.latency_multiple is not None \
        else "- (one request gave every sample: no single-sample latency)" \
        if s.requests.get("n") else "-"
    con.print(f"cost {_multiple(s.cost_multiple)}  "
              f"tokens {_multiple(s.tokens_multiple)}  latency {latency}  "
              "(the vote against its first sample)")


def runs_table(con: Console, runs: Sequence[RunResult]) -> None:
    """Stored runs, newest first."""
    table = Table(show_edge=False, header_style="bold")
    for col in ("id", "time (UTC)", "prompt", "commit", "dirty", "version", "model", "status",
                "n", "err", "metrics"):
        table.add_column(col, no_wrap=col != "metrics")
    for run in runs:
        shown = "  ".join(f"{cell(k)} {fmt.num(v.value)}" for k, v in run.metrics.items())
        table.add_row(cell(run.id), cell(run.created_at[:19].replace("T", " ")),
                      cell(run.prompt_name), _short(run.git_commit, 8),
                      "yes" if run.git_dirty else ("-" if run.git_dirty is None else "no"),
                      _short(run.prompt_version, 8), cell(run.model),
                      cell(run.status) + ("" if run.covers_evalset else " (partial)")
                      + (" (probe)" if run.is_probe else "")
                      + (f" (samples {run.samples_per_row})" if run.samples_per_row else ""),
                      _count(run.summary.n), _count(run.summary.errors), shown)
    con.print(table)


def _score(value: Any) -> str:
    if isinstance(value, bool):
        value = int(value)
    return fmt.short(value) if isinstance(value, int | float) else "-"


def row_scores(asked: Iterable[str], scores: dict[str, Any]) -> str:
    """A row's scores for the metrics the run asked for, each as its metric says a row's
    score reads (a share as 0/1, an error as the row's absolute error); a metric with no
    per-row value is left out, and a reading two metrics share is shown once."""
    parts: list[str] = []
    for name in asked:
        # A configured metric (a judge, a scorer) keeps its score under its own name.
        metric = builtin(name)
        text = metric.describe_row(scores, _score) if metric is not None \
            else f"{cell(name, 40)} {_score(scores.get(name))}"
        if text is not None and text not in parts:
            parts.append(text if metric is None else cell(text, 60))
    return "  ".join(parts)


def _implied(scores: dict[str, Any]) -> list[str]:
    """The metrics a row's scores were kept for, when the run has no totals to name them (it
    was interrupted): the built-in pass/fail shares it holds, then one reading of its
    numeric answer."""
    metrics = builtin_metrics()
    shares = [m.name for m in metrics if m.pass_fail and m.key == m.name and m.key in scores]
    numeric = [m.name for m in metrics if not m.pass_fail and m.key in scores
               and m.row_text is not None and m.describe_row(scores, _score) is not None]
    return shares + numeric[:1]


def scoring_notes(details: Mapping[str, Any]) -> str:
    """Why a configured metric gave a row no score (a scorer's exception, a failed request)."""
    # A judge's error is shown with its answer (judge_lines).
    return "".join(f"\n[red]{cell(metric, 40)}: {cell(d['error'], 400)}[/]"
                   for metric, d in details.items()
                   if isinstance(d, Mapping) and d.get("error") is not None
                   and "completion" not in d)


def no_answer(reason: Any) -> str:
    """Why a completion gave no answer, as a sentence: `no answer: the pattern did not match`."""
    text = str(reason or "it could not be read").strip()
    if text.startswith("pattern "):
        text = "the " + text
    return f"no answer: {text}"


def judge_lines(judges: Any) -> str:
    """What each judge answered for a row (kept beside the row's completion), and on a line
    of its own, why its answer gave no score: the judge's words never run into ours."""
    if not isinstance(judges, Mapping):
        return ""
    out = []
    for name, j in judges.items():
        # Other configured metrics keep only their error here (scoring_notes shows it).
        if not isinstance(j, Mapping) or "completion" not in j:
            continue
        out.append(f"\n{cell(name, 40)} judge: {cell(j.get('completion') or '', 300)}")
        if j.get("error"):
            out.append(f"\n[red]{cell(name, 40)} judge error: {cell(j['error'], 300)}[/]")
    return "".join(out)


def completion_cell(row: RowResult) -> str:
    """What the model answered: its text, then each tool call it made as it wrote it."""
    parts = [cell(row.completion)] if row.completion else []
    if row.tool_calls is not None:
        parts += [f"[dim]call[/] {cell(call_text(c), 400)}" for c in row.tool_calls] \
            or ["[dim]no tool call[/]"]
    return "\n".join(parts)


def show_rows(con: Console, run: RunResult, rows: Iterable[RowResult]) -> None:
    """One run row by row."""
    run_summary(con, run)
    asked = list(run.metrics or run.fewshot_metrics)  # none: unfinished
    table = Table(show_edge=False, header_style="bold", show_lines=True)
    for col in ("row", "input", "completion", "answer", "expected", "scores", "tokens", "ms"):
        table.add_column(col, overflow="fold")
    for row in rows:
        tag = cell(row.row_id, 80) + ("" if row.kind == "eval" else " (few-shot)")
        if row.sample:
            tag += f" #{_count(row.sample)}"
        if row.error:
            table.add_row(tag, cell(row.input), f"[red]error:[/] {cell(row.error, 1000)}",
                          "", "", "", "", "")
            _step_rows(table, row)
            continue
        if not row.valid:
            answer = f"[red]{cell(no_answer(row.extract_error))}[/]"
        elif row.answer is None and row.tool_calls == ():
            answer = "no call"  # a tool call answer: the model called nothing
        else:
            answer = cell(row.answer)
        tokens = f"{_count(row.prompt_tokens)}/{_count(row.completion_tokens)}"
        expected = cell(row.expected) if row.has_expected else "-"
        if row.has_expected and row.expected is None and row.tool_calls is not None:
            expected = "no call"
        table.add_row(tag, cell(row.input), completion_cell(row), answer, expected,
                      row_scores(asked or _implied(dict(row.scores)), dict(row.scores))
                      + judge_lines(row.judges) + scoring_notes(row.judges),
                      tokens + (" cached" if row.cached else ""),
                      fmt.num(row.latency_ms, 0))
        _step_rows(table, row)
        _turn_rows(table, row)
        _sample_rows(table, row)
    con.print(table)


def _sample_text(sample: Mapping[str, Any]) -> str:
    if sample.get("error") is not None:
        return f"[red]error[/] {cell(sample.get('error'), 200)}"
    if not sample.get("valid"):
        return f"[red]{cell(no_answer(sample.get('extract_error')), 200)}[/]"
    return cell(sample.get("answer"), 200)


def _sample_rows(table: Table, row: RowResult) -> None:
    """Under a sampled row, its samples' answers and which one the vote picked."""
    detail = row.samples
    if detail is None:
        return
    samples = [s for s in detail.get("samples") or [] if isinstance(s, Mapping)]
    chosen = detail.get("chosen")
    shown = ", ".join(f"{i + 1}: {_sample_text(s)}" + (" [bold]<- vote[/]" if i == chosen else "")
                      for i, s in enumerate(samples))
    judge = detail.get("judge")
    if isinstance(judge, Mapping) and judge.get("error"):
        shown += f"\n[yellow]judge: {cell(judge['error'], 300)}[/]"
    table.add_row("", "", f"[dim]samples ({cell(detail.get('vote'))}, "
                  f"{_count(detail.get('votes'))} of {_count(len(samples))} agree)[/]\n{shown}",
                  "", "", "", "", "")


def _turn_rows(table: Table, row: RowResult) -> None:
    """Under an agent row, its trajectory turn by turn: what the model said, each call it
    made with its arguments and what came back (or its error)."""
    trajectory = row.trajectory
    if trajectory is None:
        return
    turns = trajectory.get("turns")
    for turn in turns if isinstance(turns, list) else []:
        if not isinstance(turn, Mapping):
            continue
        tag = f"  turn {_count(turn.get('turn'))}"
        tokens = f"{_count(turn.get('prompt_tokens') or 0)}/{_count(turn.get('completion_tokens') or 0)}"
        if turn.get("cached"):
            tokens += " cached"
        if turn.get("error") is not None:
            table.add_row(tag, "", f"[red]error:[/] {cell(turn.get('error'), 1000)}", "", "", "",
                          tokens, fmt.num(turn.get("latency_ms"), 0))
            continue
        lines = [cell(turn.get("completion"), 400)] if turn.get("completion") else []
        calls = turn.get("calls")
        for call in calls if isinstance(calls, list) else []:
            if not isinstance(call, Mapping):
                continue
            lines.append(_call_line(call))
        table.add_row(tag, "", "\n".join(lines) or "-", "", "", "", tokens,
                      fmt.num(turn.get("latency_ms"), 0))
    outcome = trajectory.get("outcome")
    if outcome == "turn_limit":
        table.add_row("", "", "[yellow]turn limit: max_turns reached, scored as it stands[/]",
                      "", "", "", "", "")
    if isinstance(trajectory.get("tool_selection"), int | float):
        expected = trajectory.get("expected_tools") or []
        table.add_row("", "", f"tool selection {_score(trajectory['tool_selection'])} "
                      f"(expected {cell(', '.join(map(str, expected)), 200)}"
                      f"{', in order' if trajectory.get('tools_order') == 'strict' else ''})",
                      "", "", "", "", "")


def show_row_texts(con: Console, run: RunResult, rows: Iterable[RowResult]) -> None:
    """Some rows of a run (each sample), every text in full with its lines kept: what the
    table of `show_rows` and the HTML report's cells cut short."""
    asked = list(run.metrics or run.fewshot_metrics)
    con.print(f"run {cell(run.id)}  [bold]{cell(run.prompt_name)}[/] with "
              f"[bold]{cell(run.model)}[/]")
    for row in rows:
        kind = "" if row.kind == "eval" else " (few-shot)"
        sample = f" #{_count(row.sample)}" if row.sample else ""
        con.print(f"\n[bold]row {cell(row.row_id, 200)}{kind}{sample}[/]")
        _full_texts(con, row, "")
        if not row.error:
            scores = row_scores(asked or _implied(dict(row.scores)), dict(row.scores))
            con.print(f"[bold]scores[/] {scores}{scoring_notes(row.judges)}")
        for step_id, st in row.steps.items():
            con.print(f"[bold]step {cell(step_id, 80)}[/]")
            if st.not_run:
                con.print(f"  [dim]not run: {block(st.not_run)}[/]")
            elif st.skipped:
                con.print("  [dim]skipped (when: was false)[/]")
            else:
                _full_texts(con, st, "  ")
        if row.trajectory is not None:
            _full_turns(con, row.trajectory)
        if row.samples is not None:
            _full_samples(con, row.samples)
        facts = [f"tokens {_count(row.prompt_tokens)}/{_count(row.completion_tokens)}"]
        if row.latency_ms is not None:
            facts.append(f"{fmt.num(row.latency_ms, 0)} ms")
        if row.cached:
            facts.append("cached")
        con.print("[dim]" + "  ".join(facts) + "[/]")


def _full_samples(con: Console, detail: Mapping[str, Any]) -> None:
    """A sampled row's samples in full, the one the vote picked marked."""
    chosen = detail.get("chosen")
    for i, sample in enumerate(detail.get("samples") or []):
        if not isinstance(sample, Mapping):
            continue
        mark = "  [bold]<- vote[/]" if i == chosen else ""
        con.print(f"[bold]sample {i + 1}[/] answer {_sample_text(sample)}{mark}")
        if sample.get("completion") is not None:
            con.print(block(sample.get("completion")))
    judge = detail.get("judge")
    if isinstance(judge, Mapping):
        pick = f"picked {judge['pick']}" if judge.get("pick") else cell(judge.get("error"), 300)
        con.print(f"[bold]judge[/] {cell(judge.get('model'))}: {pick}")
        if judge.get("completion"):
            con.print(block(judge.get("completion")))


def _call_line(call: Mapping[str, Any], limit: int | None = 300) -> str:
    """One call of an agent's turn: name(arguments) and its result, error or fate."""
    def text(value: Any) -> str:
        return block(value) if limit is None else cell(value, limit)

    line = f"[dim]call[/] {cell(call.get('name'), 80)}({text(call.get('arguments'))})"
    if call.get("not_executed"):
        line += " [yellow]not run: max_turns reached[/]"
    elif call.get("invalid"):
        line += f" [red]invalid:[/] {text(call.get('error'))}"
    elif call.get("error"):
        line += f" [red]tool error:[/] {text(call.get('error'))}"
    else:
        line += f" -> {text(call.get('result'))}"
    if call.get("ms") is not None and not call.get("not_executed"):
        line += f" [dim]{fmt.num(call.get('ms'), 0)} ms[/]"
    return line


def _full_turns(con: Console, trajectory: Mapping[str, Any]) -> None:
    """An agent row's turns, whole: each completion, and each call with its result."""
    turns = trajectory.get("turns")
    for turn in turns if isinstance(turns, list) else []:
        if not isinstance(turn, Mapping):
            continue
        facts = f"tokens {_count(turn.get('prompt_tokens') or 0)}/" \
            f"{_count(turn.get('completion_tokens') or 0)}  {fmt.num(turn.get('latency_ms'), 0)} ms" \
            + ("  cached" if turn.get("cached") else "")
        con.print(f"[bold]turn {_count(turn.get('turn'))}[/] [dim]{facts}[/]")
        if turn.get("error") is not None:
            con.print(f"  [red]error: {block(turn.get('error'))}[/]")
            continue
        if turn.get("completion"):
            con.print("  " + block(turn.get("completion")).replace("\n", "\n  "))
        calls = turn.get("calls")
        for call in calls if isinstance(calls, list) else []:
            if isinstance(call, Mapping):
                con.print("  " + _call_line(call, None), soft_wrap=True)
    if trajectory.get("outcome") == "turn_limit":
        con.print("[yellow]turn limit: max_turns reached, scored as it stands[/]")


def _full_texts(con: Console, answered: Answered, indent: str) -> None:
    """The texts of a row or a step, whole: input, completion (or error), answer, expected,
    each judge's completion."""
    def part(name: str, value: Any, style: str = "") -> None:
        body = block(value).replace("\n", "\n" + indent + "  ")
        shown = f"[{style}]{body}[/]" if style else body
        con.print(f"{indent}[bold]{name}[/]\n{indent}  {shown}")

    if isinstance(answered.input, Mapping) and answered.input:
        con.print(f"{indent}[bold]input[/]")
        for k, v in answered.input.items():
            value = block(v).replace("\n", "\n" + indent + "    ")
            con.print(f"{indent}  {cell(k, 200)}: {value}")
    elif answered.input is not None:
        part("input", answered.input)
    if answered.error:
        part("error", answered.error, "red")
        return
    part("completion", answered.completion or "")
    if answered.tool_calls is not None:
        part("tool calls", "\n".join(call_text(c) for c in answered.tool_calls) or "none")
    if answered.valid and answered.answer is None and answered.tool_calls == ():
        part("answer", "no call")
    elif answered.valid:
        part("answer", answered.answer)
    else:
        part("answer", no_answer(answered.extract_error), "red")
    if answered.has_expected:
        part("expected", answered.expected)
    for name, j in answered.judges.items():
        if isinstance(j, Mapping) and "completion" in j:
            score = "no score" if j.get("score") is None else _score(j.get("score"))
            part(f"judge {cell(name, 40)}: {score}", j.get("completion") or "")
            if j.get("error"):
                part(f"judge {cell(name, 40)} error", j["error"], "red")


def _step_rows(table: Table, row: RowResult) -> None:
    """Under a pipeline row, one line per step: what it was given, what it answered."""
    for step_id, st in row.steps.items():
        tag = f"  step {cell(step_id, 80)}"
        expected = cell(st.expected) if st.has_expected else "-"
        flow = ""
        if st.should_run is not None:
            flow = f"  flow {'right' if st.flow_correct else 'wrong'}"
        if st.not_run:
            table.add_row(tag, "", f"[dim]not run: {cell(st.not_run)}[/]", "", expected, "",
                          "", "")
            continue
        if st.error is not None:
            table.add_row(tag, "", f"[red]error:[/] {cell(st.error, 1000)}", "", expected,
                          flow.strip(), "", "")
            continue
        if st.skipped:
            table.add_row(tag, "", "[dim]skipped (when: was false)[/]", "null", expected,
                          flow.strip(), "", "")
            continue
        if st.unrendered:
            table.add_row(tag, "", f"[red]{cell(st.extract_error, 1000)}[/]", "", expected,
                          flow.strip(), "", "")
            continue
        given = cell([i.input for i in st.items]) if st.items is not None else cell(st.input)
        completion = cell([i.completion for i in st.items]) if st.items is not None \
            else cell(st.completion or "")
        answer = cell(st.answer) if st.valid \
            else f"[red]{cell(no_answer(st.extract_error))}[/]"
        verdict = "" if st.correct is None else ("right" if st.correct else "wrong")
        tokens = f"{_count(st.prompt_tokens)}/{_count(st.completion_tokens)}"
        table.add_row(tag, given, completion, answer, expected,
                      (verdict + flow).strip() + judge_lines(st.judges) + scoring_notes(st.judges),
                      tokens + (" cached" if st.cached else ""), fmt.num(st.latency_ms, 0))


def dry_run_table(con: Console, plans: list[dict[str, Any]]) -> None:
    """What `eval --dry-run` would send."""
    table = Table(show_edge=False, header_style="bold")
    for col in ("prompt", "model", "requests", "cached", "to send", "prompt tokens",
                "completion tokens (max)", "cost (max)"):
        table.add_column(col, justify="left" if col in ("prompt", "model") else "right")
    for p in plans:
        table.add_row(cell(p["prompt"]), cell(p["model"]), _count(p["requests"]),
                      _count(p["cached"]), _count(p["to_send"]), _count(p["prompt_tokens"]),
                      "-" if p["completion_tokens_max"] is None
                      else _count(p["completion_tokens_max"]),
                      fmt_cost(p["estimated_cost_usd_max"]))
    con.print(table)
    for p in plans:
        for metric, e in (p.get("embeddings") or {}).items():
            con.print(f"{cell(p['prompt'])}: embeddings for {cell(metric)} ({cell(e['model'])}): "
                      f"at most {_count(e['texts_max'])} texts in at least "
                      f"{_count(e['requests_min'])} requests ({_count(e['expected_cached'])} "
                      f"expected texts cached), cost at most {fmt_cost(e['cost_usd_max'])}")
        for s in p.get("scorers") or []:
            most = s["completion_tokens_max"]
            what = "judge" if s.get("kind") == "llm_judge" else cell(s.get("kind") or "scorer")
            con.print(f"{what} {cell(s['metric'])} of {cell(p['prompt'])} on {cell(s['model'])}: "
                      f"{_count(s['requests'])} requests (the cache is asked once the answers "
                      f"exist), prompt tokens {_count(s['prompt_tokens'])}, completion tokens "
                      f"(max) {'-' if most is None else _count(most)}, "
                      f"cost (max) {fmt_cost(s['estimated_cost_usd_max'])}")
    methods = sorted({str(p["token_count_method"]) for p in plans})
    con.print(f"prompt tokens: {cell(', '.join(methods))}; nothing was sent")
    for p in plans:
        if p["first_request"]:
            con.print(f"\n[bold]first request of {cell(p['prompt'])}[/]:")
            for m in p["first_request"]:
                con.print(f"[dim]{cell(m['role'])}:[/] {escape(inert.as_text(m['content']))}",
                          soft_wrap=True)


def batch_note(con: Console, run: RunResult) -> None:
    """A batched run's batches, its price, and the requests that were not batched."""
    batch = run.summary.batch
    if batch is None:
        return
    batches = batch.get("batches") or []
    ids = ", ".join(cell(str(b.get("id"))) for b in batches[:4]) + (" ..." if len(batches) > 4 else "")
    factor = batch.get("price_factor")
    price = f"  priced at {fmt.num(factor * 100, 0)}% of the standard price" \
        if isinstance(factor, int | float) and factor != 1 else ""
    con.print(f"batch API  {_count(len(batches))} batch(es) {ids}{price}")
    direct = batch.get("direct") or {}
    if direct:
        sent = "; ".join(f"{cell(spec)} {_count(u.get('requests', 0))} requests"
                         for spec, u in direct.items())
        con.print(f"[yellow]sent directly, not batched[/] (judge / embedding requests made while "
                  f"scoring): {sent}")
    for b in batches:
        ignored = b.get("ignored")
        if isinstance(ignored, int) and ignored:
            con.print(f"[yellow]batch {cell(str(b.get('id')))}: {_count(ignored)} line(s) of its "
                      "result files left out[/] (unreadable, for requests it was not given, or "
                      "repeated)")


def _answer(value: Any) -> str:
    return "(unreadable)" if value is None else cell(value, 60)


def probe_summary(con: Console, result: ProbeResult) -> None:
    """`promptctl probe`: per label the round-trip agreement with its interval, and the other
    answers; then what went wrong in the generation, and what was saved."""
    run, probe = result.run, result.probe
    tolerance = f"  tolerance {fmt.short(probe.tolerance)}" if probe.tolerance is not None else ""
    con.print(f"[bold]{cell(run.prompt_name)}[/] with [bold]{cell(run.model)}[/]  probe run "
              f"{cell(run.id)}  inputs by {cell(probe.generator)} (run "
              f"{cell(probe.generator_run)}){tolerance}")
    table = Table(show_edge=False, header_style="bold")
    table.add_column("label")
    table.add_column("agreement (95% CI)", justify="right")
    table.add_column("n", justify="right")
    table.add_column("generated", justify="right")
    table.add_column("errors", justify="right")
    table.add_column("other answers")
    for entry in probe.labels:
        others = ", ".join(f"{_answer(o.answer)} ×{o.count}" for o in entry.others) or "-"
        table.add_row(cell(entry.label, 60), fmt.metric(entry.agreement.to_json()),
                      _count(entry.agreement.n), f"{entry.generated} of {entry.requested}",
                      _count(entry.errors), others)
    con.print(table)
    summary = run.summary
    con.print(f"cached {_count(summary.cached)}  retries {_count(summary.retries)}  "
              f"{cost_text(summary.cost_usd, summary.spent_usd, summary.saved_usd)} (the "
              "prompt's requests; the generator's are in its run)")
    for problem in result.problems:
        con.print(f"[yellow]generator, label {cell(problem.label, 60)}:[/] "
                  f"{cell(problem.message, 300)}", soft_wrap=True)
    if result.saved is not None:
        saved = result.saved
        present = f" ({saved.present} already there)" if saved.present else ""
        con.print(f"saved {saved.added} row(s) to {cell(saved.path)}{present} with reviewed: "
                  "false: they count in its metrics once a person sets reviewed: true")
