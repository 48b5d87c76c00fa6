"""Eval sets: JSON Lines, YAML or CSV rows, each error naming its file and line."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptctl._yaml import (
    MAX_DEPTH,
    MAX_NUMBER_CHARS,
    check_number,
    decode_utf8,
    load_yaml_text,
    number_too_long,
)
from promptctl.errors import InputError, did_you_mean
from promptctl.files import (
    MAX_EVALSET_BYTES,
    MAX_YAML_EVALSET_BYTES,
    Reference,
    quote,
    read_file,
)

ROW_KEYS = ("id", "input", "expected", "pattern", "metadata", "steps", "should_run",
            "expected_tools", "tools_order")
SUFFIXES = (".jsonl", ".yaml", ".yml", ".csv")


class _Missing:
    """Marks a row with no `expected` (None is a legitimate expected value)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


@dataclass(frozen=True, slots=True)
class Row:
    """One eval case (or few-shot example): input variables and the expected answer."""

    id: str
    input: dict[str, Any]
    expected: Any = MISSING
    line: int | None = None
    pattern: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # Pipelines: the expected answer of some steps, and whether conditional steps should run.
    steps: dict[str, Any] | None = None
    should_run: dict[str, Any] | None = None
    # Agents: the tools the row expects to be called, and whether in that order ("strict").
    expected_tools: tuple[str, ...] | None = None
    tools_order: str | None = None

    @property
    def has_expected(self) -> bool:
        return self.expected is not MISSING

    def to_dict(self) -> dict[str, Any]:
        """Plain data as in an eval set file."""
        out: dict[str, Any] = {"id": self.id, "input": self.input}
        if self.has_expected:
            out["expected"] = self.expected
        if self.pattern is not None:
            out["pattern"] = self.pattern
        if self.metadata:
            out["metadata"] = self.metadata
        if self.steps is not None:
            out["steps"] = self.steps
        if self.should_run is not None:
            out["should_run"] = self.should_run
        if self.expected_tools is not None:
            out["expected_tools"] = list(self.expected_tools)
        if self.tools_order is not None:
            out["tools_order"] = self.tools_order
        return out


class EvalSet:
    """A validated eval set and the sha256 of its bytes (its version).

    A JSONL or CSV set of more than KEEP_ROWS rows keeps its text and parses rows again
    on each iteration, so a large set is held as its text (about a tenth of the memory
    of parsed rows), not as Row objects. It was fully validated when loaded."""

    def __init__(self, path: Path, version: str, rows: Sequence[Row] = (), *,
                 text: str | None = None, count: int = 0) -> None:
        self.path = path
        self.version = version
        self._rows = tuple(rows) if text is None else None
        self._text = text
        self._count = len(self._rows) if self._rows is not None else count

    @property
    def rows(self) -> tuple[Row, ...]:
        """Every row, parsed (iterate the set instead to parse one row at a time)."""
        return self._rows if self._rows is not None else tuple(self)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Row]:
        if self._rows is not None:
            return iter(self._rows)
        return _parse(self._text or "", self.path)


def _bad_name(name: Any) -> str:
    """A name that is not an identifier, shown only up to its first bad character: a
    header line read by mistake (KEY=secret) is not echoed."""
    if not isinstance(name, str):
        return f"of type {type(name).__name__}"
    if name == "":
        return "'' (empty)"
    good = 0
    for i, char in enumerate(name[:41]):
        if not (char if i == 0 else "a" + char).isidentifier():
            break
        good += 1
    if good == 0:
        return "starting with a character that cannot start a name"
    if good > 40:
        return f"{quote(name)} (a character after the 40th is not a letter, digit or underscore)"
    return f"{quote(name[:good])}… (character {good + 1} is not a letter, digit or underscore)"


