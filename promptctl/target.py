"""What the engine evaluates: a target.

A prompt and a pipeline (and whatever comes next: an agent) are targets. Each says what it
is (name, version, the files its result depends on, its eval set, model and metrics) and
how one row of an eval set runs; the engine does everything else the same way for all of
them: plan, send through one worker pool, store, summarise, finish, resume.

This module also holds the one loader: a target from the work tree, from a git ref, or as
a stored run had it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from promptctl._yaml import decode_utf8, load_yaml_text
from promptctl.agents import is_agent_file, is_agent_text, load_agent, parse_agent
from promptctl.errors import InputError, display_path
from promptctl.evalsets import EvalSet, Row, load_evalset_bytes
from promptctl.files import MAX_PROMPT_BYTES, Reference, project_root, read_file, reading_from
from promptctl.gitinfo import GitState, Repo, open_repo
from promptctl.metrics.registry import Metric
from promptctl.pipelines import (
    Pipeline,
    is_pipeline_file,
    is_pipeline_text,
    load_pipeline,
    parse_pipeline,
)
from promptctl.pipelines import _rel as pipeline_rel
from promptctl.project import EVALSETS_DIR, PIPELINES_DIR, PROMPTS_DIR, TARGET_DIRS, target_files
from promptctl.prompts import Prompt, load_prompt, parse_prompt
from promptctl.sampling import sampling_from_options
from promptctl.work import RowContext, WorkItem


class Target(Protocol):
    """A prompt, a pipeline, an agent: anything the engine evaluates row by row."""

    @property
    def kind(self) -> str: ...
    @property
    def path(self) -> Path: ...
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def model(self) -> str | None: ...
    @property
    def evalset(self) -> Path | None: ...
    @property
    def evalset_line(self) -> int | None: ...
    @property
    def thresholds(self) -> dict[str, Any]: ...
    @property
    def metrics(self) -> tuple[str, ...]: ...
    @property
    def examples(self) -> tuple[Row, ...]: ...

    @property
    def metric_objects(self) -> tuple[Metric, ...]:
        """The metrics of the final answer, in order: built-in and configured."""
        ...

    @property
    def configured_metrics(self) -> tuple[Metric, ...]:
        """The configured metrics of the final answer (judges, similarity, scorers)."""
        ...

    @property
    def all_configured_metrics(self) -> tuple[Metric, ...]:
        """Every configured metric the run scores (a pipeline's steps' too): checked before
        anything is sent, and recorded by identity so a resume can tell a change."""
        ...

    @property
    def files(self) -> list[Path]:
        """Every file the result depends on: the target's own, and the prompts, judges and
        scorers it uses."""
        ...

    @property
    def request_params(self) -> dict[str, Any]:
        """Parameters of the first request (checked before the run, and used to open the
        provider)."""
        ...

    @property
    def max_tokens(self) -> int:
        """The most completion tokens one request may ask (for rate limits)."""
        ...

    @property
    def run_params(self) -> Any:
        """The request parameters recorded with a run."""
        ...

    def run_options(self) -> dict[str, Any]:
        """What a run records beyond the common options, to be rebuilt on resume."""
        ...

    def load_evalset(self) -> EvalSet: ...

    def default_model(self) -> str | None:
        """The model to run when --model is not given."""
        ...

    def messages_for(self, row: Row) -> list[dict[str, str]]:
        """The request rendered up front for `row`, or [] when requests depend on answers."""
        ...

    def check_rows(self, rows: Iterable[Row], evalset_path: Path) -> None:
        """Raise, naming file and line, for a row that cannot run; before anything is sent."""
        ...

    async def run_row(self, item: WorkItem, ctx: RowContext) -> dict[str, Any]:
        """Run one row and return its stored record, scored."""
        ...

    def summary_extra(self, rows: Callable[[], Iterable[Mapping[str, Any]]]) -> dict[str, Any]:
        """What this kind adds to (or sets in) a run's summary, from its stored rows (read
        only by a kind that needs them, one at a time)."""
        ...


def inputs_of(target: Target) -> list[tuple[Path, str]]:
    """Every file the target's result depends on, each with what it is ("prompt file",
    "pipeline file", "prompt", "judge prompt", "scorer"), the target's own file first; its
    eval set apart; a pipeline's tool files and databases too. The one list `check`,
    `eval --ref` and stored runs go by."""
    kinds = {f: "judge prompt" if m.kind == "llm_judge" else "scorer" if m.kind == "custom"
             else f"{m.kind} file" for m in target.all_configured_metrics for f in m.files}
    if isinstance(target, Pipeline):  # a tool step's Python file, a sql step's database
        kinds.update((f, "database" if t.kind == "sql" else "tool") for t in target.tools
                     for f in t.files)
    kinds.update(dict.fromkeys(getattr(target, "tool_files", ()), "tool"))
    kinds.update(dict.fromkeys(getattr(target, "database_files", ()), "database"))
    own = f"{target.kind} file"
    return [(f, own if f == target.path else kinds.get(f, "prompt")) for f in target.files]


def metric_identities(target: Target) -> dict[str, Any]:
    """What defines the target's configured metrics (a judge prompt's sha256), recorded when a
    run starts so a resume can tell whether they changed."""
    found = {m.name: m.identity for m in target.all_configured_metrics if m.identity}
    return {"metric_identity": found} if found else {}


# --- the one loader -------------------------------------------------------------------------


def load_target(path: str | Path, root: Path | None = None) -> Target:
    """The prompt, pipeline or agent file at `path` (a pipeline says `kind: pipeline`, an
    agent `kind: agent`); an eval set named instead is an error that says which files name it
    (see `refuse_evalset`)."""
    refuse_evalset(Path(path), root)
    if is_pipeline_file(Path(path)):
        return load_pipeline(path, root)
    if is_agent_file(Path(path)):
        return load_agent(path, root)
    return load_prompt(path, root)


# How much of a file is read to tell an eval set from a prompt.
_SNIFF_BYTES = 65536


def is_evalset_file(path: Path, data: bytes | None = None) -> bool:
    """Whether the file at `path` (of bytes `data`, else read from disk) is an eval set, not a
    prompt or pipeline: by extension (.jsonl, .csv), then folder (a .yaml file in evalsets/
    is an eval set, in prompts/ or pipelines/ a prompt or pipeline), then content (YAML whose
    top level is a list: a prompt or pipeline file is a mapping). `validate` tells them apart
    by this rule too."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".csv"):
        return True
    if suffix not in (".yaml", ".yml") or path.parent.name in TARGET_DIRS:
        return False
    if path.parent.name == EVALSETS_DIR:
        return True
    if data is None:
        try:
            with open(path, "rb") as f:
                data = f.read(_SNIFF_BYTES)
        except OSError:
            return False
    for line in data[:_SNIFF_BYTES].decode("utf-8", "replace").splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "---", "%")):
            return stripped.startswith(("- ", "[")) or stripped == "-"
    return False


