"""Agent files (`kind: agent`): a model that calls the project's own Python tools in a loop
until it answers, evaluated row by row on the one engine like prompts and pipelines.

Every turn is a request through the engine (`ctx.complete`): cached by its full content, so
an unchanged agent on unchanged tools replays a whole trajectory from the cache with no
request; retried and rate-limited like any other. Two protocols:

- `tools`: the model's native tool calling. Its calls are run, and the results go back as
  an assistant message with `tool_calls` and one `role: tool` message per call.
- `react`: for models without tool calling. The system prompt describes the tools and the
  Thought / Action / Action Input / Observation format; the text is parsed, each result
  goes back as an `Observation: ...` user message, and `Final Answer: ...` ends the row.

The stored row keeps the whole trajectory (under `judges["agent"]`, which `show --json`
prints as `trajectory`): the conversation, and each turn's completion, calls, results,
errors, tokens and latency, the tools' time apart from the model's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptctl._yaml import LineMap, decode_utf8, load_yaml_text
from promptctl.agent_tools import (
    DEFAULT_TOOL_TIMEOUT,
    AnyToolImpl,
    SqlToolImpl,
    ToolImpl,
    call_tool,
)
from promptctl.errors import InputError
from promptctl.evalsets import EvalSet, Row, load_evalset
from promptctl.files import (
    Reference,
    project_root,
    quote,
    read_target_file,
)
from promptctl.metrics.aggregates import share
from promptctl.metrics.builtin import selected
from promptctl.metrics.registry import Metric, score_answer
from promptctl.prompts import (
    Prompt,
    _check_messages,
    _check_output,
    _check_thresholds,
    check_expected,
    check_header,
    check_metrics,
    check_params,
    check_tool_choice,
    check_tools,
    comparing_metrics,
    declares_kind,
    file_declares_kind,
    inputs_version,
    unique_paths,
)
from promptctl.scoring import OutputSpec
from promptctl.step_tools import DEFAULT_MAX_ROWS, sql_runner
from promptctl.store import utcnow
from promptctl.toolcalls import TOOL_CALLS_KEY, TOOL_OUTPUT_TYPES, TRAJECTORY_KEY, Tool, read_call
from promptctl.work import RowContext, WorkItem

AGENT_KEYS = ("name", "kind", "description", "model", "protocol", "max_turns", "tool_timeout",
              "params", "messages", "tools", "output", "metrics", "evalset", "thresholds")
PROTOCOLS = ("tools", "react")
DEFAULT_MAX_TURNS = 6
MAX_MAX_TURNS = 100
MAX_TOOL_TIMEOUT = 600.0
TOOL_ORDERS = ("strict", "any")
# What a tool entry adds to a prompt's tool declaration: how it runs.
IMPL_KEYS = ("tool", "sql")


@dataclass(frozen=True)
class Agent:
    """A validated agent file. `version` covers the file, its tools' code and its metrics'
    files."""

    path: Path
    name: str
    version: str
    source: str
    prompt: Prompt  # the messages, params, tools and output, as a prompt has them
    impls: dict[str, AnyToolImpl]
    protocol: str = "tools"
    max_turns: int = DEFAULT_MAX_TURNS
    tool_timeout: float = DEFAULT_TOOL_TIMEOUT
    description: str = ""
    model: str | None = None
    evalset: Path | None = None
    evalset_line: int | None = None
    thresholds: dict[str, Any] = field(default_factory=dict)
    root: Path | None = None

    # --- what the engine reads of a target (see `promptctl.target`) ---------------------

    @property
    def kind(self) -> str:
        return "agent"

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.prompt.metrics

    @property
    def output(self) -> OutputSpec:
        return self.prompt.output

    @property
    def examples(self) -> tuple[Row, ...]:
        return ()

    @property
    def tools(self) -> tuple[Tool, ...]:
        return self.prompt.tools

    @property
    def metric_objects(self) -> tuple[Metric, ...]:
        return self.prompt.metric_objects

    @property
    def configured_metrics(self) -> tuple[Metric, ...]:
        return self.prompt.configured_metrics

    @property
    def all_configured_metrics(self) -> tuple[Metric, ...]:
        return self.prompt.configured_metrics

    @property
    def tool_files(self) -> list[Path]:
        """The tools' code and the databases the sql tools query."""
        return unique_paths([i.file for i in self.impls.values()])

    @property
    def database_files(self) -> list[Path]:
        return unique_paths([i.file for i in self.impls.values() if isinstance(i, SqlToolImpl)])

    @property
    def files(self) -> list[Path]:
        """The agent file, its tools' code, and its judges' and scorers' files."""
        return unique_paths([self.path, *self.tool_files,
                             *(f for m in self.configured_metrics for f in m.files)])

    @property
    def request_params(self) -> dict[str, Any]:
        """Every turn's parameters: with `protocol: tools` the declared tools among them (so
        in every cache key); with `react` none (the tools are described in the text)."""
        params = self.prompt.request_params
        if self.protocol == "react":
            params.pop("tools", None)
        return params

    @property
    def max_tokens(self) -> int:
        return self.prompt.max_tokens

    @property
    def run_params(self) -> dict[str, Any]:
        return {**self.request_params, "protocol": self.protocol, "max_turns": self.max_turns,
                "tool_timeout": self.tool_timeout}

    def run_options(self) -> dict[str, Any]:
        return {}

    def default_model(self) -> str | None:
        return self.model

    def load_evalset(self) -> EvalSet:
        if self.evalset is None:
            raise InputError("no eval set: the agent names none", file=self.path,
                             fix="add evalset: ../evalsets/NAME.jsonl to the agent, or pass "
                             "--evalset")
        root = self.root if self.root is not None else project_root(self.path)
        return load_evalset(self.evalset, root=root,
                            ref=Reference(self.path, self.evalset_line, "evalset"))

    def messages_for(self, row: Row) -> list[dict[str, str]]:
        """The first turn's request: the rendered messages (with `react`, the system prompt
        that describes the tools and the format)."""
        messages = self.prompt.render(row.input, row_id=row.id)
        if self.protocol != "react":
            return messages
        text = react_instructions(self.tools)
        if messages and messages[0]["role"] in ("system", "developer"):
            first = messages[0]
            return [{"role": first["role"], "content": f"{first['content']}\n\n{text}"},
                    *messages[1:]]
        return [{"role": "system", "content": text}, *messages]

    def check_rows(self, rows: Iterable[Row], evalset_path: Path) -> None:
        """Each row's expected answer is one the output can give (when a metric compares
        them), its `expected_tools` name declared tools; and every tool's code loads."""
        for impl in self.impls.values():
            impl.load()
        comparing = comparing_metrics(self.metric_objects)
        names = {t.name for t in self.tools}
        for row in rows:
            if comparing and row.has_expected:
                check_expected(row.expected, self.output, what=f"row {quote(row.id)}",
                               file=evalset_path, line=row.line, comparing=comparing,
                               reader=f"output: of {self.path.name}")
            for tool in row.expected_tools or ():
                if tool not in names:
                    raise InputError(f"row {quote(row.id)} expects tool {quote(tool)}, which the "
                                     "agent does not declare", file=evalset_path, line=row.line,
                                     fix=f"name one of: {', '.join(sorted(names))}")

    async def run_row(self, item: WorkItem, ctx: RowContext) -> dict[str, Any]:
        return await run_agent_row(self, item, ctx)

    def summary_extra(self, rows: Callable[[], Iterable[Mapping[str, Any]]]) -> dict[str, Any]:
        return agent_summary(rows())


