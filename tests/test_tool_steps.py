"""Pipeline steps that run code: `sql:` (a read-only query of a project SQLite file) and
`tool:` (a project Python function), and `repeat_until` loops; run through `promptctl eval`
against the fake server, which answers every prompt step from its request."""

from __future__ import annotations

import hashlib
import json
import runpy
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from promptctl.errors import InputError
from promptctl.pipelines import load_pipeline
from promptctl.step_tools import SqlStep, StepFailure
from promptctl.target import inputs_of, load_target
from tests.fakeserver import FakeOpenAI, last_user_message
from tests.helpers import (
    commit_all,
    eval_json,
    git_identity,
    git_init,
    invoke,
    show_rows,
    use_fake_openai,
)
from tests.render.test_schema import check as schema_check

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-test-toolsteps-0a1b2c3d4e5f"

TO_SQL = """\
model: gpt-4o-mini
messages:
  - role: user
    content: "SQL for: {{ question }}"
output: {type: string}
"""
ANSWER = """\
model: gpt-4o-mini
messages:
  - role: user
    content: "Answer from rows: {{ rows }}"
output: {type: string}
"""
COUNT = """\
model: gpt-4o-mini
messages:
  - role: user
    content: "Next after: {{ n }}"
output: {type: integer}
"""
PIPELINE = """\
name: shop
kind: pipeline
steps:
  - id: to_sql
    prompt: ../prompts/to_sql.yaml
    input: {question: "{{ input.question }}"}
  - id: rows
    sql: {database: ../data/shop.sqlite, query: "{{ steps.to_sql.answer }}"}
  - id: answer
    prompt: ../prompts/answer.yaml
    input: {rows: "{{ steps.rows.answer | tojson }}"}
output: "{{ steps.answer.answer }}"
evalset: ../evalsets/shop.jsonl
"""
# What the fake model writes for each question; any other question is taken as the SQL.
SQL = {
    "How many customers live in Lyon?": "SELECT COUNT(*) AS n FROM customers WHERE city = 'Lyon'",
    "Most expensive product?": "SELECT name FROM products ORDER BY price_cents DESC LIMIT 1",
    "Top spender?": "SELECT customers.name FROM customers JOIN orders ON orders.customer_id = "
                    "customers.id JOIN products ON products.id = orders.product_id GROUP BY "
                    "customers.id ORDER BY SUM(orders.quantity * products.price_cents) DESC "
                    "LIMIT 1",
}
TOOLS = """\
import asyncio
import sys
import time


def add(a, b):
    return int(a) + int(b)


def boom(a):
    raise ValueError(f"no account {a}")  # line 11


def slow(a):
    time.sleep(3)
    return a


def not_json(a):
    return {a, "x"}


def leave(a):
    sys.exit(3)


async def later(a):
    await asyncio.sleep(0)
    return [a, a]


def step(n):
    return int(n or 0) + 1


def tick(x):
    from pathlib import Path

    ticks = Path(__file__).with_name("ticks.txt")
    with open(ticks, "a") as f:
        f.write("tick\\n")
    return len(x)
"""


def answer(body: dict[str, Any]) -> str:
    text = last_user_message(body)
    if text.startswith("SQL for: "):
        question = text.removeprefix("SQL for: ")
        return SQL.get(question, question)
    if text.startswith("Answer from rows: "):
        rows = json.loads(text.removeprefix("Answer from rows: "))
        return str(next(iter(rows[0].values()))) if rows else "none"
    if text.startswith("Next after: "):
        return str(int(text.removeprefix("Next after: ") or 0) + 1)
    return "unexpected: " + text


