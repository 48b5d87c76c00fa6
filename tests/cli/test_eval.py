"""`promptctl eval` end to end: the real CLI and the real openai SDK against the fake server."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

from promptctl.providers.openai import BUILTIN_PRICES
from tests.fakeserver import FakeOpenAI, content_text, error_body, last_user_message, word_count
from tests.helpers import (
    ECHO_WORDS,
    REPO,
    copy_examples,
    eval_runs,
    invoke,
    runs_json,
    show_rows,
    use_fake_openai,
)

pytestmark = pytest.mark.both_stores  # run on SQLite, then on PostgreSQL

KEY = "sk-test-cli-3f9a1c7e5b2d4f60"
MODEL = "gpt-4o-mini"
USER_PREFIX = "Give this text a controversy score from 0 to 10.\n\n"

# Scripted answers: delta from the expected score per eval row, None for an unreadable reply.
DELTAS: dict[str, int | None] = {
    "c01": 0, "c02": 1, "c03": None, "c04": -2, "c05": 0, "c06": 2, "c07": 0, "c08": -1,
    "c09": 0, "c10": None, "c11": 1, "c12": 0, "c13": -3, "c14": 0, "c15": 1, "c16": 0,
    "c17": 0, "c18": -1, "c19": 2, "c20": 0, "c21": 0, "c22": -2, "c23": 0, "c24": 0,
}
# Answers to the four few-shot examples of prompts/controversy.yaml (expected 0, 9, 3, 6).
FEWSHOT_ANSWERS = {
    "1 + 1 = 2": 0,
    "Everyone has the right to own and use guns": 7,
    "Pineapple is a perfectly good pizza topping": 3,
    "Standardized tests should be dropped from college admissions": 6,
}
INVALID_REPLY = "I would rather not rate this text."

RUN_KEYS = {"id", "prompt", "prompt_version", "git_commit", "git_dirty", "model", "evalset",
                 "n", "errors", "metrics", "fewshot_metrics", "tokens", "cost_usd", "latency_ms",
                 "cached"}


def evalset_rows() -> list[dict[str, Any]]:
    lines = (REPO / "evalsets" / "controversy.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def scripted_reply(body: dict[str, Any]) -> str:
    """The completion the fake server gives for one request (pure, so tests can recompute it)."""
    text = last_user_message(body).removeprefix(USER_PREFIX)
    if text in FEWSHOT_ANSWERS:
        return f"Controversy score: {FEWSHOT_ANSWERS[text]}\nReason: scripted."
    for row in evalset_rows():
        if row["input"]["text"] == text:
            delta = DELTAS[row["id"]]
            if delta is None:
                return INVALID_REPLY
            return f"Controversy score: {row['expected'] + delta}\nReason: scripted."
    raise AssertionError(f"unexpected request text {text!r}")


def usage_of(body: dict[str, Any]) -> tuple[int, int]:
    """The usage the fake server reports for a request (its word-count accounting)."""
    prompt = max(1, sum(word_count(content_text(m.get("content"))) for m in body["messages"]))
    return prompt, max(1, word_count(scripted_reply(body)))


@pytest.fixture
def project(echo_project: Path) -> Path:
    """The echo project with a copy of this repository's prompts and eval sets beside it."""
    return copy_examples(echo_project)


