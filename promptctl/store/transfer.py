"""Moving runs between stores: export as JSONL, one run with all its rows per line, and import.

An import is idempotent by run id: a run already in the store is left as it is
(unchanged when its content is the same, reported as a conflict when not), and
each run goes in whole, in one transaction, or not at all.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, cast

from promptctl.errors import InputError
from promptctl.runs import BadRun, check_run, read_row
from promptctl.store.base import (
    ROW_COLUMNS,
    ROW_DEFAULTS,
    ROW_JSON,
    ROW_REQUIRED,
    RUN_COLUMNS,
    RUN_ID_ALPHABET,
    RUN_ID_LENGTH,
    RUN_JSON,
    RUN_REQUIRED,
    RowRecord,
    RunRecord,
    Store,
    dumps,
    is_run_id,
)

FORMAT = "promptctl-run/1"

_INT = (int,)
_TEXT = (str,)
_RUN_TYPES: dict[str, tuple[type, ...]] = {
    **{c: _TEXT for c in RUN_COLUMNS if c not in RUN_JSON},
    "git_dirty": (bool,), "n_planned": _INT, "errors": _INT,
}
_ROW_TYPES: dict[str, tuple[type, ...]] = {
    **{c: _TEXT for c in ROW_COLUMNS if c not in ROW_JSON},
    "position": _INT, "sample": _INT, "prompt_tokens": _INT, "completion_tokens": _INT,
    "attempts": _INT, "latency_ms": (int, float), "valid": (bool,), "cached": (bool,),
}
_ROW_FIELDS = tuple(c for c in ROW_COLUMNS if c != "run_id")
# What an integer column of either store holds: a signed 64-bit integer.
_INT_RANGE = range(-2**63, 2**63)
# A run of digits this long may be an integer larger than a 64-bit float: worth a closer look.
_LONG_DIGITS = re.compile(rb"[0-9]{309}")
_IMPORT_FIX = "import a file written by `promptctl store export`, unedited"


def parse_since(text: str | None) -> str | None:
    """`--since` as the ISO text stored runs are compared with: a date (2026-01-31) or a
    date and time (2026-01-31T12:00, UTC unless it names its zone)."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"--since {text!r} is not a date",
                         fix="give a date such as 2026-01-31, or a time such as 2026-01-31T12:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def export_record_rows(store: Store, run_id: str) -> Iterator[dict[str, Any]]:
    """A run's rows as exported: without `run_id`, and without `expected` where it has none."""
    for row in store.iter_rows(run_id):
        out: dict[str, Any] = {k: v for k, v in row.items() if k not in ("run_id", "has_expected")}
        if not row.get("has_expected"):
            out.pop("expected", None)
        yield out


def export_runs(store: Store, out: IO[bytes], *, prompt: str | None = None,
                since: str | None = None) -> int:
    """Write the runs (of `prompt`, created at or after `since`) as JSONL, oldest first;
    returns how many. Rows are written as they are read: a big run is never held whole."""
    count = 0
    for brief in reversed(store.list_runs(prompt, columns=("id", "created_at"))):
        if since is not None and brief["created_at"] < since:
            continue
        run = store.get_run(brief["id"])
        out.write(f'{{"format":"{FORMAT}","run":{dumps(run)},"rows":['.encode())
        for i, row in enumerate(export_record_rows(store, run["id"])):
            out.write((b"," if i else b"") + dumps(row).encode("utf-8"))
        out.write(b"]}\n")
        count += 1
    return count


@dataclass
class ImportResult:
    """What an import did: runs added (with their rows), runs already there, conflicts."""

    imported: list[str] = field(default_factory=list)
    rows: int = 0
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # (run id, what differs)


def import_runs(store: Store, lines: Iterable[bytes | str], *, source: str) -> ImportResult:
    """Add the runs of an export (`lines` of `source`) that the store does not hold yet."""
    result = ImportResult()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        run, rows = _parse(line, source, number)
        # has_run first: a run already there (the usual case on a second import) costs no
        # write; add_run settles a race with another import of the same run.
        if not store.has_run(run["id"]) and store.add_run(run, rows):
            result.imported.append(run["id"])
            result.rows += len(rows)
            continue
        differs = _difference(store, run, rows)
        if differs is None:
            result.unchanged.append(run["id"])
        else:
            result.conflicts.append((run["id"], differs))
    return result


class _NotFinite(Exception):
    pass


def _not_finite(name: str) -> Any:
    raise _NotFinite(name)