@pytest.fixture
def api(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    fake_openai.responder = answer
    return use_fake_openai(monkeypatch, fake_openai, KEY)


def build_shop(path: Path) -> None:
    runpy.run_path(str(REPO / "data" / "build_shop.py"))["build"](path)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "proj"
    for folder in ("prompts", "pipelines", "evalsets", "data", "tools"):
        (root / folder).mkdir(parents=True)
    (root / "prompts" / "to_sql.yaml").write_text(TO_SQL, encoding="utf-8")
    (root / "prompts" / "answer.yaml").write_text(ANSWER, encoding="utf-8")
    (root / "prompts" / "count.yaml").write_text(COUNT, encoding="utf-8")
    (root / "tools" / "calc.py").write_text(TOOLS, encoding="utf-8")
    build_shop(root / "data" / "shop.sqlite")
    monkeypatch.chdir(root)
    return root


def write(root: Path, pipeline: str, rows: list[dict[str, Any]], name: str = "shop") -> str:
    (root / "pipelines" / f"{name}.yaml").write_text(pipeline, encoding="utf-8")
    (root / "evalsets" / f"{name}.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return f"pipelines/{name}.yaml"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows_of(run_id: str) -> dict[str, dict[str, Any]]:
    return {r["row_id"]: r for r in show_rows(run_id)}


# --- sql steps --------------------------------------------------------------------------------


def test_question_to_sql_to_answer(api: FakeOpenAI, root: Path) -> None:
    # Hand-checked on data/build_shop.py: Ada Brook and Chloe Dunn live in Lyon; the
    # Headphones cost 120.00; Dev Patel spent 89.00 + 2 x 75.00 = 239.00, the most.
    path = write(root, PIPELINE, [
        {"id": "lyon", "input": {"question": "How many customers live in Lyon?"}, "expected": "2",
         "steps": {"rows": [{"n": 2}]}},
        {"id": "price", "input": {"question": "Most expensive product?"},
         "expected": "Headphones", "steps": {"rows": [{"name": "Headphones"}]}},
        {"id": "spender", "input": {"question": "Top spender?"}, "expected": "Dev Patel",
         "steps": {"rows": [{"name": "Dev Patel"}]}},
    ])
    run, _ = eval_json(path)
    assert run["errors"] == 0 and run["metrics"]["exact_match"]["value"] == 1.0
    rows_step = run["steps"]["rows"]
    assert rows_step["prompt"] == "sql:data/shop.sqlite" and rows_step["ran"] == 3
    assert rows_step["metrics"]["exact_match"]["value"] == 1.0
    # Two prompt steps per row reach the model; the query does not.
    assert len(api.chat_requests) == 6
    stored = rows_of(run["id"])
    lyon = stored["lyon"]["steps"]["rows"]
    assert lyon["input"] == {"query": SQL["How many customers live in Lyon?"]}
    assert lyon["answer"] == [{"n": 2}] and lyon["correct"] is True and lyon["cached"] is False
    assert lyon["tool_ms"] == lyon["latency_ms"] >= 0
    assert stored["lyon"]["steps"]["answer"]["messages"][-1]["content"] == \
        'Answer from rows: [{"n": 2}]'


@pytest.mark.parametrize("query", [
    "DELETE FROM orders",
    "DROP TABLE orders",
    "ATTACH DATABASE 'other.sqlite' AS other",
    "PRAGMA writable_schema = ON",
    "UPDATE products SET price_cents = 0",
    "INSERT INTO customers VALUES (9, 'X', 'Y')",
    "CREATE TABLE t (x)",
    "PRAGMA query_only = OFF",
])
def test_a_query_that_writes_is_refused_and_the_file_is_unchanged(root: Path, query: str) -> None:
    db = root / "data" / "shop.sqlite"
    before = sha(db)
    step = SqlStep(db, "data/shop.sqlite")
    with pytest.raises(StepFailure, match="refused|readonly|read-only"):
        step.query(query)
    assert sha(db) == before
    assert not (root / "data" / "other.sqlite").exists()


def test_a_second_statement_is_not_run(root: Path) -> None:
    db = root / "data" / "shop.sqlite"
    before = sha(db)
    with pytest.raises(StepFailure, match="one statement at a time"):
        SqlStep(db, "data/shop.sqlite").query("SELECT 1; DELETE FROM orders")
    assert sha(db) == before


def test_writes_in_a_run_are_step_errors_and_wrong_answers(api: FakeOpenAI, root: Path) -> None:
    db = root / "data" / "shop.sqlite"
    before = sha(db)
    attacks = ["DELETE FROM orders", "ATTACH DATABASE 'data/x.sqlite' AS x",
               "PRAGMA writable_schema = ON", "DROP TABLE orders"]
    path = write(root, PIPELINE, [{"id": f"a{i}", "input": {"question": q}, "expected": "0",
                                   "steps": {"rows": []}}
                                  for i, q in enumerate(attacks)]
                 + [{"id": "ok", "input": {"question": "How many customers live in Lyon?"},
                     "expected": "2", "steps": {"rows": [{"n": 2}]}}])
    run, _ = eval_json(path)
    # A refused query is its step's error; the row is not a failed request but a wrong
    # answer, scored: 1 right of 5, end to end and at the sql step.
    assert run["errors"] == 0 and run["n"] == 5
    assert run["metrics"]["exact_match"]["value"] == pytest.approx(1 / 5)
    assert run["steps"]["rows"]["metrics"]["exact_match"]["value"] == pytest.approx(1 / 5)
    assert run["steps"]["rows"]["errors"] == 4 and run["steps"]["answer"]["not_run"] == 4
    stored = rows_of(run["id"])
    for i in range(4):
        step = stored[f"a{i}"]["steps"]["rows"]
        assert step["error"].startswith("the query was refused: not authorized")
        assert step["correct"] is False
        assert stored[f"a{i}"]["error"] is None and stored[f"a{i}"]["valid"] is False
        assert stored[f"a{i}"]["extract_error"] == f"step rows: {step['error']}"
    assert stored["ok"]["answer"] == "2"
    assert sha(db) == before
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM orders").fetchone() == (12,)
    assert not (root / "data" / "x.sqlite").exists()


def test_more_rows_than_the_limit_is_the_steps_error(root: Path) -> None:
    many = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1500) " \
           "SELECT x FROM c"
    step = SqlStep(root / "data" / "shop.sqlite", "data/shop.sqlite")
    with pytest.raises(StepFailure, match="more than 1,000 rows"):
        step.query(many)
    assert len(step.query(many.replace("1500", "1000"))) == 1000
    small = SqlStep(root / "data" / "shop.sqlite", "data/shop.sqlite", max_rows=5)
    with pytest.raises(StepFailure, match="more than 5 rows"):
        small.query("SELECT * FROM orders")


def test_large_values_and_answers_are_the_steps_error(root: Path) -> None:
    step = SqlStep(root / "data" / "shop.sqlite", "data/shop.sqlite")
    with pytest.raises(StepFailure, match="string or blob too big"):
        step.query("SELECT randomblob(2000000)")
    twenty = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20) " \
             "SELECT hex(randomblob(500000)) AS h FROM c"
    with pytest.raises(StepFailure, match="the query's answer is 20,000,2.. characters as JSON"):
        step.query(twenty)


