"""A stored run as typed results: what renderers take and `--json` serialises.

A run record comes from a store that other writers share (an import, another version of
promptctl, a hand edit), so reading one validates it: a record of the wrong shape is a
`BadRun` naming the run and the field, never an exception deep in a renderer.

Only the standard library is used: these are built on every command that shows a run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from promptctl.errors import PromptctlError
from promptctl.toolcalls import SAMPLES_KEY, TOOL_CALLS_KEY, TRAJECTORY_KEY

CHECK_FIX = "list malformed runs and rows with `promptctl store check`"


class BadRun(PromptctlError):
    """A stored run (or one row of it) whose record does not have the shape of one.

    `run_id` names the run, `row` the row when only the row is bad ("eval row r3 sample 0"),
    `problem` what is wrong, without the run's name.
    """

    def __init__(self, run_id: str, problem: str, *, row: str | None = None,
                 fix: str | None = None) -> None:
        self.run_id, self.row, self.problem = run_id, row, problem
        where = f"run {run_id}" + (f", {row}" if row else "")
        super().__init__(f"{where}: {problem}",
                         fix=fix or f"{CHECK_FIX}; delete or re-import run {run_id}")


def bad_row(run_id: str, kind: Any, row_id: Any, sample: Any, problem: str) -> BadRun:
    """The error of one malformed row of run `run_id`."""
    return BadRun(run_id, problem, row=row_name(kind, row_id, sample))


def row_name(kind: Any, row_id: Any, sample: Any) -> str:
    """A row as messages name it: `eval row r3 sample 0`."""
    name = row_id[:80] if isinstance(row_id, str) else shown(row_id)
    return f"{kind if isinstance(kind, str) else '?'} row {name} sample {shown(sample)}"


def shown(value: Any) -> str:
    """A stored value as a message quotes it: short, whatever it is."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"a number of {value.bit_length() * 30103 // 100000 + 1:,} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Reader:
    """Typed reads of one run record's fields, each failure naming the run and the field."""

    def __init__(self, run_id: str, row: str | None = None) -> None:
        self.run_id, self.row = run_id, row

    def fail(self, where: str, why: str) -> BadRun:
        return BadRun(self.run_id, f"{where} {why}", row=self.row)

    def mapping(self, value: Any, where: str) -> Mapping[str, Any]:
        if type(value) is dict:
            return value
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(where, f"is a {type(value).__name__}, not a mapping")
        return value

    def count(self, value: Any, where: str) -> int:
        if type(value) is int and value >= 0:  # the usual case first: runs are read by the thousand
            return value
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 \
                or (isinstance(value, float) and not math.isfinite(value)):
            raise self.fail(where, f"is {shown(value)}, not a count")
        return int(value)

    def number(self, value: Any, where: str) -> float | None:
        if type(value) is float and math.isfinite(value) or type(value) is int or value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or (isinstance(value, float) and not math.isfinite(value)):
            raise self.fail(where, f"is {shown(value)}, not a finite number")
        return value

    def text(self, value: Any, where: str, *, optional: bool = True) -> str | None:
        if type(value) is str:
            return value
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self.fail(where, f"is {shown(value)}, not text")
        return value

    def time(self, value: Any, where: str) -> str:
        text = self.text(value, where, optional=False) or ""
        try:
            datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise self.fail(where, f"is {text[:40]!r}, not an ISO time") from None
        return text

    def flag(self, value: Any, where: str) -> bool | None:
        if value is None:
            return None
        if not isinstance(value, bool | int) or value not in (0, 1):
            raise self.fail(where, f"is {shown(value)}, not true or false")
        return bool(value)

    def items(self, value: Any, where: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(where, f"is a {type(value).__name__}, not a list")
        return value

    def texts(self, value: Any, where: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise self.fail(where, "is not a list of text")
        return tuple(value)


@dataclass(frozen=True, slots=True)
class MetricResult:
    """One metric over a run's rows: its value, how many rows it rests on, its 95% interval,
    and what the metric's kind adds (a configured metric's kind and paired test, a judge's
    unscored rows)."""

    value: float | None
    n: int
    ci95: tuple[float, float] | None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def unscored(self) -> int:
        value = self.details.get("unscored")
        return value if isinstance(value, int) else 0

    @property
    def higher_is_better(self) -> bool | None:
        """As the stored result says (configured metrics carry it), else None."""
        value = self.details.get("higher_is_better")
        return value if isinstance(value, bool) else None

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "n": self.n,
                "ci95": list(self.ci95) if self.ci95 is not None else None, **self.details}


def _metric(read: _Reader, raw: Any, where: str) -> MetricResult:
    data = read.mapping(raw, where)
    ci = data.get("ci95")
    if ci is not None and (not isinstance(ci, list | tuple) or len(ci) != 2):
        raise read.fail(f"{where}.ci95", "is not a pair of numbers")
    pair = None if ci is None else (read.number(ci[0], f"{where}.ci95") or 0.0,
                                    read.number(ci[1], f"{where}.ci95") or 0.0)
    return MetricResult(read.number(data.get("value"), f"{where}.value"),
                        read.count(data.get("n"), f"{where}.n"), pair,
                        {k: v for k, v in data.items() if k not in ("value", "n", "ci95")})


def _metrics(read: _Reader, raw: Any, where: str) -> dict[str, MetricResult]:
    return {str(name): _metric(read, value, f"{where}.{name}")
            for name, value in read.mapping(raw, where).items()}


@dataclass(frozen=True, slots=True)
class StepSummary:
    """One step of a pipeline run: its prompt, its own metrics and how often it ran."""

    prompt: str
    prompt_version: str | None
    metrics: dict[str, MetricResult]
    ran: int
    skipped: int
    errors: int
    not_run: int
    unrendered: int
    # A sql or tool step: milliseconds its code ran over the run's rows.
    tool_ms: float | None = None
    # A repeat_until step: rows where it ran out of iterations.
    iterations_exhausted: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"prompt": self.prompt, "prompt_version": self.prompt_version,
                               "metrics": {k: v.to_json() for k, v in self.metrics.items()},
                               "ran": self.ran, "skipped": self.skipped, "errors": self.errors,
                               "not_run": self.not_run, "unrendered": self.unrendered}
        if self.tool_ms is not None:
            out["tool_ms"] = self.tool_ms
        if self.iterations_exhausted is not None:
            out["iterations_exhausted"] = self.iterations_exhausted
        return out


@dataclass(frozen=True, slots=True)
class Gap:
    """The composability gap: of the rows whose every tested step was right, the share wrong
    end to end."""

    value: float | None
    n: int
    wrong: int


@dataclass(frozen=True, slots=True)
class ScoringErrors:
    """Rows a configured metric could not score: how many eval rows (as a metric's `n`
    counts them), their answers that got no score (more with --repeat), the few-shot
    examples, and the first few answers with why."""

    count: int
    rows: tuple[Mapping[str, Any], ...]
    samples: int = 0
    fewshot: int = 0


@dataclass(frozen=True, slots=True)
class VoteComparison:
    """One metric of a sampled run: the first sample's value and the vote's on the same
    rows, the paired delta (vote minus first sample) with its 95% interval and p-value."""

    metric: str
    single: float | None
    voted: float | None
    delta: float | None
    ci95: tuple[float, float] | None
    p_value: float | None
    test: str | None
    n: int
    higher_is_better: bool


@dataclass(frozen=True, slots=True)
class SelfConsistency:
    """`eval --samples K`: how rows were sampled and voted on, the vote against the first
    sample per metric, and what the K samples cost against one (tokens, cost, latency; None
    where unknown). `figures` is the stored mapping, as `--json` prints it."""

    k: int
    temperature: float | None
    vote: str
    rows: int
    requests: Mapping[str, int]
    note: str | None
    metrics: tuple[VoteComparison, ...]
    tokens_multiple: float | None
    cost_multiple: float | None
    latency_multiple: float | None
    figures: Mapping[str, Any]


def _self_consistency(read: _Reader, raw: Any) -> SelfConsistency | None:
    if raw is None:
        return None
    data = read.mapping(raw, "summary.samples")
    where = "summary.samples"
    compared = []
    for name, value in read.mapping(data.get("metrics"), f"{where}.metrics").items():
        m = read.mapping(value, f"{where}.metrics.{name}")
        ci = m.get("ci95")
        pair = None
        if isinstance(ci, list | tuple) and len(ci) == 2:
            lo, hi = read.number(ci[0], f"{where}.metrics.{name}.ci95"), \
                read.number(ci[1], f"{where}.metrics.{name}.ci95")
            pair = None if lo is None or hi is None else (lo, hi)
        compared.append(VoteComparison(
            str(name), read.number(m.get("single"), f"{where}.metrics.{name}.single"),
            read.number(m.get("voted"), f"{where}.metrics.{name}.voted"),
            read.number(m.get("delta"), f"{where}.metrics.{name}.delta"), pair,
            read.number(m.get("p_value"), f"{where}.metrics.{name}.p_value"),
            read.text(m.get("test"), f"{where}.metrics.{name}.test"),
            read.count(m.get("n"), f"{where}.metrics.{name}.n"),
            m.get("higher_is_better") is not False))
    requests = read.mapping(data.get("requests"), f"{where}.requests")
    return SelfConsistency(
        k=read.count(data.get("k"), f"{where}.k"),
        temperature=read.number(data.get("temperature"), f"{where}.temperature"),
        vote=read.text(data.get("vote"), f"{where}.vote") or "majority",
        rows=read.count(data.get("rows"), f"{where}.rows"),
        requests={str(k): read.count(v, f"{where}.requests.{k}") for k, v in requests.items()},
        note=read.text(data.get("note"), f"{where}.note"),
        metrics=tuple(compared),
        tokens_multiple=read.number(data.get("tokens_multiple"), f"{where}.tokens_multiple"),
        cost_multiple=read.number(data.get("cost_multiple"), f"{where}.cost_multiple"),
        latency_multiple=read.number(data.get("latency_multiple"), f"{where}.latency_multiple"),
        figures=data)


@dataclass(frozen=True, slots=True)
class Tokens:
    prompt: int
    completion: int


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    """One answer a probe's inputs got other than the label, and how often (`answer` None:
    no answer could be read from the completion)."""

    answer: Any
    count: int


@dataclass(frozen=True, slots=True)
class ProbeLabel:
    """One label of a probe: how many inputs were asked for and generated, the share of them
    the prompt answered with the label (its round-trip agreement, with `n` and interval), and
    what the others got."""

    label: Any
    requested: int
    generated: int
    agreement: MetricResult
    hits: int
    errors: int
    others: tuple[ProbeAnswer, ...]

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "requested": self.requested, "generated": self.generated,
                "agreement": self.agreement.to_json(), "hits": self.hits, "errors": self.errors,
                "others": [{"answer": o.answer, "count": o.count} for o in self.others]}


