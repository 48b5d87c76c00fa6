"""`promptctl store check`: every run and row a read would leave out, and why.

Reads leave a malformed run or row out with a warning (see `Store.on_malformed`); this
reads the whole store the same way and lists all of them at once, with the runs whose id
is only the start of other ids (`show` cannot name such a run on its own).
"""

from __future__ import annotations

from dataclasses import dataclass

from promptctl.runs import BadRun
from promptctl.store.base import Store, is_run_id


@dataclass(frozen=True)
class StoreCheck:
    """What `check_store` read (runs, rows) and what it found wrong, by run then row."""

    store: str
    runs: int
    rows: int
    malformed: tuple[BadRun, ...]

    def to_json(self) -> dict[str, object]:
        return {"store": self.store, "runs": self.runs, "rows": self.rows,
                "malformed": [{"run": p.run_id, "row": p.row, "problem": p.problem}
                              for p in self.malformed]}


def check_store(store: Store) -> StoreCheck:
    """Read every run and every row of `store` as commands read them."""
    found: list[BadRun] = []
    reporter = store.on_malformed
    store.on_malformed = found.append
    try:
        good = store.list_runs(columns=("id",))
        # A malformed run's rows are read too: a repaired run needs them whole.
        ids = sorted({r["id"] for r in good} | {p.run_id for p in found})
        rows = 0
        for run_id in ids:
            for _ in store.iter_rows(run_id):
                rows += 1
    finally:
        store.on_malformed = reporter
    for shorter, longer in zip(ids, ids[1:], strict=False):
        if longer.startswith(shorter) and not is_run_id(shorter):
            found.append(BadRun(shorter, f"its id is the start of run {longer}'s id, so "
                                f"`promptctl show {shorter}` is ambiguous"))
    found.sort(key=lambda p: (p.run_id, p.row or ""))
    return StoreCheck(store.location, len(ids), rows, tuple(found))
