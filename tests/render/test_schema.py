"""Every `--json` document validates against its published JSON Schema in docs/schema/.

The documents are real: the CLI runs against the fake server on prompt runs, pipeline runs,
judged runs, runs with configured scorers, --repeat, --samples and --batch runs, runs with failed
requests, and a `check` in a git repository. Each schema is itself checked against the
draft 2020-12 meta-schema, and a command that prints `--json` without a schema file fails.
"""

from __future__ import annotations

import copy
import json
import sqlite3
import textwrap
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import typer.main
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from promptctl.cli.app import app
from tests import agentkit, helpers, pipelinekit, toolkit
from tests.checkrepo import Repo, prompt_text, reply, repo
from tests.fakeserver import Body, FakeOpenAI, last_user_message, letter_vector
from tests.helpers import ECHO_PROMPT, commit_all, git_identity, git_init, invoke, write_echo_project
from tests.judgekit import judge_reply, write_judged_project

__all__ = ["repo"]  # the fixture of tests.checkrepo, for the check test

SCHEMA_DIR = helpers.REPO / "docs" / "schema"

# The schema of each command's --json document; a command with --dry-run has a second one.
SCHEMAS = {
    "eval": "eval.schema.json",
    "eval --dry-run": "eval-dry-run.schema.json",
    "rescore": "rescore.schema.json",
    "runs": "runs.schema.json",
    "show": "show.schema.json",
    "diff": "diff.schema.json",
    "history": "history.schema.json",
    "check": "check.schema.json",
    "compat": "compat.schema.json",
    "validate": "validate.schema.json",
    "cache stats": "cache-stats.schema.json",
    "cache clear": "cache-clear.schema.json",
    "store import": "store-import.schema.json",
    "store check": "store-check.schema.json",
    "probe": "probe.schema.json",
    "tune": "tune.schema.json",
    "tune --dry-run": "tune.schema.json",
}
# Schemas the others refer to rather than documents of their own.
SHARED = {"run.schema.json"}


def load_schemas() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(SCHEMA_DIR.glob("*.json"))}


SCHEMA_FILES = load_schemas()
REGISTRY: Registry[Any] = Registry().with_resources(
    (name, Resource.from_contents(schema)) for name, schema in SCHEMA_FILES.items())


def validator(command: str) -> Draft202012Validator:
    return Draft202012Validator(SCHEMA_FILES[SCHEMAS[command]], registry=REGISTRY)


def problems(command: str, document: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:300]}"
            for e in validator(command).iter_errors(document)]


def check(command: str, document: Any) -> Any:
    """`document` as the valid --json output of `command`, or a failure listing why not."""
    found = problems(command, document)
    assert not found, f"`{command} --json` does not match {SCHEMAS[command]}:\n" + "\n".join(found)
    return document


def command_of(args: tuple[str, ...]) -> str:
    """The key of SCHEMAS for the command line `args`."""
    if args[0] in ("cache", "store"):
        return f"{args[0]} {args[1]}"
    if args[0] in ("eval", "tune") and "--dry-run" in args:
        return f"{args[0]} --dry-run"
    return args[0]


def run_json(*args: str, code: int = 0) -> Any:
    """The parsed output of `promptctl ARGS --json`, validated against its schema."""
    return check(command_of(args), json.loads(invoke(*args, "--json", code=code).stdout))


# -- the schema files themselves ---------------------------------------------------------------


def json_commands() -> set[str]:
    """Every command (as typed, `cache stats` for subcommands) that takes --json; a command
    that takes --dry-run too counts its dry run as one more document."""
    found: set[str] = set()

    def walk(command: Any, path: list[str]) -> None:
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, [*path, name])
        options = {opt for param in command.params for opt in getattr(param, "opts", [])}
        if "--json" in options:
            found.add(" ".join(path))
            if "--dry-run" in options:
                found.add(" ".join(path) + " --dry-run")

    walk(typer.main.get_command(app), [])
    return found


