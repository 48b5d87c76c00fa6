"""Self-consistency (`eval --samples K`): K answers per row at a temperature above 0, one
voted answer scored, and the vote compared with the first sample on the same rows.

The samples come from one request with `n=K` where the endpoint answers it, else from K
requests (see `engine.gateway.Gateway.complete_samples`). Each sample is read and scored
as an ordinary answer; the vote picks one of them, and the row is that sample's record,
its tokens and latency those of every sample (what the vote cost). The samples are kept
with the row, so `show --row` and `rescore` see them.

This is not `--repeat`: repeats measure how unstable a prompt is at temperature 0; samples
buy accuracy with tokens, and the figures say what they bought and what it cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from promptctl.errors import InputError
from promptctl.evalsets import Row
from promptctl.files import Reference, project_root
from promptctl.metrics.aggregates import aggregate_columns, fold_scores
from promptctl.metrics.judge import JudgePrompt
from promptctl.metrics.registry import (
    PAIRED_BINARY,
    PAIRED_MAE,
    PAIRED_MEAN,
    PAIRED_RMSE,
    AnswerLike,
    Metric,
    Services,
    prompt_loader,
)
from promptctl.scoring import equals, extract
from promptctl.toolcalls import SAMPLES_KEY
from promptctl.work import RowContext, WorkItem

# A row keeps its samples among the details of its `judges` column under SAMPLES_KEY (as
# tool calls and agent trajectories are kept): no new column, so every store reads it.
__all__ = ["SAMPLES_KEY", "Sampling", "load_sampling", "majority", "run_sampled",
           "sampling_from_options", "summarize_samples", "vote_and_record"]

# Sampling at temperature 0 gives K copies of one answer: votes need diversity. 0.7 is the
# value the self-consistency literature and most APIs' examples use.
DEFAULT_TEMPERATURE = 0.7
MAX_SAMPLES = 100
VOTES = ("majority", "judge:FILE")


@dataclass(frozen=True)
class JudgeVote:
    """A judge prompt that picks the best of a row's candidates: it sees the row's input
    fields plus `candidates` (the answering samples' completions) and `answers` (what was
    read from them), and answers the number of its choice, counting from 1."""

    prompt: JudgePrompt
    model: str
    # As given on the command line, relative to the project root: stored with the run.
    spec: str

    @property
    def params(self) -> dict[str, Any]:
        # Choosing is a measurement: temperature 0, whatever the judge file says.
        return {**self.prompt.request_params, "temperature": 0}


@dataclass(frozen=True)
class Sampling:
    """How a prompt's rows are sampled and voted on."""

    k: int
    temperature: float
    vote: str = "majority"
    judge: JudgeVote | None = None

    def options(self) -> dict[str, Any]:
        """What a run stores to be resumed and rescored the same way."""
        return {"k": self.k, "temperature": self.temperature,
                "vote": self.vote if self.judge is None else f"judge:{self.judge.spec}"}


def load_sampling(k: int, temperature: float | None, vote: str | None, root: Path,
                  *, option: str = "--vote") -> Sampling:
    """The sampling `eval --samples K --temperature T --vote V` asks for; InputError naming
    the option for a value that cannot be used."""
    if not 2 <= k <= MAX_SAMPLES:
        raise InputError(f"--samples {k}: a vote needs 2 to {MAX_SAMPLES} samples",
                         fix="e.g. --samples 5")
    if temperature is None:
        temperature = DEFAULT_TEMPERATURE
    if not (math.isfinite(temperature) and 0 <= temperature <= 2):
        raise InputError(f"--temperature {temperature}: must be from 0 to 2",
                         fix=f"e.g. --temperature {DEFAULT_TEMPERATURE}")
    vote = vote or "majority"
    if vote == "majority":
        return Sampling(k, float(temperature))
    if not vote.startswith("judge:") or not vote[len("judge:"):].strip():
        raise InputError(f"{option} {vote!r}: not a vote",
                         fix="use --vote majority, or --vote judge:judges/NAME.yaml")
    spec = vote[len("judge:"):].strip()
    path = Path(spec) if Path(spec).is_absolute() else root / spec
    if not path.is_file():
        raise InputError(f"{option} {vote}: no judge prompt file {spec}", file=path,
                         fix="give a prompt file whose output reads an integer, e.g. "
                         "--vote judge:judges/pick.yaml")
    judge = prompt_loader()(path, project_root(path), ref=Reference(path, None, option))
    if judge.output.type not in ("integer", "number"):
        raise InputError(f"{option}: the judge prompt's output.type is {judge.output.type}; "
                         "a judge that picks answers with the candidate's number", file=path,
                         fix="set output: {type: integer} (candidates count from 1)")
    if not judge.model:
        raise InputError(f"{option}: the judge prompt names no model", file=path,
                         fix="add model: ENDPOINT/MODEL (or an OpenAI model) to the judge file")
    return Sampling(k, float(temperature), "judge", JudgeVote(judge, judge.model, spec))