@dataclass(frozen=True, slots=True)
class ProbeSummary:
    """What a probe run adds to its summary: the generator and each label's agreement."""

    generator: str
    generator_run: str | None
    tolerance: float | None
    labels: tuple[ProbeLabel, ...]

    def to_json(self) -> dict[str, Any]:
        return {"generator": self.generator, "generator_run": self.generator_run,
                "tolerance": self.tolerance, "labels": [x.to_json() for x in self.labels]}


def _probe(read: _Reader, raw: Any) -> ProbeSummary | None:
    if raw is None:
        return None
    data = read.mapping(raw, "summary.probe")
    labels = []
    for i, item in enumerate(read.items(data.get("labels"), "summary.probe.labels")):
        where = f"summary.probe.labels[{i}]"
        entry = read.mapping(item, where)
        others = tuple(ProbeAnswer(read.mapping(o, f"{where}.others").get("answer"),
                                   read.count(read.mapping(o, f"{where}.others").get("count"),
                                              f"{where}.others.count"))
                       for o in read.items(entry.get("others"), f"{where}.others"))
        labels.append(ProbeLabel(
            label=entry.get("label"), requested=read.count(entry.get("requested"), f"{where}.requested"),
            generated=read.count(entry.get("generated"), f"{where}.generated"),
            agreement=_metric(read, entry.get("agreement"), f"{where}.agreement"),
            hits=read.count(entry.get("hits"), f"{where}.hits"),
            errors=read.count(entry.get("errors"), f"{where}.errors"), others=others))
    return ProbeSummary(generator=read.text(data.get("generator"), "summary.probe.generator") or "",
                        generator_run=read.text(data.get("generator_run"),
                                                "summary.probe.generator_run"),
                        tolerance=read.number(data.get("tolerance"), "summary.probe.tolerance"),
                        labels=tuple(labels))


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A run's accounting and what its kind adds (a pipeline's steps).

    `n` counts the eval answers stored (failed requests included), `rows` the eval set's rows
    they answer: with `eval --repeat K` a row has K samples."""

    n: int
    rows: int
    errors: int
    fewshot_errors: int
    cached: int
    retries: int
    no_text: int
    tokens: Tokens
    # What the run's answers cost at the model's price as if none were cached; what this
    # run paid (the requests it sent); what the cache saved it. None: unknown.
    cost_usd: float | None
    spent_usd: float | None
    saved_usd: float | None
    latency_ms: dict[str, float | None]
    system_fingerprints: tuple[str, ...]
    response_models: tuple[str, ...]
    consistency: Mapping[str, Any] | None
    scorers: dict[str, Mapping[str, Any]]
    scoring_errors: dict[str, ScoringErrors]
    server: Any
    batch: Mapping[str, Any] | None
    kind: str
    steps: dict[str, StepSummary]
    composability_gap: Gap | None
    control_flow: MetricResult | None
    # An agent run's figures (turns, tool errors, turn limit, tool selection, gap, time).
    agent: Mapping[str, Any] | None
    # `eval --samples K`: the vote against the first sample, and what it cost.
    samples: SelfConsistency | None = None
    # A probe run's per-label round-trip agreement (`promptctl probe`).
    probe: ProbeSummary | None = None


@dataclass(frozen=True, slots=True)
class RunResult:
    """One stored run, typed."""

    id: str
    kind: str
    status: str
    created_at: str
    prompt_name: str
    prompt_path: str
    prompt_version: str
    git_commit: str | None
    git_dirty: bool | None
    git_branch: str | None
    model: str
    endpoint: str | None
    # The server the requests went to (a URL without credentials): part of what a run is.
    base_url: str | None
    evalset_path: str | None
    evalset_version: str | None
    parent_run: str | None
    n_planned: int | None
    options: Mapping[str, Any]
    metrics: dict[str, MetricResult]
    fewshot_metrics: dict[str, MetricResult]
    summary: RunSummary
    coverage: str | None

    @property
    def evalset_rows(self) -> int | None:
        value = self.options.get("evalset_rows")
        return value if isinstance(value, int) else None

    @property
    def limit(self) -> int | None:
        value = self.options.get("limit")
        return value if isinstance(value, int) else None

    @property
    def covers_evalset(self) -> bool:
        """Whether the run answered (or tried) every row of its whole eval set."""
        if self.coverage is not None:
            return self.coverage == "full"
        # Runs stored before coverage was recorded: no --limit, and every planned row stored.
        return self.limit is None and self.summary.n >= (self.n_planned or 0)

    @property
    def failed_requests(self) -> int:
        return self.summary.errors + self.summary.fewshot_errors

    @property
    def is_probe(self) -> bool:
        return is_probe(self.options)

    @property
    def samples_per_row(self) -> int | None:
        """K of a run made with `eval --samples K` (None: one answer per row)."""
        sampled = self.options.get("samples")
        k = sampled.get("k") if isinstance(sampled, Mapping) else None
        return k if isinstance(k, int) and not isinstance(k, bool) else None


def _consistency(data: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A run's `--repeat` figures; a run stored before the vote's metric was named scored
    it with exact_match, as `majority_exact_match`: read as the figures are now written."""
    if not data:
        return None
    if "majority_exact_match" not in data or "majority_vote" in data:
        return data
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "mean_agreement":
            out["metric"] = "exact_match"
        out["majority_vote" if key == "majority_exact_match" else key] = value
    out.setdefault("metric", "exact_match")
    return out


