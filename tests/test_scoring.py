"""Answer extraction, answer comparison and per-row scores."""

from __future__ import annotations

import json
from typing import Any

import pytest

from promptctl.errors import InputError
from promptctl.evalsets import MISSING, Row
from promptctl.metrics.registry import score_builtins as score_row
from promptctl.scoring import Extraction, OutputSpec, equals, extract

ALL_METRICS = ("format_validity", "exact_match", "accuracy", "rmse", "mae", "pearson",
               "spearman", "f1_macro", "contains", "regex")
LABELS = ("Billing", "technical", "account", "C++")
CONTACT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "email"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "email": {"type": ["string", "null"]},
        "phones": {"type": "array", "items": {"type": "string"}},
        "address": {"type": "object", "properties": {"zip": {"type": "string"}}},
    },
}


def spec(type_: str = "string", pattern: str | None = None, labels: tuple[str, ...] = (),
         schema: dict[str, Any] | None = None) -> OutputSpec:
    return OutputSpec(pattern=pattern, type=type_, labels=labels, json_schema=schema)


def row(expected: Any = MISSING, pattern: str | None = None) -> Row:
    return Row(id="r1", input={"text": "t"}, expected=expected, pattern=pattern)


def ok(answer: Any, text: str | None = None) -> Extraction:
    return Extraction(answer, True, text=text)


BAD = Extraction(None, False, "pattern did not match")


# ---------------------------------------------------------------- extraction: the answer text


class TestPattern:
    def test_named_group_answer_wins_over_group_1(self) -> None:
        s = spec("number", r"(Score|Rating):\s*(?P<answer>-?\d+)")
        assert extract("Rating: 8\nReason: x", s) == Extraction(8.0, True, text="8")

    def test_group_1_when_no_answer_group(self) -> None:
        s = spec("integer", r"score\s*=\s*(\d+)")
        assert extract("the score = 42, final", s).answer == 42

    def test_whole_match_when_no_group(self) -> None:
        s = spec("integer", r"\d+")
        assert extract("abc 123 def 456", s).answer == 123

    def test_no_pattern_uses_the_stripped_completion(self) -> None:
        result = extract("  \n Hello there. \n", spec("string"))
        assert result == Extraction("Hello there.", True, text="Hello there.")

    def test_no_pattern_number_needs_the_bare_number(self) -> None:
        assert extract(" 7\n", spec("number")).answer == 7.0
        assert not extract("Score: 7", spec("number")).valid

    def test_pattern_not_matching(self) -> None:
        result = extract("I cannot answer that.", spec("number", r"Score:\s*(\d+)"))
        assert not result.valid
        assert result.answer is None
        assert result.error == "pattern did not match"

    def test_optional_group_that_did_not_participate(self) -> None:
        s = spec("number", r"Score:(?:\s*(?P<answer>\d+))?")
        result = extract("Score: none given", s)
        assert not result.valid
        assert result.answer is None
        assert "did not take part" in (result.error or "")

    def test_optional_group_1_that_did_not_participate(self) -> None:
        result = extract("Score:", spec("string", r"Score:(\s*\w+)?"))
        assert not result.valid

    def test_seven_out_of_ten_with_pattern(self) -> None:
        s = spec("number", r"(?P<answer>-?[\d.]+)\s*/\s*10")
        assert extract("I'd rate it 7/10 overall.", s).answer == 7.0
        assert extract("I'd rate it 7.5 / 10.", s).answer == 7.5

    def test_seven_out_of_ten_without_pattern_is_invalid(self) -> None:
        assert not extract("7/10", spec("number")).valid

    def test_pattern_is_searched_not_anchored(self) -> None:
        s = spec("number", r"Controversy score:\s*(?P<answer>-?\d+(\.\d+)?)")
        text = "Some preamble.\nControversy score: 6.5\nReason: divisive"
        assert extract(text, s).answer == 6.5


# ---------------------------------------------------------------- numbers


