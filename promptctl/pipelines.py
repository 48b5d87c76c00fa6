"""Pipeline files (`kind: pipeline`): prompts chained into steps, with conditions and loops.

A pipeline is checked whole before anything is sent: every step's prompt loads, every
template compiles in the sandbox, every `steps.ID` it names exists, the steps form no
cycle, every prompt gets the variables its messages use, and every row of the eval set
has the `input` fields the templates read. Errors name the file and the line.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptctl import pipeline_rows
from promptctl._yaml import LineMap, decode_utf8, load_yaml_text
from promptctl.errors import InputError, did_you_mean, display_path
from promptctl.evalsets import EvalSet, Row, load_evalset
from promptctl.files import (
    Reference,
    project_root,
    quote,
    read_target_file,
)
from promptctl.metrics.registry import Metric, builtin
from promptctl.prompts import (
    Prompt,
    _check_thresholds,
    check_expected,
    check_header,
    check_metrics,
    comparing_metrics,
    declares_kind,
    file_declares_kind,
    inputs_version,
    load_prompt,
    unique_paths,
)
from promptctl.scoring import TEXT_OUTPUT_TYPES, OutputSpec
from promptctl.step_tools import (
    DEFAULT_MAX_ROWS,
    DEFAULT_SQL_TIMEOUT,
    DEFAULT_TOOL_TIMEOUT,
    SqlStep,
    StepTool,
    ToolStep,
    sql_runner,
)
from promptctl.templates import Site, compile_template, environment, render_template, row_budget
from promptctl.work import RowContext, WorkItem

if TYPE_CHECKING:
    import jinja2

PIPELINE_KEYS = ("name", "kind", "description", "model", "steps", "output", "output_type",
                 "labels", "metrics", "evalset", "thresholds")
STEP_KEYS = ("id", "prompt", "sql", "tool", "input", "when", "for_each", "repeat_until",
             "max_iterations", "timeout")
SQL_KEYS = ("database", "query", "max_rows")
# What a step does: exactly one of these keys.
STEP_ACTIONS = ("prompt", "sql", "tool")
# A repeat_until loop runs a step at most this many times in one row.
MAX_ITERATIONS = 100
_STEP_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# A template that is one `{{ expression }}` and nothing else passes the expression's value
# (a list, a number) rather than its text.
_ONE_EXPRESSION = re.compile(r"\A\s*\{\{-?(?P<expr>.*?)-?\}\}\s*\Z", re.DOTALL)

# Reads a prompt file a pipeline names: (path, where it is named) -> Prompt.
PromptLoader = Callable[[Path, Reference], Prompt]


@dataclass(frozen=True)
class Expr:
    """A sandboxed template of the pipeline file and where it stands.

    `kind` is "text" (rendered to text, or to the value of its only `{{ expression }}`),
    "condition" (a bare expression, true or false) or "value" (a bare expression's value).
    """

    source: str
    kind: str
    site: Site
    refs: frozenset[str]  # the step ids it reads
    reads_inputs: frozenset[str]  # the input fields it reads (input.NAME)
    template: jinja2.Template
    value_template: jinja2.Template | None = None

    def evaluate(self, context: Mapping[str, Any], who: str) -> Any:
        """The template's result for one row: text, a value or a truth value."""
        if self.kind == "condition":
            return render_template(self.template, context, self.site, who) == "1"
        if self.kind == "value":
            return json.loads(render_template(self.template, context, self.site, who))
        if self.value_template is not None:
            return json.loads(render_template(self.value_template, context, self.site, who))
        return render_template(self.template, context, self.site, who)


@dataclass(frozen=True)
class Step:
    """One step: a prompt (or a `sql:` query, or a `tool:` function), the variables it is
    given, an optional condition and loop, and an optional `repeat_until` loop.

    A tool step has no prompt: `prompt` is None, `tool` runs it and `prompt_rel` labels it
    (`sql:PATH`, `tool:PATH:FUNCTION`). A sql step's only input is `query`."""

    id: str
    prompt: Prompt | None
    prompt_rel: str  # the prompt's path relative to the project root (or the tool's label)
    inputs: tuple[tuple[str, Expr], ...]
    when: Expr | None
    for_each: Expr | None
    line: int | None
    tool: StepTool | None = None
    repeat_until: Expr | None = None
    max_iterations: int | None = None

    @property
    def kind(self) -> str:
        return "prompt" if self.tool is None else self.tool.kind

    @property
    def version(self) -> str:
        """The prompt's version, or the sha256 of the tool's file or of the database."""
        if self.tool is not None:
            return self.tool.version
        assert self.prompt is not None
        return self.prompt.version

    @property
    def deps(self) -> frozenset[str]:
        """The steps whose answers this one reads (a repeat_until step reading its own
        previous iteration does not depend on itself)."""
        out: set[str] = set()
        for _, expr in self.inputs:
            out |= expr.refs
        for extra in (self.when, self.for_each, self.repeat_until):
            if extra is not None:
                out |= extra.refs
        if self.repeat_until is not None:
            out.discard(self.id)
        return frozenset(out)

    def render_inputs(self, context: Mapping[str, Any], who: str) -> dict[str, Any]:
        return {name: expr.evaluate(context, who) for name, expr in self.inputs}


@dataclass(frozen=True)
class Pipeline:
    """A validated pipeline file. `version` covers the file and every prompt it uses."""

    path: Path
    name: str
    version: str
    source: str
    steps: tuple[Step, ...]
    output: Expr
    output_spec: OutputSpec
    description: str = ""
    model: str | None = None
    metrics: tuple[str, ...] = ("exact_match",)
    evalset: Path | None = None
    evalset_line: int | None = None
    thresholds: dict[str, Any] = field(default_factory=dict)
    root: Path | None = None
    # End-to-end metrics configured in the file (judges, similarity, scorers).
    configured_metrics: tuple[Metric, ...] = ()

    @property
    def kind(self) -> str:
        return "pipeline"

    @property
    def metric_objects(self) -> tuple[Metric, ...]:
        """The end-to-end metrics, in order: built-in and configured."""
        configured = {m.name: m for m in self.configured_metrics}
        return tuple(m for m in (configured.get(n) or builtin(n) for n in self.metrics)
                     if m is not None)

    @property
    def all_configured_metrics(self) -> tuple[Metric, ...]:
        """The end-to-end configured metrics and every step prompt's."""
        out = {id(m): m for m in self.configured_metrics}
        for step in self.steps:
            if step.prompt is not None:
                out.update((id(m), m) for m in step.prompt.configured_metrics)
        return tuple(out.values())

    @property
    def examples(self) -> tuple[Row, ...]:
        return ()

    @property
    def prompts(self) -> dict[str, Prompt]:
        """Every prompt the pipeline uses, by its path relative to the project root."""
        return {s.prompt_rel: s.prompt for s in self.steps if s.prompt is not None}

    @property
    def tools(self) -> tuple[StepTool, ...]:
        """What its sql and tool steps run."""
        return tuple(s.tool for s in self.steps if s.tool is not None)

    @property
    def files(self) -> list[Path]:
        """The pipeline file, every prompt file it uses, the judges' and scorers' files their
        metrics and its own read, and its tool steps' Python files and databases."""
        return unique_paths([self.path, *(f for p in self.prompts.values() for f in p.files),
                             *(f for m in self.configured_metrics for f in m.files),
                             *(f for t in self.tools for f in t.files)])

    # --- as a target of the engine (see `promptctl.target`): a row runs its steps ---------

    @property
    def request_params(self) -> dict[str, Any]:
        first = next(iter(self.prompts.values()), None)
        return first.request_params if first is not None else {}

    @property
    def max_tokens(self) -> int:
        return max((p.max_tokens for p in self.prompts.values()), default=0)

    @property
    def run_params(self) -> dict[str, Any]:
        return {s.id: s.prompt.request_params if s.prompt is not None else {"tool": s.prompt_rel}
                for s in self.steps}

    def run_options(self) -> dict[str, Any]:
        """The sources of its prompts, from which a resume rebuilds the pipeline as it was."""
        return {"prompts": {rel: {"version": p.version, "source": p.source}
                            for rel, p in self.prompts.items()}}

    def default_model(self) -> str | None:
        return self.model

    def messages_for(self, row: Row) -> list[dict[str, str]]:
        return []  # a step's request depends on the answers before it

    async def run_row(self, item: WorkItem, ctx: RowContext) -> dict[str, Any]:
        return await pipeline_rows.run_row(self, item.row, item.position, item.sample, ctx)

    def summary_extra(self, rows: Callable[[], Iterable[Mapping[str, Any]]]) -> dict[str, Any]:
        return pipeline_rows.summary_extra(self, rows)

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)

    @cached_property
    def order(self) -> tuple[str, ...]:
        """Step ids in an order where each comes after the steps it reads."""
        return _topological(self.steps)

    def load_evalset(self) -> EvalSet:
        if self.evalset is None:
            raise InputError("no eval set: the pipeline names none", file=self.path,
                             fix="add evalset: ../evalsets/NAME.jsonl to the pipeline, or pass "
                             "--evalset")
        root = self.root if self.root is not None else project_root(self.path)
        return load_evalset(self.evalset, root=root,
                            ref=Reference(self.path, self.evalset_line, "evalset"))

    def check_rows(self, rows: Iterable[Row], evalset_path: Path) -> None:
        """Raise, naming the row's file and line, for the first row that a template of the
        pipeline cannot render: a missing input field, a step id that is not a step, a row's
        `steps`/`should_run` naming an unknown step, or an expected answer no answer can be."""
        for tool in self.tools:
            tool.check()  # loads each tool's module: validate, --dry-run and a run
        ids = {s.id for s in self.steps}
        comparing = comparing_metrics(self.metric_objects)
        for row in rows:
            where = f"{evalset_path}:{row.line}" if row.line else str(evalset_path)
            for key, mapping in (("steps", row.steps), ("should_run", row.should_run)):
                for step_id in mapping or {}:
                    if step_id not in ids:
                        raise InputError(f"row {quote(row.id)} names unknown step {quote(step_id)} "
                                         f"in {key}", file=evalset_path, line=row.line,
                                         fix=f"use one of the pipeline's steps: {', '.join(sorted(ids))}")
                if key == "should_run":
                    for step_id, value in (mapping or {}).items():
                        if not isinstance(value, bool):
                            raise InputError(f"should_run of row {quote(row.id)} must map step ids "
                                             f"to true or false ({quote(step_id)} is not)",
                                             file=evalset_path, line=row.line,
                                             fix='e.g. "should_run": {"refund": false}')
            self._check_expected(row, evalset_path, comparing)
            for expr in self._exprs():
                for name in sorted(expr.reads_inputs):
                    if name not in row.input:
                        raise InputError(
                            f"{expr.site.where} reads input.{name}, which row {quote(row.id)} lacks "
                            f"(row at {where})", file=expr.site.file, line=expr.site.line_of(None),
                            fix=f"add {name} to the row's input, or fix the template")
            self._render_row(row, where)

    def _check_expected(self, row: Row, evalset_path: Path, comparing: tuple[str, ...]) -> None:
        """The row's expected final answer (when an end-to-end metric compares it) and its
        steps' expected answers are ones an answer can equal. A step expected null was to be
        skipped; a loop's answer is a list of its items' answers."""
        if comparing and row.has_expected:
            check_expected(row.expected, self.output_spec, what=f"row {quote(row.id)}",
                           file=evalset_path, line=row.line, comparing=comparing,
                           reader=f"output_type: of {display_path(self.path)}")
        for step_id, value in (row.steps or {}).items():
            step = self.step(step_id)
            if value is None or step.for_each is not None or step.prompt is None:
                continue  # a tool step's answer may be any JSON value
            check_expected(value, step.prompt.output, file=evalset_path, line=row.line,
                           what=f"row {quote(row.id)} for step {step_id}",
                           reader=f"output: of {display_path(step.prompt.path)}")

    def _exprs(self) -> Iterator[Expr]:
        for step in self.steps:
            for _, expr in step.inputs:
                yield expr
            if step.when is not None:
                yield step.when
            if step.for_each is not None:
                yield step.for_each
            if step.repeat_until is not None:
                yield step.repeat_until
        yield self.output

    def _render_row(self, row: Row, where: str) -> None:
        """Render every template that depends only on the row and on answers of a known
        shape, with a stand-in answer for each step: what fails here fails for every answer.
        A step the row gives an expected answer for (its `steps:`) stands in with that
        answer, so a loop over it renders its real items; a loop over the row's input
        renders every item. The row's budget applies, as when it runs."""
        expected = {k: v for k, v in (row.steps or {}).items() if v is not None}
        stand_in = {s.id: {"answer": expected[s.id] if s.id in expected else _stand_in(s),
                           "skipped": False, "completion": "", "valid": True} for s in self.steps}
        context: dict[str, Any] = {"input": row.input, "steps": stand_in, "iteration": 1}
        who = f"row {quote(row.id)} ({where})"
        # Answers of a shape unknown before they come: a loop's, a JSON answer, a tool's.
        vague = {s.id for s in self.steps if s.id not in expected
                 and (s.for_each is not None or s.prompt is None
                      or s.prompt.output.type == "json")}
        with row_budget():
            for step in self.steps:
                if step.when is not None and not step.when.refs & vague:
                    step.when.evaluate(context, who)
                if any(expr.refs & vague for _, expr in step.inputs):
                    continue
                items: list[Any] = [None]
                if step.for_each is not None:
                    if not step.for_each.refs & vague:
                        items = self._items(step.for_each, context, who)
                    elif any("item" in _names(expr.source) for _, expr in step.inputs):
                        continue  # items of a shape unknown before the answers come
                for index, item in enumerate(items):
                    scope = context if step.for_each is None else \
                        {**context, "item": item, "index": index}
                    variables = step.render_inputs(scope, who)
                    if step.prompt is not None:
                        step.prompt.render(variables, row_id=row.id)

    @staticmethod
    def _items(expr: Expr, context: Mapping[str, Any], who: str) -> list[Any]:
        try:
            return pipeline_rows.loop_items(expr.evaluate(context, who))
        except InputError as exc:
            if exc.file is not None:
                raise
            raise InputError(f"{expr.site.where}: {exc.message}, for {who}", file=expr.site.file,
                             line=expr.site.line_of(None),
                             fix="loop over a list, split long inputs across rows") from None


