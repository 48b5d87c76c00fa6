"""Prompt files: validation, version hash and sandboxed Jinja2 rendering to chat messages."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptctl._yaml import LineMap, decode_utf8, load_yaml_text
from promptctl.errors import InputError, did_you_mean, display_path
from promptctl.evalsets import EvalSet, Row, load_evalset, make_row
from promptctl.files import (
    MAX_PROMPT_BYTES,
    Reference,
    project_root,
    quote,
    read_file,
    read_target_file,
)
from promptctl.metrics.registry import (
    AnswerLike,
    Metric,
    Services,
    builtin,
    kinds,
    register_prompt_loader,
    score_answer,
    score_extraction,
    unknown,
)
from promptctl.sampling import Sampling, run_sampled, summarize_samples
from promptctl.scoring import OUTPUT_TYPES, OutputSpec, extract_calls, unreachable
from promptctl.store import utcnow
from promptctl.templates import Site, compile_template, render_template
from promptctl.toolcalls import TOOL_CALLS_KEY, TOOL_NAME, TOOL_OUTPUT_TYPES, Tool
from promptctl.work import RowContext, WorkItem

if TYPE_CHECKING:
    import jinja2

PROMPT_KEYS = ("name", "description", "model", "params", "messages", "tools", "examples",
               "output", "metrics", "evalset", "thresholds")
TOOL_KEYS = ("name", "description", "parameters", "strict")
TOOL_CHOICES = ("auto", "none", "required")
OUTPUT_KEYS = ("pattern", "type", "labels", "json_schema")
ROLES = ("system", "user", "assistant", "developer")
GATE_KEYS = ("min", "max")
# Types of the well-known request parameters: a typo such as `temperature: O`
# fails here, not as an API error on every row.
_PARAM_TYPES = {"temperature": "number", "top_p": "number", "frequency_penalty": "number",
                "presence_penalty": "number", "max_tokens": "integer",
                "max_completion_tokens": "integer", "seed": "integer", "n": "integer"}


@dataclass(frozen=True)
class Message:
    """One chat message template and where it stands in the file.

    `line` is the line of its `content:` key; `text_line` the line of the
    template's first line, and `literal` says whether template lines map one
    to one onto file lines (a `|` block scalar) so errors can name the exact line.
    """

    role: str
    content: str
    line: int | None
    text_line: int | None = None
    literal: bool = False

    def file_line(self, template_line: int | None) -> int | None:
        """The file line of a template line (1-based), as near as the YAML style allows."""
        first = self.text_line if self.text_line is not None else self.line
        if first is None:
            return None
        if self.literal and template_line:
            return first + template_line - 1
        return first


@dataclass(frozen=True)
class Prompt:
    """A validated prompt file. `version` is the sha256 of the file's bytes."""

    path: Path
    name: str
    version: str
    source: str
    messages: tuple[Message, ...]
    description: str = ""
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    # The function tools the model may call, sent with every request.
    tools: tuple[Tool, ...] = ()
    examples: tuple[Row, ...] = ()
    output: OutputSpec = field(default_factory=OutputSpec)
    metrics: tuple[str, ...] = ("format_validity",)
    # The metrics of `metrics:` that are mappings (llm_judge, similarity, custom).
    configured_metrics: tuple[Metric, ...] = ()
    evalset: Path | None = None
    thresholds: dict[str, Any] = field(default_factory=dict)
    evalset_line: int | None = None
    root: Path | None = None  # the project root its eval set must lie in (None: found when needed)
    # `eval --samples K`: each row sampled K times and voted on (None: one answer per row).
    sampling: Sampling | None = None

    @property
    def metric_objects(self) -> tuple[Metric, ...]:
        """Every metric of the prompt, in its order: built-ins from the registry, and the
        configured ones."""
        configured = {m.name: m for m in self.configured_metrics}
        out = []
        for name in self.metrics:
            found = configured.get(name) or builtin(name)
            if found is not None:
                out.append(found)
        return tuple(out)

    @cached_property
    def _templates(self) -> list[jinja2.Template]:
        return [compile_template(m.content, self._site(i)) for i, m in enumerate(self.messages)]

    def _site(self, index: int) -> Site:
        message = self.messages[index]
        return Site(file=self.path, where=f"template messages[{index}] ({message.role})",
                    line_of=message.file_line)

    def render(self, variables: dict[str, Any], row_id: str | None = None) -> list[dict[str, str]]:
        """Render the messages for one row; a missing variable names file, template and row."""
        context = {**variables, "examples": [e.to_dict() for e in self.examples]}
        who = f"row {quote(row_id)}" if row_id is not None else "the row"
        return [{"role": message.role,
                 "content": render_template(template, context, self._site(i), who)}
                for i, (message, template) in enumerate(zip(self.messages, self._templates, strict=True))]

    def load_evalset(self) -> EvalSet:
        """The eval set this prompt names, which must lie inside the project root.

        A pull request controls `evalset:`: a path that leaves the project, or a
        symbolic link out of it, is refused, naming this file's evalset line.
        """
        if self.evalset is None:
            raise InputError("no eval set: the prompt names none", file=self.path,
                             fix="add evalset: ../evalsets/NAME.jsonl to the prompt, or pass --evalset")
        root = self.root if self.root is not None else project_root(self.path)
        return load_evalset(self.evalset, root=root,
                            ref=Reference(self.path, self.evalset_line, "evalset"))

    @property
    def request_params(self) -> dict[str, Any]:
        """Parameters sent with every request; temperature is always explicit. The declared
        tools are among them, so they are part of every cache key."""
        params = {"temperature": 0, **self.params}
        if params["temperature"] is None:  # `temperature:` left empty is still temperature 0
            params["temperature"] = 0
        if self.sampling is not None:
            params["temperature"] = self.sampling.temperature
        if self.tools:
            params["tools"] = [t.request() for t in self.tools]
        return params

    # --- as a target of the engine (see `promptctl.target`): one request per row ----------

    @property
    def kind(self) -> str:
        return "prompt"

    @property
    def all_configured_metrics(self) -> tuple[Metric, ...]:
        return self.configured_metrics

    @property
    def files(self) -> list[Path]:
        """This file and the judges' and scorers' files its metrics read."""
        judge = [self.sampling.judge.prompt.path] if self.sampling and self.sampling.judge else []
        return unique_paths([self.path, *(f for m in self.configured_metrics for f in m.files),
                             *judge])

    @property
    def max_tokens(self) -> int:
        params = self.request_params
        return int(params.get("max_tokens") or params.get("max_completion_tokens") or 256)

    @property
    def run_params(self) -> dict[str, Any]:
        return self.request_params

    def run_options(self) -> dict[str, Any]:
        return {"samples": self.sampling.options()} if self.sampling is not None else {}

    def default_model(self) -> str | None:
        return self.model

    def messages_for(self, row: Row) -> list[dict[str, str]]:
        return self.render(row.input, row_id=row.id)

    def check_rows(self, rows: Iterable[Row], evalset_path: Path) -> None:
        """Every row's and few-shot example's expected answer is one an answer can equal, when
        a metric compares them, and the calls a tool call output expects have its shape
        (rendering, planning checks for every row itself)."""
        check_expected_calls(self, rows, evalset_path)
        comparing = comparing_metrics(self.metric_objects)
        if not comparing:
            return
        reader = f"output: of {display_path(self.path)}"
        for what, group, file in (("example", self.examples, self.path),
                                  ("row", rows, evalset_path)):
            for row in group:
                if row.has_expected:
                    check_expected(row.expected, self.output, what=f"{what} {quote(row.id)}",
                                   file=file, line=row.line, reader=reader, comparing=comparing)

    async def run_row(self, item: WorkItem, ctx: RowContext) -> dict[str, Any]:
        if self.sampling is not None:
            return await run_sampled(self, self.sampling, item, ctx)
        answer = await ctx.complete(item.messages, self.request_params, item.sample)
        return await self.record(ctx.run_id, item, answer, ctx.services)

    async def record(self, run_id: str, item: WorkItem, answer: AnswerLike,
                     services: Services | None) -> dict[str, Any]:
        """The stored row of one answered (or failed) request, scored."""
        record: dict[str, Any] = {
            "run_id": run_id, "kind": item.kind, "position": item.position, "row_id": item.row.id,
            "sample": item.sample, "input": item.row.input, "messages": item.messages,
            "cached": answer.cached, "attempts": answer.attempts,
        }
        if item.row.has_expected:
            record["expected"] = item.row.expected
        response = answer.response
        if response is None:
            record["error"] = answer.error
        elif self.output.reads_calls:
            # The answer is the calls. The text beside them is the completion, "" when the
            # model only called a tool: an answer, not a "no text" row.
            text = "" if response.get("no_text") else str(response.get("text") or "")
            extraction = extract_calls(response.get("tool_calls"), self.output)
            scores, details = await score_extraction(
                extraction, text, item.row, self.metrics, self.configured_metrics, services)
            record.update(completion=text, answer=extraction.answer, valid=extraction.valid,
                          extract_error=extraction.error, scores=scores)
            if details:
                record["judges"] = details
        elif response.get("no_text"):
            # The model answered without text (a tool call, null content): shown as such and
            # not scored, rather than scored as a wrong answer.
            record.update(completion=None, valid=False, scores={},
                          extract_error=f"no text answer: {response['no_text']}")
        else:
            extraction, scores, details = await score_answer(
                response["text"], self.output, item.row, self.metrics, self.configured_metrics,
                services)
            record.update(completion=response["text"], answer=extraction.answer,
                          valid=extraction.valid, extract_error=extraction.error, scores=scores)
            if details:
                record["judges"] = details
        if response is not None:
            record.update(response_fields(response))
            calls = response.get("tool_calls")
            if calls or self.output.reads_calls:
                # The calls as the server sent them, beside what configured metrics keep.
                record["judges"] = {**(record.get("judges") or {}), TOOL_CALLS_KEY: calls or []}
        record["created_at"] = utcnow()  # when the answer arrived
        return record

    def summary_extra(self, rows: Callable[[], Iterable[Mapping[str, Any]]]) -> dict[str, Any]:
        if self.sampling is None:
            return {}
        return {"summary": {"samples": summarize_samples(self.sampling, self.metric_objects,
                                                         rows)}}