class TestNumbers:
    @pytest.mark.parametrize(("text", "value"), [
        ("7", 7.0), ("-3", -3.0), ("+2", 2.0), ("0", 0.0), ("-0.25", -0.25), (".5", 0.5),
        ("3.14159", 3.14159), ("1,234", 1234.0), ("1,234,567.5", 1234567.5), ("1e3", 1000.0),
        ("2.5E-2", 0.025), (" 42 ", 42.0), ("\u22124", -4.0), ("7.", 7.0),
    ])
    def test_number_values(self, text: str, value: float) -> None:
        result = extract(text, spec("number"))
        assert result.valid, result.error
        assert result.answer == value
        assert isinstance(result.answer, float)

    @pytest.mark.parametrize("text", [
        "nan", "NaN", "inf", "-inf", "Infinity", "1e400", "", "seven", "7 points", "7/10",
        "1,23", "12,34,567", "7,5", "1.2.3", "--1", "$5", "0x1f", "1_000", "\u0667", "1 000",
    ])
    def test_number_rejects(self, text: str) -> None:
        result = extract(text, spec("number"))
        assert not result.valid
        assert result.answer is None
        assert result.error

    def test_negative_and_decimal_through_pattern(self) -> None:
        s = spec("number", r"Controversy score:\s*(?P<answer>-?\d+(\.\d+)?)")
        assert extract("Controversy score: -2.75", s).answer == -2.75

    def test_thousands_separator_through_pattern(self) -> None:
        s = spec("number", r"Total:\s*(?P<answer>[\d,.]+)")
        assert extract("Total: 12,500 units", s).answer == 12500.0

    def test_nan_through_pattern_rejected(self) -> None:
        s = spec("number", r"Score:\s*(\S+)")
        result = extract("Score: NaN", s)
        assert not result.valid
        assert "finite" in (result.error or "")

    @pytest.mark.parametrize(("text", "value"), [("7", 7), ("7.0", 7), ("-3", -3),
                                                 ("1,000", 1000), ("1e2", 100)])
    def test_integer_accepts(self, text: str, value: int) -> None:
        result = extract(text, spec("integer"))
        assert result.valid, result.error
        assert result.answer == value
        assert type(result.answer) is int

    @pytest.mark.parametrize("text", ["7.5", "-0.1", "1e-1", "nan", "inf", "seven"])
    def test_integer_rejects(self, text: str) -> None:
        result = extract(text, spec("integer"))
        assert not result.valid
        assert result.answer is None

    def test_integer_rejects_message(self) -> None:
        assert extract("7.5", spec("integer")).error == "'7.5' is not an integer"

    def test_large_integer_keeps_every_digit(self) -> None:
        assert extract("9007199254740993", spec("integer")).answer == 9007199254740993


# ---------------------------------------------------------------- labels


class TestLabels:
    @pytest.mark.parametrize(("text", "label"), [
        ("Billing", "Billing"), ("billing", "Billing"), ("BILLING", "Billing"),
        ("  billing \n", "Billing"), ("**Billing**", "Billing"), ("billing.", "Billing"),
        ("'Billing'", "Billing"), ('"technical"', "technical"), ("`account`", "account"),
        ("_Technical_", "technical"), ("(account)", "account"), ("Billing\n.", "Billing"),
        ("c++", "C++"), ("**C++**", "C++"),
    ])
    def test_label_matches(self, text: str, label: str) -> None:
        result = extract(text, spec("label", labels=LABELS))
        assert result.valid, result.error
        assert result.answer == label

    @pytest.mark.parametrize("text", ["shipping", "bill", "billing technical", "", "**", "C"])
    def test_label_not_in_set(self, text: str) -> None:
        result = extract(text, spec("label", labels=LABELS))
        assert not result.valid
        assert "not one of the labels" in (result.error or "")

    def test_longest_label_wins_when_both_fit(self) -> None:
        both = spec("label", labels=("C", "C++"))
        assert extract("**C++**", both).answer == "C++"
        assert extract("c.", both).answer == "C"
        assert extract("C", both).answer == "C"

    def test_label_inside_a_sentence_is_not_a_label(self) -> None:
        assert not extract("It is billing.", spec("label", labels=LABELS)).valid

    def test_label_through_pattern(self) -> None:
        s = spec("label", r"Category:\s*(?P<answer>.+)", labels=LABELS)
        assert extract("Category: **Billing**\n", s).answer == "Billing"
        assert not extract("Category: refunds", s).valid


