"""`promptctl probe`: inputs generated per label, evaluated through the prompt by the one
engine, agreement per label against a hand count, over real HTTP to the fake server."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from promptctl.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED
from tests.fakeserver import Body, FakeOpenAI, last_user_message
from tests.helpers import eval_run, invoke, show_rows, use_fake_openai

SENTIMENT = """\
name: sentiment
model: gpt-4o-mini
params:
  max_tokens: 16
messages:
  - role: system
    content: "Say the sentiment of the text: positive, negative or neutral."
  - role: user
    content: "Sentiment of: {{ text }}"
output:
  pattern: 'Sentiment: (?P<answer>\\w+)'
  type: label
  labels: [positive, negative, neutral]
metrics: [accuracy, format_validity]
evalset: ../evalsets/sentiment.jsonl
"""

SCORE = """\
name: score
model: gpt-4o-mini
messages:
  - role: user
    content: "Score {{ text }} from 0 to 10."
output:
  pattern: 'Score: (?P<answer>-?\\d+(\\.\\d+)?)'
  type: {type}
metrics: [rmse, exact_match]
evalset: ../evalsets/score.jsonl
"""

# The generator's request names the value asked for in this sentence of the built-in
# generator prompt.
ASKED = re.compile(r"correct answer is exactly: (\S+)")


def inputs_for(value: str, count: int = 10) -> str:
    """What a well-behaved generator answers: a JSON list of `count` texts, in a code fence."""
    return "```json\n" + json.dumps([f"{value} case {i}" for i in range(1, count + 1)]) + "\n```"


class Sentiments:
    """The fake model: writes ten inputs per asked value, and answers the prompt for an input
    "VALUE case K" with the reply `answers[VALUE](K)`."""

    def __init__(self, answers: dict[str, Any], generated: dict[str, str] | None = None) -> None:
        self.answers = answers
        self.generated = generated or {}

    def __call__(self, body: Body) -> str:
        text = last_user_message(body)
        asked = ASKED.search(text)
        if asked is not None:
            value = asked.group(1)
            return self.generated.get(value, inputs_for(value))
        found = re.search(r"(\S+) case (\d+)", text)
        assert found is not None, text
        return str(self.answers[found.group(1)](int(found.group(2))))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_openai: FakeOpenAI) -> Path:
    root = tmp_path / "proj"
    (root / "prompts").mkdir(parents=True)
    (root / "evalsets").mkdir()
    (root / "prompts" / "sentiment.yaml").write_text(SENTIMENT, encoding="utf-8")
    (root / "evalsets" / "sentiment.jsonl").write_text(
        json.dumps({"id": "e1", "input": {"text": "positive case 1"}, "expected": "positive"})
        + "\n", encoding="utf-8")
    monkeypatch.chdir(root)
    use_fake_openai(monkeypatch, fake_openai, "sk-test-probe-3c2b1a")
    return root


def probe_json(*args: str, code: int = 0) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(invoke("probe", *args, "--json", code=code).stdout)
    return dict(document["probe"])


def bootstrap_share(hits: int, n: int) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of a share of `hits` in `n`, drawn here with
    numpy's generator as the metrics document it (seed, resamples), not through promptctl."""
    x = np.array([1.0] * hits + [0.0] * (n - hits))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = x[rng.integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def seven_of_ten(k: int) -> str:
    """Cases 1-7 answered positive, 8 and 9 negative, 10 unreadable."""
    return "Sentiment: positive" if k <= 7 else "Sentiment: negative" if k <= 9 else "Not sure."


def test_agreement_is_the_hand_count_with_its_interval(project: Path,
                                                       fake_openai: FakeOpenAI) -> None:
    fake_openai.responder = Sentiments({"positive": seven_of_ten,
                                        "neutral": lambda k: "Sentiment: neutral"})
    result = probe_json("prompts/sentiment.yaml", "--label", "positive", "--label", "Neutral")
    positive, neutral = result["labels"]
    assert positive["label"] == "positive"
    assert neutral["label"] == "neutral"  # as the prompt spells its label
    assert (positive["hits"], positive["generated"], positive["requested"]) == (7, 10, 10)
    assert positive["agreement"]["value"] == pytest.approx(0.7)
    assert positive["agreement"]["n"] == 10
    assert positive["agreement"]["ci95"] == pytest.approx(list(bootstrap_share(7, 10)))
    assert positive["others"] == [{"answer": "negative", "count": 2}, {"answer": None, "count": 1}]
    assert neutral["agreement"]["value"] == 1.0 and neutral["others"] == []
    assert result["problems"] == [] and result["errors"] == 0
    # The inputs are rows of a stored run of the prompt, expecting the label.
    rows = [r for r in show_rows(result["run"]) if r["kind"] == "eval"]
    assert len(rows) == 20
    assert {r["input"]["text"]: r["expected"] for r in rows}["positive case 8"] == "positive"


def test_the_terminal_table_lists_each_label_and_the_other_answers(project: Path,
                                                                  fake_openai: FakeOpenAI) -> None:
    fake_openai.responder = Sentiments({"positive": seven_of_ten})
    out = invoke("probe", "prompts/sentiment.yaml", "--label", "positive").stdout
    line = next(x for x in out.splitlines() if x.strip().startswith("positive"))
    low, high = bootstrap_share(7, 10)
    assert f"0.700 [{low:.3f}, {high:.3f}]" in line
    assert "10 of 10" in line
    assert "negative ×2" in line and "(unreadable) ×1" in line


def test_numbers_agree_within_the_tolerance(project: Path, fake_openai: FakeOpenAI) -> None:
    (project / "prompts" / "score.yaml").write_text(SCORE.replace("{type}", "number"),
                                                    encoding="utf-8")
    # Cases 1-5 answered 9, 6-8 answered 8, 9-10 answered 2.
    fake_openai.responder = Sentiments({"9": lambda k: f"Score: {9 if k <= 5 else 8 if k <= 8 else 2}"})
    exact = probe_json("prompts/score.yaml", "--label", "9")["labels"][0]
    assert exact["label"] == 9 and exact["hits"] == 5
    assert exact["agreement"]["value"] == pytest.approx(0.5)
    assert exact["others"] == [{"answer": 8, "count": 3}, {"answer": 2, "count": 2}]
    before = len(fake_openai.chat_requests)
    near = probe_json("prompts/score.yaml", "--label", "9", "--tolerance", "1")
    assert near["tolerance"] == 1.0
    assert near["labels"][0]["agreement"]["value"] == pytest.approx(0.8)
    assert near["labels"][0]["others"] == [{"answer": 2, "count": 2}]
    # The tolerance changes the reading, not a request: everything came from the cache.
    assert len(fake_openai.chat_requests) == before


def test_integer_outputs_take_whole_numbers_only(project: Path, fake_openai: FakeOpenAI) -> None:
    (project / "prompts" / "score.yaml").write_text(SCORE.replace("{type}", "integer"),
                                                    encoding="utf-8")
    fake_openai.responder = Sentiments({"7": lambda k: f"Score: {7 if k % 2 else 6}"})
    label = probe_json("prompts/score.yaml", "--label", "7", "-n", "4")["labels"][0]
    assert (label["label"], label["hits"], label["agreement"]["n"]) == (7, 2, 4)
    assert label["others"] == [{"answer": 6, "count": 2}]
    result = invoke("probe", "prompts/score.yaml", "--label", "7.5", code=2)
    assert "not an integer" in result.stderr and "score.yaml" in result.stderr


def test_a_label_the_prompt_does_not_have_is_refused(project: Path) -> None:
    result = invoke("probe", "prompts/sentiment.yaml", "--label", "angry", code=2)
    assert "'angry' is not one of the prompt's labels" in result.stderr
    assert "prompts/sentiment.yaml" in result.stderr


def test_malformed_generations_are_reported_and_the_rest_used(project: Path,
                                                              fake_openai: FakeOpenAI) -> None:
    messy = ('Sure! Here are the inputs:\n```json\n[{"text": "positive case 1"}, 42, '
             '{"other": 1, "more": 2}, "positive case 2", "positive case 1", '
             '{"text": "positive case 3"}, "positive ca')  # cut short by max_tokens
    fake_openai.responder = Sentiments(
        {"positive": lambda k: "Sentiment: positive", "negative": lambda k: "Sentiment: negative"},
        generated={"positive": messy, "negative": "I cannot help with that."})
    result = probe_json("prompts/sentiment.yaml", "--label", "positive", "--label", "negative")
    positive, negative = result["labels"]
    assert (positive["generated"], positive["hits"]) == (3, 3)
    assert positive["agreement"]["value"] == 1.0
    assert (negative["generated"], negative["agreement"]["n"]) == (0, 0)
    assert negative["agreement"]["value"] is None
    said = {(p["label"], p["message"]) for p in result["problems"]}
    assert said == {
        ("positive", "the JSON list is cut short after 6 item(s)"),
        ("positive", "item 2 is int, not a string or an object"),
        ("positive", "item 3 lacks text"),
        ("positive", "1 item(s) repeat an earlier one"),
        ("positive", "3 of the 10 inputs asked for could be used"),
        ("negative", "the answer holds no JSON list"),
        ("negative", "0 of the 10 inputs asked for could be used"),
    }


def test_no_usable_input_at_all_is_an_input_error(project: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.responder = Sentiments({}, generated={"positive": "No."})
    result = invoke("probe", "prompts/sentiment.yaml", "--label", "positive", code=2)
    assert "gave no usable input for any label" in result.stderr
    assert "the answer holds no JSON list" in result.stderr


def test_a_second_identical_probe_sends_no_request(project: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.responder = Sentiments({"positive": seven_of_ten})
    first = probe_json("prompts/sentiment.yaml", "--label", "positive")
    sent = len(fake_openai.chat_requests)
    assert sent == 11  # one generation, ten inputs
    again = probe_json("prompts/sentiment.yaml", "--label", "positive")
    assert len(fake_openai.chat_requests) == sent
    assert again["cached"] == 10 and again["run"] != first["run"]
    assert again["labels"] == first["labels"]


def test_saved_rows_count_only_once_reviewed(project: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.responder = Sentiments({"positive": seven_of_ten})
    saved = project / "evalsets" / "sentiment.jsonl"
    result = probe_json("prompts/sentiment.yaml", "--label", "positive", "-n", "3",
                        "--save", "evalsets/sentiment.jsonl")
    assert result["saved"] == {"path": "evalsets/sentiment.jsonl", "added": 3, "present": 0}
    lines = [json.loads(x) for x in saved.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 4
    assert all(x["source"] == "probe" and x["reviewed"] is False and x["expected"] == "positive"
               for x in lines[1:])
    assert [x["input"]["text"] for x in lines[1:]] == [f"positive case {k}" for k in (1, 2, 3)]
    # Unreviewed rows are skipped, and eval says so.
    run = eval_run("prompts/sentiment.yaml")
    assert run["n"] == 1 and run["metrics"]["accuracy"]["n"] == 1
    stderr = invoke("eval", "prompts/sentiment.yaml").stderr
    assert "skipped 3 unreviewed row(s) of evalsets/sentiment.jsonl" in stderr
    validated = json.loads(invoke("validate", "evalsets/sentiment.jsonl", "--json").stdout)
    assert validated["files"][0]["unreviewed"] == 3
    # A person checks one row: it counts from then on.
    lines[2]["reviewed"] = True
    saved.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    run = eval_run("prompts/sentiment.yaml")
    assert run["n"] == 2 and run["metrics"]["accuracy"]["n"] == 2
    # The same probe again finds its rows there and adds none.
    again = probe_json("prompts/sentiment.yaml", "--label", "positive", "-n", "3",
                       "--save", "evalsets/sentiment.jsonl")
    assert again["saved"] == {"path": "evalsets/sentiment.jsonl", "added": 0, "present": 3}
    assert len(saved.read_text(encoding="utf-8").splitlines()) == 4


def test_save_wants_a_jsonl_file(project: Path) -> None:
    result = invoke("probe", "prompts/sentiment.yaml", "--label", "positive", "--save",
                    "evalsets/x.csv", code=2)
    assert "evalsets/x.csv" in result.stderr and "JSON Lines" in result.stderr


def test_probe_runs_are_no_baseline_nor_history(project: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.responder = Sentiments({"positive": seven_of_ten})
    evaluated = eval_run("prompts/sentiment.yaml")
    probed = probe_json("prompts/sentiment.yaml", "--label", "positive")
    history = json.loads(invoke("history", "prompts/sentiment.yaml", "--json").stdout)
    assert [v["run"] for v in history["versions"]] == [evaluated["id"]]

    from promptctl.project import open_project
    from promptctl.selection import standing_run
    from promptctl.store import open_store

    config = open_project()
    store = open_store(config.store_url())
    found = standing_run(store, "sentiment")
    assert found is not None and found.run["id"] == evaluated["id"]
    # Both of the probe's runs (the generator's and the prompt's) are marked as a probe's.
    stored = store.get_run(probed["run"])
    assert stored["options"]["probe"]["labels"] == ["positive"]
    assert store.get_run(probed["generator_run"])["options"]["probe"] == {"generator_for": "sentiment"}
    listed = invoke("runs").stdout
    assert sum("(probe)" in line for line in listed.splitlines()) == 2  # the generator's too
    resumed = invoke("eval", "--resume", probed["run"], code=2)
    assert "is a probe's run, which cannot be resumed" in resumed.stderr


def test_the_report_of_a_probe_run_shows_the_agreement(project: Path, fake_openai: FakeOpenAI) -> None:
    pytest.importorskip("vl_convert")
    fake_openai.responder = Sentiments({"positive": seven_of_ten})
    probed = probe_json("prompts/sentiment.yaml", "--label", "positive")
    invoke("report", probed["run"], "-o", "probe.html")
    html = (project / "probe.html").read_text(encoding="utf-8")
    assert "Probe: round-trip agreement per label" in html
    row = re.search(r'<tr data-label="positive">.*?</tr>', html, re.DOTALL)
    assert row is not None
    assert 'data-value="0.7"' in row.group() and "negative ×2" in row.group()


def test_a_generator_prompt_of_ones_own(project: Path, fake_openai: FakeOpenAI) -> None:
    (project / "prompts" / "gen.yaml").write_text(
        "model: gpt-4o\nmessages:\n  - role: user\n    content: 'Give {{ n }} texts that are "
        "{{ value }} for {{ variables[0] }}, as JSON'\noutput: {type: string}\n",
        encoding="utf-8")

    def reply(body: Body) -> str:
        text = last_user_message(body)
        if text.startswith("Give "):
            assert body["model"] == "gpt-4o"  # the generator prompt's own model
            return json.dumps(["neutral case 1", "neutral case 2"])
        return "Sentiment: neutral"

    fake_openai.responder = reply
    result = probe_json("prompts/sentiment.yaml", "--label", "neutral", "-n", "2",
                        "--generator-prompt", "prompts/gen.yaml")
    assert result["generator"] == "gpt-4o"
    assert result["labels"][0]["agreement"]["value"] == 1.0


def test_a_numbered_list_stands_in_for_json(project: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.responder = Sentiments(
        {"negative": lambda k: "Sentiment: negative"},
        generated={"negative": 'Here you go:\n1. negative case 1\n2) "negative case 2"\n- negative case 3'})
    result = probe_json("prompts/sentiment.yaml", "--label", "negative", "-n", "3")
    assert result["labels"][0]["hits"] == 3
    assert [p["message"] for p in result["problems"]] == [
        "no JSON list: 3 item(s) read from a numbered or bulleted list"]


def test_a_prompt_of_several_variables_gets_objects(project: Path, fake_openai: FakeOpenAI) -> None:
    (project / "prompts" / "pair.yaml").write_text(
        "model: gpt-4o-mini\nmessages:\n  - role: user\n    content: 'Is {{ city }} in "
        "{{ country }}? Say Answer: true or false'\noutput:\n  pattern: 'Answer: (?P<answer>\\w+)'\n"
        "  type: label\n  labels: [inside, outside]\n", encoding="utf-8")
    asked: list[str] = []

    def reply(body: Body) -> str:
        text = last_user_message(body)
        if "correct answer is exactly" in text:
            asked.append(text)
            return json.dumps([{"city": "Lyon", "country": "France"},
                               {"city": "Lyon", "country": "Peru", "why": "ignored"},
                               {"city": "Oslo"}])
        return "Answer: inside"

    fake_openai.responder = reply
    result = probe_json("prompts/pair.yaml", "--label", "inside", "-n", "2")
    (shown,) = asked
    assert "each with the keys city, country" in shown
    assert "user: Is {city} in {country}?" in shown  # the prompt, its variables as {name}
    assert result["labels"][0]["generated"] == 2 and result["labels"][0]["hits"] == 2
    assert [p["message"] for p in result["problems"]] == ["item 3 lacks country"]
