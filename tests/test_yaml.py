"""Safe YAML loading with line numbers (promptctl._yaml)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptctl._yaml import LineMap, decode_utf8, load_yaml_file, load_yaml_text, read_text
from promptctl.errors import InputError


def _error(text: str, name: str = "f.yaml") -> InputError:
    with pytest.raises(InputError) as info:
        load_yaml_text(text, name)
    return info.value


def test_data_and_line_of_every_key_and_item() -> None:
    text = (
        "name: x\n"          # 1
        "params:\n"          # 2
        "  temperature: 0\n"  # 3
        "messages:\n"        # 4
        "  - role: user\n"   # 5
        "    content: hi\n"  # 6
        "  - role: system\n"  # 7
        "    content: yo\n"  # 8
    )
    data, lines = load_yaml_text(text, "f.yaml")
    assert data == {"name": "x", "params": {"temperature": 0},
                    "messages": [{"role": "user", "content": "hi"},
                                 {"role": "system", "content": "yo"}]}
    assert lines.line("name") == 1
    assert lines.line("params", "temperature") == 3
    assert lines.line("messages") == 4
    assert lines.line("messages", 0) == 5
    assert lines.line("messages", 1) == 7
    assert lines.line("messages", 1, "content") == 8


def test_line_falls_back_to_the_deepest_known_node() -> None:
    _, lines = load_yaml_text("a:\n  b: 1\n", "f.yaml")
    assert lines.line("a", "b", "missing", 3) == 2
    assert lines.line("nothing") == 1  # the document itself
    assert LineMap().line("x") is None


def test_text_line_and_style_of_scalars() -> None:
    text = (
        "lit: |\n"      # 1: text starts on 2
        "  one\n"
        "fold: >\n"     # 3: text starts on 4
        "  two\n"
        "single: 'x'\n"  # 5
        "double: \"y\"\n"  # 6
        "plain: z\n"    # 7
    )
    _, lines = load_yaml_text(text, "f.yaml")
    assert (lines.style("lit"), lines.text_line("lit")) == ("|", 2)
    assert (lines.style("fold"), lines.text_line("fold")) == (">", 4)
    assert (lines.style("single"), lines.text_line("single")) == ("'", 5)
    assert (lines.style("double"), lines.text_line("double")) == ('"', 6)
    assert (lines.style("plain"), lines.text_line("plain")) == (None, 7)


def test_empty_document_is_none() -> None:
    data, lines = load_yaml_text("# only a comment\n", "f.yaml")
    assert data is None
    assert lines.line() is None


def test_bad_indentation_names_the_line() -> None:
    exc = _error("name: x\n  description: y\nmodel: m\n")
    assert exc.file == "f.yaml"
    assert exc.line == 2
    assert "malformed YAML" in exc.message
    assert exc.fix and "indentation" in exc.fix


def test_tab_indentation_names_the_line() -> None:
    exc = _error("name: x\n\tmodel: y\n")
    assert exc.line == 2
    assert exc.fix


def test_unclosed_flow_list_names_the_line() -> None:
    exc = _error("a: 1\nb: [1, 2\nc: 3\n")
    assert exc.line is not None and exc.line >= 2
    assert "malformed YAML" in exc.message


def test_several_documents_are_an_error() -> None:
    exc = _error("a: 1\n---\nb: 2\n")
    assert exc.line == 2
    assert exc.fix


def test_duplicate_key_names_both_lines() -> None:
    exc = _error("name: a\nmodel: m\nname: b\n")
    assert exc.line == 3
    assert "'name'" in exc.message and "line 1" in exc.message
    assert exc.fix and "once" in exc.fix


def test_duplicate_key_in_a_nested_mapping() -> None:
    exc = _error("output:\n  type: number\n  type: string\n")
    assert exc.line == 3
    assert "line 2" in exc.message


def test_merge_keys_are_not_duplicates() -> None:
    data, _ = load_yaml_text("base: &b {x: 1}\nuse:\n  <<: *b\n  y: 2\n", "f.yaml")
    assert data["use"] == {"x": 1, "y": 2}


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:os.mkdir",
    "!!python/object/new:os.mkdir",
    "!!python/name:os.system",
    "!!python/object:os.system",
])
def test_python_tags_are_refused_and_never_run(tag: str, tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    exc = _error(f"name: x\nmodel: {tag} [{str(target)!r}]\n")
    assert not target.exists()
    assert exc.line == 2
    assert "tag" in exc.message
    assert exc.fix and "remove the tag" in exc.fix


@pytest.mark.parametrize("text, line", [
    ("a: &x [1, *x]\n", 1),
    ("a:\n  b: &x\n    c: 1\n    d: *x\n", 4),
    ("- &x\n  - 1\n  - - *x\n", 3),
])
def test_recursive_aliases_are_refused(text: str, line: int) -> None:
    exc = _error(text)
    assert "recursive" in exc.message
    assert exc.line == line
    assert exc.fix


def _alias_bomb(levels: int) -> str:
    text = "a: &a [x, x, x, x, x, x, x, x, x]\n"
    for i in range(levels):
        prev, cur = chr(97 + i), chr(98 + i)
        text += f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
    return text


def test_alias_bomb_is_refused_before_it_is_expanded() -> None:
    # 9**9 values once expanded (as json.dumps or a template would): refused, line of the
    # first alias.
    exc = _error(_alias_bomb(8))
    assert "aliases expand" in exc.message
    assert exc.line == 2
    assert exc.fix and "aliases" in exc.fix


def test_modest_alias_reuse_is_fine() -> None:
    data, lines = load_yaml_text(_alias_bomb(3), "f.yaml")
    assert len(data["d"]) == 9 and data["d"][0][0][0] == ["x"] * 9
    assert lines.line("d") == 4


# --- plain JSON data only -------------------------------------------------------------------

def test_dates_and_timestamps_stay_the_text_as_written() -> None:
    data, _ = load_yaml_text("a: 2024-01-01\nb: 2024-01-01T10:00:00Z\nc: !!timestamp 2001-12-14\n"
                             "d: [2024-1-2 10:00:00]\n", "f.yaml")
    assert data == {"a": "2024-01-01", "b": "2024-01-01T10:00:00Z", "c": "2001-12-14",
                    "d": ["2024-1-2 10:00:00"]}


def test_keys_are_the_text_as_written() -> None:
    data, lines = load_yaml_text("1: a\nyes: b\nnull: c\n2024-01-01: d\n1.5: e\n~: f\n", "f.yaml")
    assert data == {"1": "a", "yes": "b", "null": "c", "2024-01-01": "d", "1.5": "e", "~": "f"}
    assert lines.line("2024-01-01") == 4


def test_a_number_key_and_the_same_text_key_are_duplicates() -> None:
    exc = _error("'1': a\n1: b\n")
    assert exc.line == 2 and "duplicate key '1'" in exc.message


@pytest.mark.parametrize("text, line", [
    ("a: 1\n? [x, y]\n: 2\n", 2),
    ("a:\n  ? {k: v}\n  : 2\n", 2),
])
def test_keys_that_are_lists_or_mappings_are_refused(text: str, line: int) -> None:
    exc = _error(text)
    assert "key" in exc.message and exc.line == line
    assert exc.fix


@pytest.mark.parametrize("text, needle", [
    ("a: 1\nb: !!binary aGVsbG8=\n", "binary"),
    ("a: 1\nb: !!set {x, y}\n", "set"),
    ("a: 1\nb: !!omap [x: 1, y: 2]\n", "omap"),
    ("a: 1\nb: !!pairs [x: 1, y: 2]\n", "pairs"),
])
def test_types_json_cannot_carry_are_refused(text: str, needle: str) -> None:
    exc = _error(text)
    assert needle in exc.message and "JSON" in exc.message
    assert exc.line == 2
    assert exc.fix


@pytest.mark.parametrize("value", [".nan", ".NaN", ".inf", "-.inf", "+.Inf", "1.0e+400", "-2.5e+999"])
def test_non_finite_numbers_are_refused(value: str) -> None:
    exc = _error(f"a: 1\nb:\n  - {value}\n")
    assert "finite" in exc.message
    assert exc.line == 3
    assert exc.fix and "quote" in exc.fix


@pytest.mark.parametrize("digits", [5000, 401, 320])
def test_integers_a_float_cannot_hold_are_refused(digits: int) -> None:
    # 5,000 digits is over Python's int/str limit (a ValueError when unguarded); 320 digits
    # is over the largest 64-bit float.
    exc = _error("a: 1\nb: " + "9" * digits + "\n")
    assert "too large" in exc.message
    assert exc.line == 2
    assert exc.fix and "quote" in exc.fix


def test_large_numbers_a_float_holds_and_quoted_ones_are_kept() -> None:
    data, _ = load_yaml_text("a: " + "9" * 300 + "\nb: '" + "9" * 5000 + "'\nc: 1.5e+300\n", "f.yaml")
    assert data["a"] == int("9" * 300)
    assert data["b"] == "9" * 5000
    assert data["c"] == 1.5e300


@pytest.mark.parametrize("text", [
    "a: " + "[" * 900 + "]" * 900 + "\n",
    "a: " + "{x: " * 900 + "1" + "}" * 900 + "\n",
    "".join("  " * i + "k:\n" for i in range(900)) + "  " * 900 + "v\n",
    "a: " + "[" * 200_000 + "\n",
])
def test_deep_nesting_is_refused_without_a_recursion_error(text: str) -> None:
    exc = _error(text)
    assert "nested more than 100 levels" in exc.message
    assert exc.line is not None and exc.line >= 1
    assert exc.fix


def test_nesting_within_the_limit_loads() -> None:
    data, _ = load_yaml_text("a: " + "[" * 99 + "]" * 99 + "\n", "f.yaml")
    depth, value = 0, data["a"]
    while value:
        depth, value = depth + 1, value[0]
    assert depth == 98


def test_everything_loaded_is_strict_json() -> None:
    text = ("a: 2024-01-01\n1: [1, 2.5, true, null, ~, '', x]\nb: {c: &z {d: 1}, e: *z}\n"
            "base: &b {x: 1}\nm: {<<: *b, y: 2}\n")
    data, _ = load_yaml_text(text, "f.yaml")
    assert json.loads(json.dumps(data, allow_nan=False)) == data


def test_decode_utf8_tolerates_a_bom() -> None:
    assert decode_utf8("\ufeffname: x\n".encode(), "f.yaml") == "name: x\n"


def test_decode_utf8_names_the_line_of_the_bad_byte() -> None:
    with pytest.raises(InputError) as info:
        decode_utf8(b"a: 1\nb: 2\nc: caf\xe9\n", "f.yaml")
    assert info.value.file == "f.yaml"
    assert info.value.line == 3
    assert "0xe9" in info.value.message
    assert info.value.fix and "UTF-8" in info.value.fix


def test_read_text_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        read_text(tmp_path / "nope.yaml")
    assert info.value.file == str(tmp_path / "nope.yaml")
    assert "not found" in info.value.message
    assert info.value.fix


def test_read_text_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        read_text(tmp_path)
    assert "directory" in info.value.message
    assert info.value.fix


def test_load_yaml_file_reads_and_parses(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("store: x\n", encoding="utf-8")
    data, lines = load_yaml_file(path)
    assert data == {"store": "x"}
    assert lines.line("store") == 1