# ---------------------------------------------------------------- JSON


class TestJson:
    def test_plain(self) -> None:
        result = extract('{"name": "Ann", "email": null}', spec("json"))
        assert result == Extraction({"name": "Ann", "email": None}, True,
                                    text='{"name": "Ann", "email": null}')

    @pytest.mark.parametrize("text", [
        '```json\n{"a": [1, 2]}\n```',
        '```\n{"a": [1, 2]}\n```',
        '  ```json\n  {"a": [1, 2]}  \n```  \n',
        '```JSON {"a": [1, 2]} ```',
    ])
    def test_fenced(self, text: str) -> None:
        result = extract(text, spec("json"))
        assert result.valid, result.error
        assert result.answer == {"a": [1, 2]}

    @pytest.mark.parametrize("text", ['{"a": 1', "{'a': 1}", "not json", "", '{"a": 1} trailing'])
    def test_invalid_json(self, text: str) -> None:
        result = extract(text, spec("json"))
        assert not result.valid
        assert result.answer is None
        assert (result.error or "").startswith("invalid JSON")

    @pytest.mark.parametrize("text", ["NaN", '{"x": Infinity}', '{"x": -Infinity}', "[1e400]"])
    def test_non_finite_numbers_are_invalid_json(self, text: str) -> None:
        result = extract(text, spec("json"))
        assert not result.valid
        assert (result.error or "").startswith("invalid JSON")

    def test_scalars_and_arrays(self) -> None:
        assert extract("[1, 2.5, true]", spec("json")).answer == [1, 2.5, True]
        assert extract("3", spec("json")).answer == 3

    def test_through_pattern(self) -> None:
        s = spec("json", r"JSON:\s*(?P<answer>\{.*\})")
        assert extract('Sure. JSON: {"k": "v"} bye', s).answer == {"k": "v"}

    def test_schema_valid(self) -> None:
        text = '{"name": "Ann", "email": null, "phones": ["1"], "address": {"zip": "02139"}}'
        result = extract(text, spec("json", schema=CONTACT_SCHEMA))
        assert result.valid, result.error
        assert result.answer["address"] == {"zip": "02139"}

    @pytest.mark.parametrize(("text", "where"), [
        ('{"name": 5, "email": null}', "name"),
        ('{"name": "A", "email": null, "phones": ["1", 2]}', "phones/1"),
        ('{"name": "A", "email": null, "address": {"zip": 2139}}', "address/zip"),
        ('{"name": "A"}', "(root)"),
        ('{"name": "A", "email": null, "extra": 1}', "(root)"),
        ('["name"]', "(root)"),
    ])
    def test_schema_violation_names_the_path(self, text: str, where: str) -> None:
        result = extract(text, spec("json", schema=CONTACT_SCHEMA))
        assert not result.valid
        assert (result.error or "").startswith(f"schema: {where}: ")
        assert result.answer == json.loads(text)

    def test_schema_violation_message_is_jsonschemas(self) -> None:
        result = extract('{"name": "A"}', spec("json", schema=CONTACT_SCHEMA))
        assert result.error == "schema: (root): 'email' is a required property"

    def test_schema_errors_at_mixed_paths_do_not_crash(self) -> None:
        schema = {"type": "object", "properties": {
            "a": {"type": "array", "items": {"type": "string"}},
            "b": {"type": "object", "additionalProperties": {"type": "string"}}}}
        text = '{"a": [1, "x", 3, 4, 5, 6, 7, 8, 9, 10, 11], "b": {"k": 1}}'
        result = extract(text, spec("json", schema=schema))
        assert not result.valid
        assert (result.error or "").startswith("schema: a/0: ")