def sampling_from_options(options: Mapping[str, Any], root: Path) -> Sampling | None:
    """The sampling a stored run used (None: not a sampled run). A judge is read from the
    work tree as it is now."""
    stored = options.get("samples")
    if not isinstance(stored, Mapping):
        return None
    temperature = stored.get("temperature")
    return load_sampling(int(stored.get("k") or 0),
                         float(temperature) if isinstance(temperature, int | float) else None,
                         str(stored.get("vote") or "majority"), root,
                         option="the run's vote")


# --- the vote --------------------------------------------------------------------------------


def majority(samples: Sequence[tuple[bool, Any]]) -> int | None:
    """The index of the sample the majority vote picks among `samples` (valid, answer),
    answers compared with `scoring.equals`; None when there are none.

    Unreadable answers do not vote unless no answer was readable (then the first sample
    stands). A tie goes to the tied answer that came first in sample order; the index is
    the first sample that gave the winning answer.
    """
    voters = [i for i, (valid, _) in enumerate(samples) if valid]
    if not voters:
        return 0 if samples else None
    firsts: list[int] = []  # the first sample of each distinct answer, in sample order
    counts: list[int] = []
    for i in voters:
        for g, first in enumerate(firsts):
            if equals(samples[i][1], samples[first][1]):
                counts[g] += 1
                break
        else:
            firsts.append(i)
            counts.append(1)
    top = max(counts)
    return firsts[counts.index(top)]


class Recorder(Protocol):
    """What sampling uses of the prompt it samples: its request parameters and how one
    answer becomes a scored row."""

    @property
    def request_params(self) -> dict[str, Any]: ...

    async def record(self, run_id: str, item: WorkItem, answer: AnswerLike,
                     services: Services | None) -> dict[str, Any]: ...


async def run_sampled(prompt: Recorder, sampling: Sampling, item: WorkItem,
                      ctx: RowContext) -> dict[str, Any]:
    """One row: K samples, each read and scored, the vote, the row's record."""
    got = await ctx.complete_samples(item.messages, prompt.request_params, sampling.k)
    return await vote_and_record(prompt, sampling, item, list(got.answers), ctx.run_id,
                                 ctx.services, requests=got.requests, note=got.note)


