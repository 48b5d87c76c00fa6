"""Tool calls as answers, end to end: prompt files with `tools:` and `output.type: tool_call`
or `tool_calls`, the real CLI and the real openai SDK against the fake server, which answers
each ticket with the call (or text) the table of tests/toolkit.py (CASES) gives it.

Every metric is checked against a count by hand over a small eval set whose rows cover each
case: the right call, a wrong argument, the wrong tool, arguments that are not JSON, a tool
that was never declared, no call where none is expected and where one is, arguments that
break the tool's schema, a row that names the tool only, and a call where none is expected.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakeserver import Body, FakeOpenAI, Reply, tool_call_reply
from tests.helpers import (
    GitRepo,
    eval_run,
    git,
    git_identity,
    git_init,
    invoke,
    run_cli,
    show_rows,
    use_fake_openai,
)
from tests.toolkit import CASES, PROMPT, answer, refund, write_project

# Counted by hand from the table (None: the row is not counted for the metric).
HAND = {
    #                    T1 T2 T3 T4 T5 T6    T7    T8 T9    T10
    "tool_name":         [1, 1, 0, 1, 0, 1,    0,    1, 1,    0],
    "tool_args":         [1, 0, 1, 0, 1, 1,    0,    0, None, 0],
    "tool_args_subset":  [1, 0, 1, 0, 1, 1,    0,    1, None, 0],
    "tool_call_validity": [1, 1, 1, 0, 0, None, None, 0, 1,    1],
    "exact_match":       [1, 0, 0, 0, 0, 1,    0,    0, 1,    0],
    "format_validity":   [1, 1, 1, 0, 1, 1,    1,    1, 1,    1],
}


def share(values: list[int | None]) -> tuple[float, int]:
    counted = [v for v in values if v is not None]
    return sum(counted) / len(counted), len(counted)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = write_project(tmp_path / "proj")
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def api(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, project: Path) -> FakeOpenAI:
    fake_openai.responder = answer
    return use_fake_openai(monkeypatch, fake_openai, "sk-test-tools-5e4d3c2b1a09")


# -- a run ---------------------------------------------------------------------------------------


def test_every_metric_matches_the_hand_count(api: FakeOpenAI) -> None:
    run = eval_run("prompts/support.yaml")
    assert run["n"] == 10 and run["errors"] == 0
    # Rows that only called a tool are answers, not "no text" rows.
    assert run["no_text"] == 0
    for metric, values in HAND.items():
        value, n = share(values)
        got = run["metrics"][metric]
        assert (got["value"], got["n"]) == (pytest.approx(value), n), metric
        low, high = got["ci95"]
        assert low <= value <= high, metric
    rows = {r["row_id"]: r for r in show_rows(run["id"])}
    for metric, values in HAND.items():
        by_row = [rows[t.lower()]["scores"].get(metric) for t in CASES]
        assert by_row == [None if v is None else float(v) for v in values], metric


def test_the_request_carries_the_tools_and_the_rows_keep_the_calls(api: FakeOpenAI) -> None:
    run = eval_run("prompts/support.yaml")
    body = api.chat_requests[0].body
    assert body["tool_choice"] == "auto"
    assert [t["function"]["name"] for t in body["tools"]] == ["refund", "lookup_order"]
    assert body["tools"][0] == {"type": "function", "function": {
        "name": "refund", "description": "Refund an order.",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"},
                                                         "amount": {"type": "number"}},
                       "required": ["order_id"]}}}
    rows = {r["row_id"]: r for r in show_rows(run["id"])}
    # The answer: the first call, its arguments parsed, or as written when they are not JSON.
    assert rows["t1"]["answer"] == {"name": "refund", "arguments": {"order_id": "A1", "amount": 5}}
    assert rows["t4"]["answer"] == {"name": "refund", "arguments": '{"order_id": "A4", '}
    assert rows["t4"]["valid"] is False and "not JSON" in rows["t4"]["extract_error"]
    assert rows["t6"]["answer"] is None and rows["t6"]["valid"] is True
    # The completion is the text beside the call: "" when the model only called a tool.
    assert rows["t1"]["completion"] == "" and rows["t6"]["completion"] == "Nothing to do here."
    # The raw calls, as the server sent them; [] where the model called nothing.
    (call,) = rows["t4"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "refund", "arguments": '{"order_id": "A4", '}
    assert rows["t6"]["tool_calls"] == []
    assert rows["t1"]["judges"] is None  # the calls are not scoring details


def test_a_rerun_replays_the_calls_from_the_cache(api: FakeOpenAI) -> None:
    first = eval_run("prompts/support.yaml")
    sent = len(api.chat_requests)
    again = eval_run("prompts/support.yaml")
    assert len(api.chat_requests) == sent  # nothing sent
    assert again["cached"] == 10
    assert again["metrics"] == first["metrics"]
    old = {r["row_id"]: r for r in show_rows(first["id"])}
    for row in show_rows(again["id"]):
        assert row["cached"] is True
        assert (row["answer"], row["tool_calls"]) == (old[row["row_id"]]["answer"],
                                                      old[row["row_id"]]["tool_calls"])


def test_a_changed_tool_schema_is_not_answered_from_the_cache(api: FakeOpenAI,
                                                              project: Path) -> None:
    eval_run("prompts/support.yaml")
    sent = len(api.chat_requests)
    prompt = project / "prompts" / "support.yaml"
    prompt.write_text(prompt.read_text(encoding="utf-8").replace(
        "amount: {type: number}", "amount: {type: number, minimum: 0}"), encoding="utf-8")
    run = eval_run("prompts/support.yaml")
    assert run["cached"] == 0 and len(api.chat_requests) == sent + 10
    assert api.chat_requests[-1].body["tools"][0]["function"]["parameters"]["properties"][
        "amount"] == {"type": "number", "minimum": 0}


def test_show_prints_the_calls(api: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    run = eval_run("prompts/support.yaml")
    monkeypatch.setenv("COLUMNS", "600")  # one line per cell line
    lines = {line.split("│")[0].strip(): line for line in invoke("show", run["id"]).stdout.splitlines()
             if "│" in line and line.split("│")[0].strip()}
    completion, answer, expected = (lines["t1"].split("│")[i].strip() for i in (2, 3, 4))
    assert completion == 'call refund({"order_id": "A1", "amount": 5})'
    assert answer == expected == '{"name": "refund", "arguments": {"order_id": "A1", "amount": 5}}'
    assert 'call refund({"order_id": "A4", )' in lines["t4"]  # as the model wrote it
    assert "no answer: refund: arguments are not JSON" in lines["t4"]
    assert "call cancel_order(" in lines["t5"]
    # T6: text and no call, where none is expected.
    completion, answer, expected = (lines["t6"].split("│")[i].strip() for i in (2, 3, 4))
    assert (completion, answer, expected) == ("Nothing to do here.", "no call", "no call")
    # One row in full: its calls under "tool calls", as written.
    full = invoke("show", run["id"], "--row", "t4").stdout
    assert 'tool calls\n  refund({"order_id": "A4", )' in full
    assert "tool calls\n  none" in invoke("show", run["id"], "--row", "t6").stdout
    assert json.loads(invoke("show", run["id"], "--row", "t4", "--json").stdout)["rows"][0][
        "tool_calls"][0]["function"]["name"] == "refund"


# -- tool_calls: the list of calls, in order -------------------------------------------------------

LIST_PROMPT = PROMPT.replace("output: {type: tool_call}", "output: {type: tool_calls}")
LIST_CASES: dict[str, tuple[Reply, Any]] = {
    "S1": (tool_call_reply(("lookup_order", {"order_id": "A1"}), ("refund", {"order_id": "A1"})),
           [{"name": "lookup_order", "arguments": {"order_id": "A1"}}, refund("A1")]),
    "S2": (tool_call_reply(("refund", {"order_id": "A2"})),               # one call of two
           [{"name": "lookup_order", "arguments": {"order_id": "A2"}}, refund("A2")]),
    "S3": ("Nothing to do.", []),                                         # none, none due
    "S4": (tool_call_reply(("lookup_order", {"order_id": "A4"}), ("refund", "{oops")),
           [{"name": "lookup_order", "arguments": {"order_id": "A4"}}, refund("A4")]),
    "S5": (tool_call_reply(("refund", {"order_id": "A5"}), ("lookup_order", {"order_id": "A5"})),
           [{"name": "lookup_order"}, {"name": "refund"}]),               # the wrong order
}
LIST_HAND = {
    #                    S1 S2 S3    S4 S5
    "tool_name":         [1, 0, 1,    1, 0],
    "tool_args":         [1, 0, 1,    0, None],
    "tool_args_subset":  [1, 0, 1,    0, None],
    "tool_call_validity": [1, 1, None, 0, 1],
    "exact_match":       [1, 0, 1,    0, 0],
    "format_validity":   [1, 1, 1,    0, 1],
}


def test_a_list_of_calls_is_scored_in_order(fake_openai: FakeOpenAI, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_project(tmp_path / "list", LIST_PROMPT, LIST_CASES)
    monkeypatch.chdir(root)
    fake_openai.responder = lambda body: answer(body, LIST_CASES)
    use_fake_openai(monkeypatch, fake_openai, "sk-test-tools-5e4d3c2b1a09")
    run = eval_run("prompts/support.yaml")
    for metric, values in LIST_HAND.items():
        value, n = share(values)
        assert (run["metrics"][metric]["value"], run["metrics"][metric]["n"]) == \
            (pytest.approx(value), n), metric
    rows = {r["row_id"]: r for r in show_rows(run["id"])}
    assert [c["name"] for c in rows["s1"]["answer"]] == ["lookup_order", "refund"]
    assert rows["s3"]["answer"] == [] and rows["s3"]["tool_calls"] == []


# -- diff and check --------------------------------------------------------------------------------

# A second run's answers: T3 and T5 now call refund and T7 looks the order up (tool_name
# 0 -> 1), T1 looks an order up instead of refunding it (1 -> 0); the others as before.
BETTER = {**CASES,
          "T3": (tool_call_reply(("refund", {"order_id": "A3"})), CASES["T3"][1]),
          "T5": (tool_call_reply(("refund", {"order_id": "A5"})), CASES["T5"][1]),
          "T7": (tool_call_reply(("lookup_order", {"order_id": "A7"})), CASES["T7"][1]),
          "T1": (tool_call_reply(("lookup_order", {"order_id": "A1"})), CASES["T1"][1])}


def test_diff_tests_tool_name_with_mcnemar(api: FakeOpenAI) -> None:
    a = eval_run("prompts/support.yaml")
    api.responder = lambda body: answer(body, BETTER)
    b = eval_run("prompts/support.yaml", "--no-cache")
    compared = json.loads(invoke("diff", a["id"], b["id"], "--json").stdout)
    tool_name = compared["metrics"]["tool_name"]
    # By hand: fail -> pass on T3, T5, T7; pass -> fail on T1.
    assert tool_name["test"] == "mcnemar_exact"
    assert (tool_name["n01"], tool_name["n10"]) == (3, 1)
    assert tool_name["a"] == pytest.approx(0.6) and tool_name["b"] == pytest.approx(0.8)
    assert tool_name["p_value"] == pytest.approx(0.625)  # two-sided exact binomial, 4 discordant
    assert compared["metrics"]["tool_call_validity"]["test"] == "mcnemar_exact"


CHECKED = PROMPT.replace("evalset: ../evalsets/support.jsonl", """\
evalset: ../evalsets/support.jsonl
thresholds:
  tool_call_validity: {min: 0.5}
  tool_name: {min: 0.5}
