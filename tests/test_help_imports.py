"""`promptctl --help` stays instant: the SDK, numpy, GitPython and Jinja2 load only when used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# "git" is GitPython: gitinfo imports it on the first read of a repository.
HEAVY = ("openai", "numpy", "git", "jinja2")

# Runs the CLI in-process the way the console script does, then reports which heavy
# modules it imported, on the last line of stdout.
WRAPPER = """\
import json, sys
from promptctl.cli.app import app
code = 0
try:
    app(sys.argv[1:], prog_name="promptctl")
except SystemExit as exc:
    code = exc.code or 0
heavy = [m for m in {heavy!r} if m in sys.modules]
print("\\nMODULES " + json.dumps({{"code": code, "heavy": heavy}}))
"""


def imported(*args: str, cwd: Path | None = None) -> tuple[int, list[str], str]:
    done = subprocess.run([sys.executable, "-c", WRAPPER.format(heavy=HEAVY), *args],
                          capture_output=True, text=True, timeout=60, cwd=cwd)
    last = done.stdout.rstrip().splitlines()[-1]
    assert last.startswith("MODULES "), done.stdout + done.stderr
    report = json.loads(last.removeprefix("MODULES "))
    return int(report["code"]), list(report["heavy"]), done.stdout


@pytest.mark.parametrize("args", [
    ["--help"],
    ["eval", "--help"],
    ["cache", "--help"],
    ["check", "--help"],
    ["--version"],
])
def test_help_imports_no_heavy_module(args: list[str]) -> None:
    code, heavy, out = imported(*args)
    assert code == 0, out
    assert heavy == [], f"promptctl {' '.join(args)} imported {heavy}"
    assert "git" not in heavy
    if args == ["--help"]:
        for command in ("eval", "cache", "show", "check"):
            assert command in out


def test_the_wrapper_sees_heavy_imports_when_a_command_needs_them(tmp_path: Path) -> None:
    # The check above can fail: validating a prompt renders it with Jinja2.
    (tmp_path / "p.yaml").write_text(
        "model: gpt-4o-mini\nmessages:\n  - role: user\n    content: 'Say {{ x }}'\n"
        "metrics: [format_validity]\nevalset: e.jsonl\n", encoding="utf-8")
    (tmp_path / "e.jsonl").write_text('{"input": {"x": "hi"}}\n', encoding="utf-8")
    code, heavy, out = imported("validate", "p.yaml", cwd=tmp_path)
    assert code == 0, out
    assert "jinja2" in heavy


def test_gitpython_loads_when_a_command_reads_git(tmp_path: Path) -> None:
    # The "git" entry above can fail too: `runs` finds the project root through git.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, capture_output=True)
    code, heavy, out = imported("runs", cwd=tmp_path)
    assert code == 0, out
    assert "git" in heavy
