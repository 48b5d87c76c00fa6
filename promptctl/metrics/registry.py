"""The metric registry: every metric is one `Metric` object, and everything else asks here.

A metric has a name, a direction, the output types it accepts, a per-row scorer, an
aggregate over the rows' scores, and the paired statistic `diff` tests it with. Built-in
metrics register themselves in `builtin.py` (one function and one line each); metrics a
prompt configures (`{name: ..., llm_judge: {...}}`) are built by a *kind* registered in
`KINDS`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from promptctl.errors import InputError, did_you_mean
from promptctl.scoring import extract

if TYPE_CHECKING:
    from promptctl.config import Config
    from promptctl.evalsets import Row
    from promptctl.files import Reference
    from promptctl.scoring import Extraction, OutputSpec

Scores = dict[str, Any]
Columns = dict[str, list[Any]]
Result = dict[str, Any]

# How `diff` tests a metric on paired rows (see compare._plans):
PAIRED_BINARY = "binary"        # 0/1 per row under `key`: McNemar, or a paired resampling
PAIRED_MEAN = "mean"            # a number per row under `key`: paired permutation of the mean
PAIRED_RMSE = "rmse"            # sqrt of the mean squared error
PAIRED_MAE = "mae"              # mean absolute error of answer_num against expected_num
PAIRED_CORRELATION = "correlation"  # pearson / spearman of answer_num against expected_num
PAIRED_F1 = "f1"                # macro F1 from (label_answer, label_expected)


# What a scorer may ask of the run's engine. Metrics sit below the engine: they declare what
# they need here and the engine hands them an object that has it.


class AnswerLike(Protocol):
    """One chat request's outcome: a response (from the server or the cache) or an error."""

    @property
    def response(self) -> dict[str, Any] | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def cached(self) -> bool: ...
    @property
    def attempts(self) -> int: ...


class EmbeddedLike(Protocol):
    """One embeddings call's outcome: a vector per text (None where it failed) and why."""

    @property
    def vectors(self) -> list[list[float] | None]: ...
    @property
    def error(self) -> str | None: ...


class ScorerGateway(Protocol):
    """The run's cache, limits and accounting, for requests a scorer makes."""

    async def complete(self, channel: Any, messages: list[dict[str, str]], params: dict[str, Any],
                       sample: int, *, key_extra: str | None = None) -> AnswerLike: ...

    async def embed(self, channel: Any, texts: list[str]) -> EmbeddedLike: ...

    def cached_embedding(self, channel: Any, text: str) -> list[float] | None: ...


class Services(Protocol):
    """Channels to other models (a judge, an embeddings model) through the run's gateway."""

    @property
    def gateway(self) -> ScorerGateway: ...

    def channel(self, spec: str) -> Any: ...


class PromptLoader(Protocol):
    """Loads a prompt file (a judge's): registered by the prompts module, which sits above
    metrics, so that a judge metric can load its prompt without importing upward."""

    def __call__(self, path: str | Path, root: Path | None = None, *,
                 ref: Reference | None = None) -> Any: ...


_prompt_loader: list[PromptLoader] = []


def register_prompt_loader(load: PromptLoader) -> None:
    _prompt_loader[:] = [load]


def prompt_loader() -> PromptLoader:
    if not _prompt_loader:
        # Judges are built while a prompt file is parsed, so promptctl.prompts is imported.
        raise RuntimeError("no prompt loader: import promptctl.prompts before building metrics")
    return _prompt_loader[0]


@dataclass
class ScoreContext:
    """What a per-row scorer may look at. `services` reaches requests a scorer makes
    (a judge, embeddings) through the run's engine."""

    row: Row
    extraction: Extraction
    completion: str
    metric_names: tuple[str, ...] = ()
    services: Services | None = None
    # What configured metrics keep with the row, by metric name (a judge's completion,
    # a scorer's error): stored as the row's `judges`.
    details: dict[str, Any] = field(default_factory=dict)
    # The tools an agent's row called, in order (None: not an agent row).
    tools_called: Sequence[str] | None = None


RowScorer = Callable[[ScoreContext], Scores | Awaitable[Scores]]