class TestString:
    def test_string_keeps_inner_text(self) -> None:
        result = extract("  Paris, France.  ", spec("string"))
        assert result.answer == "Paris, France."
        assert result.valid

    def test_string_with_pattern(self) -> None:
        result = extract("Answer: Paris\nWhy: capital", spec("string", r"Answer:\s*(.*)"))
        assert result.answer == "Paris"

    def test_empty_string_is_a_valid_string(self) -> None:
        assert extract("   ", spec("string")) == Extraction("", True, text="")


# ---------------------------------------------------------------- equals


class TestEquals:
    @pytest.mark.parametrize(("answer", "expected"), [
        ("7", 7), (7.0, 7), (7, 7.0), ("7.0", 7), (" 7 ", "7.00"), (-0.5, "-0.5"),
        ("1,234", 1234), (1234567891, 1234567891.0),
        ("  Paris ", "paris"), ("STRASSE", "strasse"), ("Straße", "STRASSE"),
        ({"a": 1, "b": [1, "X"]}, {"b": [1.0, "x"], "a": 1}), (None, None), ([], []),
        (True, True), ({"ok": False}, {"ok": False}),
    ])
    def test_equal(self, answer: Any, expected: Any) -> None:
        assert equals(answer, expected)

    @pytest.mark.parametrize(("answer", "expected"), [
        ("7", 8), (7.5, 7), ("7.01", 7), (1234567890, 1234567891), (9007199254740993, 2**53),
        (0.30000000000000004, 0.3), ("Paris.", "paris"), ("Paris", "Pari"),
        ({"a": 1}, {"a": 1, "b": 2}), ({"a": [1, 2]}, {"a": [2, 1]}), ([1], 1),
        (True, 1), (False, 0), ({"ok": True}, {"ok": 1}), ("true", True), (None, "none"),
        (float("nan"), float("nan")), ("nan", float("nan")),
    ])
    def test_not_equal(self, answer: Any, expected: Any) -> None:
        assert not equals(answer, expected)


# ---------------------------------------------------------------- score_row