def test_a_slow_query_is_stopped_at_its_time_limit(root: Path) -> None:
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) " \
              "SELECT COUNT(*) FROM c"
    step = SqlStep(root / "data" / "shop.sqlite", "data/shop.sqlite", timeout=0.5)
    with pytest.raises(StepFailure, match="time limit of 0.5 s"):
        step.query(endless)


def test_max_rows_and_timeout_from_the_file(api: FakeOpenAI, root: Path) -> None:
    pipeline = PIPELINE.replace(
        'query: "{{ steps.to_sql.answer }}"}',
        'query: "{{ steps.to_sql.answer }}", max_rows: 3}\n    timeout: 0.5')
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) " \
              "SELECT COUNT(*) FROM c"
    path = write(root, pipeline, [
        {"id": "many", "input": {"question": "SELECT * FROM orders"}},
        {"id": "slow", "input": {"question": endless}},
    ])
    run, _ = eval_json(path)
    stored = rows_of(run["id"])
    assert "more than 3 rows" in stored["many"]["steps"]["rows"]["error"]
    assert "time limit of 0.5 s" in stored["slow"]["steps"]["rows"]["error"]


# --- tool steps -------------------------------------------------------------------------------


def tool_pipeline(function: str, extra: str = "", input_: str = '{a: "{{ input.a }}"}') -> str:
    return f"""\
name: tools
kind: pipeline
model: gpt-4o-mini
steps:
  - id: t
    tool: ../tools/calc.py:{function}
    input: {input_}
{extra}output: "{{{{ steps.t.answer }}}}"
evalset: ../evalsets/tools.jsonl
"""


def one_row(root: Path, pipeline: str, **input_: Any) -> dict[str, Any]:
    path = write(root, pipeline, [{"id": "r", "input": input_}], name="tools")
    run, _ = eval_json(path)
    (row,) = show_rows(run["id"])
    return row


