"""`diff`, `history` and `check` with `--json`: the documents stay exactly as they were written
down in tests/data/golden (run ids, times and latencies replaced by placeholders).

Set PROMPTCTL_WRITE_GOLDEN=1 to write the files again after a deliberate change of a document.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests import checkrepo
from tests.cli import test_diff
from tests.fakeserver import FakeOpenAI
from tests.helpers import eval_run, git, git_identity, git_init, invoke, use_fake_openai

GOLDEN = Path(__file__).parents[1] / "data" / "golden"
# Fixed commit dates make the commits' shas, and history's dates, the same on every run.
DATE = "2024-05-01T12:00:00+00:00"
RUN_KEYS = ("id", "run", "current_run", "baseline_run")
VOLATILE = {"created_at": "<time>", "latency_ms": "<latency>"}


def _run_ids(value: Any, found: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k in RUN_KEYS and isinstance(v, str) and v not in found:
                found[v] = f"<run {len(found) + 1}>"
            _run_ids(v, found)
    elif isinstance(value, list):
        for v in value:
            _run_ids(v, found)


def _normal(value: Any, runs: dict[str, str], pattern: re.Pattern[str] | None) -> Any:
    if isinstance(value, dict):
        return {k: VOLATILE[k] if k in VOLATILE and v is not None else _normal(v, runs, pattern)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v, runs, pattern) for v in value]
    if isinstance(value, str) and pattern is not None:
        return pattern.sub(lambda m: runs[m.group(0)], value)
    return value


def normalized(stdout: str) -> str:
    """The document as printed, with each run id (wherever it appears) a numbered placeholder
    in order of first appearance, and times and latencies placeholders."""
    document = json.loads(stdout)
    runs: dict[str, str] = {}
    _run_ids(document, runs)
    pattern = re.compile("|".join(map(re.escape, sorted(runs, key=len, reverse=True)))) \
        if runs else None
    return json.dumps(_normal(document, runs, pattern), indent=2, ensure_ascii=False) + "\n"


def golden(name: str, stdout: str) -> None:
    path = GOLDEN / f"{name}.json"
    text = normalized(stdout)
    if os.environ.get("PROMPTCTL_WRITE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), name


@pytest.fixture
def fixed_dates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_AUTHOR_DATE", DATE)
    monkeypatch.setenv("GIT_COMMITTER_DATE", DATE)


def test_diff_and_history_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               fake_openai: FakeOpenAI, fixed_dates: None) -> None:
    git_identity(monkeypatch, author="Test Author", email="t@example.invalid")
    root = git_init(tmp_path / "repo")
    repo = test_diff.Repo(root, fake_openai)
    repo.write("evalsets/score.jsonl", test_diff.evalset_text())
    for version in ("V1", "V2", "V3"):
        repo.write("prompts/score.yaml", test_diff.prompt_text(version))
        repo.commit(f"prompt {version}")
    fake_openai.responder = test_diff.reply
    use_fake_openai(monkeypatch, fake_openai, "sk-test-golden")
    monkeypatch.chdir(root)
    for ref in ("HEAD~2", "HEAD~1", "HEAD"):
        test_diff.eval_ref(ref)
    test_diff.eval_ref("HEAD", "--model", "gpt-4o")
    eval_run("prompts/score.yaml", "--repeat", "2", "--model", "gpt-4o")
    golden("diff_refs", invoke("diff", "HEAD~2", "HEAD", "--prompt", "score", "--json").stdout)
    golden("diff_models", invoke("diff", "--prompt", "score", "-m", "gpt-4o", "-m",
                                 "gpt-4o-mini", "--json").stdout)
    # A dirty work tree, another eval set and repeated samples: warnings and samples per row.
    repo.write("evalsets/score.jsonl", test_diff.evalset_text(10))
    dirty = eval_run("prompts/score.yaml", "--repeat", "2")
    first = test_diff.eval_ref("HEAD~1")
    golden("diff_warnings", invoke("diff", first["id"], dirty["id"], "--json").stdout)
    golden("history", invoke("history", "score", "--json").stdout)
    golden("history_model", invoke("history", "prompts/score.yaml", "-m", "gpt-4o",
                                   "--json").stdout)
    golden("history_none", invoke("history", "score", "-m", "gpt-4.1", "--json").stdout)


def test_check_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_openai: FakeOpenAI,
                    fixed_dates: None) -> None:
    git_identity(monkeypatch)
    root = git_init(tmp_path / "repo")
    repo = checkrepo.Repo(root)
    repo.write("prompts/score.yaml", checkrepo.prompt_text())
    repo.write("prompts/gone.yaml", checkrepo.prompt_text().replace("name: score", "name: gone"))
    repo.write("prompts/broken.yaml", checkrepo.prompt_text().replace("name: score",
                                                                      "name: broken"))
    repo.write("evalsets/score.jsonl", checkrepo.evalset_text())
    repo.commit("base")
    git(root, "checkout", "-q", "-b", "feature")
    fake_openai.responder = checkrepo.reply
    use_fake_openai(monkeypatch, fake_openai, "sk-test-golden")
    monkeypatch.chdir(root)
    golden("check_nothing", invoke("check", "--json").stdout)
    repo.write("prompts/score.yaml", checkrepo.prompt_text(style="BREAK 15"))
    (root / "prompts" / "gone.yaml").unlink()
    repo.write("prompts/broken.yaml", "name: broken\nmetircs: [exact_match]\n")
    repo.write("prompts/fresh.yaml", checkrepo.prompt_text(style="BREAK 1").replace(
        "name: score", "name: fresh"))
    repo.commit("changes")
    golden("check", invoke("check", "--json", code=2).stdout)
    golden("check_one", invoke("check", "--json", "-p", "score", code=1).stdout)
    repo.write("prompts/score.yaml", checkrepo.prompt_text(style="BREAK 2"))
    golden("check_warn", invoke("check", "--json", "-p", "score", "-p", "fresh").stdout)
