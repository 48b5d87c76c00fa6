"""SQLite results store (WAL, so several processes can write the same file)."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from promptctl.runs import BadRun
from promptctl.store.base import (
    ANSWERED_COLUMNS,
    PICK_LIMIT,
    ROW_BOOL,
    ROW_COLUMNS,
    ROW_DEFAULTS,
    ROW_JSON,
    RUN_COLUMNS,
    RUN_JSON,
    AnsweredColumn,
    CacheStats,
    KindTotals,
    RowRecord,
    RunRecord,
    ScoreColumns,
    Store,
    StoreError,
    StoreUnavailable,
    Undecodable,
    UsageColumns,
    cached_response,
    check_run_fields,
    checked_columns,
    decode_row,
    decode_run,
    decode_shared,
    dumps,
    kind_totals,
    load_json,
    only_columns,
    pick_run,
    row_columns,
    utcnow,
    zero_totals,
)
from promptctl.store.migrations import SQLITE

__all__ = ["SQLiteStore", "Store", "utcnow"]

_ROW_SELECT = ", ".join(ROW_COLUMNS)
_WIDE_PAGE = 50  # rows read at a time by iter_rows_paged: 5 MB of rows of 100 kB
_UPSERT_ROW = (f"INSERT OR REPLACE INTO rows ({_ROW_SELECT}) "
               f"VALUES ({', '.join('?' for _ in ROW_COLUMNS)})")


class SQLiteStore(Store):
    """Runs, rows and cache in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.location = self.path
        try:
            if self.path != ":memory:":
                p = Path(self.path)
                p.parent.mkdir(parents=True, exist_ok=True)
                ignore = p.parent / ".gitignore"
                if p.parent.name == ".promptctl" and not ignore.exists():
                    # Keep the store out of git without touching the user's own .gitignore.
                    ignore.write_text("*\n", encoding="utf-8")
            self.conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None,
                                        check_same_thread=False)
            self.conn.row_factory = sqlite3.Row
            try:
                self.conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as exc:
                # A store that cannot be written can still be read; a write says why not.
                if not getattr(exc, "sqlite_errorname", "").startswith("SQLITE_READONLY"):
                    raise
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA busy_timeout=60000")
            self.migrate()
        except (sqlite3.Error, OSError) as exc:
            mapped = self._storage_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    # -- errors ----------------------------------------------------------------------------

    def _storage_error(self, exc: Exception) -> StoreError | None:
        return storage_error(exc, self.path)

    # -- schema ----------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names applied now."""
        conn = self.conn
        conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
        applied = {r[0] for r in conn.execute("SELECT name FROM _migrations")}
        done = []
        for name, sql in SQLITE:
            if name in applied:
                continue
            with self._transaction():
                # Another process may have migrated while we waited for the lock.
                if conn.execute("SELECT 1 FROM _migrations WHERE name=?", (name,)).fetchone():
                    continue
                for statement in sql.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO _migrations VALUES (?, ?)", (name, utcnow()))
            done.append(name)
        return done

    # -- runs ------------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        self._insert_run(run)

    def _insert_run(self, run: RunRecord, *, unless_stored: bool = False) -> bool:
        record = _run_values(dict(run))
        cols = ", ".join(record)
        marks = ", ".join("?" for _ in record)
        keep = " ON CONFLICT (id) DO NOTHING" if unless_stored else ""
        cur = self.conn.execute(f"INSERT INTO runs ({cols}) VALUES ({marks}){keep}",
                                tuple(record.values()))
        return cur.rowcount == 1

    def update_run(self, run_id: str, **fields: Any) -> None:
        record = _run_values(fields)
        sets = ", ".join(f"{k}=?" for k in record)
        self.conn.execute(f"UPDATE runs SET {sets} WHERE id=?", (*record.values(), run_id))

    def claim_run(self, run_id: str, owner: str, expected: str | None) -> bool:
        # One statement: SQLite's write lock makes the compare and the swap one step.
        cur = self.conn.execute("UPDATE runs SET owner = ?, status = 'running' "
                                "WHERE id = ? AND owner IS ?", (owner, run_id, expected))
        return cur.rowcount == 1

    def release_run(self, run_id: str, owner: str) -> bool:
        cur = self.conn.execute("UPDATE runs SET owner = NULL WHERE id = ? AND owner = ?",
                                (run_id, owner))
        return cur.rowcount == 1

    def has_run(self, run_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone() is not None

    def get_run(self, ref: str) -> RunRecord:
        found = list(self._select(
            f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE id >= ? AND id < ? ORDER BY id "
            "LIMIT ?", (ref, ref + "\uffff", PICK_LIMIT)))
        return _run_from_row(found[pick_run(ref, [r["id"] for r in found], self.location)])

    def list_runs(self, prompt: str | None = None, limit: int | None = None,
                  columns: Sequence[str] | None = None) -> list[RunRecord]:
        sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"
        args: list[Any] = []
        if prompt is not None:
            sql += " WHERE prompt_name = ?"
            args.append(prompt)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return only_columns(self._kept(_run_from_row, self._select(sql, args)), columns)

    # -- rows ------------------------------------------------------------------------------

    def write_rows(self, rows: Sequence[RowRecord],
                   cache: Sequence[tuple[str, dict[str, Any]]] = ()) -> None:
        """Insert (or replace, on resume) a batch of rows, and the cache entries of their
        answers, in one transaction."""
        if not rows and not cache:
            return
        values = [_row_values(row) for row in rows]
        with self._transaction():
            self.conn.executemany(_UPSERT_ROW, values)
            if cache:
                self._cache_insert(cache)

    def add_run(self, run: RunRecord, rows: Iterable[RowRecord]) -> bool:
        with self._transaction():
            if not self._insert_run(run, unless_stored=True):
                return False
            self.conn.executemany(_UPSERT_ROW, (_row_values(row) for row in rows))
        return True

    def _transaction(self) -> _Tx:
        return _Tx(self.conn)

    def _select(self, sql: str, args: Sequence[Any]) -> Iterator[sqlite3.Row]:
        """The rows of a query. Should one hold text that is not UTF-8 (another writer's),
        the rest are read again with such text as bytes, which the readers refuse as not
        text: that run or row is left out, not the whole read."""
        done = 0
        try:
            for r in self.conn.execute(sql, args):
                yield r
                done += 1
        except sqlite3.OperationalError as exc:
            if not _not_utf8(exc):
                raise
            saved = self.conn.text_factory
            self.conn.text_factory = _text_or_bytes
            try:
                rest = self.conn.execute(sql, args).fetchall()[done:]
            finally:
                self.conn.text_factory = saved
            yield from rest

    def iter_rows(self, run_id: str, kind: str | None = None) -> Iterator[RowRecord]:
        sql = f"SELECT {_ROW_SELECT} FROM rows WHERE run_id = ?"
        args: list[Any] = [run_id]
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        sql += " ORDER BY kind DESC, position, sample"
        yield from self._kept(_row, self._select(sql, args))

    def iter_rows_paged(self, run_id: str, kind: str | None = None) -> Iterator[RowRecord]:
        # iter_rows has SQLite sort whole rows: past its page cache it spills them to
        # temporary files and merges those with a buffer each, which holds about 5% of the
        # run's text in memory (120 MB for 2 GB). Here only the keys are sorted.
        sql = "SELECT kind, row_id, sample FROM rows WHERE run_id = ?"
        args: list[Any] = [run_id]
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        keys = [tuple(k) for k in self._select(sql + " ORDER BY kind DESC, position, sample",
                                               args)]
        it = iter(keys)
        while page := list(islice(it, _WIDE_PAGE)):
            by_key: dict[tuple[Any, ...], RowRecord] = {}
            for page_kind in {k[0] for k in page}:
                ids = list(dict.fromkeys(k[1] for k in page if k[0] == page_kind))
                marks = ", ".join("?" for _ in ids)
                for row in self._kept(_row, self._select(
                        f"SELECT {_ROW_SELECT} FROM rows WHERE run_id = ? AND kind = ? AND "
                        f"row_id IN ({marks})", (run_id, page_kind, *ids))):
                    by_key[(row["kind"], row["row_id"], row["sample"])] = row
            for key in page:
                found = by_key.get(key)
                if found is not None:  # deleted meanwhile
                    yield found

    def run_totals(self, run_id: str) -> dict[str, KindTotals]:
        """Per kind ("eval" and "fewshot", zeros when none): rows, errors, cached answers,
        retries, and the tokens of the answers (all, and those not from the cache), summed
        by SQLite rather than over row dicts."""
        out = zero_totals()
        for r in self.conn.execute(
                "SELECT kind, COUNT(*), SUM(error IS NOT NULL), SUM(error IS NULL AND cached), "
                "SUM(MAX(attempts - 1, 0)), "
                "SUM(CASE WHEN error IS NULL THEN COALESCE(prompt_tokens, 0) ELSE 0 END), "
                "SUM(CASE WHEN error IS NULL THEN COALESCE(completion_tokens, 0) ELSE 0 END), "
                "SUM(CASE WHEN error IS NULL AND NOT cached THEN COALESCE(prompt_tokens, 0) ELSE 0 END), "
                "SUM(CASE WHEN error IS NULL AND NOT cached THEN COALESCE(completion_tokens, 0) "
                "ELSE 0 END), SUM(error IS NULL AND completion IS NULL) "
                "FROM rows WHERE run_id = ? GROUP BY kind", (run_id,)):
            out[r[0]] = kind_totals(r[1:])
        return out

    def iter_scores(self, run_id: str, kind: str) -> Iterator[dict[str, Any]]:
        """The score dicts of the answered rows of one kind, in row order, without the rest
        of each row. Equal scores may be one shared dict: treat them as read-only."""
        # Scores repeat a lot (0/1 metrics): decode each of the first distinct texts once.
        memo: dict[str, dict[str, Any]] = {}
        for (text,) in self.conn.execute(
                "SELECT scores FROM rows WHERE run_id = ? AND kind = ? AND error IS NULL "
                "ORDER BY position, sample", (run_id, kind)):
            value = memo.get(text) if text is not None else {}
            if value is None:
                decoded = _decoded(text)
                # A malformed row scores nothing (`store check` names it).
                value = decoded if isinstance(decoded, dict) else {}
                if len(memo) < 4096:
                    memo[text] = value
            yield value

    def answered_column(self, run_id: str, column: AnsweredColumn) -> list[Any]:
        """One column's non-NULL values over the answered rows of a run, in row order."""
        if column not in ANSWERED_COLUMNS:
            raise ValueError(column)
        return [r[0] for r in self.conn.execute(
            f"SELECT {column} FROM rows WHERE run_id = ? AND error IS NULL AND {column} IS NOT NULL "
            "ORDER BY kind DESC, position, sample", (run_id,))]

    def answered_keys(self, run_id: str) -> set[tuple[str, str, int]]:
        """(kind, row_id, sample) of the rows of a run that have an answer (not an error)."""
        return {(r[0], r[1], r[2]) for r in self.conn.execute(
            "SELECT kind, row_id, sample FROM rows WHERE run_id = ? AND error IS NULL", (run_id,))}

    def score_columns(self, run_id: str, kind: str = "eval") -> ScoreColumns:
        """A run's rows as columns (row_id, sample, ok, scores), without messages or completions.

        One aggregate query: comparing runs of 100,000 rows must not build 100,000 row dicts.
        `ok` is False for a row whose request failed; its scores are None. Rows with the
        same scores share one dict: treat them as read-only.
        """
        cols, bad = _lenient_score_columns(self.conn, run_id, kind)
        for problem in bad:
            self._skip(problem)
        return cols

    def score_columns_of(self, run_ids: Sequence[str], kind: str = "eval") -> list[ScoreColumns]:
        """`score_columns` of several runs, each but the first read on a connection of its own
        in a thread: SQLite's scan of one overlaps the JSON decoding of another."""
        if self.path == ":memory:" or len(run_ids) < 2:
            return [self.score_columns(r, kind) for r in run_ids]
        from concurrent.futures import ThreadPoolExecutor

        def read(run_id: str) -> tuple[ScoreColumns, list[BadRun]]:
            conn = sqlite3.connect(self.path, timeout=60.0)
            try:
                return _lenient_score_columns(conn, run_id, kind)
            finally:
                conn.close()

        with ThreadPoolExecutor(max_workers=len(run_ids) - 1) as pool:
            others = [pool.submit(read, r) for r in run_ids[1:]]
            out = [self.score_columns(run_ids[0], kind)]
            for future in others:
                cols, bad = future.result()
                for problem in bad:
                    self._skip(problem)
                out.append(cols)
            return out

    def usage_columns(self, run_id: str, kind: str = "eval") -> UsageColumns:
        """`Store.usage_columns` from these columns alone, in one aggregate query (a diff of
        100,000-row runs must not build a tuple per row); row by row when this SQLite has no
        JSON functions or a row holds text that is not UTF-8."""
        number = "CASE WHEN typeof({0}) IN ('integer', 'real') THEN {0} END"
        columns = ("row_id", "error IS NULL", number.format("prompt_tokens"),
                   number.format("completion_tokens"), number.format("latency_ms"),
                   "cached IS NOT NULL AND cached != 0")
        where = "FROM rows WHERE run_id = ? AND kind = ?"
        try:
            found = self.conn.execute(
                "SELECT " + ", ".join(f"json_group_array({c})" for c in columns) + f" {where}",
                (run_id, kind)).fetchone()
            lists = [json.loads(v) for v in found]
        except sqlite3.OperationalError:
            saved = self.conn.text_factory
            self.conn.text_factory = _text_or_bytes
            try:
                rows = self.conn.execute(f"SELECT {', '.join(columns)} {where}",
                                         (run_id, kind)).fetchall()
            finally:
                self.conn.text_factory = saved
            lists = [list(c) for c in zip(*rows, strict=True)] if rows else [[]] * 6
        if not all(type(r) is str for r in lists[0]):
            # Malformed rows (a row id not text) are left out, as score_columns leaves them.
            keep = [i for i, r in enumerate(lists[0]) if type(r) is str]
            lists = [[c[i] for i in keep] for c in lists]
        ids, ok, prompt, completion, latency, cached = lists
        return UsageColumns(row_id=ids, ok=[bool(v) for v in ok], prompt_tokens=prompt,
                            completion_tokens=completion, latency_ms=latency,
                            cached=[bool(v) for v in cached])

    def rows_by_id(self, run_id: str, row_ids: Collection[str], kind: str = "eval",
                   columns: Sequence[str] | None = None) -> list[RowRecord]:
        """The rows (every sample) of some row ids, decoded as `iter_rows` does; only
        `columns` (and the row's key and expected) when given."""
        select = ", ".join(row_columns(columns))
        wanted = list(dict.fromkeys(row_ids))
        out: list[RowRecord] = []
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            marks = ", ".join("?" for _ in part)
            cur = self._select(f"SELECT {select} FROM rows WHERE run_id = ? AND kind = ? AND "
                               f"row_id IN ({marks}) ORDER BY position, sample",
                               (run_id, kind, *part))
            out.extend(self._kept(_row, cur))
        return out

    # -- cache -----------------------------------------------------------------------------

    def cache_get(self, key: str) -> dict[str, Any] | None:
        r = self.conn.execute("SELECT response FROM cache WHERE key = ?", (key,)).fetchone()
        return None if r is None else cached_response(r[0])

    def cache_put(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        items = list(items)
        if items:
            with self._transaction():
                self._cache_insert(items)

    def _cache_insert(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        now = utcnow()
        self.conn.executemany("INSERT OR REPLACE INTO cache (key, created_at, response) "
                              "VALUES (?, ?, ?)", [(k, now, dumps(v)) for k, v in items])

    def cache_stats(self) -> CacheStats:
        """Entries, bytes of stored responses, oldest and newest entry."""
        r = self.conn.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(response)), 0), MIN(created_at), "
                              "MAX(created_at) FROM cache").fetchone()
        size = Path(self.path).stat().st_size if self.path != ":memory:" else 0
        return CacheStats(entries=r[0], response_bytes=r[1], oldest=r[2], newest=r[3],
                          store=self.location, store_bytes=size)

    def cache_clear(self, before: str | None = None) -> int:
        """Delete cached completions (only those created before `before`, an ISO time, if given)."""
        with self._transaction():
            if before is None:
                cur = self.conn.execute("DELETE FROM cache")
            else:
                cur = self.conn.execute("DELETE FROM cache WHERE created_at < ?", (before,))
        return int(cur.rowcount)

    def close(self) -> None:
        self.conn.close()


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (Ctrl-C included)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:
            # A full disk or I/O error may already have rolled the transaction back.
            self.conn.execute("ROLLBACK")


