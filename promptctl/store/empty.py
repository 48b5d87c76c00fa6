"""The store a read-only command sees before anything was stored: empty, and never created."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any, NoReturn

from promptctl.errors import InputError
from promptctl.store.base import (
    AnsweredColumn,
    CacheStats,
    KindTotals,
    RowRecord,
    RunRecord,
    ScoreColumns,
    Store,
    StoreError,
    zero_totals,
)


class EmptyStore(Store):
    """A store that does not exist yet: every read finds nothing, every write is refused.

    `runs`, `show`, `history` and `cache stats` in a fresh project say there is
    nothing yet instead of creating `.promptctl/results.db`.
    """

    def __init__(self, location: str) -> None:
        self.location = location

    def _refuse(self) -> NoReturn:
        raise StoreError("this command only reads the results store, which does not exist yet",
                         file=self.location, fix="store runs first: promptctl eval prompts/NAME.yaml")

    def migrate(self) -> list[str]:
        return []

    def create_run(self, run: RunRecord) -> None:
        self._refuse()

    def update_run(self, run_id: str, **fields: Any) -> None:
        self._refuse()

    def claim_run(self, run_id: str, owner: str, expected: str | None) -> bool:
        self._refuse()

    def release_run(self, run_id: str, owner: str) -> bool:
        return False

    def write_rows(self, rows: Sequence[RowRecord],
                   cache: Sequence[tuple[str, dict[str, Any]]] = ()) -> None:
        self._refuse()

    def add_run(self, run: RunRecord, rows: Iterable[RowRecord]) -> bool:
        self._refuse()

    def get_run(self, ref: str) -> RunRecord:
        raise InputError(f"no run {ref!r}: no runs are stored yet", file=self.location,
                         fix="store runs first: promptctl eval prompts/NAME.yaml")

    def has_run(self, run_id: str) -> bool:
        return False

    def list_runs(self, prompt: str | None = None, limit: int | None = None,
                  columns: Sequence[str] | None = None) -> list[RunRecord]:
        return []

    def iter_rows(self, run_id: str, kind: str | None = None) -> Iterator[RowRecord]:
        return iter(())

    def answered_keys(self, run_id: str) -> set[tuple[str, str, int]]:
        return set()

    def run_totals(self, run_id: str) -> dict[str, KindTotals]:
        return zero_totals()

    def iter_scores(self, run_id: str, kind: str) -> Iterator[dict[str, Any]]:
        return iter(())

    def answered_column(self, run_id: str, column: AnsweredColumn) -> list[Any]:
        return []

    def score_columns(self, run_id: str, kind: str = "eval") -> ScoreColumns:
        return ScoreColumns(row_id=[], sample=[], ok=[], scores=[])

    def rows_by_id(self, run_id: str, row_ids: Collection[str], kind: str = "eval",
                   columns: Sequence[str] | None = None) -> list[RowRecord]:
        return []

    def cache_get(self, key: str) -> dict[str, Any] | None:
        return None

    def cache_put(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        self._refuse()

    def cache_stats(self) -> CacheStats:
        return CacheStats(entries=0, response_bytes=0, oldest=None, newest=None,
                          store=f"{self.location} (not created yet)", store_bytes=0)

    def cache_clear(self, before: str | None = None) -> int:
        return 0

    def close(self) -> None:
        pass