# --- ReAct ------------------------------------------------------------------------------------


def react_instructions(tools: Sequence[Tool]) -> str:
    """What the system prompt says with `protocol: react`: the tools and the format."""
    lines = ["You can use these tools:"]
    for tool in tools:
        schema = json.dumps(dict(tool.parameters), ensure_ascii=False, sort_keys=True)
        lines.append(f"- {tool.name}: {tool.description or ''} Arguments (a JSON object): {schema}")
    names = ", ".join(t.name for t in tools)
    lines += ["", "Use this format:", "Thought: what to do next",
              f"Action: the tool to use, one of [{names}]",
              "Action Input: the tool's arguments as a JSON object",
              "Observation: the tool's result (you are given it; do not write it)",
              "... (Thought / Action / Action Input / Observation may repeat)",
              "Thought: I know the final answer", "Final Answer: the answer"]
    return "\n".join(lines)


_FINAL = re.compile(r"Final Answer\s*:\s*(?P<answer>.*)", re.DOTALL | re.IGNORECASE)
_ACTION = re.compile(r"Action\s*:\s*(?P<name>[^\n]*?)\s*\n\s*Action Input\s*:\s*(?P<input>.*)",
                     re.DOTALL | re.IGNORECASE)
_OBSERVATION = re.compile(r"\n\s*Observation\s*:", re.IGNORECASE)


