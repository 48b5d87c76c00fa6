"""Agents through the commands that take a prompt file: eval (terminal and --json), show,
runs, history, diff, check and --resume, against the fake server and real git repositories
(the fake model's scripts are in tests/agentkit.py)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests import agentkit, fakeserver
from tests.fakeserver import FakeOpenAI
from tests.helpers import (
    REPO,
    GitRepo,
    eval_json,
    git_identity,
    git_init,
    invoke,
    runs_json,
    show_rows,
    use_fake_openai,
)

pytestmark = pytest.mark.both_stores  # run on SQLite, then on PostgreSQL

AGENT = "agents/calc.yaml"
REACT = "agents/calc_react.yaml"


@pytest.fixture
def api(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    fake_openai.responder = agentkit.answer
    return use_fake_openai(monkeypatch, fake_openai, "sk-test-agents-cli-6f5e4d3c2b1a")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GitRepo:
    git_identity(monkeypatch)
    root = git_init(tmp_path / "proj")
    agentkit.write_project(root)
    (root / ".gitignore").write_text(".promptctl/\n", encoding="utf-8")
    monkeypatch.chdir(root)
    repo = GitRepo(root)
    repo.commit("calc agent")
    return repo


def break_multiply(repo: GitRepo) -> None:
    """A change to the agent's tool code (not to the agent file): multiply adds one."""
    path = repo.root / "tools" / "calc.py"
    path.write_text(path.read_text(encoding="utf-8").replace("return a * b", "return a * b + 1"),
                    encoding="utf-8")


def test_eval_prints_the_agent_summary(api: FakeOpenAI, repo: GitRepo) -> None:
    text = invoke("eval", AGENT, code=0).stdout
    assert "retries 0" in text  # a row's turns are requests, not retries
    assert "agent  turns per row 2.46  tool calls 17  tool errors 3  invalid calls 2  " \
        "turn limit 1" in text
    assert "tool selection 0.600" in text and "(n 5)" in text
    assert "composability gap 0.333 (n 3:" in text and "1 of them wrong" in text
    assert "per row  ms model" in text and "cost $0.0000" in text


def test_show_prints_each_turn_with_its_calls_and_results(api: FakeOpenAI, repo: GitRepo) -> None:
    run, _ = eval_json(AGENT)
    text = invoke("show", run["id"]).stdout
    # 27 requests: a line per turn, under its row.
    assert sum(text.count(f"turn {n} ") for n in (1, 2, 3)) == 27
    assert 'call add({"a": 3, "b": 4}) -> 7' in text
    assert 'call multiply({"a": 7, "b": 5}) -> 35' in text
    assert "turn limit: max_turns reached" in text
    assert "tool selection 1 (expected add, multiply, in order)" in text
    # Every text in full, one row at a time.
    three = invoke("show", run["id"], "--row", "three").stdout
    assert [line.split()[:2] for line in three.splitlines() if line.startswith("turn ")] == [
        ["turn", "1"], ["turn", "2"], ["turn", "3"]]
    assert 'call add({"a": 3, "b": 4}) -> 7' in three and "\n  35\n" in three
    assert "tool error: ValueError: the shop is closed (calc.py:" in \
        invoke("show", run["id"], "--row", "boom").stdout
    assert "invalid: ghost is not a declared tool" in \
        invoke("show", run["id"], "--row", "ghost").stdout
    loop = invoke("show", run["id"], "--row", "loop").stdout
    assert "not run: max_turns reached" in loop and "turn limit: max_turns reached" in loop


def test_diff_and_history_of_two_agent_runs_follow_the_tools_code(
        api: FakeOpenAI, repo: GitRepo) -> None:
    first, _ = eval_json(AGENT)
    break_multiply(repo)
    repo.commit("multiply adds one")
    second, _ = eval_json(AGENT)
    # The tool's code is part of the agent's version, and only the rows it touches change:
    # three (7*5+1 = 36), anyorder and order (2*8+1 = 17, +10 = 27), extra (3*1+1 = 4).
    assert first["prompt_version"] != second["prompt_version"]
    assert first["metrics"]["exact_match"]["value"] == pytest.approx(9 / 11)
    assert second["metrics"]["exact_match"]["value"] == pytest.approx(5 / 11)
    diff = json.loads(invoke("diff", "HEAD~1", "HEAD", "--prompt", AGENT, "--json").stdout)
    assert diff["metrics"]["exact_match"]["delta"] == pytest.approx(-4 / 11)
    assert {r["row_id"] for r in diff["flipped"]["pass_to_fail"]} == {
        "three", "anyorder", "order", "extra"}
    history = json.dumps(json.loads(invoke("history", AGENT, "--json").stdout))
    assert first["prompt_version"][:12] in history and second["prompt_version"][:12] in history
    assert {r["id"] for r in runs_json()} == {first["id"], second["id"]}


