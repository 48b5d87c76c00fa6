"""The store interface: typed run and row records, and the methods every back-end implements.

Callers see only this module (through `promptctl.store`); how a back-end reaches its
speed (SQLite threads and JSON aggregates, PostgreSQL server-side aggregation and
pipelined writes) stays inside its own module.
"""

from __future__ import annotations

import functools
import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, NotRequired, TypedDict

from promptctl.errors import EXIT_INPUT, EXIT_PROVIDER, PromptctlError

# --- records ------------------------------------------------------------------------------


class RunRecord(TypedDict):
    """One stored run. JSON columns come back decoded, `git_dirty` as a bool.

    `list_runs(columns=...)` returns records holding only the columns asked for.
    """

    id: str
    created_at: str
    status: str  # running | complete | interrupted | failed
    prompt_name: str
    prompt_path: str
    prompt_version: str
    prompt_source: str
    model: str
    endpoint: str
    params: dict[str, Any]
    n_planned: int
    finished_at: NotRequired[str | None]
    git_commit: NotRequired[str | None]
    git_dirty: NotRequired[bool | None]
    git_branch: NotRequired[str | None]
    base_url: NotRequired[str | None]
    evalset_path: NotRequired[str | None]
    evalset_version: NotRequired[str | None]
    metrics: NotRequired[dict[str, Any] | None]
    fewshot_metrics: NotRequired[dict[str, Any] | None]
    summary: NotRequired[dict[str, Any] | None]
    options: NotRequired[dict[str, Any] | None]
    owner: NotRequired[str | None]  # "host:pid:token" of the process running it
    coverage: NotRequired[str | None]  # full | partial
    errors: NotRequired[int | None]  # rows whose request failed
    parent_run: NotRequired[str | None]  # the run a rescore came from
    kind: NotRequired[str]  # prompt | pipeline


class RowRecord(TypedDict):
    """One answer (or failed request) of a run: a row or few-shot example, one sample.

    A missing `expected` is "no expected value"; `expected: None` is an expected
    JSON null. Records read back carry `has_expected` to tell the two apart.
    """

    run_id: str
    kind: str  # eval | fewshot
    position: int
    row_id: str
    sample: int
    input: Any
    messages: list[dict[str, Any]]
    created_at: str
    expected: NotRequired[Any]
    completion: NotRequired[str | None]
    answer: NotRequired[Any]
    valid: NotRequired[bool | None]
    extract_error: NotRequired[str | None]
    scores: NotRequired[dict[str, Any] | None]
    prompt_tokens: NotRequired[int | None]
    completion_tokens: NotRequired[int | None]
    latency_ms: NotRequired[float | None]
    response_model: NotRequired[str | None]
    system_fingerprint: NotRequired[str | None]
    error: NotRequired[str | None]
    cached: NotRequired[bool]
    attempts: NotRequired[int]
    judges: NotRequired[Any]
    steps: NotRequired[Any]
    has_expected: NotRequired[bool]


class KindTotals(TypedDict):
    """Counts and token sums over the rows of one kind of a run."""

    n: int
    errors: int
    cached: int
    retries: int
    prompt_tokens: int
    completion_tokens: int
    spent_prompt_tokens: int
    spent_completion_tokens: int
    no_text: int  # answered without text (a tool call, null content): shown, not scored


class ScoreColumns(TypedDict):
    """A run's rows of one kind as columns, ordered by (row_id, sample).

    `ok` is False for a row whose request failed (its scores are None). Rows with
    equal scores share one dict object: treat them as read-only.
    """

    row_id: list[str]
    sample: list[int]
    ok: list[bool]
    scores: list[dict[str, Any] | None]


class CacheStats(TypedDict):
    """Entries, bytes of stored responses, oldest and newest entry, where the store is."""

    entries: int
    response_bytes: int
    oldest: str | None
    newest: str | None
    store: str
    store_bytes: int


AnsweredColumn = Literal["latency_ms", "system_fingerprint", "response_model"]

RUN_COLUMNS = ("id", "created_at", "finished_at", "status", "prompt_name", "prompt_path",
               "prompt_version", "prompt_source", "git_commit", "git_dirty", "git_branch", "model",
               "endpoint", "base_url", "params", "evalset_path", "evalset_version", "n_planned",
               "metrics", "fewshot_metrics", "summary", "options",
               "owner", "coverage", "errors", "parent_run", "kind")
RUN_JSON = ("params", "metrics", "fewshot_metrics", "summary", "options")
RUN_REQUIRED = ("id", "created_at", "status", "prompt_name", "prompt_path", "prompt_version",
                "prompt_source", "model", "endpoint", "params", "n_planned")
