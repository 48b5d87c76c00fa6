"""`eval --repeat K`: stability figures on hand-made rows, and end to end against the fake server."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from promptctl.consistency import analyze
from tests.fakeserver import FakeOpenAI, last_user_message
from tests.helpers import eval_run, invoke, show_rows, use_fake_openai, write_echo_project


def sample(row_id: str, k: int, answer: Any, expected: Any = None, *, valid: bool = True,
           error: bool = False, kind: str = "eval", scored: bool = True) -> dict[str, Any]:
    from promptctl.scoring import equals

    row: dict[str, Any] = {"kind": kind, "row_id": row_id, "sample": k, "answer": answer,
                           "valid": valid, "expected": expected,
                           "has_expected": expected is not None, "error": "boom" if error else None,
                           "scores": {}}
    if scored and expected is not None:
        row["scores"]["exact_match"] = 1.0 if valid and equals(answer, expected) else 0.0
    return row


def test_stable_rows_and_one_flaky_row() -> None:
    rows = [sample("a", k, 3, 3) for k in range(4)]
    rows += [sample("b", k, 5, 4) for k in range(4)]
    rows += [sample("c", k, x, 7) for k, x in enumerate([7, 8, 7, 7])]
    out = analyze(rows)
    assert out is not None
    assert out["k"] == 4 and out["rows"] == 3
    assert out["mean_agreement"]["value"] == pytest.approx((1 + 1 + 0.75) / 3)
    assert out["unstable_share"]["value"] == pytest.approx(1 / 3)
    # pass@4: a and c hit at least once; pass^4: only a hits every time.
    assert out["pass_at_k"]["value"] == pytest.approx(2 / 3)
    assert out["pass_hat_k"]["value"] == pytest.approx(1 / 3)
    # Majority vote: a -> 3 (right), b -> 5 (wrong), c -> 7 (right).
    assert out["majority_vote"]["value"] == pytest.approx(2 / 3)
    (flaky,) = out["flaky_rows"]
    assert flaky == {"row_id": "c", "answers": [7, 8, 7, 7], "agreement": 0.75, "majority": 7,
                     "expected": 7}


def test_the_vote_is_scored_with_the_metric_it_names() -> None:
    # An accuracy prompt keeps each sample's score under accuracy: the vote and pass@k read it
    # and say so; a row of a run stored before keeps it under exact_match, read the same way.
    rows = [{**sample("a", k, "x", "x", scored=False), "scores": {"accuracy": 1.0}}
            for k in range(3)]
    rows += [{**sample("b", k, "y", "z", scored=False), "scores": {"exact_match": 0.0}}
             for k in range(3)]
    out = analyze(rows, "accuracy", ("accuracy", "exact_match"))
    assert out is not None and out["metric"] == "accuracy"
    assert out["majority_vote"]["value"] == 0.5 and out["pass_at_k"]["value"] == 0.5
    assert "majority_exact_match" not in out
    assert analyze(rows)["metric"] == "exact_match"  # type: ignore[index]


def test_a_run_stored_before_reads_as_the_figures_are_written_now() -> None:
    from promptctl.runs import read_run

    old = {"k": 2, "rows": 1, "mean_agreement": {"value": 1.0, "n": 1, "ci95": None},
           "unstable_share": {"value": 0.0, "n": 1, "ci95": None},
           "pass_at_k": {"value": 1.0, "n": 1, "ci95": None},
           "pass_hat_k": {"value": 1.0, "n": 1, "ci95": None},
           "majority_exact_match": {"value": 1.0, "n": 1, "ci95": None}, "flaky_rows": []}
    run = read_run({"id": "r", "status": "complete", "prompt_name": "p", "model": "m",
                    "created_at": "2026-01-01T00:00:00.000Z", "summary": {"consistency": old}})
    assert run.summary.consistency is not None
    assert list(run.summary.consistency) == ["k", "rows", "metric", "mean_agreement",
                                             "unstable_share", "pass_at_k", "pass_hat_k",
                                             "majority_vote", "flaky_rows"]
    assert run.summary.consistency["metric"] == "exact_match"
    assert run.summary.consistency["majority_vote"] == old["majority_exact_match"]


def test_single_samples_give_no_stability_figures() -> None:
    assert analyze([sample("a", 0, 1, 1), sample("b", 0, 2, 2)]) is None


def test_answers_equal_as_scored_are_one_answer() -> None:
    rows = [sample("a", 0, 7, 7), sample("a", 1, 7.0, 7), sample("b", 0, "Paris", "paris"),
            sample("b", 1, " paris", "paris")]
    out = analyze(rows)
    assert out is not None
    assert out["unstable_share"]["value"] == 0 and out["flaky_rows"] == []


def test_unreadable_answers_count_as_one_answer_and_never_win_the_vote() -> None:
    rows = [sample("a", 0, None, 3, valid=False), sample("a", 1, None, 3, valid=False),
            sample("a", 2, 3, 3)]
    out = analyze(rows)
    assert out is not None
    (flaky,) = out["flaky_rows"]
    assert flaky["answers"] == [None, None, 3] and flaky["majority"] is None
    assert out["majority_vote"]["value"] == 0
    assert out["pass_at_k"]["value"] == 1 and out["pass_hat_k"]["value"] == 0


def test_ties_go_to_the_answer_seen_first() -> None:
    rows = [sample("a", k, x, 2) for k, x in enumerate([2, 9, 9, 2])]
    out = analyze(rows)
    assert out is not None
    assert out["flaky_rows"][0]["majority"] == 2
    assert out["majority_vote"]["value"] == 1


def test_error_samples_are_left_out() -> None:
    rows = [sample("a", 0, 1, 1), sample("a", 1, 2, 1, error=True), sample("a", 2, 1, 1),
            sample("b", 0, 4, 4), sample("b", 1, 4, 4, error=True), sample("b", 2, 4, 4)]
    out = analyze(rows)
    assert out is not None
    assert out["unstable_share"]["value"] == 0
    # Neither row has all 3 samples, so neither counts for pass@3 / pass^3.
    assert out["pass_at_k"]["value"] is None and out["pass_at_k"]["n"] == 0
    assert out["majority_vote"]["value"] == 1


def test_a_row_left_with_one_answer_says_nothing_about_stability() -> None:
    rows = [sample("a", 0, 1, 1), sample("a", 1, 1, 1), sample("b", 0, 5, 1),
            sample("b", 1, 9, 1, error=True)]
    out = analyze(rows)
    assert out is not None
    assert out["rows"] == 1 and out["mean_agreement"]["n"] == 1


def test_exact_match_is_computed_when_the_prompt_did_not_score_it() -> None:
    rows = [sample("a", k, x, 3, scored=False) for k, x in enumerate([3, 4])]
    out = analyze(rows)
    assert out is not None
    assert out["pass_at_k"]["value"] == 1 and out["pass_hat_k"]["value"] == 0


def test_rows_without_expected_have_stability_but_no_pass_at_k() -> None:
    rows = [sample("a", k, x) for k, x in enumerate(["x", "y", "x"])]
    out = analyze(rows)
    assert out is not None
    assert out["unstable_share"]["value"] == 1
    assert out["pass_at_k"]["value"] is None and out["majority_vote"]["value"] is None


def test_fewshot_rows_are_not_counted() -> None:
    rows = [sample("a", k, 1, 1) for k in range(2)] + [sample("f", k, k, 0, kind="fewshot")
                                                       for k in range(2)]
    out = analyze(rows)
    assert out is not None
    assert out["rows"] == 1 and out["flaky_rows"] == []


# --- end to end -------------------------------------------------------------------------------

PROMPT = """\
name: echo
model: gpt-4o-mini
messages:
  - role: user
    content: "Question {{ q }}"
