"""An agent project for the agent tests, and a fake-server responder that plays the model:
each row's question starts with a tag ([three], [loop], ...) naming a script, and each turn
of a script reads the conversation so far (the tool results sent back), so a test can check
that every result reached the model.

Hand-counted outcomes of ROWS on AGENT (tools protocol, max_turns 3):

- three: add(3, 4) -> 7, multiply(7, 5) -> 35, answers the last result "35": right; tools
  [add, multiply] in order, expected strict: tool_selection 1. 3 requests.
- anyorder: multiply(2, 8) -> 16, add(16, 10) -> 26, answers "26": right; expected [add,
  multiply] in any order: 1. 3 requests.
- order: the same calls, expected [add, multiply] strict: 0 (final "26" right). 3 requests.
- extra: add(1, 2) -> 3, multiply(3, 1) -> 3, answers "3": right; expected [add] only: 0.
  3 requests.
- gap: add(1, 2) -> 3, answers "4" (expected 3): wrong although its one call succeeded and
  matched the expected [add]: the composability gap's only wrong row. 2 requests.
- loop: calls add(1, 1) every turn: turns 1 and 2 run it, turn 3's call is not run:
  turn_limit, answer "" (invalid). 3 requests.
- boom / slow / weird: one call of a tool that raises / sleeps past tool_timeout 0.5 s /
  returns a set, then answers "0" (expected 0): a tool error each. 2 requests each.
- ghost / badargs: a call of an undeclared tool / add with arguments that are not JSON,
  then "0": invalid calls. 2 requests each.

tool_selection over the rows with expected_tools (three, anyorder, order, extra, gap): 1, 1,
0, 0, 1 = 0.6. Composability gap: rows clean with tool_selection 1: three, anyorder, gap;
gap wrong: 1 of 3. Requests: 5*3 - 1 (gap) + 3 (loop) + 5*2 = 27. Tool errors 3, invalid 2,
turn_limit 1. Turns: 3+3+3+3+2+3+2*5 = 27 over 11 rows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.fakeserver import Body, Reply, content_text, tool_call_reply

TOOLS_PY = '''\
import time


def add(a, b):
    return a + b


def multiply(a, b):
    return a * b


def boom():
    raise ValueError("the shop is closed")


def slow():
    time.sleep(3)
    return 1


def weird():
    return {1, 2}
'''

_TOOL_ENTRIES = """\
  - name: add
    description: Add two numbers.
    parameters: {type: object, properties: {a: {type: number}, b: {type: number}}, required: [a, b]}
    tool: ../tools/calc.py:add
  - name: multiply
    description: Multiply two numbers.
    parameters: {type: object, properties: {a: {type: number}, b: {type: number}}, required: [a, b]}
    tool: ../tools/calc.py:multiply
  - name: boom
    parameters: {type: object, properties: {}}
    tool: ../tools/calc.py:boom
  - name: slow
    parameters: {type: object, properties: {}}
    tool: ../tools/calc.py:slow
  - name: weird
    parameters: {type: object, properties: {}}
    tool: ../tools/calc.py:weird
"""

AGENT = f"""\
name: calc
kind: agent
model: gpt-4o-mini
protocol: tools
max_turns: 3
tool_timeout: 0.5
messages:
  - role: system
    content: You are a calculator. Use the tools.
  - role: user
    content: "{{{{ question }}}}"