@functools.lru_cache(maxsize=256)
def _names(source: str) -> frozenset[str]:
    from jinja2 import meta


    return frozenset(meta.find_undeclared_variables(environment().parse(source)))


def _stand_in(step: Step) -> Any:
    if step.for_each is not None or step.kind == "sql":
        return []
    if step.prompt is None:
        return None
    spec = step.prompt.output
    if spec.type in ("number", "integer"):
        return 0
    if spec.type == "label":
        return spec.labels[0]
    if spec.type == "json":
        return []
    return ""


def _topological(steps: Iterable[Step]) -> tuple[str, ...]:
    """The step ids, each after every step it reads (depth first, in file order); a cycle is
    a _CycleError. Walked with a stack of its own, not by recursion, so a graph thousands of
    steps deep is no deeper for Python than a flat one."""
    steps = list(steps)
    done: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    by_id = {s.id: s for s in steps}
    for s in steps:
        if state.get(s.id) == 2:
            continue
        # The current path: each step with the dependencies it has still to visit.
        path: list[tuple[str, Iterator[str]]] = [(s.id, iter(sorted(by_id[s.id].deps)))]
        state[s.id] = 1
        while path:
            step_id, pending = path[-1]
            dep = next(pending, None)
            if dep is None:
                path.pop()
                state[step_id] = 2
                done.append(step_id)
            elif state.get(dep) == 1:
                trail = [i for i, _ in path]
                raise _CycleError(trail[trail.index(dep):] + [dep])
            elif state.get(dep) != 2:
                state[dep] = 1
                path.append((dep, iter(sorted(by_id[dep].deps))))
    return tuple(done)