def _names_evalset(target_file: Path, evalset: Path, root: Path) -> bool:
    """Whether the prompt or pipeline file `target_file` (inside the project `root`) names
    `evalset` in its `evalset:` (a file that cannot be read as one names nothing)."""
    try:
        data = read_file(target_file, what="prompt file", max_bytes=MAX_PROMPT_BYTES, root=root)
        raw, _ = load_yaml_text(decode_utf8(data, target_file), target_file)
    except InputError:
        return False
    named = raw.get("evalset") if isinstance(raw, dict) else None
    if not isinstance(named, str) or not named.strip():
        return False
    return os.path.realpath(target_file.parent / named) == os.path.realpath(evalset)


def refuse_evalset(path: Path, root: Path | None = None, data: bytes | None = None) -> None:
    """Raise when the file at `path` (of bytes `data`, else on disk) is an eval set where a
    prompt or pipeline file is wanted (`eval`, `diff --prompt`, `history`, `check --prompt`):
    the error names the project's prompt and pipeline files whose `evalset:` names it."""
    if data is None and not path.is_file():
        return  # the loader says the file is missing
    if not is_evalset_file(path, data):
        return
    root = root if root is not None else project_root(path)
    naming = [display_path(f) for f in target_files(root) if _names_evalset(f, path, root)]
    if naming:
        which = "the prompt file that names it" if len(naming) == 1 else \
            "one of the prompt files that name it"
        fix = f"pass {which} in evalset: instead: {', '.join(naming)}"
    else:
        fix = (f"no prompt or pipeline file in {PROMPTS_DIR}/ or {PIPELINES_DIR}/ names it yet: "
               "add evalset: with its path (relative to the prompt file) to one and pass that "
               f"file, or run one on it with: promptctl eval {PROMPTS_DIR}/NAME.yaml --evalset "
               f"{display_path(path)}")
    raise InputError("this is an eval set, not a prompt or pipeline file", file=path, fix=fix)


