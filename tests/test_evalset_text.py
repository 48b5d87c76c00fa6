"""One rule for input text: a row that `validate` accepts, `eval`, `--dry-run` and `check`
accept too, and a row one refuses all refuse, with the file, the line and the fix: lone
surrogates, huge integers and non-finite numbers, in JSONL, YAML and CSV eval sets and in
a prompt's few-shot examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptctl.errors import InputError
from promptctl.evalsets import load_evalset
from tests.fakeserver import FakeOpenAI
from tests.helpers import commit_all, git_identity, git_init, invoke

PROMPT = """\
model: gpt-4o-mini
messages:
  - role: user
    content: "{{ text }}"
evalset: ../evalsets/{name}
"""

GOOD = '{"input": {"text": "fine \\ud83d\\ude00"}, "expected": 1}\n'  # a pair: one emoji

# name -> (file text, line at fault, what the message says)
BAD = {
    "surrogate.jsonl": (GOOD + '{"input": {"text": "a\\udc80b"}}\n', 2, "lone surrogate (U+DC80)"),
    "high.jsonl": (GOOD + '{"input": {"text": "x"}, "expected": ["\\ud800"]}\n', 2,
                   "lone surrogate (U+D800)"),
    "key.jsonl": (GOOD + '{"input": {"text": "x"}, "metadata": {"\\udfff": 1}}\n', 2,
                  "lone surrogate (U+DFFF)"),
    "step.jsonl": (GOOD + '{"input": {"text": "x"}, "steps": {"s": "\\udd00"}}\n', 2,
                   "lone surrogate (U+DD00)"),
    "huge.jsonl": (GOOD + '{"input": {"text": "x"}, "expected": ' + "7" * 5000 + "}\n", 2,
                   "a number written with 5,000 characters is too large"),
    "wide.jsonl": (GOOD + '{"input": {"text": "x"}, "expected": {"a": [' + "7" * 400 + "]}}\n", 2,
                   "too large"),
    "inf.jsonl": (GOOD + '{"input": {"text": "x"}, "expected": 1e400}\n', 2, "too large"),
    "surrogate.yaml": ("- input: {text: ok}\n- input: {text: \"a\\udc80\"}\n", 2,
                       "invalid Unicode character escape"),
    "huge.yaml": ("- input: {text: ok}\n- input: {text: x}\n  expected: " + "7" * 5000 + "\n", 3,
                  "too large"),
    "inf.yaml": ("- input: {text: ok}\n- input: {text: x}\n  expected: 1.0e+400\n", 3,
                 "not a finite number"),
    "huge.csv": ("text,expected\nok,1\nx," + "7" * 5000 + "\n", 3, "too large"),
    "inf.csv": ("text,expected\nok,1\nx,1e400\n", 3, "not a finite number"),
}


def project(root: Path, name: str, text: str) -> Path:
    (root / "prompts").mkdir(parents=True, exist_ok=True)
    (root / "evalsets").mkdir(exist_ok=True)
    (root / "prompts" / "p.yaml").write_text(PROMPT.format(name=name), encoding="utf-8")
    (root / "evalsets" / name).write_text(text, encoding="utf-8")
    return root


@pytest.mark.parametrize("name", list(BAD))
def test_every_command_refuses_the_same_row(name: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            api: FakeOpenAI) -> None:
    text, line, message = BAD[name]
    monkeypatch.chdir(project(tmp_path / "proj", name, text))
    for args in (["validate", "prompts/p.yaml"], ["eval", "prompts/p.yaml"],
                 ["eval", "prompts/p.yaml", "--dry-run"],
                 ["eval", "prompts/p.yaml", "--evalset", f"evalsets/{name}"]):
        result = invoke(*args, code=2)
        out = result.stdout + result.stderr
        assert f"evalsets/{name}:{line}" in out and message in out, out
        assert "fix:" in out and "Traceback" not in out
    assert api.count == 0


def test_a_large_streamed_set_refuses_a_late_row(tmp_path: Path) -> None:
    """Past the rows kept parsed, the set is read again on each pass: the same rule."""
    rows = "".join(json.dumps({"input": {"text": f"t{i}"}}) + "\n" for i in range(6000))
    path = tmp_path / "big.jsonl"
    path.write_text(rows + '{"input": {"text": "\\udc80"}}\n', encoding="utf-8")
    with pytest.raises(InputError, match="lone surrogate") as found:
        load_evalset(path)
    assert found.value.line == 6001


def test_a_surrogate_in_a_few_shot_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = project(tmp_path / "proj", "ok.jsonl", GOOD)
    (root / "prompts" / "p.yaml").write_text(
        PROMPT.format(name="ok.jsonl") + "examples:\n  - input: {text: ok}\n"
        "  - input: {text: x}\n    expected: " + "7" * 5000 + "\n", encoding="utf-8")
    monkeypatch.chdir(root)
    result = invoke("validate", "prompts/p.yaml", code=2)
    assert "prompts/p.yaml:9" in result.stderr + result.stdout
    assert "too large" in result.stderr + result.stdout


def test_check_refuses_it_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              api: FakeOpenAI) -> None:
    git_identity(monkeypatch)
    root = project(git_init(tmp_path / "repo"), "e.jsonl", GOOD)
    base = commit_all(root, "base")
    (root / "evalsets" / "e.jsonl").write_text(GOOD + '{"input": {"text": "\\udc80"}}\n',
                                               encoding="utf-8")
    commit_all(root, "a surrogate")
    monkeypatch.chdir(root)
    result = invoke("check", "--base", base, code=2)
    out = result.stdout + result.stderr
    assert "evalsets/e.jsonl:2" in out and "lone surrogate" in out
    assert "Traceback" not in out and "crashed" not in out
