"""The `llm_judge` kind: a judge prompt (an ordinary prompt file) scores each completion.

The judge's template sees the evaluated row's input fields plus `completion`, `answer`
and `expected` (its own few-shot `examples` as any prompt does, so the judge renders the
same whether it scores a run or is itself evaluated on human verdicts). Its `output:`
section reads the score. A judge answer that cannot be read, or a judge request that
failed, leaves the row without a score for this metric: counted as `unscored`, never a 0.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from promptctl.errors import InputError, did_you_mean, display_path
from promptctl.files import Reference, project_path, project_root
from promptctl.metrics.aggregates import row_count, rows_of, share
from promptctl.metrics.registry import (
    PAIRED_MEAN,
    Columns,
    Kind,
    Metric,
    Result,
    ScoreContext,
    Scores,
    prompt_loader,
)
from promptctl.providers import preflight, resolve_model
from promptctl.providers.tokens import message_tokens
from promptctl.scoring import Extraction, OutputSpec, extract

if TYPE_CHECKING:
    from promptctl.config import Config
    from promptctl.evalsets import Row

JUDGE_KEYS = ("prompt", "model")
SCORE_TYPES = ("number", "integer", "label")
# A judge's prompt may itself have judge metrics (it is evaluated like any prompt); a
# judge that names itself, directly or not, would load forever.
_loading: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("judges_loading",
                                                                           default=())


class JudgePrompt(Protocol):
    """What a judge uses of its prompt file (a prompt, loaded through the registry's loader:
    metrics sit below prompts)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def path(self) -> Path: ...
    @property
    def model(self) -> str | None: ...
    @property
    def request_params(self) -> dict[str, Any]: ...
    @property
    def output(self) -> OutputSpec: ...
    @property
    def messages(self) -> Sequence[Any]: ...
    @property
    def configured_metrics(self) -> tuple[Metric, ...]: ...

    def render(self, variables: dict[str, Any], row_id: str | None = None
               ) -> list[dict[str, str]]: ...


def require_model(spec: str, config: Config, params: dict[str, Any], *, metric: str, what: str,
                  file: Path, line: int | None, elsewhere: str) -> None:
    """The model `spec` a scorer sends requests to can be used now (its API key is set, its
    model file exists), else an error naming the metric, `what` uses the model (a judge's file,
    "embeddings"), and the fix for the scorer: set the key, or `elsewhere` (how to choose
    another model for it). `file` and `line`: where the metric is configured."""
    try:
        resolved = resolve_model(spec, config)
        env = resolved.missing_key()
        if env is None:
            preflight(resolved, params)
            return
    except InputError as exc:
        raise InputError(f"metric {metric!r} ({what}) cannot use model {spec}: {exc.message}",
                         file=file, line=line, fix=exc.fix) from None
    raise InputError(f"metric {metric!r} ({what}) uses model {spec}, whose API key ${env} is not "
                     "set", file=file, line=line, fix=f"export {env}=..., or {elsewhere}")