def evalset_of(target: Target) -> EvalSet:
    """The eval set the target names, or an error naming its file and line."""
    evalset = target.evalset
    what = target.kind if target.kind in ("pipeline", "agent") else "prompt"
    if evalset is None:
        raise InputError(f"no eval set: the {what} names none", file=target.path,
                         fix=f"add evalset: ../evalsets/NAME.jsonl to the {what} file, or pass "
                         "--evalset FILE")
    if not evalset.exists() or evalset.is_dir():
        state = "is a directory" if evalset.is_dir() else "does not exist"
        raise InputError(f"the eval set named by evalset: {state}: {display_path(evalset)}",
                         file=target.path, line=target.evalset_line,
                         fix=f"fix the evalset: path (it is relative to the {what} file's folder), "
                         "or pass --evalset FILE")
    # Read inside the project only, as a regular file of sane size (see `files`).
    return target.load_evalset()


def model_of(target: Target, override: str | None = None) -> str:
    """The model to run: --model, else the target's own."""
    if override:
        return override
    spec = target.default_model()
    if spec:
        return spec
    if target.kind == "pipeline":
        assert isinstance(target, Pipeline)
        models = sorted({p.model for p in target.prompts.values() if p.model})
        if len(models) > 1:
            raise InputError(f"the pipeline's prompts name different models ({', '.join(models)})",
                             file=target.path, fix="add model: to the pipeline file, or pass "
                             "--model (a run uses one model for every step)")
        raise InputError("no model: neither the pipeline nor its prompts name one",
                         file=target.path, fix="add model: to the pipeline file, or pass --model")
    raise InputError("no model: the prompt names none", file=target.path,
                     fix="add model: to the prompt file, or pass --model")


@dataclass(frozen=True)
class TargetAt:
    """A target as committed at a ref, its eval set there (when it names one that exists
    there, and one was asked for), and the commit."""

    target: Target
    evalset: EvalSet | None
    git: GitState


def rel_in(path: Path, root: Path) -> str:
    """`path` relative to the repository root `root`, or an error naming it."""
    absolute = Path(os.path.normpath(os.path.abspath(path)))
    try:
        return absolute.relative_to(root).as_posix()
    except ValueError:
        raise InputError("file is outside the git work tree", file=path,
                         fix="use a path inside the repository") from None


class CommitFiles:
    """The project's files at one commit, for `files.reading_from`."""

    def __init__(self, repo: Repo, commit: str, ref: str) -> None:
        self.repo, self.commit = repo, commit
        self.root = repo.root
        self.where = f"at {ref} ({commit[:12]})" if not commit.startswith(ref) \
            else f"at {commit[:12]}"

    def read(self, path: Path, max_bytes: int) -> bytes | None:
        return self.repo.read(self.commit, rel_in(path, self.root), max_bytes=max_bytes)


