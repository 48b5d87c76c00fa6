"""`promptctl tune`: search for a better prompt within a budget, and prove it on rows the
search never saw.

The eval set is split once, by seed, into train (the few-shot pool), validation (to choose)
and test (evaluated once, at the end). Candidates are ordinary prompts: the original file
with other few-shot examples or another instruction, parsed by the prompt loader, so a
candidate's version is the hash of its content and its runs are stored and cached like any
other. Every evaluation goes through the one engine (`run_eval`).

The search follows DSPy's BootstrapFewShotWithRandomSearch for examples (the original
prompt is run on the pool first; examples it answers right are preferred; then a zero-shot
candidate, the bootstrapped set, and random subsets of random size by seed) and MIPROv2's
idea for instructions (the model proposes rewrites grounded on cases it got wrong, each
proposal with a different tip). It differs where DSPy leaves the user exposed: DSPy scores
candidates on the set it chose them on (its valset defaults to the trainset) and has no
spending limit. Here a budget is checked before every evaluation, counting only requests
the cache cannot answer, and it keeps back what the final test needs; each evaluation is
then held to what is left by an allowance that counts every HTTP attempt, retries included
(promptctl.allowance), so retries cannot pass the budget either. And the winner is compared
with the original on held-out rows by a paired test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from promptctl.allowance import Allowance
from promptctl.compare import compare_runs
from promptctl.config import Config
from promptctl.engine import EvalOptions, run_eval
from promptctl.engine.estimate import estimate
from promptctl.errors import InputError, did_you_mean
from promptctl.evalsets import EvalSet, Row, load_evalset
from promptctl.gitinfo import find_repo, git_state
from promptctl.metrics.registry import Metric
from promptctl.prompts import Prompt, load_prompt, parse_prompt
from promptctl.providers import ResolvedModel
from promptctl.results import (
    TuneCandidate,
    TuneEstimate,
    TuneResult,
    TuneSpend,
    TuneSplits,
    TuneTest,
)
from promptctl.store import Store
from promptctl.store.base import RunRecord
from promptctl.target import load_target, rel_in

STRATEGIES = ("fewshot", "instructions", "both")
DEFAULT_SEED = 0
# A paired test of a 0/1 metric (exact McNemar) counts only the rows that flipped; with d
# of them all in one direction its smallest two-sided p-value is 2 * 0.5**d, which is below
# 0.05 only from d = 6 (5 gives 0.0625). With fewer than 6 test rows no change, however
# large, can be shown, so tuning would be a search whose result can never be accepted.
MIN_TEST = 6
# Fewer validation rows than this cannot order candidates (every score a multiple of 1/2).
MIN_VALIDATION = 3
TEST_SHARE, VALIDATION_SHARE = 0.4, 0.3
MAX_EXAMPLES = 8
RANDOM_SETS = 8
PROPOSALS = 4
# One hint per proposal, as MIPROv2 varies its proposer by "tips", so that proposals at
# temperature 0 differ.
TIPS = ("", "Keep it short and direct.", "State exactly what the answer must look like.",
        "Name the mistakes the cases show and say how to avoid them.",
        "Explain the task as to a careful new colleague.", "Give a rule for hard cases.")
PROPOSER_FILE = Path(__file__).with_name("tune_proposer.yaml")
# Jinja syntax in a proposal would be run as a template: such a proposal is skipped.
_TEMPLATE_SYNTAX = re.compile(r"\{\{|\{%|\{#")
_TOP_KEY = re.compile(r"^([A-Za-z_][\w-]*)\s*:")


@dataclass(frozen=True)
class Budget:
    """At most `requests` requests the cache cannot answer, or `usd` dollars (worst case:
    every completion as long as max_tokens allows); None: no limit."""

    requests: int | None = None
    usd: float | None = None

    @property
    def limited(self) -> bool:
        return self.requests is not None or self.usd is not None


def parse_budget(text: str | None) -> Budget:
    """`200` (requests) or `$0.50` (dollars)."""
    if text is None:
        return Budget()
    raw = text.strip()
    fix = "give a number of requests (--budget 200) or dollars (--budget '$0.50')"
    if raw.startswith("$"):
        try:
            usd = float(raw[1:])
        except ValueError:
            raise InputError(f"--budget {text!r} is not an amount of dollars", fix=fix) from None
        if not math.isfinite(usd) or usd <= 0:
            raise InputError(f"--budget {text!r} must be more than $0", fix=fix)
        return Budget(usd=usd)
    if not raw.isdigit() or int(raw) <= 0:
        raise InputError(f"--budget {text!r} is not a number of requests", fix=fix)
    return Budget(requests=int(raw))


@dataclass(frozen=True)
class TuneOptions:
    strategy: str = "fewshot"
    seed: int = DEFAULT_SEED
    metric: str | None = None
    budget: Budget = field(default_factory=Budget)
    pool: Path | None = None
    proposer: Path | None = None
    resume: bool = False
    dry_run: bool = False
    concurrency: int | None = None
    # Seconds one attempt may take (a slow local model may need more than the default).
    timeout: float | None = None
    random_sets: int = RANDOM_SETS
    proposals: int = PROPOSALS


@dataclass(frozen=True)
class Splits:
    train: tuple[Row, ...]
    validation: tuple[Row, ...]
    test: tuple[Row, ...]


def split_rows(rows: Sequence[Row], seed: int, *, evalset: Path, has_pool: bool) -> Splits:
    """Train, validation and test, fixed by `seed`; refused when the test part would be too
    small to show any change."""
    n = len(rows)
    n_test = max(MIN_TEST, round(TEST_SHARE * n))
    n_val = max(MIN_VALIDATION, round(VALIDATION_SHARE * n))
    n_train = n - n_test - n_val
    least = MIN_TEST + MIN_VALIDATION + (0 if has_pool else 1)
    if n < least:
        raise InputError(
            f"the eval set has {n} rows; tune needs at least {least}: {MIN_TEST} for the test "
            f"(a paired test of a 0/1 metric reaches p < 0.05 only when at least {MIN_TEST} rows "
            f"flip, all the same way), {MIN_VALIDATION} to choose among candidates"
            + ("" if has_pool else ", and 1 for the few-shot pool"), file=evalset,
            fix=f"add rows to the eval set (about {round((MIN_TEST) / TEST_SHARE)} or more give "
            "a test that can show a real change)")
    order = list(rows)
    random.Random(seed).shuffle(order)
    return Splits(train=tuple(order[:n_train]), validation=tuple(order[n_train:n_train + n_val]),
                  test=tuple(order[n_train + n_val:]))


# --- candidates: the original file with other examples or another instruction --------------


@dataclass(frozen=True)
class Plan:
    """What a candidate changes: the examples (None: the original's) and the instruction
    (None: the original's)."""

    origin: str
    examples: tuple[Row, ...] | None = None
    instruction: str | None = None


class _Dumper(yaml.SafeDumper):
    pass


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and not value.endswith((" ", "\t")) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def _dump(key: str, value: Any) -> str:
    return yaml.dump({key: value}, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     width=100, default_flow_style=False)


def replace_key(source: str, key: str, value: Any) -> str:
    """`source` (a prompt file) with its top-level `key` set to `value`; the rest of the file,
    comments included, as it was."""
    lines = source.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _TOP_KEY.match(line)]
    start = next((i for i in starts if _TOP_KEY.match(lines[i]).group(1) == key), None)  # type: ignore[union-attr]
    block = _dump(key, value)
    if start is None:
        body = "".join(lines)
        return body + ("" if not body or body.endswith("\n") else "\n") + block
    end = next((i for i in starts if i > start), len(lines))
    # Comments just above the next key belong to it.
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
        end -= 1
    return "".join(lines[:start]) + block + "".join(lines[end:])


def _example(row: Row) -> dict[str, Any]:
    out: dict[str, Any] = {"id": row.id, "input": row.input}
    if row.has_expected:
        out["expected"] = row.expected
    return out


def _messages_with(prompt: Prompt, instruction: str) -> list[dict[str, str]]:
    """The prompt's messages with `instruction` as the first system message's text; a system
    message that is a template (it has variables or loops) is kept, after the instruction."""
    messages = [{"role": m.role, "content": m.content} for m in prompt.messages]
    for i, m in enumerate(messages):
        if m["role"] == "system":
            if _TEMPLATE_SYNTAX.search(m["content"]):
                return [*messages[:i], {"role": "system", "content": instruction}, *messages[i:]]
            messages[i] = {"role": "system", "content": instruction}
            return messages
    return [{"role": "system", "content": instruction}, *messages]


def instruction_of(prompt: Prompt) -> str:
    return next((m.content for m in prompt.messages if m.role == "system"), "")


def build(original: Prompt, plan: Plan) -> tuple[bytes, Prompt]:
    """The candidate's file bytes and the prompt parsed from them (by the one loader)."""
    source = original.source
    if plan.examples is not None:
        source = replace_key(source, "examples", [_example(r) for r in plan.examples])
    if plan.instruction is not None:
        source = replace_key(source, "messages", _messages_with(original, plan.instruction))
    data = source.encode()
    return data, parse_prompt(data, original.path, original.root)


def usable_counts(original: Prompt, pool: Sequence[Row], probe: Row) -> list[int]:
    """The numbers of examples a candidate may have: those its templates render with, each
    showing the model one more example than the count before (a template that indexes
    examples[0] to examples[5] takes exactly 6; one that loops over them, any)."""
    counts: list[int] = []
    previous: list[dict[str, str]] | None = None
    for k in range(0, min(MAX_EXAMPLES, len(pool)) + 1):
        try:
            _, prompt = build(original, Plan("probe", tuple(pool[:k])))
            messages = prompt.messages_for(probe)
        except InputError:
            previous = None
            continue
        if previous is None or messages != previous:
            counts.append(k)
        previous = messages
    return counts


# --- the search -----------------------------------------------------------------------------


def _subset(evalset: EvalSet, rows: Sequence[Row], label: str) -> EvalSet:
    digest = hashlib.sha256(f"{evalset.version}\0{label}\0".encode()
                            + "\0".join(r.id for r in rows).encode()).hexdigest()
    return EvalSet(evalset.path, digest, rows)


def _objective(prompt: Prompt, name: str | None) -> Metric:
    metrics = prompt.metric_objects
    if name is not None:
        found = next((m for m in metrics if m.name == name), None)
        if found is None:
            raise InputError(f"--metric {name}: the prompt does not score it", file=prompt.path,
                             fix=f"{did_you_mean(name, [m.name for m in metrics])}choose one of "
                             f"its metrics: {', '.join(m.name for m in metrics)}")
        return found
    gated = [k for k in prompt.thresholds if k != "max_regression"]
    for m in metrics:
        if m.name in gated:
            return m
    if not metrics:
        raise InputError("the prompt has no metric to tune for", file=prompt.path,
                         fix="add metrics: [exact_match] (or another) to the prompt file")
    return metrics[0]


def _right(row: dict[str, Any], objective: Metric, judge: Metric | None) -> bool:
    """Whether the model answered a row right: its pass/fail score, else the objective's
    per-row score at its best."""
    scores = row.get("scores") or {}
    if row.get("error") or not row.get("valid"):
        return False
    if judge is not None and judge.key in scores:
        return bool(scores[judge.key] == 1)
    if objective.key in scores and isinstance(scores[objective.key], int | float):
        value = float(scores[objective.key])
        return value >= 1 if objective.higher_is_better else value <= 0
    return True


@dataclass
class _Spent:
    requests: int = 0
    usd: float = 0.0


@dataclass
class _State:
    """What `--resume` continues from, kept in a JSON file under .promptctl/tune/."""

    path: Path
    key: str
    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    spent: _Spent = field(default_factory=_Spent)
    running: str | None = None
    # Names this search (and its resumptions) in its runs' options: a fresh start is a new
    # search even with the same key, a state saved before searches were named gets the key's.
    search: str = ""

    def __post_init__(self) -> None:
        self.search = self.search or f"{self.key[:8]}-{secrets.token_hex(3)}"

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": self.key, "search": self.search, "done": self.done,
                                   "running": self.running,
                                   "spent": {"requests": self.spent.requests,
                                             "usd": self.spent.usd}}, indent=1))
        tmp.replace(self.path)

    @classmethod
    def load(cls, path: Path, key: str) -> _State:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            raise InputError("no interrupted tuning of this prompt with these options to resume",
                             file=path, fix="run tune without --resume (cached answers are "
                             "free), with the same --seed, --strategy, --metric and --pool "
                             "as the interrupted one") from None
        if raw.get("key") != key:
            raise InputError("the stored tuning was made with other options or files", file=path,
                             fix="run tune without --resume")
        spent = raw.get("spent") or {}
        return cls(path, key, dict(raw.get("done") or {}),
                   _Spent(int(spent.get("requests") or 0), float(spent.get("usd") or 0.0)),
                   raw.get("running"), str(raw.get("search") or key[:8]))


