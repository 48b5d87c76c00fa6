"""Helpers the test modules share: the CLI in-process, its JSON output, small projects on disk,
the fake server as the OpenAI endpoint, and throw-away git repositories."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner, Result

from promptctl.cli.app import app

if TYPE_CHECKING:
    from tests.fakeserver import FakeOpenAI

REPO = Path(__file__).resolve().parents[1]  # this repository: its prompts/ and evalsets/

# -- the CLI -----------------------------------------------------------------------------------

# The CLI in a fresh interpreter, with Python's own Ctrl-C handler installed even when this
# process was started with SIGINT ignored (as background jobs are); on exit it reports on
# stderr whether the openai SDK was imported.
CLI_SCRIPT = """\
import faulthandler, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
# A test that gives up on this process sends SIGUSR1 first: every thread's stack on stderr.
faulthandler.register(signal.SIGUSR1, all_threads=True)
from promptctl.cli.app import main
try:
    main(sys.argv[1:])
finally:
    print("\\nOPENAI-IMPORTED " + str("openai" in sys.modules), file=sys.stderr)
"""

# Started by `cli_process`; conftest kills any still running when a test ends.
cli_processes: list[subprocess.Popen[str]] = []


def cli_process(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    """`promptctl ARGS` as a real subprocess (for signals), with the current environment."""
    proc = subprocess.Popen([sys.executable, "-c", CLI_SCRIPT, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ), **kwargs)
    cli_processes.append(proc)
    return proc


def finish_process(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    """The exit code, stdout and stderr of a `cli_process`. One that has not ended within
    `timeout` fails the test with the stack of each of its threads, so a hang says where."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        proc.kill()
        raise AssertionError(f"{' '.join(proc.args[3:])} still running after {timeout} s; "
                             f"its threads:\n{err[-6000:]}") from None
    return proc.returncode, out, err


def run_cli(*args: str) -> Result:
    """`promptctl ARGS` in this process, whatever its exit code."""
    return CliRunner().invoke(app, list(args))


def invoke(*args: str, code: int = 0) -> Result:
    """`promptctl ARGS`, which must exit with `code`; a failure shows stdout, stderr and the
    traceback of an unexpected exception."""
    result = run_cli(*args)
    detail = ""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        detail = "".join(traceback.format_exception(result.exception))
    assert result.exit_code == code, f"{result.stdout}\n{result.stderr}\n{detail}"
    return result


def eval_runs(*args: str, code: int = 0) -> list[dict[str, Any]]:
    """The runs of `promptctl eval ARGS --json`."""
    result = invoke("eval", *args, "--json", code=code)
    runs: list[dict[str, Any]] = json.loads(result.stdout)["runs"]
    return runs


def eval_json(*args: str, code: int = 0) -> tuple[dict[str, Any], Result]:
    """The one run of `promptctl eval ARGS --json`, and the result (for its stderr)."""
    result = invoke("eval", *args, "--json", code=code)
    (run,) = json.loads(result.stdout)["runs"]
    assert isinstance(run, dict)
    return run, result


def eval_run(*args: str, code: int = 0) -> dict[str, Any]:
    """The one run of `promptctl eval ARGS --json`."""
    return eval_json(*args, code=code)[0]


def runs_json(*args: str) -> list[dict[str, Any]]:
    """The stored runs `promptctl runs ARGS --json` lists."""
    runs: list[dict[str, Any]] = json.loads(invoke("runs", *args, "--json").stdout)["runs"]
    return runs


def show(run_id: str) -> dict[str, Any]:
    """`promptctl show RUN --json`: the run and its rows."""
    document: dict[str, Any] = json.loads(invoke("show", run_id, "--json").stdout)
    return document


def show_rows(run_id: str) -> list[dict[str, Any]]:
    """The stored rows of a run, as `promptctl show RUN --json` gives them."""
    rows: list[dict[str, Any]] = show(run_id)["rows"]
    return rows


def store_db(tmp_path: Path) -> Path:
    """The SQLite file of the store the autouse `isolated` fixture sets up."""
    return tmp_path / "store" / "results.db"


# -- projects on disk --------------------------------------------------------------------------

# A prompt the fake server's default reply ("echo: <the user message>") answers: each row's answer
# is its own question word.
ECHO_PROMPT = """\
name: echo
model: gpt-4o-mini
params:
  max_tokens: 16
messages:
  - role: user
    content: "Question {{ q }}"
output:
  pattern: 'echo: Question (?P<answer>\\w+)'
  type: string
metrics: [exact_match, format_validity]
evalset: ../evalsets/echo.jsonl
"""
ECHO_WORDS = ["one", "two", "three", "four", "five"]


def echo_evalset(words: list[str]) -> str:
    """JSONL rows r1, r2, ... asking about each word and expecting it back."""
    return "".join(json.dumps({"id": f"r{i + 1}", "input": {"q": w}, "expected": w}) + "\n"
                   for i, w in enumerate(words))


def write_echo_project(root: Path, prompt: str = ECHO_PROMPT, words: list[str] = ECHO_WORDS) -> Path:
    """prompts/echo.yaml and evalsets/echo.jsonl (one row per word) under `root`."""
    (root / "prompts").mkdir(parents=True, exist_ok=True)
    (root / "evalsets").mkdir(exist_ok=True)
    (root / "prompts" / "echo.yaml").write_text(prompt, encoding="utf-8")
    (root / "evalsets" / "echo.jsonl").write_text(echo_evalset(words), encoding="utf-8")
    return root


def copy_examples(root: Path) -> Path:
    """A copy of this repository's prompts/, judges/ and evalsets/ under `root`."""
    shutil.copytree(REPO / "prompts", root / "prompts", dirs_exist_ok=True)
    shutil.copytree(REPO / "judges", root / "judges", dirs_exist_ok=True)
    shutil.copytree(REPO / "evalsets", root / "evalsets", dirs_exist_ok=True)
    return root


def use_fake_openai(monkeypatch: pytest.MonkeyPatch, server: FakeOpenAI, key: str) -> FakeOpenAI:
    """Point OPENAI_BASE_URL at the fake server and set OPENAI_API_KEY to `key`."""
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    return server


# -- git ---------------------------------------------------------------------------------------


def git(root: Path, *args: str) -> str:
    """The stdout of `git ARGS` in `root` (commits unsigned, whatever the user's config says)."""
    done = subprocess.run(["git", "-c", "commit.gpgsign=false", *args], cwd=root, check=True,
                          capture_output=True, text=True)
    return done.stdout


def git_identity(monkeypatch: pytest.MonkeyPatch, *, author: str = "Test",
                 email: str = "test@example.invalid") -> None:
    """Author and committer for commits, and no system-wide git config."""
    monkeypatch.setenv("GIT_AUTHOR_NAME", author)
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", email)
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", email)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def git_init(root: Path) -> Path:
    """A new repository on branch main at `root` (created if missing)."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    return root


def commit_all(root: Path, message: str) -> str:
    """Commit everything in the work tree; the new HEAD's sha."""
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD").strip()


class GitRepo:
    """A repository and a few ways to change it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def sha(self, ref: str) -> str:
        return git(self.root, "rev-parse", ref).strip()

    def status(self) -> str:
        return git(self.root, "status", "--porcelain")

    def commit(self, message: str) -> str:
        return commit_all(self.root, message)

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path
