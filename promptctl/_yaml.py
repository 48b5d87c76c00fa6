"""Safe YAML loading that remembers the line of every key and list item, and gives
plain JSON data only.

Errors about a prompt or config file must name the line, and PyYAML's plain
`safe_load` forgets positions; composing the node tree first keeps them.

What a YAML file holds is sent to models as JSON, stored as JSON and compared
with JSON answers, so `validate` must refuse what `eval` could not carry: only
text, finite numbers, true/false, null, lists and mappings with text keys come
out. A date (`expected: 2024-01-01`) stays the text as written: JSON has no
dates, and the same row in a JSONL eval set is that text, so both formats mean
the same thing. A key is the text as written (`1: a` has the key "1", as a JSON
object would). Binary data, sets, ordered maps, non-finite numbers, numbers too
large for a 64-bit float, keys that are lists or mappings, aliases that refer to
themselves or expand a small file into a huge one, and nesting deeper than
MAX_DEPTH are errors naming the line.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from promptctl.errors import InputError
from promptctl.files import MAX_CONFIG_BYTES, quote, read_file

# Nesting of lists and mappings in YAML and JSON data (prompt files, eval sets, config):
# real data nests a few levels; PyYAML and the code walking the data recurse per level.
MAX_DEPTH = 100
# Values that aliases may add to a document beyond the ones written out.
MAX_ALIAS_EXPANSION = 100_000
# Characters of a number: a longer one is not a 64-bit float, and Python reads integers of
# more than 4,300 digits only with an error.
MAX_NUMBER_CHARS = 400

PathKey = tuple[str | int, ...]


@dataclass
class LineMap:
    """1-based line numbers of the nodes of a YAML document, by key path.

    `lines` holds the line of a mapping key (or of a list item); `values`
    holds, for scalar values, the line where the value's text starts and its
    style (`|` and `>` are block scalars whose text starts on the next line).
    """

    lines: dict[PathKey, int] = field(default_factory=dict)
    values: dict[PathKey, tuple[int, str | None]] = field(default_factory=dict)

    def line(self, *path: str | int) -> int | None:
        """Line of the deepest known node along `path`."""
        key: PathKey = tuple(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), None)

    def text_line(self, *path: str | int) -> int | None:
        """Line of the first line of text of the scalar at `path` (after a `|` or `>`)."""
        found = self.values.get(tuple(path))
        if found is None:
            return self.line(*path)
        line, style = found
        return line + 1 if style in ("|", ">") else line

    def style(self, *path: str | int) -> str | None:
        """YAML style of the scalar at `path`: None (plain), `'`, `"`, `|` or `>`."""
        found = self.values.get(tuple(path))
        return found[1] if found is not None else None


def check_number(value: Any, source: Path | str, line: int | None, text: str | None = None) -> Any:
    """A number from a data file, if JSON and a 64-bit float can hold it; else an error."""
    if isinstance(value, float) and not math.isfinite(value):
        written = quote(text, 20) if text is not None else repr(value)
        raise InputError(f"{written} is not a finite number: values must be JSON numbers",
                         file=source, line=line,
                         fix="write a finite number, or quote it to keep it as text")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > sys.float_info.max:
        raise InputError(f"a number of {len(str(abs(value))):,} digits is too large",
                         file=source, line=line,
                         fix="numbers must fit a 64-bit float (up to about 1.8e308): quote it "
                         "to keep it as text")
    return value


def number_too_long(text: str, source: Path | str, line: int | None) -> InputError:
    """The error for a number written with more than MAX_NUMBER_CHARS characters."""
    return InputError(f"a number written with {len(text):,} characters is too large",
                      file=source, line=line,
                      fix="numbers must fit a 64-bit float (up to about 1.8e308): quote it to "
                      "keep it as text")


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


# libyaml's parser and composer when PyYAML has them (several times faster); the
# constructor, which decides what data comes out, is Python either way.
_Base: Any = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader


class _Loader(_Base):  # type: ignore[misc]
    """SafeLoader that builds JSON data only and refuses data nested deeper than MAX_DEPTH."""

    def __init__(self, text: str, source: Path | str) -> None:
        super().__init__(text)
        self.source = source
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        # The pure-Python composer recurses once per level: stop long before Python's
        # recursion limit (libyaml's is checked by _check_depth first).
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise InputError(f"data nested more than {MAX_DEPTH} levels deep", file=self.source,
                                 line=mark.line + 1, fix="nest lists and mappings less deeply")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):
            return dict(super().construct_mapping(node, deep=deep))
        self.flatten_mapping(node)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise InputError("a key is a list or a mapping: keys must be text",
                                 file=self.source, line=_line(key_node),
                                 fix="write a plain key (name: value)")
            # As written: JSON keys are text, and `1:`, `yes:` or `2024-01-01:` are names.
            out[key_node.value] = self.construct_object(value_node, deep=deep)
        return out

    def _refuse(self, node: Any, what: str, fix: str) -> Any:
        raise InputError(f"{what}: values must be JSON data (text, numbers, true/false, null, "
                         "lists and mappings)", file=self.source, line=_line(node), fix=fix)

    def construct_json_int(self, node: Any) -> Any:
        if len(node.value) > MAX_NUMBER_CHARS:
            raise number_too_long(node.value, self.source, _line(node))
        return check_number(self.construct_yaml_int(node), self.source, _line(node), node.value)

    def construct_json_float(self, node: Any) -> Any:
        if len(node.value) > MAX_NUMBER_CHARS:
            raise number_too_long(node.value, self.source, _line(node))
        return check_number(self.construct_yaml_float(node), self.source, _line(node), node.value)

    def construct_as_written(self, node: Any) -> Any:
        return str(node.value)

    def construct_binary(self, node: Any) -> Any:
        return self._refuse(node, "binary data (!!binary)",
                            "write the data as text (for example base64, without the !!binary tag)")

    def construct_set(self, node: Any) -> Any:
        return self._refuse(node, "a set (!!set)", "write a list instead")

    def construct_ordered(self, node: Any) -> Any:
        return self._refuse(node, f"an ordered mapping ({node.tag.rsplit(':', 1)[-1]})",
                            "write a plain mapping (its order is kept) or a list of mappings")


_TAG = "tag:yaml.org,2002:"
_Loader.add_constructor(_TAG + "int", _Loader.construct_json_int)
_Loader.add_constructor(_TAG + "float", _Loader.construct_json_float)
_Loader.add_constructor(_TAG + "timestamp", _Loader.construct_as_written)
_Loader.add_constructor(_TAG + "binary", _Loader.construct_binary)
_Loader.add_constructor(_TAG + "set", _Loader.construct_set)
_Loader.add_constructor(_TAG + "omap", _Loader.construct_ordered)
_Loader.add_constructor(_TAG + "pairs", _Loader.construct_ordered)


@dataclass
class _Walk:
    source: Path | str
    lines: LineMap
    sizes: dict[int, int] = field(default_factory=dict)   # expanded size of each collection
    ancestors: set[int] = field(default_factory=set)
    written: int = 0                                       # values as written in the file
    alias_line: int | None = None


def _walk(node: yaml.Node, path: PathKey, walk: _Walk) -> int:
    """Record lines, refuse duplicate keys and recursive aliases; the number of values
    `node` stands for once every alias is expanded."""
    lines = walk.lines
    lines.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.ScalarNode):
        lines.values[path] = (node.start_mark.line + 1, node.style or None)  # libyaml: ''
        walk.written += 1
        return 1
    key = id(node)
    if key in walk.ancestors:
        raise InputError("an alias refers to a list or mapping that contains it (recursive data)",
                         file=walk.source, line=lines.line(*path),
                         fix="JSON data cannot contain itself: write the data out")
    if key in walk.sizes:
        # An alias: its anchor's node, already walked once.
        if walk.alias_line is None:
            walk.alias_line = lines.line(*path)
        return walk.sizes[key]
    walk.written += 1
    walk.ancestors.add(key)
    size = 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                name = str(key_node.value)
                line = key_node.start_mark.line + 1
                # PyYAML keeps the last of two equal keys without a word; a
                # repeated `messages:` or `expected:` is a mistake worth naming.
                if name in seen and key_node.tag != "tag:yaml.org,2002:merge":
                    raise InputError(f"duplicate key {quote(name)} (first at line {seen[name]})",
                                     file=walk.source, line=line,
                                     fix="remove one of them: a key may appear once per mapping")
                seen[name] = line
                sub = (*path, name)
                lines.lines[sub] = line
                size += _walk(value_node, sub, walk)
            else:
                size += _walk(key_node, path, walk) + _walk(value_node, path, walk)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            if id(item) in walk.sizes or id(item) in walk.ancestors:
                # An alias keeps no position of its own: name the list's line, not the anchor's.
                lines.lines.setdefault((*path, i), lines.lines[path])
            size += _walk(item, (*path, i), walk)
    walk.ancestors.discard(key)
    walk.sizes[key] = size
    return size


def read_bytes(path: Path, what: str = "file", *, missing_fix: str | None = None,
               max_bytes: int = MAX_CONFIG_BYTES) -> bytes:
    """Read a file named on the command line or by configuration: a regular file of a sane
    size, anywhere; the usual failures are input errors that name it."""
    return read_file(path, what=what, max_bytes=max_bytes, missing_fix=missing_fix)


def read_text(path: Path) -> str:
    """Read a UTF-8 text file, turning the usual failures into input errors."""
    return decode_utf8(read_bytes(path), path)


def decode_utf8(data: bytes, path: Path | str) -> str:
    """Decode bytes as UTF-8 (a BOM is tolerated), naming the line of the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            file=path,
            line=line,
            fix="save the file as UTF-8",
        ) from None