@dataclass(frozen=True)
class ReactStep:
    """A ReAct completion read: the text kept in the conversation (up to any Observation the
    model wrote itself), and either a call (name, raw arguments) or the final answer."""

    text: str
    call: tuple[str, str] | None
    final: str | None


def parse_react(completion: str) -> ReactStep:
    """Read a ReAct completion. An Action before any Final Answer is a call; a Final Answer
    ends the row; text in neither format is taken as the final answer as it stands."""
    cut = _OBSERVATION.search(completion)
    text = completion[:cut.start()] if cut else completion
    action = _ACTION.search(text)
    final = _FINAL.search(text)
    if action is not None and (final is None or action.start() < final.start()):
        raw = action["input"]
        if final is not None:
            raw = raw[:max(0, final.start() - action.start("input"))]
        return ReactStep(text.rstrip(), (action["name"].strip().strip("`"), raw.strip()), None)
    if final is not None:
        return ReactStep(text.rstrip(), None, final["answer"].strip())
    return ReactStep(text.rstrip(), None, text.strip())


# --- one row ----------------------------------------------------------------------------------


def _tool_message_calls(raw_calls: Sequence[Mapping[str, Any]], turn: int) -> list[dict[str, Any]]:
    """The calls as the assistant message sent back carries them: each with an id (one made
    up when the server sent none) and arguments as text."""
    out = []
    for n, raw in enumerate(raw_calls):
        function = raw.get("function") if isinstance(raw.get("function"), Mapping) else {}
        assert isinstance(function, Mapping)
        out.append({"id": raw.get("id") or f"call_{turn}_{n + 1}", "type": "function",
                    "function": {"name": str(function.get("name") or ""),
                                 "arguments": str(function.get("arguments") or "")}})
    return out


async def _execute(agent: Agent, name: str | None, arguments: Any, problem: str | None
                   ) -> dict[str, Any]:
    """One call the model made: run when it is a valid call of a declared tool, else an
    invalid call whose error result goes back to the model."""
    out: dict[str, Any] = {"name": name, "arguments": arguments}
    if problem is not None:
        out.update(invalid=True, error=problem, result=f"error: {problem}", ms=0.0)
        return out
    assert name is not None
    done = await call_tool(agent.impls[name], arguments, agent.tool_timeout)
    out.update(invalid=False, error=done.error, result=done.content, ms=done.ms)
    return out


def tool_selection(called: Sequence[str], expected: Sequence[str], strict: bool) -> float:
    """1 when every expected tool was called (in order, under `strict`) and no tool that is
    not expected was, else 0 (the `tool_selection` metric's row score)."""
    return selected(called, expected, strict)


