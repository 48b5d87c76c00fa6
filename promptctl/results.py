"""What `diff`, `history`, `check` and `probe` return: frozen dataclasses, one per JSON object.

Each field is named as the key `--json` prints, and each class's `to_json()` gives
that document exactly (keys in the same order; a key the document leaves out when
it has no value is left out again). Values absent here are `None`, or an empty
tuple for a list. Renderers read the attributes, so a misspelt field is a type error.

Only the standard library (and the typed runs of `promptctl.runs`) is imported: this
module sits below everything that builds or renders these results.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from promptctl.runs import ProbeSummary, RunResult

Interval = tuple[float, ...]
# The significance level of `diff` (and `check`'s default): a change is called significant
# when the paired test's p-value is below it.
SIGNIFICANCE = 0.05


def interval(value: Any) -> Interval | None:
    """A stored or computed interval (a JSON list of two numbers) as a tuple."""
    return None if value is None else tuple(value)


def _listed(value: Interval | None) -> list[float] | None:
    return None if value is None else list(value)


# --- the verdict on a change ---------------------------------------------------------------


def _number(value: float) -> str:
    """A p-value or level in a sentence: at most 3 decimals, no trailing zeros."""
    if value != 0 and abs(value) < 0.001:
        return f"{value:.1g}"
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={_number(p)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What a change of one metric between two runs means, by the one rule every output
    follows (`verdict`).

    `change` is `better` or `worse` only when the paired test finds the change significant,
    else `none`; `text` is what a report prints (`better`, `worse`, `worse (not
    significant)`, `no change`, `not compared`); `note`, when the 95% interval and the
    paired test disagree, says so and that the test decides.
    """

    change: str
    significant: bool
    text: str
    note: str | None = None

    def sentence(self) -> str:
        """`text`, and the note when there is one: `worse (not significant): the 95% ...`."""
        return self.text if self.note is None else f"{self.text}: {self.note}"

    def to_json(self) -> dict[str, Any]:
        return {"change": self.change, "significant": self.significant, "text": self.text,
                "note": self.note}


def verdict(delta: float | None, ci95: Sequence[float] | None, p_value: float | None, *,
            higher_is_better: bool, significance: float = SIGNIFICANCE) -> Verdict:
    """The verdict on a change `delta` (B - A) with its 95% interval and paired p-value.

    The paired test decides: a change is better or worse when p < `significance`, and
    otherwise "not significant" whatever its interval. The bootstrap interval and the test
    answer slightly different questions and can disagree near the boundary (an interval
    that just excludes 0 beside p = 0.06); the note then says which one decided.
    """
    if delta is None or not math.isfinite(delta):
        return Verdict(change="none", significant=False, text="not compared")
    significant = p_value is not None and p_value < significance
    level = _number(significance)
    note = None
    if ci95 is not None and len(ci95) == 2 and p_value is not None:
        excludes = ci95[0] > 0 or ci95[1] < 0
        if excludes and not significant:
            note = (f"the 95% interval excludes 0 but {_p(p_value)} ≥ {level}: not significant "
                    "(the paired test decides)")
        elif significant and not excludes:
            note = (f"{_p(p_value)} < {level} though the 95% interval includes 0: significant "
                    "(the paired test decides)")
    if delta == 0:
        return Verdict(change="none", significant=significant, text="no change", note=note)
    direction = "better" if (delta > 0) == higher_is_better else "worse"
    if p_value is None:
        return Verdict(change="none", significant=False, text=f"{direction} (not tested)",
                       note=note)
    if significant:
        return Verdict(change=direction, significant=True, text=direction, note=note)
    return Verdict(change="none", significant=False, text=f"{direction} (not significant)",
                   note=note)