output:
  pattern: 'Answer: (?P<answer>\\w+)'
  type: string
metrics: [exact_match, format_validity]
evalset: ../evalsets/echo.jsonl
"""
WORDS = ["one", "two", "three", "four", "five", "six"]
FLAKY = "four"


@pytest.fixture
def echo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_openai: FakeOpenAI) -> FakeOpenAI:
    monkeypatch.chdir(write_echo_project(tmp_path / "proj", PROMPT, WORDS))
    use_fake_openai(monkeypatch, fake_openai, "sk-test-4e7a91c03b5d")

    # One row is answered differently on alternate calls; the others never change.
    def reply(body: dict[str, Any], call: int) -> str:
        return "Answer: " + (FLAKY if call % 2 == 0 else "other")

    fake_openai.add_rule(f"Question {FLAKY}", reply)
    fake_openai.responder = None
    return fake_openai


def echo_reply(body: dict[str, Any]) -> str:
    return "Answer: " + last_user_message(body).split()[-1]


def test_repeat_5_lists_the_row_that_alternates_and_only_it(echo: FakeOpenAI) -> None:
    # Every other question is echoed; the rule above wins for the flaky one.
    echo.rules.append(("Question", lambda body, call: echo_reply(body)))
    run = eval_run("prompts/echo.yaml", "--repeat", "5")
    c = run["consistency"]
    assert c["k"] == 5 and c["rows"] == len(WORDS)
    assert [f["row_id"] for f in c["flaky_rows"]] == ["r4"]
    (flaky,) = c["flaky_rows"]
    # Calls 0, 2, 4 answer the word and 1, 3 something else: 3 of 5 agree.
    assert Counter(flaky["answers"]) == Counter({FLAKY: 3, "other": 2})
    assert flaky["agreement"] == pytest.approx(0.6) and flaky["majority"] == FLAKY
    assert c["unstable_share"]["value"] == pytest.approx(1 / 6)
    assert c["mean_agreement"]["value"] == pytest.approx((5 + 0.6) / 6)
    assert c["pass_at_k"]["value"] == 1.0
    assert c["pass_hat_k"]["value"] == pytest.approx(5 / 6)
    assert c["majority_vote"]["value"] == 1.0
    # Every sample was sent (its own cache key) and stored.
    texts = Counter(last_user_message(r.body) for r in echo.chat_requests)
    assert texts == Counter({f"Question {w}": 5 for w in WORDS})
    shown = show_rows(run["id"])
    assert sorted((r["row_id"], r["sample"]) for r in shown if r["kind"] == "eval") == sorted(
        (f"r{i + 1}", k) for i in range(len(WORDS)) for k in range(5))
    # Exact match over all 30 samples: 28 right.
    assert run["metrics"]["exact_match"]["value"] == pytest.approx(28 / 30)


def test_repeat_human_output_shows_the_stability_figures(echo: FakeOpenAI) -> None:
    echo.rules.append(("Question", lambda body, call: echo_reply(body)))
    out = invoke("eval", "prompts/echo.yaml", "--repeat", "3").stdout
    assert re.search(r"repeat 3 samples per row over 6 rows", out), out
    assert "pass@3 1.000" in out and "pass^3 0.833" in out
    assert "majority-vote exact_match 1.000" in out
    assert re.search(r"flaky rows \(1\): r4 \(67%\)", out), out


def test_a_rerun_replays_every_sample_from_the_cache(echo: FakeOpenAI) -> None:
    echo.rules.append(("Question", lambda body, call: echo_reply(body)))
    first = json.loads(invoke("eval", "prompts/echo.yaml", "--repeat", "4", "--json").stdout)
    sent = echo.count
    again = json.loads(invoke("eval", "prompts/echo.yaml", "--repeat", "4", "--json").stdout)
    assert echo.count == sent
    assert again["runs"][0]["cached"] == 24
    assert again["runs"][0]["consistency"]["flaky_rows"] == first["runs"][0]["consistency"][
        "flaky_rows"]


def test_without_repeat_there_are_no_stability_figures(echo: FakeOpenAI) -> None:
    echo.rules.append(("Question", lambda body, call: echo_reply(body)))
    run = eval_run("prompts/echo.yaml")
    assert run["consistency"] is None
    assert "flaky" not in invoke("eval", "prompts/echo.yaml").stdout
