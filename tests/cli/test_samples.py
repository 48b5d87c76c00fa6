"""`eval --samples K`: K answers per row at a temperature, the voted one scored and compared
with the first sample on the same rows."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.fakeserver import FakeOpenAI
from tests.helpers import REPO, copy_examples, eval_run, invoke, run_cli, show, use_fake_openai

PROMPT = """\
name: pick
model: gpt-4o-mini
params:
  max_tokens: 16
messages:
  - role: user
    content: "Question {{ q }}"
output:
  pattern: '(?P<answer>[a-z]+)'
  type: label
  labels: [red, green, blue, none]
metrics: [accuracy, format_validity]
evalset: ../evalsets/pick.jsonl
"""

# Per row the answers of samples 0..4, and what the row expects. The vote's winner is worked
# out by hand in VOTED: the most common readable answer, a tie going to the answer sampled
# first; "??" cannot be read and does not vote.
ANSWERS = {
    "a": ["green", "red", "red", "blue", "red"],      # vote red (3); first sample wrong
    "b": ["red", "green", "green", "red", "blue"],    # tie red/green: red came first
    "c": ["blue", "blue", "??", "??", "??"],          # blue: the unreadable ones do not vote
    "d": ["??", "green", "blue", "blue", "green"],    # tie green/blue: green came first
    "e": ["red", "red", "red", "red", "red"],         # unanimous
    "f": ["blue", "green", "green", "red", "green"],  # green (3); first sample wrong
}
EXPECTED = {"a": "red", "b": "green", "c": "blue", "d": "green", "e": "red", "f": "green"}
VOTED = {"a": "red", "b": "red", "c": "blue", "d": "green", "e": "red", "f": "green"}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_openai: FakeOpenAI) -> Path:
    root = tmp_path / "proj"
    (root / "prompts").mkdir(parents=True)
    (root / "evalsets").mkdir()
    (root / "prompts" / "pick.yaml").write_text(PROMPT, encoding="utf-8")
    rows = "".join(json.dumps({"id": k, "input": {"q": k}, "expected": v}) + "\n"
                   for k, v in EXPECTED.items())
    (root / "evalsets" / "pick.jsonl").write_text(rows, encoding="utf-8")
    monkeypatch.chdir(root)
    use_fake_openai(monkeypatch, fake_openai, "sk-test-vote-77a1")
    return root


def _row_of(body: dict[str, Any]) -> str:
    return str(body["messages"][-1]["content"]).removeprefix("Question ")


def per_choice(fake: FakeOpenAI) -> None:
    """Answer a request with n=K with sample i's answer in choice i (requests without n,
    a judge's, are left as the server answers them)."""
    def reshape(body: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
        if body.get("n", 1) == 1:
            return document
        answers = ANSWERS[_row_of(body)]
        for i, choice in enumerate(document["choices"]):
            choice["message"] = {**choice["message"], "content": answers[i]}
        return document
    fake.reshape = reshape


def per_request(fake: FakeOpenAI) -> None:
    """Answer each row's i-th request with sample i's answer (one request per sample)."""
    for row, answers in ANSWERS.items():
        fake.add_rule(f"Question {row}", lambda body, call, a=answers: a[call % len(a)])


def answered(fake: FakeOpenAI) -> list[Any]:
    """The chat requests the server answered (not the ones it refused)."""
    return [r for r in fake.chat_requests if r.status == 200]


def by_row(run_id: str) -> dict[str, dict[str, Any]]:
    return {r["row_id"]: r for r in show(run_id)["rows"]}


def mcnemar(n01: int, n10: int) -> float:
    """The two-sided exact McNemar p-value, written out from the binomial distribution."""
    m = n01 + n10
    tail = sum(math.comb(m, i) for i in range(min(n01, n10) + 1)) / 2 ** m
    return min(1.0, 2 * tail)


def hand_figures() -> dict[str, Any]:
    """Accuracy of the first sample and of the hand vote, and the discordant rows."""
    first = {k: ANSWERS[k][0] == EXPECTED[k] for k in EXPECTED}
    vote = {k: VOTED[k] == EXPECTED[k] for k in EXPECTED}
    n01 = sum(1 for k in EXPECTED if not first[k] and vote[k])
    n10 = sum(1 for k in EXPECTED if first[k] and not vote[k])
    return {"single": sum(first.values()) / len(first), "voted": sum(vote.values()) / len(vote),
            "n01": n01, "n10": n10}


def test_majority_of_n_choices_is_the_hand_vote(project: Path, fake_openai: FakeOpenAI) -> None:
    per_choice(fake_openai)
    run = eval_run("prompts/pick.yaml", "--samples", "5")
    # One request per row, asking for five choices at the default sampling temperature.
    sent = answered(fake_openai)
    assert len(sent) == len(EXPECTED)
    assert all(r.body["n"] == 5 and r.body["temperature"] == 0.7 for r in sent)

    rows = by_row(run["id"])
    for row_id, answers in ANSWERS.items():
        detail = rows[row_id]["self_consistency"]
        assert [s["completion"] for s in detail["samples"]] == answers
        assert rows[row_id]["answer"] == VOTED[row_id], row_id
        assert detail["requests"] == "n"
    # Ties go to the answer sampled first: red before green in b, green before blue in d.
    assert rows["b"]["self_consistency"]["chosen"] == 0
    assert rows["d"]["self_consistency"]["chosen"] == 1

    hand = hand_figures()
    assert run["metrics"]["accuracy"]["value"] == pytest.approx(hand["voted"])
    figures = run["self_consistency"]
    accuracy = figures["metrics"]["accuracy"]
    assert accuracy["single"] == pytest.approx(hand["single"])
    assert accuracy["voted"] == pytest.approx(hand["voted"])
    assert accuracy["delta"] == pytest.approx(hand["voted"] - hand["single"])
    assert accuracy["p_value"] == pytest.approx(mcnemar(hand["n01"], hand["n10"]))
    assert accuracy["test"] == "mcnemar_exact" and accuracy["n"] == len(EXPECTED)
    low, high = accuracy["ci95"]
    assert low <= accuracy["delta"] <= high
    assert figures["requests"] == {"n": len(EXPECTED), "separate": 0}

    # Tokens: the prompt once per row, every choice's completion; one sample is the prompt
    # and the average choice. Latency of one sample is not known apart from the request.
    prompt_tokens = 2 * len(sent)  # the fake server counts words: "Question x" is two
    assert figures["tokens"]["all"]["prompt"] == prompt_tokens
    every = figures["tokens"]["all"]["prompt"] + figures["tokens"]["all"]["completion"]
    one = prompt_tokens + figures["tokens"]["all"]["completion"] / 5
    assert figures["tokens_multiple"] == pytest.approx(every / one, abs=1e-4)
    assert figures["latency_multiple"] is None

    human = invoke("eval", "prompts/pick.yaml", "--samples", "5").stdout
    assert "vote of 5" in human and "first sample" in human
    assert f"{hand['single']:.3f}" in human and f"{hand['voted']:.3f}" in human


def test_an_endpoint_that_rejects_n_gets_one_request_per_sample(
        project: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.reject_param("n", when=lambda n: n != 1)
    per_request(fake_openai)
    result = invoke("eval", "prompts/pick.yaml", "--samples", "5", "--concurrency", "1", "--json")
    (run,) = json.loads(result.stdout)["runs"]
    # The first row found out; every row then sent five requests, none of them with n.
    refused = [r for r in fake_openai.chat_requests if r.status == 400]
    assert len(refused) == 1 and refused[0].body["n"] == 5
    sent = answered(fake_openai)
    assert len(sent) == 5 * len(EXPECTED)
    assert not any("n" in r.body for r in sent)
    rows = by_row(run["id"])
    assert {k: r["answer"] for k, r in rows.items()} == VOTED
    assert all(r["self_consistency"]["requests"] == "separate" for r in rows.values())
    assert run["retries"] == 0  # five requests a row are not four retries
    figures = run["self_consistency"]
    assert "rejected n=5" in figures["note"]
    # Each sample's latency is its own request's: the row's is their sum.
    for row in rows.values():
        samples = row["self_consistency"]["samples"]
        assert row["latency_ms"] == pytest.approx(sum(s["latency_ms"] for s in samples))
    assert figures["latency_multiple"] == pytest.approx(
        figures["latency_ms"]["all"] / figures["latency_ms"]["first"], rel=1e-3)

    # A re-run replays every sample from the cache: nothing is sent, not even n.
    before = len(fake_openai.chat_requests)
    again = eval_run("prompts/pick.yaml", "--samples", "5")
    assert len(fake_openai.chat_requests) == before
    assert again["cached"] == len(EXPECTED)
    assert again["self_consistency"]["metrics"] == figures["metrics"]
    assert eval_run("prompts/pick.yaml", "--samples", "5", "--cache-only")["errors"] == 0
    assert len(fake_openai.chat_requests) == before


def test_a_replay_of_n_choices_sends_nothing(project: Path, fake_openai: FakeOpenAI) -> None:
    per_choice(fake_openai)
    first = eval_run("prompts/pick.yaml", "--samples", "5")
    before = fake_openai.count
    again = eval_run("prompts/pick.yaml", "--samples", "5")
    assert fake_openai.count == before
    assert again["metrics"] == first["metrics"]
    assert again["self_consistency"]["metrics"] == first["self_consistency"]["metrics"]
    assert eval_run("prompts/pick.yaml", "--samples", "5", "--cache-only")["errors"] == 0
    assert fake_openai.count == before
    # Another temperature is another request, which --cache-only refuses to send.
    refused = run_cli("eval", "prompts/pick.yaml", "--samples", "5", "--temperature", "1.0",
                      "--cache-only")
    assert refused.exit_code == 2 and "not in the cache" in refused.stdout + refused.stderr
    eval_run("prompts/pick.yaml", "--samples", "5", "--temperature", "1.0")
    assert [r.body["temperature"] for r in answered(fake_openai)[before:]] == [1.0] * len(EXPECTED)


JUDGE = """name: pick_judge
model: gpt-4o-mini
params:
  max_tokens: 4
messages:
  - role: user
    content: |
      Pick one answer for {{ q }}:
      {% for c in candidates %}{{ loop.index }}. {{ c }}
      {% endfor %}
output:
  type: integer
"""


def test_a_judge_picks_among_the_readable_samples(project: Path, fake_openai: FakeOpenAI) -> None:
    (project / "judges").mkdir()
    (project / "judges" / "pick.yaml").write_text(JUDGE, encoding="utf-8")
    per_choice(fake_openai)

    def last_candidate(body: dict[str, Any], call: int) -> str:
        lines = [line for line in body["messages"][-1]["content"].splitlines()[1:] if line.strip()]
        return str(len(lines))

    fake_openai.add_rule("Pick one answer", last_candidate)
    run = eval_run("prompts/pick.yaml", "--samples", "5", "--vote", "judge:judges/pick.yaml")
    rows = by_row(run["id"])
    for row_id, answers in ANSWERS.items():
        readable = [i for i, a in enumerate(answers) if a != "??"]
        detail = rows[row_id]["self_consistency"]
        if len({answers[i] for i in readable}) == 1:
            # Candidates that agree need no judge: the majority (the first) stands.
            assert detail["chosen"] == readable[0] and "judge" not in detail, row_id
            continue
        # The others get the candidate the judge names: the last readable one.
        assert detail["chosen"] == readable[-1], row_id
        assert rows[row_id]["answer"] == answers[readable[-1]]
        assert detail["judge"]["pick"] == len(readable)
    judged = [r for r in answered(fake_openai) if "Pick one answer" in r.body["messages"][-1]["content"]]
    assert len(judged) == 4  # rows a, b, d and f: c's readable samples agree, and e's
    assert all(r.body["temperature"] == 0 for r in judged)
    assert run["self_consistency"]["vote"] == "judge:judges/pick.yaml"

    before = fake_openai.count
    again = eval_run("prompts/pick.yaml", "--samples", "5", "--vote", "judge:judges/pick.yaml")
    assert fake_openai.count == before  # the samples and the judge's picks are cached
    assert again["metrics"] == run["metrics"]


def test_a_judge_answer_that_names_no_candidate_leaves_the_majority(
        project: Path, fake_openai: FakeOpenAI) -> None:
    (project / "judges").mkdir()
    (project / "judges" / "pick.yaml").write_text(JUDGE, encoding="utf-8")
    per_choice(fake_openai)
    fake_openai.add_rule("Pick one answer", "9")
    run = eval_run("prompts/pick.yaml", "--samples", "5", "--vote", "judge:judges/pick.yaml")
    rows = by_row(run["id"])
    assert {k: r["answer"] for k, r in rows.items()} == VOTED
    assert "majority vote stands" in rows["a"]["self_consistency"]["judge"]["error"]


def test_show_lists_the_samples_of_a_row(project: Path, fake_openai: FakeOpenAI) -> None:
    per_choice(fake_openai)
    run = eval_run("prompts/pick.yaml", "--samples", "5")
    text = invoke("show", run["id"], "--row", "d").stdout
    assert "sample 2 answer green  <- vote" in text
    assert "sample 3 answer blue" in text
    table = invoke("show", run["id"]).stdout
    assert "2 of 5 agree" in table
    # The HTML report reads the same rows: their samples do not get in its way.
    invoke("report", run["id"], "-o", str(project / "report.html"))
    assert "pick" in (project / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(("args", "message"), [
    (["--samples", "5", "--repeat", "3"], "--samples and --repeat"),
    (["--samples", "5", "--batch"], "--samples does not combine with --batch"),
    (["--samples", "5", "--dry-run"], "--samples does not combine with --dry-run"),
    (["--temperature", "0.5"], "--temperature applies to --samples K only"),
    (["--vote", "majority"], "--vote applies to --samples K only"),
    (["--samples", "5", "--vote", "best"], "--vote 'best': not a vote"),
    (["--samples", "5", "--vote", "judge:judges/none.yaml"], "no judge prompt file"),
    (["--samples", "1"], "--samples"),
])
def test_options_that_cannot_be_used_are_refused(project: Path, fake_openai: FakeOpenAI,
                                                 args: list[str], message: str) -> None:
    result = run_cli("eval", "prompts/pick.yaml", *args)
    assert result.exit_code == 2, result.stdout
    assert message in result.stdout + result.stderr
    assert fake_openai.count == 0


def test_a_sampled_run_does_not_stand_for_the_prompt(project: Path, fake_openai: FakeOpenAI) -> None:
    per_choice(fake_openai)
    plain = eval_run("prompts/pick.yaml")
    eval_run("prompts/pick.yaml", "--samples", "5")
    # `history` (as `diff` and `check`) takes the run of the prompt as written: one answer
    # per row at its own temperature.
    history = json.loads(invoke("history", "pick", "--json").stdout)
    assert [v["run"] for v in history["versions"]] == [plain["id"]]


def hand_vote(answers: list[str], readable: set[str]) -> int:
    """The majority vote written out: count the readable answers, the first of the most
    counted wins; with none readable, the first sample."""
    counts = {a: answers.count(a) for a in answers if a in readable}
    if not counts:
        return 0
    top = max(counts.values())
    return next(i for i, a in enumerate(answers) if counts.get(a) == top)


def test_the_hand_vote_is_the_stated_rule() -> None:
    assert {k: a[hand_vote(a, {"red", "green", "blue"})] for k, a in ANSWERS.items()} == VOTED


def test_rescore_reads_and_votes_on_the_stored_samples_again(
        project: Path, fake_openai: FakeOpenAI) -> None:
    per_choice(fake_openai)
    run = eval_run("prompts/pick.yaml", "--samples", "5")
    sent = fake_openai.count
    # Blue can no longer be read: the samples that said it no longer vote.
    prompt = project / "prompts" / "pick.yaml"
    prompt.write_text(PROMPT.replace("(?P<answer>[a-z]+)", "(?P<answer>red|green|none)"),
                      encoding="utf-8")
    (rescored,) = json.loads(invoke("rescore", run["id"], "--json").stdout)["runs"]
    assert fake_openai.count == sent  # nothing is asked of the model again
    rows = by_row(rescored["id"])
    for row_id, answers in ANSWERS.items():
        chosen = hand_vote(answers, {"red", "green", "none"})
        assert rows[row_id]["self_consistency"]["chosen"] == chosen, row_id
        assert rows[row_id]["completion"] == answers[chosen]
    assert rows["c"]["valid"] is False  # no sample of c can be read now
    expected_single = sum(1 for k, a in ANSWERS.items()
                          if a[0] == EXPECTED[k] and a[0] in {"red", "green"}) / len(ANSWERS)
    assert rescored["self_consistency"]["metrics"]["accuracy"]["single"] == \
        pytest.approx(expected_single)


def test_a_resumed_run_samples_as_it_started(project: Path, fake_openai: FakeOpenAI) -> None:
    per_choice(fake_openai)
    fake_openai.fail_matching("Question c", 500, times=5)  # every attempt of row c's request
    result = invoke("eval", "prompts/pick.yaml", "--samples", "5", "--json", code=3)
    (run,) = json.loads(result.stdout)["runs"]
    assert run["errors"] == 1
    resumed = eval_run("--resume", run["id"])
    last = fake_openai.chat_requests[-1]
    assert last.body["n"] == 5 and last.body["temperature"] == 0.7
    assert resumed["errors"] == 0
    assert by_row(run["id"])["c"]["self_consistency"]["samples"][0]["completion"] == "blue"
    assert resumed["metrics"]["accuracy"]["value"] == pytest.approx(hand_figures()["voted"])


def test_an_endpoint_configured_without_n_is_not_asked_for_it(
        project: Path, fake_openai: FakeOpenAI) -> None:
    (project / "promptctl.yaml").write_text(
        f"endpoints:\n  plain: {{base_url: '{fake_openai.base_url}', supports_n: false}}\n",
        encoding="utf-8")
    per_request(fake_openai)
    run = eval_run("prompts/pick.yaml", "--samples", "5", "--model", "plain/gpt-4o-mini",
                   "--concurrency", "1")
    assert len(fake_openai.chat_requests) == 5 * len(EXPECTED)
    assert not any("n" in r.body for r in fake_openai.chat_requests)
    assert {k: r["answer"] for k, r in by_row(run["id"]).items()} == VOTED
    assert "note" not in run["self_consistency"]  # nothing was refused: it was not asked


def test_a_judge_that_does_not_answer_a_number_is_refused(project: Path,
                                                          fake_openai: FakeOpenAI) -> None:
    (project / "judges").mkdir()
    (project / "judges" / "pick.yaml").write_text(
        JUDGE.replace("  type: integer", "  type: label\n  labels: [first, second]"), encoding="utf-8")
    result = run_cli("eval", "prompts/pick.yaml", "--samples", "5", "--vote", "judge:judges/pick.yaml")
    assert result.exit_code == 2
    assert "output.type is label" in result.stdout + result.stderr
    assert fake_openai.count == 0


@pytest.mark.parametrize(("folder", "kind"), [("pipelines", "a pipeline"), ("agents", "an agent")])
def test_pipelines_and_agents_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          fake_openai: FakeOpenAI, folder: str, kind: str) -> None:
    root = copy_examples(tmp_path / "proj")
    for extra in ("pipelines", "agents", "tools", "data"):
        if (REPO / extra).is_dir():
            shutil.copytree(REPO / extra, root / extra)
    monkeypatch.chdir(root)
    use_fake_openai(monkeypatch, fake_openai, "sk-test-vote-77a1")
    target = sorted((root / folder).glob("*.yaml"))[0]
    result = run_cli("eval", str(target.relative_to(root)), "--samples", "3")
    assert result.exit_code == 2
    assert f"is {kind} (its rows are several requests" in result.stderr
    assert fake_openai.count == 0


def test_a_judge_whose_key_is_not_set_is_refused_before_anything_is_sent(
        project: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PICK_JUDGE_KEY", raising=False)
    (project / "promptctl.yaml").write_text(
        f"endpoints:\n  judging: {{base_url: '{fake_openai.base_url}', "
        "api_key_env: PICK_JUDGE_KEY}\n", encoding="utf-8")
    (project / "judges").mkdir()
    (project / "judges" / "pick.yaml").write_text(
        JUDGE.replace("model: gpt-4o-mini", "model: judging/gpt-4o-mini"), encoding="utf-8")
    result = run_cli("eval", "prompts/pick.yaml", "--samples", "5", "--vote", "judge:judges/pick.yaml")
    assert result.exit_code == 2
    assert "$PICK_JUDGE_KEY is not set" in result.stderr
    assert fake_openai.count == 0


def _islands(page: str) -> list[dict[str, Any]]:
    return [json.loads(m) for m in re.findall(
        r'<script type="application/json" class="rowdata">(.*?)</script>', page, re.S)]


def test_the_report_draws_the_vote_and_each_rows_samples(project: Path,
                                                          fake_openai: FakeOpenAI) -> None:
    per_choice(fake_openai)
    run = eval_run("prompts/pick.yaml", "--samples", "5")
    invoke("report", run["id"], "-o", str(project / "report.html"))
    page = (project / "report.html").read_text(encoding="utf-8")
    section = page.split("<h3>Self-consistency</h3>", 1)[1].split("<h3>", 1)[0]
    hand = hand_figures()
    accuracy = run["self_consistency"]["metrics"]["accuracy"]
    row = re.search(r'<tr data-metric="accuracy">(.*?)</tr>', section, re.S)
    assert row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))
    assert re.findall(r'data-value="([^"]+)"', row.group(1)) == [
        repr(hand["single"]), repr(hand["voted"])]
    assert cells[2] == f"{accuracy['delta']:+.3g}"
    assert cells[5] == "mcnemar_exact"
    # The verdict is the paired test's, by the rule diff follows.
    assert cells[6].startswith("better (not significant)" if accuracy["p_value"] >= 0.05
                               else "better")
    unanimous = sum(1 for a in ANSWERS.values() if len(set(a)) == 1)
    assert f"5 samples per row at temperature 0.7, vote majority, over {len(EXPECTED)} rows " \
           f"(one request with n per row); {unanimous} of them unanimous" in section
    assert f"{run['self_consistency']['tokens_multiple']:.2f}×" in section
    assert "no single-sample latency" in section
    # Per row its five answers counted, the voted one marked; "??" cannot be read.
    [rows, *_] = _islands(page)
    votes = {r["id"]: r["v"] for r in rows["rows"]}
    assert votes["a"] == [["red", 3, 1], ["green", 1, 0], ["blue", 1, 0]]
    assert votes["b"] == [["red", 2, 1], ["green", 2, 0], ["blue", 1, 0]]
    assert votes["c"] == [["blue", 2, 1], [None, 3, 0, "unreadable"]]
    assert votes["e"] == [["red", 5, 1]]
    # A run without samples has neither.
    plain = eval_run("prompts/pick.yaml")
    invoke("report", plain["id"], "-o", str(project / "plain.html"))
    other = (project / "plain.html").read_text(encoding="utf-8")
    assert "Self-consistency" not in other
    assert all("v" not in r for r in _islands(other)[0]["rows"])


def test_runs_marks_sampled_runs(project: Path, fake_openai: FakeOpenAI) -> None:
    per_choice(fake_openai)
    sampled = eval_run("prompts/pick.yaml", "--samples", "5")
    plain = eval_run("prompts/pick.yaml")
    lines = invoke("runs").stdout.splitlines()
    line_of = {run["id"]: next(x for x in lines if run["id"] in x) for run in (sampled, plain)}
    assert "(samples 5)" in line_of[sampled["id"]]
    assert "(samples" not in line_of[plain["id"]]