# --- diff -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RunBrief:
    """One side of a diff: the run's identity, where it ran, and its stored metrics and summary
    (as the store keeps them)."""

    id: str
    created_at: str
    status: str
    prompt_name: str
    prompt_path: str
    prompt_version: str
    git_commit: str | None
    git_dirty: bool | None
    git_branch: str | None
    model: str
    endpoint: str
    evalset_path: str | None
    evalset_version: str | None
    metrics: Mapping[str, Any] | None
    summary: Mapping[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "created_at": self.created_at, "status": self.status,
                "prompt_name": self.prompt_name, "prompt_path": self.prompt_path,
                "prompt_version": self.prompt_version, "git_commit": self.git_commit,
                "git_dirty": self.git_dirty, "git_branch": self.git_branch, "model": self.model,
                "endpoint": self.endpoint, "evalset_path": self.evalset_path,
                "evalset_version": self.evalset_version, "metrics": self.metrics,
                "summary": self.summary}


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricDelta:
    """One metric of a diff: A and B on the paired rows, B - A with its 95% interval and
    p-value, and which way it moved.

    `n01` and `n10` (rows that went 0 -> 1 and 1 -> 0) only for McNemar's test;
    `direction` (better, worse, same: where the point estimate moved) only when there is a
    delta. `verdict` is what the change means at the diff's significance level (see
    `verdict`): what every report prints.
    """

    a: float | None
    b: float | None
    delta: float | None
    ci95: Interval | None
    p_value: float | None
    test: str
    n: int
    n01: int | None = None
    n10: int | None = None
    a_run: float | None
    b_run: float | None
    higher_is_better: bool
    direction: str | None = None
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"a": self.a, "b": self.b, "delta": self.delta,
                               "ci95": _listed(self.ci95), "p_value": self.p_value,
                               "test": self.test, "n": self.n}
        if self.n01 is not None or self.n10 is not None:
            out.update(n01=self.n01, n10=self.n10)
        out.update(a_run=self.a_run, b_run=self.b_run, higher_is_better=self.higher_is_better)
        if self.direction is not None:
            out["direction"] = self.direction
        out["verdict"] = self.verdict.to_json()
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class FlippedRow:
    """A row whose verdict changed between A and B, or whose error grew.

    A row that passed on one side and failed on the other names its `metric`, with
    `pass_a` and `pass_b` (the share of its samples that passed) when rows were
    sampled more than once; a row whose absolute error grew has `error_a` and `error_b`.
    """

    row_id: str
    input: Any
    expected: Any
    answer_a: Any
    answer_b: Any
    completion_a: str | None
    completion_b: str | None
    metric: str | None = None
    pass_a: float | None = None
    pass_b: float | None = None
    error_a: float | None = None
    error_b: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"row_id": self.row_id, "input": self.input,
                               "expected": self.expected, "answer_a": self.answer_a,
                               "answer_b": self.answer_b, "completion_a": self.completion_a,
                               "completion_b": self.completion_b}
        if self.metric is not None:
            out["metric"] = self.metric
            if self.pass_a is not None or self.pass_b is not None:
                out.update(pass_a=self.pass_a, pass_b=self.pass_b)
        if self.error_a is not None or self.error_b is not None:
            out.update(error_a=self.error_a, error_b=self.error_b)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Flipped:
    """The rows that flipped, each group in the order the diff found them."""

    pass_to_fail: tuple[FlippedRow, ...]
    fail_to_pass: tuple[FlippedRow, ...]
    biggest_error_increases: tuple[FlippedRow, ...]

    def to_json(self) -> dict[str, Any]:
        return {"pass_to_fail": [r.to_json() for r in self.pass_to_fail],
                "fail_to_pass": [r.to_json() for r in self.fail_to_pass],
                "biggest_error_increases": [r.to_json() for r in self.biggest_error_increases]}