class _CycleError(Exception):
    def __init__(self, cycle: list[str]) -> None:
        super().__init__(" -> ".join(cycle))
        self.cycle = cycle


def _references(source: str, site: Site, names: Iterable[str]) -> tuple[set[str], set[str]]:
    """The step ids (`steps.ID`, `steps['ID']`) and input fields (`input.NAME`) a template
    reads. `steps` used any other way hides which steps it needs, and is refused."""
    from jinja2 import nodes


    tree = environment().parse(source)
    step_refs: set[str] = set()
    input_refs: set[str] = set()
    claimed: set[int] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        base = node.node
        if not isinstance(base, nodes.Name) or base.name not in ("steps", "input"):
            continue
        if isinstance(node, nodes.Getattr):
            key: Any = node.attr
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            key = node.arg.value
        else:
            continue
        claimed.add(id(base))
        (step_refs if base.name == "steps" else input_refs).add(key)
    for name in tree.find_all(nodes.Name):
        if name.name == "steps" and name.ctx == "load" and id(name) not in claimed:
            raise InputError(f"{site.where} uses `steps` other than as steps.ID", file=site.file,
                             line=site.line_of(None),
                             fix="name each step it reads as steps.ID (steps.route.answer)")
    known = set(names)
    for ref in sorted(step_refs):
        if ref not in known:
            raise InputError(f"{site.where} reads steps.{ref}, which is not a step", file=site.file,
                             line=site.line_of(None),
                             fix=f"{did_you_mean(ref, sorted(known))}steps are: {', '.join(sorted(known))}")
    return step_refs, input_refs