def _sample_entry(record: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("completion", "answer", "valid", "extract_error", "error", "scores", "judges",
            "prompt_tokens", "completion_tokens", "latency_ms", "cached")
    return {k: record[k] for k in keep if k in record}


async def vote_and_record(prompt: Recorder, sampling: Sampling, item: WorkItem,
                          answers: list[AnswerLike], run_id: str, services: Services | None,
                          *, requests: str, note: str | None = None) -> dict[str, Any]:
    """The stored row of a sampled row: the voted sample's record, with every sample kept
    under SAMPLES_KEY and the tokens and latency of them all. Used by a run and by
    `rescore` (answers from the stored samples)."""
    records = [await prompt.record(run_id, item, a, services) for a in answers]
    answered = [i for i, r in enumerate(records) if r.get("error") is None]
    chosen: int | None = None
    judge: dict[str, Any] | None = None
    if answered:
        pool = [i for i in answered if records[i].get("valid")] or answered
        # A judge is asked only when the candidates disagree: picking among equal answers
        # would cost a request and change nothing.
        agree = all(bool(records[i].get("valid")) and equals(records[i].get("answer"),
                                                             records[pool[0]].get("answer"))
                    for i in pool)
        if sampling.judge is not None and len(pool) > 1 and not agree:
            chosen, judge = await judge_pick(sampling.judge, item.row, [records[i] for i in pool],
                                             services)
            chosen = pool[chosen] if chosen is not None else None
        if chosen is None:
            picked = majority([(bool(records[i].get("valid")), records[i].get("answer"))
                               for i in answered])
            chosen = answered[picked if picked is not None else 0]
    row = dict(records[chosen if chosen is not None else 0])
    first = records[0]
    votes = sum(1 for i in answered if bool(records[i].get("valid")) == bool(row.get("valid"))
                and (not row.get("valid") or equals(records[i].get("answer"), row.get("answer"))))
    one_request = requests == "n"
    total_prompt = sum(r.get("prompt_tokens") or 0 for r in records)
    total_completion = sum(r.get("completion_tokens") or 0 for r in records)
    latencies = [float(r["latency_ms"]) for r in records if r.get("latency_ms") is not None]
    detail: dict[str, Any] = {
        "k": sampling.k, "vote": sampling.options()["vote"], "temperature": sampling.temperature,
        "chosen": chosen, "votes": votes, "requests": requests,
        "samples": [_sample_entry(r) for r in records],
        # The first sample alone: what one answer at this temperature costs. With one
        # request for all, its completion tokens are the average choice's and its latency
        # is not known apart.
        "first": {"prompt_tokens": first.get("prompt_tokens") or 0,
                  "completion_tokens": (total_completion / sampling.k) if one_request
                  else first.get("completion_tokens") or 0,
                  "latency_ms": None if one_request else first.get("latency_ms")},
    }
    if note:
        detail["note"] = note
    if judge is not None:
        detail["judge"] = judge
    judge_ms = (judge or {}).get("latency_ms") or 0.0
    row.update(prompt_tokens=total_prompt, completion_tokens=total_completion,
               latency_ms=(sum(latencies) + judge_ms) if latencies else None,
               cached=all(bool(r.get("cached")) for r in records),
               # One attempt plus every retry of its requests, so that the run's retries
               # (attempts beyond the first, per row) count retries, not samples.
               attempts=1 + sum(max(0, int(r.get("attempts") or 0) - 1) for r in records)
               if any(r.get("attempts") for r in records) else 0)
    row["judges"] = {**(row.get("judges") or {}), SAMPLES_KEY: detail}
    return row


async def judge_pick(judge: JudgeVote, row: Row, candidates: list[Mapping[str, Any]],
                     services: Services | None) -> tuple[int | None, dict[str, Any]]:
    """The candidate the judge picks (an index into `candidates`), or None with why (the
    vote then falls back to the majority); the judge's request goes through the run's
    gateway and cache."""
    if services is None:
        raise InputError("a judge vote needs the run's engine to send its requests")
    variables = {**row.input,
                 "candidates": [str(c.get("completion") or "") for c in candidates],
                 "answers": [c.get("answer") if c.get("valid") else None for c in candidates]}
    messages = judge.prompt.render(variables, row.id)
    channel = services.channel(judge.model)
    answer = await services.gateway.complete(channel, messages, judge.params, 0,
                                             key_extra=judge.prompt.version)
    detail: dict[str, Any] = {"model": judge.model, "version": judge.prompt.version,
                              "cached": answer.cached, "candidates": len(candidates)}
    if answer.response is None:
        detail["error"] = f"the judge request failed: {answer.error}; the majority vote stands"
        return None, detail
    text = str(answer.response.get("text") or "")
    detail.update(completion=text, latency_ms=answer.response.get("latency_ms"),
                  prompt_tokens=answer.response.get("prompt_tokens"),
                  completion_tokens=answer.response.get("completion_tokens"))
    found = extract(text, judge.prompt.output)
    number = found.answer if found.valid else None
    if not isinstance(number, int | float) or isinstance(number, bool) or number != int(number) \
            or not 1 <= int(number) <= len(candidates):
        detail["error"] = (f"the judge's answer is not a candidate's number from 1 to "
                           f"{len(candidates)}; the majority vote stands")
        return None, detail
    detail["pick"] = int(number)
    return int(number) - 1, detail


# --- the run's figures: single sample against the vote --------------------------------------


def _paired(metric: Metric, single: list[Mapping[str, Any]], voted: list[Mapping[str, Any]]
            ) -> dict[str, Any] | None:
    """The paired test of `metric` on rows scored both ways, as `diff` tests two runs:
    McNemar on 0/1 scores, a paired permutation test of the mean (or RMSE) otherwise. None
    for metrics of the whole set (correlations, F1), which have no per-row score."""
    # numpy is imported here, not with the module: prompts import this module, and
    # listing or validating prompts must not pay for numpy.
    import numpy as np

    from promptctl.stats import paired_binary, paired_continuous

    def values(key: str, rows: list[Mapping[str, Any]]) -> list[float]:
        return [float(r[key]) if isinstance(r.get(key), int | float) else math.nan for r in rows]

    def pairs(key: str) -> tuple[Any, Any]:
        a, b = np.array(values(key, single)), np.array(values(key, voted))
        keep = np.isfinite(a) & np.isfinite(b)
        return a[keep], b[keep]

    if metric.paired in (PAIRED_BINARY, PAIRED_MEAN):
        a, b = pairs(metric.key)
        if np.all((a == 0) | (a == 1)) and np.all((b == 0) | (b == 1)):
            return paired_binary(a, b)
        return paired_continuous(a, b, lambda m: np.mean(m, axis=-1))
    if metric.paired == PAIRED_RMSE:
        a, b = pairs(metric.key)
        return paired_continuous(a, b, lambda m: np.sqrt(np.mean(m, axis=-1)))
    if metric.paired == PAIRED_MAE:
        def errors(rows: list[Mapping[str, Any]]) -> Any:
            return np.abs(np.array(values("answer_num", rows)) - np.array(values("expected_num", rows)))
        a, b = errors(single), errors(voted)
        keep = np.isfinite(a) & np.isfinite(b)
        return paired_continuous(a[keep], b[keep], lambda m: np.mean(m, axis=-1))
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return round(a / b, 4)


def summarize_samples(sampling: Sampling, metrics: Sequence[Metric],
                      rows: Callable[[], Iterable[Mapping[str, Any]]]) -> dict[str, Any]:
    """A sampled run's figures: per metric the first sample's value and the vote's on the
    same rows (those where both were answered), the paired delta with its interval and
    p-value, and what the vote cost against one sample (tokens, latency)."""
    single: list[Mapping[str, Any]] = []
    voted: list[Mapping[str, Any]] = []
    requests = {"n": 0, "separate": 0}
    note: str | None = None
    all_tokens = {"prompt": 0, "completion": 0}
    first_tokens = {"prompt": 0.0, "completion": 0.0}
    latency_all = latency_first = 0.0
    latency_known = True
    unanimous = 0
    for row in rows():
        detail = (row.get("judges") or {}).get(SAMPLES_KEY)
        if not isinstance(detail, Mapping) or row.get("error") is not None:
            continue
        samples = detail.get("samples") or []
        if detail.get("requests") in requests:
            requests[str(detail["requests"])] += 1
        note = note or detail.get("note")
        first = detail.get("first") or {}
        all_tokens["prompt"] += row.get("prompt_tokens") or 0
        all_tokens["completion"] += row.get("completion_tokens") or 0
        first_tokens["prompt"] += first.get("prompt_tokens") or 0
        first_tokens["completion"] += first.get("completion_tokens") or 0
        latency_all += row.get("latency_ms") or 0.0
        if first.get("latency_ms") is None:
            latency_known = False
        else:
            latency_first += first["latency_ms"]
        unanimous += detail.get("votes") == len(samples)
        if samples and samples[0].get("error") is None:
            single.append(samples[0].get("scores") or {})
            voted.append(row.get("scores") or {})
    aggregated = {"single": aggregate_columns(metrics, fold_scores(dict(s) for s in single)),
                  "voted": aggregate_columns(metrics, fold_scores(dict(v) for v in voted))}
    compared: dict[str, Any] = {}
    for metric in metrics:
        one, vote = aggregated["single"].get(metric.name), aggregated["voted"].get(metric.name)
        if one is None or vote is None:
            continue
        test = _paired(metric, single, voted) or {}
        compared[metric.name] = {
            "single": one.get("value"), "voted": vote.get("value"),
            "delta": None if one.get("value") is None or vote.get("value") is None
            else vote["value"] - one["value"],
            "ci95": test.get("ci95"), "p_value": test.get("p_value"), "test": test.get("test"),
            "n": vote.get("n"), "higher_is_better": metric.higher_is_better}
    return {
        **sampling.options(), "rows": len(voted), "unanimous": unanimous, "requests": requests,
        **({"note": note} if note else {}),
        "metrics": compared,
        "tokens": {"all": all_tokens, "first": {k: round(v, 2) for k, v in first_tokens.items()}},
        "tokens_multiple": _ratio(sum(all_tokens.values()), sum(first_tokens.values())),
        "latency_ms": {"all": round(latency_all, 3),
                       "first": round(latency_first, 3) if latency_known else None},
        "latency_multiple": _ratio(latency_all, latency_first) if latency_known else None,
    }
