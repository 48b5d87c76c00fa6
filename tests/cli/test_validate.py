"""`promptctl validate` and `promptctl init` through the real Typer app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import Result

from tests.fakeserver import FakeOpenAI
from tests.helpers import copy_examples, git_init, run_cli

PROMPT = """\
name: greet
messages:
  - role: system
    content: |
      Reply with the greeting.
      {% for ex in examples %}{{ ex.input.name }} -> {{ ex.expected }}
      {% endfor %}
  - role: user
    content: "Greet {{ name }}"
examples:
  - input: {name: Ann}
    expected: Hello Ann
evalset: ../evalsets/greet.jsonl
metrics: [exact_match, format_validity]
"""

EVALSET = '{"id": "g1", "input": {"name": "Bo"}, "expected": "Hello Bo"}\n' \
          '{"id": "g2", "input": {"name": "Cy"}, "expected": "Hello Cy"}\n'


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small valid project, and the current directory inside it."""
    root = tmp_path / "proj"
    (root / "prompts").mkdir(parents=True)
    (root / "evalsets").mkdir()
    (root / "prompts" / "greet.yaml").write_text(PROMPT, encoding="utf-8")
    (root / "evalsets" / "greet.jsonl").write_text(EVALSET, encoding="utf-8")
    monkeypatch.chdir(root)
    return root


def assert_one_clear_error(result: Result, file: str, line: int | None) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    where = file if line is None else f"{file}:{line}"
    assert where in result.output, result.output
    assert "fix:" in result.output, result.output
    assert error_lines(result) == 1, result.output


def error_lines(result: Result) -> int:
    return sum(1 for line in result.output.splitlines() if line.startswith("error"))


# --- valid files -----------------------------------------------------------------------

def test_valid_project_exits_0(project: Path) -> None:
    result = run_cli("validate")
    assert result.exit_code == 0, result.output
    assert "prompts/greet.yaml" in result.stdout
    assert "evalsets/greet.jsonl" in result.stdout
    assert "2 rows" in result.stdout
    assert error_lines(result) == 0


def test_named_files_exit_0(project: Path) -> None:
    result = run_cli("validate", "prompts/greet.yaml")
    assert result.exit_code == 0, result.output
    assert "prompts/greet.yaml" in result.stdout
    assert "evalsets/greet.jsonl" not in result.stdout