def test_check_names_a_changed_tool_file(api: FakeOpenAI, repo: GitRepo) -> None:
    break_multiply(repo)
    repo.commit("multiply adds one")
    document = json.loads(invoke("check", "--json", "--prompt", AGENT, "--base", "HEAD~1",
                                 code=0).stdout)
    [entry] = document["prompts"]
    assert entry["reasons"] == ["tool tools/calc.py changed"]


def test_resume_restarts_a_row_mid_trajectory_with_its_turns_from_the_cache(
        api: FakeOpenAI, repo: GitRepo) -> None:
    # ReAct: the third turn of row three is the only request whose last user message is
    # "Observation: 35", so only it fails.
    api.fail_matching("Observation: 35", status=400)
    first, _ = eval_json(REACT, code=3)
    assert first["errors"] == 1
    api.reset()
    api.responder = agentkit.answer
    run, _ = eval_json("--resume", first["id"])
    # The row starts again from its first turn, but its first two turns come from the
    # cache: the one request sent is the turn that failed.
    assert api.count == 1
    assert run["errors"] == 0 and run["metrics"]["exact_match"]["value"] == 1.0
    row = {r["row_id"]: r for r in show_rows(run["id"])}["three"]
    assert [t["cached"] for t in row["trajectory"]["turns"]] == [True, True, False]
    assert row["answer"] == 35


@pytest.mark.parametrize("flag", ["--dry-run", "--batch"])
def test_options_an_agent_cannot_take_exit_2_before_sending(api: FakeOpenAI, repo: GitRepo,
                                                             flag: str) -> None:
    result = invoke("eval", AGENT, flag, code=2)
    assert f"{flag} does not apply to agents" in result.stderr
    assert api.count == 0


def test_eval_at_a_ref_runs_the_tools_as_committed(api: FakeOpenAI, repo: GitRepo) -> None:
    break_multiply(repo)  # in the work tree only: --ref HEAD must not run it
    run, _ = eval_json(AGENT, "--ref", "HEAD")
    assert run["metrics"]["exact_match"]["value"] == pytest.approx(9 / 11)
    assert run["git_dirty"] is False
    now, _ = eval_json(AGENT)
    assert now["metrics"]["exact_match"]["value"] == pytest.approx(5 / 11)


def test_resume_refuses_tools_changed_since_the_run_started(api: FakeOpenAI,
                                                            repo: GitRepo) -> None:
    api.fail_matching("Observation: 35", status=400)
    first, _ = eval_json(REACT, code=3)
    break_multiply(repo)
    result = invoke("eval", "--resume", first["id"], code=2)
    assert "the agent's tools changed since the run started" in result.stderr
    assert "calc.py" in result.stderr


def test_the_html_report_shows_each_turn_under_its_row(api: FakeOpenAI, repo: GitRepo,
                                                       tmp_path: Path) -> None:
    run, _ = eval_json(AGENT)
    out = tmp_path / "agent.html"
    invoke("report", run["id"], "-o", str(out))
    page = out.read_text(encoding="utf-8")
    assert "<th>steps or turns</th>" in page
    assert "<dt>turns per row</dt><dd>2.46</dd>" in page
    assert "<dt>tool selection</dt><dd><b>0.6</b>" in page
    island = page[page.index('{"rows":['):]
    island = island[:island.index("</script>")]
    rows = {r["id"]: r for r in json.loads(island)["rows"]}
    three = rows["three"]["st"]
    assert [s[0] for s in three] == ["turn 1", "turn 2", "turn 3"]
    assert three[0][1] == "ok" and 'add({"a": 3, "b": 4}) \u2192 7' in three[0][2]
    assert 'multiply({"a": 7, "b": 5}) \u2192 35' in three[1][2]
    assert three[2][2] == "answer"
    loop = rows["loop"]["st"]
    assert loop[-1][:2] == ["turn limit", "error"]
    assert any("error" in s[2] for s in rows["boom"]["st"])


SELECTING = agentkit.AGENT.replace(
    "metrics: [exact_match]", "metrics: [exact_match, tool_selection]\n"
    "thresholds:\n  tool_selection: {min: 0.8}")


