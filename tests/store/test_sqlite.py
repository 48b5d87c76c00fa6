"""What only the SQLite store does: .gitignore beside the default store, and no secrets in its files.

The behaviour both stores share is tested in test_store.py, on both."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from promptctl.store import SQLiteStore
from tests.fakeserver import FakeOpenAI, error_body
from tests.helpers import copy_examples, eval_run, run_cli, use_fake_openai

KEY = "sk-test-store-0a1b2c3d4e5f6a7b"


def test_store_in_a_promptctl_directory_gets_a_gitignore(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / ".promptctl" / "results.db").close()
    assert (tmp_path / ".promptctl" / ".gitignore").read_text(encoding="utf-8") == "*\n"


def test_an_existing_gitignore_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / ".promptctl").mkdir()
    (tmp_path / ".promptctl" / ".gitignore").write_text("results.db\n", encoding="utf-8")
    SQLiteStore(tmp_path / ".promptctl" / "results.db").close()
    assert (tmp_path / ".promptctl" / ".gitignore").read_text(encoding="utf-8") == "results.db\n"


def test_a_store_elsewhere_does_not_touch_that_directory(tmp_path: Path) -> None:
    # An .gitignore of "*" in, say, the project root would hide the whole project from git.
    SQLiteStore(tmp_path / "results.db").close()
    assert not (tmp_path / ".gitignore").exists()


# -- through the CLI -------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_openai: FakeOpenAI) -> Path:
    root = copy_examples(tmp_path / "proj")
    monkeypatch.chdir(root)
    use_fake_openai(monkeypatch, fake_openai, KEY)
    fake_openai.responder = lambda body: "Controversy score: 4\nReason: fine."
    return root


def eval_cli(*args: str, code: int = 0) -> dict[str, Any]:
    return eval_run("prompts/controversy.yaml", *args, code=code)


def test_default_store_is_git_ignored(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMPTCTL_STORE")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    run = eval_cli("--limit", "2")
    assert (project / ".promptctl" / "results.db").exists()
    assert (project / ".promptctl" / ".gitignore").read_text(encoding="utf-8") == "*\n"
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=project,
                            check=True, capture_output=True, text=True).stdout
    assert ".promptctl" not in status
    assert "prompts/controversy.yaml" in status
    assert run["n"] == 2


def test_api_key_never_reaches_the_store(project: Path, fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    eval_cli("--limit", "3")
    # A failed row whose server message echoes the key, and a refused key.
    fake_openai.fail_next(5, status=500, retry_after_ms=1,
                          body=error_body(500, f"gateway could not use {KEY}"))
    failed = eval_cli("--limit", "4", "--no-cache", "--concurrency", "1", code=3)
    assert failed["errors"] == 0 and failed["fewshot_metrics"]["format_validity"]["n"] == 3
    fake_openai.fail_next(1, status=401, body=error_body(401, f"Incorrect API key provided: {KEY}"))
    result = run_cli("eval", "prompts/controversy.yaml", "--no-cache", "--limit", "1")
    assert result.exit_code == 3
    store_dir = tmp_path / "store"
    files = [p for p in store_dir.iterdir() if p.is_file()]
    assert any(p.name == "results.db" for p in files)
    # The grep reaches the stored rows (main file or WAL): the masked message is there.
    assert any(b"gateway could not use ***" in p.read_bytes() for p in files)
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path.name
