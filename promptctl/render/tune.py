"""`promptctl tune`'s result: in a terminal, and as an HTML report of the search."""

from __future__ import annotations

from importlib import resources

from markupsafe import Markup
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from promptctl import __version__
from promptctl.render.html import environment
from promptctl.results import TuneResult


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def tune_terminal(out: Console, r: TuneResult) -> None:
    s = r.splits
    out.print(f"tune {escape(r.prompt)} with {escape(r.model)}: objective {escape(r.metric)} "
              f"({'higher' if r.higher_is_better else 'lower'} is better), strategy "
              f"{r.strategy}, seed {s.seed}", soft_wrap=True)
    out.print(f"splits: train {len(s.train)}, validation {len(s.validation)}, test "
              f"{len(s.test)} (held out until the end); few-shot pool {s.pool}")
    if r.estimate is not None:
        e = r.estimate
        cost = "" if e.cost_usd is None else f", about ${e.cost_usd:.4f}"
        out.print(f"estimate (requests the cache cannot answer, at most): pool run {e.bootstrap}, "
                  f"{e.candidates} candidates x {e.per_candidate} on validation, proposer "
                  f"{e.proposer}, final test {e.final}: {e.total} in all{cost}")
        budget = r.spend.budget_requests
        if budget is not None and e.total > budget:
            out.print(f"the budget of {budget} requests leaves some candidates out (those "
                      "whose requests are cached cost nothing)")
    if r.candidates:
        table = Table(title="candidates on validation")
        for col in ("id", "origin", r.metric, "n", "requests", "examples / instruction"):
            table.add_column(escape(col))
        for c in r.candidates:
            what = ("as the original" if c.examples is None else ", ".join(c.examples) or "none") \
                if c.instruction is None else c.instruction.replace("\n", " ")[:80]
            mark = " *" if c.id == r.best else ""
            table.add_row(c.id + mark, escape(c.origin),
                          escape(c.skipped[:60]) if c.skipped else _num(c.value),
                          "–" if c.n is None else str(c.n), str(c.requests), escape(what))
        out.print(table)
    if r.test is not None:
        t = r.test
        ci = "–" if t.ci95 is None else f"[{t.ci95[0]:+.3f}, {t.ci95[1]:+.3f}]"
        p = "–" if t.p_value is None else f"{t.p_value:.4g}"
        out.print(f"test ({t.n} rows): original {_num(t.a)}, chosen {_num(t.b)}, delta "
                  f"{'–' if t.delta is None else f'{t.delta:+.3f}'} {ci}, p={p}: "
                  f"{escape(t.verdict.sentence())}", soft_wrap=True)
    sp = r.spend
    spent_of = f" of {sp.budget_requests}" if sp.budget_requests is not None else \
        f" (budget ${sp.budget_usd:g})" if sp.budget_usd is not None else ""
    cost = f", ${sp.cost_usd:.4f}" if sp.cost_usd else ""
    if r.estimate is None:
        out.print(f"spent: {sp.requests} requests{spent_of}{cost}")
    if r.stopped:
        # The suffix only when there are such candidates: a search cut by retries may
        # have skipped none before the cut.
        over = any((c.skipped or "").startswith("over budget") for c in r.candidates)
        out.print(f"budget: {escape(r.stopped)}" + (" (and so for every candidate marked "
                  "over budget)" if over else ""), soft_wrap=True)
    out.print(escape(r.reason), soft_wrap=True)
    if r.html:
        out.print(f"report: {escape(r.html)}", soft_wrap=True)


def tune_html(r: TuneResult) -> str:
    """A self-contained page: the splits, spending, every candidate and the test."""
    # The package's own stylesheet: trusted, and inside <style> escaping would break it.
    style = Markup(resources.files("promptctl.render").joinpath("templates/report.css")
                   .read_text("utf-8"))
    return environment().get_template("tune.html.j2").render(r=r, style=style,
                                                              version=__version__)
