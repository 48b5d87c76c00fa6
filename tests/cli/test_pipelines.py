"""Pipelines through the commands that take a prompt file: eval --json, show,
runs, history, diff and check, against the fake server and real git repositories."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests import pipelinekit
from tests.fakeserver import FakeOpenAI
from tests.helpers import GitRepo, eval_json, git_identity, git_init, invoke, use_fake_openai

pytestmark = pytest.mark.both_stores  # run on SQLite, then on PostgreSQL

KEY = "sk-test-chain-cli-5e4d3c2b1a09"
PIPELINE = "pipelines/support.yaml"


@pytest.fixture
def api(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    fake_openai.responder = pipelinekit.answer
    return use_fake_openai(monkeypatch, fake_openai, KEY)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GitRepo:
    git_identity(monkeypatch)
    root = git_init(tmp_path / "proj")
    pipelinekit.write_project(root)
    (root / ".gitignore").write_text(".promptctl/\n", encoding="utf-8")
    monkeypatch.chdir(root)
    repo = GitRepo(root)
    repo.commit("support pipeline")
    return repo


def halve_refunds(repo: GitRepo) -> None:
    """A change to a prompt the pipeline uses that makes the refund step halve every amount."""
    path = repo.root / "prompts" / "refund.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("{{ text }}", "{{ text }} HALF"),
                    encoding="utf-8")


def test_eval_json_has_the_pipeline_keys(api: FakeOpenAI, repo: GitRepo) -> None:
    run, _ = eval_json(PIPELINE)
    assert run["kind"] == "pipeline" and run["prompt"] == "support"
    assert set(run["steps"]) == {"route", "refund", "products", "stock"}
    assert set(run["steps"]["route"]["metrics"]) == {"exact_match"}
    assert run["composability_gap"]["value"] == pytest.approx(0.4)
    assert run["composability_gap"]["n"] == 5
    assert run["git_commit"] == repo.sha("HEAD") and run["git_dirty"] is False


def test_show_lists_every_step_of_every_row(api: FakeOpenAI, repo: GitRepo) -> None:
    run, _ = eval_json(PIPELINE)
    text = invoke("show", run["id"]).stdout
    assert text.count("step route") == 8 and text.count("step stock") == 8
    assert "skipped (when: was false)" in text
    assert "composability gap 0.4" in text
    assert "control flow correct 0.500" in text


def test_version_follows_the_prompts_and_history_shows_both(api: FakeOpenAI,
                                                             repo: GitRepo) -> None:
    first, _ = eval_json(PIPELINE)
    halve_refunds(repo)
    repo.commit("halve refunds")
    second, _ = eval_json(PIPELINE)
    assert first["prompt_version"] != second["prompt_version"]
    assert second["metrics"]["exact_match"]["value"] == pytest.approx(2 / 8)  # r2 r7 only
    history = json.loads(invoke("history", PIPELINE, "--json").stdout)
    versions = json.dumps(history)
    assert first["prompt_version"][:12] in versions and second["prompt_version"][:12] in versions
    diff = json.loads(invoke("diff", "HEAD~1", "HEAD", "--prompt", PIPELINE, "--json").stdout)
    delta = diff["metrics"]["exact_match"]["delta"]
    assert delta == pytest.approx(-0.25)
    assert {r["row_id"] for r in diff["flipped"]["pass_to_fail"]} == {"r1", "r6"}
    assert diff["flipped"]["fail_to_pass"] == []


def check_json(*args: str, code: int = 0) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        invoke("check", "--json", "--prompt", PIPELINE, *args, code=code).stdout)
    return document


def test_check_notices_a_change_to_a_prompt_the_pipeline_uses(api: FakeOpenAI,
                                                             repo: GitRepo) -> None:
    repo.write("README.md", "unrelated\n")
    repo.commit("readme")
    unchanged = check_json("--base", "HEAD~1")
    assert unchanged["prompts"] == [] and unchanged["unchanged"][0]["prompt"] == "support"
    halve_refunds(repo)
    repo.commit("halve refunds")
    document = check_json("--base", "HEAD~1", code=1)
    [entry] = document["prompts"]
    assert entry["reasons"] == ["prompt prompts/refund.yaml changed"]
    assert entry["baseline_source"] == "evaluated" and entry["current_source"] == "evaluated"
    [gate] = entry["gates"]
    assert gate["id"] == "exact_match.min" and gate["status"] == "fail"
    assert gate["value"] == pytest.approx(0.25)
    assert entry["comparison"]["metrics"]["exact_match"]["delta"] == pytest.approx(-0.25)


def test_eval_at_a_ref_reads_the_prompts_as_they_were(api: FakeOpenAI, repo: GitRepo) -> None:
    halve_refunds(repo)  # in the work tree only: --ref HEAD must not see it
    run, _ = eval_json(PIPELINE, "--ref", "HEAD")
    assert run["metrics"]["exact_match"]["value"] == pytest.approx(4 / 8)
    assert run["git_commit"] == repo.sha("HEAD") and run["git_dirty"] is False
    now, _ = eval_json(PIPELINE)
    assert now["metrics"]["exact_match"]["value"] == pytest.approx(2 / 8)
    assert now["prompt_version"] != run["prompt_version"]


def test_html_report_shows_steps_and_the_gap(api: FakeOpenAI, repo: GitRepo,
                                             tmp_path: Path) -> None:
    run, _ = eval_json(PIPELINE)
    out = tmp_path / "report.html"
    invoke("report", run["id"], "-o", str(out))
    html = out.read_text(encoding="utf-8")
    assert "Composability gap (every step with an expected answer right, the final answer " \
        "wrong): <b>0.4</b>" in html
    assert "<h4>refund</h4>" in html
    # The control flow, as the terminal shows it: each step's counts, and its correctness.
    for step_id, step in run["steps"].items():
        found = re.search(f'<tr data-step="{step_id}"><th>[^<]*</th><td><code>[^<]*</code></td>'
                          r'<td class="num" data-value="(\d+)">.*?<td class="num" '
                          r'data-value="(\d+)">', html)
        assert found is not None, step_id
        assert (int(found.group(1)), int(found.group(2))) == (step["ran"], step["skipped"])
    flow = run["control_flow"]
    assert f"Control flow correct (each step ran or was skipped as the row's <code>should_run" \
        f"</code> says): <b>{flow['value']:g}</b>" in html


@pytest.mark.parametrize("flags", [("--batch",), ("--repeat", "2"), ("--dry-run",)])
def test_options_a_pipeline_cannot_take_exit_2_before_sending(api: FakeOpenAI, repo: GitRepo,
                                                              flags: tuple[str, ...]) -> None:
    # A step's request depends on the answers before it: no batch file, no estimate, no
    # resampling of one step apart from the others.
    result = invoke("eval", PIPELINE, *flags, code=2)
    assert f"{flags[0]} does not apply to pipelines" in result.stderr
    assert api.count == 0