def _cut(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _check_depth(text: str, path: Path | str) -> None:
    """Refuse nesting deeper than MAX_DEPTH from the event stream, which the parser makes
    without recursing (libyaml's composer recurses in C, where a deep file would crash)."""
    depth = 0
    events = yaml.parse(text, Loader=_Base)
    while True:
        try:
            event = next(events, None)
        except yaml.MarkedYAMLError as exc:
            if "nesting depth" in str(exc.problem):  # libyaml's own limit, met while scanning
                raise InputError(f"data nested more than {MAX_DEPTH} levels deep", file=path,
                                 line=exc.problem_mark.line + 1 if exc.problem_mark else None,
                                 fix="nest lists and mappings less deeply") from None
            raise
        if event is None:
            break
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise InputError(f"data nested more than {MAX_DEPTH} levels deep", file=path,
                                 line=event.start_mark.line + 1 if event.start_mark else None,
                                 fix="nest lists and mappings less deeply")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def load_yaml_text(text: str, path: Path | str) -> tuple[Any, LineMap]:
    """Parse YAML safely into JSON data, returning the data and the line of every node."""
    loader = _Loader(text, path)
    try:
        if _Base is not yaml.SafeLoader:
            _check_depth(text, path)
        node = loader.get_single_node()
        if node is None:
            return None, LineMap()
        walk = _Walk(source=path, lines=LineMap())
        expanded = _walk(node, (), walk)
        if expanded - walk.written > MAX_ALIAS_EXPANSION:
            raise InputError(f"aliases expand this file to {expanded:,} values ({walk.written:,} are "
                             "written in it)", file=path, line=walk.alias_line,
                             fix=f"aliases may add at most {MAX_ALIAS_EXPANSION:,} values: write "
                             "the data out, or repeat fewer aliases")
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        if "could not determine a constructor" in problem:
            # Safe loading: a tag such as !!python/object names a Python
            # constructor, which is exactly what must never run.
            raise InputError(f"YAML tag not allowed: {_cut(problem)}", file=path, line=line,
                             fix="remove the tag: files are read as plain YAML "
                             "(mappings, lists, strings, numbers)") from None
        raise InputError(
            f"malformed YAML: {_cut(problem)}",
            file=path,
            line=line,
            fix="fix the YAML syntax at that line (check indentation, quotes and colons)",
        ) from None
    except yaml.YAMLError as exc:
        raise InputError(f"malformed YAML: {_cut(str(exc))}", file=path,
                         fix="fix the YAML syntax") from None
    finally:
        loader.dispose()
    return data, walk.lines


def load_yaml_file(path: Path) -> tuple[Any, LineMap]:
    """Read and parse a YAML file."""
    return load_yaml_text(read_text(path), path)