ROW_COLUMNS = ("run_id", "kind", "position", "row_id", "sample", "input", "expected", "messages",
               "completion", "answer", "valid", "extract_error", "scores", "prompt_tokens",
               "completion_tokens", "latency_ms", "response_model", "system_fingerprint", "error",
               "cached", "attempts", "created_at", "judges", "steps")
ROW_JSON = ("input", "expected", "messages", "answer", "scores", "judges", "steps")
ROW_BOOL = ("valid", "cached")
# What a row that leaves these out (or gives None) stores, as SQLite's INSERT OR REPLACE does.
ROW_DEFAULTS: dict[str, Any] = {"sample": 0, "cached": False, "attempts": 1}
ROW_REQUIRED = ("run_id", "kind", "position", "row_id", "sample", "input", "messages", "created_at")
TOTAL_KEYS = ("n", "errors", "cached", "retries", "prompt_tokens", "completion_tokens",
              "spent_prompt_tokens", "spent_completion_tokens", "no_text")
ANSWERED_COLUMNS = ("latency_ms", "system_fingerprint", "response_model")


def utcnow() -> str:
    """UTC ISO-8601 timestamp with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dumps(value: Any) -> str:
    """The compact JSON text a store keeps for a JSON column."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def kind_totals(values: Sequence[Any]) -> KindTotals:
    """`KindTotals` from the sums in `TOTAL_KEYS` order (NULL sums are 0)."""
    n, errors, cached, retries, prompt, completion, spent_prompt, spent_completion, no_text = (
        int(v or 0) for v in values)
    return KindTotals(n=n, errors=errors, cached=cached, retries=retries, prompt_tokens=prompt,
                      completion_tokens=completion, spent_prompt_tokens=spent_prompt,
                      spent_completion_tokens=spent_completion, no_text=no_text)


def zero_totals() -> dict[str, KindTotals]:
    """`run_totals` of a run without rows."""
    return {kind: kind_totals((0,) * len(TOTAL_KEYS)) for kind in ("eval", "fewshot")}


def decode_shared(texts: Sequence[str]) -> list[Any]:
    """The JSON values of `texts`, each distinct text decoded once (scores repeat a lot:
    rows with the same scores share one dict)."""
    codes: dict[str, int] = {}
    index = [codes.setdefault(t, len(codes)) for t in texts]
    decoded = json.loads("[" + ",".join(codes) + "]")
    return [decoded[i] for i in index]


def check_run_fields(fields: Iterable[str]) -> None:
    """Refuse names that are not run columns (they would be pasted into SQL)."""
    unknown = set(fields) - set(RUN_COLUMNS)
    if unknown:
        raise ValueError(f"unknown run columns: {sorted(unknown)}")


# --- errors -------------------------------------------------------------------------------


class StoreError(PromptctlError):
    """The store cannot be used as configured: damaged, read-only, refused (exit 2)."""

    exit_code = EXIT_INPUT


class StoreUnavailable(StoreError):
    """The store failed for a reason that passes: a full disk, a server that is down (exit 3)."""

    exit_code = EXIT_PROVIDER