def _scoring_errors(read: _Reader, raw: Any, where: str) -> ScoringErrors:
    data = read.mapping(raw, where)
    count = read.count(data.get("count"), f"{where}.count")
    # Runs stored before eval rows and few-shot examples were counted apart: one count.
    return ScoringErrors(count, tuple(r for r in read.items(data.get("rows"), f"{where}.rows")
                                      if isinstance(r, Mapping)),
                         samples=read.count(data.get("samples", count), f"{where}.samples"),
                         fewshot=read.count(data.get("fewshot"), f"{where}.fewshot"))


def _saved(summary: Mapping[str, Any]) -> float | None:
    """What the cache saved a run stored before that was recorded: its cost less what it paid."""
    cost, spent = summary.get("cost_usd"), summary.get("spent_usd")
    if isinstance(cost, int | float) and isinstance(spent, int | float) \
            and not isinstance(cost, bool) and not isinstance(spent, bool):
        return max(0.0, float(cost) - float(spent))
    return None


def _summary(read: _Reader, raw: Any) -> RunSummary:
    summary = read.mapping(raw, "summary")
    latency = read.mapping(summary.get("latency_ms"), "summary.latency_ms")
    tokens = read.mapping(summary.get("tokens"), "summary.tokens")
    steps = read.mapping(summary.get("steps"), "summary.steps")
    gap = summary.get("composability_gap")
    gap_data = read.mapping(gap, "summary.composability_gap")
    flow = summary.get("control_flow")
    failed = read.mapping(summary.get("scoring_errors"), "summary.scoring_errors")
    batch = summary.get("batch")
    return RunSummary(
        n=read.count(summary.get("n"), "summary.n"),
        # Runs stored before rows were counted apart: their metrics counted samples as rows.
        rows=read.count(summary.get("rows", summary.get("n")), "summary.rows"),
        errors=read.count(summary.get("errors"), "summary.errors"),
        fewshot_errors=read.count(summary.get("fewshot_errors"), "summary.fewshot_errors"),
        cached=read.count(summary.get("cached"), "summary.cached"),
        retries=read.count(summary.get("retries"), "summary.retries"),
        no_text=read.count(summary.get("no_text"), "summary.no_text"),
        tokens=Tokens(read.count(tokens.get("prompt"), "summary.tokens.prompt"),
                      read.count(tokens.get("completion"), "summary.tokens.completion")),
        cost_usd=read.number(summary.get("cost_usd"), "summary.cost_usd"),
        spent_usd=read.number(summary.get("spent_usd"), "summary.spent_usd"),
        saved_usd=read.number(summary.get("saved_usd"), "summary.saved_usd")
        if "saved_usd" in summary else _saved(summary),
        latency_ms={str(k): read.number(v, f"summary.latency_ms.{k}") for k, v in latency.items()},
        system_fingerprints=read.texts(summary.get("system_fingerprints"),
                                       "summary.system_fingerprints"),
        response_models=read.texts(summary.get("response_models"), "summary.response_models"),
        consistency=_consistency(read.mapping(summary.get("consistency"),
                                              "summary.consistency")),
        scorers={str(k): read.mapping(v, f"summary.scorers.{k}")
                 for k, v in read.mapping(summary.get("scorers"), "summary.scorers").items()},
        scoring_errors={str(k): _scoring_errors(read, v, f"summary.scoring_errors.{k}")
                        for k, v in failed.items()},
        server=summary.get("server"),
        batch=read.mapping(batch, "summary.batch") if batch is not None else None,
        kind=read.text(summary.get("kind"), "summary.kind") or "",
        steps={str(k): StepSummary(
            prompt=str(read.mapping(v, f"summary.steps.{k}").get("prompt") or ""),
            prompt_version=read.text(v.get("prompt_version"), f"summary.steps.{k}.prompt_version"),
            metrics=_metrics(read, v.get("metrics"), f"summary.steps.{k}.metrics"),
            **{c: read.count(v.get(c), f"summary.steps.{k}.{c}")
               for c in ("ran", "skipped", "errors", "not_run", "unrendered")},
            tool_ms=read.number(v.get("tool_ms"), f"summary.steps.{k}.tool_ms"),
            iterations_exhausted=None if v.get("iterations_exhausted") is None else
            read.count(v.get("iterations_exhausted"), f"summary.steps.{k}.iterations_exhausted"))
            for k, v in steps.items()},
        composability_gap=None if gap is None else Gap(
            read.number(gap_data.get("value"), "summary.composability_gap.value"),
            read.count(gap_data.get("n"), "summary.composability_gap.n"),
            read.count(gap_data.get("wrong"), "summary.composability_gap.wrong")),
        control_flow=None if not flow else _metric(read, flow, "summary.control_flow"),
        agent=read.mapping(summary.get("agent"), "summary.agent") if summary.get("agent")
        else None,
        samples=_self_consistency(read, summary.get("samples")),
        probe=_probe(read, summary.get("probe")),
    )


