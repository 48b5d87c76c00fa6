"""`promptctl eval --batch`: the OpenAI Batch API of the fake server, end to end."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fakeserver import FakeOpenAI
from tests.helpers import ECHO_WORDS, cli_process, eval_json, eval_run, invoke, runs_json, show_rows

pytestmark = [pytest.mark.both_stores,  # run on SQLite, then on PostgreSQL
              pytest.mark.usefixtures("quick_polls")]

# gpt-4o-mini's built-in price is $0.15 / $0.60 per million tokens; batches cost half.
BATCH_IN, BATCH_OUT = 0.075, 0.30
# The fake server counts words: "Question one" is 2 prompt tokens, "echo: Question one" 3.
PROMPT_TOKENS, COMPLETION_TOKENS = 2, 3


@pytest.fixture
def project(api: FakeOpenAI, echo_project: Path) -> Path:
    return echo_project


def uploaded(api: FakeOpenAI) -> list[list[dict[str, Any]]]:
    """The request lines of every JSONL file uploaded, in upload order."""
    files = []
    for record in api.requests:
        if record.method == "POST" and record.path == "/v1/files":
            content = record.body["file"]["content"]
            files.append([json.loads(line) for line in content.splitlines()])
    return files


def test_batch_run_stores_scored_answers_at_batch_prices(api: FakeOpenAI, project: Path) -> None:
    api.batch_polls = (1, 2)
    run, result = eval_json("prompts/echo.yaml", "--batch")
    assert run["status"] == "complete" and run["coverage"]["full"] is True
    assert run["n"] == 5 and run["errors"] == 0
    assert run["metrics"]["exact_match"]["value"] == 1.0
    assert run["tokens"] == {"prompt": 5 * PROMPT_TOKENS, "completion": 5 * COMPLETION_TOKENS}
    expected_cost = (10 * BATCH_IN + 15 * BATCH_OUT) / 1e6  # 5.25e-6, half of 10.5e-6
    assert run["cost_usd"] == pytest.approx(expected_cost, rel=1e-9)
    assert run["batch"]["price_factor"] == 0.5
    assert run["batch"]["submitted"] == 1
    (batch,) = run["batch"]["batches"]
    assert batch["status"] == "completed" and batch["requests"] == 5
    # Nothing went to the chat endpoint: one upload, one batch, the polls, the downloads.
    assert api.chat_requests == []
    assert len(api.batch_creations) == 1
    created = api.batch_creations[0].body
    assert created["endpoint"] == "/v1/chat/completions" and created["completion_window"] == "24h"
    assert created["metadata"] == {"promptctl_run": run["id"]}
    polls = [r for r in api.requests if r.method == "GET" and r.path.startswith("/v1/batches/")]
    assert len(polls) == 4  # validating once, in progress twice, then completed
    (lines,) = uploaded(api)
    assert [line["custom_id"] for line in lines] == [f'["eval","r{i}",0]' for i in range(1, 6)]
    assert lines[0]["url"] == "/v1/chat/completions" and lines[0]["method"] == "POST"
    assert lines[0]["body"] == {"max_tokens": 16, "temperature": 0, "model": "gpt-4o-mini",
                                "messages": [{"role": "user", "content": "Question one"}]}
    rows = show_rows(run["id"])
    assert [r["answer"] for r in rows] == ECHO_WORDS
    assert all(r["completion"] == f"echo: Question {w}" for r, w in zip(rows, ECHO_WORDS, strict=True))
    assert all(r["error"] is None and r["scores"]["exact_match"] == 1.0 for r in rows)


def test_few_shot_examples_and_repeats_are_batched_as_their_own_requests(
        api: FakeOpenAI, project: Path) -> None:
    prompt = (project / "prompts" / "echo.yaml").read_text(encoding="utf-8")
    prompt += "examples:\n  - input: {q: zero}\n    expected: zero\n"
    (project / "prompts" / "echo.yaml").write_text(prompt, encoding="utf-8")
    run = eval_run("prompts/echo.yaml", "--batch", "--repeat", "2", "--limit", "2")
    (lines,) = uploaded(api)
    assert sorted(line["custom_id"] for line in lines) == sorted(
        f'["{kind}","{row}",{sample}]' for kind, row in
        [("fewshot", "ex1"), ("eval", "r1"), ("eval", "r2")] for sample in (0, 1))
    # Two rows and one example, two samples each: the metrics rest on the rows.
    assert (run["n"], run["samples"]) == (2, 4)
    assert run["fewshot_metrics"]["exact_match"]["n"] == 1
    assert run["consistency"] is not None


def test_the_terminal_summary_names_the_batch_and_its_price(api: FakeOpenAI, project: Path) -> None:
    result = invoke("eval", "prompts/echo.yaml", "--batch")
    batch_id = next(iter(api.batches))
    assert f"batch API  1 batch(es) {batch_id}  priced at 50% of the standard price" in result.stdout


def test_a_second_run_is_answered_by_the_cache(api: FakeOpenAI, project: Path) -> None:
    first = eval_run("prompts/echo.yaml", "--batch")
    second = eval_run("prompts/echo.yaml", "--batch")
    assert len(api.batch_creations) == 1
    assert second["cached"] == 5 and second["n"] == 5
    assert second["metrics"] == first["metrics"]
    assert second["batch"]["batches"] == [] and second["batch"]["submitted"] == 0
    # The batch's answers are the same cache a direct run reads.
    direct = eval_run("prompts/echo.yaml")
    assert direct["cached"] == 5 and api.chat_requests == []


def test_only_uncached_requests_are_batched(api: FakeOpenAI, project: Path) -> None:
    eval_run("prompts/echo.yaml", "--limit", "2")  # r1, r2 answered directly
    run = eval_run("prompts/echo.yaml", "--batch")
    assert run["cached"] == 2 and run["n"] == 5
    (lines,) = uploaded(api)
    assert [line["custom_id"] for line in lines] == ['["eval","r3",0]', '["eval","r4",0]',
                                                     '["eval","r5",0]']


def test_failed_lines_are_error_rows_and_resume_sends_them_again(api: FakeOpenAI,
                                                                project: Path) -> None:
    api.batch_fail.append(("three", 500, "error"))  # in the error file
    api.batch_fail.append(("four", 400, "output"))  # a non-200 line of the output file
    run, result = eval_json("prompts/echo.yaml", "--batch", code=3)
    assert run["n"] == 5 and run["errors"] == 2
    assert "2 request(s) failed" in result.stderr
    rows = {r["row_id"]: r for r in show_rows(run["id"])}
    assert rows["r3"]["error"] == "HTTP 500: The server had an error while processing your request."
    assert rows["r4"]["error"] == "HTTP 400: Bad request."
    assert rows["r3"]["completion"] is None and rows["r3"]["scores"] in (None, {})
    assert run["metrics"]["exact_match"]["value"] == 1.0  # the three answered rows
    assert run["metrics"]["exact_match"]["n"] == 3
    # Failed lines are not cached: resuming sends just those two, again by batch.
    api.batch_fail.clear()
    resumed = eval_run("--resume", run["id"])
    assert resumed["errors"] == 0 and resumed["n"] == 5
    assert len(api.batch_creations) == 2
    assert [line["custom_id"] for line in uploaded(api)[1]] == ['["eval","r3",0]', '["eval","r4",0]']


def test_odd_result_lines_become_errors_or_no_text_rows(api: FakeOpenAI, project: Path) -> None:
    def reshape(body: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
        text = body["messages"][-1]["content"]
        if text.endswith("two"):
            return {**document, "choices": []}
        if text.endswith("three"):
            document["choices"][0]["message"] = {"role": "assistant", "content": None,
                                                 "tool_calls": [{"function": {"name": "lookup"}}]}
        return document

    api.reshape = reshape
    run = eval_run("prompts/echo.yaml", "--batch", code=3)
    rows = {r["row_id"]: r for r in show_rows(run["id"])}
    assert rows["r2"]["error"] == "the response has no choices[0].message"
    assert rows["r3"]["error"] is None and rows["r3"]["completion"] is None
    assert rows["r3"]["extract_error"] == "no text answer: the model called a tool (lookup)"
    assert run["errors"] == 1 and run["no_text"] == 1


def test_an_expired_batch_keeps_its_answers_and_errors_the_rest(api: FakeOpenAI,
                                                               project: Path) -> None:
    api.batch_expire_after = 2
    run = eval_run("prompts/echo.yaml", "--batch", code=3)
    assert run["batch"]["batches"][0]["status"] == "expired"
    rows = {r["row_id"]: r for r in show_rows(run["id"])}
    assert [rows[f"r{i}"]["answer"] for i in (1, 2)] == ["one", "two"]
    for i in (3, 4, 5):
        assert rows[f"r{i}"]["error"] == ("batch error batch_expired: This request could not be "
                                          "executed before the completion window expired.")
    assert run["errors"] == 3
    assert run["cost_usd"] == pytest.approx((4 * BATCH_IN + 6 * BATCH_OUT) / 1e6, rel=1e-9)


def test_requests_missing_from_an_expired_batch_are_error_rows(api: FakeOpenAI,
                                                               project: Path) -> None:
    api.batch_expire_after = 4
    api.batch_expired_in_error_file = False  # the batch's files say nothing of r5
    run = eval_run("prompts/echo.yaml", "--batch", code=3)
    (r5,) = [r for r in show_rows(run["id"]) if r["row_id"] == "r5"]
    batch_id = run["batch"]["batches"][0]["id"]
    assert r5["error"] == (f"the batch {batch_id} expired (24 h) before this request was "
                           "processed; resume the run to send it again")
    assert run["errors"] == 1


def test_a_batch_refused_at_validation_makes_every_row_an_error(api: FakeOpenAI,
                                                               project: Path) -> None:
    api.batch_refuse = "The model gpt-4o-mini is not available in the batch API."
    run = eval_run("prompts/echo.yaml", "--batch", code=3)
    batch_id = run["batch"]["batches"][0]["id"]
    assert run["batch"]["batches"][0]["status"] == "failed"
    assert run["errors"] == 5 and run["cost_usd"] == 0
    errors = {r["error"] for r in show_rows(run["id"])}
    assert errors == {f"the batch {batch_id} failed: The model gpt-4o-mini is not available in "
                      "the batch API."}


def test_dry_run_estimates_at_batch_prices(api: FakeOpenAI, project: Path) -> None:
    def plan(*args: str) -> dict[str, Any]:
        result = invoke("eval", "prompts/echo.yaml", "--dry-run", "--json", *args)
        (found,) = json.loads(result.stdout)["dry_run"]
        assert isinstance(found, dict)
        return found

    direct, batched = plan(), plan("--batch")
    assert direct["estimated_cost_usd_max"] > 0
    assert batched["estimated_cost_usd_max"] == pytest.approx(direct["estimated_cost_usd_max"] / 2,
                                                              abs=1e-6)
    assert api.requests == []


@pytest.mark.parametrize(("env", "value", "sizes"), [
    ("PROMPTCTL_BATCH_MAX_REQUESTS", "2", [2, 2, 1]),
    # Each line is 175 to 177 bytes: 400 bytes hold two.
    ("PROMPTCTL_BATCH_MAX_BYTES", "400", [2, 2, 1]),
    ("PROMPTCTL_BATCH_MAX_BYTES", "1", [1, 1, 1, 1, 1]),
])
def test_large_sets_are_split_under_the_limits(api: FakeOpenAI, project: Path,
                                               monkeypatch: pytest.MonkeyPatch, env: str,
                                               value: str, sizes: list[int]) -> None:
    monkeypatch.setenv(env, value)
    run = eval_run("prompts/echo.yaml", "--batch")
    files = uploaded(api)
    assert [len(f) for f in files] == sizes
    if env.endswith("BYTES") and value != "1":
        sent = [r.body["file"]["content"] for r in api.requests if r.path == "/v1/files"]
        assert all(len(content.encode()) <= 400 for content in sent)
    assert len(api.batch_creations) == len(sizes)
    assert sorted(line["custom_id"] for f in files for line in f) == \
        sorted(f'["eval","r{i}",0]' for i in range(1, 6))
    assert run["n"] == 5 and run["errors"] == 0
    assert [b["requests"] for b in run["batch"]["batches"]] == sizes


def test_a_server_without_the_batch_api_exits_2_with_the_fix(api: FakeOpenAI,
                                                            project: Path) -> None:
    api.batch_api = False
    result = invoke("eval", "prompts/echo.yaml", "--batch", code=2)
    assert "does not offer the Batch API: POST /files answered HTTP 404" in result.stderr
    assert "drop --batch" in result.stderr
    assert api.chat_requests == []


def test_a_local_model_has_no_batch_api(project: Path) -> None:
    result = invoke("eval", "prompts/echo.yaml", "--batch", "--model", "local/smollm2", code=2)
    assert "endpoint 'local' (type llamacpp) does not offer the Batch API" in result.stderr
    assert "drop --batch" in result.stderr


def test_batch_and_cache_only_contradict(project: Path) -> None:
    result = invoke("eval", "prompts/echo.yaml", "--batch", "--cache-only", code=2)
    assert "--batch and --cache-only" in result.stderr


def test_a_bad_poll_interval_names_the_variable(api: FakeOpenAI, project: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTCTL_BATCH_POLL", "soon")
    result = invoke("eval", "prompts/echo.yaml", "--batch", code=2)
    assert "$PROMPTCTL_BATCH_POLL is 'soon'" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_stopped_command_resumes_by_reattaching(api: FakeOpenAI, project: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  sig: signal.Signals) -> None:
    monkeypatch.setenv("PROMPTCTL_BATCH_POLL", "0.05")
    api.batch_polls = (10**6, 0)  # validating until the test lets it run
    proc = cli_process("eval", "prompts/echo.yaml", "--batch", cwd=project)
    deadline = time.monotonic() + 60
    # A poll comes after the batch id is stored with the run.
    while not any(r.method == "GET" and r.path.startswith("/v1/batches/") for r in api.requests):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    (run,) = runs_json()
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err
        assert (f"finish it with: promptctl eval --resume {run['id']} (its batches keep running "
                "on the server; the resume re-attaches to them)") in err
    else:
        assert proc.returncode == -signal.SIGKILL
    api.batch_polls = (0, 0)
    resumed = eval_run("--resume", run["id"])
    assert resumed["n"] == 5 and resumed["errors"] == 0 and resumed["status"] == "complete"
    assert len(api.batch_creations) == 1 and resumed["batch"]["reattached"] == 1


def test_a_batch_the_server_no_longer_knows_is_a_provider_error(api: FakeOpenAI, project: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    api.batch_polls = (10**6, 0)
    monkeypatch.setenv("PROMPTCTL_BATCH_POLL", "0.01")
    proc = cli_process("eval", "prompts/echo.yaml", "--batch", cwd=project)
    deadline = time.monotonic() + 60
    while not any(r.method == "GET" and r.path.startswith("/v1/batches/") for r in api.requests):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    (run,) = runs_json()
    api.batches.clear()
    result = invoke("eval", "--resume", run["id"], code=3)
    assert "GET /batches/" in result.stderr and "answered HTTP 404 (it no longer exists" in result.stderr
    assert "does not offer the Batch API" not in result.stderr