def tool_error(row: dict[str, Any]) -> str:
    """The tool step's error: the row itself is scored (no answer), not an error."""
    assert row["error"] is None and row["valid"] is False
    error = row["steps"]["t"]["error"]
    assert row["extract_error"] == f"step t: {error}"
    assert isinstance(error, str)
    return error


def test_a_tool_gets_its_input_as_keyword_arguments(api: FakeOpenAI, root: Path) -> None:
    row = one_row(root, tool_pipeline("add", input_='{a: "{{ input.a }}", b: 2}'), a=40)
    step = row["steps"]["t"]
    assert step["input"] == {"a": 40, "b": 2} and step["answer"] == 42
    assert row["answer"] == "42" and step["tool_ms"] >= 0
    assert api.count == 0  # no prompt step: nothing sent


def test_an_async_tool_is_awaited(api: FakeOpenAI, root: Path) -> None:
    row = one_row(root, tool_pipeline("later"), a="x")
    assert row["steps"]["t"]["answer"] == ["x", "x"]


def test_a_tool_that_raises_is_the_steps_error_with_file_and_line(api: FakeOpenAI,
                                                                   root: Path) -> None:
    row = one_row(root, tool_pipeline("boom"), a="A-7")
    error = tool_error(row)
    assert error.startswith("ValueError: no account A-7 (at ") and error.endswith(
        "tools/calc.py:11)")


def test_a_tool_past_its_timeout_is_stopped_and_the_run_ends(api: FakeOpenAI, root: Path) -> None:
    row = one_row(root, tool_pipeline("slow", extra="    timeout: 0.5\n"), a=1)
    assert tool_error(row) == "timed out after 0.5 s"


def test_a_value_json_cannot_hold_is_the_steps_error(api: FakeOpenAI, root: Path) -> None:
    row = one_row(root, tool_pipeline("not_json"), a=1)
    assert tool_error(row).startswith("the tool returned a set, which is not JSON-serialisable")


def test_sys_exit_in_a_tool_is_the_steps_error(api: FakeOpenAI, root: Path) -> None:
    row = one_row(root, tool_pipeline("leave"), a=1)
    error = tool_error(row)
    assert error.startswith("SystemExit (sys.exit(3) in the tool)")
    assert "tools/calc.py:24" in error


# --- repeat_until -----------------------------------------------------------------------------


def repeat(max_iterations: int) -> str:
    return tool_pipeline("step", input_='{n: "{{ steps.t.answer }}"}', extra=(
        f"    repeat_until: steps.t.answer >= 3\n    max_iterations: {max_iterations}\n"))


def test_repeat_until_stops_when_its_condition_holds(api: FakeOpenAI, root: Path) -> None:
    step = one_row(root, repeat(5))["steps"]["t"]
    assert step["answer"] == 3 and step["iterations_exhausted"] is False
    assert [(i["iteration"], i["input"], i["answer"]) for i in step["iterations"]] == \
        [(1, {"n": None}, 1), (2, {"n": 1}, 2), (3, {"n": 2}, 3)]


def test_repeat_until_runs_out_of_iterations_without_error(api: FakeOpenAI, root: Path) -> None:
    row = one_row(root, repeat(2))
    step = row["steps"]["t"]
    assert row.get("error") is None and row["answer"] == "2"
    assert step["answer"] == 2 and step["iterations_exhausted"] is True
    assert len(step["iterations"]) == 2


def test_a_prompt_step_repeats_each_iteration_a_request(api: FakeOpenAI, root: Path) -> None:
    pipeline = """\
name: counting
kind: pipeline
steps:
  - id: count
    prompt: ../prompts/count.yaml
    input: {n: "{{ steps.count.answer or iteration * 0 }}"}
    repeat_until: steps.count.answer >= 3
    max_iterations: 10
output: "{{ steps.count.answer }}"
evalset: ../evalsets/counting.jsonl
"""
    path = write(root, pipeline, [{"id": "r", "input": {}, "expected": "3"}], name="counting")
    run, _ = eval_json(path)
    assert [last_user_message(r.body) for r in api.chat_requests] == \
        ["Next after: 0", "Next after: 1", "Next after: 2"]
    (row,) = show_rows(run["id"])
    assert row["answer"] == "3" and len(row["steps"]["count"]["iterations"]) == 3
    assert row["steps"]["count"]["iterations_exhausted"] is False