@dataclass(frozen=True, slots=True, kw_only=True)
class SampleCounts:
    """The most samples a row has on each side (more than 1 with `eval --repeat`)."""

    a: int
    b: int

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b}


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageDelta:
    """One figure of what a row costs (its tokens, its cost, a percentile of its latency):
    A and B over the paired rows, B - A with its 95% paired bootstrap interval (rows
    resampled) and a paired permutation p-value (None beyond 5,000 paired rows, where the
    draws are bounded: see `stats.paired_bounded`), and the rows it rests on.

    `unknown` says why there is no value (no price for a run's model, no tokens reported):
    an unknown cost is never 0.
    """

    a: float | None
    b: float | None
    delta: float | None
    ci95: Interval | None
    p_value: float | None
    n: int
    unknown: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "delta": self.delta, "ci95": _listed(self.ci95),
                "p_value": self.p_value, "n": self.n, "unknown": self.unknown}


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageDiff:
    """What B's rows cost against A's, per paired row: tokens (prompt, completion, total),
    cost in USD at each run's own price, and latency p50 and p90 (the statistic is the
    difference of the percentiles over the resampled rows).

    With `eval --repeat` a row's tokens and cost are its samples' sum and its latency their
    mean. Latency leaves out the rows answered from the cache on either side
    (`latency_cached_excluded` counts them): a cache hit replays the latency of a request
    made earlier, maybe on another day or server, so it measures nothing about this run.
    """

    prompt_tokens: UsageDelta
    completion_tokens: UsageDelta
    total_tokens: UsageDelta
    cost_usd: UsageDelta
    latency_p50_ms: UsageDelta
    latency_p90_ms: UsageDelta
    latency_cached_excluded: int

    def figures(self) -> list[tuple[str, str, UsageDelta]]:
        """(name, unit, figure) in the order reports list them."""
        return [("prompt tokens", "tokens", self.prompt_tokens),
                ("completion tokens", "tokens", self.completion_tokens),
                ("total tokens", "tokens", self.total_tokens),
                ("cost", "usd", self.cost_usd),
                ("latency p50", "ms", self.latency_p50_ms),
                ("latency p90", "ms", self.latency_p90_ms)]

    def to_json(self) -> dict[str, Any]:
        return {"tokens": {"prompt": self.prompt_tokens.to_json(),
                           "completion": self.completion_tokens.to_json(),
                           "total": self.total_tokens.to_json()},
                "cost_usd": self.cost_usd.to_json(),
                "latency_ms": {"p50": self.latency_p50_ms.to_json(),
                               "p90": self.latency_p90_ms.to_json(),
                               "cached_excluded": self.latency_cached_excluded}}


def _metrics_json(metrics: Mapping[str, MetricDelta]) -> dict[str, Any]:
    return {name: m.to_json() for name, m in metrics.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """A diff without its sides and sample counts: what `check` keeps of the comparison of a
    prompt with its baseline."""

    metrics: Mapping[str, MetricDelta]
    paired_rows: int
    only_in_a: int
    only_in_b: int
    errors_excluded: int
    flipped: Flipped
    warnings: tuple[str, ...]
    usage: UsageDiff | None = None

    def to_json(self) -> dict[str, Any]:
        return {"metrics": _metrics_json(self.metrics), "paired_rows": self.paired_rows,
                "only_in_a": self.only_in_a, "only_in_b": self.only_in_b,
                "errors_excluded": self.errors_excluded,
                "usage": None if self.usage is None else self.usage.to_json(),
                "flipped": self.flipped.to_json(), "warnings": list(self.warnings)}


@dataclass(frozen=True, slots=True, kw_only=True)
class DiffResult:
    """`promptctl diff`: run B against run A, paired by row id; each metric's verdict at
    `significance`."""

    a: RunBrief
    b: RunBrief
    significance: float
    metrics: Mapping[str, MetricDelta]
    paired_rows: int
    only_in_a: int
    only_in_b: int
    errors_excluded: int
    samples: SampleCounts
    flipped: Flipped
    warnings: tuple[str, ...]
    # Tokens, cost and latency beside the metrics (None: not computed).
    usage: UsageDiff | None = None

    def comparison(self) -> Comparison:
        return Comparison(metrics=self.metrics, paired_rows=self.paired_rows,
                          only_in_a=self.only_in_a, only_in_b=self.only_in_b,
                          errors_excluded=self.errors_excluded, flipped=self.flipped,
                          warnings=self.warnings, usage=self.usage)

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a.to_json(), "b": self.b.to_json(), "significance": self.significance,
                "metrics": _metrics_json(self.metrics), "paired_rows": self.paired_rows,
                "only_in_a": self.only_in_a, "only_in_b": self.only_in_b,
                "errors_excluded": self.errors_excluded, "samples": self.samples.to_json(),
                "usage": None if self.usage is None else self.usage.to_json(),
                "flipped": self.flipped.to_json(), "warnings": list(self.warnings)}