@dataclass(frozen=True)
class Judge:
    """A loaded judge: its prompt, the model it runs on and how its answer becomes a score.
    `source` and `line` say where the metric is configured (the line of llm_judge.model
    when the model is chosen there)."""

    name: str
    prompt: JudgePrompt
    model: str
    source: Path | None = None
    line: int | None = None
    model_in_metric: bool = False

    @property
    def params(self) -> dict[str, Any]:
        # A judge is a measurement: always at temperature 0, whatever its file says.
        return {**self.prompt.request_params, "temperature": 0}

    @property
    def identity(self) -> dict[str, Any]:
        return {"prompt": self.prompt.name, "prompt_version": self.prompt.version,
                "model": self.model}

    def messages(self, ctx: ScoreContext) -> list[dict[str, str]]:
        row = ctx.row
        variables = {**row.input,
                     "completion": ctx.completion,
                     "answer": ctx.extraction.answer if ctx.extraction.valid else None,
                     "expected": row.expected if row.has_expected else None}
        return self.prompt.render(variables, row.id)

    def check_row(self, row: Row) -> None:
        """The judge's template renders for `row` (a missing variable is found before any
        request is sent, naming the judge file and the row)."""
        self.messages(ScoreContext(row, Extraction(None, False), ""))

    def estimate(self, contexts: Sequence[ScoreContext], config: Config,
                 completion_tokens: int | None) -> dict[str, Any]:
        """`--dry-run`: one judge request per answer; its prompt tokens are the judge's
        messages for the row with the evaluated completion at its largest (max_tokens)."""
        resolved = resolve_model(self.model, config)
        count, method = resolved.backend.token_counter(resolved.model)
        prompt_tokens = 0
        for ctx in contexts:
            try:
                messages = self.messages(ctx)
            except InputError:
                messages = [{"role": m.role, "content": m.content} for m in self.prompt.messages]
            prompt_tokens += message_tokens(messages, count) + (completion_tokens or 0)
        max_tokens = self.params.get("max_tokens") or self.params.get("max_completion_tokens")
        out_tokens = len(contexts) * int(max_tokens) if max_tokens else None
        price = config.price(resolved.model, resolved.endpoint)
        cost = None
        if price is not None:
            cost = (prompt_tokens * price.input + (out_tokens or 0) * price.output) / 1e6
        return {"metric": self.name, "kind": "llm_judge", "model": resolved.spec,
                "requests": len(contexts), "prompt_tokens": prompt_tokens,
                "token_count_method": method, "completion_tokens_max": out_tokens,
                "estimated_cost_usd_max": None if cost is None else round(cost, 6)}

    def preflight(self, config: Config) -> None:
        """The judge's model can be used now: checked before a run sends anything."""
        judge_file = display_path(self.prompt.path)
        where = display_path(self.source) if self.source is not None else "the prompt file"
        elsewhere = ("give the judge a model on another endpoint: change llm_judge.model "
                     f"(ENDPOINT/MODEL) in {where}" if self.model_in_metric else
                     "give the judge a model on another endpoint: model: ENDPOINT/MODEL in "
                     f"{judge_file}, or llm_judge: {{prompt: ..., model: ENDPOINT/MODEL}} in "
                     f"{where}")
        require_model(self.model, config, self.params, metric=self.name,
                      what=f"judge {judge_file}", file=self.source or self.prompt.path,
                      line=self.line, elsewhere=elsewhere)

    def score_of(self, text: str) -> tuple[float | None, str | None]:
        """The score the judge's answer gives, or why it gives none."""
        output = self.prompt.output
        found = extract(text, output)
        if not found.valid:
            return None, f"the judge's answer could not be read: {found.error or 'no answer'}"
        if output.type == "label":
            return (1.0 if str(found.answer) == output.labels[0] else 0.0), None
        return float(found.answer), None


def _fail(msg: str, path: Path, line: int | None, fix: str) -> InputError:
    return InputError(msg, file=path, line=line, fix=fix)