# --- the cache --------------------------------------------------------------------------------


def test_a_rerun_takes_prompts_from_the_cache_and_runs_tools_again(api: FakeOpenAI,
                                                                   root: Path) -> None:
    pipeline = PIPELINE.replace("  - id: answer", """\
  - id: ticks
    tool: ../tools/calc.py:tick
    input: {x: "{{ steps.rows.answer }}"}
  - id: answer""")
    path = write(root, pipeline, [
        {"id": "lyon", "input": {"question": "How many customers live in Lyon?"}, "expected": "2"},
        {"id": "price", "input": {"question": "Most expensive product?"},
         "expected": "Headphones"}])
    first, _ = eval_json(path)
    assert len(api.chat_requests) == 4
    second, _ = eval_json(path)
    assert len(api.chat_requests) == 4  # both prompt steps of both rows from the cache
    assert (root / "tools" / "ticks.txt").read_text().count("tick") == 4  # the tool ran twice
    assert second["metrics"]["exact_match"]["value"] == 1.0
    for row in show_rows(second["id"]):
        assert row["steps"]["to_sql"]["cached"] is True
        assert row["steps"]["rows"]["cached"] is False and row["steps"]["ticks"]["cached"] is False


# --- validation -------------------------------------------------------------------------------


def invalid(root: Path, pipeline: str) -> InputError:
    (root / "pipelines" / "bad.yaml").write_text(pipeline, encoding="utf-8")
    (root / "evalsets" / "bad.jsonl").write_text('{"id": "r", "input": {"a": 1}}\n',
                                                 encoding="utf-8")
    with pytest.raises(InputError) as caught:
        target = load_pipeline(root / "pipelines" / "bad.yaml")
        target.check_rows([], root / "evalsets" / "bad.jsonl")
    return caught.value


@pytest.mark.parametrize(("change", "message", "fix"), [
    (("tool: ../tools/calc.py:add", "tol: ../tools/calc.py:add"), "unknown key 'tol'",
     "did you mean 'tool'?"),
    (("    tool: ../tools/calc.py:add", "    tool: ../tools/calc.py:add\n    prompt: x.yaml"),
     "needs exactly one of prompt, sql or tool (it has prompt and tool)", None),
    (("tool: ../tools/calc.py:add", "tool: ../tools/calc.py:ad"), "has no function 'ad'",
     "add"),
    (("tool: ../tools/calc.py:add", "tool: ../tools/nope.py:add"), "was not found", None),
    (("tool: ../tools/calc.py:add", "tool: ../../outside.py:add"), "lies outside the project",
     None),
    (("tool: ../tools/calc.py:add", "tool: ../tools/calc.py:later"),
     "cannot be called with the step's input", None),
    (("output:", "    repeat_until: steps.t.answer > 1\noutput:"),
     "repeat_until needs max_iterations", "max_iterations: N"),
    (("output:", "    max_iterations: 3\noutput:"), "max_iterations without repeat_until", None),
    (("output:", "    timeout: -1\noutput:"), "timeout must be a number of seconds", None),
])
def test_tool_step_mistakes_are_named(root: Path, change: tuple[str, str], message: str,
                                      fix: str | None) -> None:
    (root.parent / "outside.py").write_text("def add(a, b):\n    return 1\n", encoding="utf-8")
    text = tool_pipeline("add", input_='{a: "{{ input.a }}", b: 2}').replace(*change)
    error = invalid(root, text)
    assert message in error.message
    assert error.file is not None and error.line is not None
    if fix is not None:
        assert error.fix is not None and fix in error.fix


@pytest.mark.parametrize(("sql", "message", "fix"), [
    ("{database: ../data/shop.sqlite, querry: x}", "unknown key 'querry' in sql",
     "did you mean 'query'?"),
    ("{database: ../data/nope.sqlite, query: x}", "was not found", None),
    ("{database: ../../outside.sqlite, query: x}", "lies outside the project", None),
    ("{query: x}", "sql needs database", None),
    ("{database: ../data/shop.sqlite, query: x, max_rows: 0}", "max_rows must be", None),
])
def test_sql_step_mistakes_are_named(root: Path, sql: str, message: str, fix: str | None) -> None:
    build_shop(root.parent / "outside.sqlite")
    error = invalid(root, f"""\
name: bad
kind: pipeline
model: gpt-4o-mini
steps:
  - id: q
    sql: {sql}
output: "{{{{ steps.q.answer }}}}"
""")
    assert message in error.message and error.line == 6
    if fix is not None:
        assert error.fix is not None and fix in error.fix


