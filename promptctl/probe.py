"""`promptctl probe`: does the prompt give the answers a model thinks it should?

For each value asked (`--label`), a generator prompt asks a model for inputs the prompt
should answer with that value; the inputs are then evaluated through the prompt. The share
answered with the value is the label's round-trip agreement. Both steps are ordinary runs
of the one engine (cached, retried, concurrent, stored); both are marked as probe runs in
their options, so that neither stands for a prompt version in `history`, `diff` or `check`
(see `runs.stands_for_version`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptctl.config import Config
from promptctl.engine import EvalOptions, ProgressFn, run_eval
from promptctl.errors import InputError, display_path
from promptctl.evalsets import EvalSet, Row, load_evalset, make_row
from promptctl.gitinfo import git_state
from promptctl.metrics.aggregates import share
from promptctl.project import check_belongs
from promptctl.prompts import Prompt, load_prompt, parse_prompt
from promptctl.providers import resolve_model
from promptctl.results import ProbeProblem, ProbeResult, SavedRows
from promptctl.runs import read_run
from promptctl.scoring import equals, numeric
from promptctl.store import Store
from promptctl.target import load_target, model_of
from promptctl.templates import environment

GENERATOR_PROMPT = Path(__file__).with_name("probe_generator.yaml")
# The output types whose answers can be compared with a value given on the command line.
PROBE_TYPES = ("label", "integer", "number", "string")
# Bounds on what the command line may ask: beyond them a value is a typo.
MAX_INPUTS = 1000
MAX_LABELS = 100
# How a probe run's eval set and its generator's are named in the store (they are made in
# memory, not read from a file).
PROBE_SET = "probe:"
GENERATOR_SET = "probe-generator:"

SayFn = Callable[[str], None]


# --- the values asked for ---------------------------------------------------------------------


def label_value(text: str, prompt: Prompt) -> Any:
    """`--label TEXT` as a value of the prompt's output type (a label as the prompt spells
    it), or an error naming the option and the prompt's output."""
    out = prompt.output
    if out.type == "label":
        for label in out.labels:
            if label.casefold() == text.strip().casefold():
                return label
        if out.labels:
            raise InputError(f"--label {text!r} is not one of the prompt's labels "
                             f"({', '.join(out.labels)})", file=prompt.path,
                             fix="pass one of the labels under output: labels:")
        return text.strip()
    if out.type in ("integer", "number"):
        value = numeric(text.strip())
        if value is None or not math.isfinite(value):
            raise InputError(f"--label {text!r} is not a number, and the prompt's output is "
                             f"type: {out.type}", file=prompt.path, fix="pass a number, e.g. --label 7")
        if out.type == "integer" and value != int(value):
            raise InputError(f"--label {text!r} is not an integer, and the prompt's output is "
                             "type: integer", file=prompt.path, fix="pass a whole number")
        return int(value) if value == int(value) else value
    return text


def check_probe_prompt(prompt: Prompt) -> None:
    """A prompt whose answers a value can be compared with: label, integer, number, string."""
    if prompt.output.type not in PROBE_TYPES:
        raise InputError(f"probe compares answers with the values given as --label, and this "
                         f"prompt's output is type: {prompt.output.type}", file=prompt.path,
                         fix=f"probe a prompt whose output type is one of {', '.join(PROBE_TYPES)}")


def input_variables(prompt: Prompt) -> list[str]:
    """The variables the prompt's templates take from a row (not its few-shot examples)."""
    from jinja2 import meta

    names: set[str] = set()
    for message in prompt.messages:
        names |= meta.find_undeclared_variables(environment().parse(message.content))
    names.discard("examples")
    return sorted(names)


def prompt_text(prompt: Prompt, variables: Sequence[str]) -> str:
    """The prompt as the generator is shown it: its messages rendered with each input
    variable written as {name} (few-shot examples filled in), else its raw templates."""
    try:
        messages = prompt.render({v: "{" + v + "}" for v in variables})
    except InputError:  # a template that needs a variable to be more than text
        messages = [{"role": m.role, "content": m.content} for m in prompt.messages]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


# --- reading the generator's answer -------------------------------------------------------------

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)