def load_judge(name: str, spec: Any, path: Path, line_of: Callable[..., int | None]) -> Judge:
    """The judge of metric `name` configured by `spec` in prompt file `path`."""
    load_prompt = prompt_loader()
    if isinstance(spec, str):
        spec = {"prompt": spec}
    if not isinstance(spec, dict):
        raise _fail(f"metric {name}: llm_judge must be a mapping", path, line_of(),
                    "e.g. llm_judge: {prompt: ../judges/faithful.yaml}")
    for key in spec:
        if key not in JUDGE_KEYS:
            raise _fail(f"metric {name}: unknown key {key!r} in llm_judge", path, line_of(key),
                        f"{did_you_mean(key, JUDGE_KEYS)}use {' and '.join(JUDGE_KEYS)}")
    target = spec.get("prompt")
    if not isinstance(target, str) or not target.strip():
        raise _fail(f"metric {name}: llm_judge needs prompt: the judge prompt file", path,
                    line_of(), "add prompt: ../judges/NAME.yaml (relative to this file)")
    model = spec.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise _fail(f"metric {name}: llm_judge.model must be a model name", path,
                    line_of("model"), "e.g. model: gpt-4o, or leave it out")
    judge_path = project_path(target, path.parent)
    real = os.path.realpath(judge_path)
    loading = _loading.get()
    if real in loading or real == os.path.realpath(path):
        raise _fail(f"metric {name}: the judge prompt {target!r} leads back to a prompt that "
                    "names it", path, line_of("prompt"), "a judge may not judge itself")
    token = _loading.set((*loading, os.path.realpath(path)))
    try:
        where = Reference(path, line_of("prompt"), f"metrics {name} llm_judge.prompt")
        judge: JudgePrompt = load_prompt(judge_path, project_root(path), ref=where)
    finally:
        _loading.reset(token)
    if judge.output.type not in SCORE_TYPES:
        raise _fail(f"metric {name}: the judge prompt's output.type is {judge.output.type}; "
                    "a judge gives a score", judge.path, None,
                    "set output.type to number, integer, or label (the first label scores 1)")
    chosen = model or judge.model
    if not chosen:
        raise _fail(f"metric {name}: no model for the judge", path, line_of(),
                    f"add model: to llm_judge or to {target}")
    return Judge(name, judge, chosen, source=path,
                 line=line_of("model") if model else line_of(), model_in_metric=bool(model))


def build(name: str, spec: Any, path: Path, line_of: Callable[..., int | None]) -> Metric:
    judge = load_judge(name, spec, path, line_of)

    async def row(ctx: ScoreContext) -> Scores:
        return await judge_row(judge, ctx)

    def aggregate(columns: Columns) -> Result:
        # Every answered row is judged, and format_validity is scored on every answered row:
        # the rows it has and this metric lacks are the rows the judge gave no score.
        return {**share(columns.get(name, []), rows_of(columns, name)),
                "unscored": max(0, row_count(columns, "format_validity")
                                - row_count(columns, name))}

    files = (judge.prompt.path, *(f for m in judge.prompt.configured_metrics for f in m.files))
    # A label judge scores 0 or 1 per row; a number judge's scale is its prompt's to say.
    scale = (0.0, 1.0) if judge.prompt.output.type == "label" else (None, None)
    return Metric(name, row, aggregate, PAIRED_MEAN, name, kind="llm_judge",
                  identity=judge.identity, estimate=judge.estimate, check_row=judge.check_row,
                  files=files, value_range=scale, preflight=judge.preflight)


async def judge_row(judge: Judge, ctx: ScoreContext) -> Scores:
    """Ask the judge about one row; its completion (or error) is kept with the row."""
    services = ctx.services
    if services is None:
        raise InputError(f"metric {judge.name} needs the run's engine to send judge requests")
    messages = judge.messages(ctx)
    channel = services.channel(judge.model)
    answer = await services.gateway.complete(channel, messages, judge.params, 0,
                                             key_extra=judge.prompt.version)
    detail: dict[str, Any] = {"model": judge.model, "version": judge.prompt.version,
                              "cached": answer.cached}
    score: float | None = None
    if answer.response is None:
        detail["error"] = f"the judge request failed: {answer.error}"
    else:
        response = answer.response
        text = response.get("text") or ""
        detail.update(completion=text, prompt_tokens=response.get("prompt_tokens"),
                      completion_tokens=response.get("completion_tokens"))
        score, error = judge.score_of(text)
        if error is not None:
            detail["error"] = error
    detail["score"] = score
    ctx.details[judge.name] = detail
    # No score, no key: the row's judge detail says why, and the aggregate counts it.
    return {judge.name: score} if score is not None else {}


KIND = Kind("llm_judge", build, summary="a judge prompt scores each completion")