""")


def worse_answer(body: Body) -> Reply:
    """The answers of CASES, but every call names lookup_order when the system message says
    WORSE."""
    reply = answer(body)
    if "WORSE" in str(body["messages"][0]["content"]) and isinstance(reply, dict):
        return {**reply, "tool_calls": [{**c, "name": "lookup_order"} for c in reply["tool_calls"]]}
    return reply


def test_check_gates_a_tool_metric(fake_openai: FakeOpenAI, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    git_identity(monkeypatch)
    repo = GitRepo(git_init(tmp_path / "repo"))
    write_project(repo.root, CHECKED)
    repo.commit("base")
    git(repo.root, "checkout", "-q", "-b", "feature")
    fake_openai.responder = worse_answer
    use_fake_openai(monkeypatch, fake_openai, "sk-test-tools-5e4d3c2b1a09")
    monkeypatch.chdir(repo.root)
    write_project(repo.root, CHECKED, style="WORSE")
    repo.commit("every call looks an order up")
    result = run_cli("check", "--json")
    assert result.exit_code == 1, result.stdout + result.stderr
    (entry,) = json.loads(result.stdout)["prompts"]
    gates = {g["metric"]: g for g in entry["gates"] if g.get("metric")}
    # By hand: every call now names lookup_order, so tool_name is right on T6 alone (no call,
    # none due): 1/10. Every call but T4's (not JSON) fits lookup_order: validity 7/8.
    assert gates["tool_name"]["status"] == "fail"
    assert gates["tool_call_validity"]["status"] == "pass"


# -- validate ----------------------------------------------------------------------------------


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """The 1-based line of the `nth` line of `text` that contains `needle`."""
    found = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    return found[nth - 1]


def swap(old: str, new: str) -> Any:
    def change(text: str) -> str:
        assert old in text
        return text.replace(old, new)
    return change


def expecting(ticket: str, expected: Any) -> dict[str, tuple[Reply, Any]]:
    return {**CASES, ticket: (CASES[ticket][0], expected)}


# (how the prompt changes, the eval set's cases, the file and the line of the text the error
# names, what it says)
BAD = {
    "a parameters schema that is not JSON Schema": (
        swap("amount: {type: number}", "amount: {type: numbr}"), CASES,
        ("prompt", "amount: {type: numbr}"), "the parameters of tool refund are not a valid JSON "
        "Schema at properties/amount/type"),
    "parameters that are not an object's": (
        swap("parameters: {type: object, properties: {order_id",
             "parameters: {type: array, properties: {order_id"), CASES,
        ("prompt", "type: array"), "the parameters of tool lookup_order must describe an object"),
    "a tool declared twice": (
        swap("  - name: lookup_order", "  - name: refund"), CASES,
        ("prompt", "  - name: refund", 2), "tool 'refund' is declared twice"),
    "a name the API refuses": (
        swap("  - name: lookup_order", "  - name: look up order"), CASES,
        ("prompt", "  - name: look up order"), "tools[1] needs a name of letters, digits"),
    "tools in the OpenAI request shape": (
        swap("  - name: lookup_order", "  - type: function\n    name: lookup_order"), CASES,
        ("prompt", "  - type: function"), "unknown key 'type' in tools[1]"),
    "a tool_choice naming no declared tool": (
        swap("tool_choice: auto", "tool_choice: {type: function, function: {name: cancel}}"),
        CASES, ("prompt", "tool_choice:"), "params.tool_choice names tool 'cancel'"),
    "a tool_choice of another kind": (
        swap("tool_choice: auto", "tool_choice: always"), CASES, ("prompt", "tool_choice:"),
        "params.tool_choice must be auto, none, required or one tool"),
    "tools under params": (
        swap("  tool_choice: auto", "  tool_choice: auto\n  tools: []"), CASES,
        ("prompt", "  tools: []"), "params.tools is set by promptctl from tools:"),
    "a tool call output without tools": (
        lambda text: (text[:text.index("tools:")] + text[text.index("output:"):]).replace(
            "  tool_choice: auto\n", ""), CASES,
        ("prompt", "output: {type: tool_call}"), "output.type tool_call needs tools:"),
    "a tool_choice without tools": (
        lambda text: text[:text.index("tools:")] + text[text.index("output:"):], CASES,
        ("prompt", "tool_choice: auto"), "params.tool_choice needs tools: to choose from"),
    "a tool metric on a text output": (
        swap("output: {type: tool_call}", "output: {type: string}"), CASES,
        ("prompt", "metrics:"), "metric tool_name needs output.type tool_call or tool_calls"),
    "expected arguments that are not a mapping": (
        lambda text: text, expecting("T2", {"name": "refund", "arguments": "A2"}),
        ("evalset", 2), "row 't2': expected has arguments that are not a mapping"),
    "an expected call of an undeclared tool": (
        lambda text: text, expecting("T3", {"name": "cancel", "arguments": {}}),
        ("evalset", 3), "row 't3': expected names tool 'cancel', which the prompt's tools: does "
        "not declare"),
    "an expected call without a name": (
        lambda text: text, expecting("T4", {"arguments": {"order_id": "A4"}}),
        ("evalset", 4), "row 't4': expected needs name"),
    "an expected list for one call": (
        lambda text: text, expecting("T5", [refund("A5")]),
        ("evalset", 5), "row 't5': expected is [{"),
    "expected null for a list of calls": (
        swap("output: {type: tool_call}", "output: {type: tool_calls}"),
        {**{t: (r, [] if e is None else [e]) for t, (r, e) in CASES.items()},
         "T6": (CASES["T6"][0], None)},
        ("evalset", 6), "row 't6': expected is null, not a list of calls"),
}


@pytest.mark.parametrize("case", BAD)
def test_validate_names_the_file_and_line(case: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    change, cases, (which, where, *nth), message = BAD[case]
    prompt = change(PROMPT).replace("STYLE", "")
    root = write_project(tmp_path / "proj", prompt, cases)
    monkeypatch.chdir(root)
    result = invoke("validate", "prompts/support.yaml", "--json", code=2)
    (report,) = json.loads(result.stdout)["files"]
    if which == "prompt":
        assert report["error_file"] == "prompts/support.yaml"
        assert report["line"] == line_of(prompt, where, *nth)
    else:
        assert report["error_file"] == "evalsets/support.jsonl" and report["line"] == where
    assert message in report["message"], report
    assert report["fix"]


def test_validate_accepts_the_example_project(project: Path) -> None:
    assert json.loads(invoke("validate", "--json").stdout)["ok"] is True


# -- whatever the server sends ---------------------------------------------------------------------

KEY = "sk-test-tools-5e4d3c2b1a09"
A1 = '{"order_id": "A1", "amount": 5}'


def calls(*items: Any) -> dict[str, Any]:
    return {"tool_calls": list(items)}


def fn(**function: Any) -> dict[str, Any]:
    return {"id": "call_1", "type": "function", "function": function}


# The message T1 gets instead of its call: (its fields, the row's answer, valid, tool_name,
# tool_call_validity (None: not counted), what extract_error says)
HOSTILE: dict[str, tuple[dict[str, Any], Any, bool, float, float | None, str | None]] = {
    "tool_calls an object, not a list": (
        {"tool_calls": fn(name="refund", arguments=A1)},
        refund("A1", amount=5), True, 1.0, 1.0, None),
    "a call that is not an object": (
        calls("refund"), {"name": None, "arguments": None}, False, 0.0, 0.0,
        "call 1 is not a function call"),
    "a call without a name": (
        calls(fn(arguments=A1)), {"name": None, "arguments": {"order_id": "A1", "amount": 5}},
        False, 0.0, 0.0, "call 1 names no function"),
    "a name that is not a string": (
        calls(fn(name=42, arguments=A1)), {"name": None, "arguments": {"order_id": "A1", "amount": 5}},
        False, 0.0, 0.0, "call 1 names no function"),
    "arguments as an object, not JSON text": (
        calls(fn(name="refund", arguments={"order_id": "A1", "amount": 5})),
        refund("A1", amount=5), True, 1.0, 1.0, None),
    "arguments that are a number": (
        calls(fn(name="refund", arguments=5)), {"name": "refund", "arguments": 5}, True, 1.0, 0.0,
        None),
    "no arguments": (
        calls(fn(name="refund")), {"name": "refund", "arguments": None}, False, 1.0, 0.0,
        "refund: no arguments"),
    "arguments with NaN": (
        calls(fn(name="refund", arguments='{"order_id": "A1", "amount": NaN}')),
        {"name": "refund", "arguments": '{"order_id": "A1", "amount": NaN}'}, False, 1.0, 0.0,
        "refund: arguments are not JSON: NaN is not a JSON number"),
    "arguments nested too deep": (
        calls(fn(name="refund", arguments="[" * 100 + "]" * 100)),
        {"name": "refund", "arguments": "[" * 100 + "]" * 100}, False, 1.0, 0.0,
        "refund: arguments nest more than 64 levels deep"),
    "the older function_call": (
        {"function_call": {"name": "refund", "arguments": A1}},
        refund("A1", amount=5), True, 1.0, 1.0, None),
    "an empty list of calls": (
        calls(), None, True, 0.0, None, None),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_whatever_the_server_sends_is_scored_not_fatal(case: str, api: FakeOpenAI) -> None:
    fields, answer_, valid, name_score, validity, error = HOSTILE[case]

    def reshape(body: Body, doc: Body) -> Body:
        doc["choices"][0]["message"] = {"role": "assistant", "content": None, **fields}
        return doc

    api.reshape = reshape
    run = eval_run("prompts/support.yaml", "--limit", "1")
    assert run["errors"] == 0 and run["no_text"] == 0
    (row,) = show_rows(run["id"])
    assert (row["answer"], row["valid"]) == (answer_, valid)
    assert row["scores"]["tool_name"] == name_score
    assert row["scores"].get("tool_call_validity") == validity
    assert row["extract_error"] == error or (error is not None and error in row["extract_error"])
    invoke("show", run["id"])  # prints


def test_server_text_in_a_call_is_made_storable(api: FakeOpenAI) -> None:
    arguments = '{"order_id": "A1\ud800", "note": "key ' + KEY + '"}'

    def reshape(body: Body, doc: Body) -> Body:
        doc["choices"][0]["message"] = {"role": "assistant", "content": None,
                                        "tool_calls": [fn(name="refund", arguments=arguments)]}
        return doc

    api.reshape = reshape
    run = eval_run("prompts/support.yaml", "--limit", "1")
    (row,) = show_rows(run["id"])
    assert row["answer"]["arguments"]["order_id"] == "A1\ufffd"  # a lone surrogate replaced
    assert KEY not in json.dumps(row) and KEY not in invoke("show", run["id"]).stdout


# -- the rest of a run's life ------------------------------------------------------------------------


def test_rescore_reads_the_stored_calls(api: FakeOpenAI, project: Path) -> None:
    run = eval_run("prompts/support.yaml")
    sent = len(api.chat_requests)
    prompt = project / "prompts" / "support.yaml"
    # Scored with the file as it is now (it asks what the run asked): exact_match dropped.
    prompt.write_text(prompt.read_text(encoding="utf-8").replace(" exact_match,", ""),
                      encoding="utf-8")
    again = json.loads(invoke("rescore", run["id"], "--json").stdout)["runs"][0]
    assert len(api.chat_requests) == sent
    assert again["metrics"] == {k: v for k, v in run["metrics"].items() if k != "exact_match"}
    old = {r["row_id"]: r for r in show_rows(run["id"])}
    for row in show_rows(again["id"]):
        assert (row["answer"], row["tool_calls"], row["completion"]) == (
            old[row["row_id"]]["answer"], old[row["row_id"]]["tool_calls"],
            old[row["row_id"]]["completion"])


def test_batch_is_refused_while_it_drops_the_calls(api: FakeOpenAI) -> None:
    result = invoke("eval", "prompts/support.yaml", "--batch", code=2)
    assert "--batch does not bring back tool calls yet" in result.stderr
    assert not api.chat_requests and not api.batch_creations


def test_dry_run_counts_the_tools_with_every_request(api: FakeOpenAI, project: Path) -> None:
    def tokens() -> int:
        (plan,) = json.loads(invoke("eval", "prompts/support.yaml", "--dry-run", "--json")
                             .stdout)["dry_run"]
        assert plan["to_send"] == 10
        return int(plan["prompt_tokens"])

    before = tokens()
    prompt = project / "prompts" / "support.yaml"
    prompt.write_text(prompt.read_text(encoding="utf-8").replace(
        "Refund an order.", "Refund an order. " + "Only orders paid by card. " * 20),
        encoding="utf-8")
    assert tokens() > before + 10 * 50  # 500 characters more in each of 10 requests


def test_a_pipeline_step_cannot_answer_with_calls(project: Path) -> None:
    (project / "pipelines").mkdir()
    (project / "pipelines" / "flow.yaml").write_text(
        "kind: pipeline\nsteps:\n  - id: act\n    prompt: ../prompts/support.yaml\n"
        "    input: {ticket: '{{ input.ticket }}'}\noutput: '{{ steps.act.answer }}'\n",
        encoding="utf-8")
    (report,) = json.loads(invoke("validate", "pipelines/flow.yaml", "--json", code=2)
                           .stdout)["files"]
    assert report["line"] == 4 and "answers with tool calls" in report["message"]