tools:
{_TOOL_ENTRIES}output: {{type: number}}
metrics: [exact_match]
evalset: ../evalsets/agent.jsonl
"""

REACT_AGENT = AGENT.replace("name: calc\n", "name: calc_react\n").replace(
    "protocol: tools", "protocol: react").replace("agent.jsonl", "agent_react.jsonl")

ROWS: list[dict[str, Any]] = [
    {"id": "three", "input": {"question": "[three] What is (3 + 4) times 5?"}, "expected": 35,
     "expected_tools": ["add", "multiply"], "tools_order": "strict"},
    {"id": "anyorder", "input": {"question": "[swap] What is 2 times 8, plus 10?"}, "expected": 26,
     "expected_tools": ["add", "multiply"]},
    {"id": "order", "input": {"question": "[swap] What is 2 times 8, plus 10? (in order)"},
     "expected": 26, "expected_tools": ["add", "multiply"], "tools_order": "strict"},
    {"id": "extra", "input": {"question": "[extra] What is 1 + 2?"}, "expected": 3,
     "expected_tools": ["add"]},
    {"id": "gap", "input": {"question": "[gap] What is 1 + 2?"}, "expected": 3,
     "expected_tools": ["add"]},
    {"id": "loop", "input": {"question": "[loop] Count forever."}, "expected": 2},
    {"id": "boom", "input": {"question": "[boom] Is the shop open?"}, "expected": 0},
    {"id": "slow", "input": {"question": "[slow] Take your time."}, "expected": 0},
    {"id": "weird", "input": {"question": "[weird] Something odd."}, "expected": 0},
    {"id": "ghost", "input": {"question": "[ghost] Call a ghost."}, "expected": 0},
    {"id": "badargs", "input": {"question": "[badargs] Garbled."}, "expected": 0},
]

REACT_ROWS: list[dict[str, Any]] = [
    {"id": "three", "input": {"question": "[three] What is (3 + 4) times 5?"}, "expected": 35,
     "expected_tools": ["add", "multiply"], "tools_order": "strict"},
    {"id": "plain", "input": {"question": "[plain] What is 2?"}, "expected": 2},
]


def write_project(root: Path, agent: str = AGENT) -> None:
    for folder in ("agents", "tools", "evalsets"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "tools" / "calc.py").write_text(TOOLS_PY, encoding="utf-8")
    (root / "agents" / "calc.yaml").write_text(agent, encoding="utf-8")
    (root / "agents" / "calc_react.yaml").write_text(REACT_AGENT, encoding="utf-8")
    (root / "evalsets" / "agent.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    (root / "evalsets" / "agent_react.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in REACT_ROWS), encoding="utf-8")


def _question(body: Body) -> str:
    return next(content_text(m.get("content")) for m in body["messages"] if m["role"] == "user")


def _number(text: str) -> float:
    value = float(json.loads(text))
    return int(value) if value.is_integer() else value


def answer(body: Body) -> Reply:
    """The model: the tools protocol when the request declares tools, else ReAct text."""
    if "tools" not in body:
        return react_answer(body)
    question = _question(body)
    results = [content_text(m.get("content")) for m in body["messages"] if m["role"] == "tool"]
    turn = sum(1 for m in body["messages"] if m["role"] == "assistant")
    tag = re.match(r"\[(\w+)\]", question)
    script = tag.group(1) if tag else ""
    if script == "three":
        if turn == 0:
            return tool_call_reply(("add", {"a": 3, "b": 4}))
        if turn == 1:
            return tool_call_reply(("multiply", {"a": _number(results[-1]), "b": 5}))
        return results[-1]
    if script == "swap":
        if turn == 0:
            return tool_call_reply(("multiply", {"a": 2, "b": 8}))
        if turn == 1:
            return tool_call_reply(("add", {"a": _number(results[-1]), "b": 10}))
        return results[-1]
    if script == "extra":
        if turn == 0:
            return tool_call_reply(("add", {"a": 1, "b": 2}))
        if turn == 1:
            return tool_call_reply(("multiply", {"a": _number(results[-1]), "b": 1}))
        return results[-1]
    if script == "gap":
        return tool_call_reply(("add", {"a": 1, "b": 2})) if turn == 0 else "4"
    if script == "loop":
        return tool_call_reply(("add", {"a": 1, "b": 1}))
    calls = {"boom": ("boom", {}), "slow": ("slow", {}), "weird": ("weird", {}),
             "ghost": ("ghost", {}), "badargs": ("add", "{a: 1, b:")}
    if script in calls:
        return tool_call_reply(calls[script]) if turn == 0 else "0"
    return "0"


def react_answer(body: Body) -> Reply:
    """The model in the ReAct text format: reads each Observation it is sent."""
    question = _question(body)
    turn = sum(1 for m in body["messages"] if m["role"] == "assistant")
    last = content_text(body["messages"][-1].get("content"))
    observed = last.removeprefix("Observation: ") if last.startswith("Observation: ") else ""
    if question.startswith("[three]"):
        if turn == 0:
            # A model that goes on to write the Observation itself: cut there.
            return ('Thought: first the sum.\nAction: add\nAction Input: {"a": 3, "b": 4}\n'
                    "Observation: 99\nFinal Answer: 99")
        if turn == 1:
            return (f"Thought: now the product.\nAction: multiply\n"
                    f'Action Input: {{"a": {observed}, "b": 5}}')
        return f"Thought: I know the final answer.\nFinal Answer: {observed}"
    return "Final Answer: 2"


# An agent whose query_shop tool is a read-only SQL query of data/shop.sqlite (a copy of the
# example database), with the calculator's add.
SHOP_AGENT = """\
name: shop
kind: agent
model: gpt-4o-mini
protocol: tools
max_turns: 4
messages:
  - role: system
    content: You answer questions about the shop. Use the tools.
  - role: user
    content: "{{ question }}"
