"""Safe YAML loading that remembers the line of every key and list item.

Errors about a prompt or config file must name the line, and PyYAML's plain
`safe_load` forgets positions; composing the node tree first keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from promptctl.errors import InputError

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


def _walk(node: yaml.Node, path: PathKey, lines: LineMap, source: Path | str,
          seen_nodes: set[int]) -> None:
    lines.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.CollectionNode):
        # An alias shares its anchor's node: walk it once, so a recursive
        # anchor or a "billion laughs" file cannot make this loop forever.
        if id(node) in seen_nodes:
            return
        seen_nodes.add(id(node))
    if isinstance(node, yaml.ScalarNode):
        lines.values[path] = (node.start_mark.line + 1, node.style)
    elif isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                # PyYAML keeps the last of two equal keys without a word; a
                # repeated `messages:` or `expected:` is a mistake worth naming.
                if key in seen and key_node.tag != "tag:yaml.org,2002:merge":
                    raise InputError(f"duplicate key {key!r} (first at line {seen[key]})",
                                     file=source, line=line,
                                     fix="remove one of them: a key may appear once per mapping")
                seen[key] = line
                sub = (*path, key)
                lines.lines[sub] = line
                _walk(value_node, sub, lines, source, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), lines, source, seen_nodes)


def read_bytes(path: Path, what: str = "file", *, missing_fix: str | None = None,
               directory_fix: str = "name a file") -> bytes:
    """Read a file, turning the usual failures into input errors that name it."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} not found", file=path,
                         fix=missing_fix or "check the path (relative paths are from the current "
                         "directory)") from None
    except IsADirectoryError:
        raise InputError(f"{what} path is a directory", file=path, fix=directory_fix) from None
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror}", file=path,
                         fix="check its permissions") from None


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


def load_yaml_text(text: str, path: Path | str) -> tuple[Any, LineMap]:
    """Parse YAML safely, returning the data and the line of every node."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            return None, LineMap()
        loader = yaml.SafeLoader(text)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        if "could not determine a constructor" in problem:
            # Safe loading: a tag such as !!python/object names a Python
            # constructor, which is exactly what must never run.
            raise InputError(f"YAML tag not allowed: {problem}", file=path, line=line,
                             fix="remove the tag: files are read as plain YAML "
                             "(mappings, lists, strings, numbers)") from None
        raise InputError(
            f"malformed YAML: {problem}",
            file=path,
            line=line,
            fix="fix the YAML syntax at that line (check indentation, quotes and colons)",
        ) from None
    except yaml.YAMLError as exc:
        raise InputError(f"malformed YAML: {exc}", file=path, fix="fix the YAML syntax") from None
    lines = LineMap()
    _walk(node, (), lines, path, set())
    return data, lines


def load_yaml_file(path: Path) -> tuple[Any, LineMap]:
    """Read and parse a YAML file."""
    return load_yaml_text(read_text(path), path)
