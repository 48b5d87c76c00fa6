"""What a hostile pull request, a broken server or an odd git state must not do: crash, exit 1,
hang, or run twice. Each class through the real command line."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.fakeserver import FakeOpenAI
from tests.helpers import (
    cli_process,
    commit_all,
    eval_json,
    git,
    git_identity,
    git_init,
    invoke,
    run_cli,
    runs_json,
    use_fake_openai,
    write_echo_project,
)

KEY = "sk-test-hardening-5f2a8c1e7d3b9046"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    git_identity(monkeypatch)
    root = write_echo_project(git_init(tmp_path / "repo"))
    commit_all(root, "first")
    (root / "prompts" / "echo.yaml").write_text(
        (root / "prompts" / "echo.yaml").read_text().replace("Question", "Q:"), encoding="utf-8")
    commit_all(root, "second")
    (root / "prompts" / "echo.yaml").write_text(
        (root / "prompts" / "echo.yaml").read_text().replace("Q:", "Question"), encoding="utf-8")
    commit_all(root, "third")
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def api(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    return use_fake_openai(monkeypatch, fake_openai, KEY)


# --- exit codes ---------------------------------------------------------------------------


def test_a_crash_exits_4_never_1(repo: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 1 means "a gate failed" to CI: a bug must not look like a verdict."""
    from promptctl.cli import app as cli
    from promptctl.cli import runs_cmd

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(runs_cmd, "open_project_store", broken)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["runs"])
    assert exit_.value.code == cli.EXIT_BUG == 4
    err = capsys.readouterr().err
    assert "RuntimeError: a bug" in err and "this is a bug in promptctl" in err


def test_usage_errors_exit_2_from_the_console_script(repo: Path) -> None:
    for args in (["eval", "--bogus"], ["nosuch"], ["runs", "--limit", "x"]):
        done = subprocess.run(["promptctl", *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (args, done.stderr)


# --- numbers from the command line ------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["eval", "prompts/echo.yaml", "--repeat", "100000000", "--dry-run"],
    ["eval", "prompts/echo.yaml", "--limit", str(10**23)],
    ["eval", "prompts/echo.yaml", "--concurrency", "100000000"],
    ["eval", "prompts/echo.yaml", "--timeout", "1e300"],
    ["cache", "clear", "--older-than", "999999999999d"],
    ["cache", "clear", "--older-than", "9" * 5000 + "d"],
    ["diff", "main@{5}", "HEAD", "--prompt", "echo"],
    ["diff", "HEAD@{1.year.ago}", "HEAD", "--prompt", "echo"],
    ["eval", "prompts/echo.yaml", "--ref", "HEAD@{1.year.ago}"],
    ["check", "--base", "main@{5}"],
    ["check", "--base", "--output=/tmp/x"],
])
def test_bombs_on_the_command_line_exit_2_at_once(repo: Path, args: list[str]) -> None:
    started = time.monotonic()
    result = run_cli(*args)
    assert result.exit_code == 2, (args, result.stdout, result.stderr)
    assert time.monotonic() - started < 60  # a hang would hit the suite's own limits first
    assert "Traceback" not in result.stderr


# --- git states ---------------------------------------------------------------------------------


@pytest.fixture
def shallow(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    clone = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(clone))
    monkeypatch.chdir(clone)
    return clone


def test_a_shallow_clone_says_fetch_more_history(shallow: Path, api: FakeOpenAI) -> None:
    for args in (["check", "--base", "HEAD~1"], ["eval", "prompts/echo.yaml", "--ref", "HEAD~1"],
                 ["diff", "HEAD~1", "HEAD", "--prompt", "echo"]):
        result = invoke(*args, code=2)
        assert "not in this clone" in result.stderr
        assert "fetch-depth: 0" in result.stderr
    assert api.count == 0