# How each column of a run is read, by name. Text the run must have is `required` (a
# missing value is an error); params, owner, base_url and the rest no RunResult field holds
# are read by resume, rescore and run selection.
_COLUMNS: dict[str, Any] = {
    **{c: lambda read, v, c=c: read.text(v, c, optional=False)
       for c in ("status", "prompt_name", "model")},
    **{c: lambda read, v, c=c: read.text(v, c)
       for c in ("kind", "prompt_path", "prompt_version", "prompt_source", "git_commit",
                 "git_branch", "endpoint", "base_url", "evalset_path", "evalset_version",
                 "finished_at", "owner", "coverage", "parent_run")},
    "created_at": lambda read, v: read.time(v, "created_at"),
    "git_dirty": lambda read, v: read.flag(v, "git_dirty"),
    "n_planned": lambda read, v: None if v is None else read.count(v, "n_planned"),
    "errors": lambda read, v: read.count(v, "errors"),
    "params": lambda read, v: read.mapping(v, "params"),
    "options": lambda read, v: read.mapping(v, "options"),
    "metrics": lambda read, v: _metrics(read, v, "metrics"),
    "fewshot_metrics": lambda read, v: _metrics(read, v, "fewshot_metrics"),
    "summary": _summary,
}


def _reader(record: Mapping[str, Any]) -> _Reader:
    run_id = record.get("id")
    if not isinstance(run_id, str) or not run_id:
        raise BadRun(shown(run_id), "the run's id is not text")
    return _Reader(run_id)