Say = Callable[[str], None]


class Tuner:
    """One tuning of one prompt with one model."""

    def __init__(self, prompt: Prompt, evalset: EvalSet, resolved: ResolvedModel, *,
                 store: Store, config: Config, options: TuneOptions, say: Say) -> None:
        if prompt.kind != "prompt":
            raise InputError(f"tune takes a prompt file, not a {prompt.kind}", file=prompt.path,
                             fix="tune one of the prompts it uses")
        if options.strategy not in STRATEGIES:
            raise InputError(f"--strategy {options.strategy!r} is not known",
                             fix=f"choose one of: {', '.join(STRATEGIES)}")
        self.prompt, self.evalset, self.resolved = prompt, evalset, resolved
        self.store, self.config, self.options, self.say = store, config, options, say
        self.objective = _objective(prompt, options.metric)
        self.judge = self.objective if self.objective.pass_fail else next(
            (m for m in prompt.metric_objects if m.pass_fail), None)
        budget = options.budget
        if budget.limited and any(m.kind in ("llm_judge", "similarity")
                                  for m in prompt.configured_metrics):
            raise InputError("the prompt's judge or similarity metrics send requests a budget "
                             "cannot foresee", file=prompt.path,
                             fix="tune without --budget, or with a prompt file without them")
        if budget.usd is not None:
            price = config.price(resolved.model, resolved.endpoint)
            if price is None:
                raise InputError(f"--budget in dollars needs the price of {resolved.spec}, which "
                                 "is not known", fix="add it to promptctl.yaml: pricing: "
                                 f"{{{resolved.spec}: {{input: USD, output: USD}}}} (per million "
                                 "tokens), or give the budget in requests: --budget 200")
            params = prompt.request_params
            if not (params.get("max_tokens") or params.get("max_completion_tokens")):
                raise InputError("--budget in dollars needs params.max_tokens: without it a "
                                 "completion's cost has no bound", file=prompt.path,
                                 fix="add params: {max_tokens: 64} (or give the budget in "
                                 "requests)")
        pool_rows: list[Row] = []
        if options.pool is not None:
            pool_rows = list(load_evalset(options.pool, root=config.root))
        rows = list(evalset)
        self.splits = split_rows(rows, options.seed, evalset=evalset.path,
                                 has_pool=bool(pool_rows or prompt.examples))
        taken = {r.id for r in rows}
        extra = []
        for r in [*pool_rows, *prompt.examples]:
            if r.id in taken:
                r = Row(id=f"pool-{r.id}", input=r.input, expected=r.expected, line=r.line)
            if r.id not in taken and r.has_expected:
                taken.add(r.id)
                extra.append(r)
        self.pool: tuple[Row, ...] = (*self.splits.train, *extra)
        self.key = self._key(pool_rows)
        state_path = config.root / ".promptctl" / "tune" / f"{prompt.name}-{self.key[:16]}.json"
        self.state = _State.load(state_path, self.key) if options.resume else \
            _State(state_path, self.key)
        if options.resume and self.state.running:
            # Requests the interrupted run sent are spent, though now cached.
            self._count_run(self.state.running)
            self.state.running = None
        self._test_needs: dict[str, tuple[int, float]] = {}
        # Every run of the search starts from the same work tree: read its state once.
        self.git = git_state(prompt.path, [prompt.path, evalset.path])
        self.candidates: list[TuneCandidate] = []
        self.runs: dict[str, dict[str, Any]] = {}
        self.stopped: str | None = None
        # Set when an evaluation of the search was cut by its allowance: the search ends.
        self.cut: str | None = None

    def _key(self, pool_rows: Sequence[Row]) -> str:
        o = self.options
        proposer = o.proposer or PROPOSER_FILE
        facts = [self.prompt.version, self.evalset.version, [r.to_dict() for r in pool_rows],
                 o.seed, o.strategy, self.objective.name, self.resolved.spec,
                 hashlib.sha256(proposer.read_bytes()).hexdigest() if proposer.is_file() else "",
                 o.random_sets, o.proposals]
        return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()

    # --- spending ---------------------------------------------------------------------------

    def _need(self, prompt: Prompt, rows: Sequence[Row], label: str) -> tuple[int, float]:
        """Requests the cache cannot answer, and their worst-case cost."""
        found = estimate(prompt, _subset(self.evalset, rows, label), self.resolved,
                         config=self.config, store=self.store, options=EvalOptions())
        return int(found["to_send"]), float(found["estimated_cost_usd_max"] or 0.0)

    def _fits(self, need: tuple[int, float], reserve: tuple[int, float]) -> bool:
        b, s = self.options.budget, self.state.spent
        if b.requests is not None and s.requests + need[0] + reserve[0] > b.requests:
            return False
        return not (b.usd is not None and s.usd + need[1] + reserve[1] > b.usd + 1e-12)

    def _count_run(self, run_id: str, allowance: Allowance | None = None) -> tuple[int, float]:
        """What a run sent: the attempts its allowance counted (judges and failed attempts
        included), else its answers that did not come from the cache, attempts counted."""
        if allowance is not None:
            sent = allowance.sent
        else:
            # A request refused by an allowance has 0 attempts: it sent nothing.
            sent = sum(r["attempts"] if isinstance(r.get("attempts"), int) else 1
                       for r in self.store.iter_rows(run_id) if not r.get("cached"))
        try:
            cost = float((self.store.get_run(run_id).get("summary") or {}).get("cost_usd") or 0)
        except InputError:
            cost = 0.0
        self.state.spent.requests += sent
        self.state.spent.usd += cost
        return sent, cost

    def _allowance(self, reserve: tuple[int, float]) -> Allowance | None:
        """What an evaluation may send, every attempt counted: the budget less what was
        spent and what is kept back (`reserve`); None without a budget."""
        b, s = self.options.budget, self.state.spent
        if not b.limited:
            return None
        return Allowance(requests=None if b.requests is None else b.requests - s.requests - reserve[0],
                         usd=None if b.usd is None else b.usd - s.usd - reserve[1])

    def _evaluate(self, prompt: Prompt, rows: Sequence[Row], label: str, candidate: str,
                  origin: str, allowance: Allowance | None = None) -> RunRecord:
        subset = _subset(self.evalset, rows, label)

        def started(run_id: str) -> None:
            self.state.running = run_id
            self.state.save()

        run = run_eval(prompt, self.resolved, store=self.store, config=self.config,
                       evalset=subset, options=EvalOptions(
                           concurrency=self.options.concurrency, timeout=self.options.timeout,
                           subset=label,
                           search={"id": self.state.search, "candidate": candidate,
                                   "origin": origin}, allowance=allowance),
                       on_start=started, git=self.git)
        self.state.running = None
        return run

    def _cut_by(self, allowance: Allowance | None, what: str) -> str | None:
        """Why the evaluation of `what` was cut by its allowance (None: it was not); the
        search ends there."""
        if allowance is None or not allowance.cut:
            return None
        b = self.options.budget
        left = (f"{allowance.requests} requests" if b.requests is not None
                else f"${allowance.usd or 0.0:.4f} at worst-case cost")
        why = (f"the budget ran out during {what}: retries of failed requests used up the "
               f"{left} it was allowed ({allowance.refused} request(s) not sent); the search "
               "stopped there")
        self.cut = self.cut or why
        # The reason the search ended, whatever was skipped before.
        self.stopped = why
        self.say(why)
        return why

    def _rows(self, run_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.store.iter_rows(run_id)]

    # --- phases -----------------------------------------------------------------------------

    def _test_need(self, prompt: Prompt) -> tuple[int, float]:
        # Nothing the search sends is a test request, so what the test needs is known once
        # per candidate.
        found = self._test_needs.get(prompt.version)
        if found is None:
            found = self._test_needs[prompt.version] = self._need(prompt, self.splits.test,
                                                                  "tune:test")
        return found

    def _reserve(self, tested: Iterable[Prompt]) -> tuple[int, float]:
        """What the final test may cost: the original and the costliest of `tested` on the
        test rows (the winner is one of them)."""
        base = self._test_need(self.prompt)
        most = (0, 0.0)
        for p in tested:
            n = self._test_need(p)
            most = (max(most[0], n[0]), max(most[1], n[1]))
        return base[0] + most[0], base[1] + most[1]

    def _bootstrap(self) -> list[dict[str, Any]]:
        """The original prompt on the pool: which rows (and own examples) it gets right."""
        label = "tune:train"
        done = self.state.done.get(label)
        if done is not None:
            return self._rows(done["run"])
        need = self._need(self.prompt, self.pool, label)
        reserve = self._reserve([self.prompt])
        if not self._fits(need, reserve):
            raise InputError(self._short("run the original prompt on the few-shot pool", need,
                                         reserve), fix="raise --budget")
        self.say(f"original prompt on the {len(self.pool)} pool rows ({need[0]} requests to send)")
        allowance = self._allowance(reserve)
        run = self._evaluate(self.prompt, self.pool, label, "c0", "original on the few-shot pool",
                             allowance)
        self._count_run(run["id"], allowance)
        if self._cut_by(allowance, "the run of the original prompt on the few-shot pool") is None:
            self.state.done[label] = {"run": run["id"]}
        self.state.save()
        return self._rows(run["id"])

    def _short(self, what: str, need: tuple[int, float], reserve: tuple[int, float]) -> str:
        b, s = self.options.budget, self.state.spent
        if b.requests is not None:
            return (f"the budget of {b.requests} requests cannot {what}: {s.requests} spent, "
                    f"{need[0]} needed, {reserve[0]} kept for the final test")
        return (f"the budget of ${b.usd:g} cannot {what}: ${s.usd:.4f} spent, ${need[1]:.4f} "
                f"needed, ${reserve[1]:.4f} kept for the final test")

    def _try(self, cid: str, plan: Plan, tested: list[Prompt]) -> Prompt | None:
        """Evaluate one candidate on validation if the budget allows; record it either way."""
        examples = None if plan.examples is None else tuple(r.id for r in plan.examples)
        if self.cut is not None:
            return None
        try:
            _, prompt = build(self.prompt, plan)
            prompt.messages_for(self.splits.validation[0])
        except InputError as exc:
            self.candidates.append(TuneCandidate(
                id=cid, origin=plan.origin, version=None, examples=examples,
                instruction=plan.instruction, run=None, value=None, n=None, requests=0,
                cost_usd=None, skipped=f"does not load: {exc.message}"))
            return None
        done = self.state.done.get(prompt.version)
        if done is None:
            need = self._need(prompt, self.splits.validation, "tune:validation")
            reserve = self._reserve([*tested, prompt])
            if not self._fits(need, reserve):
                # Skipped, not the end: a later candidate with fewer examples, or whose
                # requests are cached, may still fit.
                why = self._short(f"evaluate candidate {cid}", need, reserve)
                self.stopped = self.stopped or why
                self.say(f"skipping {cid}: {why}")
                self._skip(cid, plan, prompt, f"over budget: {need[0]} requests needed")
                return None
            self.say(f"candidate {cid} ({plan.origin}) on {len(self.splits.validation)} validation "
                     f"rows ({need[0]} requests to send)")
            allowance = self._allowance(reserve)
            run = self._evaluate(prompt, self.splits.validation, "tune:validation", cid,
                                 plan.origin, allowance)
            sent, cost = self._count_run(run["id"], allowance)
            if self._cut_by(allowance, f"candidate {cid}") is not None:
                # Scored on the rows it got, it would be compared on other rows than the rest.
                self.state.save()
                self._skip(cid, plan, prompt, f"cut by the budget after {sent} requests: not "
                           "scored on part of the rows", requests=sent, cost=cost)
                return None
            metric = (run.get("metrics") or {}).get(self.objective.name) or {}
            done = {"run": run["id"], "value": metric.get("value"), "n": metric.get("n"),
                    "requests": sent, "cost_usd": cost}
            self.state.done[prompt.version] = done
            self.state.save()
        self.candidates.append(TuneCandidate(
            id=cid, origin=plan.origin, version=prompt.version, examples=examples,
            instruction=plan.instruction, run=done["run"], value=done["value"], n=done["n"],
            requests=int(done["requests"]), cost_usd=done["cost_usd"]))
        self.runs[cid] = {"prompt": prompt, "plan": plan}
        tested.append(prompt)
        return prompt

    def _skip(self, cid: str, plan: Plan, prompt: Prompt, why: str, *, requests: int = 0,
              cost: float | None = None) -> None:
        self.candidates.append(TuneCandidate(
            id=cid, origin=plan.origin, version=prompt.version,
            examples=None if plan.examples is None else tuple(r.id for r in plan.examples),
            instruction=plan.instruction, run=None, value=None, n=None, requests=requests,
            cost_usd=cost, skipped=why))

    def fewshot_plans(self, boot: Sequence[dict[str, Any]]) -> list[Plan]:
        """Zero-shot, the bootstrapped set, then random sets by seed (DSPy's order)."""
        counts = usable_counts(self.prompt, self.pool, self.splits.validation[0])
        if not [k for k in counts if k > 0]:
            raise InputError("the prompt's messages do not show its examples to the model, so "
                             "choosing them changes nothing", file=self.prompt.path,
                             fix="use them in a message ({% for ex in examples %}...{% endfor %}), "
                             "or tune with --strategy instructions")
        right_ids = {(r["row_id"] if r["kind"] == "eval" else None) for r in boot
                     if _right(r, self.objective, self.judge)}
        own = {r["row_id"] for r in boot if r["kind"] == "fewshot" and
               _right(r, self.objective, self.judge)}
        right = [r for r in self.pool if r.id in right_ids or
                 (r.id in own or r.id.removeprefix("pool-") in own)]
        others = [r for r in self.pool if r not in right]
        plans: list[Plan] = []
        if 0 in counts and self.prompt.examples:
            plans.append(Plan("zero-shot", ()))
        top = max(counts)
        plans.append(Plan("bootstrapped", tuple((right + others)[:top])))
        sizes = [k for k in counts if k > 0]
        for s in range(self.options.random_sets):
            rng = random.Random(f"{self.options.seed}:{s}")
            k = rng.choice(sizes)
            shuffled_right, shuffled_others = right[:], others[:]
            rng.shuffle(shuffled_right)
            rng.shuffle(shuffled_others)
            plans.append(Plan(f"random set {s}", tuple((shuffled_right + shuffled_others)[:k])))
        seen = {tuple(r.id for r in self.prompt.examples)}
        unique = []
        for p in plans:
            ids = tuple(r.id for r in p.examples or ())
            if ids not in seen:
                seen.add(ids)
                unique.append(p)
        return unique

    def _proposals(self, boot: Sequence[dict[str, Any]], base: Prompt,
                   tested: list[Prompt]) -> list[str]:
        """Rewrites of the instruction proposed by the model through the proposer prompt."""
        proposer = load_prompt(self.options.proposer, self.config.root) \
            if self.options.proposer is not None else load_prompt(PROPOSER_FILE, PROPOSER_FILE.parent)
        failures = [r for r in boot if r["kind"] == "eval" and not _right(r, self.objective, self.judge)]
        random.Random(self.options.seed).shuffle(failures)
        def shown(value: Any) -> str:
            return json.dumps(value, ensure_ascii=False)

        lines = [f"- input: {shown(r.get('input'))}; expected: {shown(r.get('expected'))}; "
                 f"answered: {shown(r.get('answer') if r.get('valid') else r.get('completion'))}"
                 for r in failures[:8]]
        request = base.messages[-1].content
        rows = tuple(Row(id=f"proposal-{i + 1}", input={
            "task": self.prompt.description or self.prompt.name,
            "instruction": instruction_of(base), "request": request,
            "failures": "\n".join(lines) or "(none: every train row was answered right)",
            "tip": TIPS[i % len(TIPS)]}) for i in range(self.options.proposals))
        label = "tune:proposer"
        run_id = (self.state.done.get(label) or {}).get("run")
        if self.cut is not None:
            return []
        if run_id is None:
            subset = _subset(self.evalset, rows, label)
            found = estimate(proposer, subset, self.resolved, config=self.config,
                             store=self.store, options=EvalOptions())
            need = (int(found["to_send"]), float(found["estimated_cost_usd_max"] or 0.0))
            if not self._fits(need, self._reserve([*tested, base])):
                why = self._short("ask for instruction proposals", need,
                                  self._reserve([*tested, base]))
                self.stopped = self.stopped or why
                self.say(f"no proposals: {why}")
                return []
            self.say(f"asking for {len(rows)} instruction proposals ({need[0]} requests to send)")
            allowance = self._allowance(self._reserve([*tested, base]))
            run = run_eval(proposer, self.resolved, store=self.store, config=self.config,
                           evalset=subset, options=EvalOptions(
                               concurrency=self.options.concurrency, timeout=self.options.timeout,
                           subset=label,
                               search={"id": self.state.search, "candidate": "proposer",
                                       "origin": "instruction proposals"},
                               allowance=allowance), git=self.git)
            self._count_run(run["id"], allowance)
            if self._cut_by(allowance, "the request for instruction proposals") is not None:
                self.state.save()
                return []
            run_id = run["id"]
            self.state.done[label] = {"run": run_id}
            self.state.save()
        out = []
        for r in self._rows(run_id):
            text = str(r.get("answer") or "").strip() if r.get("valid") else ""
            if text and not _TEMPLATE_SYNTAX.search(text) and text not in out:
                out.append(text)
        return out

    def search(self) -> tuple[TuneCandidate | None, Prompt | None]:
        tested: list[Prompt] = []
        boot = self._bootstrap()
        n = 0

        def cid() -> str:
            nonlocal n
            n += 1
            return f"c{n - 1}"

        self._try(cid(), Plan("original"), tested)
        base_plan = Plan("original")
        if self.options.strategy in ("fewshot", "both"):
            for plan in self.fewshot_plans(boot):
                self._try(cid(), plan, tested)
            chosen = self._best()
            if chosen is not None and chosen.id in self.runs:
                base_plan = self.runs[chosen.id]["plan"]
        if self.options.strategy in ("instructions", "both"):
            _, base = build(self.prompt, base_plan)
            for i, text in enumerate(self._proposals(boot, base, tested)):
                self._try(cid(), Plan(f"proposal {i + 1}" + (
                    f" on {base_plan.origin}" if base_plan.examples is not None else ""),
                    base_plan.examples, text), tested)
        best = self._best()
        return best, (self.runs[best.id]["prompt"] if best is not None else None)

    def _best(self) -> TuneCandidate | None:
        """The best on validation in the metric's direction; the earlier on a tie, so the
        original wins every tie."""
        scored = [c for c in self.candidates if c.value is not None]
        if not scored:
            return None
        sign = 1 if self.objective.higher_is_better else -1
        return max(scored, key=lambda c: (sign * float(c.value or 0), -int(c.id[1:])))

    def final(self, best: TuneCandidate, prompt: Prompt) -> TuneTest | str:
        """The original and the chosen candidate on the test rows, compared row by row; or,
        when the rest of the budget could not cover them (retries included), why not."""
        self.say(f"final test: the original and {best.id} on {len(self.splits.test)} test rows")
        # The final test gets all that is left: what the search kept back, and what it
        # did not use.
        allowance = self._allowance((0, 0.0))
        before = self.spend()
        a = self._evaluate(self.prompt, self.splits.test, "tune:test", "c0", "original",
                           allowance)
        self._count_run(a["id"], allowance)
        cut = allowance is not None and allowance.cut
        if not cut:
            sent = allowance.sent if allowance is not None else 0
            b = self._evaluate(prompt, self.splits.test, "tune:test", best.id,
                               f"chosen: {best.origin}", allowance)
            self._count_run(b["id"], allowance)
            # One allowance for both runs: the second counts only what it added.
            self.state.spent.requests -= sent
            cut = allowance is not None and allowance.cut
        self.state.save()
        if cut:
            assert allowance is not None
            if before.budget_requests is not None:
                figures = (f"{allowance.requests} requests were left of the budget of "
                           f"{before.budget_requests} ({before.requests} spent before it)")
            else:
                figures = (f"${allowance.usd or 0.0:.4f} was left of the budget of "
                           f"${before.budget_usd or 0.0:g} (${before.cost_usd:.4f} spent before "
                           "it), each attempt counted at its worst-case cost")
            return (f"the final test was cut by the budget: {figures}; it sent "
                    f"{allowance.sent} and retries of failed requests needed more "
                    f"({allowance.refused} request(s) not sent); nothing written")
        diff = compare_runs(self.store, a["id"], b["id"])
        m = diff.metrics.get(self.objective.name)
        if m is None:
            raise InputError(f"the test runs have no {self.objective.name} to compare",
                             fix="see promptctl show " + b["id"])
        return TuneTest(original_run=a["id"], best_run=b["id"], a=m.a, b=m.b, delta=m.delta,
                        ci95=m.ci95, p_value=m.p_value, test=m.test, n=m.n, verdict=m.verdict)

    def spend(self, reserve: tuple[int, float] | None = None) -> TuneSpend:
        b, s = self.options.budget, self.state.spent
        return TuneSpend(requests=s.requests, cost_usd=round(s.usd, 8),
                         budget_requests=b.requests, budget_usd=b.usd,
                         reserved_requests=None if reserve is None else reserve[0],
                         reserved_usd=None if reserve is None else round(reserve[1], 8))

    def split_facts(self) -> TuneSplits:
        return TuneSplits(seed=self.options.seed, train=tuple(r.id for r in self.splits.train),
                          validation=tuple(r.id for r in self.splits.validation),
                          test=tuple(r.id for r in self.splits.test), pool=len(self.pool))

    def dry_run(self) -> TuneEstimate:
        """The most each phase may send, without sending anything."""
        boot = self._need(self.prompt, self.pool, "tune:train")
        counts = usable_counts(self.prompt, self.pool, self.splits.validation[0]) \
            if self.options.strategy != "instructions" else [len(self.prompt.examples)]
        k = max(counts or [0])
        per = len(self.splits.validation) + k
        planned = 1 + (self.options.random_sets + 2 if self.options.strategy != "instructions"
                       else 0) + (self.options.proposals if self.options.strategy != "fewshot"
                                  else 0)
        proposer = self.options.proposals if self.options.strategy != "fewshot" else 0
        final_base = self._need(self.prompt, self.splits.test, "tune:test")
        final = final_base[0] + len(self.splits.test) + k
        total = boot[0] + planned * per + proposer + final
        price = self.config.price(self.resolved.model, self.resolved.endpoint)
        params = self.prompt.request_params
        max_tokens = params.get("max_tokens") or params.get("max_completion_tokens")
        cost = None
        if price is not None and max_tokens:
            # Per request at most: the longest prompt seen so far and max_tokens of answer.
            per_request = max(boot[1] / boot[0] if boot[0] else 0.0,
                              final_base[1] / final_base[0] if final_base[0] else 0.0)
            cost = round(total * per_request * 1.5, 6)
        return TuneEstimate(bootstrap=boot[0], per_candidate=per, candidates=planned,
                            proposer=proposer, final=final, total=total, cost_usd=cost)


