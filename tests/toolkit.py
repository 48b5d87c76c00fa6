"""A support project whose prompt answers with tool calls, for the tool call tests: the
prompt (two declared tools), an eval set of tickets, and the fake server's answer to each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.fakeserver import Body, Reply, last_user_message, tool_call_reply

PROMPT = """\
name: support
model: gpt-4o-mini
params:
  max_tokens: 64
  tool_choice: auto
messages:
  - role: system
    content: "Use the tools. STYLE"
  - role: user
    content: "Ticket {{ ticket }}"
tools:
  - name: refund
    description: Refund an order.
    parameters:
      type: object
      properties:
        order_id: {type: string}
        amount: {type: number}
      required: [order_id]
  - name: lookup_order
    description: Look an order up.
    parameters: {type: object, properties: {order_id: {type: string}}, required: [order_id]}
output: {type: tool_call}
metrics: [tool_name, tool_args, tool_args_subset, tool_call_validity, exact_match, format_validity]
evalset: ../evalsets/support.jsonl
"""


def refund(order_id: str, **more: Any) -> dict[str, Any]:
    return {"name": "refund", "arguments": {"order_id": order_id, **more}}


# ticket: (what the model answers, what the row expects)
CASES: dict[str, tuple[Reply, Any]] = {
    "T1": (tool_call_reply(("refund", {"order_id": "A1", "amount": 5})),   # right
           refund("A1", amount=5)),
    "T2": (tool_call_reply(("refund", {"order_id": "A2", "amount": 7})),   # wrong amount
           refund("A2", amount=5)),
    "T3": (tool_call_reply(("lookup_order", {"order_id": "A3"})),          # wrong tool
           refund("A3")),
    "T4": (tool_call_reply(("refund", '{"order_id": "A4", ')),             # not JSON
           refund("A4")),
    "T5": (tool_call_reply(("cancel_order", {"order_id": "A5"})),          # never declared
           refund("A5")),
    "T6": ("Nothing to do here.", None),                                   # no call, none due
    "T7": ("Let me think.", {"name": "lookup_order",                       # no call, one due
                             "arguments": {"order_id": "A7"}}),
    "T8": (tool_call_reply(("refund", {"order_id": "A8", "amount": "5"})),  # breaks the schema
           {"name": "refund", "arguments": {"order_id": "A8"}}),
    "T9": (tool_call_reply(("refund", {"order_id": "A9"})),                # the name is checked
           {"name": "refund"}),
    "T10": (tool_call_reply(("refund", {"order_id": "A10"})),              # a call, none due
            None),
}

def answer(body: Body, cases: dict[str, tuple[Reply, Any]] = CASES) -> Reply:
    ticket = last_user_message(body).split()[-1]
    return cases[ticket][0]


def write_project(root: Path, prompt: str = PROMPT, cases: dict[str, tuple[Reply, Any]] = CASES,
                  style: str = "") -> Path:
    (root / "prompts").mkdir(parents=True, exist_ok=True)
    (root / "evalsets").mkdir(exist_ok=True)
    (root / "prompts" / "support.yaml").write_text(prompt.replace("STYLE", style), encoding="utf-8")
    (root / "evalsets" / "support.jsonl").write_text(
        "".join(json.dumps({"id": t.lower(), "input": {"ticket": t}, "expected": e}) + "\n"
                for t, (_, e) in cases.items()), encoding="utf-8")
    return root