# A UTF-16 surrogate code point: JSON and YAML escapes (\\udc80) can make one that is not
# half of a pair, which no UTF-8 writer (a request, the store, a report) can encode.
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_data(raw: Any, path: Path | str, line: int | None, what: str) -> None:
    """The one rule for what a row (or a few-shot example) may hold, whatever the format it
    was read from: text that is valid Unicode (no lone surrogate), and numbers a 64-bit
    float can hold. InputError names the file, the line and the fix."""
    stack = [raw]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            found = _SURROGATE.search(v)
            if found is not None:
                raise InputError(f"{what} holds a lone surrogate (U+{ord(found.group()):04X}), "
                                 "which is not text: it cannot be sent, stored or shown",
                                 file=path, line=line,
                                 fix="write the character itself (the file is UTF-8), or escape a "
                                 "character beyond U+FFFF as a pair (\\ud83d\\ude00 is one emoji); "
                                 "a lone \\udXXX escape is not a character")
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            stack.extend(v)
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise InputError(f"{what} holds {v!r}, which is not a finite number: values must "
                                 "be JSON numbers", file=path, line=line,
                                 fix="write a finite number, or quote it to keep it as text")
        elif isinstance(v, int) and not isinstance(v, bool) and abs(v) > sys.float_info.max:
            digits = v.bit_length() * 30103 // 100000 + 1  # never str(): it may be over the limit
            raise InputError(f"{what} holds a number of about {digits:,} digits, too large",
                             file=path, line=line,
                             fix="numbers must fit a 64-bit float (up to about 1.8e308): quote it "
                             "to keep it as text")