def other_tools(body: fakeserver.Body) -> fakeserver.Reply:
    """The model of a second run: [three] adds twice (tool_selection 1 -> 0), [swap] adds
    before it multiplies (order: 0 -> 1, anyorder stays 1), [extra] answers after its add
    (0 -> 1); the other rows as before."""
    if "tools" in body:
        question = next(fakeserver.content_text(m.get("content"))
                        for m in body["messages"] if m["role"] == "user")
        turn = sum(1 for m in body["messages"] if m["role"] == "assistant")
        results = [fakeserver.content_text(m.get("content"))
                   for m in body["messages"] if m["role"] == "tool"]
        script = {"[three]": [("add", {"a": 3, "b": 4}), ("add", {"a": 7, "b": 5})],
                  "[swap]": [("add", {"a": 8, "b": 10}), ("multiply", {"a": 18, "b": 2})],
                  "[extra]": [("add", {"a": 1, "b": 2})]}
        for tag, calls in script.items():
            if question.startswith(tag):
                return (fakeserver.tool_call_reply(calls[turn]) if turn < len(calls)
                        else results[-1])
    return agentkit.answer(body)


def test_diff_tests_tool_selection_with_mcnemar(api: FakeOpenAI, repo: GitRepo) -> None:
    (repo.root / AGENT).write_text(SELECTING, encoding="utf-8")
    a, _ = eval_json(AGENT)
    api.responder = other_tools
    b, _ = eval_json(AGENT, "--no-cache")
    # By hand: a scores three 1, anyorder 1, order 0, extra 0, gap 1 (0.6); b scores three 0,
    # anyorder 1, order 1, extra 1, gap 1 (0.8): 0 -> 1 on order and extra, 1 -> 0 on three.
    assert a["metrics"]["tool_selection"]["value"] == pytest.approx(0.6)
    assert b["metrics"]["tool_selection"]["value"] == pytest.approx(0.8)
    compared = json.loads(invoke("diff", a["id"], b["id"], "--json").stdout)
    entry = compared["metrics"]["tool_selection"]
    assert entry["test"] == "mcnemar_exact" and entry["n"] == 5
    assert (entry["n01"], entry["n10"]) == (2, 1)
    assert entry["p_value"] == pytest.approx(1.0)  # two-sided exact binomial, 3 discordant


def test_check_gates_tool_selection_on_its_threshold(api: FakeOpenAI, repo: GitRepo) -> None:
    (repo.root / AGENT).write_text(SELECTING, encoding="utf-8")
    repo.commit("gate tool selection")
    document = json.loads(invoke("check", "--json", "--prompt", AGENT, "--base", "HEAD~1",
                                 code=1).stdout)
    assert "tool_selection" in json.dumps(document)
    human = invoke("check", "--prompt", AGENT, "--base", "HEAD~1", code=1).stdout
    assert "tool_selection ≥ 0.8" in human and "FAIL" in human


@pytest.fixture
def shop_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GitRepo:
    git_identity(monkeypatch)
    root = git_init(tmp_path / "shop")
    agentkit.write_shop_project(root, REPO / "data" / "shop.sqlite")
    (root / ".gitignore").write_text(".promptctl/\n", encoding="utf-8")
    monkeypatch.chdir(root)
    repo = GitRepo(root)
    repo.commit("shop agent")
    return repo


def empty_lyon(root: Path) -> None:
    """A change to the agent's database (not to its file): nobody lives in Lyon any more."""
    conn = sqlite3.connect(root / "data" / "shop.sqlite")
    with conn:
        conn.execute("UPDATE customers SET city = 'Nice' WHERE city = 'Lyon'")
    conn.close()


def test_check_names_a_changed_database_of_a_sql_tool(api: FakeOpenAI, shop_repo: GitRepo) -> None:
    api.responder = agentkit.shop_answer
    empty_lyon(shop_repo.root)
    shop_repo.commit("nobody in Lyon")
    document = json.loads(invoke("check", "--json", "--prompt", "agents/shop.yaml", "--base",
                                 "HEAD~1", code=0).stdout)
    [entry] = document["prompts"]
    assert entry["reasons"] == ["database data/shop.sqlite changed"]


def test_eval_at_a_ref_queries_the_database_as_committed(api: FakeOpenAI,
                                                         shop_repo: GitRepo) -> None:
    api.responder = agentkit.shop_answer
    empty_lyon(shop_repo.root)  # in the work tree only: --ref HEAD must not query it
    run, _ = eval_json("agents/shop.yaml", "--ref", "HEAD")
    rows = {r["row_id"]: r for r in show_rows(run["id"])}
    assert rows["lyon"]["answer"] == 2
    now, _ = eval_json("agents/shop.yaml")
    assert {r["row_id"]: r for r in show_rows(now["id"])}["lyon"]["answer"] == 0
    assert now["prompt_version"] != run["prompt_version"]
