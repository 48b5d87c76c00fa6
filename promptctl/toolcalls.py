"""Tool calls: the tools a prompt declares (OpenAI function tools), the calls a model made,
read from whatever the server sent, checked against the declarations, and compared with
the calls a row expects.

A call is stored as the server sent it, made storable (see `providers._openai_wire`):
`{"id", "type", "function": {"name", "arguments"}}`, `arguments` being the JSON text the
model wrote. Reading it never fails: a call without a name, arguments that are not JSON or
do not fit the tool's `parameters`, a tool that was never declared, each becomes the call's
`problem`, which the tool metrics count.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jsonschema

TOOL_OUTPUT_TYPES = ("tool_call", "tool_calls")
# What the OpenAI API accepts as a function name.
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The key of a row's `judges` mapping that keeps the raw tool calls of its response (a
# configured metric may not take this name).
TOOL_CALLS_KEY = "tool_calls"
# The key of an agent row's `judges` mapping that keeps its trajectory (see `agents`).
TRAJECTORY_KEY = "agent"
# The key of a sampled row's `judges` mapping that keeps its samples and vote (`eval
# --samples`, see `sampling`).
SAMPLES_KEY = "self_consistency"
# Arguments nested deeper than this are not read (comparing and validating them recurses).
MAX_DEPTH = 64


@dataclass(frozen=True)
class Tool:
    """One declared function tool: its name, what it is for, and the JSON Schema of its
    arguments."""

    name: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    description: str | None = None
    strict: bool | None = None

    def request(self) -> dict[str, Any]:
        """The tool as the chat completions API takes it."""
        function: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            function["description"] = self.description
        function["parameters"] = dict(self.parameters)
        if self.strict is not None:
            function["strict"] = self.strict
        return {"type": "function", "function": function}

    @cached_property
    def validator(self) -> jsonschema.protocols.Validator:
        import jsonschema

        cls = jsonschema.validators.validator_for(self.parameters)
        return cls(self.parameters)


@dataclass(frozen=True)
class ToolCall:
    """One call as read from a response.

    `arguments` is the parsed JSON value when the model wrote JSON (`parsed`), else what it
    sent (a string that is not JSON, or None). `problem` says why the call is not a valid
    call of a declared tool (None: it is).
    """

    name: str | None
    arguments: Any
    parsed: bool
    problem: str | None = None

    @property
    def readable(self) -> bool:
        """Whether the call has a name and JSON arguments: it can be compared at all."""
        return self.name is not None and self.parsed

    @property
    def answer(self) -> dict[str, Any]:
        """The call as a row's answer: `{"name": ..., "arguments": ...}`."""
        return {"name": self.name, "arguments": self.arguments}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of range")
    return value