def test_a_tool_module_that_exits_on_import_fails_validate(root: Path) -> None:
    (root / "tools" / "bad.py").write_text("import sys\n\nsys.exit(1)\n", encoding="utf-8")
    error = invalid(root, tool_pipeline("add").replace("calc.py", "bad.py"))
    assert "the tool failed while loading: SystemExit" in error.message
    assert error.line == 3 and str(error.file).endswith("bad.py")


def test_validate_names_a_missing_function(root: Path) -> None:
    write(root, tool_pipeline("ad"), [{"id": "r", "input": {"a": 1}}], name="tools")
    result = invoke("validate", "pipelines/tools.yaml", code=2)
    assert "has no function 'ad'" in result.output and "add" in result.output


def test_the_tool_and_database_are_inputs_of_the_pipeline(root: Path) -> None:
    path = write(root, PIPELINE.replace("  - id: answer", """\
  - id: ticks
    tool: ../tools/calc.py:tick
    input: {x: "{{ steps.rows.answer }}"}
  - id: answer"""), [])
    pipeline = load_pipeline(path)
    files = {f.resolve().relative_to(root.resolve()).as_posix() for f in pipeline.files}
    assert {"data/shop.sqlite", "tools/calc.py"} <= files
    with sqlite3.connect(root / "data" / "shop.sqlite") as conn:
        conn.execute("UPDATE products SET price_cents = 1 WHERE id = 1")
    changed_db = load_pipeline(path).version
    assert changed_db != pipeline.version
    with open(root / "tools" / "calc.py", "a", encoding="utf-8") as f:
        f.write("\n# changed\n")
    assert load_pipeline(path).version not in (pipeline.version, changed_db)


# --- the shipped example ----------------------------------------------------------------------