def response_fields(response: Mapping[str, Any]) -> dict[str, Any]:
    """What a stored row keeps of a response besides its text: tokens, latency, model."""
    return {"prompt_tokens": response.get("prompt_tokens"),
            "completion_tokens": response.get("completion_tokens"),
            "latency_ms": response.get("latency_ms"), "response_model": response.get("model"),
            "system_fingerprint": response.get("system_fingerprint")}


def comparing_metrics(metrics: Iterable[Metric]) -> tuple[str, ...]:
    """The metrics among `metrics` that compare `expected` with the answer as read."""
    return tuple(m.name for m in metrics if m.compares_answer)


def _shown(value: Any) -> str:
    """An expected value as a message quotes it: text quoted, other values as JSON, cut."""
    if isinstance(value, str):
        return quote(value)
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= 40 else text[:40] + "…"


def check_expected(expected: Any, spec: OutputSpec, *, what: str, file: Path | str,
                   line: int | None, reader: str, comparing: Sequence[str] = ()) -> None:
    """Refuse an expected value that no answer read as `spec` says can equal (a label that is
    not one, a mapping where answers are numbers): it would be scored wrong on every run, by
    the metrics `comparing` (none: a pipeline step's right-or-wrong). The error names the
    row's file and line, and `reader`, where answers are read."""
    problem = unreachable(expected, spec)
    if problem is None:
        return
    reason, fix = problem
    scored = f", so {', '.join(comparing)} can never score it as meant" if comparing else ""
    raise InputError(f"{what} expects {_shown(expected)}, {reason}: no answer can match it"
                     f"{scored} (answers are read by {reader})", file=file, line=line, fix=fix)