def read_run(record: Mapping[str, Any]) -> RunResult:
    """A run record validated into a `RunResult`; `BadRun` names the run and the field.

    Every run read from a store passes the same reading (the store's reads call
    `check_run`), so a record of the wrong shape stops there, not in a renderer, a diff or
    a gate.
    """
    read = _reader(record)
    v = {name: how(read, record.get(name)) for name, how in _COLUMNS.items()}
    return RunResult(
        id=read.run_id, kind=v["kind"] or "prompt", status=v["status"],
        created_at=v["created_at"], prompt_name=v["prompt_name"],
        prompt_path=v["prompt_path"] or "", prompt_version=v["prompt_version"] or "",
        git_commit=v["git_commit"], git_dirty=v["git_dirty"], git_branch=v["git_branch"],
        model=v["model"], endpoint=v["endpoint"], base_url=v["base_url"],
        evalset_path=v["evalset_path"],
        evalset_version=v["evalset_version"], parent_run=v["parent_run"],
        n_planned=v["n_planned"], options=v["options"], metrics=v["metrics"],
        fewshot_metrics=v["fewshot_metrics"], summary=v["summary"], coverage=v["coverage"])


def check_run(record: Mapping[str, Any]) -> None:
    """Validate a run record, whole or only the columns a listing read (`BadRun` names the
    run and the field), as `read_run` reads them."""
    read = _reader(record)
    try:
        for name in record.keys() & _COLUMNS.keys():
            _COLUMNS[name](read, record[name])
    except RecursionError:
        raise read.fail("its data", "is nested too deeply") from None