def _one_expression(source: str) -> str | None:
    """The expression of a template that is one `{{ expression }}` and nothing else."""
    found = _ONE_EXPRESSION.match(source)
    if found is None:
        return None
    expr = found.group("expr")
    return None if any(mark in expr for mark in ("{{", "}}", "{%", "{#")) else expr


def _expr(raw: Any, kind: str, site: Site, step_ids: Iterable[str]) -> Expr:
    if isinstance(raw, bool) or raw is None:
        raw = "true" if raw else "false" if raw is not None else ""
    if isinstance(raw, int | float):
        raw = str(raw)
    if not isinstance(raw, str) or (kind != "text" and not raw.strip()):
        raise InputError(f"{site.where} must be a string", file=site.file, line=site.line_of(None),
                         fix="quote the template" if kind == "text" else
                         "write an expression such as steps.route.answer == 'billing'")
    source = raw
    if kind != "text":
        one = _one_expression(source)
        expr = one if one is not None else source
        text = (f"{{% if {expr} %}}1{{% endif %}}" if kind == "condition"
                else f"{{{{ ({expr}) | tojson }}}}")
        template = compile_template(text, site)
        refs, inputs = _references(text, site, step_ids)
        return Expr(source, kind, site, frozenset(refs), frozenset(inputs), template)
    template = compile_template(source, site)
    refs, inputs = _references(source, site, step_ids)
    one = _one_expression(source)
    value = compile_template(f"{{{{ ({one}) | tojson }}}}", site) if one is not None else None
    return Expr(source, kind, site, frozenset(refs), frozenset(inputs), template, value)