async def run_agent_row(agent: Agent, item: WorkItem, ctx: RowContext) -> dict[str, Any]:
    """The stored row: the final answer scored, and the whole trajectory."""
    by_name = {t.name: t for t in agent.tools}
    params = agent.request_params
    messages: list[dict[str, Any]] = [dict(m) for m in item.messages]
    turns: list[dict[str, Any]] = []
    outcome = "answer"
    final_text = ""
    error: str | None = None
    for number in range(1, agent.max_turns + 1):
        answer = await ctx.complete(messages, params, item.sample)
        turn: dict[str, Any] = {"turn": number, "n_messages": len(messages),
                                "cached": answer.cached, "attempts": answer.attempts}
        turns.append(turn)
        response = answer.response
        if response is None:
            turn["error"] = answer.error
            error, outcome = f"turn {number}: {answer.error}", "error"
            break
        text = "" if response.get("no_text") else str(response.get("text") or "")
        turn.update(completion=text, latency_ms=response.get("latency_ms"),
                    prompt_tokens=response.get("prompt_tokens"),
                    completion_tokens=response.get("completion_tokens"),
                    response_model=response.get("model"),
                    system_fingerprint=response.get("system_fingerprint"))
        if agent.protocol == "react":
            step = parse_react(text)
            if step.call is None:
                final_text = step.final or ""
                messages.append({"role": "assistant", "content": text})
                break
            name, raw_args = step.call
            parsed = read_call({"function": {"name": name, "arguments": raw_args}}, 1, by_name)
            turn["calls"] = [{"name": name, "arguments": raw_args}]
            messages.append({"role": "assistant", "content": step.text})
            if number == agent.max_turns:
                turn["calls"][0]["not_executed"] = True
                outcome, final_text = "turn_limit", text
                break
            done = await _execute(agent, parsed.name, parsed.arguments, parsed.problem)
            turn["calls"] = [{**done, "arguments": raw_args}]
            messages.append({"role": "user", "content": f"Observation: {done['result']}"})
            continue
        raw_calls = [c for c in response.get("tool_calls") or [] if isinstance(c, Mapping)]
        if not raw_calls:
            final_text = text
            messages.append({"role": "assistant", "content": text})
            break
        sent_calls = _tool_message_calls(raw_calls, number)
        messages.append({"role": "assistant", "content": text, "tool_calls": sent_calls})
        if number == agent.max_turns:
            turn["calls"] = [{"id": c["id"], "name": c["function"]["name"],
                              "arguments": c["function"]["arguments"], "not_executed": True}
                             for c in sent_calls]
            outcome, final_text = "turn_limit", text
            break
        calls = []
        for n, call in enumerate(sent_calls):
            parsed = read_call(call, n + 1, by_name)
            done = await _execute(agent, parsed.name, parsed.arguments, parsed.problem)
            done["arguments"] = call["function"]["arguments"]
            calls.append({"id": call["id"], **done})
            messages.append({"role": "tool", "tool_call_id": call["id"],
                             "content": done["result"]})
        turn["calls"] = calls
    return await _record(agent, item, ctx, turns, messages, outcome, final_text, error)


async def _record(agent: Agent, item: WorkItem, ctx: RowContext, turns: list[dict[str, Any]],
                  messages: list[dict[str, Any]], outcome: str, final_text: str,
                  error: str | None) -> dict[str, Any]:
    row = item.row
    executed = [c for t in turns for c in t.get("calls") or [] if not c.get("not_executed")]
    called = [str(c.get("name")) for t in turns for c in t.get("calls") or []]
    model_ms = sum(float(t.get("latency_ms") or 0) for t in turns)
    tool_ms = sum(float(c.get("ms") or 0) for c in executed)
    trajectory: dict[str, Any] = {
        "protocol": agent.protocol, "outcome": outcome, "turns": turns, "messages": messages,
        "tools_called": called,
        "tool_errors": sum(1 for c in executed if c.get("error") and not c.get("invalid")),
        "invalid_calls": sum(1 for c in executed if c.get("invalid")),
        "model_ms": round(model_ms, 3), "tool_ms": round(tool_ms, 3)}
    if row.expected_tools is not None:
        strict = row.tools_order == "strict"
        trajectory.update(expected_tools=list(row.expected_tools),
                          tools_order="strict" if strict else "any",
                          tool_selection=tool_selection(called, row.expected_tools, strict))
    record: dict[str, Any] = {
        "run_id": ctx.run_id, "kind": item.kind, "position": item.position, "row_id": row.id,
        "sample": item.sample, "input": row.input, "messages": item.messages,
        "cached": all(t.get("cached") for t in turns),
        "attempts": sum(int(t.get("attempts") or 0) for t in turns),
        "prompt_tokens": sum(int(t.get("prompt_tokens") or 0) for t in turns),
        "completion_tokens": sum(int(t.get("completion_tokens") or 0) for t in turns),
        # The row's time: the model's turns and the tools' calls, one after another.
        "latency_ms": round(model_ms + tool_ms, 3),
        "response_model": next((t["response_model"] for t in turns if t.get("response_model")),
                               None),
        "system_fingerprint": next((t["system_fingerprint"] for t in turns
                                    if t.get("system_fingerprint")), None),
    }
    if row.has_expected:
        record["expected"] = row.expected
    judges: dict[str, Any] = {}
    if error is not None:
        record["error"] = error
    else:
        extraction, scores, details = await score_answer(
            final_text, agent.output, row, agent.metrics, agent.configured_metrics, ctx.services,
            tools_called=called)
        record.update(completion=final_text, answer=extraction.answer, valid=extraction.valid,
                      extract_error=extraction.error, scores=scores)
        judges.update(details)
    raw_calls = [{"id": c.get("id"), "type": "function",
                  "function": {"name": c.get("name"), "arguments": c.get("arguments")}}
                 for t in turns for c in t.get("calls") or []]
    if agent.protocol == "tools" and raw_calls:
        judges[TOOL_CALLS_KEY] = raw_calls
    judges[TRAJECTORY_KEY] = trajectory
    record["judges"] = judges
    record["created_at"] = utcnow()
    return record