# -- records -------------------------------------------------------------------------------


def _run_values(fields: dict[str, Any]) -> dict[str, Any]:
    check_run_fields(fields)
    record = {k: (dumps(v) if k in RUN_JSON and v is not None else v) for k, v in fields.items()}
    if isinstance(record.get("git_dirty"), bool):
        record["git_dirty"] = int(record["git_dirty"])
    return record


def _run_from_row(r: sqlite3.Row) -> RunRecord:
    run: dict[str, Any] = dict(r)
    if run.get("git_dirty") in (0, 1):
        run["git_dirty"] = bool(run["git_dirty"])
    return decode_run(run)


def _row_values(row: RowRecord) -> tuple[Any, ...]:
    values: list[Any] = []
    for c in ROW_COLUMNS:
        v = row.get(c)
        if v is None and c in ROW_DEFAULTS:
            v = ROW_DEFAULTS[c]
        if c in ROW_JSON:
            v = dumps(v) if c in row else None
        elif c in ROW_BOOL and v is not None:
            v = 1 if v else 0
        values.append(v)
    return tuple(values)


def _row(r: sqlite3.Row) -> RowRecord:
    row: dict[str, Any] = dict(r)
    # NULL is "no expected value"; JSON null is an expected value of None.
    if "expected" in row:
        row["has_expected"] = r["expected"] is not None
    for k in ("valid", "cached"):
        if row.get(k) in (0, 1):
            row[k] = bool(row[k])
    return decode_row(row)