def covers_evalset(record: Mapping[str, Any]) -> bool:
    """`RunResult.covers_evalset` of a run record (selection reads records by the thousand)."""
    if record.get("coverage") is not None:
        return bool(record["coverage"] == "full")
    options = record.get("options") or {}
    summary = record.get("summary") or {}
    return options.get("limit") is None and summary.get("n", 0) >= (record.get("n_planned") or 0)


@dataclass(frozen=True, slots=True)
class Answered:
    """What a stored row and each of a pipeline row's steps both hold: what was asked, what
    came back and was read from it, and what it cost."""

    input: Any
    completion: str | None
    answer: Any
    valid: bool
    has_expected: bool
    expected: Any
    extract_error: str | None
    error: str | None
    judges: Mapping[str, Any]
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float | None
    cached: bool
    # The tool calls of the response as the server sent them (kept in the row's `judges`
    # under TOOL_CALLS_KEY); None when the row keeps none.
    tool_calls: tuple[Any, ...] | None
    # An agent row's trajectory (kept in the row's `judges` under TRAJECTORY_KEY): its turns,
    # calls and results; None for other rows.
    trajectory: Mapping[str, Any] | None
    # A sampled row's samples and vote (kept in the row's `judges` under SAMPLES_KEY; see
    # `sampling.vote_and_record`); None for other rows.
    samples: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class StepResult(Answered):
    """One step of a stored pipeline row: what it was given and answered, or why it did not
    run, and how it was judged."""

    items: tuple[StepResult, ...] | None
    skipped: bool
    not_run: str | None
    unrendered: bool
    should_run: bool | None
    flow_correct: bool | None
    correct: bool | None


