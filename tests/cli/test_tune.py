"""`promptctl tune` against the fake server, over real HTTP through the real openai SDK: the
server answers right only when the prompt shows it a certain example (or instruction), so
the search has something to find, and every request it sends is counted there."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.fakeserver import FakeOpenAI, content_text, last_user_message
from tests.helpers import GitRepo, git, git_identity, git_init, invoke, use_fake_openai

ROWS = 30
MAGIC = "MAGIC"

PROMPT = """\
# Doubles a number; the examples are listed in the system message.
name: double
description: Twice the number.
model: gpt-4o-mini
params:
  max_tokens: 16
messages:
  - role: system
    content: |
      Double the number.
      {% for ex in examples %}
      Example: {{ ex.input.item }} -> {{ ex.expected }} ({{ ex.input.note }})
      {% endfor %}
  - role: user
    content: "Item {{ item }}"
examples:
  - input: {item: 100, note: plain}
    expected: 200
output:
  pattern: 'Answer: (?P<answer>-?\\d+)'
  type: integer
metrics: [exact_match, format_validity]
evalset: ../evalsets/double.jsonl
thresholds:
  exact_match: {min: 0.5}
"""

INSTRUCTION_PROMPT = PROMPT.replace("""      Double the number.
      {% for ex in examples %}
      Example: {{ ex.input.item }} -> {{ ex.expected }} ({{ ex.input.note }})
      {% endfor %}
