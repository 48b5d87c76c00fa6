"""Agents (`kind: agent`) against the fake server playing a model that calls tools: the
trajectory a row stores, the cache replaying it, max_turns, tools that fail, invalid calls,
tool selection, the ReAct protocol, and agent files refused with their line.

The fake model's scripts and the hand-counted outcomes are in tests/agentkit.py."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from promptctl.agents import load_agent, parse_react, tool_selection
from promptctl.errors import InputError
from promptctl.scoring import extract
from promptctl.target import inputs_of, load_target
from tests import agentkit
from tests.fakeserver import FakeOpenAI
from tests.helpers import REPO, eval_json, git_init, invoke, show_rows, use_fake_openai

AGENT = "agents/calc.yaml"
REACT = "agents/calc_react.yaml"


@pytest.fixture
def api(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    fake_openai.responder = agentkit.answer
    return use_fake_openai(monkeypatch, fake_openai, "sk-test-agents-1a2b3c4d5e6f")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = git_init(tmp_path / "proj")
    agentkit.write_project(root)
    monkeypatch.chdir(root)
    return root


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["row_id"]: r for r in rows}


def test_a_three_turn_trajectory_calls_tools_and_sends_back_their_results(
        api: FakeOpenAI, project: Path) -> None:
    run, _ = eval_json(AGENT)
    row = by_id(show_rows(run["id"]))["three"]
    trajectory = row["trajectory"]
    assert trajectory["outcome"] == "answer" and trajectory["protocol"] == "tools"
    turns = trajectory["turns"]
    assert len(turns) == 3
    # add(3, 4) = 7; the model multiplies the result it was sent back: 7 * 5 = 35.
    assert [(c["name"], c["result"]) for c in turns[0]["calls"]] == [("add", "7")]
    assert [(c["name"], c["result"]) for c in turns[1]["calls"]] == [("multiply", "35")]
    assert "calls" not in turns[2] and turns[2]["completion"] == "35"
    assert row["answer"] == 35 and row["scores"]["exact_match"] == 1.0
    assert trajectory["tools_called"] == ["add", "multiply"]
    assert trajectory["tool_selection"] == 1.0
    # The conversation: system, user, then assistant (tool_calls) + tool message per turn.
    roles = [m["role"] for m in trajectory["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    call_id = trajectory["messages"][2]["tool_calls"][0]["id"]
    assert trajectory["messages"][3] == {"role": "tool", "tool_call_id": call_id, "content": "7"}
    # The third request sent both results back: what the server saw.
    last = [r for r in api.chat_requests if "(3 + 4)" in str(r.body["messages"][1])][-1]
    assert [m["content"] for m in last.body["messages"] if m["role"] == "tool"] == ["7", "35"]
    assert turns[2]["n_messages"] == 6
    # Tool time apart from the model's, both in the row's latency.
    assert trajectory["tool_ms"] >= 0 and row["latency_ms"] == pytest.approx(
        trajectory["model_ms"] + trajectory["tool_ms"], abs=0.01)


def test_the_run_summary_counts_turns_errors_turn_limit_selection_and_gap(
        api: FakeOpenAI, project: Path) -> None:
    run, _ = eval_json(AGENT)
    assert run["kind"] == "agent"
    agent = run["agent"]
    assert api.count == 27  # hand count in agentkit
    assert agent["rows"] == 11 and agent["turns_mean"] == pytest.approx(27 / 11, abs=1e-3)
    assert agent["tool_errors"] == 3 and agent["invalid_calls"] == 2
    assert agent["turn_limit"] == 1
    assert agent["tool_selection"]["value"] == pytest.approx(0.6)
    assert agent["tool_selection"]["n"] == 5
    assert agent["composability_gap"] == {"value": pytest.approx(1 / 3), "n": 3, "wrong": 1}
    assert run["cost_usd"] > 0
    assert agent["cost_usd_per_row"] == pytest.approx(run["cost_usd"] / 11, abs=1e-8)
    assert agent["latency_ms_mean"] == pytest.approx(
        agent["model_ms_mean"] + agent["tool_ms_mean"], abs=0.01)


def test_an_unchanged_agent_replays_from_the_cache_without_a_request(
        api: FakeOpenAI, project: Path) -> None:
    first, _ = eval_json(AGENT)
    sent = api.count
    second, _ = eval_json(AGENT)
    assert api.count == sent  # every turn of every row came from the cache
    assert second["cached"] == second["n"] == 11
    assert second["metrics"] == first["metrics"]
    assert second["agent"]["tool_errors"] == first["agent"]["tool_errors"] == 3


def test_max_turns_reached_leaves_the_last_call_unrun_and_counts_turn_limit(
        api: FakeOpenAI, project: Path) -> None:
    run, _ = eval_json(AGENT)
    row = by_id(show_rows(run["id"]))["loop"]
    trajectory = row["trajectory"]
    assert trajectory["outcome"] == "turn_limit" and len(trajectory["turns"]) == 3
    assert [c.get("result") for t in trajectory["turns"][:2] for c in t["calls"]] == ["2", "2"]
    (unrun,) = trajectory["turns"][2]["calls"]
    assert unrun["not_executed"] is True and "result" not in unrun
    assert row["valid"] is False and row["scores"]["exact_match"] == 0.0  # scored as it stands
    loop_requests = [r for r in api.chat_requests if "[loop]" in str(r.body["messages"][1])]
    assert len(loop_requests) == 3


def test_a_tool_that_raises_times_out_or_returns_non_json_is_an_error_result(
        api: FakeOpenAI, project: Path) -> None:
    run, _ = eval_json(AGENT)
    rows = by_id(show_rows(run["id"]))
    for row_id, expected in (("boom", "ValueError: the shop is closed"),
                             ("slow", "did not return within 0.5 s"),
                             ("weird", "returned a set, which is not JSON-serialisable")):
        trajectory = rows[row_id]["trajectory"]
        (call,) = trajectory["turns"][0]["calls"]
        assert expected in call["error"], row_id
        assert call["result"].startswith("error: ") and expected in call["result"]
        assert call["invalid"] is False
        assert trajectory["tool_errors"] == 1 and trajectory["invalid_calls"] == 0
        # The error went back to the model as the tool message, and the row went on.
        assert trajectory["messages"][3]["content"] == call["result"]
        assert rows[row_id]["answer"] == 0 and rows[row_id]["error"] is None
    assert "calc.py:" in rows["boom"]["trajectory"]["turns"][0]["calls"][0]["error"]


def test_an_undeclared_tool_or_arguments_not_json_are_invalid_calls_not_a_crash(
        api: FakeOpenAI, project: Path) -> None:
    run, _ = eval_json(AGENT)
    rows = by_id(show_rows(run["id"]))
    ghost = rows["ghost"]["trajectory"]["turns"][0]["calls"][0]
    assert ghost["invalid"] is True and "ghost is not a declared tool" in ghost["error"]
    bad = rows["badargs"]["trajectory"]["turns"][0]["calls"][0]
    assert bad["invalid"] is True and "arguments are not JSON" in bad["error"]
    assert bad["arguments"] == "{a: 1, b:"
    for row_id in ("ghost", "badargs"):
        trajectory = rows[row_id]["trajectory"]
        assert trajectory["invalid_calls"] == 1 and trajectory["tool_errors"] == 0
        assert trajectory["messages"][3]["content"].startswith("error: ")
        assert rows[row_id]["answer"] == 0


def test_tool_selection_per_row_against_the_hand_count(api: FakeOpenAI, project: Path) -> None:
    run, _ = eval_json(AGENT)
    rows = by_id(show_rows(run["id"]))
    got = {k: r["trajectory"].get("tool_selection") for k, r in rows.items()}
    assert got == {"three": 1.0, "anyorder": 1.0, "order": 0.0, "extra": 0.0, "gap": 1.0,
                   "loop": None, "boom": None, "slow": None, "weird": None, "ghost": None,
                   "badargs": None}


@pytest.mark.parametrize(("called", "expected", "strict", "value"), [
    (["add", "multiply"], ["add", "multiply"], True, 1.0),
    (["multiply", "add"], ["add", "multiply"], True, 0.0),
    (["multiply", "add"], ["add", "multiply"], False, 1.0),
    (["add", "add", "multiply"], ["add", "multiply"], True, 1.0),
    (["add"], ["add", "multiply"], False, 0.0),
    (["add", "multiply"], ["add"], False, 0.0),
    ([], [], True, 1.0),
])
def test_tool_selection(called: list[str], expected: list[str], strict: bool,
                        value: float) -> None:
    assert tool_selection(called, expected, strict) == value


def test_react_parses_actions_and_feeds_observations_back(api: FakeOpenAI, project: Path) -> None:
    run, _ = eval_json(REACT)
    rows = by_id(show_rows(run["id"]))
    trajectory = rows["three"]["trajectory"]
    assert trajectory["protocol"] == "react" and trajectory["outcome"] == "answer"
    calls = [c for t in trajectory["turns"] for c in t.get("calls") or []]
    assert [(c["name"], c["arguments"], c["result"]) for c in calls] == [
        ("add", '{"a": 3, "b": 4}', "7"), ("multiply", '{"a": 7, "b": 5}', "35")]
    assert rows["three"]["answer"] == 35 and trajectory["tool_selection"] == 1.0
    # No native tools on the wire; the system prompt describes them and the format.
    first = next(r for r in api.chat_requests if "[three]" in str(r.body["messages"]))
    assert "tools" not in first.body
    assert "Action Input:" in first.body["messages"][0]["content"]
    # The text after the model's own "Observation:" is not kept; the real one is sent.
    messages = trajectory["messages"]
    assert "99" not in messages[2]["content"] and messages[3] == {
        "role": "user", "content": "Observation: 7"}
    assert rows["plain"]["answer"] == 2 and rows["plain"]["trajectory"]["tools_called"] == []


@pytest.mark.parametrize(("text", "call", "final"), [
    ('Thought: x\nAction: add\nAction Input: {"a": 1}', ("add", '{"a": 1}'), None),
    ('Action: add\nAction Input: {"a": 1}\nObservation: 2\nFinal Answer: 2', ("add", '{"a": 1}'),
     None),
    ("Thought: done\nFinal Answer: 42", None, "42"),
    ("just 42", None, "just 42"),
    ("Final Answer: 5\nAction: add\nAction Input: {}", None, "5\nAction: add\nAction Input: {}"),
])
def test_parse_react(text: str, call: tuple[str, str] | None, final: str | None) -> None:
    step = parse_react(text)
    assert step.call == call and step.final == final


@pytest.mark.parametrize("name", ["calc_agent.yaml", "calc_agent_react.yaml"])
def test_the_shipped_agents_load_and_check_their_eval_set(name: str) -> None:
    agent = load_agent(REPO / "agents" / name)
    evalset = agent.load_evalset()
    agent.check_rows(evalset.rows, evalset.path)  # every tool loads, every row fits
    assert len(evalset) >= 6 and all(r.expected_tools for r in evalset)
    assert {t.name for t in agent.tools} == {"add", "multiply"}
    assert [i.load()(a=6, b=7) for i in agent.impls.values()] == [13, 42]
    assert agent.protocol == ("react" if "react" in name else "tools")
    assert agent.messages_for(evalset.rows[0])[-1]["content"] == "What is 12 + 30?"
    # The last number of a sentence is the answer.
    assert extract("So, 6 times 7 is 42.", agent.output).answer == 42


def test_a_new_agent_kind_loads_through_the_one_loader(project: Path) -> None:
    agent = load_target(AGENT)
    assert agent.kind == "agent" and agent.name == "calc"
    assert [p.name for p in agent.files] == ["calc.yaml", "calc.py"]


@pytest.mark.parametrize(("change", "message", "line"), [
    (("protocol: tools", "protocol: telepathy"), "unknown protocol", 4),
    (("max_turns: 3", "max_turns: 0"), "max_turns must be an integer", 5),
    (("    tool: ../tools/calc.py:add\n", ""), "tool add needs tool:", 13),
    (("calc.py:add", "calc.py"), "not FILE.py:FUNCTION", 16),
])
def test_agent_files_are_refused_naming_the_line(project: Path, change: tuple[str, str],
                                                 message: str, line: int) -> None:
    path = project / AGENT
    path.write_text(agentkit.AGENT.replace(*change, 1), encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_agent(path)
    assert message in caught.value.message and caught.value.line == line
    assert caught.value.fix


def test_a_tool_function_that_does_not_exist_is_named_before_anything_is_sent(
        api: FakeOpenAI, project: Path) -> None:
    path = project / AGENT
    path.write_text(agentkit.AGENT.replace("calc.py:add", "calc.py:plus", 1), encoding="utf-8")
    result = invoke("eval", AGENT, code=2)
    assert "has no function 'plus'" in result.stderr and "calc.yaml:16" in result.stderr
    assert api.count == 0


def test_a_row_expecting_an_undeclared_tool_is_refused_with_its_line(
        api: FakeOpenAI, project: Path) -> None:
    path = project / "evalsets" / "agent.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace('["add", "multiply"]', '["add", "divide"]')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = invoke("eval", AGENT, code=2)
    assert "row 'anyorder' expects tool 'divide', which the agent does not declare" \
        in result.stderr
    assert "agent.jsonl:2" in result.stderr and api.count == 0


SELECTING = agentkit.AGENT.replace(
    "metrics: [exact_match]", "metrics: [exact_match, tool_selection]\n"
    "thresholds:\n  tool_selection: {min: 0.8}")


def test_tool_selection_is_a_row_score_and_a_run_metric_with_n_and_interval(
        api: FakeOpenAI, project: Path) -> None:
    (project / AGENT).write_text(SELECTING, encoding="utf-8")
    agent = load_agent(project / AGENT)
    assert agent.metrics == ("exact_match", "tool_selection")
    assert agent.thresholds == {"tool_selection": {"min": 0.8}}
    run, _ = eval_json(AGENT)
    rows = by_id(show_rows(run["id"]))
    # The hand count of agentkit: scored only on the five rows with expected_tools.
    got = {k: r["scores"].get("tool_selection") for k, r in rows.items()}
    assert got == {"three": 1.0, "anyorder": 1.0, "order": 0.0, "extra": 0.0, "gap": 1.0,
                   "loop": None, "boom": None, "slow": None, "weird": None, "ghost": None,
                   "badargs": None}
    metric = run["metrics"]["tool_selection"]
    assert metric["value"] == pytest.approx(0.6) and metric["n"] == 5
    low, high = metric["ci95"]
    assert 0 <= low < 0.6 < high <= 1
    assert run["agent"]["tool_selection"]["value"] == pytest.approx(0.6)


@pytest.mark.parametrize(("change", "message"), [
    (("metrics: [exact_match]", "metrics: [exact_match, tool_selection]\n"
      "thresholds:\n  tool_selection: {min: 80}"), "tool_selection"),
])
def test_a_tool_selection_threshold_out_of_its_range_is_refused(
        project: Path, change: tuple[str, str], message: str) -> None:
    path = project / AGENT
    path.write_text(agentkit.AGENT.replace(*change), encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_agent(path)
    assert message in caught.value.message and "0.8" in (caught.value.fix or "")


def test_tool_selection_is_refused_in_a_prompt_file(project: Path) -> None:
    path = project / "prompts" / "p.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text("name: p\nmessages:\n  - role: user\n    content: hi\n"
                    "metrics: [exact_match, tool_selection]\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_target(path)
    assert "tool_selection is scored only in agent files" in caught.value.message
    assert caught.value.line == 5


SHOP = "agents/shop.yaml"


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = git_init(tmp_path / "shop")
    agentkit.write_shop_project(root, REPO / "data" / "shop.sqlite")
    monkeypatch.chdir(root)
    return root


def test_a_sql_tool_runs_the_models_query_read_only_and_sends_back_the_rows(
        api: FakeOpenAI, shop: Path) -> None:
    api.responder = agentkit.shop_answer
    database = shop / "data" / "shop.sqlite"
    before = hashlib.sha256(database.read_bytes()).hexdigest()
    run, _ = eval_json(SHOP)
    rows = by_id(show_rows(run["id"]))
    lyon = rows["lyon"]["trajectory"]["turns"][0]["calls"][0]
    assert lyon["name"] == "query_shop" and lyon["error"] is None
    assert json.loads(lyon["result"]) == [{"name": "Ada Brook", "city": "Lyon"},
                                          {"name": "Chloe Dunn", "city": "Lyon"}]
    assert rows["lyon"]["answer"] == 2
    audio = [c for t in rows["audio"]["trajectory"]["turns"] for c in t.get("calls") or []]
    assert json.loads(audio[0]["result"]) == [{"name": "Headphones", "price_cents": 12000},
                                              {"name": "Speaker", "price_cents": 7500}]
    assert (audio[1]["name"], audio[1]["result"]) == ("add", "19500")
    assert rows["audio"]["answer"] == 19500
    # A write through the tool: refused, an error result the model reads; the file unchanged.
    write = rows["write"]["trajectory"]
    delete, drop = write["turns"][0]["calls"]
    for call in (delete, drop):
        assert call["invalid"] is False and "the query was refused" in call["error"]
        assert call["result"].startswith("error: ")
    assert write["tool_errors"] == 2
    assert json.loads(write["turns"][1]["calls"][0]["result"]) == [{"n": 12}]
    assert rows["write"]["answer"] == 12
    assert hashlib.sha256(database.read_bytes()).hexdigest() == before
    assert {k: r["scores"]["tool_selection"] for k, r in rows.items()} == {
        "lyon": 1.0, "audio": 1.0, "write": 1.0}
    assert run["metrics"]["exact_match"]["value"] == 1.0


def test_the_database_of_a_sql_tool_is_an_input_of_the_agent(shop: Path) -> None:
    agent = load_target(SHOP)
    assert [p.name for p in agent.files] == ["shop.yaml", "shop.sqlite", "calc.py"]
    assert {p.name: what for p, what in inputs_of(agent)}["shop.sqlite"] == "database"
    conn = sqlite3.connect(shop / "data" / "shop.sqlite")
    with conn:
        conn.execute("UPDATE products SET price_cents = 1 WHERE id = 1")
    conn.close()
    assert load_target(SHOP).version != agent.version


@pytest.mark.parametrize(("change", "message", "line"), [
    (("sql: {database: ../data/shop.sqlite}", "sql: {database: ../data/none.sqlite}"),
     "was not found", 15),
    (("properties: {query: {type: string}}, required: [query]",
      "properties: {sql: {type: string}}"), "takes one argument, query", 14),
    (("sql: {database: ../data/shop.sqlite}", "sql: {database: ../data/shop.sqlite, rows: 3}"),
     "unknown key 'rows'", 15),
    (("sql: {database: ../data/shop.sqlite}",
      "sql: {database: ../data/shop.sqlite}\n    tool: ../tools/calc.py:add"),
     "both tool: and sql:", 15),
])
def test_sql_tools_are_refused_naming_the_line(shop: Path, change: tuple[str, str],
                                               message: str, line: int) -> None:
    path = shop / SHOP
    path.write_text(agentkit.SHOP_AGENT.replace(*change, 1), encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_agent(path)
    assert message in caught.value.message and caught.value.line == line
    assert caught.value.fix


@pytest.mark.parametrize("name", ["shop_agent.yaml", "shop_agent_react.yaml"])
def test_the_shipped_shop_agents_load_and_query_the_example_database(name: str) -> None:
    agent = load_agent(REPO / "agents" / name)
    evalset = agent.load_evalset()
    agent.check_rows(evalset.rows, evalset.path)
    assert len(evalset) >= 6 and all(r.expected_tools for r in evalset)
    assert {t.name for t in agent.tools} == {"query_shop", "add", "multiply"}
    assert agent.protocol == ("react" if "react" in name else "tools")
    assert agent.model == ("local/smollm2" if "react" in name else "gpt-4o-mini")
    assert "tool_selection" in agent.metrics
    assert [p.name for p in agent.database_files] == ["shop.sqlite"]
    query = agent.impls["query_shop"].load()
    assert query(query="SELECT COUNT(*) AS n FROM customers WHERE city = 'Lyon'") == [{"n": 2}]
