"""Append-only schema migrations, applied in order on every open.

Never edit or reorder a step that has shipped: add a new one at the end.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[str, str]] = [
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