def _fail(msg: str, path: Path, lines: LineMap, *keys: str | int, fix: str) -> InputError:
    return InputError(msg, file=path, line=lines.line(*keys), fix=fix)


def _site(path: Path, lines: LineMap, where: str, *keys: str | int) -> Site:
    line = lines.line(*keys)
    return Site(file=path, where=where, line_of=lambda _template_line: line)


def _check_step(raw: Any, i: int, path: Path, lines: LineMap, ids: list[str], root: Path,
                load: PromptLoader) -> Step:
    if not isinstance(raw, dict):
        raise _fail(f"steps[{i}] must be a mapping with id and prompt (or sql, or tool)", path,
                    lines, "steps", i, fix="- id: route\n    prompt: ../prompts/NAME.yaml")
    for key in raw:
        if key not in STEP_KEYS:
            raise _fail(f"unknown key {quote(key)} in steps[{i}]", path, lines, "steps", i, key,
                        fix=f"{did_you_mean(key, STEP_KEYS)}allowed keys: {', '.join(STEP_KEYS)}")
    step_id = ids[i]
    actions = [k for k in STEP_ACTIONS if k in raw]
    if len(actions) != 1:
        raise _fail(f"step {step_id} needs exactly one of prompt, sql or tool"
                    + (f" (it has {' and '.join(actions)})" if actions else ""), path, lines,
                    "steps", i, *actions[1:2],
                    fix="prompt: ../prompts/NAME.yaml, or sql: {database: ../data/NAME.sqlite, "
                    "query: \"SELECT ...\"}, or tool: ../tools/NAME.py:FUNCTION")
    timeout = _timeout(raw, step_id, actions[0], i, path, lines)
    repeat_until, max_iterations = _repeat(raw, step_id, i, path, lines, ids)
    prompt: Prompt | None = None
    tool: StepTool | None = None
    if actions[0] == "sql":
        tool, inputs = _sql_step(raw, step_id, i, path, lines, ids, root, timeout)
        rel = tool.label
    else:
        inputs = _step_inputs(raw, step_id, i, path, lines, ids, literal=actions[0] == "tool")
        if actions[0] == "tool":
            spec = raw["tool"]
            if not isinstance(spec, str) or not spec.strip():
                raise _fail(f"step {step_id}: tool must be FILE.py:FUNCTION", path, lines,
                            "steps", i, "tool", fix="e.g. tool: ../tools/calc.py:add (relative "
                            "to this file)")
            tool = ToolStep.parse(spec, path, lines.line("steps", i, "tool"), root,
                                  timeout=timeout, argument_names=tuple(n for n, _ in inputs),
                                  rel=lambda p: _rel(p, root))
            rel = tool.label
        else:
            prompt, rel = _prompt_of(raw, step_id, i, path, lines, root, load, inputs)
    when = raw.get("when")
    for_each = raw.get("for_each")
    step = Step(
        id=step_id, prompt=prompt, prompt_rel=rel, inputs=tuple(inputs),
        when=None if when is None else _expr(when, "condition", _site(
            path, lines, f"when of step {step_id}", "steps", i, "when"), ids),
        for_each=None if for_each is None else _expr(for_each, "value", _site(
            path, lines, f"for_each of step {step_id}", "steps", i, "for_each"), ids),
        line=lines.line("steps", i), tool=tool, repeat_until=repeat_until,
        max_iterations=max_iterations)
    if step.for_each is not None and step.repeat_until is not None:
        raise _fail(f"step {step_id} has both for_each and repeat_until", path, lines, "steps", i,
                    "repeat_until", fix="loop one way: split the step in two")
    reads_self = any(step_id in e.refs for e in (*(x for _, x in step.inputs), step.when,
                                                 step.for_each) if e is not None)
    if step.when is not None and step_id in step.when.refs or \
            (step.repeat_until is None and reads_self):
        raise _fail(f"step {step_id} reads its own answer", path, lines, "steps", i,
                    fix="a step can read only other steps' answers (with repeat_until, its input "
                    "may read steps.ID: its previous iteration)")
    if for_each is None:
        for _, expr in step.inputs:
            if "item" in _names(expr.source):
                raise InputError(f"{expr.site.where} uses item, which only a for_each step has",
                                 file=path, line=expr.site.line_of(None),
                                 fix="add for_each: to the step, or use input.NAME / steps.ID")
    return step


