"""Cost against quality through the CLI: `diff` reports tokens, cost and latency beside the
metrics, and `report --history` draws each metric against cost with the Pareto front; the
fake server answers over HTTP through the real openai SDK and reports each request's usage
(its words counted as tokens)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from promptctl.render.html import charts_available
from tests.fakeserver import FakeOpenAI, last_user_message
from tests.helpers import GitRepo, eval_run, git_identity, git_init, invoke, use_fake_openai

ROWS = 5
# Two words of system message and two of user message ("Item N"); the answer "Answer: N".
SHORT = "Answer briefly."
# Seven words; the answer "Step one, step two. Answer: N" is six.
LONG = "Think step by step, then answer briefly."
PRICED = "pricing:\n  cheap-model: {input: 1000, output: 2000}\n  dear-model: {input: 3000, output: 3000}\n"


def prompt_text(system: str, model: str = "cheap-model") -> str:
    return f"""\
name: sums
model: {model}
messages:
  - role: system
    content: "{system}"
  - role: user
    content: "Item {{{{ item }}}}"
output:
  pattern: 'Answer: (?P<answer>-?\\d+)'
  type: integer
metrics: [exact_match, rmse]
evalset: ../evalsets/sums.jsonl
"""


def reply(body: dict[str, Any]) -> str:
    """The long prompt thinks aloud and gets every item right; the short one gets item 2
    wrong, except on dear-model, which gets everything right."""
    item = int(last_user_message(body).split()[-1])
    if "step by step" in str(body["messages"][0]["content"]):
        return f"Step one, step two. Answer: {item}"
    if item == 2 and body["model"] != "dear-model":
        return f"Answer: {item + 1}"
    return f"Answer: {item}"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_openai: FakeOpenAI) -> GitRepo:
    git_identity(monkeypatch)
    r = GitRepo(git_init(tmp_path / "repo"))
    r.write("promptctl.yaml", PRICED)
    r.write("evalsets/sums.jsonl", "".join(
        json.dumps({"id": f"r{i}", "input": {"item": i}, "expected": i}) + "\n"
        for i in range(1, ROWS + 1)))
    r.write("prompts/sums.yaml", prompt_text(SHORT))
    r.commit("short prompt")
    fake_openai.responder = reply
    use_fake_openai(monkeypatch, fake_openai, "sk-test-cost")
    monkeypatch.chdir(r.root)
    return r


def diff_json(a: str, b: str) -> dict[str, Any]:
    return dict(json.loads(invoke("diff", a, b, "--json").stdout))


def test_diff_reports_tokens_cost_and_latency_beside_the_metrics(repo: GitRepo) -> None:
    short = eval_run("prompts/sums.yaml")
    repo.write("prompts/sums.yaml", prompt_text(LONG))
    repo.commit("think step by step")
    long = eval_run("prompts/sums.yaml")
    usage = diff_json(short["id"], long["id"])["usage"]
    tokens = usage["tokens"]
    # Per row: 4 prompt tokens and 2 completion tokens, then 9 and 6.
    assert (tokens["prompt"]["a"], tokens["prompt"]["b"], tokens["prompt"]["delta"]) == (4, 9, 5)
    assert tokens["prompt"]["ci95"] == [5, 5] and tokens["prompt"]["n"] == ROWS
    assert (tokens["completion"]["a"], tokens["completion"]["b"]) == (2, 6)
    assert tokens["total"]["delta"] == 9
    # At $1000 and $2000 per million: 4000 + 4000 and 9000 + 12000 millionths of a dollar.
    cost = usage["cost_usd"]
    assert cost["a"] == pytest.approx(0.008) and cost["b"] == pytest.approx(0.021)
    assert cost["delta"] == pytest.approx(0.013) and cost["unknown"] is None
    assert cost["ci95"] == pytest.approx([0.013, 0.013])
    latency = usage["latency_ms"]
    assert latency["cached_excluded"] == 0
    for q in ("p50", "p90"):
        figure = latency[q]
        assert figure["n"] == ROWS and figure["a"] > 0 and figure["b"] > 0
        assert figure["delta"] == pytest.approx(figure["b"] - figure["a"])
        assert figure["ci95"][0] <= figure["delta"] <= figure["ci95"][1]

    out = invoke("diff", short["id"], long["id"]).stdout
    assert re.search(r"prompt tokens / row[\s│]+4\.0[\s│]+9\.0[\s│]+\+5\.0[\s│]+\[\+5\.0, \+5\.0\]",
                     out)
    assert re.search(r"cost \(USD / 1k rows\)[\s│]+\$8\.0000[\s│]+\$21\.0000[\s│]+\+\$13\.0000", out)
    assert "latency p90 (ms)" in out
    markdown = invoke("diff", short["id"], long["id"], "--markdown").stdout
    assert ("| cost (USD / 1k rows) | \\$8.0000 | \\$21.0000 | +\\$13.0000 "
            "| [+\\$13.0000, +\\$13.0000] |") in markdown
    if charts_available():
        report = repo.root.parent / "diff.html"
        invoke("report", "--diff", short["id"], long["id"], "--output", str(report))
        page = report.read_text(encoding="utf-8")
        table = re.search(r'<table class="usage">(.*?)</table>', page, re.S)
        assert table is not None
        cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", table.group(1))
        row = cells.index("cost (USD / 1k rows)")
        assert cells[row + 1:row + 5] == ["$8.0000", "$21.0000", "+$13.0000",
                                          "[+$13.0000, +$13.0000]"]


def test_diff_says_unknown_for_a_cost_without_a_price_and_leaves_out_cached_latency(
        repo: GitRepo) -> None:
    repo.write("promptctl.yaml", "pricing: {}\n")
    repo.commit("no prices")
    first = eval_run("prompts/sums.yaml")
    again = eval_run("prompts/sums.yaml")  # every answer from the cache
    usage = diff_json(first["id"], again["id"])["usage"]
    cost = usage["cost_usd"]
    assert cost["a"] is None and cost["b"] is None and cost["delta"] is None
    assert "no price for A (cheap-model) and B (cheap-model)" in cost["unknown"]
    assert usage["tokens"]["total"]["delta"] == 0
    assert usage["latency_ms"]["cached_excluded"] == ROWS
    assert usage["latency_ms"]["p50"]["n"] == 0 and usage["latency_ms"]["p50"]["delta"] is None
    out = invoke("diff", first["id"], again["id"]).stdout
    assert re.search(r"cost \(USD / 1k rows\)[\s│]+unknown[\s│]+unknown", out)
    assert "$0.0000" not in out
    assert f"latency leaves out {ROWS} paired row(s) answered from the cache" in out


def test_check_shows_the_cost_lines_of_its_comparison(repo: GitRepo) -> None:
    eval_run("prompts/sums.yaml")
    repo.write("prompts/sums.yaml", prompt_text(LONG))
    document = json.loads(invoke("check", "--base", "HEAD", "--json").stdout)
    (entry,) = document["prompts"]
    usage = entry["comparison"]["usage"]
    assert usage["tokens"]["prompt"]["delta"] == 5
    assert usage["cost_usd"]["delta"] == pytest.approx(0.013)
    report = repo.root.parent / "check.md"
    out = invoke("check", "--base", "HEAD", "--markdown", str(report)).stdout
    assert "per row: total tokens / row 6.0 → 15.0 (+9.0), cost (USD / 1k rows) $8.0000 → " \
        "$21.0000 (+$13.0000)" in out
    markdown = report.read_text(encoding="utf-8")
    assert "| cost (USD / 1k rows) | \\$8.0000 | \\$21.0000 | +\\$13.0000 |" in markdown


@pytest.mark.skipif(not charts_available(), reason="the report extra (vl-convert) is missing")
def test_report_history_draws_each_metric_against_cost_with_the_pareto_front(
        repo: GitRepo, tmp_path: Path) -> None:
    eval_run("prompts/sums.yaml")  # short on cheap-model: $8 per 1k rows, exact_match 0.8
    eval_run("prompts/sums.yaml", "--model", "dear-model")  # $18 per 1k rows, every row right
    eval_run("prompts/sums.yaml", "--model", "unpriced-model")  # cost unknown
    repo.write("prompts/sums.yaml", prompt_text(LONG))
    repo.commit("think step by step")
    eval_run("prompts/sums.yaml")  # long on cheap-model: $21 per 1k rows, every row right
    out = tmp_path / "report.html"
    invoke("report", "--history", "prompts/sums.yaml", "--output", str(out))
    page = out.read_text(encoding="utf-8")
    figures = re.findall(r'<figure class="chart" aria-label="([^"]*)">(.*?)</figure>', page, re.S)
    pareto = {label: svg for label, svg in figures if "Pareto front" in label}
    assert set(pareto) == {"exact_match against cost per row, Pareto front marked",
                           "rmse against cost per row, Pareto front marked"}
    svg = pareto["exact_match against cost per row, Pareto front marked"]
    # The front: short on cheap-model ($8, 0.8) and short on dear-model ($18, 1.0); long on
    # cheap-model ($21, 1.0) is dominated. The version labels name each point.
    assert svg.count("front: on the Pareto front; version: ") == 2
    assert svg.count("front: dominated; version: ") == 1
    assert re.search(r'front: on the Pareto front; version: 1: \w+ cheap-model; cost: 8;', svg)
    assert re.search(r'front: on the Pareto front; version: 2: \w+ dear-model; cost: 18;', svg)
    assert re.search(r'front: dominated; version: 4: \w+ cheap-model; cost: 21;', svg)
    assert 'aria-roledescription="line mark"' in svg  # the step line through the front
    for name in ("1: ", "2: "):
        assert name in svg
    assert "cost, USD per 1,000 rows" in svg
    # The point of unknown cost is listed apart, not drawn at 0.
    unpriced = re.search(r'<p class="dim unpriced">(.*?)</p>', page, re.S)
    assert unpriced is not None and "unpriced-model" in unpriced.group(1)
    assert svg.count("unpriced-model") == 0
