"""Prompt files: validation, version, and sandboxed rendering."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from promptctl.errors import InputError
from promptctl.evalsets import MISSING, load_evalset
from promptctl.prompts import Prompt, load_prompt, parse_prompt
from tests.helpers import REPO

SHIPPED = sorted((REPO / "prompts").glob("*.yaml"))

MINIMAL = """\
messages:
  - role: user
    content: "{{ text }}"
"""


def write(tmp_path: Path, text: str | bytes, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def prompt_error(tmp_path: Path, text: str | bytes, name: str = "p.yaml") -> InputError:
    path = write(tmp_path, text, name)
    with pytest.raises(InputError) as info:
        load_prompt(path)
    exc = info.value
    assert exc.file == str(path)
    assert exc.fix, "every error says what to do"
    return exc


def render_error(prompt: Prompt, variables: dict[str, object], row_id: str = "r1") -> InputError:
    with pytest.raises(InputError) as info:
        prompt.render(variables, row_id=row_id)
    assert info.value.file == str(prompt.path)
    assert info.value.fix
    return info.value


def one_template(tmp_path: Path, template: str, extra: str = "") -> Prompt:
    """A prompt with one user message whose content is `template` (as a literal block)."""
    body = "".join(f"      {line}\n" for line in template.splitlines())
    text = ("messages:\n"
            "  - role: user\n"
            "    content: |\n" + body +
            "examples:\n"
            "  - input: {text: first}\n"
            "    expected: 1\n"
            "  - input: {text: second}\n"
            "    expected: 2\n" + extra)
    return load_prompt(write(tmp_path, text))


# --- the shipped prompts ------------------------------------------------------------------

def test_there_are_shipped_prompts() -> None:
    assert {p.stem for p in SHIPPED} >= {"controversy", "ticket_routing", "extract_contact"}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_prompt_loads_and_renders_every_row(path: Path) -> None:
    prompt = load_prompt(path)
    assert prompt.name == path.stem
    own = hashlib.sha256(path.read_bytes()).hexdigest()
    inputs = [f for m in prompt.configured_metrics for f in m.files]
    if not inputs:
        assert prompt.version == own
    else:  # a judge or scorer file is part of the version
        parts = sorted(f"{f.resolve().relative_to(REPO.resolve()).as_posix()}\0"
                       f"{hashlib.sha256(f.read_bytes()).hexdigest()}\n" for f in inputs)
        assert prompt.version == hashlib.sha256(f"{own}\n{''.join(parts)}".encode()).hexdigest()
    assert prompt.source == path.read_text(encoding="utf-8")
    assert prompt.request_params["temperature"] == 0
    assert prompt.examples
    assert prompt.evalset is not None and prompt.evalset.is_file()
    evalset = load_evalset(prompt.evalset)
    for row in (*prompt.examples, *evalset.rows):
        messages = prompt.render(row.input, row_id=row.id)
        assert [m["role"] for m in messages] == [m.role for m in prompt.messages]
        assert all(isinstance(m["content"], str) and m["content"] for m in messages)
        # every few-shot example is written into the request, before the row itself
        before = "\n".join(m["content"] for m in messages[:-1])
        for example in prompt.examples:
            assert str(next(iter(example.input.values())))[:20] in before


def test_controversy_prompt_fields() -> None:
    prompt = load_prompt(REPO / "prompts" / "controversy.yaml")
    assert prompt.model == "gpt-4o-mini"
    assert prompt.output.type == "number"
    assert prompt.output.regex is not None
    for reply, score in (("Controversy score: 7\nReason: x", "7"),
                         ("This text has a controversy score of 10.", "10"),
                         ("**Controversy Score:** 4.5/10", "4.5")):
        match = prompt.output.regex.search(reply)
        assert match is not None and match.group("answer") == score, reply
    # a number after some other word is not the score
    assert prompt.output.regex.search("a controversy score from 0 to 10") is None
    assert "rmse" in prompt.metrics
    assert prompt.thresholds["rmse"] == {"max": 1.5}
    assert prompt.evalset == REPO / "prompts" / ".." / "evalsets" / "controversy.jsonl"
    messages = prompt.render({"text": "Cats are better than dogs."}, row_id="x")
    # the four examples are user/assistant turns before the row's own question
    assert [m["role"] for m in messages] == ["user", "assistant"] * 4 + ["user"]
    assert messages[-1]["content"] == (
        "Give this text a controversy score from 0 to 10.\n\nCats are better than dogs.")
    assert messages[2]["content"].endswith("\n\nEveryone has the right to own and use guns")
    assert messages[3]["content"] == "Controversy score: 9"


def test_version_is_the_sha256_of_the_file_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    first = load_prompt(path).version
    assert first == hashlib.sha256(MINIMAL.encode()).hexdigest()
    write(tmp_path, MINIMAL + "# a comment changes the version\n")
    assert load_prompt(path).version != first


# --- defaults and params ---------------------------------------------------------------

def test_defaults(tmp_path: Path) -> None:
    prompt = load_prompt(write(tmp_path, MINIMAL, "my_prompt.yaml"))
    assert prompt.name == "my_prompt"
    assert prompt.description == ""
    assert prompt.model is None
    assert prompt.metrics == ("format_validity",)
    assert prompt.output.type == "string"
    assert prompt.output.pattern is None
    assert prompt.examples == ()
    assert prompt.evalset is None
    assert prompt.thresholds == {}


def test_temperature_is_zero_when_omitted(tmp_path: Path) -> None:
    prompt = load_prompt(write(tmp_path, "params: {max_tokens: 5, seed: 1}\n" + MINIMAL))
    assert prompt.request_params == {"temperature": 0, "max_tokens": 5, "seed": 1}
    assert "temperature" not in prompt.params


def test_temperature_is_kept_when_given(tmp_path: Path) -> None:
    prompt = load_prompt(write(tmp_path, "params: {temperature: 0.7}\n" + MINIMAL))
    assert prompt.request_params["temperature"] == 0.7


def test_empty_temperature_is_zero(tmp_path: Path) -> None:
    prompt = load_prompt(write(tmp_path, "params:\n  temperature:\n" + MINIMAL))
    assert prompt.request_params["temperature"] == 0


def test_request_params_do_not_share_state(tmp_path: Path) -> None:
    prompt = load_prompt(write(tmp_path, "params: {max_tokens: 5}\n" + MINIMAL))
    prompt.request_params["max_tokens"] = 99
    assert prompt.request_params["max_tokens"] == 5


def test_evalset_is_relative_to_the_prompt_file(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    path = write(tmp_path, "evalset: ../evalsets/x.jsonl\n" + MINIMAL, "prompts/p.yaml")
    prompt = load_prompt(path)
    assert prompt.evalset is not None
    assert prompt.evalset.resolve() == (tmp_path / "evalsets" / "x.jsonl").resolve()
    assert prompt.evalset_line == 1


def test_examples_get_ids(tmp_path: Path) -> None:
    prompt = load_prompt(write(tmp_path, MINIMAL + "examples:\n"
                               "  - input: {text: a}\n    expected: 1\n"
                               "  - id: special\n    input: {text: b}\n"))
    assert [e.id for e in prompt.examples] == ["ex1", "special"]
    assert prompt.examples[0].expected == 1
    assert prompt.examples[1].expected is MISSING
    assert [e.line for e in prompt.examples] == [5, 7]


# --- unknown keys and wrong types -----------------------------------------------------

def test_misspelled_top_level_key(tmp_path: Path) -> None:
    exc = prompt_error(tmp_path, MINIMAL + "metircs: [exact_match]\n")
    assert exc.line == 4
    assert "'metircs'" in exc.message
    assert "did you mean 'metrics'" in exc.fix


def test_unknown_key_without_a_close_match(tmp_path: Path) -> None:
    exc = prompt_error(tmp_path, "zzz: 1\n" + MINIMAL)
    assert exc.line == 1
    assert "'zzz'" in exc.message
    assert "did you mean" not in exc.fix
    assert "messages" in exc.fix


CASES = [
    # (id, yaml, line, substring of message)
    ("params list", "params: [1]\n" + MINIMAL, 1, "params"),
    ("params empty list", "params: []\n" + MINIMAL, 1, "params"),
    ("params string", "params: hot\n" + MINIMAL, 1, "params"),
    ("params.temperature text", "params:\n  temperature: warm\n" + MINIMAL, 2, "temperature"),
    ("params.max_tokens float", "params:\n  max_tokens: 1.5\n" + MINIMAL, 2, "max_tokens"),
    ("params.seed bool", "params:\n  seed: true\n" + MINIMAL, 2, "seed"),
    ("params.model", "params:\n  model: gpt-4o\n" + MINIMAL, 2, "params.model"),
    ("params.messages", "params:\n  messages: []\n" + MINIMAL, 2, "params.messages"),
    ("messages missing", "name: x\n", 1, "messages"),
    ("messages empty", "messages: []\n", 1, "messages"),
    ("messages mapping", "messages: {role: user}\n", 1, "messages"),
    ("message not mapping", "messages:\n  - hello\n", 2, "messages[0]"),
    ("message extra key", "messages:\n  - role: user\n    content: hi\n    name: bob\n", 2,
     "messages[0]"),
    ("message missing content", "messages:\n  - role: user\n", 2, "messages[0]"),
    ("bad role", MINIMAL + "  - role: robot\n    content: hi\n", 4, "'robot'"),
    ("role not text", "messages:\n  - role: [user]\n    content: hi\n", 2, "role"),
    ("content not text", "messages:\n  - role: user\n    content: 5\n", 3, "content"),
    ("name empty", "name: ''\n" + MINIMAL, 1, "name"),
    ("name number", "name: 5\n" + MINIMAL, 1, "name"),
    ("model number", "model: 4\n" + MINIMAL, 1, "model"),
    ("description list", "description: [a]\n" + MINIMAL, 1, "description"),
    ("evalset number", "evalset: 3\n" + MINIMAL, 1, "evalset"),
    ("metrics unknown", MINIMAL + "metrics: [exact_match, rsme]\n", 4, "'rsme'"),
    ("metrics string", MINIMAL + "metrics: exact_match\n", 4, "metrics"),
    ("metrics empty", MINIMAL + "metrics: []\n", 4, "metrics"),
    ("metrics twice", MINIMAL + "metrics: [exact_match, exact_match]\n", 4, "twice"),
    ("metrics mapping item", MINIMAL + "metrics:\n  - {custom: x}\n", 5, "metric"),
    ("rmse needs numbers", MINIMAL + "metrics: [rmse]\n", 4, "rmse"),
    ("accuracy needs labels", MINIMAL + "metrics: [accuracy]\n", 4, "accuracy"),
    ("output not mapping", MINIMAL + "output: number\n", 4, "output"),
    ("output unknown key", MINIMAL + "output:\n  typ: number\n", 5, "'typ'"),
    ("output.type unknown", MINIMAL + "output:\n  type: float\n", 5, "'float'"),
    ("labels missing", MINIMAL + "output:\n  type: label\n", 5, "labels"),
    ("labels empty", MINIMAL + "output:\n  type: label\n  labels: []\n", 5, "labels"),
    ("labels not list", MINIMAL + "output:\n  type: label\n  labels: a b\n", 6, "labels"),
    ("labels of mappings", MINIMAL + "output:\n  type: label\n  labels: [{a: 1}]\n", 6, "labels"),
    ("labels without type label", MINIMAL + "output:\n  type: string\n  labels: [a, b]\n", 6,
     "labels"),
    ("json_schema invalid", MINIMAL + "output:\n  type: json\n  json_schema: {type: objekt}\n", 6,
     "JSON Schema"),
    ("json_schema not mapping", MINIMAL + "output:\n  type: json\n  json_schema: [1]\n", 6,
     "json_schema"),
    ("json_schema without type json",
     MINIMAL + "output:\n  type: string\n  json_schema: {type: object}\n", 6, "json_schema"),
    ("pattern not text", MINIMAL + "output:\n  pattern: [a]\n", 5, "pattern"),
    ("examples mapping", MINIMAL + "examples: {input: {text: a}}\n", 4, "examples"),
    ("example not mapping", MINIMAL + "examples:\n  - input: {text: a}\n  - text\n", 6, "example 2"),
    ("example unknown key", MINIMAL + "examples:\n  - input: {text: a}\n  - text: b\n", 6, "'text'"),
    ("example input not mapping", MINIMAL + "examples:\n  - input: a\n", 5, "input"),
    ("example ids twice",
     MINIMAL + "examples:\n  - {id: a, input: {text: a}}\n  - {id: a, input: {text: b}}\n", 6,
     "line 5"),
    ("thresholds list", MINIMAL + "thresholds: [1]\n", 4, "thresholds"),
    ("threshold unknown metric", MINIMAL + "thresholds:\n  rsme: {max: 1}\n", 5, "'rsme'"),
    ("threshold not a number", MINIMAL + "thresholds:\n  format_validity: {min: high}\n", 5,
     "number"),
    ("threshold bool", MINIMAL + "thresholds:\n  format_validity: {min: true}\n", 5, "number"),
    ("threshold bad gate key", MINIMAL + "thresholds:\n  format_validity: {minimum: 1}\n", 5,
     "min"),
    ("threshold bare number", MINIMAL + "thresholds:\n  format_validity: 0.9\n", 5, "min"),
    ("threshold for a metric not computed", MINIMAL + "thresholds:\n  exact_match: {min: 0.9}\n", 5,
     "not in metrics"),
    ("max_regression unknown metric", MINIMAL + "thresholds:\n  max_regression: {rsme: 0.1}\n", 5,
     "'rsme'"),
    ("max_regression negative",
     MINIMAL + "thresholds:\n  max_regression: {format_validity: -0.1}\n", 5, "non-negative"),
    ("max_regression not mapping", MINIMAL + "thresholds:\n  max_regression: 0.1\n", 5,
     "max_regression"),
    ("max_regression for a metric not computed",
     MINIMAL + "thresholds:\n  max_regression:\n    exact_match: 0.1\n", 6, "not in metrics"),
]


@pytest.mark.parametrize(("text", "line", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_prompt(tmp_path: Path, text: str, line: int, needle: str) -> None:
    exc = prompt_error(tmp_path, text)
    assert exc.line == line, str(exc)
    assert needle in exc.message, str(exc)


NUMBER = MINIMAL + "output:\n  type: number\n"
LABEL = MINIMAL + "output:\n  type: label\n  labels: [good, bad]\n"
LABEL_JUDGE = """\
model: gpt-4o
messages:
  - role: user
    content: "Is {{ completion }} fine?"