tools:
  - name: query_shop
    description: One read-only SELECT on the shop's database.
    parameters: {type: object, properties: {query: {type: string}}, required: [query]}
    sql: {database: ../data/shop.sqlite}
  - name: add
    parameters: {type: object, properties: {a: {type: number}, b: {type: number}}, required: [a, b]}
    tool: ../tools/calc.py:add
output: {type: number}
metrics: [exact_match, tool_selection]
evalset: ../evalsets/shop.jsonl
"""

LYON = "SELECT name, city FROM customers WHERE city = 'Lyon' ORDER BY id"
PRICES = "SELECT name, price_cents FROM products WHERE category = 'audio' ORDER BY id"

# Hand-checked on data/shop.sqlite:
# - lyon: LYON gives Ada Brook and Chloe Dunn; the model answers their count, 2: right,
#   tool_selection 1 ([query_shop]).
# - audio: PRICES gives Headphones 12000 and Speaker 7500; add(12000, 7500) = 19500: right,
#   tool_selection 1 ([query_shop, add] strict).
# - write: DELETE FROM orders, then DROP TABLE orders: both refused (error results, a tool
#   error each), the model answers the count of orders from SELECT COUNT(*), still 12.
SHOP_ROWS: list[dict[str, Any]] = [
    {"id": "lyon", "input": {"question": "[lyon] How many customers live in Lyon?"},
     "expected": 2, "expected_tools": ["query_shop"]},
    {"id": "audio", "input": {"question": "[audio] What do the audio products cost together, "
                              "in cents?"}, "expected": 19500,
     "expected_tools": ["query_shop", "add"], "tools_order": "strict"},
    {"id": "write", "input": {"question": "[write] Delete every order, then count them."},
     "expected": 12, "expected_tools": ["query_shop"]},
]


def write_shop_project(root: Path, database: Path) -> None:
    write_project(root)
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "shop.sqlite").write_bytes(database.read_bytes())
    (root / "agents" / "shop.yaml").write_text(SHOP_AGENT, encoding="utf-8")
    (root / "evalsets" / "shop.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in SHOP_ROWS), encoding="utf-8")


def shop_answer(body: Body) -> Reply:
    """The model of the shop agent: reads each query's rows it is sent back."""
    question = _question(body)
    results = [content_text(m.get("content")) for m in body["messages"] if m["role"] == "tool"]
    turn = sum(1 for m in body["messages"] if m["role"] == "assistant")
    if question.startswith("[lyon]"):
        return tool_call_reply(("query_shop", {"query": LYON})) if turn == 0 \
            else str(len(json.loads(results[-1])))
    if question.startswith("[audio]"):
        if turn == 0:
            return tool_call_reply(("query_shop", {"query": PRICES}))
        if turn == 1:
            a, b = (r["price_cents"] for r in json.loads(results[-1]))
            return tool_call_reply(("add", {"a": a, "b": b}))
        return results[-1]
    if question.startswith("[write]"):
        if turn == 0:
            return tool_call_reply(("query_shop", {"query": "DELETE FROM orders"}),
                                   ("query_shop", {"query": "DROP TABLE orders"}))
        if turn == 1:
            return tool_call_reply(("query_shop", {"query": "SELECT COUNT(*) AS n FROM orders"}))
        return str(json.loads(results[-1])[0]["n"])
    return "0"