# --- history ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryPoint:
    """One prompt version with one model: the run that stands for it, its commit (with date,
    author and subject when git was asked) and its metric values."""

    run: str
    created_at: str
    prompt_version: str
    model: str
    git_commit: str | None
    git_dirty: bool | None
    date: str | None
    author: str | None
    subject: str | None
    evalset_version: str | None
    metrics: Mapping[str, float | None]
    n: int | None
    errors: int
    # What one eval row cost in USD (its samples summed), None when the price is unknown.
    cost_per_row: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "created_at": self.created_at,
                "prompt_version": self.prompt_version, "model": self.model,
                "git_commit": self.git_commit, "git_dirty": self.git_dirty, "date": self.date,
                "author": self.author, "subject": self.subject,
                "evalset_version": self.evalset_version, "metrics": dict(self.metrics),
                "n": self.n, "errors": self.errors, "cost_per_row": self.cost_per_row}


@dataclass(frozen=True, slots=True, kw_only=True)
class PartRun:
    """A run on a part of the eval set (`tune`'s train, validation or test rows): it never
    stands for its prompt version, since it saw only some rows."""

    run: str
    created_at: str
    status: str
    part: str
    # The candidate of the search (c0 is the original) and where it came from; None for a
    # run stored before searches were recorded.
    candidate: str | None
    origin: str | None
    prompt_version: str
    model: str
    git_commit: str | None
    git_dirty: bool | None
    # Per metric, its value and the rows it was computed on.
    metrics: Mapping[str, Mapping[str, float | int | None]]
    n: int | None
    errors: int

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "created_at": self.created_at, "status": self.status,
                "part": self.part, "candidate": self.candidate, "origin": self.origin,
                "prompt_version": self.prompt_version, "model": self.model,
                "git_commit": self.git_commit, "git_dirty": self.git_dirty,
                "metrics": {k: dict(v) for k, v in self.metrics.items()}, "n": self.n,
                "errors": self.errors}


@dataclass(frozen=True, slots=True, kw_only=True)
class PartSearch:
    """The runs of one search (one `tune` and its resumptions) in the order they were made;
    `search` is None for the runs stored before a search was recorded with them."""

    search: str | None
    model: str
    started_at: str
    runs: tuple[PartRun, ...]

    def to_json(self) -> dict[str, Any]:
        return {"search": self.search, "model": self.model, "started_at": self.started_at,
                "runs": [r.to_json() for r in self.runs]}


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryResult:
    """`promptctl history`: the versions of a prompt, newest first, then the searches made
    on parts of its eval set (newest first), which stand for no version."""

    prompt: str
    model: str | None
    versions: tuple[HistoryPoint, ...]
    warnings: tuple[str, ...]
    # Per metric, whether a higher value is better (as the runs' metrics declare it).
    higher_is_better: Mapping[str, bool] = field(default_factory=dict)
    searches: tuple[PartSearch, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "model": self.model,
                "versions": [v.to_json() for v in self.versions],
                "higher_is_better": dict(self.higher_is_better),
                "searches": [s.to_json() for s in self.searches],
                "warnings": list(self.warnings)}


def pareto_front(points: Sequence[tuple[float | None, float | None]], *,
                 higher_is_better: bool) -> list[bool]:
    """Per (cost, value) point, whether it is on the Pareto front of cost against quality.

    A point is on the front when no other point dominates it: at most as expensive and at
    least as good (in the metric's direction), and strictly better in one of the two. Points
    of equal cost and value do not dominate each other, so both are on the front. A point
    whose cost or value is unknown (None, NaN) is never on the front and dominates nothing.
    """
    sign = 1.0 if higher_is_better else -1.0
    scored: list[tuple[float, float, int]] = []
    for i, (cost, value) in enumerate(points):
        if isinstance(cost, int | float) and isinstance(value, int | float) \
                and math.isfinite(cost) and math.isfinite(value):
            scored.append((float(cost), sign * float(value), i))
    # Cost ascending, then value best first: a point can only be dominated by one before it.
    scored.sort(key=lambda t: (t[0], -t[1]))
    out = [False] * len(points)
    best = -math.inf  # the best value among the points before this one
    for i, (cost, value, index) in enumerate(scored):
        prev = scored[i - 1] if i else None
        # The same cost and value as a point on the front: neither dominates the other.
        same = prev is not None and prev[:2] == (cost, value) and out[prev[2]]
        out[index] = value > best or same
        best = max(best, value)
    return out