@dataclass(frozen=True, slots=True)
class RowResult(Answered):
    """One stored row of a run (a row or few-shot example, one sample), with its steps."""

    row_id: str
    kind: str
    sample: int
    scores: Mapping[str, Any]
    steps: dict[str, StepResult]


def _flag(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _answered(read: _Reader, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The `Answered` fields of a stored row or step, validated; `where` prefixes each field's
    name in an error."""
    judges = read.mapping(data.get("judges"), f"{where}judges")
    calls = judges.get(TOOL_CALLS_KEY)
    trajectory = judges.get(TRAJECTORY_KEY)
    sampled = judges.get(SAMPLES_KEY)
    return {
        "input": data.get("input"),
        "completion": read.text(data.get("completion"), f"{where}completion"),
        "answer": data.get("answer"), "valid": bool(data.get("valid")),
        "has_expected": bool(data.get("has_expected", "expected" in data)),
        "expected": data.get("expected"),
        "extract_error": read.text(data.get("extract_error"), f"{where}extract_error"),
        "error": None if data.get("error") is None else str(data.get("error")),
        "judges": {k: v for k, v in judges.items()
                   if k not in (TOOL_CALLS_KEY, TRAJECTORY_KEY, SAMPLES_KEY)},
        "tool_calls": None if not isinstance(calls, list) else tuple(calls),
        "trajectory": trajectory if isinstance(trajectory, Mapping) else None,
        "samples": sampled if isinstance(sampled, Mapping) else None,
        "prompt_tokens": read.count(data.get("prompt_tokens"), f"{where}prompt_tokens"),
        "completion_tokens": read.count(data.get("completion_tokens"),
                                        f"{where}completion_tokens"),
        "latency_ms": read.number(data.get("latency_ms"), f"{where}latency_ms"),
        "cached": bool(data.get("cached")),
    }


def _step(read: _Reader, raw: Any, where: str) -> StepResult:
    data = read.mapping(raw, where)
    items = data.get("items")
    return StepResult(
        **_answered(read, data, f"{where}."),
        items=None if not isinstance(items, list)
        else tuple(_step(read, i, f"{where}.items[{n}]") for n, i in enumerate(items)),
        skipped=bool(data.get("skipped")),
        not_run=None if not data.get("not_run") else str(data.get("not_run")),
        unrendered=bool(data.get("unrendered")), should_run=_flag(data.get("should_run")),
        flow_correct=_flag(data.get("flow_correct")), correct=_flag(data.get("correct")))


def read_row(record: Mapping[str, Any]) -> RowResult:
    """A stored row validated into a `RowResult`; `BadRun` names the run, the row and the
    field. Every row read from a store passes here (the store's reads call it)."""
    kind, row_id, sample = record.get("kind"), record.get("row_id"), record.get("sample")
    read = _Reader(str(record.get("run_id") or "?"), row_name(kind or "eval", row_id, sample or 0))
    if not isinstance(row_id, str):
        raise read.fail("row_id", f"is {shown(row_id)}, not text")
    if kind is not None and kind not in ("eval", "fewshot"):
        raise read.fail("kind", f"is {shown(kind)}, not eval or fewshot")
    for name in ("position", "attempts"):
        read.count(record.get(name), name)
    for name in ("response_model", "system_fingerprint", "error", "created_at"):
        read.text(record.get(name), name)
    if not isinstance(record.get("messages", []), list):
        raise read.fail("messages", "is not a list")
    steps = read.mapping(record.get("steps"), "steps")
    try:
        return RowResult(
            **_answered(read, record, ""),
            row_id=row_id, kind=str(kind or "eval"),
            sample=read.count(sample, "sample"),
            scores=read.mapping(record.get("scores"), "scores"),
            steps={str(k): _step(read, v, f"steps.{k}") for k, v in steps.items()})
    except RecursionError:
        raise read.fail("steps", "are nested too deeply") from None


# --- which run stands for a prompt version (see `selection`) ---------------------------------

R = TypeVar("R", bound=Mapping[str, Any])


def row_errors(run: Mapping[str, Any]) -> int:
    """Error rows of a run (eval set and few-shot examples)."""
    if run.get("errors") is not None:
        return int(run["errors"])
    summary = run.get("summary") or {}
    return int(summary.get("errors") or 0) + int(summary.get("fewshot_errors") or 0)


def is_probe(options: Mapping[str, Any] | None) -> bool:
    """Whether a run with these options is a probe's (`promptctl probe`): a run of the prompt
    on inputs a model generated, not on its eval set."""
    return bool((options or {}).get("probe"))


def stands_for_version(run: Mapping[str, Any]) -> bool:
    """Whether a run may stand for its prompt version: complete, whole eval set covered, and
    one answer per row as the prompt asks (a vote over samples at a temperature answers
    another question: `eval --samples`), on its eval set (a probe's run scores generated
    inputs: it stands for no version)."""
    options = run.get("options")
    sampled = isinstance(options, Mapping) and options.get("samples") is not None
    return run.get("status") == "complete" and covers_evalset(run) and not sampled \
        and not is_probe(options if isinstance(options, Mapping) else None)


def best(runs: Iterable[R]) -> R | None:
    """The run that stands for a group of runs of the same thing: without error rows
    first, then on a clean work tree, then the newest (ids sort by time)."""
    return max(runs, key=lambda r: (row_errors(r) == 0, not r.get("git_dirty"), r["id"]),
               default=None)