def make_row(raw: Any, number: int, path: Path | str, line: int | None, what: str = "row") -> Row:
    """Validate one raw row mapping; `number` is its 1-based position (the default id).

    Every eval set row (JSONL, YAML, CSV) and every few-shot example passes here, on every
    read: `validate`, `eval`, `--dry-run` and `check` accept and refuse the same rows."""
    check_data(raw, path, line, f"{what} {number}")
    if not isinstance(raw, dict):
        raise InputError(f"{what} {number} must be a mapping with input (and expected), "
                         f"not {type(raw).__name__}", file=path, line=line,
                         fix='write it as {"id": "r1", "input": {...}, "expected": ...}')
    for key in raw:
        if key not in ROW_KEYS:
            raise InputError(f"unknown key {quote(key)} in {what} {number}", file=path, line=line,
                             fix=f"{did_you_mean(key, ROW_KEYS)}use only {', '.join(ROW_KEYS)}; "
                             "input variables go under input")
    if "input" not in raw:
        raise InputError(f"{what} {number} has no input", file=path, line=line,
                         fix="add input: a mapping of template variables")
    inputs = raw["input"]
    if not isinstance(inputs, dict):
        raise InputError(f"input of {what} {number} must be a mapping of variable names to values",
                         file=path, line=line, fix='e.g. "input": {"text": "..."}')
    for name in inputs:
        if not isinstance(name, str) or not name.isidentifier():
            raise InputError(f"input variable {_bad_name(name)} of {what} {number} is not a valid name",
                             file=path, line=line, fix="use letters, digits and underscores")
        if name == "examples":
            raise InputError(f"input variable 'examples' of {what} {number} clashes with the "
                             "few-shot examples", file=path, line=line, fix="rename the variable")
    row_id = raw.get("id", number)
    if isinstance(row_id, bool) or not isinstance(row_id, str | int) or str(row_id) == "":
        raise InputError(f"id of {what} {number} must be a non-empty string or integer",
                         file=path, line=line, fix="give each row a unique id such as r1")
    pattern = raw.get("pattern")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise InputError(f"pattern of {what} {number} must be a string", file=path, line=line,
                             fix="quote the regular expression")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise InputError(f"pattern of {what} {number} is not a valid regular expression: "
                             f"{str(exc)[:100]}",
                             file=path, line=line, fix="fix the regular expression") from None
    metadata = raw.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise InputError(f"metadata of {what} {number} must be a mapping", file=path, line=line,
                         fix="write metadata as key: value pairs")
    for key in ("steps", "should_run"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise InputError(f"{key} of {what} {number} must map step ids to values", file=path,
                             line=line, fix='e.g. "steps": {"route": "billing"}')
    expected_tools = raw.get("expected_tools")
    if expected_tools is not None and (not isinstance(expected_tools, list) or not all(
            isinstance(t, str) for t in expected_tools)):
        raise InputError(f"expected_tools of {what} {number} must be a list of tool names",
                         file=path, line=line, fix='e.g. "expected_tools": ["add", "multiply"]')
    tools_order = raw.get("tools_order")
    if tools_order is not None and tools_order not in ("strict", "any"):
        raise InputError(f"tools_order of {what} {number} must be strict or any, not "
                         f"{quote(tools_order)}", file=path, line=line,
                         fix='"tools_order": "strict" (the expected tools in that order)')
    return Row(id=str(row_id), input=dict(inputs), expected=raw.get("expected", MISSING),
               line=line, pattern=pattern, metadata=metadata, steps=raw.get("steps"),
               should_run=raw.get("should_run"),
               expected_tools=None if expected_tools is None else tuple(expected_tools),
               tools_order=tools_order)


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) without building a list of every line.

    Splits on "\n" only: str.splitlines() also breaks on U+2028, U+0085 and other
    characters that JSON strings may hold unescaped, which would cut a valid row
    in two and shift every later line number."""
    start, lineno = 0, 1
    while start <= len(text):
        end = text.find("\n", start)
        if end < 0:
            end = len(text)
        yield lineno, text[start:end]
        start, lineno = end + 1, lineno + 1


class _BadJSON(Exception):
    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message, self.fix = message, fix


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _BadJSON(f"duplicate key {quote(key)} in one object",
                               "remove one of them: a key may appear once per object (YAML sets "
                               "refuse them too)")
            seen.add(key)
    return obj


def _json_constant(name: str) -> Any:
    raise _BadJSON(f"{name} is not a finite number: values must be JSON numbers",
                   "write a finite number, or quote it to keep it as text")


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadJSON(f"the number {quote(text, 20)} is too large",
                       "numbers must fit a 64-bit float (up to about 1.8e308): quote it to keep it "
                       "as text")
    return value


# A run of digits this long may be an integer larger than a 64-bit float: worth a closer look.
_LONG_DIGITS = re.compile(r"[0-9]{309}")
_DIGITS = re.compile(r"[0-9]+")


def _check_json_value(value: Any, path: Path, lineno: int) -> None:
    """Refuse nesting deeper than MAX_DEPTH and integers a 64-bit float cannot hold."""
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InputError(f"data nested more than {MAX_DEPTH} levels deep", file=path,
                             line=lineno, fix="nest lists and objects less deeply")
        if isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)
        elif isinstance(v, int):
            check_number(v, path, lineno)


def _jsonl_rows(text: str, path: Path) -> Iterator[tuple[Any, int]]:
    for lineno, line in _lines(text):
        if not line.strip():
            continue
        try:
            value = json.loads(line, object_pairs_hook=_json_object, parse_float=_json_float,
                               parse_constant=_json_constant)
        except json.JSONDecodeError as exc:
            raise InputError(f"malformed JSON: {exc.msg} (column {exc.colno})", file=path,
                             line=lineno, fix="each line must be one complete JSON object") from None
        except _BadJSON as exc:
            raise InputError(exc.message, file=path, line=lineno, fix=exc.fix) from None
        except RecursionError:
            raise InputError(f"data nested more than {MAX_DEPTH} levels deep", file=path,
                             line=lineno, fix="nest lists and objects less deeply") from None
        except ValueError:
            # int() of a number over Python's digit limit (4,300 digits)
            longest = max((m.group() for m in _DIGITS.finditer(line)), key=len,
                          default="9" * (MAX_NUMBER_CHARS + 1))
            raise number_too_long(longest, path, lineno) from None
        # Cheap tests first: most rows can be neither too deep nor hold a huge integer.
        if line.count("[") + line.count("{") > MAX_DEPTH or _LONG_DIGITS.search(line):
            _check_json_value(value, path, lineno)
        yield value, lineno


def _yaml_rows(text: str, path: Path) -> Iterator[tuple[Any, int]]:
    data, lines = load_yaml_text(text, path)
    if data is None:
        return
    if not isinstance(data, list):
        raise InputError("a YAML eval set must be a list of rows", file=path, line=lines.line(),
                         fix="start each row with '- id: ...' at the top level")
    for i, raw in enumerate(data):
        yield raw, lines.line(i) or 1


_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _csv_value(value: str, path: Path, line: int) -> Any:
    """CSV cells are text; an `expected` that reads as a number is compared as one.

    Only plain decimal notation counts: Python's int()/float() would also take
    "nan", "inf", "1_000" and non-ASCII digits, which are labels more often
    than numbers.
    """
    stripped = value.strip()
    if not _NUMBER.fullmatch(stripped):
        return value
    if len(stripped) > MAX_NUMBER_CHARS:
        raise number_too_long(stripped, path, line)
    if stripped.lstrip("+-").isdigit():
        return check_number(int(stripped), path, line)
    return check_number(float(stripped), path, line, stripped)


_CSV_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def _csv_rows(text: str, path: Path) -> Iterator[tuple[Any, int]]:
    # strict: an unclosed quote is an error, not a field that runs to the end of the file.
    # Lines as io.StringIO(text, newline="") gives them, without its copy of the whole text
    # (four bytes a character): this runs on every pass over a large set.
    lines = (m.group() for m in _CSV_LINE.finditer(text))
    # Long documents are legitimate inputs: a field may be as long as the file may be
    # (the csv module's default limit is 128 KiB).
    if csv.field_size_limit() < MAX_EVALSET_BYTES:
        csv.field_size_limit(MAX_EVALSET_BYTES)
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise InputError(f"malformed CSV header: {exc}", file=path, line=1, fix="fix the header") from None
    header = [h.strip() for h in header]
    for name in header:
        if not name:
            raise InputError("empty column name in the header", file=path, line=1,
                             fix="name every column")
    for i, name in enumerate(header):
        if name in header[:i]:
            raise InputError(f"duplicate column {quote(name)} in the header", file=path, line=1,
                             fix="give every column a distinct name")
    # A quoted field may span lines, so a row starts on the line after the
    # last line of the previous row, not at its index.
    start = reader.line_num + 1
    while True:
        line = start
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise InputError("a quoted field is never closed", file=path, line=line,
                                 fix='close the quote ("), and write a quote inside a quoted field '
                                 'as two ("")') from None
            raise InputError(f"malformed CSV: {exc}", file=path, line=reader.line_num,
                             fix='check the quoting on that line: a quote inside a field is '
                             'written as two ("") in a quoted field') from None
        start = reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise InputError(f"{len(cells)} fields where the header has {len(header)}",
                             file=path, line=line,
                             fix="quote fields that contain commas; every row needs every column")
        raw: dict[str, Any] = {"input": {}}
        for name, cell in zip(header, cells, strict=True):
            if name in ("id", "expected", "pattern"):
                # An empty cell is how CSV leaves a value out: no id (the row
                # number is used), no expected answer, no pattern.
                if cell.strip() == "":
                    continue
                raw[name] = _csv_value(cell, path, line) if name == "expected" else cell
            else:
                raw["input"][name] = cell
        yield raw, line


def load_evalset_bytes(data: bytes, path: Path) -> EvalSet:
    """Parse an eval set from bytes (a file, or a file as it was at a git ref)."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"unknown eval set format {quote(suffix or '(no extension)', 20)}", file=path,
                         fix="use .jsonl, .yaml, .yml or .csv")
    if suffix in (".yaml", ".yml") and len(data) > MAX_YAML_EVALSET_BYTES:
        raise InputError(f"a YAML eval set is larger than {MAX_YAML_EVALSET_BYTES // 2**20} MiB",
                         file=path, fix="split it, or write it as JSON Lines (.jsonl), which is "
                         "read one row at a time")
    text = decode_utf8(data, path)
    version = hashlib.sha256(data).hexdigest()
    streamable = suffix in _STREAMED
    rows: list[Row] = []
    seen: dict[str, int | None] = {}
    for row in _parse(text, path):
        if row.id in seen:
            first = seen[row.id]
            raise InputError(f"duplicate row id {quote(row.id)} (first at line {first})", file=path,
                             line=row.line, fix="give every row a unique id")
        seen[row.id] = row.line
        if not streamable or len(rows) < KEEP_ROWS:
            rows.append(row)
    if not seen:
        raise InputError("the eval set is empty", file=path, fix="add at least one row")
    if len(seen) > len(rows):
        return EvalSet(path=path, version=version, text=text, count=len(seen))
    return EvalSet(path=path, version=version, rows=rows)