def _timeout(raw: Mapping[str, Any], step_id: str, action: str, i: int, path: Path,
             lines: LineMap) -> float:
    """A tool or sql step's time limit in seconds."""
    default = DEFAULT_SQL_TIMEOUT if action == "sql" else DEFAULT_TOOL_TIMEOUT
    if "timeout" not in raw:
        return default
    value = raw["timeout"]
    if action == "prompt":
        raise _fail(f"step {step_id}: timeout is for sql and tool steps", path, lines, "steps", i,
                    "timeout", fix="a prompt's requests have the endpoint's timeout; remove "
                    "timeout:")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
        raise _fail(f"step {step_id}: timeout must be a number of seconds (more than 0, at most "
                    "3600)", path, lines, "steps", i, "timeout", fix=f"e.g. timeout: {default:g}")
    return float(value)


def _repeat(raw: Mapping[str, Any], step_id: str, i: int, path: Path, lines: LineMap,
            ids: list[str]) -> tuple[Expr | None, int | None]:
    """repeat_until (a condition) and max_iterations, which it requires."""
    until = raw.get("repeat_until")
    most = raw.get("max_iterations")
    if until is None:
        if most is not None:
            raise _fail(f"step {step_id}: max_iterations without repeat_until", path, lines,
                        "steps", i, "max_iterations",
                        fix="add repeat_until: CONDITION, or remove max_iterations")
        return None, None
    if most is None:
        raise _fail(f"step {step_id}: repeat_until needs max_iterations", path, lines, "steps", i,
                    "repeat_until", fix="add max_iterations: N (the most times the step runs "
                    "in one row)")
    if isinstance(most, bool) or not isinstance(most, int) or not 1 <= most <= MAX_ITERATIONS:
        raise _fail(f"step {step_id}: max_iterations must be a whole number from 1 to "
                    f"{MAX_ITERATIONS}", path, lines, "steps", i, "max_iterations",
                    fix="e.g. max_iterations: 3")
    expr = _expr(until, "condition", _site(path, lines, f"repeat_until of step {step_id}",
                                           "steps", i, "repeat_until"), ids)
    return expr, most


def _step_inputs(raw: Mapping[str, Any], step_id: str, i: int, path: Path, lines: LineMap,
                 ids: list[str], *, literal: bool = False) -> list[tuple[str, Expr]]:
    """The step's input templates. With `literal` (a tool's keyword arguments), a number
    or true/false written as such is passed as that value rather than as its text."""
    inputs_raw = raw.get("input")
    if inputs_raw is None:
        inputs_raw = {}
    if not isinstance(inputs_raw, dict):
        raise _fail(f"input of step {step_id} must map the prompt's variables to templates", path,
                    lines, "steps", i, "input", fix='e.g. input: {text: "{{ input.text }}"}')
    inputs = []
    for name, value in inputs_raw.items():
        if not isinstance(name, str) or not name.isidentifier() or name == "examples":
            raise _fail(f"input variable {quote(name)} of step {step_id} is not a usable name", path,
                        lines, "steps", i, "input", name,
                        fix="use letters, digits and underscores (not 'examples')")
        site = _site(path, lines, f"input.{name} of step {step_id}", "steps", i, "input", name)
        if literal and isinstance(value, bool):
            value = "{{ true }}" if value else "{{ false }}"
        elif literal and isinstance(value, int | float) and math.isfinite(value):
            value = f"{{{{ {value!r} }}}}"
        inputs.append((name, _expr(value, "text", site, ids)))
    return inputs


