"""PostgreSQL results store (psycopg 3): one database shared by many processes and machines.

Each process holds one connection in autocommit mode; every write that must be
atomic runs in its own transaction. Rows go in with pipelined `executemany`
(and COPY for an import), score columns are aggregated by the server, and the
cache is upserted in key order so concurrent writers cannot deadlock on it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from functools import partial
from itertools import islice
from typing import Any

import psycopg
from psycopg import errors as pgerrors

from promptctl import redact
from promptctl.runs import BadRun
from promptctl.store.base import (
    ANSWERED_COLUMNS,
    PICK_LIMIT,
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
    cached_response,
    check_run_fields,
    checked_columns,
    decode_row,
    decode_run,
    decode_shared,
    dumps,
    kind_totals,
    only_columns,
    pick_run,
    row_columns,
    utcnow,
    zero_totals,
)
from promptctl.store.migrations import POSTGRESQL
from promptctl.store.urls import public_url, register_url_secrets, scrub

_ROW_SELECT = ", ".join(ROW_COLUMNS)
_KEY = ("run_id", "kind", "row_id", "sample")
_UPSERT_ROW = (f"INSERT INTO rows ({_ROW_SELECT}) VALUES ({', '.join('%s' for _ in ROW_COLUMNS)}) "
               f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET "
               + ", ".join(f"{c} = EXCLUDED.{c}" for c in ROW_COLUMNS if c not in _KEY))
_UPSERT_FROM_COPY = (f"INSERT INTO rows ({_ROW_SELECT}) SELECT {_ROW_SELECT} FROM rows_in "
                     f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET "
                     + ", ".join(f"{c} = EXCLUDED.{c}" for c in ROW_COLUMNS if c not in _KEY))
# From this many rows on, a batch goes in through COPY.
_COPY_ROWS = 200
_UPSERT_CACHE = ("INSERT INTO cache (key, created_at, response) VALUES (%s, %s, %s) "
                 "ON CONFLICT (key) DO UPDATE SET created_at = EXCLUDED.created_at, "
                 "response = EXCLUDED.response")
_TEXT_ROW = tuple(c not in ROW_JSON and c not in ("valid", "cached") for c in ROW_COLUMNS)
# Rows read per query when a run is iterated: the connection stays free between pages.
_PAGE = 5000
_WIDE_PAGE = 50  # rows a page of iter_rows_paged: 5 MB of rows of 100 kB


class PostgresStore(Store):
    """Runs, rows and cache in a PostgreSQL database (the schema in the URL's search_path)."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.location = public_url(url)
        register_url_secrets(url)
        try:
            kwargs: dict[str, Any] = {"autocommit": True}
            params = psycopg.conninfo.conninfo_to_dict(url)
            if "connect_timeout" not in params:
                kwargs["connect_timeout"] = 10  # an unreachable host fails soon, not after minutes
            if "application_name" not in params:
                kwargs["application_name"] = "promptctl"
            self._connect_kwargs = kwargs
            self.conn = psycopg.connect(url, **kwargs)
        except (psycopg.Error, OSError) as exc:
            raise self._storage_error(exc) or StoreError(
                f"cannot connect to the PostgreSQL store: {scrub(str(exc), url)}",
                file=self.location, fix=_URL_FIX) from None
        # The password libpq used, wherever it found it (URL, PGPASSWORD, ~/.pgpass).
        redact.register(self.conn.info.password)
        if migrate:
            self.migrate()

    # -- errors ----------------------------------------------------------------------------

    def _storage_error(self, exc: Exception) -> StoreError | None:
        return storage_error(exc, self.location, url=self.url)

    # -- schema ----------------------------------------------------------------------------

    def has_schema(self) -> bool:
        """Whether promptctl's tables exist in this database (schema)."""
        row = self.conn.execute("SELECT to_regclass('_migrations') IS NOT NULL").fetchone()
        return bool(row and row[0])

    def migrate(self) -> list[str]:
        """Apply pending migrations under an advisory lock; returns the names applied now."""
        names = [name for name, _ in POSTGRESQL]
        if self.has_schema():
            applied = {r[0] for r in self.conn.execute("SELECT name FROM _migrations")}
            if applied >= set(names):
                return []  # the usual case: nothing to write, so a read-only role can open it
        done = []
        with self.conn.transaction():
            # Processes opening a new database at once: one migrates, the others wait here.
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext('promptctl.migrate.' "
                              "|| current_schema()))")
            self.conn.execute("CREATE TABLE IF NOT EXISTS _migrations "
                              "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
            applied = {r[0] for r in self.conn.execute("SELECT name FROM _migrations")}
            for name, sql in POSTGRESQL:
                if name in applied:
                    continue
                for statement in sql.split(";"):
                    if statement.strip():
                        self.conn.execute(statement.encode())
                self.conn.execute("INSERT INTO _migrations VALUES (%s, %s)", (name, utcnow()))
                done.append(name)
        return done

    # -- runs ------------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        self._insert_run(run)

    def _insert_run(self, run: RunRecord, *, unless_stored: bool = False) -> bool:
        record = _run_values(dict(run))
        cols = ", ".join(record)
        marks = ", ".join("%s" for _ in record)
        # An insert racing another of the same id waits for that transaction, then does
        # nothing if it committed.
        keep = " ON CONFLICT (id) DO NOTHING" if unless_stored else ""
        cur = self.conn.execute(f"INSERT INTO runs ({cols}) VALUES ({marks}){keep}".encode(),
                                tuple(record.values()))
        return cur.rowcount == 1

    def update_run(self, run_id: str, **fields: Any) -> None:
        record = _run_values(fields)
        sets = ", ".join(f"{k} = %s" for k in record)
        self.conn.execute(f"UPDATE runs SET {sets} WHERE id = %s".encode(),
                          (*record.values(), run_id))

    def claim_run(self, run_id: str, owner: str, expected: str | None) -> bool:
        # One UPDATE: a second writer waits on the row lock, then sees the new owner and
        # matches nothing (READ COMMITTED re-checks the WHERE on the updated row).
        cur = self.conn.execute("UPDATE runs SET owner = %s, status = 'running' "
                                "WHERE id = %s AND owner IS NOT DISTINCT FROM %s::text",
                                (owner, run_id, expected))
        return cur.rowcount == 1

    def release_run(self, run_id: str, owner: str) -> bool:
        cur = self.conn.execute("UPDATE runs SET owner = NULL WHERE id = %s AND owner = %s",
                                (run_id, owner))
        return cur.rowcount == 1

    def has_run(self, run_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM runs WHERE id = %s", (run_id,)).fetchone() is not None

    def get_run(self, ref: str) -> RunRecord:
        cur = self.conn.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE id >= %s "
                                "AND id < %s ORDER BY id LIMIT %s", (ref, ref + "\uffff", PICK_LIMIT))
        found = cur.fetchall()
        return _run_from_row(RUN_COLUMNS, found[pick_run(ref, [r[0] for r in found], self.location)])

    def list_runs(self, prompt: str | None = None, limit: int | None = None,
                  columns: Sequence[str] | None = None) -> list[RunRecord]:
        sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"
        args: list[Any] = []
        if prompt is not None:
            sql += " WHERE prompt_name = %s"
            args.append(prompt)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT %s"
            args.append(limit)
        runs = self._kept(partial(_run_from_row, RUN_COLUMNS), self.conn.execute(sql.encode(), args))
        return only_columns(runs, columns)

    # -- rows ------------------------------------------------------------------------------

    def write_rows(self, rows: Sequence[RowRecord],
                   cache: Sequence[tuple[str, dict[str, Any]]] = ()) -> None:
        """Insert (or replace, on resume) a batch of rows, and the cache entries of their
        answers, in one transaction."""
        if not rows and not cache:
            return
        with self.conn.transaction(), self.conn.cursor() as cur:
            if len(rows) >= _COPY_ROWS:
                # COPY into a scratch table, then one upsert: a third less time than
                # pipelined single-row upserts for a large batch.
                cur.execute("CREATE TEMP TABLE IF NOT EXISTS rows_in (LIKE rows) ON COMMIT DELETE ROWS")
                # One upsert cannot touch a row twice: the last of a key wins, as in SQLite.
                latest = {(r["run_id"], r["kind"], r["row_id"], r.get("sample") or 0): r for r in rows}
                with cur.copy(f"COPY rows_in ({_ROW_SELECT}) FROM STDIN".encode()) as copy:
                    for row in latest.values():
                        copy.write_row(_row_values(row))
                cur.execute(_UPSERT_FROM_COPY)
            elif rows:
                cur.executemany(_UPSERT_ROW, [_row_values(r) for r in rows])
            if cache:
                self._cache_insert(cur, cache)

    def add_run(self, run: RunRecord, rows: Iterable[RowRecord]) -> bool:
        with self.conn.transaction(), self.conn.cursor() as cur:
            if not self._insert_run(run, unless_stored=True):
                return False
            with cur.copy(f"COPY rows ({_ROW_SELECT}) FROM STDIN".encode()) as copy:
                for row in rows:
                    copy.write_row(_row_values(row))
        return True

    def iter_rows(self, run_id: str, kind: str | None = None) -> Iterator[RowRecord]:
        return self._paged_rows(run_id, kind, _PAGE)

    def iter_rows_paged(self, run_id: str, kind: str | None = None) -> Iterator[RowRecord]:
        return self._paged_rows(run_id, kind, _WIDE_PAGE)

    def _paged_rows(self, run_id: str, kind: str | None, size: int) -> Iterator[RowRecord]:
        # The order is read first (keys only), then the rows a page at a time: the connection
        # is free between pages for whatever the caller does with each row, and a run of
        # 100,000 rows is never held whole.
        sql = "SELECT kind, row_id, sample FROM rows WHERE run_id = %s"
        args: list[Any] = [run_id]
        if kind is not None:
            sql += " AND kind = %s"
            args.append(kind)
        sql += " ORDER BY kind DESC, position, sample"
        keys = self.conn.execute(sql.encode(), args).fetchall()
        it = iter(keys)
        while page := list(islice(it, size)):
            by_key = self._rows_of_keys(run_id, page)
            for key in page:
                row = by_key.get(key)
                if row is not None:  # deleted meanwhile
                    yield row

    def _rows_of_keys(self, run_id: str,
                      keys: list[tuple[str, str, int]]) -> dict[tuple[str, str, int], RowRecord]:
        cur = self.conn.execute(
            f"SELECT {_ROW_SELECT} FROM rows WHERE run_id = %s AND (kind, row_id, sample) IN "
            "(SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[]))",
            (run_id, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]))
        return {(row["kind"], row["row_id"], row["sample"]): row
                for row in self._kept(partial(_row, ROW_COLUMNS), cur)}

    def run_totals(self, run_id: str) -> dict[str, KindTotals]:
        out = zero_totals()
        for r in self.conn.execute(
                "SELECT kind, COUNT(*), COUNT(*) FILTER (WHERE error IS NOT NULL), "
                "COUNT(*) FILTER (WHERE error IS NULL AND cached), "
                "COALESCE(SUM(GREATEST(attempts - 1, 0)), 0), "
                "COALESCE(SUM(prompt_tokens) FILTER (WHERE error IS NULL), 0), "
                "COALESCE(SUM(completion_tokens) FILTER (WHERE error IS NULL), 0), "
                "COALESCE(SUM(prompt_tokens) FILTER (WHERE error IS NULL AND NOT cached), 0), "
                "COALESCE(SUM(completion_tokens) FILTER (WHERE error IS NULL AND NOT cached), 0), "
                "COUNT(*) FILTER (WHERE error IS NULL AND completion IS NULL) "
                "FROM rows WHERE run_id = %s GROUP BY kind", (run_id,)):
            out[r[0]] = kind_totals(r[1:])
        return out

    def iter_scores(self, run_id: str, kind: str) -> Iterator[dict[str, Any]]:
        found = self.conn.execute(
            "SELECT string_agg(COALESCE(scores, '{}'), chr(30) ORDER BY position, sample) "
            "FROM rows WHERE run_id = %s AND kind = %s AND error IS NULL", (run_id, kind)).fetchone()
        if found is None or found[0] is None:
            return iter(())
        # A malformed row scores nothing (`store check` names it).
        return (s if isinstance(s, dict) else {} for s in decode_shared(found[0].split("\x1e")))

    def answered_column(self, run_id: str, column: AnsweredColumn) -> list[Any]:
        if column not in ANSWERED_COLUMNS:
            raise ValueError(column)
        return [r[0] for r in self.conn.execute(
            f"SELECT {column} FROM rows WHERE run_id = %s AND error IS NULL AND {column} IS NOT NULL "
            "ORDER BY kind DESC, position, sample".encode(), (run_id,))]

    def answered_keys(self, run_id: str) -> set[tuple[str, str, int]]:
        return {(r[0], r[1], r[2]) for r in self.conn.execute(
            "SELECT kind, row_id, sample FROM rows WHERE run_id = %s AND error IS NULL", (run_id,))}

    def score_columns(self, run_id: str, kind: str = "eval") -> ScoreColumns:
        cols, bad = _score_columns(self.conn, run_id, kind)
        for problem in bad:
            self._skip(problem)
        return cols

    def score_columns_of(self, run_ids: Sequence[str], kind: str = "eval") -> list[ScoreColumns]:
        """`score_columns` of several runs, each but the first on a connection of its own in a
        thread: the server aggregates one run while this process decodes another."""
        if len(run_ids) < 2:
            return [self.score_columns(r, kind) for r in run_ids]
        from concurrent.futures import ThreadPoolExecutor

        def read(run_id: str) -> tuple[ScoreColumns, list[BadRun]]:
            with psycopg.connect(self.url, **self._connect_kwargs) as conn:
                return _score_columns(conn, run_id, kind)

        with ThreadPoolExecutor(max_workers=len(run_ids) - 1) as pool:
            others = [pool.submit(read, r) for r in run_ids[1:]]
            out = [self.score_columns(run_ids[0], kind)]
            for future in others:
                cols, bad = future.result()
                for problem in bad:
                    self._skip(problem)
                out.append(cols)
            return out

    def rows_by_id(self, run_id: str, row_ids: Collection[str], kind: str = "eval",
                   columns: Sequence[str] | None = None) -> list[RowRecord]:
        cols = row_columns(columns)
        cur = self.conn.execute(
            f"SELECT {', '.join(cols)} FROM rows WHERE run_id = %s AND kind = %s "
            "AND row_id = ANY(%s::text[]) ORDER BY position, sample".encode(),
            (run_id, kind, list(dict.fromkeys(row_ids))))
        return list(self._kept(partial(_row, cols), cur))

    # -- cache -----------------------------------------------------------------------------

    def cache_get(self, key: str) -> dict[str, Any] | None:
        r = self.conn.execute("SELECT response FROM cache WHERE key = %s", (key,)).fetchone()
        return None if r is None else cached_response(r[0])

    def cache_put(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        items = list(items)
        if items:
            with self.conn.transaction(), self.conn.cursor() as cur:
                self._cache_insert(cur, items)

    @staticmethod
    def _cache_insert(cur: psycopg.Cursor[Any], items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        now = utcnow()
        # Sorted and unique: writers that share keys lock them in the same order.
        latest = dict(items)
        cur.executemany(_UPSERT_CACHE, [(k, now, dumps(latest[k])) for k in sorted(latest)])

    def cache_stats(self) -> CacheStats:
        r = self.conn.execute("SELECT COUNT(*), COALESCE(SUM(char_length(response)), 0), "
                              "MIN(created_at), MAX(created_at) FROM cache").fetchone()
        size = self.conn.execute(
            "SELECT COALESCE(SUM(pg_total_relation_size(t)), 0) FROM unnest(ARRAY["
            "to_regclass('runs'), to_regclass('rows'), to_regclass('cache'), "
            "to_regclass('_migrations')]) AS t WHERE t IS NOT NULL").fetchone()
        assert r is not None and size is not None
        return CacheStats(entries=int(r[0]), response_bytes=int(r[1]), oldest=r[2], newest=r[3],
                          store=self.location, store_bytes=int(size[0]))

    def cache_clear(self, before: str | None = None) -> int:
        if before is None:
            cur = self.conn.execute("DELETE FROM cache")
        else:
            cur = self.conn.execute("DELETE FROM cache WHERE created_at < %s", (before,))
        return int(cur.rowcount)

    def close(self) -> None:
        self.conn.close()


def _score_columns(conn: psycopg.Connection[Any], run_id: str,
                   kind: str) -> tuple[ScoreColumns, list[BadRun]]:
    # Four aggregates over one sorted scan: four values cross the wire, not 100,000 rows.
    # chr(30) cannot occur in stored JSON (json.dumps escapes control characters).
    sql = ("SELECT array_agg(row_id), array_agg(sample), array_agg(error IS NULL), "
           "{scores} FROM (SELECT row_id, sample, error, scores FROM rows "
           "WHERE run_id = %s AND kind = %s ORDER BY row_id, sample) AS ordered")
    found = conn.execute(sql.format(scores="string_agg(COALESCE(scores, 'null'), chr(30))").encode(),
                         (run_id, kind), binary=True).fetchone()
    if found is None or found[0] is None:
        return ScoreColumns(row_id=[], sample=[], ok=[], scores=[]), []
    texts = found[3].split("\x1e")
    if len(texts) != len(found[0]):
        # Another writer stored a text holding chr(30): one array element per row instead.
        found = conn.execute(sql.format(scores="array_agg(scores)").encode(), (run_id, kind),
                             binary=True).fetchone()
        assert found is not None
        texts = [t if t is not None else "null" for t in found[3]]
    return checked_columns(run_id, kind, found[0], found[1], found[2], decode_shared(texts))


# -- records -------------------------------------------------------------------------------


def _text(value: Any) -> Any:
    # PostgreSQL text cannot hold NUL; a model that emits one loses just that character.
    return value.replace("\x00", "\ufffd") if isinstance(value, str) and "\x00" in value else value


def _run_values(fields: dict[str, Any]) -> dict[str, Any]:
    check_run_fields(fields)
    return {k: (dumps(v) if k in RUN_JSON and v is not None else _text(v)) for k, v in fields.items()}


def _run_from_row(columns: Sequence[str], values: Sequence[Any]) -> RunRecord:
    return decode_run(dict(zip(columns, values, strict=True)))


def _row_values(row: RowRecord) -> tuple[Any, ...]:
    values: list[Any] = []
    for c, text in zip(ROW_COLUMNS, _TEXT_ROW, strict=True):
        v = row.get(c)
        if v is None and c in ROW_DEFAULTS:
            v = ROW_DEFAULTS[c]
        values.append((dumps(v) if c in row else None) if c in ROW_JSON else _text(v) if text else v)
    return tuple(values)


def _row(columns: Sequence[str], values: Sequence[Any]) -> RowRecord:
    row = dict(zip(columns, values, strict=True))
    if "expected" in row:
        row["has_expected"] = values[columns.index("expected")] is not None
    return decode_row(row)


# -- errors --------------------------------------------------------------------------------

_URL_FIX = ("correct the store URL: postgresql://USER@HOST[:PORT]/DB in --store, PROMPTCTL_STORE "
            "or store: in promptctl.yaml")
_PASSWORD_FIX = ("give the password in PGPASSWORD or ~/.pgpass (hostname:port:database:username:"
                 "password), never in promptctl.yaml")
_RESUME = "then run the command again (`promptctl eval --resume RUN` finishes an interrupted run)"


def storage_error(exc: Exception, where: str, *, url: str | None = None) -> StoreError | None:
    """What a psycopg failure means for the store at `where` (its URL `url`), with the fix;
    None for a bug. No password reaches the message (`urls.scrub`)."""
    if isinstance(exc, OSError):
        return StoreUnavailable(f"cannot reach the PostgreSQL store: {scrub(str(exc), url)}",
                                file=where,
                                fix=f"start the server or check its host and port in the URL, {_RESUME}")
    if not isinstance(exc, psycopg.Error):
        return None
    raw = " ".join(str(exc).split())
    text = scrub(raw, url)  # shown; `raw` is only matched
    state = exc.sqlstate or ""
    if isinstance(exc, pgerrors.InvalidPassword | pgerrors.InvalidAuthorizationSpecification) or \
            "password authentication failed" in raw or "no password supplied" in raw:
        return StoreError(f"the PostgreSQL server refused the login ({text})", file=where,
                          fix=_PASSWORD_FIX)
    if any(s in raw for s in ("invalid port", "invalid connection option", "invalid URI",
                              "invalid integer value", "missing \"=\"", "invalid sslmode")):
        return StoreError(f"the store URL is not valid ({text})", file=where, fix=_URL_FIX)
    if isinstance(exc, pgerrors.InvalidCatalogName) or ("database" in raw and "does not exist" in raw):
        return StoreError(f"no such database on the PostgreSQL server ({text})", file=where,
                          fix="create it (createdb -h HOST -U USER DB) or correct the database "
                          "name in the store URL")
    if isinstance(exc, pgerrors.InsufficientPrivilege):
        return StoreError(f"the PostgreSQL role may not do this ({text})", file=where,
                          fix="grant the role the rights on the store's tables (GRANT SELECT, "
                          "INSERT, UPDATE, DELETE ... or ownership of the schema), or use a role "
                          "that has them")
    if isinstance(exc, pgerrors.ReadOnlySqlTransaction):
        return StoreError(f"the PostgreSQL server accepts no writes ({text})", file=where,
                          fix="point the store URL at the primary server, not a read-only standby")
    if isinstance(exc, pgerrors.InvalidSchemaName | pgerrors.UndefinedTable):
        return StoreError(f"the store's schema is missing ({text})", file=where,
                          fix="create the schema named in the URL's search_path, or drop the "
                          "search_path option")
    if state.startswith("XX"):
        return StoreError(f"the PostgreSQL server reports damaged data ({text})", file=where,
                          fix="ask the database's administrator to check and repair it (REINDEX, "
                          "a restore from backup)")
    if isinstance(exc, pgerrors.DiskFull) or state.startswith("53"):
        return StoreUnavailable(f"the PostgreSQL server is out of resources ({text})", file=where,
                                fix=f"free disk space or connections on the server, {_RESUME}")
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) or state.startswith(
            ("08", "57", "40")):
        return StoreUnavailable(f"the PostgreSQL store failed or is unreachable ({text})",
                                file=where, fix="check that the server is running and that the "
                                f"URL's host and port reach it, {_RESUME}")
    return None