def _guarded(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            result = method(self, *args, **kwargs)
        except Exception as exc:
            mapped = self._storage_error(exc)
            if mapped is None:
                raise
            raise mapped from exc
        if isinstance(result, Iterator):
            return _guarded_iter(self, result)
        return result

    return call


def _guarded_iter(store: Store, it: Iterator[Any]) -> Iterator[Any]:
    try:
        yield from it
    except Exception as exc:
        mapped = store._storage_error(exc)
        if mapped is None:
            raise
        raise mapped from exc


# --- the interface ------------------------------------------------------------------------


class Store(ABC):
    """Runs, their rows and the completion cache, in one of the back-ends.

    Every public method of a back-end turns the engine's failures (a damaged
    file, a full disk, a lost connection) into a `StoreError` that says what to
    do; anything else it raises is a bug.
    """

    #: Where the store is, safe to show (a path, or a URL without its password).
    location: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # One boundary for the engine's errors, whatever method (or iterator) meets them.
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if not name.startswith("_") and inspect.isfunction(value):
                setattr(cls, name, _guarded(value))

    def _storage_error(self, exc: Exception) -> StoreError | None:
        """The `StoreError` for an engine failure, or None when `exc` is a bug."""
        return None

    @abstractmethod
    def migrate(self) -> list[str]:
        """Apply pending schema steps; returns the names applied now."""

    @abstractmethod
    def create_run(self, run: RunRecord) -> None:
        """Insert a new run."""

    @abstractmethod
    def update_run(self, run_id: str, **fields: Any) -> None:
        """Set some columns of a run (JSON columns given as values)."""

    @abstractmethod
    def claim_run(self, run_id: str, owner: str, expected: str | None) -> bool:
        """Make `owner` the run's owner (and its status 'running') only if its owner is now
        `expected` (None: no owner). Atomic: of two processes racing, one wins."""

    @abstractmethod
    def release_run(self, run_id: str, owner: str) -> bool:
        """Clear the run's owner if it is still `owner`; whether it was."""

    @abstractmethod
    def write_rows(self, rows: Sequence[RowRecord],
                   cache: Sequence[tuple[str, dict[str, Any]]] = ()) -> None:
        """Insert (or replace, on resume) rows and the cache entries of their answers, in
        one transaction."""

    @abstractmethod
    def add_run(self, run: RunRecord, rows: Iterable[RowRecord]) -> None:
        """Insert a finished run with all its rows in one transaction (an import)."""

    @abstractmethod
    def get_run(self, ref: str) -> RunRecord:
        """A run by id or unique id prefix."""

    @abstractmethod
    def has_run(self, run_id: str) -> bool:
        """Whether a run with exactly this id is stored."""

    @abstractmethod
    def list_runs(self, prompt: str | None = None, limit: int | None = None,
                  columns: Sequence[str] | None = None) -> list[RunRecord]:
        """Runs, newest first; `columns` limits what is read (and decoded) to those named."""

    @abstractmethod
    def iter_rows(self, run_id: str, kind: str | None = None) -> Iterator[RowRecord]:
        """A run's rows: few-shot examples first, then by position and sample."""

    def iter_rows_paged(self, run_id: str, kind: str | None = None) -> Iterator[RowRecord]:
        """`iter_rows` for rows whose texts may be long (a report): the order is read first,
        keys only, then the rows a few at a time, so that memory stays flat however many
        rows there are and however long. Slower than `iter_rows` on short rows."""
        return self.iter_rows(run_id, kind)

    @abstractmethod
    def answered_keys(self, run_id: str) -> set[tuple[str, str, int]]:
        """(kind, row_id, sample) of the rows of a run that have an answer (not an error)."""

    @abstractmethod
    def run_totals(self, run_id: str) -> dict[str, KindTotals]:
        """Per kind ("eval" and "fewshot", zeros when none): rows, errors, cached answers,
        retries, and the tokens of the answers (all, and those not from the cache)."""

    @abstractmethod
    def iter_scores(self, run_id: str, kind: str) -> Iterator[dict[str, Any]]:
        """The score dicts of the answered rows of one kind, in row order. Equal scores may
        be one shared dict: treat them as read-only."""

    @abstractmethod
    def answered_column(self, run_id: str, column: AnsweredColumn) -> list[Any]:
        """One column's non-NULL values over the answered rows of a run, in row order."""

    @abstractmethod
    def score_columns(self, run_id: str, kind: str = "eval") -> ScoreColumns:
        """A run's rows as columns (row_id, sample, ok, scores), without messages or
        completions: comparing runs of 100,000 rows must not build 100,000 row dicts."""

    def score_columns_of(self, run_ids: Sequence[str], kind: str = "eval") -> list[ScoreColumns]:
        """`score_columns` of several runs."""
        return [self.score_columns(r, kind) for r in run_ids]

    @abstractmethod
    def rows_by_id(self, run_id: str, row_ids: Collection[str], kind: str = "eval",
                   columns: Sequence[str] | None = None) -> list[RowRecord]:
        """The rows (every sample) of some row ids, decoded as `iter_rows` does; only
        `columns` (and row_id, sample, expected) when given."""

    @abstractmethod
    def cache_get(self, key: str) -> dict[str, Any] | None:
        """The cached response under `key`, if any."""

    @abstractmethod
    def cache_put(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Store (or replace) cached responses."""

    @abstractmethod
    def cache_stats(self) -> CacheStats:
        """Entries, bytes of stored responses, oldest and newest entry, the store's size."""

    @abstractmethod
    def cache_clear(self, before: str | None = None) -> int:
        """Delete cached completions (only those created before `before`, an ISO time)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""


def row_columns(columns: Sequence[str] | None) -> list[str]:
    """The columns `rows_by_id` reads: all, or those named plus the row's key and expected."""
    if columns is None:
        return list(ROW_COLUMNS)
    unknown = set(columns) - set(ROW_COLUMNS)
    if unknown:
        raise ValueError(f"unknown row columns: {sorted(unknown)}")
    return list(dict.fromkeys(["row_id", "sample", "expected", *columns]))


def run_columns(columns: Sequence[str] | None) -> list[str]:
    """The columns `list_runs` reads."""
    if columns is None:
        return list(RUN_COLUMNS)
    check_run_fields(columns)
    return list(columns)