def _text_or_bytes(data: bytes) -> str | bytes:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return data


def _not_utf8(exc: sqlite3.OperationalError) -> bool:
    return "decode to UTF-8" in str(exc)


def _lenient_score_columns(conn: sqlite3.Connection, run_id: str,
                           kind: str) -> tuple[ScoreColumns, list[BadRun]]:
    """`_score_columns`; row by row, with text that is not UTF-8 as bytes, should a row hold
    some."""
    try:
        return _score_columns(conn, run_id, kind)
    except sqlite3.OperationalError as exc:
        if not _not_utf8(exc):
            raise
    saved = conn.text_factory
    conn.text_factory = _text_or_bytes
    try:
        return _score_columns(conn, run_id, kind, aggregate=False)
    finally:
        conn.text_factory = saved


def _score_columns(conn: sqlite3.Connection, run_id: str, kind: str,
                   aggregate: bool = True) -> tuple[ScoreColumns, list[BadRun]]:
    # char(30) cannot occur in stored JSON (json.dumps escapes control characters).
    sql = ("SELECT json_group_array(row_id), json_group_array(sample), "
           "json_group_array(error IS NULL), group_concat(coalesce(scores, 'null'), char(30)) "
           "FROM rows WHERE run_id = ? AND kind = ?")
    try:
        found = conn.execute(sql, (run_id, kind)).fetchone() if aggregate else None
    except sqlite3.OperationalError as exc:  # an SQLite built without JSON functions
        if _not_utf8(exc):
            raise
        found = None
    if found is not None and found[3] is not None:
        # All four aggregates see the rows in one scan, in the same order.
        ids, samples, ok = (json.loads(v) for v in found[:3])
        texts = found[3].split("\x1e")
        if len(texts) == len(ids):  # else another writer stored a char(30): row by row
            return checked_columns(run_id, kind, ids, samples, ok, decode_shared(texts))
    ids, samples, ok, scores = [], [], [], []
    for r in conn.execute("SELECT row_id, sample, error IS NULL, scores FROM rows "
                          "WHERE run_id = ? AND kind = ? ORDER BY row_id, sample", (run_id, kind)):
        ids.append(r[0])
        samples.append(r[1])
        ok.append(r[2])
        scores.append(None if r[3] is None else _decoded(r[3]))
    return checked_columns(run_id, kind, ids, samples, ok, scores)


