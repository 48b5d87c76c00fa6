"""Runs you can trust: which run stands for a version (one rule everywhere), reuse instead of
evaluating twice, and messages that point at the right file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.checkrepo import Repo, prompt_text
from tests.fakeserver import FakeOpenAI
from tests.helpers import eval_json, git, invoke, runs_json, show


def test_a_limited_run_is_partial_and_stands_for_no_version(repo: Repo,  # noqa: F811
                                                           fake_openai: FakeOpenAI) -> None:
    base = git(repo.root, "rev-parse", "HEAD").strip()
    full, _ = eval_json("prompts/score.yaml")
    partial, _ = eval_json("prompts/score.yaml", "--limit", "2", "--repeat", "2", "--no-cache")
    assert full["coverage"]["full"] is True
    assert partial["coverage"] == {"full": False, "rows": 4, "planned": 4, "evalset_rows": 20,
                                   "limit": 2}
    listed = {r["id"]: r for r in runs_json()}
    assert listed[partial["id"]]["coverage"]["full"] is False
    assert "partial: 4 of 20 rows (--limit 2)" in invoke("show", partial["id"]).stdout
    assert show(partial["id"])["run"]["coverage"]["full"] is False
    # history, diff by ref and check all stand on the full run, never on the newer partial one.
    history = json.loads(invoke("history", "score", "--json").stdout)
    assert [v["run"] for v in history["versions"]] == [full["id"]]
    repo.write("prompts/score.yaml", prompt_text(style="Reply briefly."))
    repo.commit("reword")
    diffed = json.loads(invoke("diff", base, "HEAD", "--prompt", "score", "--run-missing",
                               "--json").stdout)
    assert diffed["a"]["id"] == full["id"]
    assert diffed["only_in_a"] == 0 and diffed["paired_rows"] == 20
    checked = json.loads(invoke("check", "--base", base, "--json").stdout)
    (entry,) = checked["prompts"]
    assert entry["baseline_run"] == full["id"]


def test_a_partial_run_named_by_its_id_is_compared_with_a_warning(repo: Repo) -> None:  # noqa: F811
    full, _ = eval_json("prompts/score.yaml")
    partial, _ = eval_json("prompts/score.yaml", "--limit", "3", "--no-cache")
    diffed = json.loads(invoke("diff", full["id"], partial["id"], "--json").stdout)
    assert diffed["paired_rows"] == 3
    assert any("partial run" in w for w in diffed["warnings"])


def test_check_reuses_a_stored_run_of_the_current_version(repo: Repo,  # noqa: F811
                                                          fake_openai: FakeOpenAI) -> None:
    base = git(repo.root, "rev-parse", "HEAD").strip()
    repo.write("prompts/score.yaml", prompt_text(style="BREAK 8"))
    repo.commit("worse")
    first = json.loads(invoke("check", "--base", base, "--json", code=1).stdout)
    sent = fake_openai.count
    runs = len(runs_json())
    again = invoke("check", "--base", base, "--json", code=1)
    second = json.loads(again.stdout)
    assert fake_openai.count == sent  # nothing evaluated again
    assert len(runs_json()) == runs  # and no run added
    assert second["prompts"][0]["current_run"] == first["prompts"][0]["current_run"]
    assert second["prompts"][0]["current_source"] == "stored"
    assert "already evaluated" in again.stderr


# Every command that takes a prompt to list, compare or check by ("{}": the name given).
PROMPT_TAKERS = [
    ["runs", "{}"],
    ["runs", "{}", "--json"],
    ["history", "{}"],
    ["diff", "HEAD~1", "HEAD", "--prompt", "{}"],
    ["report", "--history", "{}", "-o", "report.html"],
    ["check", "--prompt", "{}"],
]


@pytest.mark.parametrize("args", PROMPT_TAKERS, ids=lambda a: " ".join(a))
def test_an_unknown_prompt_is_exit_2_with_the_names_that_exist(repo: Repo,  # noqa: F811
                                                               args: list[str]) -> None:
    eval_json("prompts/score.yaml")  # runs are stored: an unknown name is still not "no runs"
    for given, hint in (("nope", None), ("scroe", "did you mean 'score'?")):
        result = invoke(*(a.format(given) for a in args), code=2)
        assert f"no prompt named {given!r}" in result.stderr
        assert "prompts: score" in result.stderr
        if hint is None:
            assert "did you mean" not in result.stderr
        else:
            assert hint in result.stderr
        assert "prompts/nope.yaml" not in result.stderr
        assert result.stdout == ""


def test_runs_takes_a_prompt_by_file_or_name(repo: Repo) -> None:  # noqa: F811
    run, _ = eval_json("prompts/score.yaml")
    assert [r["id"] for r in runs_json("score")] == [run["id"]]
    assert [r["id"] for r in runs_json("prompts/score.yaml")] == [run["id"]]
    repo.write("prompts/other.yaml", prompt_text().replace("name: score", "name: other"))
    assert "no runs of other stored yet: run `promptctl eval prompts/other.yaml`" in \
        invoke("runs", "other").stdout


def test_a_missing_eval_set_names_the_prompt_file_and_line(repo: Repo) -> None:  # noqa: F811
    repo.write("prompts/score.yaml", prompt_text().replace("score.jsonl", "gone.jsonl"))
    for args in (["validate", "prompts/score.yaml"], ["eval", "prompts/score.yaml"]):
        result = invoke(*args, code=2)
        assert "prompts/score.yaml:13: the eval set named by evalset: does not exist: " \
               "evalsets/gone.jsonl" in result.stderr, result.stderr


def test_validate_reports_a_bad_eval_set_row_once_with_a_normalised_path(
        repo: Repo) -> None:  # noqa: F811
    path = repo.root / "evalsets" / "score.jsonl"
    lines = path.read_text().splitlines()
    lines[4] = '{"id": "r05", "input": {"item": 5}, "expected": 5'
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = invoke("validate", code=2)
    assert result.stderr.count("evalsets/score.jsonl:5: malformed JSON") == 1
    assert "prompts/../" not in result.stderr + result.stdout
    assert "the eval set it names has an error (reported for evalsets/score.jsonl:5)" in \
        result.stderr
    document = json.loads(invoke("validate", "--json", code=2).stdout)
    prompt = next(f for f in document["files"] if f["file"] == "prompts/score.yaml")
    assert prompt["error_file"] == "evalsets/score.jsonl" and prompt["line"] == 5


def test_read_only_commands_create_nothing_in_a_fresh_project(tmp_path: Path,
                                                              monkeypatch: object) -> None:
    import pytest

    mp = pytest.MonkeyPatch()
    try:
        mp.delenv("PROMPTCTL_STORE", raising=False)
        mp.chdir(tmp_path)
        for args in (["runs"], ["cache", "stats"]):
            invoke(*args)
        assert "no run" in invoke("show", "abc", code=2).stderr
        invoke("history", "nothing", code=2)
        # A diff or a report of runs that are not there fails without making a store.
        invoke("diff", "run:0000", "run:0001", code=2)
        invoke("report", "run:0000", "-o", str(tmp_path / "r.html"), code=2)
        assert not (tmp_path / ".promptctl").exists()
    finally:
        mp.undo()


# Every command that takes a prompt or pipeline file ("{}": the file given).
FILE_TAKERS = [
    ["eval", "{}"],
    ["eval", "{}", "--ref", "HEAD"],
    ["eval", "{}", "--dry-run"],
    ["diff", "HEAD", "HEAD", "--prompt", "{}"],
    ["history", "{}"],
    ["runs", "{}"],
    ["check", "--prompt", "{}"],
]


@pytest.mark.parametrize("args", FILE_TAKERS, ids=lambda a: " ".join(a))
def test_an_eval_set_given_for_a_prompt_names_the_prompt_files_that_use_it(
        repo: Repo, args: list[str]) -> None:  # noqa: F811
    repo.write("evalsets/score.yaml", "- {id: r1, input: {item: 1}, expected: 1}\n")
    repo.write("prompts/again.yaml", prompt_text().replace("name: score", "name: again"))
    repo.write("evalsets/lonely.jsonl", '{"id": "r1", "input": {"item": 1}, "expected": 1}\n')
    repo.commit("an eval set in YAML, a second prompt on score.jsonl, an eval set no prompt names")
    result = invoke(*(a.format("evalsets/score.jsonl") for a in args), code=2)
    assert "evalsets/score.jsonl: this is an eval set, not a prompt or pipeline file" \
        in result.stderr
    assert "malformed" not in result.stderr
    assert ("fix: pass one of the prompt files that name it in evalset: instead: "
            "prompts/again.yaml, prompts/score.yaml") in result.stderr
    result = invoke(*(a.format("evalsets/lonely.jsonl") for a in args), code=2)
    assert "this is an eval set" in result.stderr
    assert "--evalset evalsets/lonely.jsonl" in result.stderr
    # A YAML eval set (a list at the top level) is told from a prompt by its content.
    result = invoke(*(a.format("evalsets/score.yaml") for a in args), code=2)
    assert "evalsets/score.yaml: this is an eval set, not a prompt" in result.stderr