""", "      Transform the number.\n")


def rows(n: int = ROWS, start: int = 1, note: str = "plain") -> str:
    return "".join(json.dumps({"id": f"r{i:02d}", "input": {"item": i, "note": note},
                               "expected": 2 * i}) + "\n" for i in range(start, start + n))


def item_of(body: dict[str, Any]) -> int:
    return int(last_user_message(body).split()[-1])


def system_of(body: dict[str, Any]) -> str:
    return "".join(content_text(m.get("content")) for m in body["messages"]
                   if m.get("role") == "system")


def magic_reply(body: dict[str, Any]) -> str:
    """Right only when an example with the magic note is in the system message."""
    item = item_of(body)
    return f"Answer: {2 * item if MAGIC in system_of(body) else item}"


class Project(GitRepo):
    def __init__(self, root: Path, server: FakeOpenAI) -> None:
        super().__init__(root)
        self.server = server

    def state(self) -> tuple[str, str, bytes, bytes, str]:
        return (self.status(), self.sha("HEAD"), (self.root / ".git" / "index").read_bytes(),
                (self.root / "prompts" / "double.yaml").read_bytes(),
                git(self.root, "symbolic-ref", "HEAD"))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_openai: FakeOpenAI) -> Project:
    git_identity(monkeypatch)
    root = git_init(tmp_path / "repo")
    p = Project(root, fake_openai)
    p.write(".gitignore", ".promptctl/\n")
    p.write("prompts/double.yaml", PROMPT)
    p.write("evalsets/double.jsonl", rows())
    # Two examples that make the model right, only in the extra pool.
    p.write("pool.jsonl", rows(2, start=200, note=MAGIC).replace('"r2', '"m2'))
    p.commit("double")
    fake_openai.responder = magic_reply
    use_fake_openai(monkeypatch, fake_openai, "sk-test-tune")
    monkeypatch.chdir(root)
    return p


def tune_json(*args: str, code: int = 0) -> dict[str, Any]:
    result = invoke("tune", "prompts/double.yaml", *args, "--json", code=code)
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_fewshot_finds_the_examples_and_commits_them_on_a_new_branch(project: Project) -> None:
    before = project.state()
    out = tune_json("--pool", "pool.jsonl", "--strategy", "fewshot")
    assert out["splits"] | {"test_ids": None} == {"seed": 0, "train": 9, "validation": 9,
                                                  "test": 12, "pool": 12, "test_ids": None}
    best = next(c for c in out["candidates"] if c["id"] == out["best"])
    assert any(e.startswith("m2") for e in best["examples"])
    assert best["value"] == 1.0
    original = out["candidates"][0]
    assert original["origin"] == "original" and original["value"] == 0.0
    test = out["test"]
    assert test["a"] == 0.0 and test["b"] == 1.0 and test["n"] == 12
    assert test["p_value"] < 0.05 and test["verdict"]["change"] == "better"
    assert out["written"] is True
    branch = out["branch"]
    assert re.fullmatch(r"tune/double-\d{8}", branch)
    # The work tree, index, HEAD and its branch are as they were.
    assert project.state() == before
    # One commit on top of HEAD, changing only the prompt file, whose message states the
    # figures.
    assert project.sha(f"{branch}~1") == project.sha("HEAD")
    changed = git(project.root, "diff", "--name-only", "HEAD", branch).split()
    assert changed == ["prompts/double.yaml"]
    message = git(project.root, "log", "-1", "--format=%B", branch)
    assert f"Test delta {test['delta']:+.3f}" in message
    assert f"[{test['ci95'][0]:+.3f}, {test['ci95'][1]:+.3f}]" in message
    assert f"p={test['p_value']:.4g}" in message
    assert f"Budget spent: {out['spend']['requests']} requests" in message
    assert "Seed 0" in message
    # The committed file loads, keeps the other fields and holds the chosen examples.
    committed = git(project.root, "show", f"{branch}:prompts/double.yaml")
    project.write("tuned/double.yaml", committed)
    from promptctl.prompts import load_prompt

    tuned = load_prompt(project.root / "tuned" / "double.yaml", project.root)
    assert tuple(e.id for e in tuned.examples) == tuple(best["examples"])
    assert tuned.thresholds == {"exact_match": {"min": 0.5}}
    assert committed.startswith("# Doubles a number")
    page = Path(out["html"]).read_text()
    assert all(c["id"] in page for c in out["candidates"]) and best["examples"][0] in page
    # The zero-shot candidate's examples cell says so rather than standing empty.
    (zero,) = [c for c in out["candidates"] if c["examples"] == []]
    row = page[page.index(f"<td>{zero['id']}</td>"):]
    assert '<span class="dim">none</span>' in row[:row.index("</tr>")]


def test_test_rows_reach_the_server_only_in_the_final_phase(project: Project) -> None:
    out = tune_json("--pool", "pool.jsonl")
    test_ids = set(out["splits"]["test_ids"])
    test_items = {int(i[1:]) for i in test_ids}
    items = [item_of(r.body) for r in project.server.chat_requests]
    assert len(items) == out["spend"]["requests"]
    # The final phase is the last requests: the original and the chosen candidate on the
    # test rows (and their own examples, when not already answered).
    final = sum(1 for run in (out["test"]["original_run"], out["test"]["best_run"])
                for r in json.loads(invoke("show", run, "--json").stdout)["rows"]
                if not r["cached"])
    assert final >= 2 * len(test_ids)
    assert not test_items & set(items[:len(items) - final])
    assert test_items <= set(items[len(items) - final:])
    # Nothing of the search was scored on a test row.
    for c in out["candidates"]:
        if c["run"]:
            shown = json.loads(invoke("show", c["run"], "--json").stdout)
            assert not {r["row_id"] for r in shown["rows"]} & test_ids


def test_same_seed_and_cache_give_the_same_result_with_no_request(project: Project) -> None:
    first = tune_json("--pool", "pool.jsonl")
    sent = len(project.server.chat_requests)
    second = tune_json("--pool", "pool.jsonl")
    assert len(project.server.chat_requests) == sent
    assert second["spend"]["requests"] == 0
    strip = ("run", "requests", "cost_usd")
    assert [{k: v for k, v in c.items() if k not in strip} for c in second["candidates"]] == \
        [{k: v for k, v in c.items() if k not in strip} for c in first["candidates"]]
    assert all(c["requests"] == 0 for c in second["candidates"])
    for key in ("a", "b", "delta", "ci95", "p_value"):
        assert second["test"][key] == first["test"][key]
    # The branch exists already: the second gets a suffix.
    assert second["branch"] == first["branch"] + "-2"


@pytest.mark.parametrize("budget", [60, 75, 110])
def test_the_budget_is_never_exceeded(project: Project, budget: int) -> None:
    out = tune_json("--pool", "pool.jsonl", "--budget", str(budget))
    sent = len(project.server.chat_requests)
    assert sent <= budget
    assert out["spend"]["requests"] == sent
    if out["stopped"]:
        assert any(c["skipped"] for c in out["candidates"])
    # The final test was kept back: it ran whenever a candidate beat the original.
    if out["best"] not in (None, "c0"):
        assert out["test"] is not None


def test_a_budget_too_small_for_the_first_run_refuses_before_sending(project: Project) -> None:
    result = invoke("tune", "prompts/double.yaml", "--budget", "20", code=2)
    assert "kept for the final test" in result.stderr
    assert project.server.chat_requests == []


def test_dry_run_sends_nothing_and_states_the_estimate(project: Project) -> None:
    out = tune_json("--pool", "pool.jsonl", "--dry-run", "--budget", "100")
    assert project.server.chat_requests == []
    est = out["estimate"]
    assert est["bootstrap"] == 13 and est["final"] >= 2 * 12
    assert est["total"] == est["bootstrap"] + est["candidates"] * est["per_candidate"] + \
        est["proposer"] + est["final"]
    assert out["written"] is False


def test_when_nothing_helps_nothing_is_written(project: Project) -> None:
    project.server.responder = lambda body: f"Answer: {item_of(body)}"
    before = project.state()
    branches = git(project.root, "branch", "--list")
    result = invoke("tune", "prompts/double.yaml", "--pool", "pool.jsonl")
    assert "no candidate scored better than the original on validation" in result.stdout
    assert "nothing written" in result.stdout
    assert project.state() == before and git(project.root, "branch", "--list") == branches
    assert not list((project.root / ".promptctl").glob("tune/*.html"))


def test_a_small_eval_set_is_refused_with_the_minimum(project: Project) -> None:
    project.write("evalsets/double.jsonl", rows(8))
    result = invoke("tune", "prompts/double.yaml", code=2)
    assert "the eval set has 8 rows; tune needs at least 9" in result.stderr
    assert "p < 0.05" in result.stderr and "double.jsonl" in result.stderr
    assert project.server.chat_requests == []


def test_dollar_budget_needs_a_known_price(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    project.write("promptctl.yaml", "endpoints:\n  mine: {base_url: "
                  f"\"{project.server.base_url}\", api_key_env: OPENAI_API_KEY}}\n")
    result = invoke("tune", "prompts/double.yaml", "--model", "mine/m1", "--budget", "$0.10",
                    code=2)
    assert "price of mine/m1" in result.stderr and "pricing:" in result.stderr


def test_the_instructions_strategy_uses_the_proposers_rewrite(project: Project) -> None:
    project.write("prompts/double.yaml", INSTRUCTION_PROMPT)
    project.commit("instruction prompt")

    def reply(body: dict[str, Any]) -> str:
        if "You write instructions" in system_of(body):
            assert "Transform the number." in last_user_message(body)
            return "<instruction>Always double the number.</instruction>"
        item = item_of(body)
        return f"Answer: {2 * item if 'Always double' in system_of(body) else item}"

    project.server.responder = reply
    out = tune_json("--strategy", "instructions", "--proposals", "2")
    best = next(c for c in out["candidates"] if c["id"] == out["best"])
    assert best["instruction"] == "Always double the number."
    assert out["written"] is True
    committed = git(project.root, "show", f"{out['branch']}:prompts/double.yaml")
    assert "Always double the number." in committed and "Transform" not in committed


def test_resume_continues_with_what_was_spent(project: Project) -> None:
    result = invoke("tune", "prompts/double.yaml", "--resume", code=2)
    assert "no interrupted tuning" in result.stderr
    # A first search cut short by its budget...
    first = tune_json("--pool", "pool.jsonl", "--budget", "75")
    assert first["stopped"] and first["written"] is False
    done = {c["id"]: c["run"] for c in first["candidates"] if c["run"]}
    # ...continued with a larger one: what was evaluated is not evaluated again, what it
    # spent counts against the same budget, and the whole never sends more than it allows.
    again = tune_json("--pool", "pool.jsonl", "--budget", "200", "--resume")
    assert {c["id"]: c["run"] for c in again["candidates"] if c["id"] in done} == done
    assert again["spend"]["requests"] == len(project.server.chat_requests) <= 200
    assert again["written"] is True


def test_the_search_runs_are_stored_but_never_stand_for_a_version(project: Project) -> None:
    out = tune_json("--pool", "pool.jsonl")
    listed = json.loads(invoke("runs", "double", "--json").stdout)["runs"]
    runs = {c["run"] for c in out["candidates"] if c["run"]} | \
        {out["test"]["original_run"], out["test"]["best_run"]}
    assert runs <= {r["id"] for r in listed}
    # Runs of a split: not a version's standing run, so no history point, no diff side and
    # no baseline of check at this commit.
    assert json.loads(invoke("history", "double", "--json").stdout)["versions"] == []
    result = invoke("diff", "HEAD", "HEAD", "--prompt", "prompts/double.yaml", code=2)
    assert "no stored run" in result.stderr
    # A full evaluation of the same version does stand for it.
    invoke("eval", "prompts/double.yaml", "--json")
    assert len(json.loads(invoke("history", "double", "--json").stdout)["versions"]) == 1


def test_an_uncommitted_prompt_is_refused_before_sending(project: Project) -> None:
    project.write("prompts/double.yaml", PROMPT.replace("Twice the number.", "Twice it."))
    result = invoke("tune", "prompts/double.yaml", code=2)
    assert "changes that are not committed" in result.stderr and "git add" in result.stderr
    assert project.server.chat_requests == []
    # A dry run sends nothing, so it may look at an edited file.
    assert tune_json("--dry-run")["written"] is False


def test_a_dollar_budget_is_never_exceeded(project: Project) -> None:
    out = tune_json("--pool", "pool.jsonl", "--budget", "$0.0015")
    assert out["stopped"] and "$0.0015" in out["stopped"]
    runs = [c["run"] for c in out["candidates"] if c["run"]]
    if out["test"]:
        runs += [out["test"]["original_run"], out["test"]["best_run"]]
    # What the stored runs cost (their own accounting, not tune's) is within the budget.
    cost = sum(json.loads(invoke("show", r, "--json").stdout)["run"]["cost_usd"] or 0
               for r in runs)
    assert 0 < out["spend"]["cost_usd"] <= 0.0015
    assert cost <= 0.0015


def test_an_unknown_metric_names_the_prompts_metrics(project: Project) -> None:
    result = invoke("tune", "prompts/double.yaml", "--metric", "exact_mach", code=2)
    assert "exact_match, format_validity" in result.stderr and "double.yaml" in result.stderr
    assert project.server.chat_requests == []


def split_of(project: Project) -> dict[str, list[str]]:
    """The validation and test ids of seed 0."""
    from promptctl.evalsets import load_evalset
    from promptctl.tune import split_rows

    path = project.root / "evalsets" / "double.jsonl"
    splits = split_rows(list(load_evalset(path)), 0, evalset=path, has_pool=True)
    return {"validation_ids": [r.id for r in splits.validation],
            "test_ids": [r.id for r in splits.test]}


@pytest.mark.parametrize(("budget", "seed"), [(60, 1), (75, 2), (110, 3), (160, 4)])
def test_retries_of_failed_requests_never_pass_the_budget(project: Project, budget: int,
                                                          seed: int) -> None:
    # About a third of the requests fail (429 asking for a short wait, or 500); the SDK
    # retries each, and every attempt reaches the server.
    project.server.fault_rates(rate_429=0.25, retry_after=0.01, rate_500=0.05, seed=seed)
    out = tune_json("--pool", "pool.jsonl", "--budget", str(budget))
    recorded = project.server.requests
    assert len(recorded) <= budget
    assert out["spend"]["requests"] == len(recorded)
    assert any(r.status in (429, 500) for r in recorded)
    cut = [c for c in out["candidates"] if (c["skipped"] or "").startswith("cut by the budget")]
    if cut:
        # The search ended at the cut candidate, which was not scored on part of its rows.
        assert cut[-1] is out["candidates"][-1] and cut[-1]["value"] is None
        assert "the budget ran out during candidate" in out["stopped"]
    if out["written"]:
        assert out["test"]["verdict"]["change"] == "better"


def test_a_candidate_cut_by_retries_ends_the_search_and_the_test_still_runs(
        project: Project) -> None:
    splits = split_of(project)
    row = splits["validation_ids"][0]
    # One validation row fails every attempt: each evaluation on validation sends its
    # request 5 times (4 retries), which the per-candidate check before it cannot foresee.
    project.server.fail_matching(f"Item {int(row[1:])}", status=429)
    # Right with three examples or more: the bootstrapped set (c2) beats the original.
    project.server.responder = lambda body: "Answer: " + str(
        item_of(body) * (2 if system_of(body).count("Example:") >= 3 else 1))
    # 105: c3 passes the check before it (11 requests to send, 33 kept for the test) with
    # less to spare than its failing row's 4 retries.
    budget = 105
    out = tune_json("--pool", "pool.jsonl", "--budget", str(budget))
    recorded = project.server.requests
    assert len(recorded) <= budget and out["spend"]["requests"] == len(recorded)
    cut = out["candidates"][-1]
    assert cut["id"] == "c3" and cut["value"] is None and cut["run"] is None
    assert cut["skipped"].startswith(f"cut by the budget after {cut['requests']} requests")
    assert out["best"] == "c2"
    assert "retries of failed requests used up" in out["stopped"]
    assert all(not (c["skipped"] or "").startswith("cut") for c in out["candidates"][:-1])
    # The test kept back was not touched by the search: it ran, on every test row.
    assert out["test"] is not None and out["test"]["n"] == len(splits["test_ids"])
    assert out["written"] is True


def test_a_final_test_cut_by_retries_writes_nothing_and_says_why(project: Project) -> None:
    splits = split_of(project)
    branches = git(project.root, "branch", "--list")
    # Three test rows fail every attempt: the final test needs 24 more requests (4 retries
    # each, in both runs) than the first tries kept back for it, more than the search can
    # leave unspent (less than a candidate's evaluation). Items whose text no other
    # item's contains ("Item 2" is in "Item 21").
    items = [n for n in (int(i[1:]) for i in splits["test_ids"]) if 10 <= n <= 30 and n != 20]
    for n in items[:3]:
        project.server.fail_matching(f"Item {n}", status=500)
    project.server.responder = lambda body: "Answer: " + str(
        item_of(body) * (2 if system_of(body).count("Example:") >= 3 else 1))
    out = tune_json("--pool", "pool.jsonl", "--budget", "120")
    recorded = project.server.requests
    assert len(recorded) <= 120 and out["spend"]["requests"] == len(recorded)
    assert out["written"] is False and out["test"] is None
    assert out["reason"].startswith("the final test was cut by the budget")
    assert "requests were left of the budget of 120" in out["reason"]
    assert "nothing written" in out["reason"]
    assert git(project.root, "branch", "--list") == branches


def test_a_dollar_budget_holds_with_retries(project: Project) -> None:
    project.server.fault_rates(rate_429=0.3, retry_after=0.01, seed=5)
    out = tune_json("--pool", "pool.jsonl", "--budget", "$0.0015")
    assert 0 < out["spend"]["cost_usd"] <= 0.0015
    assert any(r.status == 429 for r in project.server.requests)


def test_without_a_budget_failed_requests_are_retried_as_before(project: Project) -> None:
    project.server.fail_matching("Item 15", status=429, times=2)
    from tests.helpers import eval_run, show_rows

    run = eval_run("prompts/double.yaml")
    row = next(r for r in show_rows(run["id"]) if r["row_id"] == "r15")
    assert row["attempts"] == 3 and not row.get("error")
    assert len(project.server.chat_requests) == ROWS + 1 + 2


def test_history_shows_the_search_apart_from_the_versions(project: Project) -> None:
    out = tune_json("--pool", "pool.jsonl", "--strategy", "fewshot")
    # Before any run stands for a version the report still shows the search.
    invoke("report", "--history", "double", "-o", "searched.html")
    alone = (project.root / "searched.html").read_text()
    assert "no complete run" in alone and alone.count('data-part="validation"') == len(
        [c for c in out["candidates"] if c["run"]])
    invoke("eval", "prompts/double.yaml", "--json")
    hist = json.loads(invoke("history", "double", "--json").stdout)
    assert len(hist["versions"]) == 1  # the eval's run, not one of the search's
    [search] = hist["searches"]
    assert search["model"] == out["model"]
    runs = search["runs"]
    version_runs = {v["run"] for v in hist["versions"]}
    assert not version_runs & {r["run"] for r in runs}
    validation = {r["run"]: r for r in runs if r["part"] == "validation"}
    evaluated = [c for c in out["candidates"] if c["run"]]
    assert set(validation) == {c["run"] for c in evaluated}
    for c in evaluated:
        shown = validation[c["run"]]
        assert (shown["candidate"], shown["origin"]) == (c["id"], c["origin"])
        assert shown["prompt_version"] == c["version"]
        assert shown["metrics"][out["metric"]] == {"value": c["value"], "n": c["n"]}
    assert [r["part"] for r in runs] == ["train"] + ["validation"] * len(evaluated) + ["test"] * 2
    assert [r["run"] for r in runs if r["part"] == "test"] == [out["test"]["original_run"],
                                                               out["test"]["best_run"]]
    # A second search is listed apart, newest first.
    tune_json("--pool", "pool.jsonl", "--strategy", "fewshot")
    again = json.loads(invoke("history", "double", "--json").stdout)
    assert len(again["searches"]) == 2 and again["searches"][1] == search
    assert again["searches"][0]["search"] != search["search"]
    text = invoke("history", "double").stdout
    assert "Runs on a part of the eval set" in text and "never stand for a version" in text
    best = next(c for c in out["candidates"] if c["id"] == out["best"])
    line = next(x for x in text.splitlines() if best["run"] in x)
    assert "validation" in line and f"{best['value']:.3f} (n={best['n']})" in line
    # The report draws the same runs as a table per search, apart from the versions.
    invoke("report", "--history", "double", "-o", "history.html")
    page = (project.root / "history.html").read_text()
    searches = page.split("Runs on a part of the eval set", 1)[1]
    assert searches.count("<table class=\"searches\">") == 2
    for c in evaluated:
        row = re.search(rf'<tr data-run="{c["run"]}" data-part="validation">(.*?)</tr>',
                        searches)
        assert row is not None and f"<td>{c['id']}</td>" in row.group(1)
        assert f'data-value="{c["value"]!r}"' in row.group(1)
        assert f'data-value="{c["n"]}"' in row.group(1)
        assert c["run"] not in page.split("Runs on a part of the eval set", 1)[0]


def test_a_pipeline_is_refused_naming_its_prompts(project: Project) -> None:
    project.write("pipelines/twice.yaml", "name: twice\nkind: pipeline\n"
                  "evalset: ../evalsets/double.jsonl\nsteps:\n"
                  "  - id: double\n    prompt: ../prompts/double.yaml\n"
                  "    input: {item: '{{ input.item }}', note: '{{ input.note }}'}\n"
                  "output: '{{ steps.double.answer }}'\n")
    project.commit("a pipeline")
    result = invoke("tune", "pipelines/twice.yaml", code=2)
    assert "tune takes a prompt file, not a pipeline" in result.stderr
    assert "tune one of the prompts the pipeline uses" in result.stderr
    assert project.server.chat_requests == []
