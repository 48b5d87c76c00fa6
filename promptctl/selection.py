"""Which stored run stands for what a user names: a prompt version, a git ref, a model, a
run id.

One rule decides which run stands for "prompt P (version V, eval-set version E) with
model M at commit C": only complete runs that covered their whole eval set stand for a
version; among them, runs without error rows first, then runs on a clean work tree, then
the newest. `history`, `diff REF REF`, `diff MODEL MODEL`, `check`'s baselines and its
reuse of the current side all ask `standing_run`. A partial run (`--limit`, an unfinished
resume) is used only when named by its id.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptctl.compare import compare_runs
from promptctl.config import Config
from promptctl.engine.lifecycle import run_eval
from promptctl.errors import InputError, did_you_mean, display_path
from promptctl.gitinfo import find_repo, open_repo
from promptctl.project import PROMPTS_DIR, target_files
from promptctl.providers import resolve_model
from promptctl.runs import best, row_errors, stands_for_version
from promptctl.store import RunRecord, Store
from promptctl.target import TargetAt, load_target, model_of, refuse_evalset, target_at_ref

if TYPE_CHECKING:
    from promptctl.results import DiffResult

SayFn = Callable[[str], None]
RUN_PREFIX = "run:"
REF_PREFIX = "ref:"


# --- the rule ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """The chosen run, and a note when it was made elsewhere than asked."""

    run: RunRecord
    note: str | None = None


def standing_run(store: Store, prompt: str, *, version: str | None = None,
                 evalset_version: str | None = None, model: str | None = None,
                 commit: str | None = None, base_url: str | None = None,
                 allow_errors: bool = True) -> Found | None:
    """The run that stands for `prompt` (at `version` / `evalset_version`) with `model`, at
    `commit`.

    At a commit, a run made there comes first; failing that, a run of the very same prompt
    and eval set versions made elsewhere evaluates the same requests, and is chosen with a
    note. `base_url` narrows to runs against the same server; `allow_errors=False` to runs
    with no error rows (a baseline a gate relies on).
    """
    runs = [r for r in store.list_runs(prompt) if stands_for_version(r)
            and (model is None or r["model"] == model)
            and (base_url is None or r.get("base_url") == base_url)
            and (allow_errors or row_errors(r) == 0)]
    same = [r for r in runs if (version is None or r["prompt_version"] == version)
            and (evalset_version is None or r["evalset_version"] == evalset_version)]
    if commit is None:
        chosen = best(same)
        return Found(chosen) if chosen is not None else None
    here = best(r for r in runs if r["git_commit"] == commit
                and (version is None or r["prompt_version"] == version))
    if here is not None:
        return Found(here)
    if version is None:
        return None
    elsewhere = best(same)
    if elsewhere is None:
        return None
    where = (elsewhere["git_commit"] or "no commit")[:12]
    return Found(elsewhere, f"no run at {commit[:12]} itself: run {elsewhere['id']} (at {where}) "
                 "evaluated the same prompt and eval set versions")


# --- naming a prompt --------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptRef:
    """A prompt as named on the command line: its name, and its file when there is one."""

    name: str
    path: Path | None


def _name_of(path: Path) -> str:
    """A prompt or pipeline file's name: its `name:`, else its stem (also for a file
    mid-edit)."""
    try:
        return load_target(path).name
    except InputError:
        return path.stem


def find_prompt(store: Store | None, config: Config, given: str) -> PromptRef:
    """A prompt (or pipeline) file path, or the name of a prompt in prompts/ or pipelines/, or
    in the store (without a store: only the project's files).

    Every command that takes a prompt to filter or compare by (`runs`, `history`, `diff
    --prompt`, `report --history`, `check --prompt`) names it here: an unknown name is an
    error with the name it is close to and the names there are, never an empty result."""
    path = Path(given)
    if path.is_file():
        refuse_evalset(path, config.root)
        return PromptRef(_name_of(path), path)
    files = target_files(config.root)
    for candidate in files:
        if candidate.stem == given or _name_of(candidate) == given:
            return PromptRef(given if candidate.stem == given else _name_of(candidate), candidate)
    stored = sorted({r["prompt_name"] for r in store.list_runs(columns=("prompt_name",))}) \
        if store is not None else []
    if given in stored:
        return PromptRef(given, None)
    names = sorted({*(_name_of(f) for f in files), *stored})
    hint = did_you_mean(given, {*names, *(f.stem for f in files)})
    raise InputError(f"no prompt named {given!r}",
                     fix=(f"{hint}prompts: " + ", ".join(names)) if names else
                     "no prompts here yet: pass a prompt file, or run `promptctl init`")


# --- the sides of a diff ----------------------------------------------------------------------


@dataclass
class Sides:
    """Finds (or, with `run_missing`, makes) the run standing for each side of a diff."""

    store: Store
    config: Config
    prompt: PromptRef | None
    run_missing: bool = False
    say: SayFn = field(default=lambda _m: None)
    notes: list[str] = field(default_factory=list)
    version: str | None = None
    # Runs chosen for a git ref, by id: the ref.
    by_refs: dict[str, str] = field(default_factory=dict)

    def same_model(self, a_id: str, b_id: str) -> None:
        """Two versions at git refs, each with the model its own file names, are compared
        only when that is one model: otherwise the diff would measure the model change and
        the prompt change together, and call it the prompt's."""
        if a_id not in self.by_refs or b_id not in self.by_refs:
            return
        ma, mb = self.store.get_run(a_id)["model"], self.store.get_run(b_id)["model"]
        if ma != mb:
            raise InputError(f"the two versions name different models ({ma} at "
                             f"{self.by_refs[a_id]}, {mb} at {self.by_refs[b_id]}): a diff of "
                             "two refs compares them on one model",
                             fix=f"pass --model {ma} (or --model {mb}) to evaluate both versions "
                             f"with it; to compare the two runs as they are: promptctl diff "
                             f"run:{a_id} run:{b_id}")

    def _eval_command(self, ref: str | None, model: str | None) -> str:
        assert self.prompt is not None
        shown = display_path(self.prompt.path) if self.prompt.path is not None \
            else f"{PROMPTS_DIR}/{self.prompt.name}.yaml"
        parts = ["promptctl", "eval", shown]
        if ref is not None:
            parts += ["--ref", ref]
        if model is not None:
            parts += ["--model", model]
        return " ".join(shlex.quote(p) for p in parts)

    def run_or_ref(self, token: str, model: str | None) -> str:
        """A run id (`run:ID` or a unique prefix), else the run of the prompt at git ref
        `token` (`ref:NAME`). A name that is both is refused: say which."""
        if token.startswith(RUN_PREFIX):
            return str(self.store.get_run(token[len(RUN_PREFIX):])["id"])
        if token.startswith(REF_PREFIX):
            return self.by_ref(token[len(REF_PREFIX):], model)
        try:
            run_id = str(self.store.get_run(token)["id"])
        except InputError as exc:
            if "ambiguous" in exc.message:
                raise
            if self.prompt is None:
                raise InputError(f"{token!r} is not a stored run id",
                                 fix="list runs with `promptctl runs`, or pass --prompt NAME to "
                                 "compare the prompt at two git refs") from None
            return self.by_ref(token, model, or_run=True)
        if self.prompt is not None and self._is_ref(token):
            raise InputError(f"{token!r} is both a run id (prefix of {run_id}) and a git ref",
                             fix=f"write run:{token} for the run or ref:{token} for the git ref")
        return run_id

    def _is_ref(self, token: str) -> bool:
        repo = find_repo(self.config.root)
        if repo is None:
            return False
        try:
            repo.resolve(token)
        except InputError:
            return False
        return True

    def by_ref(self, ref: str, model: str | None, or_run: bool = False) -> str:
        """The run of the prompt at git ref `ref` (evaluated when missing, with run_missing)."""
        if self.prompt is None:
            raise InputError(f"{ref!r} is not a stored run id",
                             fix="pass --prompt NAME to compare the prompt at two git refs")
        repo = open_repo(self.config.root, purpose="compare run ids instead: promptctl diff RUN_A RUN_B")
        try:
            commit = repo.resolve(ref)
        except InputError as exc:
            if "not in this clone" in exc.message:
                raise
            raise InputError(f"{ref!r} is neither a stored run id nor a git ref" if or_run
                             else f"unknown git ref {ref!r}",
                             fix="list runs with `promptctl runs`, or name a branch, tag or "
                             "commit") from None
        at: TargetAt | None = None
        problem: InputError | None = None
        if self.prompt.path is not None:
            try:
                at = target_at_ref(self.prompt.path, commit)
            except InputError as exc:
                problem = exc
                try:  # the eval set may be what is missing at that ref
                    at = target_at_ref(self.prompt.path, commit, with_evalset=False)
                except InputError:
                    at = None
        # Without --model each side is the model its own version of the file names.
        wanted = model or (at.target.model if at is not None else None)
        version = at.target.version if at is not None else None
        set_version = at.evalset.version if at is not None and at.evalset is not None else None
        found = standing_run(self.store, self.prompt.name, version=version,
                             evalset_version=set_version, model=wanted, commit=commit,
                             base_url=self._server(wanted))
        if found is None and model is None and wanted is not None:
            # A run at that commit with another model (or server) is not this side: say so
            # rather than compare something the user did not ask for.
            other = standing_run(self.store, self.prompt.name, version=version, commit=commit)
            if other is not None:
                run = other.run
                raise InputError(
                    f"no stored run of {self.prompt.name!r} at {ref} ({commit[:12]}) with "
                    f"{wanted} on {self._server(wanted) or 'its server'}; run {run['id']} there "
                    f"used {run['model']} on {run.get('base_url') or 'another server'}",
                    fix=f"compare one model on both sides with --model {run['model']}, or "
                    f"evaluate this one: {self._eval_command(ref, wanted)}")
        if found is not None:
            if found.note:
                self.notes.append(found.note)
            self.by_refs[str(found.run["id"])] = ref
            return str(found.run["id"])
        missing = (f"no stored run of {self.prompt.name!r} at {ref} ({commit[:12]})"
                   + (f" with model {wanted}" if wanted else ""))
        command = self._eval_command(ref, model)
        if not self.run_missing:
            raise InputError(missing, fix=f"evaluate it first: {command}  (or add --run-missing "
                             "to diff)")
        if problem is not None:
            raise problem
        if at is None:
            raise InputError(f"{missing}, and --run-missing needs the prompt file",
                             fix=f"pass --prompt {PROMPTS_DIR}/{self.prompt.name}.yaml, or run: {command}")
        if at.evalset is None:
            raise InputError(f"the prompt at {ref} names no eval set", file=self.prompt.path,
                             fix=f"run: {command} --evalset FILE")
        self.say(f"{missing}: evaluating it now ({command})")
        run_id = self._evaluate(at.target, at.evalset, wanted, at.git, f"at {ref}")
        self.by_refs[run_id] = ref
        return run_id

    def by_model(self, model: str) -> str:
        """The run of the prompt's current version with `model`."""
        assert self.prompt is not None
        prompt = load_target(self.prompt.path) if self.prompt.path is not None else None
        found = standing_run(self.store, self.prompt.name, model=model,
                             version=prompt.version if prompt else self.version,
                             base_url=self._server(model))
        if found is not None:
            return str(found.run["id"])
        command = self._eval_command(None, model)
        missing = f"no stored run of {self.prompt.name!r} with model {model}"
        if prompt is not None:
            missing += f" at its current version ({prompt.version[:12]})"
        if not self.run_missing or prompt is None:
            raise InputError(missing, fix=f"evaluate it first: {command}"
                             + ("  (or add --run-missing to diff)" if prompt else ""))
        self.say(f"{missing}: evaluating it now ({command})")
        return self._evaluate(prompt, None, model, None, "now")

    def _server(self, model: str | None) -> str | None:
        """The server `model` is sent to now (a run against another server under the same
        model name is another side), or None when it cannot be told."""
        if model is None:
            return None
        try:
            return resolve_model(model, self.config).cache_url
        except InputError:
            return None

    def are_models(self, tokens: list[str]) -> bool:
        """True when every one of `tokens` is neither a run id nor a git ref, but a model that
        has stored runs of the prompt (`diff gpt-4o-mini gpt-4o --prompt NAME`)."""
        if self.prompt is None:
            return False
        models = {r["model"] for r in self.store.list_runs(self.prompt.name, columns=("model",))}
        for token in tokens:
            if token not in models:
                return False
            try:
                self.store.get_run(token)
                return False
            except InputError:
                pass
            if self._is_ref(token):
                return False
        return True

    def common_version(self, models: list[str]) -> None:
        """Without the prompt file: the newest prompt version every model has a run of."""
        assert self.prompt is not None
        if self.prompt.path is not None:
            return
        runs = [r for r in self.store.list_runs(self.prompt.name) if stands_for_version(r)]
        for run in runs:  # newest first
            version = run["prompt_version"]
            if all(any(r["model"] == m and r["prompt_version"] == version for r in runs)
                   for m in models):
                self.version = version
                return
        raise InputError(f"no version of {self.prompt.name!r} has stored runs with both "
                         f"{' and '.join(models)}",
                         fix=f"evaluate them first: {self._eval_command(None, models[0])}, and "
                         f"the same with --model {models[1]}")

    def _evaluate(self, prompt: Any, evalset: Any, model: str | None, git: Any, where: str) -> str:
        run = run_eval(prompt, resolve_model(model_of(prompt, model), self.config),
                         store=self.store, config=self.config, evalset=evalset, git=git)
        errors = row_errors(run)
        self.notes.append(f"run {run['id']} was evaluated {where} for this diff"
                          + (f"; {errors} request(s) failed and are not compared" if errors else ""))
        return str(run["id"])


def diff(store: Store, config: Config, a: str | None, b: str | None, *, prompt: str | None,
         models: list[str], run_missing: bool = False, say: SayFn | None = None) -> DiffResult:
    """`promptctl diff`: find (or evaluate) both sides, then compare them row by row."""
    ref = find_prompt(store, config, prompt) if prompt is not None else None
    sides = Sides(store, config, ref, run_missing, say or (lambda _m: None))
    if len(models) > 2:
        raise InputError("--model at most twice", fix="diff compares two sides")
    if len(models) == 2 and a is None and b is None:
        if ref is None:
            raise InputError("comparing two models needs --prompt",
                             fix=f"promptctl diff --prompt NAME -m {models[0]} -m {models[1]}")
        sides.common_version(models)
        a_id, b_id = sides.by_model(models[0]), sides.by_model(models[1])
    elif a is not None and b is not None and not models and sides.are_models([a, b]):
        sides.common_version([a, b])
        a_id, b_id = sides.by_model(a), sides.by_model(b)
    elif a is not None and b is not None and len(models) <= 1:
        one = models[0] if models else None
        a_id, b_id = sides.run_or_ref(a, one), sides.run_or_ref(b, one)
        if one is None:
            sides.same_model(a_id, b_id)
    else:
        raise InputError("diff needs two runs (A B), or --prompt with --model twice",
                         fix="e.g. promptctl diff RUN_A RUN_B, promptctl diff main HEAD --prompt NAME, "
                         "or promptctl diff --prompt NAME -m gpt-4o-mini -m gpt-4o")
    result = compare_runs(store, a_id, b_id)
    return replace(result, warnings=(*sides.notes, *result.warnings))
