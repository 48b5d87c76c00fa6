"""`promptctl init --github` and the pre-commit hook this repository offers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import REPO, run_cli

WORKFLOW = Path(".github") / "workflows" / "promptctl.yml"


def steps(document: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = document["jobs"]["check"]["steps"]
    return result


def test_init_github_scaffolds_a_project_and_a_valid_workflow(tmp_path: Path) -> None:
    result = run_cli("init", str(tmp_path), "--github")
    assert result.exit_code == 0, result.output
    for rel in ("promptctl.yaml", "prompts/language.yaml", "evalsets/language.jsonl", WORKFLOW):
        assert (tmp_path / rel).is_file(), rel
    # The next steps end with what the workflow needs, and commit it with the project.
    steps_text = result.stdout.split("Next steps:")[1]
    assert "promptctl eval prompts/language.yaml --model local/smollm2" in steps_text
    assert "git add promptctl.yaml" in steps_text and f"{WORKFLOW.as_posix()} &&" in steps_text
    assert "OPENAI_API_KEY" in steps_text.split("5. ")[1]
    assert "promptctl init --github" not in steps_text
    assert ".promptctl/" in (tmp_path / ".gitignore").read_text(encoding="utf-8")

    document = yaml.safe_load((tmp_path / WORKFLOW).read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as True; GitHub reads it as "on".
    trigger = document.get("on", document.get(True))
    paths = trigger["pull_request"]["paths"]
    assert "prompts/**" in paths and "evalsets/**" in paths
    runs = [s.get("run", "") for s in steps(document)]
    assert any("promptctl check" in r and "--markdown" in r for r in runs)
    uses = [s.get("uses", "") for s in steps(document)]
    assert any(u.startswith("actions/cache/restore@") for u in uses)
    assert any(u.startswith("actions/cache/save@") for u in uses)
    assert any(u.startswith("actions/checkout@") for u in uses)
    checkout = next(s for s in steps(document) if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0
    cached = next(s for s in steps(document) if s.get("uses", "").startswith("actions/cache/save@"))
    assert cached["with"]["path"] == ".promptctl" and cached["if"] == "always()"
    assert any("gh pr comment" in r and "promptctl-report.md" in r for r in runs)


def test_init_github_in_an_existing_project_adds_only_the_workflow(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "mine.yaml").write_text("messages: []\n", encoding="utf-8")
    result = run_cli("init", str(tmp_path), "--github")
    assert result.exit_code == 0, result.output
    assert (tmp_path / WORKFLOW).is_file()
    assert not (tmp_path / "promptctl.yaml").exists()
    # Only the workflow was written: the next steps are about it, not the example prompt.
    steps_text = result.stdout.split("Next steps:")[1]
    assert f"git add {WORKFLOW.as_posix()} &&" in steps_text
    assert "OPENAI_API_KEY" in steps_text and "promptctl check" in steps_text
    assert "language.yaml" not in steps_text
    again = run_cli("init", str(tmp_path), "--github")
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_init_without_github_writes_no_workflow(tmp_path: Path) -> None:
    result = run_cli("init", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert not (tmp_path / ".github").exists()


def test_pre_commit_hook_runs_validate() -> None:
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    [hook] = hooks
    assert hook["id"] == "promptctl-validate"
    assert hook["entry"] == "promptctl validate"
    assert hook["language"] == "python"
    pattern = re.compile(hook["files"])
    assert pattern.search("prompts/a.yaml") and pattern.search("evalsets/a.jsonl")
    assert not pattern.search("src/app.py")


def test_readme_shows_the_workflow_init_writes() -> None:
    from promptctl.ci_templates import WORKFLOW

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert WORKFLOW.rstrip() in readme