# --- check ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Gate:
    """One threshold of a prompt applied: `min`/`max` on the current value, or
    `max_regression` on the change versus the baseline.

    A min/max gate has `value`, `ci95` and `n`. A regression gate that could be applied
    also has `baseline`, `delta`, `drop`, `p_value`, `test`, `higher_is_better` and the
    `verdict` on the change (the rule `diff` follows); one that could not (status skip) has
    none of them.
    """

    id: str
    metric: str
    kind: str
    limit: float
    status: str
    message: str
    value: float | None = None
    baseline: float | None = None
    delta: float | None = None
    drop: float | None = None
    ci95: Interval | None = None
    p_value: float | None = None
    test: str | None = None
    n: int | None = None
    higher_is_better: bool | None = None
    verdict: Verdict | None = None

    @property
    def regression(self) -> bool:
        return self.kind == "max_regression"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "metric": self.metric, "kind": self.kind,
                               "limit": self.limit}
        if not self.regression:
            out.update(value=self.value, ci95=_listed(self.ci95), n=self.n)
        elif self.delta is not None:
            out.update(value=self.value, baseline=self.baseline, delta=self.delta,
                       drop=self.drop, ci95=_listed(self.ci95), p_value=self.p_value,
                       test=self.test, n=self.n, higher_is_better=self.higher_is_better,
                       verdict=self.verdict.to_json() if self.verdict is not None else None)
        out.update(status=self.status, message=self.message)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckError:
    """Why a prompt could not be checked; `kind` is input or provider."""

    message: str
    exit_code: int
    kind: str

    def to_json(self) -> dict[str, Any]:
        return {"message": self.message, "exit_code": self.exit_code, "kind": self.kind}


@dataclass(frozen=True, slots=True, kw_only=True)
class RowErrors:
    """Rows whose request failed, in the current run and in the baseline run."""

    current: int
    baseline: int

    def to_json(self) -> dict[str, Any]:
        return {"current": self.current, "baseline": self.baseline}


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptCheck:
    """One prompt a change affects: why it was checked, the two runs, its gates and verdict
    (pass, warn, fail or error)."""

    prompt: str
    path: str
    new: bool
    reasons: tuple[str, ...]
    status: str
    model: str | None
    baseline_model: str | None
    current_run: str | None
    current_source: str | None
    baseline_run: str | None
    baseline_source: str | None
    metrics: Mapping[str, Any]
    comparison: Comparison | None
    gates: tuple[Gate, ...]
    warnings: tuple[str, ...]
    error: CheckError | None
    row_errors: RowErrors

    def to_json(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "path": self.path, "new": self.new,
                "reasons": list(self.reasons), "status": self.status, "model": self.model,
                "baseline_model": self.baseline_model, "current_run": self.current_run,
                "current_source": self.current_source, "baseline_run": self.baseline_run,
                "baseline_source": self.baseline_source, "metrics": self.metrics,
                "comparison": None if self.comparison is None else self.comparison.to_json(),
                "gates": [g.to_json() for g in self.gates], "warnings": list(self.warnings),
                "error": None if self.error is None else self.error.to_json(),
                "row_errors": self.row_errors.to_json()}


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptFile:
    """A prompt file `check` did not evaluate: unchanged, or deleted since the base."""

    prompt: str
    path: str

    def to_json(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "path": self.path}


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckBase:
    """The commit the change is measured against, and how it was chosen."""

    ref: str
    commit: str
    how: str

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "commit": self.commit, "how": self.how}


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckHead:
    """The work tree that was checked."""

    commit: str | None
    dirty: bool | None
    branch: str | None

    def to_json(self) -> dict[str, Any]:
        return {"commit": self.commit, "dirty": self.dirty, "branch": self.branch}


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckConfig:
    """Which promptctl.yaml `check` took its endpoints, keys, prices and store from.

    `source` is "base" (the base commit's file: the default, because a pull request must
    not choose where CI's secrets are sent), "work tree" (`--trust-pr-config`) or
    "operator" ($PROMPTCTL_CONFIG naming a file outside the repository). `changes` lists
    what the work tree's file changes against the base commit's."""

    source: str
    path: str | None
    changes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "path": self.path, "changes": list(self.changes)}

    def note(self) -> str | None:
        """One sentence for a report, or None when there is nothing to say."""
        if not self.changes:
            return None
        what = f"this change's {self.path} " + ", ".join(self.changes)
        if self.source == "work tree":
            return f"{what}; used, as --trust-pr-config asks."
        return (f"{what}; not used: endpoints, API key variables, prices and the store come "
                "from the base commit's (pass --trust-pr-config to use this change's).")


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckSummary:
    """How many prompts were checked, by verdict. `pass_` is the JSON key `pass` (a Python
    keyword)."""

    checked: int
    pass_: int
    warn: int
    fail: int
    error: int
    unchanged: int
    deleted: int

    def to_json(self) -> dict[str, Any]:
        return {"checked": self.checked, "pass": self.pass_, "warn": self.warn,
                "fail": self.fail, "error": self.error, "unchanged": self.unchanged,
                "deleted": self.deleted}


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """`promptctl check`: every affected prompt's verdict and the exit code."""

    base: CheckBase
    head: CheckHead
    significance: float
    strict: bool
    prompts: tuple[PromptCheck, ...]
    unchanged: tuple[PromptFile, ...]
    deleted: tuple[PromptFile, ...]
    summary: CheckSummary
    exit_code: int
    config: CheckConfig | None = None

    def to_json(self) -> dict[str, Any]:
        return {"base": self.base.to_json(), "head": self.head.to_json(),
                "config": self.config.to_json() if self.config else None,
                "significance": self.significance, "strict": self.strict,
                "prompts": [p.to_json() for p in self.prompts],
                "unchanged": [u.to_json() for u in self.unchanged],
                "deleted": [d.to_json() for d in self.deleted],
                "summary": self.summary.to_json(), "exit_code": self.exit_code}