def test_there_are_schema_files() -> None:
    assert set(SCHEMAS.values()) | SHARED <= set(SCHEMA_FILES)


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_each_schema_is_a_valid_draft_2020_12_schema(name: str) -> None:
    schema = SCHEMA_FILES[name]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == name  # how the schemas refer to each other
    Draft202012Validator.check_schema(schema)


def test_every_command_with_json_output_has_a_schema_file() -> None:
    commands = json_commands()
    assert {"eval", "eval --dry-run", "show", "check"} <= commands  # the walk finds commands
    missing = sorted(c for c in commands if c not in SCHEMAS or SCHEMAS[c] not in SCHEMA_FILES)
    assert not missing, f"--json without a schema in docs/schema/: {missing}"


def test_no_schema_file_is_left_over() -> None:
    stale = set(SCHEMA_FILES) - set(SCHEMAS.values()) - SHARED
    assert not stale, f"schema files of no --json command: {sorted(stale)}"
    assert set(SCHEMAS) == json_commands()


def test_every_reference_resolves() -> None:
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for name, schema in SCHEMA_FILES.items():
        resolver = REGISTRY.resolver(base_uri=name)
        for ref in refs(schema):
            resolver.lookup(ref)  # raises on a dangling reference


# -- the schemas reject what the commands never print --------------------------------------------

RUN: dict[str, Any] = {
    "id": "01abc", "prompt": "echo", "prompt_path": "prompts/echo.yaml", "prompt_version": "0" * 64,
    "git_commit": None, "git_dirty": None, "git_branch": None, "model": "gpt-4o-mini",
    "endpoint": "openai", "base_url": "https://api.openai.com/v1",
    "evalset": "evalsets/echo.jsonl", "evalset_version": "1" * 64,
    "status": "complete",
    "coverage": {"full": True, "rows": 1, "planned": 1, "evalset_rows": 1, "limit": None},
    "kind": "prompt", "parent_run": None, "created_at": "2026-01-01T00:00:00.000Z", "n": 1,
    "samples": 1,
    "errors": 0, "no_text": 0, "metrics": {"exact_match": {"value": 1.0, "n": 1, "ci95": [1.0, 1.0]}},
    "fewshot_metrics": {}, "tokens": {"prompt": 2, "completion": 3}, "cost_usd": None,
    "spent_usd": 0.0, "saved_usd": None,
    "latency_ms": {"p50": 1.0, "p75": 1.0, "p90": 1.0, "p99": 1.0}, "cached": 0, "scorers": {},
    "retries": 0, "system_fingerprints": [], "consistency": None,
}


def test_a_minimal_run_is_valid() -> None:
    check("eval", {"runs": [RUN]})


@pytest.mark.parametrize(("path", "value"), [
    ((), {"unknown_key": 1}),                                       # the run's keys are closed
    (("metrics", "exact_match"), {"ci95": [0.5]}),                  # an interval has two ends
    (("metrics", "exact_match"), {"value": "1.0"}),                 # numbers are numbers
    (("metrics", "exact_match"), {"kind": "vibes"}),                # known metric kinds only
    ((), {"status": "done"}),
    ((), {"kind": "pipeline"}),                                     # a pipeline has steps
    ((), {"steps": {}}),                                            # a prompt run has none
    (("tokens",), {"cached": 3}),
    ((), {"git_dirty": "no"}),
])
def test_a_run_unlike_any_the_commands_print_is_refused(path: tuple[str, ...], value: dict[str, Any]
                                                        ) -> None:
    run = copy.deepcopy(RUN)
    target: Any = run
    for key in path:
        target = target[key]
    target.update(value)
    assert problems("eval", {"runs": [run]})


def test_a_missing_required_key_is_refused() -> None:
    run = {k: v for k, v in RUN.items() if k != "cost_usd"}
    assert problems("eval", {"runs": [run]})
    assert problems("show", {"run": RUN, "rows": [{"row_id": "r1"}]})