def _commit_message(result_name: str, metric: str, test: TuneTest, spend: TuneSpend,
                    seed: int, strategy: str, best: TuneCandidate) -> str:
    ci = "n/a" if test.ci95 is None else f"[{test.ci95[0]:+.3f}, {test.ci95[1]:+.3f}]"
    budget = (f" of {spend.budget_requests}" if spend.budget_requests is not None else
              f" (budget ${spend.budget_usd:g})" if spend.budget_usd is not None else "")
    cost = f", ${spend.cost_usd:.4f}" if spend.cost_usd else ""
    return (f"Tune {result_name}: {metric} {test.a:.3f} -> {test.b:.3f} on {test.n} held-out rows\n\n"
            f"Test delta {test.delta:+.3f}, 95% interval {ci}, p={test.p_value:.4g} ({test.test}).\n"
            f"Chosen candidate {best.id} ({best.origin}), validation {metric} {best.value:.3f}.\n"
            f"Budget spent: {spend.requests} requests{budget}{cost}. Seed {seed}, strategy "
            f"{strategy}.\n")


def tune(prompt_path: Path, resolved: ResolvedModel, evalset: EvalSet, *, store: Store,
         config: Config, options: TuneOptions, say: Say = lambda _: None,
         today: datetime | None = None) -> TuneResult:
    """Tune the prompt at `prompt_path`; see the module's docstring."""
    target = load_target(prompt_path, config.root)
    if not isinstance(target, Prompt):
        raise InputError(f"tune takes a prompt file, not a {target.kind}", file=prompt_path,
                         fix=f"tune one of the prompts the {target.kind} uses")
    prompt = target
    repo = find_repo(config.root)
    if repo is None and not options.dry_run:
        raise InputError("tune writes its result on a git branch, and this project is not in "
                         "a git repository", fix="run git init and commit the prompt first, or "
                         "use --dry-run")
    if repo is not None and not options.dry_run:
        # The tuned file is committed on HEAD: made from an edited file, it would carry edits
        # nobody committed.
        head = repo.head()
        rel = rel_in(prompt.path, repo.root)
        if head is None or repo.read(head, rel) != prompt.path.read_bytes():
            raise InputError("the prompt file has changes that are not committed (the tuned "
                             "version is committed on top of HEAD)", file=prompt.path,
                             fix=f"commit it first: git add {rel} && git commit, or use --dry-run")
    tuner = Tuner(prompt, evalset, resolved, store=store, config=config, options=options, say=say)
    facts = TuneResult(prompt=prompt.name, path=str(prompt_path), model=resolved.spec,
                       metric=tuner.objective.name,
                       higher_is_better=tuner.objective.higher_is_better,
                       strategy=options.strategy, splits=tuner.split_facts(),
                       spend=tuner.spend(), candidates=(), best=None, test=None, written=False,
                       reason="")
    if options.dry_run:
        est = tuner.dry_run()
        return dataclasses.replace(facts, spend=tuner.spend(), candidates=(), best=None, test=None,
                          written=False, reason="dry run: nothing sent", estimate=est)
    best, best_prompt = tuner.search()
    chosen = tuner.candidates
    if best is None or best_prompt is None or best.origin == "original":
        why = ("no candidate scored better than the original on validation"
               if best is not None else "no candidate could be evaluated within the budget")
        tuner.state.save()
        return dataclasses.replace(facts, spend=tuner.spend(), candidates=tuple(chosen),
                          best=None if best is None else best.id, test=None, written=False,
                          reason=why + "; nothing written", stopped=tuner.stopped)
    test = tuner.final(best, best_prompt)
    spend = tuner.spend()
    if isinstance(test, str):
        return dataclasses.replace(facts, spend=spend, candidates=tuple(chosen), best=best.id,
                                   test=None, written=False, stopped=tuner.stopped, reason=test)
    if test.verdict.change != "better":
        return dataclasses.replace(facts, spend=spend, candidates=tuple(chosen), best=best.id, test=test,
                          written=False, stopped=tuner.stopped,
                          # The test line above already gives the verdict's reasoning.
                          reason=f"the test rows do not show the chosen prompt better "
                          f"({test.verdict.text}: delta "
                          f"{test.delta if test.delta is not None else float('nan'):+.3f}, "
                          f"p={test.p_value:.3g}); nothing written" if test.p_value is not None
                          else f"the test rows do not show the chosen prompt better "
                          f"({test.verdict.text}); nothing written")
    assert repo is not None
    data, _ = build(prompt, tuner.runs[best.id]["plan"])
    day = (today or datetime.now(UTC)).strftime("%Y%m%d")
    branch = repo.free_branch(f"tune/{prompt.name}-{day}")
    message = _commit_message(prompt.name, tuner.objective.name, test, spend, options.seed,
                              options.strategy, best)
    sha = repo.commit_to_new_branch(branch, "HEAD", {rel_in(prompt.path, repo.root): data}, message)
    return dataclasses.replace(facts, spend=spend, candidates=tuple(chosen), best=best.id, test=test,
                      written=True, branch=branch, commit=sha, stopped=tuner.stopped,
                      reason=f"{tuner.objective.name} is better on the test rows: written on "
                      f"branch {branch} ({sha[:12]})")
