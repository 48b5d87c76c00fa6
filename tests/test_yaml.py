"""Safe YAML loading with line numbers (promptctl._yaml)."""

from __future__ import annotations

import time
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


def test_recursive_anchor_does_not_loop() -> None:
    data, lines = load_yaml_text("a: &x [1, *x]\n", "f.yaml")
    assert data["a"][0] == 1
    assert data["a"][1] is data["a"]
    assert lines.line("a", 0) == 1


def test_alias_bomb_is_walked_once_per_node() -> None:
    text = "a: &a [x, x, x, x, x, x, x, x, x]\n"
    for i in range(8):
        prev, cur = chr(97 + i), chr(98 + i)
        text += f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
    started = time.monotonic()
    _, lines = load_yaml_text(text, "f.yaml")
    assert time.monotonic() - started < 5
    assert lines.line("i") == 9


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