def test_shipped_project_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy_examples(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = run_cli("validate")
    assert result.exit_code == 0, result.output
    for name in ("controversy.yaml", "ticket_routing.yaml", "extract_contact.yaml",
                 "controversy.jsonl", "tickets.csv", "contacts.yaml"):
        assert name in result.stdout


def test_directory_argument_means_the_files_in_it(project: Path) -> None:
    (project / "evalsets" / "more.csv").write_text("name,expected\nDi,Hello Di\n", encoding="utf-8")
    result = run_cli("validate", "evalsets")
    assert result.exit_code == 0, result.output
    assert "evalsets/greet.jsonl" in result.stdout
    assert "evalsets/more.csv" in result.stdout


def test_yaml_eval_set_outside_evalsets_is_recognised(project: Path) -> None:
    (project / "data.yaml").write_text("# rows\n- input: {name: Ed}\n", encoding="utf-8")
    result = run_cli("validate", "data.yaml")
    assert result.exit_code == 0, result.output
    assert "eval set, 1 rows" in result.stdout


def test_nothing_to_validate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("validate")
    assert result.exit_code == 2, result.output
    assert "nothing to validate" in result.output
    assert "fix:" in result.output


# --- each bad input: exit 2, one message with file, line and fix -------------------------

BAD_EVALSETS = [
    # (id, file name, content, line)
    ("malformed json", "bad.jsonl", '{"input": {"name": "a"}}\n\n{"input": {"name": "b"},}\n', 3),
    ("csv column count after multi-line field", "bad.csv",
     'id,name\nr1,"two\nlines"\nr2,x,extra\n', 4),
    ("csv unclosed quote", "bad.csv", 'id,name\nr1,a\nr2,"open\n', 3),
    ("yaml item", "bad.yaml", "- input: {name: a}\n- input: {name: b}\n  extra: 1\n", 2),
    ("yaml not a list", "bad.yml", "- input: {name: a}\nname: b\n", 2),
    ("empty", "bad.jsonl", "", None),
    ("duplicate ids", "bad.jsonl", '{"id": 1, "input": {}}\n{"id": 2, "input": {}}\n{"id": 1, "input": {}}\n',
     3),
    ("non utf-8", "bad.jsonl", b'{"input": {"name": "a"}}\n{"input": {"name": "\xe9"}}\n', 2),
    ("unknown row key", "bad.jsonl", '{"input": {"name": "a"}, "expect": 1}\n', 1),
    ("input not a mapping", "bad.jsonl", '{"input": "a"}\n', 1),
]


@pytest.mark.parametrize(("name", "content", "line"), [c[1:] for c in BAD_EVALSETS],
                         ids=[c[0] for c in BAD_EVALSETS])
def test_bad_eval_set(project: Path, name: str, content: str | bytes, line: int | None) -> None:
    path = project / "evalsets" / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    result = run_cli("validate", f"evalsets/{name}")
    assert_one_clear_error(result, f"evalsets/{name}", line)


BAD_PROMPTS = [
    ("misspelled key", PROMPT + "metircs: [exact_match]\n", 15, "did you mean 'metrics'"),
    ("params not a mapping", PROMPT.replace("name: greet\n", "name: greet\nparams: [1]\n"), 2,
     "params"),
    ("bad role", PROMPT.replace("role: user", "role: human"), 8, "'human'"),
    ("unknown metric", PROMPT.replace("exact_match,", "exact_macth,"), 14, "'exact_macth'"),
    ("unknown output type", PROMPT + "output: {type: float}\n", 15, "'float'"),
    ("label without labels", PROMPT + "output:\n  type: label\n", 16, "labels"),
    ("invalid json schema", PROMPT + "output:\n  type: json\n  json_schema: {type: 5}\n", 17,
     "JSON Schema"),
    ("threshold unknown metric", PROMPT + "thresholds:\n  acuracy: {min: 1}\n", 16, "'acuracy'"),
    ("threshold not a number", PROMPT + "thresholds:\n  exact_match: {min: high}\n", 16, "number"),
    ("regex does not compile", PROMPT + "output:\n  pattern: 'Hello (\\w+'\n", 16, "pattern"),
    ("jinja syntax", PROMPT.replace("Greet {{ name }}", "Greet {{ name"), 9, "syntax"),
    ("bad indentation", PROMPT.replace("  - role: user\n", "  - role: user\n   x: 1\n"), 9, "YAML"),
    ("list file", "- role: user\n  content: hi\n", 1, "mapping"),
    ("python tag", PROMPT.replace("name: greet", "name: !!python/object/apply:os.getcwd []"), 1,
     "tag"),
    ("sandbox", PROMPT.replace("Greet {{ name }}", "Greet {{ name.__class__ }}"), 9, "sandbox"),
    ("unsafe method", PROMPT.replace("Greet {{ name }}", "Greet {{ ''.format }}"), 9, "sandbox"),
    ("example lacks a variable", PROMPT.replace("input: {name: Ann}", "input: {nom: Ann}"), 6,
     "'ex1'"),
]


@pytest.mark.parametrize(("content", "line", "needle"), [c[1:] for c in BAD_PROMPTS],
                         ids=[c[0] for c in BAD_PROMPTS])
def test_bad_prompt(project: Path, content: str, line: int, needle: str) -> None:
    (project / "prompts" / "greet.yaml").write_text(content, encoding="utf-8")
    result = run_cli("validate", "prompts/greet.yaml")
    assert_one_clear_error(result, "prompts/greet.yaml", line)
    assert needle in result.output


def test_eval_set_row_lacking_a_variable(project: Path) -> None:
    (project / "evalsets" / "greet.jsonl").write_text(
        EVALSET + '{"id": "g3", "input": {"nom": "Di"}}\n', encoding="utf-8")
    result = run_cli("validate", "prompts/greet.yaml")
    assert_one_clear_error(result, "prompts/greet.yaml", 9)
    assert "'g3'" in result.output
    assert "messages[1]" in result.output
    assert "greet.jsonl:3" in result.output  # where the row is


def test_prompt_naming_a_missing_eval_set(project: Path) -> None:
    (project / "evalsets" / "greet.jsonl").unlink()
    result = run_cli("validate", "prompts/greet.yaml")
    assert_one_clear_error(result, "prompts/greet.yaml", 13)
    assert "greet.jsonl" in result.output


def test_prompt_naming_a_directory_as_eval_set(project: Path) -> None:
    (project / "evalsets" / "greet.jsonl").unlink()
    (project / "evalsets" / "greet.jsonl").mkdir()
    result = run_cli("validate", "prompts/greet.yaml")
    assert_one_clear_error(result, "prompts/greet.yaml", 13)
    assert "directory" in result.output


def test_prompt_whose_eval_set_is_bad_names_the_eval_set_line(project: Path) -> None:
    (project / "evalsets" / "greet.jsonl").write_text(EVALSET + "{oops\n", encoding="utf-8")
    result = run_cli("validate", "prompts/greet.yaml")
    assert_one_clear_error(result, "evalsets/greet.jsonl", 3)


def test_unknown_extension(project: Path) -> None:
    (project / "notes.txt").write_text("hello\n", encoding="utf-8")
    result = run_cli("validate", "notes.txt")
    assert_one_clear_error(result, "notes.txt", None)
    assert ".jsonl" in result.output


def test_missing_file(project: Path) -> None:
    result = run_cli("validate", "evalsets/absent.jsonl")
    assert_one_clear_error(result, "evalsets/absent.jsonl", None)
    assert "not found" in result.output


def test_missing_prompt_file(project: Path) -> None:
    result = run_cli("validate", "prompts/absent.yaml")
    assert_one_clear_error(result, "prompts/absent.yaml", None)
    assert "not found" in result.output


def test_empty_directory_argument(project: Path) -> None:
    (project / "empty").mkdir()
    result = run_cli("validate", "empty")
    assert_one_clear_error(result, "empty", None)


def test_bad_config_is_reported_with_its_line(project: Path) -> None:
    (project / "promptctl.yaml").write_text("store: x\nendpoints:\n  a: {base_url: x, gguf: y}\n",
                                            encoding="utf-8")
    result = run_cli("validate")
    assert_one_clear_error(result, "promptctl.yaml", 3)


def test_one_bad_file_among_good_ones(project: Path) -> None:
    (project / "evalsets" / "bad.jsonl").write_text('{"input": {}}\n{nope}\n', encoding="utf-8")
    (project / "evalsets" / "good.csv").write_text("name\nEd\n", encoding="utf-8")
    result = run_cli("validate")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "evalsets/bad.jsonl:2" in result.stderr
    for good in ("prompts/greet.yaml", "evalsets/greet.jsonl", "evalsets/good.csv"):
        assert f"ok     {good}" in result.stdout
    assert error_lines(result) == 1


# --- --json ------------------------------------------------------------------------------

def test_json_output_when_all_is_well(project: Path) -> None:
    result = run_cli("validate", "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    document = json.loads(result.stdout)
    assert document["ok"] is True
    assert [f["file"] for f in document["files"]] == ["prompts/greet.yaml", "evalsets/greet.jsonl"]
    assert all(f["ok"] for f in document["files"])


def test_json_output_with_an_error(project: Path) -> None:
    (project / "evalsets" / "bad.jsonl").write_text('{"input": {}}\n{nope}\n', encoding="utf-8")
    result = run_cli("validate", "--json")
    assert result.exit_code == 2, result.output
    document = json.loads(result.stdout)  # stdout holds the JSON document and nothing else
    assert document["ok"] is False
    by_file = {f["file"]: f for f in document["files"]}
    assert by_file["prompts/greet.yaml"]["ok"] is True
    bad = by_file["evalsets/bad.jsonl"]
    assert bad["ok"] is False
    assert bad["line"] == 2
    assert bad["error_file"] == "evalsets/bad.jsonl"
    assert "JSON" in bad["message"]
    assert bad["fix"]
    assert "evalsets/bad.jsonl:2" in bad["error"]


def test_json_output_for_a_prompt_error(project: Path) -> None:
    (project / "prompts" / "greet.yaml").write_text(PROMPT + "metircs: []\n", encoding="utf-8")
    result = run_cli("validate", "--json", "prompts/greet.yaml")
    assert result.exit_code == 2, result.output
    entry = json.loads(result.stdout)["files"][0]
    assert (entry["ok"], entry["line"]) == (False, 15)
    assert "did you mean 'metrics'" in entry["fix"]


# --- init -------------------------------------------------------------------------------

def test_init_creates_a_project_that_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("init")
    assert result.exit_code == 0, result.output
    for name in ("promptctl.yaml", "prompts/language.yaml", "evalsets/language.jsonl", ".gitignore"):
        assert (tmp_path / name).is_file(), name
        assert name in result.stdout
    assert ".promptctl/" in (tmp_path / ".gitignore").read_text(encoding="utf-8").splitlines()
    result = run_cli("validate")
    assert result.exit_code == 0, result.output
    assert "prompts/language.yaml: prompt, 6 few-shot examples" in result.stdout
    assert "evalsets/language.jsonl: eval set, 20 rows" in result.stdout


def test_init_ends_with_the_next_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("init")
    assert result.exit_code == 0, result.output
    created, steps = result.stdout.split("Next steps:")
    assert "created prompts/language.yaml" in created
    lines = [line.strip() for line in steps.splitlines()]
    assert lines[1].startswith("1. Edit prompts/language.yaml")
    # offline on the local model, and on the prompt's own model with a key
    assert "promptctl eval prompts/language.yaml --model local/smollm2" in lines
    assert "promptctl eval prompts/language.yaml" in lines
    assert any("OPENAI_API_KEY" in line for line in lines)
    assert any(line.startswith("3. ") and "promptctl runs" in line for line in lines)
    # outside git the commit step starts the repository, and adds exactly what init wrote
    assert ("git init && git add promptctl.yaml prompts/language.yaml evalsets/language.jsonl "
            '.gitignore && git commit -m "Add a promptctl project"') in lines
    assert any(line.startswith("5. ") and "promptctl init --github" in line for line in lines)
    assert not any(line.startswith("cd ") for line in lines)


def test_init_next_steps_in_a_repository_and_another_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    git_init(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = run_cli("init", "my project")
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.stdout.split("Next steps:")[1].splitlines()]
    assert lines[1] == "cd 'my project'"
    assert any(line.startswith("git add promptctl.yaml ") for line in lines)
    assert not any("git init" in line for line in lines)


def test_init_refuses_to_overwrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_cli("init").exit_code == 0
    prompt = tmp_path / "prompts" / "language.yaml"
    prompt.write_text("# my own edits\n", encoding="utf-8")
    result = run_cli("init")
    assert result.exit_code == 2, result.output
    assert "already exists" in result.output
    assert "fix:" in result.output
    assert "Traceback" not in result.output
    assert prompt.read_text(encoding="utf-8") == "# my own edits\n"


def test_init_refuses_when_any_file_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evalsets").mkdir()
    (tmp_path / "evalsets" / "language.jsonl").write_text("mine\n", encoding="utf-8")
    result = run_cli("init")
    assert result.exit_code == 2, result.output
    assert "language.jsonl" in result.output
    assert not (tmp_path / "promptctl.yaml").exists()


def test_init_into_a_directory_keeps_an_existing_gitignore(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "new"
    target.mkdir()
    (target / ".gitignore").write_text("*.pyc", encoding="utf-8")
    result = run_cli("init", "new")
    assert result.exit_code == 0, result.output
    assert (target / ".gitignore").read_text(encoding="utf-8") == "*.pyc\n.promptctl/\n"
    monkeypatch.chdir(target)
    assert run_cli("validate").exit_code == 0


# --- hostile inputs: validate and eval refuse the same, with exit 2, before anything is sent ----

# The CLI in a fresh interpreter whose address space is capped: a bomb that got through would
# end in MemoryError (exit 1) rather than swap the machine, and `timeout=` below turns a hang
# into a failure rather than a stuck suite.
BOUNDED_CLI = """\
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from promptctl.cli.app import app
app(sys.argv[1:], prog_name="promptctl")
"""


def start_cli(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", BOUNDED_CLI, *args], cwd=cwd, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("promptctl hung") from None
    return proc.returncode, out, err


def run_bounded(*argsets: tuple[str, ...], cwd: Path) -> list[tuple[int, str, str]]:
    """Run several bounded CLI processes, two at a time."""
    results: list[tuple[int, str, str]] = []
    for i in range(0, len(argsets), 2):
        procs = [start_cli(*args, cwd=cwd) for args in argsets[i:i + 2]]
        results.extend(finish(p) for p in procs)
    return results


def bomb_prompt(template: str, evalset: str = "../evalsets/greet.jsonl") -> str:
    body = "".join(f"      {line}\n" for line in template.splitlines())
    return f"name: bomb\nmessages:\n  - role: user\n    content: |\n{body}evalset: {evalset}\n"


TEMPLATE_BOMBS = [
    ("power", "{{ 7 ** 30000000 }}"),
    ("repeat", "{{ 'a' * 10**10 }}"),
    ("center", "{{ 'x'|center(10**10) }}"),
    ("str.format width", "{{ '{:>10000000000}'.format(1) }}"),
    ("indent", "{{ ('a\\n' * 1000)|indent(10**9) }}"),
    ("wordwrap", "{{ ('a ' * 100000)|wordwrap(1, wrapstring='x' * 1000) }}"),
    ("nested ranges", "{% for i in range(10**6) %}{% for j in range(10**6) %}{% endfor %}{% endfor %}"),
    ("nested loops", "{% for i in range(10**5) %}{% for j in range(10**5) %}{% endfor %}{% endfor %}"),
    ("lipsum", "{{ lipsum(n=10**8) }}"),
    ("range list", "{{ range(10**12)|list }}"),
    ("recursive macro", "{% macro m(n) %}{{ m(n) }}{{ m(n) }}{% endmacro %}{{ m(1) }}"),
    ("huge join", "{{ range(100000)|join('x' * 100000) }}"),
]

EVALSET_BOMBS = [
    # (name, content, line of the eval set)
    ("deep.yaml", "- input: {name: a}\n- input: {name: " + "[" * 900 + "]" * 900 + "}\n", 2),
    ("deep.jsonl", '{"input": {"name": "a"}}\n{"input": {"name": ' + "[" * 200_000 + "]" * 200_000
     + "}}\n", 2),
    ("digits.yaml", "- input: {name: a}\n  expected: " + "9" * 5000 + "\n", 2),
    ("digits.jsonl", '{"input": {"name": "a"}, "expected": ' + "9" * 5000 + "}\n", 1),
    ("digits.csv", "name,expected\na,1\nb," + "9" * 5000 + "\n", 3),
]


@pytest.fixture
def bombs(project: Path) -> list[tuple[str, str, int, str]]:
    """Prompt files that go off when rendered or loaded: (prompt, file the error names, line,
    what the message says)."""
    out = []
    for i, (_, template) in enumerate(TEMPLATE_BOMBS):
        (project / "prompts" / f"t{i}.yaml").write_text(bomb_prompt(template), encoding="utf-8")
        out.append((f"prompts/t{i}.yaml", f"prompts/t{i}.yaml", 5, "template"))
    for name, content, line in EVALSET_BOMBS:
        (project / "evalsets" / name).write_text(content, encoding="utf-8")
        stem = name.replace(".", "_")
        (project / "prompts" / f"{stem}.yaml").write_text(
            PROMPT.replace("greet.jsonl", name), encoding="utf-8")
        out.append((f"prompts/{stem}.yaml", f"evalsets/{name}", line, ""))
    return out


def test_validate_ends_every_bomb_with_exit_2(project: Path, bombs: list[tuple[str, str, int, str]]) -> None:
    ((code, out, err),) = run_bounded(("validate", "--json", *(b[0] for b in bombs)), cwd=project)
    assert code == 2, err
    assert "Traceback" not in err
    by_file = {f["file"]: f for f in json.loads(out)["files"]}
    for prompt, file, line, word in bombs:
        entry = by_file[prompt]
        assert entry["ok"] is False, prompt
        assert (os.path.normpath(entry["error_file"]), entry["line"]) == (file, line), entry
        assert word in entry["message"] and entry["fix"], entry


def test_eval_ends_every_bomb_with_exit_2_before_sending(project: Path, api: FakeOpenAI,
                                                        bombs: list[tuple[str, str, int, str]]) -> None:
    results = run_bounded(*(("eval", b[0], "--model", "gpt-4o-mini") for b in bombs), cwd=project)
    for (prompt, file, line, _), (code, _out, err) in zip(bombs, results, strict=True):
        assert code == 2, (prompt, err)
        assert "Traceback" not in err
        assert f"{file}:{line}" in err, err
        assert "fix:" in err
    assert api.count == 0, "nothing may be sent"


def test_the_bounded_cli_runs_a_good_prompt(project: Path, api: FakeOpenAI) -> None:
    # The memory cap above is not what ends the bombs: a good prompt runs under it.
    ((code, _out, err),) = run_bounded(("eval", "prompts/greet.yaml", "--model", "gpt-4o-mini"),
                                       cwd=project)
    assert code == 0, err
    assert api.count > 0


# --- validate and eval accept and refuse the same data ---------------------------------------

JSON_DATA = [
    # (id, eval set rows as YAML, line of the error or None when accepted)
    ("date", "- input: {name: Bo}\n  expected: 2024-01-01\n", None),
    ("timestamp tag", "- input: {name: Bo}\n  expected: !!timestamp 2024-01-01 10:00:00\n", None),
    ("number key", "- input: {name: Bo}\n  metadata: {1: a, yes: b}\n", None),
    ("binary", "- input: {name: Bo}\n- input: {name: !!binary aGk=}\n", 2),
    ("set", "- input: {name: Bo}\n- input: {name: !!set {a, b}}\n", 2),
    ("omap", "- input: {name: Bo}\n  metadata: !!omap [a: 1]\n", 2),
    ("recursive alias", "- input: {name: Bo}\n  metadata: &m {self: [*m]}\n", 2),
    ("nan", "- input: {name: Bo}\n  expected: .nan\n", 2),
    ("inf", "- input: {name: Bo}\n  expected: -.inf\n", 2),
    ("complex key", "- input: {name: Bo}\n  metadata: {? [a, b] : 1}\n", 2),
]


@pytest.mark.parametrize(("rows", "line"), [c[1:] for c in JSON_DATA], ids=[c[0] for c in JSON_DATA])
def test_validate_and_eval_agree_on_yaml_data(project: Path, api: FakeOpenAI, rows: str,
                                              line: int | None) -> None:
    (project / "evalsets" / "greet.yaml").write_text(rows, encoding="utf-8")
    (project / "evalsets" / "greet.jsonl").unlink()
    (project / "prompts" / "greet.yaml").write_text(PROMPT.replace("greet.jsonl", "greet.yaml"),
                                                    encoding="utf-8")
    checked = run_cli("validate", "prompts/greet.yaml")
    evaluated = run_cli("eval", "prompts/greet.yaml", "--model", "gpt-4o-mini", "--json")
    if line is None:
        assert checked.exit_code == 0, checked.output
        assert evaluated.exit_code == 0, evaluated.output
        (run,) = json.loads(evaluated.stdout)["runs"]
        assert run["n"] == 1
    else:
        assert_one_clear_error(checked, "evalsets/greet.yaml", line)
        assert evaluated.exit_code == 2, evaluated.output
        assert f"evalsets/greet.yaml:{line}" in evaluated.output
        assert "Traceback" not in evaluated.output
        assert api.count == 0


def test_a_yaml_date_is_scored_as_the_text_written(project: Path, api: FakeOpenAI) -> None:
    (project / "evalsets" / "d.yaml").write_text("- id: d1\n  input: {name: Bo}\n  expected: 2024-01-01\n",
                                                 encoding="utf-8")
    result = run_cli("eval", "prompts/greet.yaml", "--evalset", "evalsets/d.yaml", "--model",
                     "gpt-4o-mini", "--json")
    assert result.exit_code == 0, result.output
    (run,) = json.loads(result.stdout)["runs"]
    rows = json.loads(run_cli("show", run["id"], "--json").stdout)["rows"]
    assert [r["expected"] for r in rows if r["row_id"] == "d1"] == ["2024-01-01"]


def test_jsonl_duplicate_keys_are_refused_by_validate_and_eval(project: Path, api: FakeOpenAI) -> None:
    (project / "evalsets" / "greet.jsonl").write_text(
        EVALSET + '{"id": "g3", "input": {"name": "Di", "name": "Ed"}}\n', encoding="utf-8")
    assert_one_clear_error(run_cli("validate", "prompts/greet.yaml"), "evalsets/greet.jsonl", 3)
    evaluated = run_cli("eval", "prompts/greet.yaml", "--model", "gpt-4o-mini")
    assert evaluated.exit_code == 2 and "evalsets/greet.jsonl:3" in evaluated.output
    assert api.count == 0


def test_a_long_csv_document_validates(project: Path) -> None:
    doc = "word " * 60_000  # 300 KB, over the csv module's default field limit
    (project / "evalsets" / "docs.csv").write_text(f'name,expected\n"{doc}",x\n', encoding="utf-8")
    result = run_cli("validate", "evalsets/docs.csv")
    assert result.exit_code == 0, result.output


# --- files a prompt names stay inside the project ----------------------------------------------

SECRET = "OPENAI_API_KEY=sk-live-not-for-the-pr-comment"


@pytest.fixture
def secret_outside(project: Path) -> Path:
    path = project.parent / "outside.csv"
    path.write_text(SECRET + ",more\n1,2\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("how", ["relative", "absolute", "symlink", "dev-zero", "fifo"])
def test_a_prompt_cannot_make_promptctl_read_outside_the_project(project: Path, api: FakeOpenAI,
                                                                 secret_outside: Path, how: str) -> None:
    evalset = {"relative": "../../outside.csv", "absolute": str(secret_outside)}.get(how, "../evalsets/x.csv")
    if how == "symlink":
        (project / "evalsets" / "x.csv").symlink_to(secret_outside)
    elif how == "dev-zero":
        (project / "evalsets" / "x.csv").symlink_to("/dev/zero")
    elif how == "fifo":
        os.mkfifo(project / "evalsets" / "x.csv")
    (project / "prompts" / "greet.yaml").write_text(PROMPT.replace("../evalsets/greet.jsonl", evalset),
                                                    encoding="utf-8")
    results = run_bounded(("validate", "prompts/greet.yaml"),
                          ("eval", "prompts/greet.yaml", "--model", "gpt-4o-mini"), cwd=project)
    for code, out, err in results:
        assert code == 2, err
        assert "prompts/greet.yaml:13" in err, err
        assert "Traceback" not in err and "fix:" in err
        assert "sk-live" not in out + err
    assert api.count == 0


# --- expected answers no answer can be -------------------------------------------------

ROUTER = """\
name: route
messages:
  - role: user
    content: "Route {{ text }}"
examples:
  - input: {text: my invoice}
    expected: EXAMPLE
output:
  type: TYPE
  LABELS
metrics: METRICS
evalset: ../evalsets/route.jsonl
"""


def router(root: Path, type_: str, expected: object, *, metrics: str = "[exact_match]",
           example: object = None) -> None:
    """prompts/route.yaml (answers read as `type_`; labels billing and technical for a label)
    and a two-row eval set whose second row (line 2) expects `expected`."""
    labels = "labels: [billing, technical]" if type_ == "label" else ""
    if example is None:
        example = "billing" if type_ in ("label", "string") else 1
    text = (ROUTER.replace("TYPE", type_).replace("LABELS", labels)
            .replace("METRICS", metrics).replace("EXAMPLE", json.dumps(example)))
    (root / "prompts" / "route.yaml").write_text(text, encoding="utf-8")
    (root / "evalsets" / "route.jsonl").write_text(
        json.dumps({"id": "r1", "input": {"text": "a"}, "expected": "billing" if type_ in (
            "label", "string") else 1}) + "\n"
        + json.dumps({"id": "r2", "input": {"text": "b"}, "expected": expected}) + "\n",
        encoding="utf-8")


IMPOSSIBLE = [
    # (id, output type, metrics, the second row's expected, part of the message, part of the fix)
    ("not a label", "label", "[accuracy, f1_macro]", "Klingon",
     "row 'r2' expects 'Klingon', which is not one of the labels (billing, technical): no answer "
     "can match it, so accuracy, f1_macro can never score it as meant (answers are read by "
     "output: of prompts/route.yaml)", "add it to the labels"),
    ("a mapping for a number", "number", "[rmse]", {"value": 3},
     'row \'r2\' expects {"value": 3}, which is a mapping, not a number', "write the expected "
     "answer as a number"),
    ("a fraction for an integer", "integer", "[exact_match]", 2.5,
     "row 'r2' expects 2.5, which is not a whole number", "read answers as type: number"),
    ("a list for text", "string", "[exact_match]", ["a", "b"],
     "which is a list, but answers are read as text", "type: json"),
    ("true for a number", "number", "[mae]", True, "which is true or false, not a number",
     "as a number"),
]


@pytest.mark.parametrize(("type_", "metrics", "expected", "message", "fix"),
                         [c[1:] for c in IMPOSSIBLE], ids=[c[0] for c in IMPOSSIBLE])
def test_an_expected_answer_no_answer_can_be_is_refused_before_anything_is_sent(
        project: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, type_: str,
        metrics: str, expected: object, message: str, fix: str) -> None:
    router(project, type_, expected, metrics=metrics)
    result = run_cli("validate", "prompts/route.yaml")
    assert_one_clear_error(result, "evalsets/route.jsonl", 2)
    assert message in result.output and fix in result.output, result.output
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-validate")
    result = run_cli("eval", "prompts/route.yaml", "--model", "gpt-4o-mini")
    assert_one_clear_error(result, "evalsets/route.jsonl", 2)
    assert message in result.output
    assert fake_openai.count == 0


def test_a_few_shot_example_is_checked_too_naming_the_prompt_line(project: Path) -> None:
    router(project, "label", "billing", metrics="[accuracy]", example="Klingon")
    result = run_cli("validate", "prompts/route.yaml")
    assert_one_clear_error(result, "prompts/route.yaml", 6)
    assert "example 'ex1' expects 'Klingon', which is not one of the labels" in result.output


POSSIBLE = [
    # (id, output type, metrics, expected): an answer can equal it, or no metric compares them.
    ("a label in another case", "label", "[accuracy]", "BILLING"),
    ("a number written as text", "number", "[rmse, exact_match]", " 7.5 "),
    ("a whole float for an integer", "integer", "[exact_match]", 3.0),
    ("a number for text", "string", "[exact_match]", 7),
    ("anything for JSON", "json", "[exact_match]", {"value": [1, None]}),
    ("anything when no metric compares", "label", "[format_validity, contains]", {"k": "v"}),
]


@pytest.mark.parametrize(("type_", "metrics", "expected"), [c[1:] for c in POSSIBLE],
                         ids=[c[0] for c in POSSIBLE])
def test_an_expected_answer_an_answer_can_be_is_accepted(
        project: Path, type_: str, metrics: str, expected: object) -> None:
    router(project, type_, expected, metrics=metrics)
    result = run_cli("validate", "prompts/route.yaml")
    assert result.exit_code == 0, result.output


def test_a_pipeline_step_expecting_what_its_prompt_cannot_answer_is_refused(
        project: Path) -> None:
    router(project, "label", "billing", metrics="[accuracy]")
    (project / "pipelines").mkdir()
    (project / "pipelines" / "flow.yaml").write_text(
        "kind: pipeline\nsteps:\n  - id: route\n    prompt: ../prompts/route.yaml\n"
        "    input: {text: '{{ input.text }}'}\noutput: '{{ steps.route.answer }}'\n"
        "output_type: label\nlabels: [billing, technical]\nmetrics: [exact_match]\n"
        "evalset: ../evalsets/flow.jsonl\n", encoding="utf-8")
    (project / "evalsets" / "flow.jsonl").write_text(
        '{"id": "f1", "input": {"text": "a"}, "expected": "billing", "steps": {"route": null}}\n'
        '{"id": "f2", "input": {"text": "b"}, "expected": "billing", "steps": {"route": "tech"}}\n',
        encoding="utf-8")
    result = run_cli("validate", "pipelines/flow.yaml")
    assert_one_clear_error(result, "evalsets/flow.jsonl", 2)
    assert ("row 'f2' for step route expects 'tech', which is not one of the labels (billing, "
            "technical): no answer can match it (answers are read by output: of "
            "prompts/route.yaml)") in result.output
    (project / "evalsets" / "flow.jsonl").write_text(
        '{"id": "f1", "input": {"text": "a"}, "expected": "Klingon"}\n', encoding="utf-8")
    result = run_cli("validate", "pipelines/flow.yaml")
    assert_one_clear_error(result, "evalsets/flow.jsonl", 1)
    assert "so exact_match can never score it as meant (answers are read by output_type: of " \
           "pipelines/flow.yaml)" in result.output


def test_unreviewed_rows_are_counted_and_a_bad_flag_named(project: Path) -> None:
    rows = project / "evalsets" / "greet.jsonl"
    rows.write_text(EVALSET + '{"id": "p1", "input": {"name": "Di"}, "expected": "Hello Di", '
                    '"source": "probe", "reviewed": false}\n', encoding="utf-8")
    result = run_cli("validate")
    assert result.exit_code == 0, result.output
    assert "evalsets/greet.jsonl: eval set, 2 rows, 1 unreviewed" in result.stdout
    assert "every row of greet.jsonl (2) renders, 1 unreviewed" in result.stdout
    rows.write_text(EVALSET + '{"input": {"name": "Di"}, "reviewed": "no"}\n', encoding="utf-8")
    assert_one_clear_error(run_cli("validate", "evalsets/greet.jsonl"), "evalsets/greet.jsonl", 3)


def test_an_eval_set_with_only_unreviewed_rows_cannot_be_evaluated(project: Path,
                                                                   api: FakeOpenAI) -> None:
    (project / "evalsets" / "greet.jsonl").write_text(
        '{"input": {"name": "Di"}, "reviewed": false}\n', encoding="utf-8")
    result = run_cli("eval", "prompts/greet.yaml", "--model", "gpt-4o-mini")
    assert result.exit_code == 2, result.output
    assert "every row of the eval set is unreviewed" in result.output
    assert not api.chat_requests