def test_a_bare_repository_as_the_current_directory(repo: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    bare = tmp_path / "bare.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    monkeypatch.chdir(bare)
    result = invoke("check", code=2)
    assert "bare git repository" in result.stderr and "clone with a checkout" in result.stderr
    assert "no runs" in invoke("runs").stdout
    assert not (bare / ".promptctl").exists()


def test_a_prompt_in_a_submodule_is_refused_from_the_superproject(
        repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: FakeOpenAI) -> None:
    """One rule: the project (promptctl.yaml, the store) is that of the current directory, and
    a prompt of another git work tree is refused, so eval and runs never use two stores."""
    top = git_init(tmp_path / "top")
    (top / "README").write_text("top\n", encoding="utf-8")
    commit_all(top, "top")
    git(top, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(repo), "sub")
    commit_all(top, "add the submodule")
    monkeypatch.chdir(top)
    result = invoke("eval", "sub/prompts/echo.yaml", code=2)
    assert "belongs to the git repository at sub/" in result.stderr
    assert "cd " in result.stderr and api.count == 0
    monkeypatch.chdir(top / "sub")
    run, _ = eval_json("prompts/echo.yaml")
    # Keyed by the submodule's own commit, the repository that holds the prompt.
    assert run["git_commit"] == git(top / "sub", "rev-parse", "HEAD").strip()
    assert run["prompt_path"] == "prompts/echo.yaml"


# --- names that are both a run and a ref ------------------------------------------------------


def test_a_name_that_is_a_run_id_prefix_and_a_branch_must_be_made_explicit(
        repo: Path, api: FakeOpenAI) -> None:
    first, _ = eval_json("prompts/echo.yaml")
    second, _ = eval_json("prompts/echo.yaml", "--no-cache")
    prefix = first["id"][:-1] if first["id"][:-1] != second["id"][:-1] else first["id"]
    git(repo, "branch", prefix)
    result = invoke("diff", prefix, second["id"], "--prompt", "echo", code=2)
    assert "is both a run id" in result.stderr
    assert f"run:{prefix}" in result.stderr and f"ref:{prefix}" in result.stderr
    by_run = json.loads(invoke("diff", f"run:{prefix}", second["id"], "--prompt", "echo",
                               "--json").stdout)
    assert by_run["a"]["id"] == first["id"]
    by_ref = json.loads(invoke("diff", f"ref:{prefix}", second["id"], "--prompt", "echo",
                               "--json").stdout)
    assert by_ref["a"]["git_commit"] == git(repo, "rev-parse", "HEAD").strip()


# --- a hung or dead endpoint ---------------------------------------------------------------------


def test_a_hung_endpoint_stops_the_run_after_a_few_requests(repo: Path, api: FakeOpenAI) -> None:
    (repo / "promptctl.yaml").write_text(
        f"endpoints:\n  slow: {{base_url: '{api.base_url}', max_retries: 1, timeout: 0.3}}\n",
        encoding="utf-8")
    api.latency = 3.0
    result = invoke("eval", "prompts/echo.yaml", "--model", "slow/gpt-4o-mini", "--concurrency",
                    "1", code=3)
    assert "is unreachable: 3 requests in a row failed" in result.stderr
    assert "timeout:" in result.stderr and "--resume" in result.stderr
    # Three rows were tried (each twice), not every row of the set.
    assert len(api.chat_requests) <= 6
    api.latency = 0.0
    (run,) = runs_json()
    assert run["status"] == "failed"
    resumed, _ = eval_json("--resume", run["id"])
    assert resumed["errors"] == 0 and resumed["n"] == 5


def test_timeout_on_the_command_line_overrides_the_endpoint(repo: Path, api: FakeOpenAI) -> None:
    api.latency = 1.0
    result = invoke("eval", "prompts/echo.yaml", "--limit", "1", "--timeout", "0.2", code=3)
    assert "timed out" in result.stderr or "unreachable" in result.stderr or \
        "request(s) failed" in result.stderr


# --- two resumes at once ------------------------------------------------------------------------


def test_two_resumes_started_at_once_send_each_missing_request_once(
        repo: Path, api: FakeOpenAI) -> None:
    api.fail_matching("Question three", status=500, times=5)
    run, _ = eval_json("prompts/echo.yaml", "--concurrency", "1", code=3)
    assert run["errors"] == 1
    api.latency = 1.0
    before = len(api.chat_requests)
    procs = [cli_process("eval", "--resume", run["id"], "--json") for _ in range(2)]
    outcomes = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outcomes
    loser = outcomes[[p.returncode for p in procs].index(2)][1]
    assert "still being run by process" in loser or "was just taken over" in loser
    assert len(api.chat_requests) == before + 1  # the missing row, sent once