def _json_items(text: str) -> tuple[list[Any], str | None]:
    """The items of the first JSON list in `text` (in a code fence, or among prose), read
    one by one so that a list cut short (the answer hit max_tokens) still gives its complete
    items; and what was wrong, if anything."""
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced is not None and "[" in fenced.group(1) else text
    start = body.find("[")
    if start < 0:
        return [], "the answer holds no JSON list"
    decoder = json.JSONDecoder()
    items: list[Any] = []
    pos = start + 1
    while True:
        while pos < len(body) and (body[pos].isspace() or body[pos] == ","):
            pos += 1
        if pos >= len(body):
            return items, f"the JSON list is cut short after {len(items)} item(s)"
        if body[pos] == "]":
            return items, None
        try:
            item, pos = decoder.raw_decode(body, pos)
        except json.JSONDecodeError as exc:
            if "]" not in body[pos:]:  # the answer stopped mid-item (it hit max_tokens)
                return items, f"the JSON list is cut short after {len(items)} item(s)"
            return items, f"the JSON list is malformed after {len(items)} item(s) ({exc.msg})"
        items.append(item)


# A line of a numbered or bulleted list: "1. text", "2) text", "- text", "* text".
_LISTED = re.compile(r"^[ \t]*(?:\d{1,3}[.)]|[-*•])[ \t]+(\S.*?)[ \t]*$", re.MULTILINE)


def _as_input(item: Any, variables: Sequence[str]) -> dict[str, Any] | str:
    """One generated item as a row's input, or why it cannot be one."""
    if isinstance(item, str) and len(variables) == 1:
        item = {variables[0]: item}
    elif isinstance(item, dict) and len(variables) == 1 and variables[0] not in item \
            and len(item) == 1:
        # One input under another key ({"input": "..."}): the model's name for it.
        item = {variables[0]: next(iter(item.values()))}
    if not isinstance(item, dict):
        want = "a string or an object" if len(variables) == 1 else "an object"
        return f"is {type(item).__name__ if item is not None else 'null'}, not {want}"
    missing = [v for v in variables if v not in item]
    if missing:
        return f"lacks {', '.join(missing)}"
    out: dict[str, Any] = {}
    for name in variables:
        value = item[name]
        if isinstance(value, str) and not value.strip():
            return f"has an empty {name}"
        if value is None:
            return f"has no value for {name}"
        out[name] = value
    return out


def _unquoted(item: str) -> str:
    item = item.strip()
    return item[1:-1].strip() if len(item) > 1 and item[0] == item[-1] and item[0] in "\"'" else item


def parse_inputs(text: str, variables: Sequence[str], n: int) -> tuple[list[dict[str, Any]], list[str]]:
    """The first `n` distinct inputs in a generator's answer, and what was wrong with the
    rest: a JSON list of objects keyed by the input variables or, for one variable, of
    strings; code fences and prose around the list are tolerated."""
    items, trouble = _json_items(text)
    if not items and len(variables) == 1:
        # Small models often write a numbered or bulleted list instead of JSON.
        listed = [_unquoted(m.group(1)) for m in _LISTED.finditer(text)]
        if listed:
            items, trouble = listed, (f"no JSON list: {len(listed)} item(s) read from a "
                                      "numbered or bulleted list")
    problems = [trouble] if trouble else []
    inputs: list[dict[str, Any]] = []
    seen: set[str] = set()
    repeats = 0
    for number, item in enumerate(items, start=1):
        made = _as_input(item, variables)
        if isinstance(made, str):
            problems.append(f"item {number} {made}")
            continue
        key = json.dumps(made, sort_keys=True, ensure_ascii=False)
        if key in seen:
            repeats += 1  # counted, not listed: a looping model repeats one input many times
            continue
        seen.add(key)
        if len(inputs) < n:
            inputs.append(made)
    if repeats:
        problems.append(f"{repeats} item(s) repeat an earlier one")
    return inputs, problems


# --- the targets: the prompt, marked as a probe's --------------------------------------------


@dataclass(frozen=True)
class ProbeFacts:
    """What a probe run records about its labels: the values, how many inputs each asked
    for and got, the tolerance, and where the inputs came from."""

    labels: tuple[Any, ...]
    requested: int
    generated: tuple[int, ...]
    tolerance: float | None
    generator: str
    generator_run: str | None

    def to_json(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "requested": self.requested,
                "generated": list(self.generated), "tolerance": self.tolerance,
                "generator": self.generator, "generator_run": self.generator_run}