def _prompt_of(raw: Mapping[str, Any], step_id: str, i: int, path: Path, lines: LineMap,
               root: Path, load: PromptLoader, inputs: list[tuple[str, Expr]]
               ) -> tuple[Prompt, str]:
    prompt_raw = raw.get("prompt")
    if not isinstance(prompt_raw, str) or not prompt_raw.strip():
        raise _fail(f"step {step_id} needs prompt: the path of a prompt file", path, lines,
                    "steps", i, "prompt", fix="e.g. prompt: ../prompts/NAME.yaml (relative to "
                    "this file)")
    prompt_path = path.parent / prompt_raw
    ref = Reference(path, lines.line("steps", i, "prompt"), "prompt")
    prompt = load(prompt_path, ref)
    if getattr(prompt, "kind", "prompt") == "pipeline":
        raise _fail(f"step {step_id} names a pipeline, not a prompt", path, lines, "steps", i,
                    "prompt", fix="name a prompt file")
    if prompt.output.reads_calls:
        raise _fail(f"step {step_id}: its prompt answers with tool calls (output.type "
                    f"{prompt.output.type}), which pipeline steps do not take yet", path, lines,
                    "steps", i, "prompt", fix="evaluate that prompt on its own, or give the step "
                    "a prompt with a text output")
    needed: set[str] = set()
    for message in prompt.messages:
        needed |= _names(message.content)
    needed.discard("examples")
    missing = sorted(needed - {n for n, _ in inputs})
    if missing:
        raise _fail(f"step {step_id}: its prompt {prompt_raw} uses {', '.join(missing)}, which the "
                    "step's input does not give", path, lines, "steps", i,
                    "input" if "input" in raw else "prompt",
                    fix=f"add {missing[0]}: \"{{{{ input.{missing[0]} }}}}\" (or another template) "
                    "to the step's input")
    return prompt, _rel(prompt_path, root)


def _sql_step(raw: Mapping[str, Any], step_id: str, i: int, path: Path, lines: LineMap,
              ids: list[str], root: Path, timeout: float
              ) -> tuple[SqlStep, list[tuple[str, Expr]]]:
    sql = raw["sql"]
    example = 'e.g. sql: {database: ../data/shop.sqlite, query: "{{ steps.to_sql.answer }}"}'
    if not isinstance(sql, dict):
        raise _fail(f"step {step_id}: sql must be a mapping with database and query", path,
                    lines, "steps", i, "sql", fix=example)
    if "input" in raw:
        raise _fail(f"step {step_id}: a sql step takes no input (its query is a template)", path,
                    lines, "steps", i, "input", fix="move the templates into sql.query")
    for key in sql:
        if key not in SQL_KEYS:
            raise _fail(f"unknown key {quote(key)} in sql of step {step_id}", path, lines,
                        "steps", i, "sql", key,
                        fix=f"{did_you_mean(key, SQL_KEYS)}allowed keys: {', '.join(SQL_KEYS)}")
    database = sql.get("database")
    if not isinstance(database, str) or not database.strip():
        raise _fail(f"step {step_id}: sql needs database: the path of a SQLite file", path, lines,
                    "steps", i, "sql", *(("database",) if "database" in sql else ()), fix=example)
    query = sql.get("query")
    if not isinstance(query, str) or not query.strip():
        raise _fail(f"step {step_id}: sql needs query: the SQL text (a template)", path, lines,
                    "steps", i, "sql", *(("query",) if "query" in sql else ()), fix=example)
    max_rows = sql.get("max_rows", DEFAULT_MAX_ROWS)
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or not 1 <= max_rows <= 100_000:
        raise _fail(f"step {step_id}: sql max_rows must be a whole number from 1 to 100000", path,
                    lines, "steps", i, "sql", "max_rows", fix=f"e.g. max_rows: {DEFAULT_MAX_ROWS}")
    db_path = path.parent / database
    db_line = lines.line("steps", i, "sql", "database")
    site = _site(path, lines, f"sql.query of step {step_id}", "steps", i, "sql", "query")
    return (sql_runner(db_path, _rel(db_path, root), root, path, db_line, timeout, max_rows),
            [("query", _expr(query, "text", site, ids))])


def _rel(path: Path, root: Path) -> str:
    absolute = Path(os.path.normpath(os.path.abspath(path)))
    try:
        return absolute.relative_to(Path(os.path.abspath(root))).as_posix()
    except ValueError:
        return absolute.as_posix()