def test_the_shipped_shop_example_gets_every_row_right_with_the_reference_sql(
        api: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "shipped"
    for rel in ("pipelines/shop_sql.yaml", "prompts/to_sql.yaml", "prompts/shop_answer.yaml",
                "evalsets/shop_sql.jsonl", "data/shop.sqlite"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, root / rel)
    # The shipped database is what its script builds.
    build_shop(tmp_path / "rebuilt.sqlite")
    assert sha(tmp_path / "rebuilt.sqlite") == sha(root / "data" / "shop.sqlite")
    reference = {json.loads(line)["input"]["question"]: json.loads(line)["expected"]
                 for line in (REPO / "evalsets" / "to_sql.jsonl").read_text().splitlines()}

    def shipped(body: dict[str, Any]) -> str:
        text = last_user_message(body)
        if text in reference:
            return f"```sql\n{reference[text]};\n```"
        rows = json.loads(text.split("\nRows: ", 1)[1])
        return ", ".join(str(v) for r in rows for v in r.values())

    api.responder = shipped
    monkeypatch.chdir(root)
    run, _ = eval_json("pipelines/shop_sql.yaml")
    assert run["n"] == 8 and run["errors"] == 0
    assert run["metrics"]["exact_match"]["value"] == 1.0
    assert run["steps"]["rows"]["metrics"]["exact_match"] == {
        **run["steps"]["rows"]["metrics"]["exact_match"], "value": 1.0, "n": 8}



def test_check_lists_the_tool_and_the_database_as_inputs(root: Path) -> None:
    path = write(root, PIPELINE.replace("  - id: answer", """\
  - id: ticks
    tool: ../tools/calc.py:tick
    input: {x: "{{ steps.rows.answer }}"}
  - id: answer"""), [])
    kinds = {f.resolve().relative_to(root.resolve()).as_posix(): what
             for f, what in inputs_of(load_target(path))}
    assert kinds["data/shop.sqlite"] == "database" and kinds["tools/calc.py"] == "tool"
    assert kinds["prompts/to_sql.yaml"] == "prompt"


def test_eval_at_a_ref_queries_and_calls_that_commits_files(
        api: FakeOpenAI, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    git_identity(monkeypatch)
    git_init(root)
    (root / ".gitignore").write_text(".promptctl/\n", encoding="utf-8")
    path = write(root, PIPELINE.replace("  - id: answer", """\
  - id: plus
    tool: ../tools/calc.py:add
    input: {a: "{{ steps.rows.answer[0].n }}", b: 0}
  - id: answer"""), [{"id": "lyon", "input": {"question": "How many customers live in Lyon?"},
                      "expected": "2"}])
    commit_all(root, "shop")
    # In the work tree only: one more customer in Lyon, and a tool that adds 100.
    with sqlite3.connect(root / "data" / "shop.sqlite") as conn:
        conn.execute("INSERT INTO customers VALUES (7, 'Gil Roy', 'Lyon')")
    calc = root / "tools" / "calc.py"
    calc.write_text(calc.read_text().replace("int(a) + int(b)", "int(a) + int(b) + 100"))
    db_before = sha(root / "data" / "shop.sqlite")
    at_head, _ = eval_json(path, "--ref", "HEAD")
    here, _ = eval_json(path)
    (then,) = show_rows(at_head["id"])
    (now,) = show_rows(here["id"])
    assert then["steps"]["rows"]["answer"] == [{"n": 2}] and then["steps"]["plus"]["answer"] == 2
    assert now["steps"]["rows"]["answer"] == [{"n": 3}] and now["steps"]["plus"]["answer"] == 103
    assert at_head["prompt_version"] != here["prompt_version"]
    assert sha(root / "data" / "shop.sqlite") == db_before


def test_check_evaluates_the_pipeline_when_only_its_database_changed(
        api: FakeOpenAI, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    git_identity(monkeypatch)
    git_init(root)
    (root / ".gitignore").write_text(".promptctl/\n", encoding="utf-8")
    path = write(root, PIPELINE, [
        {"id": "lyon", "input": {"question": "How many customers live in Lyon?"}, "expected": "2"}])
    (root / "README.md").write_text("shop\n", encoding="utf-8")
    commit_all(root, "shop")
    (root / "README.md").write_text("shop, again\n", encoding="utf-8")
    commit_all(root, "readme")
    unchanged = json.loads(invoke("check", "--json", "--prompt", path, "--base", "HEAD~1").stdout)
    assert unchanged["prompts"] == []
    with sqlite3.connect(root / "data" / "shop.sqlite") as conn:
        conn.execute("INSERT INTO customers VALUES (7, 'Gil Roy', 'Lyon')")
    commit_all(root, "a third customer in Lyon")
    document = json.loads(invoke("check", "--json", "--prompt", path, "--base", "HEAD~1").stdout)
    [entry] = document["prompts"]
    assert entry["reasons"] == ["database data/shop.sqlite changed"]
    # The base side queried the base commit's database, the current side this one.
    assert entry["comparison"]["metrics"]["exact_match"]["delta"] == pytest.approx(-1.0)


def test_json_documents_of_tool_steps_match_their_schemas(api: FakeOpenAI, root: Path) -> None:
    pipeline = PIPELINE.replace("  - id: answer", """\
  - id: count
    tool: ../tools/calc.py:step
    input: {n: "{{ steps.count.answer }}"}
    repeat_until: steps.count.answer >= 2
    max_iterations: 3
  - id: answer""")
    path = write(root, pipeline, [
        {"id": "lyon", "input": {"question": "How many customers live in Lyon?"}, "expected": "2",
         "steps": {"rows": [{"n": 2}]}},
        {"id": "refused", "input": {"question": "DELETE FROM orders"}, "expected": "0"}])
    document = json.loads(invoke("eval", path, "--json").stdout)
    schema_check("eval", document)
    (run,) = document["runs"]
    assert run["steps"]["rows"]["tool_ms"] >= 0 and run["steps"]["count"]["iterations_exhausted"] == 0
    shown = schema_check("show", json.loads(invoke("show", run["id"], "--json").stdout))
    rows = {r["row_id"]: r for r in shown["rows"]}
    assert rows["refused"]["steps"]["rows"]["tool_failed"] is True
    assert [i["answer"] for i in rows["lyon"]["steps"]["count"]["iterations"]] == [1, 2]
