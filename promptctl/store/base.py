"""The store interface: typed run and row records, and the methods every back-end implements.

Callers see only this module (through `promptctl.store`); how a back-end reaches its
speed (SQLite threads and JSON aggregates, PostgreSQL server-side aggregation and
pipelined writes) stays inside its own module.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, NotRequired, TypedDict, TypeVar

from promptctl.errors import EXIT_INPUT, EXIT_PROVIDER, InputError, PromptctlError
from promptctl.runs import CHECK_FIX, BadRun, bad_row, check_run, read_row, shown

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


class UsageColumns(TypedDict):
    """A run's rows of one kind as the columns of what each answer cost: its tokens, its
    latency and whether it came from the cache (`ok` False for a failed request). Tokens and
    latency are numbers, None where a row has none (or another writer left something that
    is not a number)."""

    row_id: list[str]
    ok: list[bool]
    prompt_tokens: list[Any]
    completion_tokens: list[Any]
    latency_ms: list[Any]
    cached: list[bool]


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


class Undecodable:
    """Stands for a stored JSON text that cannot be decoded, and says why."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


class _NotFinite(ValueError):
    pass


def _not_a_number(name: str) -> Any:
    raise _NotFinite(f"holds {name}, not a finite number")


def load_json(text: Any) -> Any:
    """A stored JSON column's value; ValueError says why the text is not one."""
    if not isinstance(text, str):
        raise ValueError(f"is {shown(text)}, not JSON text")
    try:
        return json.loads(text, parse_constant=_not_a_number)
    except RecursionError:
        raise ValueError("is nested too deeply") from None
    except _NotFinite:
        raise
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not JSON ({exc.msg} at character {exc.pos})") from None
    except ValueError:  # int() of a number beyond Python's digit limit (4,300 digits)
        raise ValueError("holds a number too large to read") from None


def decode_shared(texts: Sequence[str]) -> list[Any]:
    """The JSON values of `texts`, each distinct text decoded once (scores repeat a lot:
    rows with the same scores share one dict). A text that is not JSON comes back as an
    `Undecodable`."""
    codes: dict[str, int] = {}
    index = [codes.setdefault(t, len(codes)) for t in texts]
    try:
        decoded = load_json("[" + ",".join(codes) + "]")
    except ValueError:
        # One bad text spoils the joined array: decode each on its own to find it.
        decoded = []
        for text in codes:
            try:
                decoded.append(load_json(text))
            except ValueError as exc:
                decoded.append(Undecodable(str(exc)))
    return [decoded[i] for i in index]