# Up to this many rows are kept parsed (each pass over them is then free); a larger JSONL
# or CSV set is parsed again on each pass, so memory stays flat as sets grow.
KEEP_ROWS = 5000
# Formats read line by line, whose rows can be parsed again on each pass rather than kept.
_STREAMED = {".jsonl": _jsonl_rows, ".csv": _csv_rows}


def _parse(text: str, path: Path) -> Iterator[Row]:
    reader = _STREAMED.get(path.suffix.lower(), _yaml_rows)
    for number, (raw, line) in enumerate(reader(text, path), start=1):
        yield make_row(raw, number, path, line)


def load_evalset(path: str | Path, *, root: Path | None = None,
                 ref: Reference | None = None) -> EvalSet:
    """Load and validate an eval set; nothing is usable until every row is valid.

    A path from the command line may point anywhere; one a project file names
    (`ref`) must lie inside the project `root` (see promptctl.files). Either way
    it must be a regular file of a sane size.
    """
    p = Path(path)
    limit = MAX_YAML_EVALSET_BYTES if p.suffix.lower() in (".yaml", ".yml") else MAX_EVALSET_BYTES
    data = read_file(p, what="eval set", max_bytes=limit, root=root, ref=ref,
                     missing_fix=None if ref is not None else "check the path, or pass --evalset FILE")
    return load_evalset_bytes(data, p)