def _decoded(text: Any) -> Any:
    """A stored JSON text's value, or an `Undecodable` saying why it has none."""
    try:
        return load_json(text)
    except ValueError as exc:
        return Undecodable(str(exc))


# -- errors --------------------------------------------------------------------------------

_ELSEWHERE = "point PROMPTCTL_STORE (or store: in promptctl.yaml, or --store) at a writable place"


def storage_error(exc: Exception, path: str) -> StoreError | None:
    """What an SQLite or file-system failure means for the store at `path`, with the fix;
    None for an error that is a bug (a constraint, a misuse of the API)."""
    if isinstance(exc, OSError):
        return _not_writable(Path(path), exc) or StoreError(
            f"cannot prepare the results store: {exc.strerror or exc}", file=path,
            fix=_ELSEWHERE)
    if not isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError) or isinstance(
            exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError):
        return None
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text \
            or "not a database" in text:
        return StoreError(
            f"the results store is damaged or not a promptctl SQLite file ({text})", file=path,
            fix=f"recover what it holds with `sqlite3 {path} .recover | sqlite3 recovered.db` and "
            "point PROMPTCTL_STORE at recovered.db, or move the file away to start a new store "
            "(the runs in it are lost then)")
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return StoreUnavailable(
            f"the disk holding the results store is full ({text})", file=path,
            fix="free space on that disk (or `promptctl cache clear --older-than 30d`), then "
            "finish an interrupted run with `promptctl eval --resume RUN`; the rows stored so "
            "far are kept")
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")) \
            or "readonly" in text or "unable to open" in text:
        found = _not_writable(Path(path), None)
        if found is not None:
            return found
        return StoreError(f"cannot open the results store for writing ({text})", file=path,
                          fix=f"check that the file and its directory exist and are writable, or "
                          f"{_ELSEWHERE}")
    if name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED") or "locked" in text:
        return StoreUnavailable(f"the results store stayed locked by another process ({text})",
                                file=path, fix="wait for the other promptctl to finish, then "
                                "run the command again")
    if name.startswith("SQLITE_IOERR") or "I/O error" in text:
        return StoreUnavailable(f"the disk failed while writing the results store ({text})",
                                file=path, fix="check the disk (space, errors in the system log), "
                                "then finish an interrupted run with `promptctl eval --resume RUN`")
    if name in ("SQLITE_ERROR", "") or name.startswith(("SQLITE_MISUSE", "SQLITE_RANGE")):
        return None  # a statement promptctl got wrong: a bug, with its traceback
    return StoreError(f"cannot use the results store ({text})", file=path,
                      fix="point PROMPTCTL_STORE (or store: in promptctl.yaml) at a promptctl "
                      "SQLite file, or move this one away")