def unique_paths(paths: Iterable[Path]) -> list[Path]:
    """`paths` without repeats, in order."""
    return list(dict.fromkeys(paths))


def _fail(msg: str, path: Path, lines: LineMap, *keys: str | int, fix: str) -> InputError:
    return InputError(msg, file=path, line=lines.line(*keys), fix=fix)


def check_header(raw: dict[Any, Any], path: Path, lines: LineMap, allowed: Sequence[str]) -> str:
    """What a prompt file and a pipeline file check alike: only `allowed` keys; a name
    (default: the file's stem); description and model as strings. Returns the name."""
    for key in raw:
        if key not in allowed:
            raise _fail(f"unknown key {quote(key)}", path, lines, key,
                        fix=f"{did_you_mean(key, allowed)}allowed keys: {', '.join(allowed)}")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise _fail("name must be a non-empty string", path, lines, "name", fix="quote it")
    for key in ("description", "model"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise _fail(f"{key} must be a string", path, lines, key, fix="quote it")
    return name


def _known_metric(name: Any) -> bool:
    return isinstance(name, str) and builtin(name) is not None


def check_metrics(raw: Any, path: Path, lines: LineMap, output: OutputSpec, *,
                  type_key: str = "output.type", target: str = "prompt"
                  ) -> tuple[tuple[str, ...], tuple[Metric, ...]]:
    """The metric names of `metrics:`, and the configured metrics among them (mappings), for
    a file of kind `target` (prompt, pipeline, agent)."""
    if not isinstance(raw, list) or not raw:
        raise _fail("metrics must be a non-empty list", path, lines, "metrics",
                    fix="e.g. metrics: [exact_match, format_validity]")
    names: list[str] = []
    configured: list[Metric] = []
    for i, entry in enumerate(raw):
        if isinstance(entry, dict):
            kind_names = [k for k in entry if k in kinds()]
            others = [k for k in entry if k not in kinds() and k != "name"]
            if len(kind_names) != 1 or others:
                raise _fail(f"metrics[{i}] must have a name and exactly one of "
                            f"{', '.join(kinds()) or 'llm_judge, similarity, custom'}", path, lines,
                            "metrics", i, fix="e.g. - name: faithful\n    llm_judge: {prompt: "
                            "../judges/faithful.yaml}")
            name = entry.get("name")
            if not isinstance(name, str) or not name.isidentifier():
                raise _fail(f"metrics[{i}] needs a name made of letters, digits and underscores",
                            path, lines, "metrics", i, fix="add name: my_metric")
            if builtin(name) is not None:
                raise _fail(f"metric name {name!r} is a built-in metric's", path, lines, "metrics",
                            i, "name", fix="choose another name")
            if name == TOOL_CALLS_KEY:
                raise _fail(f"metric name {name!r} is reserved: rows keep their tool calls under "
                            "it", path, lines, "metrics", i, "name", fix="choose another name")
            kind = kinds()[kind_names[0]]

            def line_of(*keys: str | int, _i: int = i, _k: str = kind.name) -> int | None:
                return lines.line("metrics", _i, _k, *keys)

            metric = kind.build(name, entry[kind.name], path, line_of)
            configured.append(metric)
        elif isinstance(entry, str) and builtin(entry) is not None:
            name = entry
            metric = builtin(entry)  # type: ignore[assignment]
        else:
            error = unknown(entry)
            raise _fail(error.message, path, lines, "metrics", i, fix=error.fix or "")
        if name in names:
            raise _fail(f"metric {name!r} is listed twice", path, lines, "metrics", i,
                        fix="list each metric once")
        if metric.targets is not None and target not in metric.targets:
            allowed = " or ".join(sorted(metric.targets))
            raise _fail(f"metric {name} is scored only in {allowed} files (kind: {allowed}), not "
                        f"in a {target}'s", path, lines, "metrics", i,
                        fix=f"remove {name} from metrics")
        if metric.output_types is not None and output.type not in metric.output_types:
            needed = " or ".join(sorted(metric.output_types))
            raise _fail(f"metric {name} needs {type_key} {needed}", path, lines, "metrics", i,
                        fix=f"set {type_key}: {sorted(metric.output_types)[0]}"
                        + (" with output.labels, or use exact_match" if "label" in metric.output_types
                           else ""))
        names.append(name)
    return tuple(names), tuple(configured)


def _as_share(metric: Metric, value: float) -> str:
    """The fix for a value beyond a 0-to-1 metric's range that reads as a percentage."""
    if metric.value_range == (0.0, 1.0) and 1 < value <= 100:
        return f"write it as a share of 1: {value / 100:g} for {value:g}%"
    return ""


def _check_in_range(metric: Metric, key: str, value: float, path: Path, lines: LineMap) -> None:
    """A gate `metric: {min|max: value}` the metric can reach: inside its range."""
    lo, hi = metric.value_range
    if (lo is None or value >= lo) and (hi is None or value <= hi):
        return
    shown = metric.describe_range()
    raise _fail(f"threshold {metric.name}.{key} is {value:g}, which {metric.name} never is: it "
                f"goes {shown}", path, lines, "thresholds", metric.name, key,
                fix=_as_share(metric, value) or f"choose a {key} {shown}")


def _check_drop(metric: Metric, value: float, path: Path, lines: LineMap) -> None:
    """A `max_regression` limit below the largest drop the metric can make (its range's width):
    a larger limit lets any drop pass."""
    lo, hi = metric.value_range
    if lo is None or hi is None or value <= hi - lo:
        return
    raise _fail(f"max_regression for {metric.name} is {value:g}, but {metric.name} goes "
                f"{metric.describe_range()}: it can drop by {hi - lo:g} at most, so no drop "
                "would fail", path, lines, "thresholds", "max_regression", metric.name,
                fix=_as_share(metric, value) or f"choose a limit of at most {hi - lo:g}")


def _check_thresholds(raw: Any, path: Path, lines: LineMap, metrics: tuple[str, ...],
                      configured: Sequence[Metric] = ()) -> dict[str, Any]:
    """The `thresholds:` of a prompt or pipeline whose metrics are `metrics` (the configured
    ones among them: `configured`): each gate on a listed metric, within the values it can
    take."""
    objects = {m.name: m for m in configured}

    def metric_of(name: str) -> Metric | None:
        return objects.get(name) or builtin(name)

    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail("thresholds must be a mapping", path, lines, "thresholds",
                    fix="e.g. thresholds: {rmse: {max: 1.5}, max_regression: {exact_match: 0.02}}")
    for metric, gate in raw.items():
        if metric == "max_regression":
            if not isinstance(gate, dict):
                raise _fail("max_regression must map metric names to the largest allowed drop",
                            path, lines, "thresholds", metric, fix="e.g. max_regression: {exact_match: 0.02}")
            for m, v in gate.items():
                if m not in metrics and not _known_metric(m):
                    raise _fail(f"unknown metric {m!r} in max_regression", path, lines,
                                "thresholds", metric, m, fix=f"use one of: {', '.join(metrics)}")
                if m not in metrics:
                    raise _fail(f"max_regression names {m}, which is not in metrics", path, lines,
                                "thresholds", metric, m,
                                fix=f"add {m} to metrics (only listed metrics are computed)")
                if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                    raise _fail(f"max_regression for {m} must be a non-negative number", path,
                                lines, "thresholds", metric, m, fix="e.g. 0.02")
                found = metric_of(m)
                if found is not None:
                    _check_drop(found, v, path, lines)
            continue
        if metric not in metrics and not _known_metric(metric):
            hint = did_you_mean(metric, (*metrics, "max_regression"))
            raise _fail(f"unknown metric {metric!r} in thresholds", path, lines, "thresholds",
                        metric, fix=f"{hint}use one of: {', '.join(metrics)}, or max_regression")
        if metric not in metrics:
            raise _fail(f"threshold for {metric}, which is not in metrics", path, lines,
                        "thresholds", metric,
                        fix=f"add {metric} to metrics (only listed metrics are computed), "
                        "or remove the threshold")
        if not isinstance(gate, dict) or not gate or any(k not in GATE_KEYS for k in gate):
            raise _fail(f"threshold for {metric} must be {{min: N}} and/or {{max: N}}", path, lines,
                        "thresholds", metric, fix=f"e.g. {metric}: {{min: 0.9}}")
        for k, v in gate.items():
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise _fail(f"threshold {metric}.{k} must be a number", path, lines,
                            "thresholds", metric, k, fix="write a number")
            found = metric_of(metric)
            if found is not None:
                _check_in_range(found, k, v, path, lines)
        if "min" in gate and "max" in gate and gate["min"] > gate["max"]:
            raise _fail(f"threshold {metric} has min {gate['min']:g} above max {gate['max']:g}: "
                        "no value passes", path, lines, "thresholds", metric, "min",
                        fix="swap them, or drop one")
    return dict(raw)


def _check_output(raw: Any, path: Path, lines: LineMap) -> OutputSpec:
    if raw is None:
        return OutputSpec()
    if not isinstance(raw, dict):
        raise _fail("output must be a mapping", path, lines, "output",
                    fix="give output: {pattern: ..., type: number}")
    for key in raw:
        if key not in OUTPUT_KEYS:
            raise _fail(f"unknown key {quote(key)} in output", path, lines, "output", key,
                        fix=f"{did_you_mean(key, OUTPUT_KEYS)}use one of: {', '.join(OUTPUT_KEYS)}")
    pattern = raw.get("pattern")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise _fail("output.pattern must be a string", path, lines, "output", "pattern",
                        fix="quote the regular expression with single quotes")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _fail(f"output.pattern does not compile: {exc}", path, lines, "output",
                        "pattern", fix="fix the regular expression (in YAML, single quotes keep "
                        "backslashes as they are)") from None
    otype = raw.get("type", "string")
    if otype not in OUTPUT_TYPES:
        raise _fail(f"unknown output.type {quote(otype)}", path, lines, "output", "type",
                    fix=f"use one of: {', '.join(OUTPUT_TYPES)}")
    if otype in TOOL_OUTPUT_TYPES and pattern is not None:
        raise _fail(f"output.pattern is not used with type: {otype} (the answer is the call, "
                    "not text)", path, lines, "output", "pattern", fix="remove pattern")
    labels = raw.get("labels")
    if labels is None:
        labels = []
    if not isinstance(labels, list) or not all(
            isinstance(x, str | int) and not isinstance(x, bool) for x in labels):
        raise _fail("output.labels must be a list of strings", path, lines, "output", "labels",
                    fix="e.g. labels: [billing, technical]")
    if otype == "label" and not labels:
        raise _fail("output.type label needs output.labels", path, lines, "output", "type",
                    fix="list the allowed labels: labels: [a, b, c]")
    if otype != "label" and labels:
        raise _fail("output.labels is only used with type: label", path, lines, "output", "labels",
                    fix="set type: label or remove labels")
    schema = raw.get("json_schema")
    if schema is not None:
        if not isinstance(schema, dict):
            raise _fail("output.json_schema must be a mapping (a JSON Schema)", path, lines,
                        "output", "json_schema", fix="write the schema as YAML")
        schema = schema or None  # {} is "no schema", as in the documented template
    if schema is not None:
        if otype != "json":
            raise _fail("output.json_schema is only used with type: json", path, lines, "output",
                        "json_schema", fix="set type: json or remove json_schema")
        import jsonschema

        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise _fail(f"output.json_schema is not a valid JSON Schema: {exc.message[:120]}", path,
                        lines, "output", "json_schema", fix="fix the schema") from None
    return OutputSpec(pattern=pattern, type=otype, labels=tuple(str(x) for x in labels),
                      json_schema=schema)


def check_tools(raw: Any, path: Path, lines: LineMap) -> tuple[Tool, ...]:
    """The `tools:` of a prompt file: OpenAI function tools, each a name, a description and
    the JSON Schema of its arguments, which must itself be a valid schema of an object."""
    if raw is None:
        return ()
    example = ("e.g. tools: [{name: refund, description: Refund an order., parameters: "
               "{type: object, properties: {order_id: {type: string}}, required: [order_id]}}]")
    if not isinstance(raw, list) or not raw:
        raise _fail("tools must be a non-empty list of {name, description, parameters}", path,
                    lines, "tools", fix=example)
    tools: list[Tool] = []
    first_line: dict[str, int | None] = {}
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise _fail(f"tools[{i}] must be a mapping with name and parameters", path, lines,
                        "tools", i, fix=example)
        for key in entry:
            if key not in TOOL_KEYS:
                hint = ("write the function's own keys (name, description, parameters) "
                        "without type: function" if key in ("type", "function")
                        else f"use only: {', '.join(TOOL_KEYS)}")
                raise _fail(f"unknown key {quote(key)} in tools[{i}]", path, lines, "tools", i,
                            key, fix=hint)
        name = entry.get("name")
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
            raise _fail(f"tools[{i}] needs a name of letters, digits, _ and - (at most 64), not "
                        f"{quote(name)}", path, lines, "tools", i,
                        *(("name",) if "name" in entry else ()), fix="e.g. name: refund_order")
        if name in first_line:
            raise _fail(f"tool {name!r} is declared twice (first at line {first_line[name]})", path,
                        lines, "tools", i, "name", fix="give every tool its own name")
        first_line[name] = lines.line("tools", i, "name")
        description = entry.get("description")
        if description is not None and not isinstance(description, str):
            raise _fail(f"the description of tool {name} must be a string", path, lines, "tools", i,
                        "description", fix="quote it")
        strict = entry.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise _fail(f"strict of tool {name} must be true or false", path, lines, "tools", i,
                        "strict", fix="strict: true")
        tools.append(Tool(name=name, parameters=_check_parameters(entry, name, i, path, lines),
                          description=description, strict=strict))
    return tuple(tools)


def _check_parameters(entry: dict[Any, Any], name: str, i: int, path: Path,
                      lines: LineMap) -> dict[str, Any]:
    """A tool's `parameters`: a valid JSON Schema (of the draft its `$schema` names, else
    2020-12) of an object."""
    fix = "e.g. parameters: {type: object, properties: {order_id: {type: string}}}"
    if "parameters" not in entry:
        raise _fail(f"tool {name} needs parameters: the JSON Schema of its arguments", path, lines,
                    "tools", i, fix=fix + " (a tool without arguments: {type: object, "
                    "properties: {}})")
    schema = entry["parameters"]
    if not isinstance(schema, dict):
        raise _fail(f"the parameters of tool {name} must be a mapping (a JSON Schema)", path,
                    lines, "tools", i, "parameters", fix=fix)
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise _fail(f"the parameters of tool {name} are not a valid JSON Schema"
                    + (f" at {where}" if where else "") + f": {exc.message[:160]}", path, lines,
                    "tools", i, "parameters", *exc.path,
                    fix="fix the schema (JSON Schema 2020-12, unless its $schema names another "
                    "draft)") from None
    if schema.get("type") != "object":
        raise _fail(f"the parameters of tool {name} must describe an object (type: object)", path,
                    lines, "tools", i, "parameters", *(("type",) if "type" in schema else ()),
                    fix="the arguments are a JSON object: " + fix)
    return schema


def check_tool_choice(params: dict[str, Any], tools: Sequence[Tool], path: Path,
                      lines: LineMap) -> None:
    """`params.tool_choice`: auto, none, required, or one declared tool by name."""
    if "tools" in params:
        raise _fail("params.tools is set by promptctl from tools:", path, lines, "params", "tools",
                    fix="move the tools to the top-level tools: key (each a name, description "
                    "and parameters)")
    if "tool_choice" not in params:
        return
    choice = params["tool_choice"]
    names = [t.name for t in tools]
    if not tools:
        raise _fail("params.tool_choice needs tools: to choose from", path, lines, "params",
                    "tool_choice", fix="declare the tools under tools:, or remove tool_choice")
    if isinstance(choice, str) and choice in TOOL_CHOICES:
        return
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(choice, dict) and set(choice) == {"type", "function"} and \
            choice["type"] == "function" and isinstance(function, dict) and \
            set(function) == {"name"} and isinstance(function["name"], str):
        if function["name"] not in names:
            raise _fail(f"params.tool_choice names tool {function['name']!r}, which tools: does "
                        "not declare", path, lines, "params", "tool_choice",
                        fix=f"name one of: {', '.join(names)}")
        return
    raise _fail(f"params.tool_choice must be auto, none, required or one tool, not {quote(choice)}",
                path, lines, "params", "tool_choice",
                fix=f"e.g. tool_choice: {{type: function, function: {{name: {names[0]}}}}}")


def _json_text(value: Any, limit: int = 60) -> str:
    """A value of an eval set as JSON, cut at `limit` characters."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


def _expected_call_problem(value: Any, names: Sequence[str]) -> str | None:
    """Why `value` is not an expected call `{name: TOOL, arguments: {...}}`, or None."""
    if not isinstance(value, dict):
        return f"is {_json_text(value)}, not a mapping {{name, arguments}}"
    unknown_keys = [k for k in value if k not in ("name", "arguments")]
    if unknown_keys:
        return f"has unknown key {quote(unknown_keys[0])} (a call has name and arguments)"
    name = value.get("name")
    if not isinstance(name, str):
        return "needs name: the tool the model should call"
    if name not in names:
        return f"names tool {name!r}, which the prompt's tools: does not declare"
    if "arguments" in value and not isinstance(value["arguments"], dict):
        return "has arguments that are not a mapping (the call's arguments as a JSON object)"
    return None


def check_expected_calls(prompt: Prompt, rows: Iterable[Row], evalset_path: Path) -> None:
    """With a tool call output, each row's and few-shot example's `expected` is the call it
    expects: `tool_call` null (no call) or {name, arguments?}; `tool_calls` a list of those
    (empty: no call). An error names the eval set line (a few-shot example: the prompt's)."""
    otype = prompt.output.type
    if otype not in TOOL_OUTPUT_TYPES:
        return
    names = [t.name for t in prompt.tools]
    shape = ("null (no call) or {name: TOOL, arguments: {...}}" if otype == "tool_call"
             else "a list of {name: TOOL, arguments: {...}}, [] for no call")
    groups = (((prompt.path, "few-shot example"), prompt.examples),
              ((evalset_path, "row"), rows))
    for (file, what), group in groups:
        for row in group:
            if not row.has_expected:
                continue
            expected = row.expected
            problem: str | None = None
            if otype == "tool_call":
                if expected is not None and (p := _expected_call_problem(expected, names)):
                    problem = f"expected {p}"
            elif not isinstance(expected, list):
                problem = f"expected is {_json_text(expected)}, not a list of calls"
            else:
                problem = next((f"expected call {n + 1} {p}" for n, e in enumerate(expected)
                                if (p := _expected_call_problem(e, names)) is not None), None)
            if problem is not None:
                raise InputError(f"{what} {quote(row.id)}: {problem}", file=file, line=row.line,
                                 fix=f"output.type {otype} expects {shape}")


def _check_messages(raw: Any, path: Path, lines: LineMap) -> tuple[Message, ...]:
    if not isinstance(raw, list) or not raw:
        raise _fail("messages must be a non-empty list of {role, content}", path, lines,
                    "messages", fix="add messages: - role: user / content: '{{ text }}'")
    out = []
    for i, m in enumerate(raw):
        line = lines.line("messages", i)
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise InputError(f"messages[{i}] must have exactly the keys role and content",
                             file=path, line=line, fix="write - role: user / content: ...")
        if not isinstance(m["role"], str) or m["role"] not in ROLES:
            raise InputError(f"messages[{i}] has unknown role {quote(m['role'])}", file=path,
                             line=lines.line("messages", i, "role"), fix=f"use one of: {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise InputError(f"messages[{i}].content must be a string", file=path,
                             line=lines.line("messages", i, "content"), fix="quote the content")
        out.append(Message(role=m["role"], content=m["content"],
                           line=lines.line("messages", i, "content"),
                           text_line=lines.text_line("messages", i, "content"),
                           literal=lines.style("messages", i, "content") == "|"))
    return tuple(out)


def parse_prompt(data: bytes, path: Path, root: Path | None = None) -> Prompt:
    """Validate prompt file bytes; `path` locates it and resolves its relative evalset, which
    must lie inside `root` (by default the project root of `path`)."""
    text = decode_utf8(data, path)
    raw, lines = load_yaml_text(text, path)
    if not isinstance(raw, dict):
        raise InputError("a prompt file must be a YAML mapping", file=path, line=lines.line(),
                         fix="see the prompt format in the README (messages, output, metrics...)")
    name = check_header(raw, path, lines, PROMPT_KEYS)
    params = check_params(raw, path, lines)
    tools = check_tools(raw.get("tools"), path, lines)
    check_tool_choice(params, tools, path, lines)
    examples_raw = raw.get("examples")
    if examples_raw is None:
        examples_raw = []
    if not isinstance(examples_raw, list):
        raise _fail("examples must be a list of rows", path, lines, "examples",
                    fix="- input: {text: ...} / expected: ...")
    examples = tuple(make_row({"id": f"ex{i + 1}", **e} if isinstance(e, dict) and "id" not in e else e,
                              i + 1, path, lines.line("examples", i), what="example")
                     for i, e in enumerate(examples_raw))
    example_lines: dict[str, int | None] = {}
    for ex in examples:
        if ex.id in example_lines:
            raise InputError(f"duplicate example id {quote(ex.id)} (first at line {example_lines[ex.id]})",
                             file=path, line=ex.line, fix="give every example a unique id")
        example_lines[ex.id] = ex.line
    output = _check_output(raw.get("output"), path, lines)
    if output.reads_calls and not tools:
        raise _fail(f"output.type {output.type} needs tools: the functions the model may call",
                    path, lines, "output", "type",
                    fix="declare them: tools: [{name: NAME, description: ..., parameters: "
                    "{type: object, properties: {...}}}]")
    output = dataclasses.replace(output, tools=tools)
    metrics, configured = check_metrics(raw.get("metrics", ["format_validity"]), path, lines, output)
    evalset = raw.get("evalset")
    if evalset is not None and (not isinstance(evalset, str) or not evalset.strip()):
        raise _fail("evalset must be a path string", path, lines, "evalset",
                    fix="e.g. evalset: ../evalsets/NAME.jsonl")
    prompt = Prompt(
        path=path,
        name=name,
        version=inputs_version(hashlib.sha256(data).hexdigest(),
                               [f for m in configured for f in m.files], root or project_root(path)),
        source=text,
        messages=_check_messages(raw.get("messages"), path, lines),
        description=raw.get("description") or "",
        model=raw.get("model"),
        params=dict(params),
        tools=tools,
        examples=examples,
        output=output,
        metrics=metrics,
        configured_metrics=configured,
        evalset=(path.parent / evalset) if evalset else None,
        thresholds=_check_thresholds(raw.get("thresholds"), path, lines, metrics, configured),
        evalset_line=lines.line("evalset") if evalset else None,
        root=root,
    )
    _ = prompt._templates  # compile now so syntax errors surface at load time
    return prompt


def inputs_version(own_sha: str, files: Iterable[Path], root: Path) -> str:
    """A version that changes when the file or any file its results depend on (a judge
    prompt, a scorer) changes: the file's own sha256 when it names none, else a sha256 over
    it and each such file's path and sha256."""
    parts = []
    for f in unique_paths(list(files)):
        try:
            digest = hashlib.sha256(read_file(f, what="file", max_bytes=MAX_PROMPT_BYTES,
                                              root=root)).hexdigest()
        except InputError:
            digest = "unreadable"  # loading the metric says why, naming the line
        rel = Path(os.path.abspath(f)).relative_to(os.path.abspath(root)).as_posix() \
            if Path(os.path.abspath(f)).is_relative_to(os.path.abspath(root)) else f.as_posix()
        parts.append(f"{rel}\0{digest}\n")
    if not parts:
        return own_sha
    return hashlib.sha256(f"{own_sha}\n{''.join(sorted(parts))}".encode()).hexdigest()


def declares_kind(data: bytes, kind: str) -> bool:
    """Whether file bytes declare `kind: KIND` (a pipeline's, an agent's: a cheap look before
    parsing)."""
    pattern = rb"(?m)^kind:\s*['\"]?" + re.escape(kind.encode()) + rb"['\"]?\s*(#.*)?$"
    return re.search(pattern, data) is not None


def file_declares_kind(path: Path, kind: str) -> bool:
    """`declares_kind` of the file at `path` (False when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return declares_kind(f.read(MAX_PROMPT_BYTES + 1), kind)
    except OSError:
        return False


def check_params(raw: Mapping[str, Any], path: Path, lines: LineMap) -> dict[str, Any]:
    """A file's `params:` (a prompt's, an agent's): a mapping whose numeric keys hold numbers,
    without the keys promptctl sets itself."""
    params = raw.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise _fail("params must be a mapping", path, lines, "params",
                    fix="e.g. params: {temperature: 0, max_tokens: 64}")
    for key, value in params.items():
        kind = _PARAM_TYPES.get(key)
        if kind is None or value is None:
            continue
        ok = not isinstance(value, bool) and (
            isinstance(value, int | float) if kind == "number" else isinstance(value, int))
        if not ok:
            raise _fail(f"params.{key} must be {'a number' if kind == 'number' else 'an integer'}, "
                        f"not {quote(value)}", path, lines, "params", key,
                        fix=f"e.g. {key}: {'0' if kind == 'number' else '64'}")
    for key in ("model", "messages", "stream"):
        if key in params:
            raise _fail(f"params.{key} is set by promptctl", path, lines, "params", key,
                        fix=f"remove params.{key}" + (" and use model: or --model" if key == "model" else ""))
    return params


def load_prompt(path: str | Path, root: Path | None = None, *, ref: Reference | None = None) -> Prompt:
    """Load and validate a prompt file.

    `root` is the project root (by default the git work tree containing the file,
    else the current directory); the files the prompt names must lie inside it. The
    file itself may be anywhere when named from outside the project (on the command
    line), but a path inside the project may not lead out of it by a symbolic link;
    with `ref` (a prompt another project file names) it must lie inside.
    """
    p = Path(path)
    root = Path(root) if root is not None else project_root(p)
    data = read_target_file(p, root, what="prompt file", ref=ref)
    return parse_prompt(data, p, root)


register_prompt_loader(load_prompt)