# --- the summary ------------------------------------------------------------------------------


def _final_right(row: Mapping[str, Any]) -> bool | None:
    """Whether a row's final answer is right: exact_match when scored, else the answer read
    equal to the expected one; None without an expected answer."""
    if not row.get("has_expected", "expected" in row):
        return None
    scores = row.get("scores") or {}
    for name in ("exact_match", "accuracy"):
        if isinstance(scores.get(name), int | float):
            return bool(scores[name] >= 1)
    return bool(row.get("valid")) and row.get("answer") == row.get("expected")


def agent_summary(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """What an agent adds to a run's summary, in one pass over its stored eval rows: turns
    per row, tool errors, invalid calls, rows that hit max_turns, tool selection, the
    composability gap (rows whose every tool call succeeded and matched the expected tools
    but whose final answer is wrong), and time per row with the tools' share apart."""
    n = turns = tool_errors = invalid = turn_limit = calls = retries = 0
    spent = {"prompt": 0, "completion": 0}
    selection: list[float] = []
    gap_n = gap_wrong = 0
    model_ms = tool_ms = 0.0
    for row in rows:
        trajectory = (row.get("judges") or {}).get(TRAJECTORY_KEY)
        if not isinstance(trajectory, Mapping):
            continue
        n += 1
        turns += len(trajectory.get("turns") or [])
        # Retries and spent tokens request by request: a row's turns may mix cached and
        # sent ones (a resumed row).
        for turn in trajectory.get("turns") or []:
            if not isinstance(turn, Mapping) or turn.get("cached"):
                continue
            retries += max(0, int(turn.get("attempts") or 0) - 1)
            spent["prompt"] += int(turn.get("prompt_tokens") or 0)
            spent["completion"] += int(turn.get("completion_tokens") or 0)
        tool_errors += int(trajectory.get("tool_errors") or 0)
        invalid += int(trajectory.get("invalid_calls") or 0)
        calls += len(trajectory.get("tools_called") or [])
        turn_limit += trajectory.get("outcome") == "turn_limit"
        model_ms += float(trajectory.get("model_ms") or 0)
        tool_ms += float(trajectory.get("tool_ms") or 0)
        chosen = trajectory.get("tool_selection")
        if isinstance(chosen, int | float):
            selection.append(float(chosen))
        if row.get("error") is not None or trajectory.get("outcome") != "answer":
            continue
        right = _final_right(row)
        clean = not trajectory.get("tool_errors") and not trajectory.get("invalid_calls")
        if right is not None and clean and chosen == 1:
            gap_n += 1
            gap_wrong += not right

    def per_row(total: float) -> float | None:
        return round(total / n, 3) if n else None

    return {"summary": {"kind": "agent", "retries": retries, "spent_tokens": spent, "agent": {
        "rows": n, "turns_mean": per_row(turns), "tool_calls": calls,
        "tool_errors": tool_errors, "invalid_calls": invalid, "turn_limit": turn_limit,
        "tool_selection": share(selection) if selection else None,
        "composability_gap": {"value": gap_wrong / gap_n if gap_n else None, "n": gap_n,
                              "wrong": gap_wrong},
        "model_ms_mean": per_row(model_ms), "tool_ms_mean": per_row(tool_ms),
        "latency_ms_mean": per_row(model_ms + tool_ms)}}}


# --- parsing ----------------------------------------------------------------------------------


def _fail(msg: str, path: Path, lines: LineMap, *keys: str | int, fix: str) -> InputError:
    return InputError(msg, file=path, line=lines.line(*keys), fix=fix)


def is_agent_text(data: bytes) -> bool:
    return declares_kind(data, "agent")


def is_agent_file(path: Path) -> bool:
    return file_declares_kind(path, "agent")


def _number(raw: Any, key: str, path: Path, lines: LineMap, default: float, low: float,
            high: float, *, integer: bool, fix: str) -> float:
    if raw is None:
        return default
    ok = not isinstance(raw, bool) and (isinstance(raw, int) if integer
                                        else isinstance(raw, int | float))
    if not ok or not low <= raw <= high:
        what = "an integer" if integer else "a number"
        raise _fail(f"{key} must be {what} from {low:g} to {high:g}, not {quote(raw)}", path,
                    lines, key, fix=fix)
    return float(raw)


def parse_agent(data: bytes, path: Path, root: Path | None = None) -> Agent:
    """Validate agent file bytes; its evalset and tools' code must lie inside `root` (by
    default the project root of `path`)."""
    text = decode_utf8(data, path)
    raw, lines = load_yaml_text(text, path)
    if not isinstance(raw, dict) or raw.get("kind") != "agent":
        raise InputError("an agent file must be a YAML mapping with kind: agent", file=path,
                         line=lines.line("kind"), fix="add kind: agent")
    name = check_header(raw, path, lines, AGENT_KEYS)
    protocol = raw.get("protocol", "tools")
    if protocol not in PROTOCOLS:
        raise _fail(f"unknown protocol {quote(protocol)}", path, lines, "protocol",
                    fix="protocol: tools (the model's tool calling) or protocol: react (a text "
                    "format, for models without tool calling)")
    max_turns = int(_number(raw.get("max_turns"), "max_turns", path, lines, DEFAULT_MAX_TURNS, 1,
                            MAX_MAX_TURNS, integer=True, fix="e.g. max_turns: 6 (requests to the "
                            "model per row, the final answer's included)"))
    timeout = _number(raw.get("tool_timeout"), "tool_timeout", path, lines, DEFAULT_TOOL_TIMEOUT,
                      0.001, MAX_TOOL_TIMEOUT, integer=False,
                      fix="e.g. tool_timeout: 10 (seconds per tool call)")
    params = check_params(raw, path, lines)
    tools_raw = raw.get("tools")
    if not isinstance(tools_raw, list) or not tools_raw:
        raise _fail("an agent needs tools: a non-empty list of {name, description, parameters, "
                    "tool}", path, lines, "tools",
                    fix="e.g. - name: add / parameters: {type: object, properties: {a: {type: "
                    "number}}} / tool: ../tools/calc.py:add")
    declared = check_tools([{k: v for k, v in e.items() if k not in IMPL_KEYS}
                            if isinstance(e, dict) else e for e in tools_raw], path, lines)
    root = root if root is not None else project_root(path)
    impls: dict[str, AnyToolImpl] = {}
    for i, (entry, tool) in enumerate(zip(tools_raw, declared, strict=True)):
        if "sql" in entry:
            if "tool" in entry:
                raise _fail(f"tool {tool.name} has both tool: and sql:", path, lines, "tools", i,
                            "sql", fix="keep one: tool: FILE.py:FUNCTION or sql: {database: FILE}")
            impls[tool.name] = _sql_impl(entry["sql"], tool, i, path, lines, root, timeout)
            continue
        spec = entry.get("tool")
        if not isinstance(spec, str) or not spec.strip():
            raise _fail(f"tool {tool.name} needs tool: the Python function that runs it", path,
                        lines, "tools", i, *(("tool",) if "tool" in entry else ()),
                        fix="e.g. tool: ../tools/calc.py:add (relative to this file; called "
                        "with the arguments as keyword arguments), or sql: {database: "
                        "../data/shop.sqlite} (a read-only query the model writes)")
        impls[tool.name] = ToolImpl(tool.name, spec, path, lines.line("tools", i, "tool"))
    if protocol == "tools":
        check_tool_choice(params, declared, path, lines)
    elif "tool_choice" in params:
        raise _fail("params.tool_choice is not used with protocol: react", path, lines, "params",
                    "tool_choice", fix="remove it, or use protocol: tools")
    output = _check_output(raw.get("output"), path, lines)
    if output.type in TOOL_OUTPUT_TYPES:
        raise _fail(f"an agent's output is its final answer, not {output.type}", path, lines,
                    "output", "type", fix="use a text output type (string, number, label, json)")
    metrics, configured = check_metrics(raw.get("metrics", ["exact_match"]), path, lines, output,
                                        target="agent")
    if TRAJECTORY_KEY in metrics:
        raise _fail(f"metric name {TRAJECTORY_KEY!r} is reserved: agent rows keep their "
                    "trajectory under it", path, lines, "metrics", fix="choose another name")
    evalset = raw.get("evalset")
    if evalset is not None and (not isinstance(evalset, str) or not evalset.strip()):
        raise _fail("evalset must be a path string", path, lines, "evalset",
                    fix="e.g. evalset: ../evalsets/NAME.jsonl")
    # A database may be large: its sha256 is read in pieces and folded into the file's own.
    databases = sorted((_rel(i.file, root), i.version) for i in impls.values()
                       if isinstance(i, SqlToolImpl))
    own = hashlib.sha256(data).hexdigest()
    if databases:
        own = hashlib.sha256(json.dumps({"file": own, "databases": databases}).encode()).hexdigest()
    files = [*(i.file for i in impls.values() if isinstance(i, ToolImpl)),
             *(f for m in configured for f in m.files)]
    prompt = Prompt(path=path, name=name, version="", source=text,
                    messages=_check_messages(raw.get("messages"), path, lines),
                    model=raw.get("model"), params=dict(params), tools=declared,
                    output=dataclasses.replace(output, tools=declared), metrics=metrics,
                    configured_metrics=configured, root=root)
    _ = prompt._templates  # compile now so syntax errors surface at load time
    return Agent(
        path=path, name=name, source=text, prompt=prompt, impls=impls, protocol=protocol,
        version=inputs_version(own, files, root),
        max_turns=max_turns, tool_timeout=timeout, description=raw.get("description") or "",
        model=raw.get("model"), evalset=(path.parent / evalset) if evalset else None,
        evalset_line=lines.line("evalset") if evalset else None,
        thresholds=_check_thresholds(raw.get("thresholds"), path, lines, metrics, configured),
        root=root)


SQL_TOOL_KEYS = ("database", "max_rows")


def _sql_impl(raw: Any, tool: Tool, i: int, path: Path, lines: LineMap, root: Path,
              timeout: float) -> SqlToolImpl:
    """`sql: {database: FILE}` of a tool: the model's `query` argument runs read-only there."""
    example = "e.g. sql: {database: ../data/shop.sqlite}"
    if not isinstance(raw, dict):
        raise _fail(f"sql of tool {tool.name} must be a mapping with database", path, lines,
                    "tools", i, "sql", fix=example)
    for key in raw:
        if key not in SQL_TOOL_KEYS:
            raise _fail(f"unknown key {quote(key)} in sql of tool {tool.name}", path, lines,
                        "tools", i, "sql", key, fix=f"allowed keys: {', '.join(SQL_TOOL_KEYS)}")
    database = raw.get("database")
    if not isinstance(database, str) or not database.strip():
        raise _fail(f"sql of tool {tool.name} needs database: the path of a SQLite file", path,
                    lines, "tools", i, "sql", *(("database",) if "database" in raw else ()),
                    fix=example + " (relative to this file)")
    max_rows = raw.get("max_rows", DEFAULT_MAX_ROWS)
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or not 1 <= max_rows <= 100_000:
        raise _fail(f"sql max_rows of tool {tool.name} must be a whole number from 1 to 100000",
                    path, lines, "tools", i, "sql", "max_rows",
                    fix=f"e.g. max_rows: {DEFAULT_MAX_ROWS}")
    properties = tool.parameters.get("properties")
    if not isinstance(properties, Mapping) or list(properties) != ["query"]:
        raise _fail(f"the sql tool {tool.name} takes one argument, query: declare it (and only "
                    "it) in parameters", path, lines, "tools", i, "parameters",
                    fix="parameters: {type: object, properties: {query: {type: string, "
                    "description: one SQLite SELECT statement}}, required: [query]}")
    db_path = path.parent / database
    line = lines.line("tools", i, "sql", "database")
    runner = sql_runner(db_path, _rel(db_path, root), root, path, line, timeout, max_rows)
    return SqlToolImpl(tool.name, runner, path, line)


def _rel(path: Path, root: Path) -> str:
    absolute = Path(os.path.normpath(os.path.abspath(path)))
    try:
        return absolute.relative_to(Path(os.path.abspath(root))).as_posix()
    except ValueError:
        return absolute.as_posix()


def load_agent(path: str | Path, root: Path | None = None) -> Agent:
    """Load and validate an agent file (its eval set and tools inside the project)."""
    p = Path(path)
    root = Path(root) if root is not None else project_root(p)
    data = read_target_file(p, root, what="agent file")
    return parse_agent(data, p, root)

