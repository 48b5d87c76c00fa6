"""SQLite results store (WAL, so several processes can write the same file)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from promptctl.errors import InputError
from promptctl.store.migrations import MIGRATIONS

RUN_COLUMNS = ("id", "created_at", "finished_at", "status", "prompt_name", "prompt_path",
               "prompt_version", "prompt_source", "git_commit", "git_dirty", "git_branch", "model",
               "endpoint", "base_url", "params", "evalset_path", "evalset_version", "n_planned",
               "metrics", "fewshot_metrics", "summary", "options", "owner", "coverage", "errors",
               "parent_run", "kind")
RUN_JSON = ("params", "metrics", "fewshot_metrics", "summary", "options")
ROW_JSON = ("input", "expected", "messages", "answer", "scores", "judges", "steps")
ROW_COLUMNS = ("run_id", "kind", "position", "row_id", "sample", "input", "expected", "messages",
               "completion", "answer", "valid", "extract_error", "scores", "prompt_tokens",
               "completion_tokens", "latency_ms", "response_model", "system_fingerprint", "error",
               "cached", "attempts", "created_at", "judges", "steps")


def utcnow() -> str:
    """UTC ISO-8601 timestamp with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class Store:
    """Interface shared by the store back-ends."""

    def migrate(self) -> list[str]:
        raise NotImplementedError

    def create_run(self, run: dict[str, Any]) -> None:
        raise NotImplementedError

    def update_run(self, run_id: str, **fields: Any) -> None:
        raise NotImplementedError

    def write_rows(self, rows: Sequence[dict[str, Any]],
                   cache: Sequence[tuple[str, dict[str, Any]]] = ()) -> None:
        raise NotImplementedError

    def claim_run(self, run_id: str, owner: str, expected: str | None) -> bool:
        """Make `owner` the process running `run_id` (status running), only if its owner is
        still `expected`: one atomic compare-and-swap, so of two processes resuming the
        same run exactly one wins."""
        raise NotImplementedError

    def get_run(self, ref: str) -> dict[str, Any]:
        raise NotImplementedError

    def has_run(self, run_id: str) -> bool:
        raise NotImplementedError

    def list_runs(self, prompt: str | None = None, limit: int | None = None,
                  columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
        raise NotImplementedError

    def iter_rows(self, run_id: str, kind: str | None = None) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def answered_keys(self, run_id: str) -> set[tuple[str, str, int]]:
        raise NotImplementedError

    def run_totals(self, run_id: str) -> dict[str, dict[str, int]]:
        raise NotImplementedError

    def iter_scores(self, run_id: str, kind: str) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def answered_column(self, run_id: str, column: str) -> list[Any]:
        raise NotImplementedError

    def score_columns(self, run_id: str, kind: str = "eval") -> dict[str, list[Any]]:
        raise NotImplementedError

    def score_columns_of(self, run_ids: Sequence[str],
                         kind: str = "eval") -> list[dict[str, list[Any]]]:
        """`score_columns` of several runs."""
        return [self.score_columns(r, kind) for r in run_ids]

    def rows_by_id(self, run_id: str, row_ids: Collection[str], kind: str = "eval",
                   columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
        raise NotImplementedError

    def cache_get(self, key: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def cache_put(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        raise NotImplementedError

    def cache_stats(self) -> dict[str, Any]:
        raise NotImplementedError

    def cache_clear(self, before: str | None = None) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SQLiteStore(Store):
    """Runs, rows and cache in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            p = Path(self.path)
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"cannot create the store directory: {exc.strerror}",
                                 file=p.parent, fix="check permissions or set PROMPTCTL_STORE") from None
            ignore = p.parent / ".gitignore"
            if p.parent.name == ".promptctl" and not ignore.exists():
                # Keep the store out of git without touching the user's own .gitignore.
                ignore.write_text("*\n", encoding="utf-8")
        try:
            self.conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None,
                                        check_same_thread=False)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA busy_timeout=60000")
            self.migrate()
        except sqlite3.DatabaseError as exc:
            raise InputError(f"cannot open the results store: {exc}", file=self.path,
                             fix="point PROMPTCTL_STORE (or store: in promptctl.yaml) at a "
                             "promptctl SQLite file, or move this one away") from None

    def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names applied now."""
        conn = self.conn
        conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
        applied = {r[0] for r in conn.execute("SELECT name FROM _migrations")}
        done = []
        for name, sql in MIGRATIONS:
            if name in applied:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Another process may have migrated while we waited for the lock.
                if conn.execute("SELECT 1 FROM _migrations WHERE name=?", (name,)).fetchone():
                    conn.execute("COMMIT")
                    continue
                for statement in sql.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO _migrations VALUES (?, ?)", (name, utcnow()))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            done.append(name)
        return done

    def create_run(self, run: dict[str, Any]) -> None:
        record = {k: (_dumps(v) if k in RUN_JSON and v is not None else v) for k, v in run.items()}
        if isinstance(record.get("git_dirty"), bool):
            record["git_dirty"] = int(record["git_dirty"])
        cols = ", ".join(record)
        marks = ", ".join("?" for _ in record)
        self.conn.execute(f"INSERT INTO runs ({cols}) VALUES ({marks})", tuple(record.values()))

    def update_run(self, run_id: str, **fields: Any) -> None:
        record = {k: (_dumps(v) if k in RUN_JSON and v is not None else v) for k, v in fields.items()}
        sets = ", ".join(f"{k}=?" for k in record)
        self.conn.execute(f"UPDATE runs SET {sets} WHERE id=?", (*record.values(), run_id))

    def write_rows(self, rows: Sequence[dict[str, Any]],
                   cache: Sequence[tuple[str, dict[str, Any]]] = ()) -> None:
        """Insert (or replace, on resume) a batch of rows, and the cache entries of their
        answers, in one transaction."""
        if not rows and not cache:
            return
        values = []
        for row in rows:
            values.append(tuple(
                _dumps(row[c]) if c in ROW_JSON and c in row
                else (int(row[c]) if c in ("valid", "cached") and row.get(c) is not None
                      else row.get(c))
                for c in ROW_COLUMNS))
        marks = ", ".join("?" for _ in ROW_COLUMNS)
        with self._transaction():
            self.conn.executemany(
                f"INSERT OR REPLACE INTO rows ({', '.join(ROW_COLUMNS)}) VALUES ({marks})", values)
            if cache:
                self._cache_insert(cache)

    def claim_run(self, run_id: str, owner: str, expected: str | None) -> bool:
        cur = self.conn.execute("UPDATE runs SET owner = ?, status = 'running' WHERE id = ? "
                                "AND owner IS ?", (owner, run_id, expected))
        return cur.rowcount == 1

    def _transaction(self) -> _Tx:
        return _Tx(self.conn)

    def _run_from_row(self, r: sqlite3.Row) -> dict[str, Any]:
        run = dict(r)
        for k in RUN_JSON:
            if run.get(k) is not None:
                run[k] = json.loads(run[k])
        if run.get("git_dirty") is not None:
            run["git_dirty"] = bool(run["git_dirty"])
        return run

    def has_run(self, run_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone() is not None

    def get_run(self, ref: str) -> dict[str, Any]:
        """A run by id or unique id prefix."""
        if not ref.strip():
            # An empty prefix matches every run: with a single run stored it would pick that one.
            raise InputError("empty run id", fix="give a run id or a unique prefix of one "
                             "(see `promptctl runs`)")
        found = self.conn.execute("SELECT * FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT 2",
                                  (ref, ref + "\uffff")).fetchall()
        if not found:
            raise InputError(f"no run {ref!r} in the store", file=self.path,
                             fix="list stored runs with `promptctl runs`")
        if len(found) > 1 and found[0]["id"] != ref:
            raise InputError(f"run id prefix {ref!r} is ambiguous ({found[0]['id']}, "
                             f"{found[1]['id']}, ...)", fix="give more characters of the run id")
        return self._run_from_row(found[0])

    def list_runs(self, prompt: str | None = None, limit: int | None = None,
                  columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Runs, newest first; `columns` limits what is read (and decoded) to those named."""
        if columns is not None and not set(columns) <= set(RUN_COLUMNS):
            raise ValueError(f"unknown run columns: {sorted(set(columns) - set(RUN_COLUMNS))}")
        sql = f"SELECT {', '.join(columns) if columns else '*'} FROM runs"
        args: list[Any] = []
        if prompt is not None:
            sql += " WHERE prompt_name = ?"
            args.append(prompt)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [self._run_from_row(r) for r in self.conn.execute(sql, args)]

    def iter_rows(self, run_id: str, kind: str | None = None) -> Iterator[dict[str, Any]]:
        sql = "SELECT * FROM rows WHERE run_id = ?"
        args: list[Any] = [run_id]
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        sql += " ORDER BY kind DESC, position, sample"
        for r in self.conn.execute(sql, args):
            yield self._row(r)

    @staticmethod
    def _row(r: sqlite3.Row) -> dict[str, Any]:
        row = dict(r)
        for k in ROW_JSON:
            if row.get(k) is not None:
                row[k] = json.loads(row[k])
        # NULL is "no expected value"; JSON null is an expected value of None.
        row["has_expected"] = r["expected"] is not None
        if "valid" in row:
            row["valid"] = None if row["valid"] is None else bool(row["valid"])
        if "cached" in row:
            row["cached"] = bool(row["cached"])
        return row

    def run_totals(self, run_id: str) -> dict[str, dict[str, int]]:
        """Per kind ("eval" and "fewshot", zeros when none): rows, errors, cached answers,
        retries, and the tokens of the answers (all, and those not from the cache), summed
        by SQLite rather than over row dicts."""
        keys = ("n", "errors", "cached", "retries", "prompt_tokens", "completion_tokens",
                "spent_prompt_tokens", "spent_completion_tokens")
        out = {kind: dict.fromkeys(keys, 0) for kind in ("eval", "fewshot")}
        for r in self.conn.execute(
                "SELECT kind, COUNT(*), SUM(error IS NOT NULL), SUM(error IS NULL AND cached), "
                "SUM(MAX(attempts - 1, 0)), "
                "SUM(CASE WHEN error IS NULL THEN COALESCE(prompt_tokens, 0) ELSE 0 END), "
                "SUM(CASE WHEN error IS NULL THEN COALESCE(completion_tokens, 0) ELSE 0 END), "
                "SUM(CASE WHEN error IS NULL AND NOT cached THEN COALESCE(prompt_tokens, 0) ELSE 0 END), "
                "SUM(CASE WHEN error IS NULL AND NOT cached THEN COALESCE(completion_tokens, 0) "
                "ELSE 0 END) FROM rows WHERE run_id = ? GROUP BY kind", (run_id,)):
            out[r[0]] = {k: int(v or 0) for k, v in zip(keys, r[1:], strict=True)}
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
                value = json.loads(text) or {}
                if len(memo) < 4096:
                    memo[text] = value
            yield value

    def answered_column(self, run_id: str, column: str) -> list[Any]:
        """One column's non-NULL values over the answered rows of a run, in row order."""
        if column not in ("latency_ms", "system_fingerprint", "response_model"):
            raise ValueError(column)
        return [r[0] for r in self.conn.execute(
            f"SELECT {column} FROM rows WHERE run_id = ? AND error IS NULL AND {column} IS NOT NULL "
            "ORDER BY kind DESC, position, sample", (run_id,))]

    def answered_keys(self, run_id: str) -> set[tuple[str, str, int]]:
        """(kind, row_id, sample) of the rows of a run that have an answer (not an error)."""
        return {(r[0], r[1], r[2]) for r in self.conn.execute(
            "SELECT kind, row_id, sample FROM rows WHERE run_id = ? AND error IS NULL", (run_id,))}

    def score_columns(self, run_id: str, kind: str = "eval") -> dict[str, list[Any]]:
        """A run's rows as columns (row_id, sample, ok, scores), without messages or completions.

        One aggregate query: comparing runs of 100,000 rows must not build 100,000 row dicts.
        `ok` is False for a row whose request failed; its scores are None. Rows with the
        same scores share one dict: treat them as read-only.
        """
        return _score_columns(self.conn, run_id, kind)

    def score_columns_of(self, run_ids: Sequence[str],
                         kind: str = "eval") -> list[dict[str, list[Any]]]:
        """`score_columns` of several runs, each but the first read on a connection of its own
        in a thread: SQLite's scan of one overlaps the JSON decoding of another."""
        if self.path == ":memory:" or len(run_ids) < 2:
            return super().score_columns_of(run_ids, kind)
        from concurrent.futures import ThreadPoolExecutor

        def read(run_id: str) -> dict[str, list[Any]]:
            conn = sqlite3.connect(self.path, timeout=60.0)
            try:
                return _score_columns(conn, run_id, kind)
            finally:
                conn.close()

        with ThreadPoolExecutor(max_workers=len(run_ids) - 1) as pool:
            others = [pool.submit(read, r) for r in run_ids[1:]]
            first = self.score_columns(run_ids[0], kind)
            return [first, *(f.result() for f in others)]

    def rows_by_id(self, run_id: str, row_ids: Collection[str], kind: str = "eval",
                   columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The rows (every sample) of some row ids, decoded as `iter_rows` does; only
        `columns` (and row_id, sample, expected) when given."""
        if columns is None:
            select = "*"
        else:
            unknown = set(columns) - set(ROW_COLUMNS)
            if unknown:
                raise ValueError(f"unknown row columns: {sorted(unknown)}")
            select = ", ".join(dict.fromkeys(["row_id", "sample", "expected", *columns]))
        wanted = list(dict.fromkeys(row_ids))
        out: list[dict[str, Any]] = []
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            marks = ", ".join("?" for _ in part)
            cur = self.conn.execute(f"SELECT {select} FROM rows WHERE run_id = ? AND kind = ? AND "
                                    f"row_id IN ({marks}) ORDER BY position, sample",
                                    (run_id, kind, *part))
            out.extend(self._row(r) for r in cur)
        return out

    def cache_get(self, key: str) -> dict[str, Any] | None:
        r = self.conn.execute("SELECT response FROM cache WHERE key = ?", (key,)).fetchone()
        return None if r is None else dict(json.loads(r[0]))

    def cache_put(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        items = list(items)
        if items:
            with self._transaction():
                self._cache_insert(items)

    def _cache_insert(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        now = utcnow()
        self.conn.executemany("INSERT OR REPLACE INTO cache (key, created_at, response) "
                              "VALUES (?, ?, ?)", [(k, now, _dumps(v)) for k, v in items])

    def cache_stats(self) -> dict[str, Any]:
        """Entries, bytes of stored responses, oldest and newest entry."""
        r = self.conn.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(response)), 0), MIN(created_at), "
                              "MAX(created_at) FROM cache").fetchone()
        size = Path(self.path).stat().st_size if self.path != ":memory:" else 0
        return {"entries": r[0], "response_bytes": r[1], "oldest": r[2], "newest": r[3],
                "store": self.path, "store_bytes": size}

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
        self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def _score_columns(conn: sqlite3.Connection, run_id: str, kind: str) -> dict[str, list[Any]]:
    # char(30) cannot occur in stored JSON (json.dumps escapes control characters).
    sql = ("SELECT json_group_array(row_id), json_group_array(sample), "
           "json_group_array(error IS NULL), group_concat(coalesce(scores, 'null'), char(30)) "
           "FROM rows WHERE run_id = ? AND kind = ?")
    try:
        found = conn.execute(sql, (run_id, kind)).fetchone()
    except sqlite3.OperationalError:  # an SQLite built without JSON functions
        found = None
    if found is not None and found[3] is not None:
        # All four aggregates see the rows in one scan, in the same order.
        ids, samples, ok = (json.loads(v) for v in found[:3])
        return {"row_id": ids, "sample": samples, "ok": [bool(v) for v in ok],
                "scores": _decode_shared(found[3].split("\x1e"))}
    cols: dict[str, list[Any]] = {"row_id": [], "sample": [], "ok": [], "scores": []}
    for r in conn.execute("SELECT row_id, sample, error IS NULL, scores FROM rows "
                          "WHERE run_id = ? AND kind = ?", (run_id, kind)):
        cols["row_id"].append(r[0])
        cols["sample"].append(r[1])
        cols["ok"].append(bool(r[2]))
        cols["scores"].append(None if r[3] is None else json.loads(r[3]))
    return cols


def _decode_shared(texts: list[str]) -> list[Any]:
    """The JSON values of `texts`, each distinct text decoded once (scores repeat a lot:
    rows with the same scores share one dict)."""
    codes: dict[str, int] = {}
    index = [codes.setdefault(t, len(codes)) for t in texts]
    decoded = json.loads("[" + ",".join(codes) + "]")
    return [decoded[i] for i in index]
