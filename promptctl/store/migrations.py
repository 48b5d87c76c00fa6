"""Append-only schema migrations per dialect, applied in order on every open.

Never edit or reorder a step that has shipped: add a new one at the end of each
dialect's list, under the same name in both when it means the same change.
Statements are separated by ";" (none may contain one in a literal).
"""

from __future__ import annotations

SQLITE: list[tuple[str, str]] = [
    (
        "m001_initial",
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL,
            prompt_name TEXT NOT NULL,
            prompt_path TEXT NOT NULL,
            prompt_version TEXT NOT NULL,
            prompt_source TEXT NOT NULL,
            git_commit TEXT,
            git_dirty INTEGER,
            git_branch TEXT,
            model TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            base_url TEXT,
            params TEXT NOT NULL,
            evalset_path TEXT,
            evalset_version TEXT,
            n_planned INTEGER NOT NULL,
            metrics TEXT,
            fewshot_metrics TEXT,
            summary TEXT,
            options TEXT
        );
        CREATE INDEX runs_prompt ON runs (prompt_name, created_at);
        CREATE TABLE rows (
            run_id TEXT NOT NULL REFERENCES runs (id),
            kind TEXT NOT NULL,
            position INTEGER NOT NULL,
            row_id TEXT NOT NULL,
            sample INTEGER NOT NULL DEFAULT 0,
            input TEXT NOT NULL,
            expected TEXT,
            messages TEXT NOT NULL,
            completion TEXT,
            answer TEXT,
            valid INTEGER,
            extract_error TEXT,
            scores TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            latency_ms REAL,
            response_model TEXT,
            system_fingerprint TEXT,
            error TEXT,
            cached INTEGER NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL,
            PRIMARY KEY (run_id, kind, row_id, sample)
        );
        CREATE TABLE cache (
            key TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            response TEXT NOT NULL
        );
        """,
    ),
    (
        "m002_owner_coverage_links",
        """
        ALTER TABLE runs ADD COLUMN owner TEXT;
        ALTER TABLE runs ADD COLUMN coverage TEXT;
        ALTER TABLE runs ADD COLUMN errors INTEGER;
        ALTER TABLE runs ADD COLUMN parent_run TEXT;
        ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'prompt';
        ALTER TABLE rows ADD COLUMN judges TEXT;
        ALTER TABLE rows ADD COLUMN steps TEXT;
        """,
    ),
]

# JSON columns are TEXT, as in SQLite: the exact text round-trips (jsonb would reorder keys
# and refuse \u0000), and nothing queries inside it. Timestamps are the same ISO text as
# in SQLite. Keys and ordered columns use the "C" collation: byte order, as SQLite's.
POSTGRESQL: list[tuple[str, str]] = [
    (
        "m001_initial",
        """
        CREATE TABLE runs (
            id TEXT COLLATE "C" PRIMARY KEY,
            created_at TEXT COLLATE "C" NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL,
            prompt_name TEXT COLLATE "C" NOT NULL,
            prompt_path TEXT NOT NULL,
            prompt_version TEXT NOT NULL,
            prompt_source TEXT NOT NULL,
            git_commit TEXT,
            git_dirty BOOLEAN,
            git_branch TEXT,
            model TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            base_url TEXT,
            params TEXT NOT NULL,
            evalset_path TEXT,
            evalset_version TEXT,
            n_planned BIGINT NOT NULL,
            metrics TEXT,
            fewshot_metrics TEXT,
            summary TEXT,
            options TEXT
        );
        CREATE INDEX runs_prompt ON runs (prompt_name, id);
        CREATE TABLE rows (
            run_id TEXT COLLATE "C" NOT NULL REFERENCES runs (id),
            kind TEXT COLLATE "C" NOT NULL,
            position BIGINT NOT NULL,
            row_id TEXT COLLATE "C" NOT NULL,
            sample BIGINT NOT NULL DEFAULT 0,
            input TEXT NOT NULL,
            expected TEXT,
            messages TEXT NOT NULL,
            completion TEXT,
            answer TEXT,
            valid BOOLEAN,
            extract_error TEXT,
            scores TEXT,
            prompt_tokens BIGINT,
            completion_tokens BIGINT,
            latency_ms DOUBLE PRECISION,
            response_model TEXT,
            system_fingerprint TEXT,
            error TEXT,
            cached BOOLEAN NOT NULL DEFAULT FALSE,
            attempts BIGINT NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL,
            PRIMARY KEY (run_id, kind, row_id, sample)
        );
        CREATE TABLE cache (
            key TEXT COLLATE "C" PRIMARY KEY,
            created_at TEXT COLLATE "C" NOT NULL,
            response TEXT NOT NULL
        );
        CREATE INDEX cache_created ON cache (created_at);
        """,
    ),
    (
        "m002_owner_coverage_links",
        """
        ALTER TABLE runs ADD COLUMN owner TEXT;
        ALTER TABLE runs ADD COLUMN coverage TEXT;
        ALTER TABLE runs ADD COLUMN errors BIGINT;
        ALTER TABLE runs ADD COLUMN parent_run TEXT;
        ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'prompt';
        ALTER TABLE rows ADD COLUMN judges TEXT;
        ALTER TABLE rows ADD COLUMN steps TEXT;
        """,
    ),
]

MIGRATIONS: dict[str, list[tuple[str, str]]] = {"sqlite": SQLITE, "postgresql": POSTGRESQL}