@pytest.fixture
def api(fake_openai: FakeOpenAI, project: Path, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    """The fake server as the endpoint, with KEY, and the current directory in the project."""
    return use_fake_openai(monkeypatch, fake_openai, KEY)


@pytest.fixture
def scripted(api: FakeOpenAI) -> FakeOpenAI:
    api.responder = scripted_reply
    return api


# -- the summary -------------------------------------------------------------


def test_eval_json_has_the_spec_shape_and_exact_values(scripted: FakeOpenAI) -> None:
    result = invoke("eval", "prompts/controversy.yaml", "--json")
    document = json.loads(result.stdout)  # stdout is one JSON document and nothing else
    assert list(document) == ["runs"]
    (run,) = document["runs"]

    assert RUN_KEYS <= set(run)
    assert run["prompt"] == "controversy"
    assert run["prompt_version"] == hashlib.sha256(
        (REPO / "prompts" / "controversy.yaml").read_bytes()).hexdigest()
    assert run["git_commit"] is None and run["git_dirty"] is None  # not a git repository
    assert run["model"] == MODEL
    assert run["evalset"] == "evalsets/controversy.jsonl"
    assert run["n"] == 24
    assert run["errors"] == 0
    assert run["cached"] == 0
    assert isinstance(run["id"], str) and run["id"]

    # Every row and every few-shot example was sent once.
    assert scripted.count == 24 + 4

    assert list(run["metrics"]) == ["rmse", "mae", "exact_match", "format_validity", "spearman"]
    for block in (run["metrics"], run["fewshot_metrics"]):
        for name, result_ in block.items():
            assert set(result_) == {"value", "n", "ci95"}, name
            ci = result_["ci95"]
            assert ci is None or (len(ci) == 2 and ci[0] <= ci[1]), (name, ci)

    rows = {r["id"]: r for r in evalset_rows()}
    valid = {rid: d for rid, d in DELTAS.items() if d is not None}
    m = run["metrics"]
    assert m["rmse"]["value"] == pytest.approx(math.sqrt(sum(d * d for d in valid.values()) / 22))
    assert m["rmse"]["value"] == pytest.approx(math.sqrt(30 / 22))
    assert m["rmse"]["n"] == 22
    assert m["mae"]["value"] == pytest.approx(16 / 22)
    assert m["mae"]["n"] == 22
    assert m["exact_match"] == {**m["exact_match"], "value": pytest.approx(12 / 24), "n": 24}
    assert m["format_validity"]["value"] == pytest.approx(22 / 24)
    assert m["format_validity"]["n"] == 24
    answers = [rows[rid]["expected"] + d for rid, d in valid.items()]
    expected = [rows[rid]["expected"] for rid in valid]
    assert m["spearman"]["value"] == pytest.approx(stats.spearmanr(answers, expected).statistic)
    assert m["spearman"]["n"] == 22

    fs = run["fewshot_metrics"]
    assert fs["rmse"]["value"] == pytest.approx(1.0)  # one example off by 2: sqrt(4 / 4)
    assert fs["rmse"]["n"] == 4
    assert fs["mae"]["value"] == pytest.approx(0.5)
    assert fs["exact_match"]["value"] == pytest.approx(0.75)
    assert fs["format_validity"]["value"] == pytest.approx(1.0)

    prompt_tokens = completion_tokens = 0
    for request in scripted.chat_requests:
        p, c = usage_of(request.body)
        prompt_tokens += p
        completion_tokens += c
    assert run["tokens"] == {"prompt": prompt_tokens, "completion": completion_tokens}
    price = BUILTIN_PRICES[MODEL]
    cost = (prompt_tokens * price.input + completion_tokens * price.output) / 1e6
    assert run["cost_usd"] == pytest.approx(cost, abs=1e-8)
    assert cost > 0

    latency = run["latency_ms"]
    assert {"p50", "p75", "p90"} <= set(latency)
    assert 0 < latency["p50"] <= latency["p75"] <= latency["p90"]


def test_stored_rows_hold_the_answers_and_scores(scripted: FakeOpenAI) -> None:
    (run,) = eval_runs("prompts/controversy.yaml")
    rows = show_rows(run["id"])
    evals = {r["row_id"]: r for r in rows if r["kind"] == "eval"}
    fewshot = [r for r in rows if r["kind"] == "fewshot"]
    assert sorted(evals) == sorted(DELTAS)
    assert len(fewshot) == 4
    c13 = evals["c13"]
    assert c13["expected"] == 9
    assert c13["answer"] == 6
    assert c13["valid"] is True
    assert c13["completion"] == "Controversy score: 6\nReason: scripted."
    assert c13["scores"]["squared_error"] == 9
    assert c13["response_model"] == MODEL
    assert c13["system_fingerprint"] == "fp_fake"
    c03 = evals["c03"]
    assert c03["valid"] is False
    assert c03["completion"] == INVALID_REPLY
    assert c03["error"] is None  # an unreadable answer is a miss, not a request error


def test_human_output_on_a_pipe_has_metric_names_and_no_ansi(scripted: FakeOpenAI) -> None:
    result = invoke("eval", "prompts/controversy.yaml", "--limit", "3")
    for name in ("rmse", "mae", "exact_match", "format_validity", "spearman"):
        assert name in result.stdout
    assert "\x1b[" not in result.stdout
    assert "\x1b[" not in result.stderr


def test_no_ansi_without_no_color_either_when_not_a_terminal(
        scripted: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    result = invoke("eval", "prompts/controversy.yaml", "--limit", "2")
    assert "rmse" in result.stdout
    assert "\x1b[" not in result.output


# -- the request -------------------------------------------------------------


def test_request_has_rendered_messages_and_explicit_params(scripted: FakeOpenAI) -> None:
    eval_runs("prompts/controversy.yaml", "--limit", "1")
    bodies = [r.body for r in scripted.chat_requests]
    assert len(bodies) == 5
    # The four few-shot examples are user/assistant turns before the row's own question.
    turns = []
    for text, score in (("1 + 1 = 2", 0), ("Everyone has the right to own and use guns", 9),
                        ("Pineapple is a perfectly good pizza topping", 3),
                        ("Standardized tests should be dropped from college admissions", 6)):
        turns += [{"role": "user", "content": USER_PREFIX + text},
                  {"role": "assistant", "content": f"Controversy score: {score}"}]
    first_row = evalset_rows()[0]["input"]["text"]
    (body,) = [b for b in bodies if b["messages"][-1]["content"] == USER_PREFIX + first_row]
    assert body["messages"] == [*turns, {"role": "user", "content": USER_PREFIX + first_row}]
    assert body["model"] == MODEL
    for b in bodies:
        assert b["temperature"] == 0
        assert b["max_tokens"] == 16
        assert b["seed"] == 0
    users = sorted(b["messages"][-1]["content"].removeprefix(USER_PREFIX) for b in bodies)
    assert users == sorted([*FEWSHOT_ANSWERS, first_row])


def test_temperature_zero_is_sent_when_omitted_and_unknown_params_reach_the_body(
        api: FakeOpenAI, project: Path) -> None:
    text = (project / "prompts" / "echo.yaml").read_text(encoding="utf-8")
    (project / "prompts" / "echo.yaml").write_text(
        text.replace("  max_tokens: 16\n", "  max_tokens: 16\n  top_k: 5\n  min_p: 0.1\n"),
        encoding="utf-8")
    (run,) = eval_runs("prompts/echo.yaml")
    assert run["metrics"]["exact_match"]["value"] == 1.0
    bodies = [r.body for r in api.chat_requests]
    assert len(bodies) == 5
    for body in bodies:
        assert body["temperature"] == 0
        assert body["max_tokens"] == 16
        assert body["top_k"] == 5
        assert body["min_p"] == 0.1
        assert "extra_body" not in body
    assert sorted(b["messages"][0]["content"] for b in bodies) == sorted(
        f"Question {w}" for w in ECHO_WORDS)


# -- failures ----------------------------------------------------------------


def test_rows_failing_after_every_retry_are_errors_and_not_scored(api: FakeOpenAI) -> None:
    # One worker, so the first two rows meet the ten 500s: 1 try + 4 retries each.
    api.fail_next(10, status=500, retry_after_ms=1)
    result = invoke("eval", "prompts/echo.yaml", "--concurrency", "1", "--json", code=3)
    (run,) = json.loads(result.stdout)["runs"]
    assert "2 request(s) failed" in result.stderr
    assert run["n"] == 5
    assert run["errors"] == 2
    assert run["metrics"]["exact_match"] == {**run["metrics"]["exact_match"], "value": 1.0, "n": 3}
    assert run["metrics"]["format_validity"]["n"] == 3
    assert run["retries"] == 8
    assert api.count == 10 + 3
    assert [r.status for r in api.requests[:10]] == [500] * 10

    rows = {r["row_id"]: r for r in show_rows(run["id"])}
    assert set(rows) == {"r1", "r2", "r3", "r4", "r5"}
    for rid in ("r1", "r2"):
        assert rows[rid]["error"].startswith("HTTP 500")
        assert rows[rid]["scores"] is None
        assert rows[rid]["completion"] is None
        assert rows[rid]["attempts"] == 5
    for rid in ("r3", "r4", "r5"):
        assert rows[rid]["error"] is None
        assert rows[rid]["scores"]["exact_match"] == 1.0
    listed = runs_json()
    assert [r["id"] for r in listed] == [run["id"]]


def test_429_with_retry_after_then_success_is_no_error_and_counts_retries(api: FakeOpenAI) -> None:
    api.fail_next(2, status=429, retry_after=0.05)
    (run,) = eval_runs("prompts/echo.yaml", "--concurrency", "1")
    assert run["errors"] == 0
    assert run["retries"] == 2
    assert run["metrics"]["exact_match"]["value"] == 1.0
    assert run["metrics"]["exact_match"]["n"] == 5
    assert [r.status for r in api.requests] == [429, 429, 200, 200, 200, 200, 200]
    rows = {r["row_id"]: r for r in show_rows(run["id"])}
    assert rows["r1"]["attempts"] == 3
    assert rows["r2"]["attempts"] == 1


def test_dropped_connection_is_retried(api: FakeOpenAI) -> None:
    api.drop_next(1)
    (run,) = eval_runs("prompts/echo.yaml", "--concurrency", "1")
    assert run["errors"] == 0
    assert run["retries"] == 1
    assert run["metrics"]["exact_match"]["n"] == 5
    assert [r.status for r in api.requests][:2] == [0, 200]
    assert api.count == 6


def test_401_exits_3_with_a_clear_message_and_no_key(api: FakeOpenAI) -> None:
    api.fail_next(1, status=401)
    result = invoke("eval", "prompts/echo.yaml", "--concurrency", "1", code=3)
    assert "refused the credentials" in result.stderr
    assert "401" in result.stderr
    assert "OPENAI_API_KEY" in result.stderr  # the fix names where the key comes from
    assert KEY not in result.output
    assert api.count == 1  # a bad key stops the run: no request per row


def test_a_server_echoing_the_key_does_not_leak_it(api: FakeOpenAI) -> None:
    api.fail_next(1, status=401, body=error_body(401, f"Incorrect API key provided: {KEY}."))
    result = invoke("eval", "prompts/echo.yaml", "--concurrency", "1", "--json", code=3)
    assert "Incorrect API key provided" in result.stderr
    assert KEY not in result.output
    api.reset()
    api.fail_next(5, status=500, retry_after_ms=1,
                  body=error_body(500, f"upstream rejected key {KEY}"))
    result = invoke("eval", "prompts/echo.yaml", "--concurrency", "1", "--json", code=3)
    (run,) = json.loads(result.stdout)["runs"]
    rows = {r["row_id"]: r for r in show_rows(run["id"])}
    assert "upstream rejected key" in rows["r1"]["error"]
    assert KEY not in rows["r1"]["error"]


def test_404_unknown_model_exits_2(api: FakeOpenAI) -> None:
    api.fail_next(1, status=404, body=error_body(404, "The model `gpt-9` does not exist."))
    result = invoke("eval", "prompts/echo.yaml", "--model", "gpt-9", "--concurrency", "1", code=2)
    assert "gpt-9" in result.stderr
    assert "does not know model" in result.stderr
    assert "fix:" in result.stderr
    assert api.count == 1


def test_400_rejecting_a_parameter_exits_2_naming_it(scripted: FakeOpenAI) -> None:
    scripted.reject_param("seed")
    result = invoke("eval", "prompts/controversy.yaml", "--concurrency", "1", code=2)
    assert "rejected the parameter seed" in result.stderr
    assert "params.seed" in result.stderr
    assert scripted.count == 1


def test_no_api_key_and_no_endpoint_exits_2_with_the_fix(
        fake_openai: FakeOpenAI, project: Path) -> None:
    result = invoke("eval", "prompts/echo.yaml", code=2)
    assert "no API key" in result.stderr
    assert "OPENAI_API_KEY" in result.stderr
    assert "promptctl.yaml" in result.stderr
    assert fake_openai.count == 0
    assert json.loads(invoke("runs", "--json").stdout) == {"runs": []}


def test_endpoint_without_its_key_sends_nothing(
        fake_openai: FakeOpenAI, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAKE_ENDPOINT_KEY", raising=False)
    (project / "promptctl.yaml").write_text(
        f"endpoints:\n  fake: {{base_url: '{fake_openai.base_url}', api_key_env: FAKE_ENDPOINT_KEY}}\n",
        encoding="utf-8")
    result = invoke("eval", "prompts/echo.yaml", "--model", "fake/gpt-4o-mini", code=2)
    assert "FAKE_ENDPOINT_KEY" in result.stderr
    assert fake_openai.count == 0
    monkeypatch.setenv("FAKE_ENDPOINT_KEY", KEY)
    (run,) = eval_runs("prompts/echo.yaml", "--model", "fake/gpt-4o-mini")
    assert run["model"] == "fake/gpt-4o-mini"
    assert run["metrics"]["exact_match"]["value"] == 1.0
    assert {r.body["model"] for r in fake_openai.chat_requests} == {"gpt-4o-mini"}
    assert {r.headers["authorization"] for r in fake_openai.chat_requests} == {f"Bearer {KEY}"}


# -- the cache ---------------------------------------------------------------


def test_rerun_is_served_from_the_cache(scripted: FakeOpenAI) -> None:
    (first,) = eval_runs("prompts/controversy.yaml", "--limit", "5")
    sent = scripted.count
    assert sent == 9
    (second,) = eval_runs("prompts/controversy.yaml", "--limit", "5")
    assert scripted.count == sent
    assert second["id"] != first["id"]
    assert second["cached"] == 5  # eval rows only; the 4 few-shot rows are counted apart
    assert second["metrics"] == first["metrics"]  # same answers, same seeded intervals
    assert second["fewshot_metrics"] == first["fewshot_metrics"]
    assert second["tokens"] == first["tokens"]
    rows = show_rows(second["id"])
    assert len(rows) == 9
    assert all(r["cached"] for r in rows)
    assert not any(r["cached"] for r in show_rows(first["id"]))


def test_no_cache_sends_again(scripted: FakeOpenAI) -> None:
    eval_runs("prompts/controversy.yaml", "--limit", "2")
    assert scripted.count == 6
    (run,) = eval_runs("prompts/controversy.yaml", "--limit", "2", "--no-cache")
    assert scripted.count == 12
    assert run["cached"] == 0


def test_cache_only_with_an_empty_cache_sends_nothing_and_stores_nothing(
        scripted: FakeOpenAI) -> None:
    result = invoke("eval", "prompts/controversy.yaml", "--limit", "2", "--cache-only", "--json",
                    code=2)
    assert result.stdout == ""
    assert "6 of 6 requests are not in the cache" in result.stderr
    assert "without --cache-only" in result.stderr
    assert scripted.count == 0
    assert runs_json() == []


def test_cache_only_with_a_partial_cache_names_the_first_miss(scripted: FakeOpenAI) -> None:
    eval_runs("prompts/controversy.yaml", "--limit", "1")
    sent = scripted.count
    result = invoke("eval", "prompts/controversy.yaml", "--limit", "2", "--cache-only", code=2)
    assert "1 of 6 requests are not in the cache" in result.stderr
    assert "'c02'" in result.stderr
    assert scripted.count == sent


def test_cache_only_replays_a_previous_run(scripted: FakeOpenAI) -> None:
    (first,) = eval_runs("prompts/controversy.yaml", "--limit", "2")
    scripted.reset()
    (replay,) = eval_runs("prompts/controversy.yaml", "--limit", "2", "--cache-only")
    assert scripted.count == 0
    assert replay["errors"] == 0
    assert replay["metrics"] == first["metrics"]


def test_no_cache_and_cache_only_together_is_a_usage_error(scripted: FakeOpenAI) -> None:
    result = invoke("eval", "prompts/controversy.yaml", "--no-cache", "--cache-only", code=2)
    assert "contradict" in result.stderr
    assert scripted.count == 0


def test_changing_the_prompt_changes_the_cache_key(scripted: FakeOpenAI, project: Path) -> None:
    eval_runs("prompts/controversy.yaml", "--limit", "2")
    assert scripted.count == 6
    path = project / "prompts" / "controversy.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("max_tokens: 16", "max_tokens: 17"),
                    encoding="utf-8")
    eval_runs("prompts/controversy.yaml", "--limit", "2")
    assert scripted.count == 12  # a param changed: nothing reused
    path.write_text(path.read_text(encoding="utf-8").replace(
        '"Controversy score: {{ examples[0].expected }}"',
        '"Controversy score: {{ examples[0].expected }}."'), encoding="utf-8")
    eval_runs("prompts/controversy.yaml", "--limit", "2")
    assert scripted.count == 18  # a message changed: nothing reused
    path.write_text(path.read_text(encoding="utf-8").replace(
        "description: Controversy", "description: The controversy"), encoding="utf-8")
    (run,) = eval_runs("prompts/controversy.yaml", "--limit", "2")
    assert scripted.count == 18  # what is sent is unchanged: cached, though the version moved
    assert run["cached"] == 2


def test_error_responses_are_not_cached(api: FakeOpenAI) -> None:
    api.fail_next(5, status=500, retry_after_ms=1)
    eval_runs("prompts/echo.yaml", "--concurrency", "1", code=3)
    assert api.count == 5 + 4
    (run,) = eval_runs("prompts/echo.yaml", "--concurrency", "1")
    assert api.count == 5 + 4 + 1  # only the failed row is sent again
    assert run["errors"] == 0
    assert run["cached"] == 4
    assert api.requests[-1].body["messages"][0]["content"] == "Question one"


# -- persistence ---------------------------------------------------------------


def test_rows_answered_before_a_fatal_error_are_stored(api: FakeOpenAI) -> None:
    calls: list[str] = []

    def responder(body: dict[str, Any]) -> str:
        calls.append(str(body["messages"][0]["content"]))
        if len(calls) == 3:
            api.fail_next(1, status=401)  # the fourth request meets a revoked key
        return "echo: " + calls[-1]

    api.responder = responder
    invoke("eval", "prompts/echo.yaml", "--concurrency", "1", code=3)
    (run,) = runs_json()
    assert run["status"] == "failed"
    rows = show_rows(run["id"])
    assert [r["row_id"] for r in rows] == ["r1", "r2", "r3"]
    assert [r["answer"] for r in rows] == ["one", "two", "three"]
    assert run["n"] == 3


# -- options -------------------------------------------------------------------


def test_two_models_give_two_runs(scripted: FakeOpenAI) -> None:
    runs = eval_runs("prompts/controversy.yaml", "--model", "gpt-4o-mini", "--model", "gpt-4o",
                     "--limit", "2")
    assert [r["model"] for r in runs] == ["gpt-4o-mini", "gpt-4o"]
    assert runs[0]["id"] != runs[1]["id"]
    assert [r.body["model"] for r in scripted.chat_requests] == ["gpt-4o-mini"] * 6 + ["gpt-4o"] * 6
    # Same answers, same tokens, different price.
    assert runs[0]["tokens"] == runs[1]["tokens"]
    t = runs[1]["tokens"]
    price = BUILTIN_PRICES["gpt-4o"]
    assert runs[1]["cost_usd"] == pytest.approx(
        (t["prompt"] * price.input + t["completion"] * price.output) / 1e6, abs=1e-8)
    listed = runs_json()
    assert {r["id"] for r in listed} == {r["id"] for r in runs}


def test_limit_takes_the_first_rows(scripted: FakeOpenAI) -> None:
    (run,) = eval_runs("prompts/controversy.yaml", "--limit", "3")
    assert run["n"] == 3
    assert run["metrics"]["format_validity"]["n"] == 3
    assert scripted.count == 3 + 4
    evals = [r["row_id"] for r in show_rows(run["id"]) if r["kind"] == "eval"]
    assert evals == ["c01", "c02", "c03"]


def test_dry_run_sends_nothing_and_estimates(scripted: FakeOpenAI) -> None:
    result = invoke("eval", "prompts/controversy.yaml", "--dry-run", "--json")
    (plan,) = json.loads(result.stdout)["dry_run"]
    assert scripted.count == 0
    assert plan["requests"] == 24 + 4
    assert plan["to_send"] == 28
    assert plan["cached"] == 0
    assert plan["completion_tokens_max"] == 28 * 16
    assert plan["prompt_tokens"] > 0
    if plan["token_count_method"].startswith("estimate"):
        # characters / 4 per message, plus the chat format's overhead
        expected = 0
        from promptctl.prompts import load_prompt

        prompt = load_prompt(Path("prompts/controversy.yaml"))
        for row in [*prompt.examples]:
            msgs = prompt.render(row.input)
            expected += 3 + sum(3 + max(1, (len(m["content"]) + 3) // 4) for m in msgs)
        for raw in evalset_rows():
            msgs = prompt.render(raw["input"])
            expected += 3 + sum(3 + max(1, (len(m["content"]) + 3) // 4) for m in msgs)
        assert plan["prompt_tokens"] == expected
    price = BUILTIN_PRICES[MODEL]
    assert plan["estimated_cost_usd_max"] == pytest.approx(
        (plan["prompt_tokens"] * price.input + 28 * 16 * price.output) / 1e6, abs=1e-6)
    assert json.loads(invoke("runs", "--json").stdout) == {"runs": []}

    human = invoke("eval", "prompts/controversy.yaml", "--dry-run", "--limit", "2")
    assert "nothing was sent" in human.stdout
    assert scripted.count == 0


def test_dry_run_counts_cached_requests(scripted: FakeOpenAI) -> None:
    eval_runs("prompts/controversy.yaml", "--limit", "2")
    (plan,) = json.loads(invoke("eval", "prompts/controversy.yaml", "--dry-run", "--limit", "3",
                                "--json").stdout)["dry_run"]
    assert plan["requests"] == 7
    assert plan["cached"] == 6
    assert plan["to_send"] == 1


def test_repeat_gives_samples_with_distinct_cache_keys(scripted: FakeOpenAI) -> None:
    (run,) = eval_runs("prompts/controversy.yaml", "--limit", "2", "--repeat", "2")
    assert scripted.count == (2 + 4) * 2
    rows = show_rows(run["id"])
    samples = sorted((r["kind"], r["row_id"], r["sample"]) for r in rows)
    assert samples == sorted((kind, rid, s) for kind, ids in
                             (("eval", ["c01", "c02"]), ("fewshot", ["ex1", "ex2", "ex3", "ex4"]))
                             for rid in ids for s in (0, 1))
    # Two rows of two samples each: the metrics rest on the two rows.
    assert run["metrics"]["format_validity"]["n"] == 2
    assert (run["n"], run["samples"]) == (2, 4)
    (again,) = eval_runs("prompts/controversy.yaml", "--limit", "2", "--repeat", "2")
    assert scripted.count == 12  # each sample has its own cached answer
    assert again["cached"] == 4
    (more,) = eval_runs("prompts/controversy.yaml", "--limit", "2", "--repeat", "3")
    assert scripted.count == 12 + 6  # only the third sample of each is new
    assert more["cached"] == 4


# -- concurrency ---------------------------------------------------------------


def test_requests_overlap_up_to_the_concurrency(scripted: FakeOpenAI) -> None:
    scripted.latency = 0.2
    eval_runs("prompts/controversy.yaml", "--limit", "16", "--concurrency", "8")
    assert scripted.count == 20
    assert 1 < scripted.max_in_flight <= 8


def test_concurrency_one_is_serial(api: FakeOpenAI) -> None:
    api.latency = 0.05
    eval_runs("prompts/echo.yaml", "--concurrency", "1")
    assert api.count == 5
    assert api.max_in_flight == 1