# -- real documents ------------------------------------------------------------------------------


@pytest.fixture
def git_echo(api: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The echo project, committed in a git repository (runs record commit and branch)."""
    git_identity(monkeypatch)
    root = write_echo_project(git_init(tmp_path / "proj"))
    (root / ".gitignore").write_text(".promptctl/\n", encoding="utf-8")
    monkeypatch.chdir(root)
    commit_all(root, "echo prompt")
    return root


def test_prompt_runs_and_every_command_that_reads_them(git_echo: Path, tmp_path: Path) -> None:
    (first,) = run_json("eval", "prompts/echo.yaml")["runs"]
    assert first["kind"] == "prompt" and first["git_commit"] and first["n"] == 5
    (second,) = run_json("eval", "prompts/echo.yaml", "--no-cache", "--limit", "3")["runs"]
    assert second["coverage"]["full"] is False
    plans = run_json("eval", "prompts/echo.yaml", "--dry-run")["dry_run"]
    assert plans[0]["cached"] == 5
    assert len(run_json("runs")["runs"]) == 2
    shown = run_json("show", first["id"])
    assert len(shown["rows"]) == 5 and shown["rows"][0]["has_expected"] is True
    compared = run_json("diff", first["id"], second["id"])
    assert compared["paired_rows"] == 3 and compared["only_in_a"] == 2
    history = run_json("history", "echo")
    assert history["versions"][0]["subject"] == "echo prompt"
    assert run_json("validate")["ok"] is True
    (git_echo / "evalsets" / "bad.jsonl").write_text('{"id": "x", "input": 3}\n', encoding="utf-8")
    bad = run_json("validate", code=2)
    assert bad["ok"] is False and any(f["line"] == 1 for f in bad["files"] if not f["ok"])
    assert run_json("cache", "stats")["entries"] == 5
    assert run_json("cache", "clear", "--older-than", "30d")["deleted"] == 0
    export = tmp_path / "export.jsonl"
    export.write_text(invoke("store", "export").stdout, encoding="utf-8")
    imported = run_json("store", "import", str(export))
    assert sorted(imported["unchanged"]) == sorted([first["id"], second["id"]])
    assert run_json("store", "check") == {"store": str(tmp_path / "store" / "results.db"),
                                          "runs": 2, "rows": 8, "malformed": []}
    with closing(sqlite3.connect(tmp_path / "store" / "results.db")) as db, db:
        db.execute("UPDATE runs SET summary = '[]' WHERE id = ?", (second["id"],))
        db.execute("UPDATE rows SET scores = '{' WHERE run_id = ? AND row_id = 'r2'", (first["id"],))
    found = run_json("store", "check", code=1)["malformed"]
    assert [(m["run"], m["row"]) for m in found] == [(first["id"], "eval row r2 sample 0"),
                                                     (second["id"], None)]


def test_tokens_cost_and_latency_of_a_diff_and_a_history(git_echo: Path) -> None:
    # gpt-4o-mini has a price; a model without one has an unknown cost (null, never 0).
    (first,) = run_json("eval", "prompts/echo.yaml")["runs"]
    (cached,) = run_json("eval", "prompts/echo.yaml")["runs"]
    (unpriced,) = run_json("eval", "prompts/echo.yaml", "--model", "no-price-model")["runs"]
    usage = run_json("diff", first["id"], cached["id"])["usage"]
    assert usage["cost_usd"]["delta"] == 0 and usage["cost_usd"]["unknown"] is None
    assert usage["latency_ms"]["cached_excluded"] == 5 and usage["latency_ms"]["p50"]["a"] is None
    usage = run_json("diff", first["id"], unpriced["id"])["usage"]
    assert usage["cost_usd"]["b"] is None and usage["cost_usd"]["unknown"]
    assert usage["latency_ms"]["p90"]["n"] == 5
    costs = {v["model"]: v["cost_per_row"] for v in run_json("history", "echo")["versions"]}
    assert costs["no-price-model"] is None and costs["gpt-4o-mini"] > 0
    # A figure without its `unknown`, or a bare number for the cost, is refused.
    broken = copy.deepcopy(usage)
    del broken["tokens"]["total"]["unknown"]
    document = run_json("diff", first["id"], unpriced["id"])
    assert problems("diff", {**document, "usage": broken})
    assert problems("diff", {**document, "usage": {**usage, "cost_usd": 0}})


# Per word, the calls (counted across both runs of the test) answered with a wrong word: in
# the first run `one` is wrong once in three samples; in the second `two` is wrong twice.
WRONG_CALLS = {"one": {0}, "two": {3, 4}}


class Flaky:
    """A responder whose answers to the same request differ from call to call, by a count
    kept per word, so the outcome does not depend on the order requests arrive in."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()

    def __call__(self, body: Body) -> str:
        word = str(body["messages"][-1]["content"]).split()[-1]
        with self.lock:
            call = self.calls.get(word, 0)
            self.calls[word] = call + 1
        return f"echo: Question {'zzz' if call in WRONG_CALLS.get(word, ()) else word}"


def test_repeat_runs_and_their_diff(api: FakeOpenAI, echo_project: Path) -> None:
    api.responder = Flaky()
    (a,) = run_json("eval", "prompts/echo.yaml", "--repeat", "3")["runs"]
    assert a["consistency"]["k"] == 3
    assert [r["row_id"] for r in a["consistency"]["flaky_rows"]] == ["r1"]
    (b,) = run_json("eval", "prompts/echo.yaml", "--repeat", "3", "--no-cache")["runs"]
    compared = run_json("diff", a["id"], b["id"])
    assert compared["samples"] == {"a": 3, "b": 3}
    flipped = compared["flipped"]
    assert [f["row_id"] for f in flipped["fail_to_pass"]] == ["r1"]
    assert [f["row_id"] for f in flipped["pass_to_fail"]] == ["r2"]
    assert flipped["pass_to_fail"][0]["pass_b"] == pytest.approx(1 / 3)
    run_json("show", a["id"])


def test_sampled_runs(api: FakeOpenAI, echo_project: Path) -> None:
    (voted,) = run_json("eval", "prompts/echo.yaml", "--samples", "3")["runs"]
    assert voted["self_consistency"]["requests"]["n"] == voted["n"]
    api.responder = Flaky()
    api.reject_param("n", when=lambda n: n != 1)
    (separate,) = run_json("eval", "prompts/echo.yaml", "--samples", "3",
                           "--temperature", "1")["runs"]
    assert "rejected n=3" in separate["self_consistency"]["note"]
    for run in (voted, separate):
        rows = run_json("show", run["id"])["rows"]
        assert all(len(r["self_consistency"]["samples"]) == 3 for r in rows)
    run_json("runs")


def test_batch_runs(api: FakeOpenAI, echo_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTCTL_BATCH_POLL", "0")
    (run,) = run_json("eval", "prompts/echo.yaml", "--batch")["runs"]
    assert run["batch"]["price_factor"] == 0.5 and run["batch"]["batches"]
    (plan,) = run_json("eval", "prompts/echo.yaml", "--dry-run", "--batch", "--no-cache")["dry_run"]
    assert plan["to_send"] == 5
    run_json("show", run["id"])


def test_probe_documents_and_the_probe_run(api: FakeOpenAI, echo_project: Path) -> None:
    def reply(body: Body) -> str:
        text = last_user_message(body)
        if "correct answer is exactly" in text:  # the generator: one usable input, one not
            return '```json\n["one", 42, "two"]\n```'
        return "echo: " + text  # the echo prompt answers each input's first word

    api.responder = reply
    document = run_json("probe", "prompts/echo.yaml", "--label", "one", "-n", "3",
                        "--save", "evalsets/probed.jsonl")["probe"]
    (label,) = document["labels"]
    assert (label["hits"], label["generated"]) == (1, 2)
    assert label["others"] == [{"answer": "two", "count": 1}]
    assert document["problems"] and document["saved"]["added"] == 2
    shown = run_json("show", document["run"])
    assert shown["run"]["probe"]["labels"][0]["hits"] == 1
    run_json("runs")
    run_json("validate", "evalsets/probed.jsonl")


@pytest.fixture
def judged(api: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = write_judged_project(tmp_path / "proj")
    monkeypatch.chdir(root)
    api.add_rule("JUDGE", judge_reply)
    return root


def test_judged_runs_rescore_and_comparisons(judged: Path) -> None:
    (run,) = run_json("eval", "prompts/echo.yaml")["runs"]
    assert run["metrics"]["long"]["kind"] == "llm_judge" and run["metrics"]["long"]["unscored"] == 1
    assert run["scorers"]["gpt-4o"]["requests"] == 5 and run["scoring_errors"]["long"]["count"] == 1
    (plan,) = run_json("eval", "prompts/echo.yaml", "--dry-run", "--no-cache")["dry_run"]
    assert plan["scorers"][0]["metric"] == "long"
    rows = run_json("show", run["id"])["rows"]
    assert all(r["judges"]["long"]["model"] == "gpt-4o" for r in rows)
    (again,) = run_json("rescore", run["id"], "--no-cache")["runs"]
    assert again["parent_run"] == run["id"]
    assert "long" in run_json("diff", run["id"], again["id"])["metrics"]
    run_json("history", "echo")
    run_json("runs")


SCORER = """\
def score(answer, expected, row):
    if row["id"] == "r3":
        raise ZeroDivisionError("boom on " + row["id"])
    return len(answer) / 10
"""

SCORED_PROMPT = ECHO_PROMPT.replace("metrics: [exact_match, format_validity]", textwrap.dedent("""\
    metrics:
      - exact_match
      - name: length
        custom: ../scorers/length.py:score
      - name: close
        similarity: {model: emb/text-embedding-3-small}
    examples:
      - input: {q: six}
        expected: six
    """))


def test_scorers_few_shot_examples_and_failed_requests(api: FakeOpenAI, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    api.embedder = letter_vector
    root = write_echo_project(tmp_path / "proj", SCORED_PROMPT)
    (root / "scorers").mkdir()
    (root / "scorers" / "length.py").write_text(SCORER, encoding="utf-8")
    (root / "promptctl.yaml").write_text(
        f"endpoints:\n  emb:\n    base_url: {api.base_url}\n    max_retries: 1\n", encoding="utf-8")
    monkeypatch.chdir(root)
    (plan,) = run_json("eval", "prompts/echo.yaml", "--dry-run")["dry_run"]
    assert plan["embeddings"]["close"]["texts_max"] > 0 and plan["fewshot_rows"] == 1
    api.fail_matching("Question four", status=400, times=1)
    (run,) = run_json("eval", "prompts/echo.yaml", code=3)["runs"]
    assert run["errors"] == 1 and run["fewshot_metrics"]["length"]["kind"] == "custom"
    assert run["metrics"]["close"]["kind"] == "similarity"
    assert run["scoring_errors"]["length"]["rows"][0]["row_id"] == "r3"
    rows = run_json("show", run["id"])["rows"]
    assert {r["kind"] for r in rows} == {"eval", "fewshot"}
    assert [r["row_id"] for r in rows if r["error"] is not None] == ["r4"]


def test_tool_call_runs(api: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # T1's calls as a broken server might send them: one not an object, one without a name.
    cases = {**toolkit.CASES, "T1": ({"tool_calls": ["junk", {"function": {"arguments": "{}"}}]},
                                     toolkit.CASES["T1"][1])}
    root = toolkit.write_project(tmp_path / "proj", cases=cases)
    monkeypatch.chdir(root)
    api.responder = lambda body: toolkit.answer(body, cases)
    (run,) = run_json("eval", "prompts/support.yaml")["runs"]
    assert run["metrics"]["tool_call_validity"]["n"] == 8
    rows = {r["row_id"]: r for r in run_json("show", run["id"])["rows"]}
    assert rows["t1"]["tool_calls"][0]["function"] is None
    assert rows["t1"]["tool_calls"][1]["function"]["name"] is None
    assert rows["t6"]["tool_calls"] == [] and rows["t2"]["tool_calls"][0]["id"]
    (again,) = run_json("eval", "prompts/support.yaml", "--no-cache")["runs"]
    assert run_json("diff", run["id"], again["id"])["metrics"]["tool_name"]["n"] == 10


@pytest.fixture
def pipeline_api(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    fake_openai.responder = pipelinekit.answer
    return helpers.use_fake_openai(monkeypatch, fake_openai, "sk-test-schema-8a7b6c5d4e3f")


def test_pipeline_runs_and_every_command_that_reads_them(pipeline_api: FakeOpenAI, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    git_identity(monkeypatch)
    root = git_init(tmp_path / "proj")
    pipelinekit.write_project(root)
    (root / ".gitignore").write_text(".promptctl/\n", encoding="utf-8")
    monkeypatch.chdir(root)
    commit_all(root, "support pipeline")
    (a,) = run_json("eval", "pipelines/support.yaml")["runs"]
    assert a["kind"] == "pipeline" and set(a["steps"]) == {"route", "refund", "products", "stock"}
    assert a["composability_gap"]["n"] == 5 and a["control_flow"] is not None
    (b,) = run_json("eval", "pipelines/support.yaml", "--no-cache")["runs"]
    rows = run_json("show", a["id"])["rows"]
    assert all(set(r["steps"]) == set(a["steps"]) for r in rows)
    assert any("items" in r["steps"]["stock"] for r in rows)
    run_json("diff", a["id"], b["id"])
    assert run_json("history", "support")["versions"]
    assert run_json("runs")["runs"][0]["kind"] == "pipeline"
    assert run_json("validate")["ok"] is True


def test_pipeline_steps_that_fail_or_cannot_be_sent(pipeline_api: FakeOpenAI, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "proj"
    pipelinekit.write_project(root, rows=[
        {"id": "r1", "input": {"text": "NOJSON #x"}, "expected": 0},         # for_each over no list
        {"id": "r2", "input": {"text": "FAILME refund $5"}, "expected": 5},  # its first step fails
    ])
    monkeypatch.chdir(root)
    pipeline_api.fail_matching("Route this ticket: FAILME", status=400)
    (run,) = run_json("eval", "pipelines/support.yaml", code=3)["runs"]
    assert run["errors"] == 1
    rows = {r["row_id"]: r for r in run_json("show", run["id"])["rows"]}
    assert rows["r1"]["steps"]["stock"]["unrendered"] is True
    assert rows["r2"]["steps"]["refund"]["not_run"] and rows["r2"]["steps"]["route"]["error"]


def test_agent_runs_and_every_command_that_reads_them(fake_openai: FakeOpenAI, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fake_openai.responder = agentkit.answer
    helpers.use_fake_openai(monkeypatch, fake_openai, "sk-test-schema-agent-1b2c3d4e5f6a")
    git_identity(monkeypatch)
    root = git_init(tmp_path / "proj")
    agentkit.write_project(root)
    (root / ".gitignore").write_text(".promptctl/\n", encoding="utf-8")
    monkeypatch.chdir(root)
    commit_all(root, "calc agent")
    (a,) = run_json("eval", "agents/calc.yaml")["runs"]
    assert a["kind"] == "agent" and a["agent"]["turn_limit"] == 1
    assert a["agent"]["tool_selection"]["n"] == 5
    (b,) = run_json("eval", "agents/calc_react.yaml")["runs"]
    assert b["kind"] == "agent" and b["agent"]["tool_selection"]["value"] == 1.0
    rows = run_json("show", a["id"])["rows"]
    assert all(r["trajectory"]["turns"] for r in rows)
    assert run_json("show", b["id"])["rows"][0]["trajectory"]["protocol"] == "react"
    (c,) = run_json("eval", "agents/calc.yaml", "--no-cache")["runs"]
    run_json("diff", a["id"], c["id"])
    assert run_json("history", "calc")["versions"]
    assert run_json("runs")["runs"][0]["kind"] == "agent"
    assert run_json("validate")["ok"] is True


def test_check_documents(repo: Repo) -> None:
    repo.write("prompts/score.yaml", prompt_text(style="BREAK 15"))
    repo.write("prompts/fresh.yaml", prompt_text().replace("name: score", "name: fresh"))
    repo.commit("worse, and a new prompt")
    result = run_json("check", code=1)
    assert result["exit_code"] == 1
    by_name = {p["prompt"]: p for p in result["prompts"]}
    assert by_name["score"]["status"] == "fail" and by_name["score"]["comparison"] is not None
    assert by_name["fresh"]["new"] is True and by_name["fresh"]["comparison"] is None
    assert {g["status"] for p in result["prompts"] for g in p["gates"]} >= {"pass", "fail", "skip"}


def test_tune_documents(fake_openai: FakeOpenAI, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.cli.test_tune import PROMPT, magic_reply, rows

    git_identity(monkeypatch)
    root = git_init(tmp_path / "tune")
    (root / "prompts").mkdir()
    (root / "evalsets").mkdir()
    (root / "prompts" / "double.yaml").write_text(PROMPT)
    (root / "evalsets" / "double.jsonl").write_text(rows())
    (root / "pool.jsonl").write_text(rows(2, start=200, note="MAGIC").replace('"r2', '"m2'))
    commit_all(root, "double")
    fake_openai.responder = magic_reply
    helpers.use_fake_openai(monkeypatch, fake_openai, "sk-test-schema")
    monkeypatch.chdir(root)
    assert run_json("tune", "prompts/double.yaml", "--dry-run")["estimate"] is not None
    done = run_json("tune", "prompts/double.yaml", "--pool", "pool.jsonl", "--strategy", "both",
                    "--proposals", "1")
    assert done["written"] is True and done["test"] is not None
    # Stopped by the budget: skipped candidates, no test.
    run_json("tune", "prompts/double.yaml", "--budget", "60", "--seed", "3")
    # The searches' runs, listed by history apart from the versions.
    searches = run_json("history", "double")["searches"]
    assert len(searches) == 2 and {r["part"] for r in searches[1]["runs"]} == {
        "train", "validation", "test"}


def test_compat_documents(repo: Repo, fake_openai: FakeOpenAI) -> None:
    def by_model(body: Body) -> str:
        # model-b answers the first 15 items wrongly: a regression past max_regression.
        item = int(str(body["messages"][-1]["content"]).split()[-1])
        return f"Answer: {item + 100}" if body["model"] == "model-b" and item <= 15 else reply(body)

    fake_openai.responder = by_model
    repo.write("prompts/loose.yaml", prompt_text().replace("name: score", "name: loose")
               .replace("evalset: ../evalsets/score.jsonl\n", ""))
    result = run_json("compat", "--from", "model-a", "--to", "model-b", code=1)
    assert {f["status"] for f in result["files"]} == {"fail", "skip"}
    assert result["files"][1]["comparison"]["flipped"]["pass_to_fail"]
    repo.write("prompts/broken.yaml", prompt_text().replace("metrics:", "metricz:"))
    result = run_json("compat", "--from", "model-a", "--to", "model-b", code=2)
    assert [f["status"] for f in result["files"]] == ["error", "skip", "fail"]