def row_id(label_index: int, number: int) -> str:
    """The id of the `number`th input of the `label_index`th label (both from 0)."""
    return f"label{label_index + 1}-{number + 1}"


def _label_index(row: str) -> int | None:
    head = row.partition("-")[0]
    return int(head[5:]) - 1 if head.startswith("label") and head[5:].isdigit() else None


def agrees(answer: Any, label: Any, tolerance: float | None) -> bool:
    """Whether an answer is the label: within `tolerance` for numbers, else as exact_match
    compares (numbers as numbers, text stripped and case-folded)."""
    if tolerance is not None:
        a, b = numeric(answer), numeric(label)
        if a is not None and b is not None:
            return abs(a - b) <= tolerance + 1e-12
    return equals(answer, label)


def label_summary(rows: Iterable[Mapping[str, Any]], facts: ProbeFacts) -> dict[str, Any]:
    """Each label's agreement (share of its answered inputs answered with it, with its
    interval as metrics compute one), its failed requests and the other answers."""
    groups: dict[int, list[Mapping[str, Any]]] = {i: [] for i in range(len(facts.labels))}
    for row in rows:
        index = _label_index(str(row.get("row_id")))
        if index in groups:
            groups[index].append(row)
    out = []
    for index, label in enumerate(facts.labels):
        answered = [r for r in groups[index] if r.get("error") is None]
        hits = [bool(r.get("valid")) and agrees(r.get("answer"), label, facts.tolerance)
                for r in answered]
        others: Counter[str] = Counter()
        values: dict[str, Any] = {}
        for row, hit in zip(answered, hits, strict=True):
            if not hit:
                answer = row.get("answer") if row.get("valid") else None
                key = json.dumps(answer, sort_keys=True, ensure_ascii=False)
                values[key] = answer
                others[key] += 1
        out.append({
            "label": label, "requested": facts.requested, "generated": facts.generated[index],
            "agreement": share([1.0 if h else 0.0 for h in hits]), "hits": sum(hits),
            "errors": len(groups[index]) - len(answered),
            "others": [{"answer": values[k], "count": c}
                       for k, c in sorted(others.items(), key=lambda kc: (-kc[1], kc[0]))]})
    return {"generator": facts.generator, "generator_run": facts.generator_run,
            "tolerance": facts.tolerance, "labels": out}


@dataclass(frozen=True)
class ProbeTarget(Prompt):
    """A prompt run for a probe: as the prompt itself in every request, but its run is
    marked as a probe's (`probe` in its options), and the probed prompt's summary adds each
    label's agreement."""

    marker: Mapping[str, Any] = field(default_factory=dict)
    facts: ProbeFacts | None = None

    @classmethod
    def of(cls, prompt: Prompt, marker: Mapping[str, Any],
           facts: ProbeFacts | None = None) -> ProbeTarget:
        own = {f.name: getattr(prompt, f.name) for f in dataclasses.fields(Prompt)}
        return cls(**own, marker=marker, facts=facts)

    def run_options(self) -> dict[str, Any]:
        return {**super().run_options(), "probe": dict(self.marker)}

    def summary_extra(self, rows: Callable[[], Iterable[Mapping[str, Any]]]) -> dict[str, Any]:
        if self.facts is None:
            return super().summary_extra(rows)
        return {"summary": {"probe": label_summary(rows(), self.facts)}}


# --- the probe ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeRequest:
    """What `promptctl probe` was asked."""

    path: Path
    labels: tuple[str, ...]
    n: int = 10
    model: str | None = None
    generator: str | None = None
    generator_prompt: Path | None = None
    tolerance: float | None = None
    save: Path | None = None