output:
  type: label
  labels: [fine, poor]
"""
NUMBER_JUDGE = LABEL_JUDGE.replace("type: label\n  labels: [fine, poor]", "type: integer")
JUDGED = MINIMAL + "metrics:\n  - name: fine\n    llm_judge: judge.yaml\n"
SIMILAR = MINIMAL + "metrics:\n  - name: close\n    similarity: {model: text-embedding-3-small}\n"
SCORED = MINIMAL + "metrics:\n  - name: mine\n    custom: scorer.py:score\n"

RANGES = [
    # (id, prompt text, judge file, line, message part, fix part): a gate no value can meet or miss.
    ("a share as a percentage", LABEL + "metrics: [accuracy]\nthresholds:\n  accuracy: {min: 60}\n",
     None, 9, "threshold accuracy.min is 60, which accuracy never is: it goes from 0 to 1",
     "write it as a share of 1: 0.6 for 60%"),
    ("a share above 100", MINIMAL + "thresholds:\n  format_validity: {max: 200}\n", None, 5,
     "format_validity never is: it goes from 0 to 1", "choose a max from 0 to 1"),
    ("a negative share", MINIMAL + "metrics: [exact_match]\nthresholds:\n  exact_match: {min: -0.1}\n",
     None, 6, "exact_match.min is -0.1", "choose a min from 0 to 1"),
    ("a negative error", NUMBER + "metrics: [rmse]\nthresholds:\n  rmse: {max: -1}\n", None, 8,
     "rmse never is: it goes 0 or more", "choose a max 0 or more"),
    ("a correlation beyond 1", NUMBER + "metrics: [pearson]\nthresholds:\n  pearson: {min: 1.5}\n",
     None, 8, "it goes from -1 to 1", "choose a min from -1 to 1"),
    ("a cosine below -1", SIMILAR + "thresholds:\n  close: {min: -2}\n", None, 8,
     "close never is: it goes from -1 to 1", "from -1 to 1"),
    ("a label judge's score beyond 1", JUDGED + "thresholds:\n  fine: {min: 80}\n", LABEL_JUDGE, 8,
     "fine never is: it goes from 0 to 1", "0.8 for 80%"),
    ("min above max", NUMBER + "metrics: [mae]\nthresholds:\n  mae: {min: 3, max: 1}\n", None, 8,
     "min 3 above max 1", "swap them"),
    ("a regression larger than the range", LABEL + "metrics: [accuracy]\nthresholds:\n"
     "  max_regression: {accuracy: 5}\n", None, 9,
     "max_regression for accuracy is 5, but accuracy goes from 0 to 1: it can drop by 1 at most",
     "0.05 for 5%"),
    ("a correlation's regression beyond 2", NUMBER + "metrics: [spearman]\nthresholds:\n"
     "  max_regression:\n    spearman: 2.5\n", None, 9, "can drop by 2 at most",
     "choose a limit of at most 2"),
]


@pytest.mark.parametrize(("text", "judge", "line", "message", "fix"), [c[1:] for c in RANGES],
                         ids=[c[0] for c in RANGES])
def test_a_threshold_outside_the_metric_range_names_the_range(
        tmp_path: Path, text: str, judge: str | None, line: int, message: str, fix: str) -> None:
    if judge is not None:
        write(tmp_path, judge, "judge.yaml")
    exc = prompt_error(tmp_path, text)
    assert exc.line == line, str(exc)
    assert message in exc.message, str(exc)
    assert fix in (exc.fix or ""), str(exc)


def test_thresholds_at_the_ends_of_a_range_and_on_unknown_ranges_are_accepted(
        tmp_path: Path) -> None:
    ends = load_prompt(write(tmp_path, NUMBER + (
        "metrics: [exact_match, rmse, pearson]\n"
        "thresholds:\n  exact_match: {min: 0, max: 1}\n  rmse: {max: 0}\n  pearson: {min: -1}\n"
        "  max_regression: {exact_match: 1, pearson: 2, rmse: 1000}\n")))
    assert ends.thresholds["max_regression"] == {"exact_match": 1, "pearson": 2, "rmse": 1000}
    # A number judge's scale and a custom scorer's values are theirs to say: any gate goes.
    write(tmp_path, NUMBER_JUDGE, "judge.yaml")
    judged = load_prompt(write(tmp_path, JUDGED + "thresholds:\n  fine: {min: 4}\n"
                               "  max_regression: {fine: 3}\n"))
    assert judged.thresholds["fine"] == {"min": 4}
    scored = load_prompt(write(tmp_path, SCORED + "thresholds:\n  mine: {min: 250}\n"))
    assert scored.thresholds["mine"] == {"min": 250}


def test_unknown_metric_suggests_the_close_one(tmp_path: Path) -> None:
    exc = prompt_error(tmp_path, MINIMAL + "metrics: [exact_match, rsme]\n")
    assert "did you mean 'rmse'" in exc.fix


def test_documented_empty_labels_and_schema_are_accepted(tmp_path: Path) -> None:
    prompt = load_prompt(write(tmp_path, MINIMAL + "output:\n  type: number\n  labels: []\n"
                               "  json_schema: {}\n"))
    assert prompt.output.labels == ()
    assert prompt.output.json_schema is None


def test_valid_output_and_thresholds(tmp_path: Path) -> None:
    prompt = load_prompt(write(tmp_path, MINIMAL + (
        "output:\n  type: label\n  labels: [a, b, 3]\n"
        "metrics: [accuracy, f1_macro, format_validity]\n"
        "thresholds:\n  accuracy: {min: 0.8, max: 1}\n  max_regression: {accuracy: 0.05}\n")))
    assert prompt.output.labels == ("a", "b", "3")
    assert prompt.thresholds == {"accuracy": {"min": 0.8, "max": 1},
                                 "max_regression": {"accuracy": 0.05}}


def test_json_output_with_schema(tmp_path: Path) -> None:
    prompt = load_prompt(write(tmp_path, MINIMAL + (
        "output:\n  type: json\n  json_schema:\n    type: object\n    required: [a]\n")))
    assert prompt.output.json_schema == {"type": "object", "required": ["a"]}


def test_pattern_that_does_not_compile_names_the_pattern_line(tmp_path: Path) -> None:
    exc = prompt_error(tmp_path, MINIMAL + "output:\n  type: number\n  pattern: '(?P<answer>\\d+'\n")
    assert exc.line == 6
    assert "pattern" in exc.message
    assert "regular expression" in exc.fix


def test_double_quoted_pattern_backslashes(tmp_path: Path) -> None:
    # In double quotes YAML itself rejects "\d"; the error still names the line.
    exc = prompt_error(tmp_path, MINIMAL + 'output:\n  pattern: "\\d+"\n')
    assert exc.line == 5


# --- YAML-level problems ------------------------------------------------------------

def test_bad_indentation(tmp_path: Path) -> None:
    exc = prompt_error(tmp_path, "name: x\nmessages:\n  - role: user\n   content: hi\n")
    assert exc.line == 4
    assert "YAML" in exc.message


def test_prompt_file_that_is_a_list(tmp_path: Path) -> None:
    exc = prompt_error(tmp_path, "- role: user\n  content: hi\n")
    assert exc.line == 1
    assert "mapping" in exc.message


def test_empty_prompt_file(tmp_path: Path) -> None:
    exc = prompt_error(tmp_path, "")
    assert "mapping" in exc.message


def test_python_object_tag_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "created"
    exc = prompt_error(tmp_path, f"name: !!python/object/apply:os.mkdir ['{marker}']\n" + MINIMAL)
    assert not marker.exists()
    assert exc.line == 1
    assert "tag" in exc.message


def test_duplicate_top_level_key(tmp_path: Path) -> None:
    exc = prompt_error(tmp_path, MINIMAL + "messages:\n  - role: user\n    content: again\n")
    assert exc.line == 4
    assert "duplicate" in exc.message and "line 1" in exc.message


def test_non_utf8_prompt(tmp_path: Path) -> None:
    exc = prompt_error(tmp_path, b"description: caf\xe9\n" + MINIMAL.encode())
    assert exc.line == 1
    assert "UTF-8" in exc.message


def test_missing_prompt_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        load_prompt(tmp_path / "nope.yaml")
    assert "not found" in info.value.message
    assert info.value.file == str(tmp_path / "nope.yaml")


def test_prompt_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        load_prompt(tmp_path)
    assert "directory" in info.value.message


def test_parse_prompt_from_bytes_uses_the_given_path() -> None:
    prompt = parse_prompt(MINIMAL.encode(), Path("somewhere/at_ref.yaml"))
    assert prompt.name == "at_ref"
    assert prompt.path == Path("somewhere/at_ref.yaml")


# --- Jinja syntax --------------------------------------------------------------------

def test_jinja_syntax_error_in_a_block_names_the_exact_line(tmp_path: Path) -> None:
    text = ("messages:\n"                     # 1
            "  - role: system\n"              # 2
            "    content: hello\n"            # 3
            "  - role: user\n"                # 4
            "    content: |\n"                # 5
            "      first line\n"              # 6
            "      {{ text }}\n"              # 7
            "      {% for x in items %}\n"    # 8
            "      {{ x }\n")                 # 9
    exc = prompt_error(tmp_path, text)
    assert exc.line == 9
    assert "messages[1]" in exc.message
    assert "syntax" in exc.message


def test_jinja_unclosed_block_names_the_line_of_the_block(tmp_path: Path) -> None:
    text = ("messages:\n"
            "  - role: user\n"
            "    content: |\n"                # 3
            "      {% for x in items %}\n"    # 4
            "      {{ x }}\n")
    exc = prompt_error(tmp_path, text)
    assert exc.line in (4, 5)  # Jinja reports the last token before the end of the template
    assert "endfor" in exc.message


def test_jinja_syntax_error_in_a_quoted_string_names_its_line(tmp_path: Path) -> None:
    text = "name: x\nmessages:\n  - role: user\n    content: \"Text:\\n{{ text \"\n"
    exc = prompt_error(tmp_path, text)
    assert exc.line == 4
    assert "messages[0]" in exc.message


# --- rendering ------------------------------------------------------------------------

def test_examples_are_usable_in_templates(tmp_path: Path) -> None:
    prompt = one_template(tmp_path, "{% for ex in examples %}{{ loop.index }}. {{ ex.input.text }} -> "
                          "{{ ex.expected }} ({{ ex.id }})\n{% endfor %}Now: {{ text }}")
    content = prompt.render({"text": "third"}, row_id="r1")[0]["content"]
    assert content == "1. first -> 1 (ex1)\n2. second -> 2 (ex2)\nNow: third\n"


def test_examples_tojson_and_filters(tmp_path: Path) -> None:
    prompt = one_template(tmp_path, "{{ examples | map(attribute='expected') | list | tojson }} "
                          "{{ text | upper }} {{ examples | length }}")
    assert prompt.render({"text": "abc"})[0]["content"] == "[1, 2] ABC 2\n"


def test_methods_of_plain_data_still_work(tmp_path: Path) -> None:
    prompt = one_template(tmp_path, "{{ text.strip().upper() }}|{% for k, v in meta.items() %}"
                          "{{ k }}={{ v }};{% endfor %}|{{ ', '.join(tags) }}|{{ meta.get('a') }}")
    out = prompt.render({"text": " hi ", "meta": {"a": 1, "b": 2}, "tags": ["x", "y"]})
    assert out[0]["content"] == "HI|a=1;b=2;|x, y|1\n"


def test_jinja_helpers_still_work(tmp_path: Path) -> None:
    prompt = one_template(tmp_path, "{% set ns = namespace(total=0) %}{% for i in range(4) %}"
                          "{% set ns.total = ns.total + i %}{% endfor %}{{ ns.total }}"
                          "{% set c = cycler('a', 'b') %}{{ c.next() }}{{ c.next() }}"
                          "{{ dict(k=1).k }}")
    assert prompt.render({"text": ""})[0]["content"] == "6ab1\n"


def test_missing_variable_names_file_template_and_row(tmp_path: Path) -> None:
    text = ("messages:\n"
            "  - role: system\n"
            "    content: You help.\n"
            "  - role: user\n"
            "    content: |\n"                 # 5
            "      Subject: {{ subject }}\n"   # 6
            "      Body: {{ body }}\n")        # 7
    prompt = load_prompt(write(tmp_path, text))
    exc = render_error(prompt, {"subject": "hi"}, row_id="t07")
    assert "messages[1]" in exc.message
    assert "'t07'" in exc.message
    assert "body" in exc.message
    assert exc.line == 7
    assert "t07" in exc.fix


def test_missing_nested_variable(tmp_path: Path) -> None:
    prompt = one_template(tmp_path, "{{ text.missing }}")
    exc = render_error(prompt, {"text": {"present": 1}}, row_id="r9")
    assert "'r9'" in exc.message and "missing" in exc.message


def test_example_lacking_a_variable_is_named(tmp_path: Path) -> None:
    prompt = load_prompt(write(tmp_path, MINIMAL + "examples:\n  - input: {other: 1}\n"))
    example = prompt.examples[0]
    exc = render_error(prompt, example.input, row_id=example.id)
    assert "'ex1'" in exc.message
    assert "text" in exc.message


def test_undefined_used_in_an_expression_is_an_error(tmp_path: Path) -> None:
    prompt = one_template(tmp_path, "{% if nothing %}yes{% endif %}{{ text }}")
    exc = render_error(prompt, {"text": "a"})
    assert "nothing" in exc.message


def test_rendering_error_inside_the_template(tmp_path: Path) -> None:
    prompt = one_template(tmp_path, "{{ text / 0 }}")
    exc = render_error(prompt, {"text": 1})
    assert "messages[0]" in exc.message and "'r1'" in exc.message


def test_rendering_does_not_change_rows_or_examples(tmp_path: Path) -> None:
    prompt = one_template(tmp_path, "{{ text }}{{ examples[0].input.text }}")
    row = {"text": "x"}
    prompt.render(row)
    assert row == {"text": "x"}
    assert prompt.examples[0].input == {"text": "first"}


# --- sandbox ------------------------------------------------------------------------------

REFUSED = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ examples.__class__ }}",
    "{{ text.__class__ }}",
    "{{ text['__class__'] }}",
    "{{ text|attr('__class__') }}",
    "{{ examples|map(attribute='__class__')|list }}",
    "{{ [].append(1) }}",
    "{{ examples.append(1) }}",
    "{{ examples[0].update(id='x') }}",
    "{{ examples[0].pop('id') }}",
    "{{ dict.update(examples[0], id='x') }}",
    "{{ dict.pop(examples[0], 'id') }}",
    "{{ ''.format }}",
    "{{ text.upper }}",
    "{{ text|attr('upper') }}",
    "{{ '' ~ text.upper }}",
    "{{ text.upper|string }}",
    "{{ text.upper|pprint }}",
    "{{ '%s' % text.upper }}",
    "{{ '{}'.format(text.upper) }}",
    "{{ '{0.__class__}'.format(text) }}",
    "{{ '{0.upper}'.format(text) }}",
    "{{ [text.upper] }}",
    "{{ examples.__len__() }}",
    "{{ lipsum.__globals__ }}",
    "{{ lipsum }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ cycler }}",
    "{{ range }}",
    "{{ dict }}",
    "{{ namespace }}",
    "{{ self }}",
    "{{ self.__init__ }}",
    "{{ text|map('upper') }}",
    "{{ [3, 1]|reverse }}",
    "{% for i in [1] %}{{ loop }}{% endfor %}",
    "{% macro m() %}x{% endmacro %}{{ m }}",
]

# Markers of Python internals that must never reach a rendered prompt.
LEAKS = re.compile(r"<(class|function|built-in|bound|method|generator|module|jinja2|"
                   r"TemplateReference|LoopContext|Macro|Namespace)|0x[0-9a-f]{6,}|__\w+__")


@pytest.mark.parametrize("template", REFUSED)
def test_sandbox_refuses_python_internals(tmp_path: Path, template: str) -> None:
    prompt = one_template(tmp_path, template)
    exc = render_error(prompt, {"text": "hello"})
    assert "messages[0]" in exc.message
    assert exc.line in (3, 4)  # the content: key or the template's (only) line


def test_sandbox_refusal_says_it_is_the_sandbox_and_where(tmp_path: Path) -> None:
    prompt = one_template(tmp_path, "first line\n{{ ''.__class__ }}")
    exc = render_error(prompt, {"text": "a"}, row_id="r7")
    assert "sandbox" in exc.message
    assert "'r7'" in exc.message
    assert exc.line == 5


def test_class_methods_cannot_mutate_the_examples(tmp_path: Path) -> None:
    prompt = one_template(tmp_path, "{{ dict.update(examples[0].input, text='changed') }}")
    render_error(prompt, {"text": "a"})
    assert prompt.examples[0].input == {"text": "first"}


@pytest.mark.parametrize("template", [
    "{{ text }}", "{{ examples }}", "{{ examples[0] }}", "{{ text.upper() }}",
    "{{ range(3) }}", "{{ meta.items() }}", "{{ meta.keys() }}", "{{ dict(a=1) }}",
    "{{ text|map('upper')|list }}",
    "{{ examples|groupby('expected') }}", "{{ '%s!'|format(text) }}", "{{ '%s!' % text }}",
])
def test_what_renders_carries_no_python_internals(tmp_path: Path, template: str) -> None:
    prompt = one_template(tmp_path, template)
    content = prompt.render({"text": "hello", "meta": {"a": 1}})[0]["content"]
    assert content.strip()
    assert not LEAKS.search(content), content


def test_rendered_containers_are_plain_data(tmp_path: Path) -> None:
    prompt = one_template(tmp_path, "{{ meta.items() }}|{{ range(3) }}")
    assert prompt.render({"text": "", "meta": {"a": 1}})[0]["content"] == "[('a', 1)]|[0, 1, 2]\n"


def test_an_undefined_inside_a_list_is_not_printed_as_undefined(tmp_path: Path) -> None:
    prompt = one_template(tmp_path, "{{ [text.nope] }}")
    exc = render_error(prompt, {"text": "a"})
    assert "nope" in exc.message


def test_huge_ranges_are_refused(tmp_path: Path) -> None:
    prompt = one_template(tmp_path, "{{ range(10**9)|list|length }}")
    exc = render_error(prompt, {"text": "a"})
    assert "range" in exc.message.lower()


# --- plain JSON data, sizes and what errors quote -------------------------------------------

def test_dates_in_a_prompt_stay_the_text_as_written(tmp_path: Path) -> None:
    prompt = load_prompt(write(tmp_path, MINIMAL + "examples:\n  - input: {text: 2024-01-01}\n"
                               "    expected: 2024-01-02\n"))
    assert prompt.examples[0].input == {"text": "2024-01-01"}
    assert prompt.examples[0].expected == "2024-01-02"
    assert prompt.render(prompt.examples[0].input)[0]["content"] == "2024-01-01"


@pytest.mark.parametrize("extra, line, needle", [
    ("params: {temperature: .nan}\n", 4, "finite"),
    ("examples:\n  - input: {text: !!binary aGk=}\n", 5, "binary"),
    ("examples:\n  - input: {text: !!set {a}}\n", 5, "set"),
    ("examples:\n  - &x\n    input: {text: [*x]}\n", 6, "recursive"),
    ("params: {seed: " + "9" * 5000 + "}\n", 4, "too large"),
])
def test_values_json_cannot_carry_are_refused_with_their_line(tmp_path: Path, extra: str, line: int,
                                                              needle: str) -> None:
    exc = prompt_error(tmp_path, MINIMAL + extra)
    assert exc.line == line
    assert needle in exc.message


@pytest.mark.parametrize("text", [
    "x" * 500 + ": 1\n" + MINIMAL,
    "messages:\n  - role: " + "r" * 500 + "\n    content: hi\n",
    "params: {temperature: '" + "t" * 500 + "'}\n" + MINIMAL,
    MINIMAL + "output: {type: " + "n" * 500 + "}\n",
    MINIMAL + "examples:\n  - {id: " + "e" * 500 + ", input: {text: a}}\n  - {id: " + "e" * 500
    + ", input: {text: b}}\n",
])
def test_errors_quote_what_the_file_says_cut_short(tmp_path: Path, text: str) -> None:
    exc = prompt_error(tmp_path, text)
    assert len(exc.message) < 200, exc.message


def test_a_render_error_quotes_the_row_id_cut_short(tmp_path: Path) -> None:
    prompt = load_prompt(write(tmp_path, MINIMAL))
    exc = render_error(prompt, {}, row_id="i" * 500)
    assert len(exc.message) < 200, exc.message


def test_a_prompt_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    exc = prompt_error(tmp_path, MINIMAL + "description: '" + "x" * (1024 * 1024) + "'\n")
    assert "larger than 1 MiB" in exc.message


def test_a_prompt_remembers_its_root(tmp_path: Path) -> None:
    prompt = load_prompt(write(tmp_path, MINIMAL), root=tmp_path)
    assert prompt.root == tmp_path
    assert parse_prompt(MINIMAL.encode(), tmp_path / "q.yaml").root is None


def test_load_evalset_without_an_evalset_says_so(tmp_path: Path) -> None:
    prompt = load_prompt(write(tmp_path, MINIMAL))
    with pytest.raises(InputError) as info:
        prompt.load_evalset()
    assert "no eval set" in info.value.message and info.value.fix