# --- probe ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeProblem:
    """Something wrong with what the generator wrote for a label: an unreadable answer, an
    item without the prompt's input variables, a repeated input, a failed request."""

    label: Any
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "message": self.message}


@dataclass(frozen=True, slots=True)
class SavedRows:
    """What `probe --save` appended to an eval set: new rows, and rows already there."""

    path: str
    added: int
    present: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "added": self.added, "present": self.present}


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeResult:
    """`promptctl probe`: the stored probe run with each label's round-trip agreement, what
    went wrong in the generation, and what was saved."""

    run: RunResult
    probe: ProbeSummary
    problems: tuple[ProbeProblem, ...]
    saved: SavedRows | None

    def to_json(self) -> dict[str, Any]:
        run = self.run
        return {"run": run.id, "prompt": run.prompt_name, "prompt_path": run.prompt_path,
                "prompt_version": run.prompt_version, "model": run.model,
                "evalset": run.evalset_path, **self.probe.to_json(),
                "errors": run.summary.errors, "cached": run.summary.cached,
                "problems": [p.to_json() for p in self.problems],
                "saved": self.saved.to_json() if self.saved is not None else None}


# --- tune -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TuneSplits:
    """How `tune` split the eval set (once, by `seed`): row ids of each part, and how many
    rows the few-shot pool holds (train, `--pool` rows and the prompt's own examples)."""

    seed: int
    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]
    pool: int

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "train": len(self.train), "validation": len(self.validation),
                "test": len(self.test), "pool": self.pool, "test_ids": list(self.test)}


@dataclass(frozen=True, slots=True, kw_only=True)
class TuneSpend:
    """Requests sent (cached answers are free) and dollars spent, against the budget."""

    requests: int
    cost_usd: float | None
    budget_requests: int | None
    budget_usd: float | None
    reserved_requests: int | None = None
    reserved_usd: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "cost_usd": self.cost_usd,
                "budget_requests": self.budget_requests, "budget_usd": self.budget_usd,
                "reserved_requests": self.reserved_requests, "reserved_usd": self.reserved_usd}


@dataclass(frozen=True, slots=True, kw_only=True)
class TuneCandidate:
    """One prompt `tune` considered: what it changed, and its score on validation (None
    when it was not evaluated: `skipped` says why)."""

    id: str
    origin: str
    version: str | None
    examples: tuple[str, ...] | None
    instruction: str | None
    run: str | None
    value: float | None
    n: int | None
    requests: int
    cost_usd: float | None
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "origin": self.origin, "version": self.version,
                "examples": None if self.examples is None else list(self.examples),
                "instruction": self.instruction, "run": self.run, "value": self.value,
                "n": self.n, "requests": self.requests, "cost_usd": self.cost_usd,
                "skipped": self.skipped}


