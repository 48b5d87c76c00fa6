"""`promptctl init --github` and the pre-commit hook this repository offers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from promptctl import RELEASED, __version__, ci_templates, scaffold
from promptctl.ci_templates import workflow
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
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert workflow(released=RELEASED).rstrip() in readme


def install_step(workflow_text: str) -> dict[str, Any]:
    [step] = [s for s in steps(yaml.safe_load(workflow_text)) if s.get("name") == "Install promptctl"]
    return step


def test_before_the_first_release_the_install_step_says_what_to_set(tmp_path: Path) -> None:
    result = run_cli("init", str(tmp_path), "--github")
    assert result.exit_code == 0, result.output
    text = (tmp_path / WORKFLOW).read_text(encoding="utf-8")
    assert text == workflow(released=False)
    # The step stops the job with a message naming what to change, not a pip error.
    done = subprocess.run(["bash", "-c", install_step(text)["run"]], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 1
    assert done.stdout.strip() == "::error::set the promptctl install command in the step Install promptctl"
    # Its comment shows the command to write, now and once the version is on the index.
    comment = text.split("- name: Install promptctl")[1].split("run: echo")[0]
    assert "pip install 'promptctl-eval[report] @ git+https://github.com/OWNER/REPO@COMMIT'" in comment
    assert f"pip install 'promptctl-eval[report]=={__version__}'" in comment
    assert "Install promptctl" in result.stdout.split("Next steps:")[1]


def test_once_released_the_install_step_pins_the_version_from_the_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ci_templates, "RELEASED", True)
    monkeypatch.setattr(scaffold, "RELEASED", True)
    result = run_cli("init", str(tmp_path), "--github")
    assert result.exit_code == 0, result.output
    text = (tmp_path / WORKFLOW).read_text(encoding="utf-8")
    assert install_step(text)["run"] == f"pip install 'promptctl-eval[report]=={__version__}'"
    assert "::error::" not in text and "OWNER" not in text
    assert "Install promptctl" not in result.stdout.split("Next steps:")[1]


def test_the_workflow_runs_on_every_input_of_the_project(tmp_path: Path) -> None:
    """Its paths come from the files the prompts' results depend on: a pull request that
    changes only a judge, a scorer or promptctl.yaml still runs the check."""
    (tmp_path / "prompts").mkdir()
    (tmp_path / "graders").mkdir()
    (tmp_path / "code" / "scoring").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "graders" / "judge.yaml").write_text(
        "model: gpt-4o-mini\nmessages:\n  - {role: user, content: 'Rate {{ answer }}'}\n"
        "output: {type: number}\n", encoding="utf-8")
    (tmp_path / "code" / "scoring" / "length.py").write_text(
        "def score(answer, expected, row):\n    return 1.0\n", encoding="utf-8")
    (tmp_path / "data" / "qa.jsonl").write_text('{"id": "a", "input": {"q": "x"}}\n',
                                                encoding="utf-8")
    (tmp_path / "prompts" / "qa.yaml").write_text(
        "model: gpt-4o-mini\nmessages:\n  - {role: user, content: '{{ q }}'}\n"
        "metrics:\n  - format_validity\n  - {name: rated, llm_judge: ../graders/judge.yaml}\n"
        "  - {name: long, custom: ../code/scoring/length.py:score}\n"
        "evalset: ../data/qa.jsonl\n", encoding="utf-8")
    result = run_cli("init", str(tmp_path), "--github")
    assert result.exit_code == 0, result.output
    document = yaml.safe_load((tmp_path / WORKFLOW).read_text(encoding="utf-8"))
    paths = document.get("on", document.get(True))["pull_request"]["paths"]
    assert {"graders/**", "code/**", "data/**", "prompts/**", "pipelines/**",
            "promptctl.yaml", ".github/workflows/promptctl.yml"} <= set(paths)