def _check_request(request: ProbeRequest, prompt: Prompt) -> tuple[Any, ...]:
    if not request.labels:
        raise InputError("no --label given", fix="name the answer to probe, e.g. --label 9")
    if len(request.labels) > MAX_LABELS:
        raise InputError(f"--label given {len(request.labels)} times, more than {MAX_LABELS}",
                         fix="probe fewer labels at a time")
    if not 1 <= request.n <= MAX_INPUTS:
        raise InputError(f"-n {request.n} is out of range", fix=f"pass -n from 1 to {MAX_INPUTS}")
    check_probe_prompt(prompt)
    if request.tolerance is not None:
        if prompt.output.type not in ("integer", "number"):
            raise InputError(f"--tolerance applies to number and integer outputs, and this "
                             f"prompt's output is type: {prompt.output.type}", file=prompt.path,
                             fix="drop --tolerance")
        if not math.isfinite(request.tolerance) or request.tolerance < 0:
            raise InputError(f"--tolerance {request.tolerance} must be a number of 0 or more",
                             fix="e.g. --tolerance 1")
    values = tuple(label_value(text, prompt) for text in request.labels)
    for i, value in enumerate(values):
        for earlier in values[:i]:
            if agrees(value, earlier, None):
                raise InputError(f"--label {request.labels[i]!r} is given twice",
                                 fix="name each label once")
    if request.save is not None and request.save.suffix.lower() != ".jsonl":
        raise InputError("--save appends to a JSON Lines eval set", file=request.save,
                         fix="name a .jsonl file, e.g. --save evalsets/NAME_probe.jsonl")
    return values


def _generator_prompt(request: ProbeRequest, config: Config) -> Prompt:
    if request.generator_prompt is None:
        return parse_prompt(GENERATOR_PROMPT.read_bytes(), GENERATOR_PROMPT)
    return load_prompt(request.generator_prompt, config.root)


def _in_memory(path: Path, rows: Sequence[Row]) -> EvalSet:
    """An eval set made here rather than read from a file, versioned by its rows."""
    data = json.dumps([r.to_dict() for r in rows], sort_keys=True, ensure_ascii=False)
    return EvalSet(path=path, version=hashlib.sha256(data.encode("utf-8")).hexdigest(), rows=rows)


def generate(prompt: Prompt, values: Sequence[Any], request: ProbeRequest, *, store: Store,
             config: Config, options: EvalOptions, progress: ProgressFn | None = None,
             on_start: Callable[[str], None] | None = None
             ) -> tuple[str, str, list[list[dict[str, Any]]], list[ProbeProblem]]:
    """Ask the generator for `request.n` inputs per value, in one run of the generator
    prompt (one row per value). Returns the generator model, its run id, the inputs per
    value and what was wrong with the answers."""
    variables = input_variables(prompt)
    if not variables:
        raise InputError("the prompt takes no input variables: there is nothing to generate",
                         file=prompt.path, fix="probe a prompt whose messages use a row's input")
    gen = _generator_prompt(request, config)
    spec = request.generator or (gen.model if request.generator_prompt is not None else None) \
        or model_of(prompt, request.model)
    shown = prompt_text(prompt, variables)
    where = config.root / f"{GENERATOR_SET}{prompt.name}"
    rows = [make_row({"id": f"label{i + 1}",
                      "input": {"prompt_text": shown, "variables": variables,
                                "output_type": prompt.output.type,
                                "labels": list(prompt.output.labels), "value": value,
                                "n": request.n}}, i + 1, where, None)
            for i, value in enumerate(values)]
    target = ProbeTarget.of(gen, {"generator_for": prompt.name})
    run = run_eval(target, resolve_model(spec, config), store=store, config=config,
                   evalset=_in_memory(where, rows), options=options, progress=progress,
                   on_start=on_start, git=git_state(prompt.path, target.files))
    answers = {r["row_id"]: r for r in store.iter_rows(run["id"], kind="eval")}
    found: list[list[dict[str, Any]]] = []
    problems: list[ProbeProblem] = []
    for i, value in enumerate(values):
        row: Mapping[str, Any] = answers.get(f"label{i + 1}") or {}
        if row.get("error") is not None or row.get("completion") is None:
            why = row.get("error") or row.get("extract_error") or "no answer"
            problems.append(ProbeProblem(value, f"the generator's request failed: {why}"))
            found.append([])
            continue
        inputs, trouble = parse_inputs(str(row["completion"]), variables, request.n)
        problems.extend(ProbeProblem(value, t) for t in trouble)
        if len(inputs) < request.n:
            problems.append(ProbeProblem(value, f"{len(inputs)} of the {request.n} inputs asked "
                                         "for could be used"))
        found.append(inputs)
    return spec, str(run["id"]), found, problems