class TestScoreRow:
    def test_row_without_expected_only_has_format_validity(self) -> None:
        assert score_row(ok(7.0), row(), ALL_METRICS) == {"format_validity": 1.0}
        assert score_row(BAD, row(), ALL_METRICS) == {"format_validity": 0.0}

    def test_none_is_a_legitimate_expected_value(self) -> None:
        scores = score_row(ok(None), row(None), ("exact_match",))
        assert scores == {"format_validity": 1.0, "exact_match": 1.0}

    def test_numeric_row(self) -> None:
        scores = score_row(ok(6.5, "6.5"), row(8), ("rmse", "exact_match", "format_validity"))
        assert scores == {"format_validity": 1.0, "exact_match": 0.0, "answer_num": 6.5,
                          "expected_num": 8.0, "squared_error": 2.25}

    def test_numeric_string_expected(self) -> None:
        scores = score_row(ok(7.0, "7"), row(" 7 "), ("exact_match", "mae"))
        assert scores["exact_match"] == 1.0
        assert scores["squared_error"] == 0.0

    def test_exact_match_number_as_number(self) -> None:
        assert score_row(ok(7.0, "7"), row("7"), ("exact_match",))["exact_match"] == 1.0
        assert score_row(ok(7, "7"), row(7.0), ("exact_match",))["exact_match"] == 1.0

    def test_invalid_answer_is_a_miss_and_unscored_numerically(self) -> None:
        scores = score_row(BAD, row(7), ("exact_match", "rmse", "contains"))
        assert scores == {"format_validity": 0.0, "exact_match": 0.0, "contains": 0.0}

    def test_invalid_answer_equal_to_expected_is_still_a_miss(self) -> None:
        bad = Extraction(None, False, "x")
        assert score_row(bad, row(None), ("exact_match",))["exact_match"] == 0.0
        label_miss = Extraction("shipping", False, "not one of the labels", text="shipping")
        assert score_row(label_miss, row("shipping"), ("accuracy",))["accuracy"] == 0.0

    def test_accuracy_is_scored_as_exact_match_under_its_own_name(self) -> None:
        assert score_row(ok("Billing"), row("billing"), ("accuracy",)) == {
            "format_validity": 1.0, "accuracy": 1.0}

    def test_only_requested_metrics(self) -> None:
        assert score_row(ok(3.0), row(3), ("format_validity",)) == {"format_validity": 1.0}

    @pytest.mark.parametrize("expected", ["high", True, None, [1], {"a": 1}, "nan", "inf",
                                          float("nan"), float("inf")])
    def test_non_numeric_or_non_finite_expected_has_no_error_terms(self, expected: Any) -> None:
        scores = score_row(ok(3.0), row(expected), ("rmse",))
        assert "squared_error" not in scores
        assert "answer_num" not in scores

    def test_non_numeric_answer_has_no_error_terms(self) -> None:
        assert "squared_error" not in score_row(ok("high"), row(3), ("rmse",))
        assert "squared_error" not in score_row(ok(True), row(1), ("rmse",))

    def test_string_answer_with_numeric_text(self) -> None:
        scores = score_row(ok("1,500"), row(1000), ("rmse",))
        assert scores["squared_error"] == 250000.0

    def test_f1_labels_fold_like_exact_match(self) -> None:
        scores = score_row(ok("Billing"), row(" billing "), ("f1_macro",))
        assert scores["label_answer"] == scores["label_expected"] == "billing"
        numeric = score_row(ok("1"), row(1.0), ("f1_macro",))
        assert numeric["label_answer"] == numeric["label_expected"] == "1"

    def test_f1_invalid_answer_is_none(self) -> None:
        scores = score_row(BAD, row("billing"), ("f1_macro",))
        assert scores["label_answer"] is None
        assert scores["label_expected"] == "billing"

    def test_contains(self) -> None:
        m = ("contains",)
        assert score_row(ok("The capital is PARIS."), row(" paris "), m)["contains"] == 1.0
        assert score_row(ok("The capital is Lyon."), row("paris"), m)["contains"] == 0.0
        assert score_row(ok(17.0, "17"), row(7), m)["contains"] == 1.0
        assert score_row(ok(1.0, "1"), row(7), m)["contains"] == 0.0

    def test_regex_uses_row_pattern(self) -> None:
        m = ("regex",)
        assert score_row(ok("order #55102"), row(pattern=r"#\d{5}\b"), m)["regex"] == 1.0
        assert score_row(ok("order 55102"), row(pattern=r"#\d{5}\b"), m)["regex"] == 0.0
        assert score_row(BAD, row(pattern=r".*"), m)["regex"] == 0.0

    def test_regex_matches_the_answer_as_written(self) -> None:
        assert score_row(ok(7.0, "7"), row(pattern=r"^7$"), ("regex",))["regex"] == 1.0

    def test_regex_without_row_pattern_is_absent(self) -> None:
        assert "regex" not in score_row(ok("x"), row("x"), ("regex",))

    def test_regex_bad_row_pattern_is_an_input_error(self) -> None:
        with pytest.raises(InputError, match="pattern of row r1"):
            score_row(ok("x"), row(pattern="(unclosed"), ("regex",))

    def test_end_to_end_with_extract(self) -> None:
        s = spec("number", r"Controversy score:\s*(?P<answer>-?\d+(\.\d+)?)")
        extraction = extract("Controversy score: 7\nReason: strong", s)
        scores = score_row(extraction, row(9), ("rmse", "exact_match", "format_validity"))
        assert scores == {"format_validity": 1.0, "exact_match": 0.0, "answer_num": 7.0,
                          "expected_num": 9.0, "squared_error": 4.0}
        assert json.dumps(scores, allow_nan=False)
