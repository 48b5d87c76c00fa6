"""Eval sets: JSON Lines, YAML and CSV rows, and file:line errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from promptctl import evalsets
from promptctl.errors import InputError
from promptctl.evalsets import MISSING, load_evalset, load_evalset_bytes
from tests.helpers import REPO


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def error(path: Path) -> InputError:
    with pytest.raises(InputError) as info:
        load_evalset(path)
    exc = info.value
    assert exc.file == str(path)
    assert exc.fix, "every error says what to do"
    assert exc.exit_code == 2
    return exc


def jsonl(*rows: object) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


# --- the shipped eval sets ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["controversy.jsonl", "contacts.yaml", "tickets.csv"])
def test_shipped_eval_sets_load(name: str) -> None:
    path = REPO / "evalsets" / name
    evalset = load_evalset(path)
    assert len(evalset) >= 10
    assert evalset.version == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len({row.id for row in evalset}) == len(evalset)
    assert all(row.has_expected for row in evalset)
    assert all(row.input for row in evalset)


def test_tickets_csv_columns_become_inputs() -> None:
    row = load_evalset(REPO / "evalsets" / "tickets.csv").rows[0]
    assert row.id == "t01"
    assert set(row.input) == {"subject", "body"}
    assert row.expected == "billing"
    assert row.line == 2


# --- JSON Lines -----------------------------------------------------------------------------

def test_jsonl_ids_default_to_the_row_number_and_lines_are_physical(tmp_path: Path) -> None:
    path = write(tmp_path, "s.jsonl",
                 '{"input": {"t": "a"}, "expected": 1}\n'
                 "\n"
                 '{"id": "named", "input": {"t": "b"}}\n'
                 "   \n"
                 '{"input": {"t": "c"}, "expected": null}\n')
    evalset = load_evalset(path)
    assert [r.id for r in evalset] == ["1", "named", "3"]
    assert [r.line for r in evalset] == [1, 3, 5]
    assert [r.input for r in evalset] == [{"t": "a"}, {"t": "b"}, {"t": "c"}]


def test_jsonl_expected_missing_is_not_null(tmp_path: Path) -> None:
    path = write(tmp_path, "s.jsonl", jsonl(
        {"id": "a", "input": {"t": 1}},
        {"id": "b", "input": {"t": 1}, "expected": None},
        {"id": "c", "input": {"t": 1}, "expected": 0},
        {"id": "d", "input": {"t": 1}, "expected": False},
    ))
    a, b, c, d = load_evalset(path).rows
    assert a.expected is MISSING and not a.has_expected
    assert b.expected is None and b.has_expected
    assert c.expected == 0 and c.has_expected
    assert d.expected is False and d.has_expected
    assert "expected" not in a.to_dict()
    assert b.to_dict()["expected"] is None


def test_jsonl_integer_ids_become_strings(tmp_path: Path) -> None:
    path = write(tmp_path, "s.jsonl", jsonl({"id": 7, "input": {"t": 1}}))
    assert load_evalset(path).rows[0].id == "7"


def test_jsonl_pattern_and_metadata(tmp_path: Path) -> None:
    path = write(tmp_path, "s.jsonl", jsonl(
        {"input": {"t": 1}, "pattern": r"^\d+$", "metadata": {"source": "x"}}))
    row = load_evalset(path).rows[0]
    assert row.pattern == r"^\d+$"
    assert row.metadata == {"source": "x"}


def test_jsonl_crlf_line_endings(tmp_path: Path) -> None:
    path = write(tmp_path, "s.jsonl", b'{"input": {"t": 1}}\r\n{"input": {"t": 2}}\r\n')
    assert [r.input["t"] for r in load_evalset(path)] == [1, 2]


def test_jsonl_string_with_unicode_line_separators_is_one_row(tmp_path: Path) -> None:
    # U+2028, U+2029 and U+0085 are legal unescaped inside JSON strings, and
    # str.splitlines() would break the line at each of them.
    text = '{"input": {"t": "a\u2028b\u0085c\u2029d"}}\n{"input": {"t": 2}}\n{oops\n'
    path = write(tmp_path, "s.jsonl", text)
    exc = error(path)
    assert exc.line == 3
    path = write(tmp_path, "ok.jsonl", text.rsplit("{oops", 1)[0])
    rows = load_evalset(path).rows
    assert rows[0].input["t"] == "a\u2028b\u0085c\u2029d"
    assert [r.line for r in rows] == [1, 2]


def test_jsonl_malformed_line_is_reported_with_its_number(tmp_path: Path) -> None:
    path = write(tmp_path, "s.jsonl",
                 '{"input": {"t": 1}}\n\n{"input": {"t": 2}}\n{"input": {"t": 3},}\n{"input": {}}\n')
    exc = error(path)
    assert exc.line == 4
    assert "JSON" in exc.message
    assert "line" in exc.fix or "JSON" in exc.fix


def test_jsonl_truncated_last_line(tmp_path: Path) -> None:
    path = write(tmp_path, "s.jsonl", b'{"input": {"t": 1}}\r\n{"input": {"t": 2}\r\n')
    assert error(path).line == 2


def test_jsonl_row_that_is_not_an_object(tmp_path: Path) -> None:
    path = write(tmp_path, "s.jsonl", '{"input": {"t": 1}}\n[1, 2]\n')
    exc = error(path)
    assert exc.line == 2
    assert "mapping" in exc.message and "list" in exc.message


# --- YAML -----------------------------------------------------------------------------------

def test_yaml_rows_with_default_ids_and_item_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml",
                 "# comment\n"
                 "- input: {t: a}\n"       # 2
                 "  expected: 1\n"
                 "- id: two\n"             # 4
                 "  input:\n"
                 "    t: b\n"
                 "- input: {t: c}\n"       # 7
                 "  expected: null\n")
    rows = load_evalset(path).rows
    assert [r.id for r in rows] == ["1", "two", "3"]
    assert [r.line for r in rows] == [2, 4, 7]
    assert rows[1].expected is MISSING
    assert rows[2].expected is None and rows[2].has_expected


@pytest.mark.parametrize("name", ["s.yml", "s.YAML"])
def test_yaml_suffixes(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, "- input: {t: a}\n")
    assert len(load_evalset(path)) == 1


def test_yaml_item_error_gives_the_item_line(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml",
                 "- input: {t: a}\n"
                 "- input: {t: b}\n"
                 "\n"
                 "- input: {t: c}\n"     # 4
                 "  expeted: 3\n")
    exc = error(path)
    assert exc.line == 4
    assert "'expeted'" in exc.message
    assert "expected" in exc.fix


def test_yaml_item_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "- input: {t: a}\n- just a string\n")
    exc = error(path)
    assert exc.line == 2
    assert "mapping" in exc.message


def test_yaml_input_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "- input: {t: a}\n- input: [1, 2]\n  expected: 1\n")
    exc = error(path)
    assert exc.line == 2
    assert "input" in exc.message and "mapping" in exc.message


def test_yaml_top_level_mapping_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "rows:\n  - input: {t: a}\n")
    exc = error(path)
    assert exc.line == 1
    assert "list" in exc.message


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "- input: {t: a}\n- input: {t: [1, 2}\n")
    exc = error(path)
    assert exc.line == 2
    assert "YAML" in exc.message


def test_yaml_python_tag_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "- input: {t: !!python/object/apply:os.getcwd []}\n")
    exc = error(path)
    assert exc.line == 1
    assert "tag" in exc.message


# --- CSV ------------------------------------------------------------------------------------

def test_csv_columns_become_inputs_except_id_expected_pattern(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv",
                 "id,subject,body,expected,pattern\n"
                 'r1,Hi,"a, b",billing,^bill\n')
    row = load_evalset(path).rows[0]
    assert row.id == "r1"
    assert row.input == {"subject": "Hi", "body": "a, b"}
    assert row.expected == "billing"
    assert row.pattern == "^bill"
    assert row.line == 2


def test_csv_without_id_or_expected_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", "text\nhello\nworld\n")
    rows = load_evalset(path).rows
    assert [r.id for r in rows] == ["1", "2"]
    assert all(r.expected is MISSING for r in rows)
    assert [r.line for r in rows] == [2, 3]


@pytest.mark.parametrize(("cell", "value"), [
    ("3", 3),
    ("-2", -2),
    ("+4", 4),
    (" 5 ", 5),
    ("1.5", 1.5),
    ("-0.25", -0.25),
    (".5", 0.5),
    ("1e3", 1000.0),
    ("2.5E-1", 0.25),
])
def test_csv_numeric_expected_is_a_number(tmp_path: Path, cell: str, value: object) -> None:
    path = write(tmp_path, "s.csv", f'text,expected\nx,"{cell}"\n')
    expected = load_evalset(path).rows[0].expected
    assert expected == value
    assert type(expected) is type(value)


@pytest.mark.parametrize("cell", ["billing", "true", "nan", "NaN", "inf", "Infinity", "1_000",
                                  "\u0663", "0x10", "1,5", "3 apples"])
def test_csv_non_numeric_expected_stays_text(tmp_path: Path, cell: str) -> None:
    path = write(tmp_path, "s.csv", f'text,expected\nx,"{cell}"\n')
    assert load_evalset(path).rows[0].expected == cell


def test_csv_numeric_looking_inputs_stay_text(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", "zip,expected\n01234,1\n")
    row = load_evalset(path).rows[0]
    assert row.input == {"zip": "01234"}
    assert row.expected == 1


def test_csv_empty_cells_leave_id_expected_and_pattern_out(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", "id,text,expected,pattern\n,a,,\nr2,b,x,y\n")
    first, second = load_evalset(path).rows
    assert first.id == "1"
    assert first.expected is MISSING
    assert first.pattern is None
    assert (second.id, second.expected, second.pattern) == ("r2", "x", "y")


def test_csv_multiline_fields_and_row_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv",
                 "id,text\n"
                 'a,"one\ntwo\nthree"\n'     # lines 2-4
                 "b,plain\n"                # line 5
                 'c,"x\r\ny"\n')            # lines 6-7
    rows = load_evalset(path).rows
    assert [r.line for r in rows] == [2, 5, 6]
    assert rows[0].input["text"] == "one\ntwo\nthree"
    assert rows[2].input["text"] == "x\r\ny"


def test_csv_bom_and_crlf(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", b"\xef\xbb\xbfid,text\r\nr1,a\r\nr2,b\r\n")
    rows = load_evalset(path).rows
    assert [r.id for r in rows] == ["r1", "r2"]
    assert [r.line for r in rows] == [2, 3]


def test_csv_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", "text\na\n\n\nb\n")
    assert [r.line for r in load_evalset(path).rows] == [2, 5]


def test_csv_wrong_column_count_reports_the_physical_line(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv",
                 "id,text,expected\n"
                 'r1,"multi\nline\nfield",1\n'   # lines 2-4
                 "\n"                           # 5
                 'r2,"also\nmulti",2\n'          # 6-7
                 "r3,oops,3,extra\n")           # 8
    exc = error(path)
    assert exc.line == 8
    assert "4 fields" in exc.message and "3" in exc.message
    assert "quote" in exc.fix


def test_csv_too_few_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", "id,text,expected\nr1,a,1\nr2,b\n")
    exc = error(path)
    assert exc.line == 3
    assert "2 fields" in exc.message


def test_csv_unclosed_quote_names_the_row_where_it_opens(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", 'id,text\nr1,a\nr2,"never closed\nr3,b\nr4,c\n')
    exc = error(path)
    assert exc.line == 3
    assert "quote" in exc.message
    assert '"' in exc.fix


def test_csv_text_after_a_closing_quote(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", 'id,text\nr1,a\nr2,"quoted"tail\n')
    exc = error(path)
    assert exc.line == 3
    assert "CSV" in exc.message


@pytest.mark.parametrize(("header", "what"), [("id,text,text", "duplicate"), ("id,,text", "empty")])
def test_csv_bad_header(tmp_path: Path, header: str, what: str) -> None:
    path = write(tmp_path, "s.csv", f"{header}\n1,2,3\n")
    exc = error(path)
    assert exc.line == 1
    assert what in exc.message


def test_csv_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", 'id,text\nr1,"a\nb"\nr2,c\nr1,d\n')
    exc = error(path)
    assert exc.line == 5
    assert "'r1'" in exc.message and "line 2" in exc.message


# --- errors common to every format ------------------------------------------------------

@pytest.mark.parametrize(("name", "content"), [
    ("e.jsonl", ""),
    ("e.jsonl", "\n  \n\n"),
    ("e.csv", ""),
    ("e.csv", "id,text,expected\n"),
    ("e.yaml", ""),
    ("e.yaml", "# nothing yet\n"),
    ("e.yaml", "[]\n"),
])
def test_empty_set_is_an_error(tmp_path: Path, name: str, content: str) -> None:
    exc = error(write(tmp_path, name, content))
    assert "empty" in exc.message
    assert exc.line is None  # a whole-file error: no line to point at
    assert "row" in exc.fix


@pytest.mark.parametrize(("name", "content", "first", "second"), [
    ("d.jsonl", jsonl({"id": "x", "input": {"t": 1}}, {"id": "y", "input": {"t": 1}},
                      {"id": "x", "input": {"t": 2}}), 1, 3),
    ("d.jsonl", jsonl({"input": {"t": 1}}, {"id": "1", "input": {"t": 1}}), 1, 2),
    ("d.jsonl", jsonl({"id": 5, "input": {"t": 1}}, {"id": "5", "input": {"t": 1}}), 1, 2),
    ("d.yaml", "- id: a\n  input: {t: 1}\n- id: b\n  input: {t: 1}\n- id: a\n  input: {t: 2}\n", 1, 5),
])
def test_duplicate_ids_name_both_lines(tmp_path: Path, name: str, content: str, first: int,
                                       second: int) -> None:
    exc = error(write(tmp_path, name, content))
    assert exc.line == second
    assert f"line {first}" in exc.message
    assert "duplicate" in exc.message
    assert "unique" in exc.fix


@pytest.mark.parametrize(("name", "content", "line"), [
    ("u.jsonl", b'{"input": {"t": "ok"}}\n{"input": {"t": "ok"}}\n{"input": {"t": "caf\xe9"}}\n', 3),
    ("u.csv", b"text\nok\n\xff\xfe\n", 3),
    ("u.yaml", b"- input: {t: ok}\n- input:\n    t: \xc3\x28\n", 3),
])
def test_non_utf8_file_names_the_line_of_the_bad_byte(tmp_path: Path, name: str, content: bytes,
                                                     line: int) -> None:
    exc = error(write(tmp_path, name, content))
    assert exc.line == line
    assert "UTF-8" in exc.message
    assert "UTF-8" in exc.fix


def test_non_utf8_after_a_bom(tmp_path: Path) -> None:
    exc = error(write(tmp_path, "u.jsonl", b'\xef\xbb\xbf{"input": {"t": 1}}\n{"input": {"t": "\xff"}}\n'))
    assert exc.line == 2


@pytest.mark.parametrize(("row", "needle"), [
    ({"input": {"t": 1}, "expect": 1}, "'expect'"),
    ({"input": {"t": 1}, "text": "x"}, "'text'"),
])
def test_unknown_row_key(tmp_path: Path, row: dict[str, object], needle: str) -> None:
    exc = error(write(tmp_path, "k.jsonl", jsonl({"input": {"t": 0}}, row)))
    assert exc.line == 2
    assert needle in exc.message
    assert "input" in exc.fix


@pytest.mark.parametrize(("row", "needle"), [
    ({"input": "just text"}, "mapping"),
    ({"input": [1, 2]}, "mapping"),
    ({"input": None}, "mapping"),
    ({"expected": 1}, "no input"),
    ({"input": {"not valid": 1}}, "not a valid name"),
    ({"input": {"examples": 1}}, "examples"),
    ({"id": "", "input": {"t": 1}}, "id"),
    ({"id": True, "input": {"t": 1}}, "id"),
    ({"id": [1], "input": {"t": 1}}, "id"),
    ({"input": {"t": 1}, "pattern": 5}, "pattern"),
    ({"input": {"t": 1}, "pattern": "(unclosed"}, "regular expression"),
    ({"input": {"t": 1}, "metadata": [1]}, "metadata"),
])
def test_bad_row_shapes(tmp_path: Path, row: dict[str, object], needle: str) -> None:
    exc = error(write(tmp_path, "b.jsonl", jsonl({"input": {"t": 0}}, {"input": {"t": 0}}, row)))
    assert exc.line == 3
    assert needle in exc.message


@pytest.mark.parametrize("name", ["s.txt", "s.json", "s"])
def test_unknown_extension(tmp_path: Path, name: str) -> None:
    exc = error(write(tmp_path, name, '{"input": {"t": 1}}\n'))
    assert "format" in exc.message
    assert exc.line is None
    assert ".jsonl" in exc.fix and ".csv" in exc.fix


def test_missing_file(tmp_path: Path) -> None:
    exc = error(tmp_path / "absent.jsonl")
    assert "not found" in exc.message
    assert exc.line is None


def test_directory(tmp_path: Path) -> None:
    directory = tmp_path / "sets.jsonl"
    directory.mkdir()
    exc = error(directory)
    assert "directory" in exc.message
    assert exc.line is None


def test_bytes_loader_uses_the_given_path(tmp_path: Path) -> None:
    data = jsonl({"input": {"t": 1}}).encode()
    evalset = load_evalset_bytes(data, Path("at/ref/s.jsonl"))
    assert evalset.path == Path("at/ref/s.jsonl")
    assert evalset.version == hashlib.sha256(data).hexdigest()
    with pytest.raises(InputError) as info:
        load_evalset_bytes(b"{bad\n", Path("at/ref/s.jsonl"))
    assert info.value.file == str(Path("at/ref/s.jsonl"))
    assert info.value.line == 1


# -- large sets: held as text, parsed one row at a time ------------------------------------


def _big(tmp_path: Path, suffix: str, n: int) -> Path:
    if suffix == ".jsonl":
        text = "".join(json.dumps({"id": f"r{i}", "input": {"text": f"row number {i}"},
                                   "expected": i}) + "\n" for i in range(n))
    else:
        text = "id,text,expected\n" + "".join(f"r{i},row number {i},{i}\n" for i in range(n))
    return write(tmp_path, "big" + suffix, text)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_large_set_is_not_held_as_parsed_rows(tmp_path: Path, suffix: str) -> None:
    import tracemalloc

    path = _big(tmp_path, suffix, 20_000)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        evalset = load_evalset(path)
        held = tracemalloc.get_traced_memory()[0]
        # Parsed, 20,000 rows take over ten times the file's size; the text is about its size.
        assert held < 3 * size, (held, size)
        rows = iter(evalset)
        seen = [next(rows).id for _ in range(3)]
        assert tracemalloc.get_traced_memory()[0] < 4 * size
    finally:
        tracemalloc.stop()
    assert seen == ["r0", "r1", "r2"]
    assert len(evalset) == 20_000
    again = list(evalset)
    assert [r.id for r in again] == [f"r{i}" for i in range(20_000)]
    assert again[12_345].expected == 12_345 and again[12_345].input == {"text": "row number 12345"}
    assert evalset.rows == tuple(again)


def test_every_pass_over_a_streamed_set_keeps_line_numbers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evalsets, "KEEP_ROWS", 0)  # parse again on every pass
    path = write(tmp_path, "e.jsonl", '\n{"id": "a", "input": {"x": "1\u2028"}}\n\n'
                 '{"id": "b", "input": {"x": "2"}}')
    evalset = load_evalset(path)
    for _ in range(2):
        assert [(r.id, r.line) for r in evalset] == [("a", 2), ("b", 4)]


# -- plain JSON data only, in every format ---------------------------------------------------

@pytest.mark.parametrize("line", [
    '{"input": {"t": 1}, "input": {"t": 2}}',
    '{"input": {"t": 1, "t": 2}}',
    '{"input": {"t": {"a": 1, "b": 2, "a": 3}}}',
])
def test_jsonl_duplicate_keys_are_refused_like_yaml(tmp_path: Path, line: str) -> None:
    exc = error(write(tmp_path, "d.jsonl", '{"input": {"t": 0}}\n' + line + "\n"))
    assert exc.line == 2
    assert "duplicate key" in exc.message


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_jsonl_non_finite_numbers_are_refused(tmp_path: Path, value: str) -> None:
    exc = error(write(tmp_path, "n.jsonl", '{"input": {"t": 0}}\n{"input": {"t": 1}, "expected": '
                      + value + "}\n"))
    assert exc.line == 2 and "finite" in exc.message


@pytest.mark.parametrize("number", ["9" * 5000, "9" * 400, "-" + "9" * 320, "1e400", "-2.5E+999",
                                    "1" * 4000 + ".5"])
def test_jsonl_numbers_a_float_cannot_hold_are_refused(tmp_path: Path, number: str) -> None:
    exc = error(write(tmp_path, "b.jsonl", '{"input": {"t": 0}}\n{"input": {"t": ' + number + "}}\n"))
    assert exc.line == 2 and "too large" in exc.message
    assert "quote" in exc.fix


def test_jsonl_large_numbers_a_float_holds_are_kept(tmp_path: Path) -> None:
    (row,) = load_evalset(write(tmp_path, "b.jsonl", '{"input": {"t": ' + "9" * 300 + '}, '
                                '"expected": 1.5e300}\n')).rows
    assert row.input["t"] == int("9" * 300) and row.expected == 1.5e300


@pytest.mark.parametrize("depth", [200_000, 1000, 101])
def test_jsonl_deep_nesting_is_refused_without_a_recursion_error(tmp_path: Path, depth: int) -> None:
    exc = error(write(tmp_path, "deep.jsonl", '{"input": {"t": 0}}\n{"input": {"t": '
                      + "[" * depth + "]" * depth + "}}\n"))
    assert exc.line == 2 and "nested more than 100 levels" in exc.message


def test_jsonl_nesting_within_the_limit_loads(tmp_path: Path) -> None:
    text = '{"input": {"t": ' + "[" * 97 + "]" * 97 + "}}\n"
    (row,) = load_evalset(write(tmp_path, "deep.jsonl", text)).rows
    assert isinstance(row.input["t"], list)


@pytest.mark.parametrize("cell", ["9" * 5000, "9" * 401, "-" + "9" * 320, "1" * 400 + ".5"])
def test_csv_expected_numbers_a_float_cannot_hold_are_refused(tmp_path: Path, cell: str) -> None:
    exc = error(write(tmp_path, "c.csv", f"text,expected\na,1\nb,{cell}\n"))
    assert exc.line == 3 and "too large" in exc.message


@pytest.mark.parametrize("size", [200 * 1024, 3 * 1024 * 1024])
def test_csv_long_documents_are_accepted(tmp_path: Path, size: int) -> None:
    doc = ("lorem ipsum, \"dolor\"\nsit amet " * (size // 30 + 1))[:size]
    quoted = '"' + doc.replace('"', '""') + '"'
    rows = load_evalset(write(tmp_path, "long.csv", f"id,doc,expected\nr1,{quoted},yes\nr2,short,no\n")).rows
    assert rows[0].input["doc"] == doc
    assert rows[1].line == 3 + doc.count("\n")


def test_yaml_eval_set_dates_stay_text_and_binary_is_refused(tmp_path: Path) -> None:
    text = "- input: {day: 2024-01-01}\n  expected: 2024-01-02\n"
    (row,) = load_evalset(write(tmp_path, "d.yaml", text)).rows
    assert row.input == {"day": "2024-01-01"} and row.expected == "2024-01-02"
    exc = error(write(tmp_path, "b.yaml", "- input: {t: 1}\n- input: {t: !!binary aGk=}\n"))
    assert exc.line == 2 and "binary" in exc.message


def test_yaml_eval_set_nested_900_deep_is_refused(tmp_path: Path) -> None:
    text = "- input: {t: 1}\n- input: {t: " + "[" * 900 + "]" * 900 + "}\n"
    exc = error(write(tmp_path, "deep.yaml", text))
    assert exc.line == 2 and "nested" in exc.message


# -- what errors quote from the file --------------------------------------------------------

SECRET_LINE = "OPENAI_API_KEY=sk-live-abcdefghijklmnopqrstuvwxyz0123456789"


def test_a_header_line_that_is_a_secret_is_not_echoed(tmp_path: Path) -> None:
    # A .env read as a CSV (a path on the command line may point anywhere): its first line is
    # the header, and the error names only the start of the bad column name.
    exc = error(write(tmp_path, "env.csv", SECRET_LINE + "\nx\n"))
    assert "OPENAI_API_KEY" in exc.message
    assert "sk-live" not in str(exc) and "abcdef" not in str(exc)


@pytest.mark.parametrize("content", [
    jsonl({"input": {"t": 1}, "x" * 500: 1}),
    jsonl({"input": {"t": 1, "bad name " + "y" * 500: 1}}),
    jsonl({"id": "z" * 500, "input": {"t": 1}}, {"id": "z" * 500, "input": {"t": 1}}),
])
def test_errors_quote_names_cut_short(tmp_path: Path, content: str) -> None:
    exc = error(write(tmp_path, "q.jsonl", content))
    assert len(exc.message) < 200, exc.message


def test_duplicate_csv_column_names_are_cut_short(tmp_path: Path) -> None:
    name = "c" * 300
    exc = error(write(tmp_path, "q.csv", f"{name},{name}\n1,2\n"))
    assert len(exc.message) < 120


# --- generated rows awaiting review (probe --save) ------------------------------------------

def test_unreviewed_rows_are_not_among_the_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "set.jsonl", jsonl(
        {"id": "a", "input": {"t": "x"}, "expected": 1},
        {"id": "b", "input": {"t": "y"}, "expected": 2, "source": "probe", "reviewed": False},
        {"id": "c", "input": {"t": "z"}, "expected": 3, "source": "probe", "reviewed": True}))
    evalset = load_evalset(path)
    assert [r.id for r in evalset] == ["a", "c"]
    assert len(evalset) == 2 and evalset.unreviewed == 1
    (_, reviewed) = evalset.rows
    assert (reviewed.source, reviewed.reviewed) == ("probe", True)
    assert reviewed.to_dict()["reviewed"] is True


def test_unreviewed_rows_are_left_out_of_a_large_set_too(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evalsets, "KEEP_ROWS", 0)  # parse again on every pass
    path = write(tmp_path, "set.jsonl", jsonl(
        *({"id": f"r{i}", "input": {"t": "x"}, "reviewed": i % 3 != 0} for i in range(9))))
    evalset = load_evalset(path)
    assert len(evalset) == 6 and evalset.unreviewed == 3
    assert [r.id for r in evalset] == ["r1", "r2", "r4", "r5", "r7", "r8"]


def test_an_unreviewed_row_still_takes_its_id(tmp_path: Path) -> None:
    path = write(tmp_path, "set.jsonl", jsonl({"id": "a", "input": {"t": "x"}, "reviewed": False},
                                              {"id": "a", "input": {"t": "y"}}))
    assert "duplicate row id 'a'" in error(path).message


@pytest.mark.parametrize(("extra", "said"), [
    ({"reviewed": "yes"}, "reviewed of row 2 must be true or false"),
    ({"reviewed": 0}, "reviewed of row 2 must be true or false"),
    ({"source": 7}, "source of row 2 must be text"),
])
def test_review_fields_of_the_wrong_kind_name_the_line(tmp_path: Path, extra: dict[str, object],
                                                       said: str) -> None:
    path = write(tmp_path, "set.jsonl", jsonl({"input": {"t": "x"}},
                                              {"input": {"t": "y"}, **extra}))
    exc = error(path)
    assert said in exc.message and exc.line == 2