def _parse(line: bytes | str, source: str, number: int) -> tuple[RunRecord, list[RowRecord]]:
    """One line of an export as a run and its rows, checked as a read from a store checks
    them (so what goes in can be read back) before anything is written; InputError names
    the line."""
    def bad(what: str) -> InputError:
        return InputError(what, file=source, line=number, fix=_IMPORT_FIX)

    try:
        data = json.loads(line, parse_constant=_not_finite)
    except _NotFinite as exc:
        raise bad(f"holds {exc}, which is not a finite number") from None
    except RecursionError:
        raise bad("holds data nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise bad(f"not a JSON line ({exc.msg} at character {exc.pos})") from None
    except ValueError:  # int() of a number beyond Python's digit limit (4,300 digits)
        raise bad("holds a number too large to read (thousands of digits)") from None
    _check_values(data, line, bad)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise bad(f"not a promptctl run export (no \"format\": \"{FORMAT}\")")
    run, rows = data.get("run"), data.get("rows")
    if not isinstance(run, dict) or not isinstance(rows, list):
        raise bad('a line needs "run" (an object) and "rows" (a list)')
    _check(run, RUN_COLUMNS, RUN_REQUIRED, _RUN_TYPES, "run", bad)
    run_id = run["id"]
    if not is_run_id(run_id):
        # Only ids of that one length and alphabet: an imported id that is the start of
        # another (or equal to a prefix someone types) must not be able to stand for it.
        raise bad(f"run id {run_id[:40]!r} is not a run id promptctl makes ({RUN_ID_LENGTH} "
                  f"characters of {RUN_ID_ALPHABET})")
    try:
        check_run(run)
    except BadRun as exc:
        raise bad(exc.message) from None
    seen: set[tuple[str, str, int]] = set()
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise bad(f"row {i} of run {run_id} is not an object")
        if row.setdefault("run_id", run_id) != run_id:
            raise bad(f"row {i} belongs to run {str(row['run_id'])[:40]!r}, not {run_id}")
        _check(row, ROW_COLUMNS, ROW_REQUIRED, _ROW_TYPES, f"row {i} of run {run_id}", bad)
        try:
            read_row(row)
        except BadRun as exc:
            raise bad(exc.message) from None
        except RecursionError:
            raise bad(f"row {i} of run {run_id} holds data nested too deeply") from None
        key = (row["kind"], row["row_id"], row.get("sample") or 0)
        if key in seen:
            raise bad(f"run {run_id} has two rows for {key[0]} row {key[1][:40]!r} sample {key[2]}")
        seen.add(key)
    return cast(RunRecord, run), cast(list[RowRecord], rows)


def _check_values(data: Any, line: bytes | str, bad: Any) -> None:
    """Refuse what no store can hold or read back: text with a lone surrogate (UTF-8 cannot
    encode it), a float beyond 64 bits (read as infinity) and an integer too large for one."""
    try:
        # One pass over every string and number, keys included, in C.
        json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(exc.object[exc.start])
        raise bad(f"holds a lone surrogate (U+{code:04X}), which is not text: no store can hold "
                  "it") from None
    except ValueError:
        raise bad("holds a number too large for a 64-bit float (read as infinity)") from None
    if _LONG_DIGITS.search(line.encode() if isinstance(line, str) else line) is None:
        return
    stack = [data]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, int) and not isinstance(v, bool) and abs(v) > sys.float_info.max:
            raise bad(f"holds {_about(v)}, too large for a 64-bit float")


def _about(number: int) -> str:
    # Never str(number): beyond 4,300 digits Python refuses to write it.
    return f"a number of about {number.bit_length() * 30103 // 100000 + 1:,} digits"


def _check(record: dict[str, Any], columns: tuple[str, ...], required: tuple[str, ...],
           types: dict[str, tuple[type, ...]], what: str, bad: Any) -> None:
    unknown = set(record) - set(columns)
    if unknown:
        raise bad(f"{what} has unknown fields: {', '.join(sorted(k[:40] for k in unknown)[:5])}")
    missing = [c for c in required if record.get(c) is None]
    if missing:
        raise bad(f"{what} lacks {', '.join(missing)}")
    for key, value in record.items():
        allowed = types.get(key)
        if value is None or allowed is None:
            continue
        if not isinstance(value, allowed) or (bool not in allowed and isinstance(value, bool)):
            raise bad(f"{what}: {key} is a {type(value).__name__}, not a {allowed[0].__name__}")
        if isinstance(value, int) and value not in _INT_RANGE:
            raise bad(f"{what}: {key} is {_about(value)}, beyond the 64-bit integers a store holds")


def _canonical_run(run: RunRecord | dict[str, Any]) -> str:
    values = {c: run.get(c) for c in RUN_COLUMNS}
    values["kind"] = values["kind"] or "prompt"
    return json.dumps(values, sort_keys=True, ensure_ascii=False)


def _canonical_row(row: RowRecord | dict[str, Any]) -> str:
    values = {c: row.get(c) for c in _ROW_FIELDS}
    for c, default in ROW_DEFAULTS.items():
        if values[c] is None:
            values[c] = default
    values["has_expected"] = "expected" in row
    return json.dumps(values, sort_keys=True, ensure_ascii=False)


def _difference(store: Store, run: RunRecord, rows: list[RowRecord]) -> str | None:
    """What differs between an imported run and the stored run of the same id, or None."""
    stored = store.get_run(run["id"])
    if _canonical_run(stored) != _canonical_run(run):
        fields = [c for c in RUN_COLUMNS if json.dumps(stored.get(c), sort_keys=True)
                  != json.dumps(run.get(c), sort_keys=True)]
        return "run fields differ: " + ", ".join(fields[:6])
    theirs = sorted(_canonical_row(r) for r in rows)
    ours = sorted(_canonical_row(r) for r in export_record_rows(store, run["id"]))
    if len(theirs) != len(ours):
        return f"{len(ours)} rows stored, {len(theirs)} in the file"
    if theirs != ours:
        return f"{sum(a != b for a, b in zip(ours, theirs, strict=True))} row(s) differ"
    return None