def _depth(value: Any) -> int:
    """How deeply `value` nests (0 for a scalar), counted without recursion."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return deepest


def parse_arguments(text: Any) -> tuple[Any, str | None]:
    """The arguments a model wrote, parsed: (value, None), or (what was sent, why it is not
    JSON arguments)."""
    if text is None:
        return None, "no arguments"
    if not isinstance(text, str):  # already a JSON value (as data read back may hold)
        if _depth(text) > MAX_DEPTH:
            return None, f"arguments nest more than {MAX_DEPTH} levels deep"
        return text, None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        return text, f"arguments are not JSON: {exc.msg} at character {exc.pos}"
    except (ValueError, RecursionError) as exc:
        return text, f"arguments are not JSON: {exc}"[:200]
    if _depth(value) > MAX_DEPTH:
        return text, f"arguments nest more than {MAX_DEPTH} levels deep"
    return value, None


def read_call(raw: Any, number: int, tools: Mapping[str, Tool]) -> ToolCall:
    """Call `number` (1-based) of a response, read and checked against `tools`."""
    function = raw.get("function") if isinstance(raw, dict) else None
    if not isinstance(function, dict):
        return ToolCall(None, None, False, f"call {number} is not a function call")
    name = function.get("name")
    arguments, not_json = parse_arguments(function.get("arguments"))
    if not isinstance(name, str) or not name:
        return ToolCall(None, arguments, not_json is None, f"call {number} names no function")
    if not_json is not None:
        return ToolCall(name, arguments, False, f"{name}: {not_json}")
    tool = tools.get(name)
    if tool is None:
        return ToolCall(name, arguments, True, f"{name} is not a declared tool")
    try:
        errors = sorted(tool.validator.iter_errors(arguments),
                        key=lambda e: [str(p) for p in e.path])
    except Exception as exc:  # a $ref that does not resolve, and the like
        return ToolCall(name, arguments, True,
                        f"{name}: its parameters schema cannot check the arguments: {exc}"[:300])
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "(the arguments)"
        return ToolCall(name, arguments, True,
                        f"{name}: {where}: {errors[0].message[:200]}")
    return ToolCall(name, arguments, True)


def read_calls(raw: Any, tools: Iterable[Tool]) -> list[ToolCall]:
    """Every call of a response's stored `tool_calls`, read and checked against `tools`."""
    if raw is None:
        return []
    by_name = {t.name: t for t in tools}
    items = raw if isinstance(raw, list) else [raw]
    return [read_call(item, i + 1, by_name) for i, item in enumerate(items)]


# --- comparing with what a row expects --------------------------------------------------------


def json_equal(a: Any, b: Any) -> bool:
    """Whether two JSON values are equal as JSON: 1 equals 1.0, true is not 1, strings and
    keys compare exactly, objects regardless of key order, arrays in order."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(v, b[k]) for k, v in a.items())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return a is None and b is None


def json_subset(expected: Any, got: Any) -> bool:
    """Whether every key of the `expected` object is in `got` with an equal JSON value."""
    return isinstance(expected, dict) and isinstance(got, dict) and all(
        k in got and json_equal(v, got[k]) for k, v in expected.items())


def expected_calls(expected: Any) -> list[Any]:
    """The calls a row expects, as a list: null is no call, a mapping one call, a list the
    calls in order."""
    if expected is None:
        return []
    return list(expected) if isinstance(expected, list) else [expected]


def _name_of(expected: Any) -> Any:
    return expected.get("name") if isinstance(expected, dict) else None


def names_match(calls: Sequence[ToolCall], expected: Sequence[Any]) -> bool:
    """The calls name the expected tools, in order (no call where none is expected)."""
    return [c.name for c in calls] == [_name_of(e) for e in expected]


def arguments_match(calls: Sequence[ToolCall], expected: Sequence[Any], *, subset: bool = False
                    ) -> bool | None:
    """The calls' arguments equal (or, with `subset`, contain) the expected arguments, call
    by call in order; None when no expected call gives arguments (nothing to compare)."""
    if expected and not any(isinstance(e, dict) and "arguments" in e for e in expected):
        return None
    if len(calls) != len(expected):
        return False
    for call, want in zip(calls, expected, strict=True):
        if not isinstance(want, dict) or "arguments" not in want:
            continue
        if not call.parsed:
            return False
        same = json_subset(want["arguments"], call.arguments) if subset \
            else json_equal(call.arguments, want["arguments"])
        if not same:
            return False
    return True


def calls_match(calls: Sequence[ToolCall], expected: Sequence[Any]) -> bool:
    """The calls are the expected ones: the same tools in order, each with equal arguments
    where the row gives them."""
    return names_match(calls, expected) and arguments_match(calls, expected) is not False


def call_text(raw: Any) -> str:
    """A stored call as `show` prints it: `refund({"order_id": "A1"})`, the arguments as the
    model wrote them."""
    function = raw.get("function") if isinstance(raw, Mapping) else None
    if not isinstance(function, Mapping):
        return "(not a function call)"
    name = function.get("name")
    arguments = function.get("arguments")
    return f"{name if isinstance(name, str) else '?'}({arguments if isinstance(arguments, str) else ''})"