_WHY = {errno.EROFS: "is on a read-only file system",
        errno.EPERM: "cannot be changed (immutable, or not permitted)",
        errno.EACCES: "is not writable (permission denied)"}


def _not_writable(path: Path, exc: OSError | None) -> StoreError | None:
    """The cause and fix when the store file or its directory cannot be written: found by
    trying, since permission bits say nothing of an immutable file, a read-only mount or root."""
    if str(path) == ":memory:":
        return None
    for target, is_dir in ((path.parent, True), (path, False)):
        if not target.exists():
            continue
        err = _probe(target, is_dir)
        if err is None:
            continue
        why = _WHY.get(err, os.strerror(err))
        what = f"the store's directory {target}" if is_dir else "the store file"
        if err == errno.EROFS:
            fix = f"remount that file system read-write, or {_ELSEWHERE}"
        elif err == errno.EPERM:
            fix = (f"lift the immutable flag (chattr -i {target}) or the policy that blocks it, "
                   f"or {_ELSEWHERE}")
        else:
            fix = f"make it writable for this user (chmod u+w {target}), or {_ELSEWHERE}"
        return StoreError(f"{what} {why}", file=str(path), fix=fix)
    if exc is not None and exc.errno in _WHY and not path.parent.exists():
        return StoreError(f"cannot create the store directory {path.parent}: {exc.strerror}",
                          file=str(path), fix=f"create it with write access, or {_ELSEWHERE}")
    return None


def _probe(target: Path, is_dir: bool) -> int | None:
    """errno of writing `target` (a new file in it, for a directory), or None when it can."""
    try:
        if is_dir:
            import tempfile

            fd, name = tempfile.mkstemp(prefix=".promptctl-probe-", dir=target)
            os.close(fd)
            os.unlink(name)
        else:
            os.close(os.open(target, os.O_RDWR))
    except OSError as exc:
        return exc.errno
    return None