def probe(request: ProbeRequest, *, store: Store, config: Config,
          options: EvalOptions | None = None, progress: ProgressFn | None = None,
          on_start: Callable[[str], None] | None = None) -> ProbeResult:
    """Generate inputs per label, evaluate them through the prompt, report the agreement."""
    options = options or EvalOptions()
    check_belongs(request.path, config)
    prompt = load_target(request.path, config.root)
    if not isinstance(prompt, Prompt):
        raise InputError(f"probe takes a prompt file, not a {prompt.kind}", file=request.path,
                         fix="probe the prompts the pipeline or agent uses, one at a time")
    values = _check_request(request, prompt)
    resolved = resolve_model(model_of(prompt, request.model), config)
    spec, gen_run, inputs, problems = generate(prompt, values, request, store=store,
                                               config=config, options=options,
                                               progress=progress, on_start=on_start)
    where = config.root / f"{PROBE_SET}{prompt.name}"
    rows = [make_row({"id": row_id(i, j), "input": made, "expected": value}, 1, where, None)
            for i, (value, found) in enumerate(zip(values, inputs, strict=True))
            for j, made in enumerate(found)]
    if not rows:
        listed = "; ".join(f"{p.label}: {p.message}" for p in problems)
        raise InputError(f"the generator ({spec}) gave no usable input for any label ({listed})",
                         file=request.generator_prompt or prompt.path,
                         fix="try another model with --generator, or a generator prompt of "
                         "your own with --generator-prompt FILE; `promptctl show "
                         f"{gen_run}` shows what it wrote")
    facts = ProbeFacts(labels=values, requested=request.n,
                       generated=tuple(len(f) for f in inputs), tolerance=request.tolerance,
                       generator=spec, generator_run=gen_run)
    target = ProbeTarget.of(prompt, facts.to_json(), facts)
    record = run_eval(target, resolved, store=store, config=config,
                      evalset=_in_memory(where, rows), options=options, progress=progress,
                      on_start=on_start, git=git_state(prompt.path, prompt.files))
    run = read_run(record)
    if run.summary.probe is None:  # the summary is the probe target's own: always there
        raise InputError(f"run {run.id} holds no probe summary", fix="run the probe again")
    saved = save_rows(request.save, rows) if request.save is not None else None
    return ProbeResult(run=run, probe=run.summary.probe, problems=tuple(problems), saved=saved)


# --- --save -------------------------------------------------------------------------------------


def _saved_id(row: Row) -> str:
    """A stable id for a generated row: the same input and label always get the same one,
    so a second probe does not add it again."""
    data = json.dumps([row.input, row.expected], sort_keys=True, ensure_ascii=False)
    return "probe-" + hashlib.sha256(data.encode("utf-8")).hexdigest()[:12]


def _existing_ids(path: Path) -> set[str]:
    """Every row id of the eval set at `path` (reviewed or not), which must be valid."""
    evalset = load_evalset(path)  # names the file and line of anything malformed
    ids = {r.id for r in evalset}
    if evalset.unreviewed:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                raw = json.loads(line)
                ids.add(str(raw.get("id", number)))
    return ids


def save_rows(path: Path, rows: Sequence[Row]) -> SavedRows:
    """Append the generated rows to the JSONL eval set at `path`, each marked `source:
    probe` and `reviewed: false`: left out of every metric until a person has checked it."""
    existing = _existing_ids(path) if path.exists() else set()
    lines = []
    present = 0
    for row in rows:
        new_id = _saved_id(row)
        if new_id in existing:
            present += 1
            continue
        existing.add(new_id)
        lines.append(json.dumps({"id": new_id, "input": row.input, "expected": row.expected,
                                 "source": "probe", "reviewed": False}, ensure_ascii=False))
    if lines:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            before = path.read_bytes() if path.exists() else b""
            with open(path, "a", encoding="utf-8") as f:
                if before and not before.endswith(b"\n"):
                    f.write("\n")
                f.write("\n".join(lines) + "\n")
        except OSError as exc:
            raise InputError(f"cannot append to the eval set: {exc.strerror}", file=path,
                             fix="choose a writable path with --save") from None
    return SavedRows(display_path(path), len(lines), present)