@dataclass(frozen=True, slots=True, kw_only=True)
class TuneTest:
    """The chosen candidate against the original on the test rows, paired by row."""

    original_run: str
    best_run: str
    a: float | None
    b: float | None
    delta: float | None
    ci95: Interval | None
    p_value: float | None
    test: str | None
    n: int
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        return {"original_run": self.original_run, "best_run": self.best_run, "a": self.a,
                "b": self.b, "delta": self.delta, "ci95": _listed(self.ci95),
                "p_value": self.p_value, "test": self.test, "n": self.n,
                "verdict": self.verdict.to_json()}


@dataclass(frozen=True, slots=True, kw_only=True)
class TuneEstimate:
    """`tune --dry-run`: the most requests (and dollars) each phase may send; cached
    answers are counted where they are already known."""

    bootstrap: int
    per_candidate: int
    candidates: int
    proposer: int
    final: int
    total: int
    cost_usd: float | None

    def to_json(self) -> dict[str, Any]:
        return {"bootstrap": self.bootstrap, "per_candidate": self.per_candidate,
                "candidates": self.candidates, "proposer": self.proposer, "final": self.final,
                "total": self.total, "cost_usd": self.cost_usd}


@dataclass(frozen=True, slots=True, kw_only=True)
class TuneResult:
    """What `tune` did: the splits, every candidate, the test of the chosen one, what it
    wrote (a branch and commit, a report) or why it wrote nothing."""

    prompt: str
    path: str
    model: str
    metric: str
    higher_is_better: bool
    strategy: str
    splits: TuneSplits
    spend: TuneSpend
    candidates: tuple[TuneCandidate, ...]
    best: str | None
    test: TuneTest | None
    written: bool
    reason: str
    branch: str | None = None
    commit: str | None = None
    html: str | None = None
    estimate: TuneEstimate | None = None
    stopped: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "path": self.path, "model": self.model,
                "metric": self.metric, "higher_is_better": self.higher_is_better,
                "strategy": self.strategy, "splits": self.splits.to_json(),
                "spend": self.spend.to_json(),
                "candidates": [c.to_json() for c in self.candidates], "best": self.best,
                "test": None if self.test is None else self.test.to_json(),
                "written": self.written, "reason": self.reason, "branch": self.branch,
                "commit": self.commit, "html": self.html,
                "estimate": None if self.estimate is None else self.estimate.to_json(),
                "stopped": self.stopped}


# --- compat -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CompatSummary:
    """How many files `compat` looked at, by verdict; `skip` counts those it could not run on
    either model for a reason that is not an error (no eval set). `pass_` is the JSON key
    `pass`."""

    files: int
    pass_: int
    warn: int
    fail: int
    error: int
    skip: int

    def to_json(self) -> dict[str, Any]:
        return {"files": self.files, "pass": self.pass_, "warn": self.warn, "fail": self.fail,
                "error": self.error, "skip": self.skip}


@dataclass(frozen=True, slots=True, kw_only=True)
class CompatResult:
    """`promptctl compat`: every prompt, pipeline and agent file evaluated on model A
    (`from_model`) and model B (`to_model`), each file's comparison B - A and its
    `max_regression` gates.

    Each file is a `PromptCheck`, as `check` reports a prompt: the run on A is its
    baseline (`baseline_run`, `baseline_model`), the run on B its current run (`current_run`,
    `model`), so the check renderers read it as they read a check; `reasons` says why a file
    was skipped, and is empty otherwise.
    """

    from_model: str
    to_model: str
    significance: float
    strict: bool
    files: tuple[PromptCheck, ...]
    summary: CompatSummary
    exit_code: int

    @property
    def prompts(self) -> tuple[PromptCheck, ...]:
        """The files, under the name the check renderers read them by."""
        return self.files

    def to_json(self) -> dict[str, Any]:
        return {"from_model": self.from_model, "to_model": self.to_model,
                "significance": self.significance, "strict": self.strict,
                "files": [f.to_json() for f in self.files],
                "summary": self.summary.to_json(), "exit_code": self.exit_code}