def cached_response(text: Any) -> dict[str, Any] | None:
    """A cache entry's response; None (a miss: asked again, then replaced) when another
    writer left one that is not a JSON object."""
    try:
        value = load_json(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def decode_run(run: dict[str, Any]) -> RunRecord:
    """A run as read from a back-end (JSON columns as text) decoded and validated: the
    record, or `BadRun` naming the run and what is wrong with it."""
    for k in RUN_JSON:
        if run.get(k) is not None:
            try:
                run[k] = load_json(run[k])
            except ValueError as exc:
                raise BadRun(str(run.get("id")), f"{k} {exc}") from None
    check_run(run)
    return run  # type: ignore[return-value]  # the columns of RunRecord, checked


def decode_row(row: dict[str, Any]) -> RowRecord:
    """A row as read from a back-end (JSON columns as text) decoded and validated: the
    record, or `BadRun` naming the run, the row and what is wrong with it."""
    for k in ROW_JSON:
        if row.get(k) is not None:
            try:
                row[k] = load_json(row[k])
            except ValueError as exc:
                raise bad_row(str(row.get("run_id")), row.get("kind"), row.get("row_id"),
                              row.get("sample"), f"{k} {exc}") from None
    read_row(row)
    return row  # type: ignore[return-value]  # the columns of RowRecord, checked


def checked_columns(run_id: str, kind: str, ids: list[Any], samples: list[Any], ok: list[Any],
                    scores: list[Any]) -> tuple[ScoreColumns, list[BadRun]]:
    """Score columns as a back-end aggregated them, without the rows that are malformed
    (row id not text, sample not a count, scores not a JSON object), and those rows' errors."""
    bad: list[tuple[int, str]] = []
    for i, (row_id, sample, value) in enumerate(zip(ids, samples, scores, strict=True)):
        if type(row_id) is not str:
            bad.append((i, f"row_id is {shown(row_id)}, not text"))
        elif type(sample) is not int or sample < 0:
            bad.append((i, f"sample is {shown(sample)}, not a count"))
        elif isinstance(value, Undecodable):
            bad.append((i, f"scores {value.why}"))
        elif value is not None and not isinstance(value, dict):
            bad.append((i, f"scores is a {type(value).__name__}, not a mapping"))
    cols = ScoreColumns(row_id=ids, sample=samples, ok=[bool(v) for v in ok], scores=scores)
    if not bad:
        return cols, []
    drop = {i for i, _ in bad}
    keep = [i for i in range(len(ids)) if i not in drop]
    cols = ScoreColumns(row_id=[ids[i] for i in keep], sample=[samples[i] for i in keep],
                        ok=[cols["ok"][i] for i in keep], scores=[scores[i] for i in keep])
    return cols, [bad_row(run_id, kind, ids[i], samples[i], why) for i, why in bad]


# Run ids as promptctl makes them (engine.lifecycle.new_run_id): 10 base32 digits of the
# time in milliseconds, then 4 random ones, in Crockford's alphabet.
RUN_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
RUN_ID_LENGTH = 14
_RUN_ID = re.compile(f"[{RUN_ID_ALPHABET}]{{{RUN_ID_LENGTH}}}")


def is_run_id(text: str) -> bool:
    """Whether `text` is a whole run id of the form promptctl makes."""
    return _RUN_ID.fullmatch(text) is not None


def pick_run(ref: str, ids: Sequence[str], location: str) -> int:
    """Which of `ids` (the stored ids that start with `ref`, in order, at most a few) `ref`
    names: the one id it starts, or the id it is when that is a whole run id. Any other
    choice is ambiguous: a run whose id is a prefix of other ids (another writer's, an old
    import's) never wins over them, so it cannot capture a prefix a user types."""
    if not ref.strip():
        # An empty prefix matches every run: with a single run stored it would pick that one.
        raise InputError("empty run id", fix="give a run id or a unique prefix of one "
                         "(see `promptctl runs`)")
    if not ids:
        raise InputError(f"no run {ref!r} in the store", file=location,
                         fix="list stored runs with `promptctl runs`")
    if len(ids) == 1:
        return 0
    if ids[0] == ref and is_run_id(ref):
        return 0
    listed = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
    what = (f"run id {ref!r} is ambiguous: it is a whole run id and the start of others"
            if ids[0] == ref else f"run id prefix {ref!r} is ambiguous")
    raise InputError(f"{what} ({listed})", fix="give more characters of the run id (`promptctl "
                     f"runs` lists them); {CHECK_FIX} to find runs whose ids are prefixes of "
                     "others")


#: Rows a run lookup reads: enough to list the candidates of an ambiguous prefix.
PICK_LIMIT = 6


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


class MalformedWarning(UserWarning):
    """A read left out a stored run or row that does not have the shape of one."""


T = TypeVar("T")
R = TypeVar("R")


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
    #: Called with each malformed run or row a read skips (the CLI prints a warning); by
    #: default a Python warning.
    on_malformed: Callable[[BadRun], None] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # One boundary for the engine's errors, whatever method (or iterator) meets them.
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if not name.startswith("_") and inspect.isfunction(value):
                setattr(cls, name, _guarded(value))

    def _storage_error(self, exc: Exception) -> StoreError | None:
        """The `StoreError` for an engine failure, or None when `exc` is a bug."""
        return None

    def _skip(self, problem: BadRun) -> None:
        """Report a malformed run or row that a read leaves out."""
        if self.on_malformed is not None:
            self.on_malformed(problem)
        else:
            warnings.warn(f"{problem.message}: skipped ({problem.fix})", MalformedWarning,
                          stacklevel=2)

    def _kept(self, decode: Callable[[T], R], raws: Iterable[T]) -> Iterator[R]:
        """`decode` of each of `raws`, leaving out (and reporting) the malformed ones."""
        for raw in raws:
            try:
                yield decode(raw)
            except BadRun as problem:
                self._skip(problem)

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
    def add_run(self, run: RunRecord, rows: Iterable[RowRecord]) -> bool:
        """Insert a finished run with all its rows in one transaction (an import); False,
        and nothing written, when a run of that id is stored already (or another process
        stores one meanwhile: the second insert waits for the first, then finds it)."""

    @abstractmethod
    def get_run(self, ref: str) -> RunRecord:
        """A run by id or unique id prefix (`pick_run`); `BadRun` when it is malformed."""

    @abstractmethod
    def has_run(self, run_id: str) -> bool:
        """Whether a run with exactly this id is stored."""

    @abstractmethod
    def list_runs(self, prompt: str | None = None, limit: int | None = None,
                  columns: Sequence[str] | None = None) -> list[RunRecord]:
        """Runs, newest first, each with only `columns` (and the id) when given. Each run is
        read whole and validated: a malformed one is left out of every listing alike, and
        reported (`on_malformed`); `limit` counts the runs read."""

    @abstractmethod
    def iter_rows(self, run_id: str, kind: str | None = None) -> Iterator[RowRecord]:
        """A run's rows: few-shot examples first, then by position and sample. Malformed
        rows are left out and reported (`on_malformed`)."""

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

    def usage_columns(self, run_id: str, kind: str = "eval") -> UsageColumns:
        """A run's rows as the columns of what each answer cost (`UsageColumns`). Read from
        whole rows here; a back-end may read just these columns."""
        cols = UsageColumns(row_id=[], ok=[], prompt_tokens=[], completion_tokens=[],
                            latency_ms=[], cached=[])
        def number(value: Any) -> Any:
            # An integer as large as no count or duration is would not fit a float.
            if type(value) is float or (type(value) is int and abs(value) < 1 << 63):
                return value
            return None

        for row in self.iter_rows(run_id, kind):
            cols["row_id"].append(row["row_id"])
            cols["ok"].append(row.get("error") is None)
            cols["prompt_tokens"].append(number(row.get("prompt_tokens")))
            cols["completion_tokens"].append(number(row.get("completion_tokens")))
            cols["latency_ms"].append(number(row.get("latency_ms")))
            cols["cached"].append(bool(row.get("cached")))
        return cols

    @abstractmethod
    def rows_by_id(self, run_id: str, row_ids: Collection[str], kind: str = "eval",
                   columns: Sequence[str] | None = None) -> list[RowRecord]:
        """The rows (every sample) of some row ids, decoded as `iter_rows` does; only
        `columns` (and the row's key and expected) when given."""

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
    """The columns `rows_by_id` reads: all, or those named plus the row's key (a warning about a
    malformed row names it) and expected."""
    if columns is None:
        return list(ROW_COLUMNS)
    unknown = set(columns) - set(ROW_COLUMNS)
    if unknown:
        raise ValueError(f"unknown row columns: {sorted(unknown)}")
    return list(dict.fromkeys(["run_id", "kind", "row_id", "sample", "expected", *columns]))


def only_columns(runs: Iterable[RunRecord], columns: Sequence[str] | None) -> list[RunRecord]:
    """`runs` with only `columns` (and the id) each, or whole."""
    if columns is None:
        return list(runs)
    check_run_fields(columns)
    keep = list(dict.fromkeys(["id", *columns]))
    return [{k: run.get(k) for k in keep} for run in runs]  # type: ignore[misc]  # some columns