@dataclass(frozen=True)
class Metric:
    """One metric. `row` returns the score keys this metric stores for a row (absent keys:
    the row is not scored for it); `aggregate` turns the run's folded score columns into
    {value, n, ci95}; `paired` and `key` say how `diff` compares two runs on it."""

    name: str
    row: RowScorer
    aggregate: Callable[[Columns], Result]
    paired: str
    key: str
    higher_is_better: bool = True
    output_types: frozenset[str] | None = None  # None: any output type
    needs_expected: bool = False
    kind: str = "builtin"
    # Recorded with the run (a judge prompt's sha256, a scorer's file): what defines it.
    identity: dict[str, Any] = field(default_factory=dict)
    # Checks that need more than the prompt file (a scorer's function exists and takes three
    # arguments): run by `validate`, `--dry-run` and before a run sends anything.
    check: Callable[[], None] | None = None
    # Checks that the models the metric sends requests to (a judge's, an embeddings model)
    # can be used now, given the project's configuration: their API key is set, their model
    # file exists. Run before a run sends anything (as the evaluated model's key is), not by
    # `validate`; the error names the metric and what to change for it.
    preflight: Callable[[Config], None] | None = None
    # Requests this metric sends to other models, for `--dry-run`: called with the rows
    # (as ScoreContexts without completions) and the evaluated prompt's max_tokens.
    estimate: Any = None
    # Checks one row (or few-shot example) before anything is sent: a judge's template
    # renders for it. Raises InputError.
    check_row: Callable[[Row], None] | None = None
    # Whether `check_row` applies to few-shot examples too (a judge scores them; regex
    # leaves an example without a pattern unscored).
    check_examples: bool = True
    # Files the metric's scores depend on (a judge's prompt, a scorer's module): inputs of
    # every target that uses it.
    files: tuple[Path, ...] = ()
    # How one row's score reads in `show` ("exact_match 1", "abs error 2", "label right"),
    # given the renderer's number format; returning None leaves the metric out of a row (a
    # correlation has no per-row value).
    row_text: Callable[[Scores, Callable[[Any], str]], str | None] | None = None
    # Score keys kept only for the aggregate (answer_num ...), never shown as a score.
    helper_keys: frozenset[str] = frozenset()
    # Keys runs stored by older versions kept this metric's per-row score under (accuracy's
    # was exact_match): read when a row has no `key`, never written.
    former_keys: tuple[str, ...] = ()
    # Whether the metric compares `expected` with the answer as the output type reads it (so a
    # row expecting what no such answer can be is refused before anything is sent).
    compares_answer: bool = False
    # The values the metric's result can take, (lowest, highest); None: no bound on that side,
    # or not known (a custom scorer's). A threshold outside them can never be met or missed.
    value_range: tuple[float | None, float | None] = (None, None)
    # The kinds of target whose files may list the metric (None: any); tool_selection reads
    # an agent's trajectory.
    targets: frozenset[str] | None = None

    def describe_range(self) -> str | None:
        """The values the metric takes, as a message says them ("from 0 to 1", "0 or
        more"), or None when nothing is known of them."""
        lo, hi = self.value_range
        if lo is not None and hi is not None:
            return f"from {lo:g} to {hi:g}"
        if lo is not None:
            return f"{lo:g} or more"
        if hi is not None:
            return f"{hi:g} or less"
        return None

    @property
    def pass_fail(self) -> bool:
        """Whether a row's score is 0 or 1 under `key` (a 0 is a failed row)."""
        return self.paired == PAIRED_BINARY

    def row_value(self, scores: Scores) -> Any:
        """The row's score under `key` (or a former key of a run stored before), or None."""
        for key in (self.key, *self.former_keys):
            if key in scores:
                return scores[key]
        return None

    def describe_row(self, scores: Scores, number: Callable[[Any], str]) -> str | None:
        """One row's score as `show` prints it, numbers written by `number`."""
        if self.row_text is not None:
            return self.row_text(scores, number)
        return f"{self.name} {number(self.row_value(scores))}"

    async def score(self, ctx: ScoreContext) -> Scores:
        value = self.row(ctx)
        if inspect.isawaitable(value):
            return await value
        return value


@dataclass(frozen=True)
class Kind:
    """A kind of configured metric (llm_judge, similarity, custom): builds a `Metric` from a
    `metrics:` mapping of a prompt file."""

    name: str
    build: Callable[[str, Any, Path, Callable[..., int | None]], Metric]
    # Checks that need more than the file itself (a judge prompt renders, a function
    # exists), run by `validate` and before a run.
    summary: str = ""


_BUILTIN: dict[str, Metric] = {}
KINDS: dict[str, Kind] = {}


def register(metric: Metric) -> Metric:
    """Add a built-in metric (one line per metric in builtin.py)."""
    _BUILTIN[metric.name] = metric
    return metric


def register_kind(kind: Kind) -> Kind:
    KINDS[kind.name] = kind
    return kind


def builtin_metrics() -> tuple[Metric, ...]:
    return tuple(_BUILTIN.values())


def builtin_names() -> tuple[str, ...]:
    return tuple(_BUILTIN)


def builtin(name: str) -> Metric | None:
    return _BUILTIN.get(name)