def target_at_ref(path: str | Path, ref: str, *, with_evalset: bool = True) -> TargetAt:
    """The prompt or pipeline at `path` as committed at `ref`, with the prompts it names and
    its eval set at the same commit, read from git without touching the work tree (safe in a
    dirty checkout and in CI)."""
    path = Path(path)
    repo = open_repo(path, purpose="--ref needs the file to live in a git work tree")
    commit = repo.resolve(ref)
    data = repo.read(commit, rel_in(path, repo.root))
    if data is None:
        raise InputError(f"file did not exist at {ref} ({commit[:12]})", file=path,
                         fix="choose a ref where the file exists")
    refuse_evalset(path, repo.root, data)

    def load(p: Path, where: Reference) -> Prompt:
        rel = rel_in(p, repo.root)
        blob = repo.read(commit, rel)
        if blob is None:
            raise InputError(f"the prompt {rel} did not exist at {ref} ({commit[:12]})",
                             file=where.file, line=where.line, fix="choose a ref where it exists")
        return parse_prompt(blob, p, repo.root)

    # Judges, scorers and few-shot files come from the same commit as the file naming them;
    # scorers are loaded now, while the commit is the source (they load lazily otherwise).
    with reading_from(CommitFiles(repo, commit, ref)):
        target: Target = parse_pipeline(data, path, repo.root, load=load) \
            if is_pipeline_text(data) else parse_agent(data, path, repo.root) \
            if is_agent_text(data) else parse_prompt(data, path)
        for metric in target.all_configured_metrics:
            if metric.kind == "custom" and metric.check is not None:
                metric.check()
        # An agent's tools run as committed there too.
        for impl in getattr(target, "impls", {}).values():
            impl.load()
    evalset = None
    if with_evalset and target.evalset is not None:
        try:
            set_rel = rel_in(target.evalset, repo.root)
        except InputError:
            raise InputError(f"evalset: points outside the repository "
                             f"({display_path(target.evalset)})", file=target.path,
                             line=target.evalset_line,
                             fix="keep eval sets inside the repository") from None
        set_data = repo.read(commit, set_rel)
        if set_data is None:
            raise InputError(f"the eval set {set_rel} did not exist at {ref} ({commit[:12]})",
                             file=path, line=target.evalset_line,
                             fix="choose a ref where it exists, or pass --evalset FILE")
        evalset = load_evalset_bytes(set_data, target.evalset)
    return TargetAt(target, evalset,
                    GitState(root=repo.root, commit=commit, dirty=False, branch=None))


def target_from_run(run: Mapping[str, Any], root: Path) -> Target:
    """The target of a stored run as it was: its file, and a pipeline's prompts, from the
    sources stored with the run (editing the files meanwhile does not mix two versions)."""
    path = root / str(run.get("prompt_path") or "")
    source = str(run.get("prompt_source") or "").encode("utf-8")
    if run.get("kind") == "agent":
        agent = parse_agent(source, path, root)
        # The tools' code is not stored with the run: a resume runs it from the work tree,
        # so it must be the code the run started with (the version covers it).
        if agent.version != run.get("prompt_version"):
            changed = ", ".join(display_path(f) for f in agent.tool_files)
            raise InputError(f"run {run.get('id')}: the agent's tools changed since the run "
                             f"started ({changed})", file=path,
                             fix="restore the tools' code as it was to resume, or start a new "
                             "run (promptctl eval); its unchanged turns come from the cache")
        return agent
    if (run.get("kind") or "prompt") != "pipeline":
        prompt = parse_prompt(source, path)
        sampling = sampling_from_options(run.get("options") or {}, root)
        return prompt if sampling is None else dataclasses.replace(prompt, sampling=sampling)
    sources = (run.get("options") or {}).get("prompts") or {}

    def load(p: Path, where: Reference) -> Prompt:
        rel = pipeline_rel(p, root)
        if rel not in sources:
            raise InputError(f"run {run.get('id')} did not store the prompt {rel}", file=p,
                             fix="start a new run")
        return parse_prompt(str(sources[rel]["source"]).encode("utf-8"), p, root)

    return parse_pipeline(source, path, root, load=load)