def pipeline_version(file_sha: str, prompts: Mapping[str, str]) -> str:
    """sha256 over the file's sha256 and (path, version) of every prompt it uses."""
    blob = json.dumps({"file": file_sha, "prompts": dict(sorted(prompts.items()))},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def is_pipeline_text(data: bytes) -> bool:
    return declares_kind(data, "pipeline")


def is_pipeline_file(path: Path) -> bool:
    return file_declares_kind(path, "pipeline")


def parse_pipeline(data: bytes, path: Path, root: Path | None = None, *,
                   load: PromptLoader | None = None) -> Pipeline:
    """Validate pipeline file bytes; `load` reads the prompt files it names (by default from
    the work tree, inside the project root)."""
    root = root if root is not None else project_root(path)
    if load is None:
        def load(p: Path, ref: Reference) -> Prompt:
            if not p.exists() and not os.path.islink(p):
                raise InputError(f"the prompt file of this step does not exist: {p.name}",
                                 file=ref.file, line=ref.line,
                                 fix="fix the path (it is relative to the pipeline file's folder)")
            return load_prompt(p, root, ref=ref)

    text = decode_utf8(data, path)
    raw, lines = load_yaml_text(text, path)
    if not isinstance(raw, dict) or raw.get("kind") != "pipeline":
        raise InputError("a pipeline file must be a YAML mapping with kind: pipeline", file=path,
                         line=lines.line("kind"), fix="add kind: pipeline")
    name = check_header(raw, path, lines, PIPELINE_KEYS)
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise _fail("steps must be a non-empty list", path, lines, "steps",
                    fix="- id: route\n    prompt: ../prompts/NAME.yaml\n    input: {text: "
                    "\"{{ input.text }}\"}")
    ids: list[str] = []
    for i, step in enumerate(steps_raw):
        step_id = step.get("id") if isinstance(step, dict) else None
        if not isinstance(step_id, str) or not _STEP_ID.match(step_id):
            raise _fail(f"steps[{i}] needs an id made of letters, digits and underscores", path,
                        lines, "steps", i, *(("id",) if isinstance(step, dict) and "id" in step
                                             else ()), fix="e.g. id: route")
        if step_id in ids:
            raise _fail(f"step id {step_id!r} is used twice", path, lines, "steps", i, "id",
                        fix="give every step its own id")
        ids.append(step_id)
    steps = tuple(_check_step(s, i, path, lines, ids, root, load) for i, s in enumerate(steps_raw))
    try:
        _topological(steps)
    except _CycleError as exc:
        first = next(i for i, s in enumerate(steps) if s.id == exc.cycle[0])
        raise _fail(f"the steps form a cycle: {exc}", path, lines, "steps", first,
                    fix="a step can read only steps that do not read it back") from None
    if "output" not in raw:
        raise _fail("a pipeline needs output: the template of its final answer", path, lines,
                    fix='e.g. output: "{{ steps.LAST.answer }}"')
    output = _expr(raw["output"], "text", _site(path, lines, "output", "output"), ids)
    otype = raw.get("output_type", "string")
    if otype not in TEXT_OUTPUT_TYPES:
        raise _fail(f"unknown output_type {quote(otype)}", path, lines, "output_type",
                    fix=f"use one of: {', '.join(TEXT_OUTPUT_TYPES)} (a pipeline's answer is "
                    "text)")
    labels = raw.get("labels") or []
    if not isinstance(labels, list) or not all(isinstance(x, str | int) for x in labels):
        raise _fail("labels must be a list of strings", path, lines, "labels",
                    fix="e.g. labels: [billing, technical]")
    if otype == "label" and not labels:
        raise _fail("output_type label needs labels", path, lines, "output_type",
                    fix="list the allowed labels: labels: [a, b, c]")
    spec = OutputSpec(type=otype, labels=tuple(str(x) for x in labels))
    # End-to-end metrics: built-in or configured (a judge, similarity, a scorer), as in a
    # prompt file.
    metrics, configured = check_metrics(raw.get("metrics", ["exact_match"]), path, lines, spec,
                                        target="pipeline",
                                        type_key="output_type")
    evalset = raw.get("evalset")
    if evalset is not None and (not isinstance(evalset, str) or not evalset.strip()):
        raise _fail("evalset must be a path string", path, lines, "evalset",
                    fix="e.g. evalset: ../evalsets/NAME.jsonl")
    thresholds = _check_thresholds(raw.get("thresholds"), path, lines, metrics, configured)
    # The version covers each step's prompt, tool file and database.
    prompts = {s.prompt_rel: s.version for s in steps}
    # Without model: in the file, the model its prompts share (when they share one).
    models = {s.prompt.model for s in steps if s.prompt is not None and s.prompt.model}
    model = raw.get("model") or (models.pop() if len(models) == 1 else None)
    return Pipeline(
        path=path, name=name, source=text,
        version=pipeline_version(inputs_version(hashlib.sha256(data).hexdigest(),
                                                [f for m in configured for f in m.files], root),
                                 prompts),
        steps=steps, output=output, output_spec=spec, description=raw.get("description") or "",
        model=model, metrics=metrics,
        evalset=(path.parent / evalset) if evalset else None,
        evalset_line=lines.line("evalset") if evalset else None,
        thresholds=thresholds, root=root, configured_metrics=configured)


def load_pipeline(path: str | Path, root: Path | None = None) -> Pipeline:
    """Load and validate a pipeline file and every prompt it names (inside the project)."""
    p = Path(path)
    root = Path(root) if root is not None else project_root(p)
    data = read_target_file(p, root, what="pipeline file")
    return parse_pipeline(data, p, root)