def kinds() -> dict[str, Kind]:
    return KINDS


def unknown(name: str) -> InputError:
    """The error for a metric name that is neither built in nor configured."""
    names = builtin_names()
    return InputError(f"unknown metric {name!r}",
                      fix=f"{did_you_mean(name, names)}use one of: {', '.join(names)}, or a "
                      f"mapping with one of {', '.join(kinds())} (see "
                      "docs/reference/prompt-files.md)")


def higher_is_better(name: str, configured: Sequence[Metric] = ()) -> bool:
    """Whether a higher value of metric `name` is better (configured metrics first)."""
    for metric in configured:
        if metric.name == name:
            return metric.higher_is_better
    found = builtin(name)
    return True if found is None else found.higher_is_better


@dataclass(frozen=True)
class Stored:
    """How a run's metric is compared, as far as the run record says: built-in metrics by
    name; configured ones by what their result carries (`paired`, `key`, direction)."""

    name: str
    paired: str
    key: str
    higher_is_better: bool
    # Where runs stored by older versions kept the per-row score (see Metric.former_keys).
    former_keys: tuple[str, ...] = ()


def stored(name: str, result: dict[str, Any] | None) -> Stored | None:
    """`Stored` for metric `name` of a run whose metrics dict holds `result` for it."""
    found = builtin(name)
    if found is not None:
        return Stored(name, found.paired, found.key, found.higher_is_better, found.former_keys)
    result = result or {}
    if "paired" not in result:
        return None
    return Stored(name, str(result["paired"]), str(result.get("key", name)),
                  bool(result.get("higher_is_better", True)))


# What runs stored by older versions kept in a row's scores for a judge that gave no score
# (`NAME__unscored`): an internal marker, never a score.
_INTERNAL_SUFFIX = "__unscored"


def internal_key(key: str) -> bool:
    """Whether a key of a stored row's scores is an internal marker, not a score."""
    return key.endswith(_INTERNAL_SUFFIX)


def pass_fail_keys() -> tuple[str, ...]:
    """The score keys of the built-in pass/fail metrics: a row's 0 under one is a failed row
    (`accuracy`, `exact_match`, `format_validity`, ...)."""
    return tuple(dict.fromkeys(key for m in _BUILTIN.values() if m.pass_fail
                               for key in (m.key, *m.former_keys)))


def annotate(metric: Metric, result: Result) -> Result:
    """A configured metric's result carries how to compare it (a run record stands alone)."""
    if metric.kind == "builtin":
        return result
    return {**result, "kind": metric.kind, "paired": metric.paired, "key": metric.key,
            "higher_is_better": metric.higher_is_better, **({"identity": metric.identity}
                                                              if metric.identity else {})}


def score_builtins(extraction: Extraction, row: Row, names: Sequence[str], *,
                   tools_called: Sequence[str] | None = None) -> Scores:
    """The per-row scores of the built-in metrics among `names` (format validity always:
    it is what every other score rests on); `tools_called`: an agent row's calls."""
    ctx = ScoreContext(row, extraction, "", tuple(names), tools_called=tools_called)
    scores: Scores = {}
    for name in ("format_validity", *names):
        metric = _BUILTIN.get(name)
        if metric is not None and (row.has_expected or not metric.needs_expected):
            value = metric.row(ctx)
            assert isinstance(value, dict)
            scores.update(value)
    return scores


async def score_answer(text: str, output: OutputSpec, row: Row, names: Sequence[str],
                       configured: Sequence[Metric], services: Services | None, *,
                       tools_called: Sequence[str] | None = None
                       ) -> tuple[Extraction, Scores, dict[str, Any]]:
    """One completion read and scored: the answer, the scores of every metric asked for
    (built-in and configured), and what configured metrics keep with the row (a judge's
    answer, a scorer's error). Prompts, pipeline steps and pipelines' final answers, eval
    and rescore all score through here."""
    extraction = extract(text, output)
    scores, details = await score_extraction(extraction, text, row, names, configured, services,
                                             tools_called=tools_called)
    return extraction, scores, details


async def score_extraction(extraction: Extraction, text: str, row: Row, names: Sequence[str],
                           configured: Sequence[Metric], services: Services | None, *,
                           tools_called: Sequence[str] | None = None
                           ) -> tuple[Scores, dict[str, Any]]:
    """`score_answer` for an answer already read out of its completion `text`."""
    scores = score_builtins(extraction, row, names, tools_called=tools_called)
    if not configured:
        return scores, {}
    ctx = ScoreContext(row, extraction, text, tuple(names), services,
                       tools_called=tools_called)
    for metric in configured:
        scores.update(await metric.score(ctx))
    return scores, ctx.details
