"""`promptctl eval --ref` and `promptctl diff` in a git repository whose three commits change
the prompt, against the fake server; the real CLI and the real openai SDK."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from tests.fakeserver import FakeOpenAI, last_user_message
from tests.helpers import GitRepo, eval_run, git, git_identity, git_init, invoke, use_fake_openai
from tests.helpers import runs_json as helpers_runs_json
from tests.render import gfm
from tests.test_stats import binomial_two_sided

pytestmark = pytest.mark.both_stores  # run on SQLite, then on PostgreSQL

ROWS = 12
# Items each prompt version answers wrongly (item + 3), and unreadably.
WRONG = {"V1": {5}, "V2": {5, 7}, "V3": {1, 2, 7}}
UNREADABLE = {"V1": set(), "V2": set(), "V3": {9}}

PROMPT = """\
name: score
model: gpt-4o-mini
messages:
  - role: system
    content: "Reply with 'Answer: N'. VERSION"
  - role: user
    content: "Item {{ item }}"
output:
  pattern: 'Answer: (?P<answer>-?\\d+)'
  type: integer
metrics: [exact_match, format_validity, rmse]
evalset: ../evalsets/score.jsonl
"""


def prompt_text(version: str) -> str:
    return PROMPT.replace("VERSION", version)


def evalset_text(rows: int = ROWS) -> str:
    return "".join(json.dumps({"id": f"r{i:02d}", "input": {"item": i}, "expected": i}) + "\n"
                   for i in range(1, rows + 1))


def reply(body: dict[str, Any]) -> str:
    """gpt-4o answers every item right; other models as the prompt version in the system
    message says."""
    item = int(last_user_message(body).split()[-1])
    found = re.search(r"V\d", str(body["messages"][0]["content"]))
    version = found.group(0) if found else "V1"
    if body["model"] == "gpt-4o":
        return f"Answer: {item}"
    if item in UNREADABLE.get(version, set()):
        return "I cannot say."
    return f"Answer: {item + 3 if item in WRONG.get(version, set()) else item}"


class Repo(GitRepo):
    """The repository, and the fake server that answers for it."""

    def __init__(self, root: Path, server: FakeOpenAI) -> None:
        super().__init__(root)
        self.server = server


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_openai: FakeOpenAI) -> Repo:
    """A repository on main with three commits of prompts/score.yaml: V1, V2, V3 (HEAD)."""
    git_identity(monkeypatch, author="Test Author", email="t@example.invalid")
    root = git_init(tmp_path / "repo")
    r = Repo(root, fake_openai)
    r.write("evalsets/score.jsonl", evalset_text())
    for version in ("V1", "V2", "V3"):
        r.write("prompts/score.yaml", prompt_text(version))
        r.commit(f"prompt {version}")
    fake_openai.responder = reply
    use_fake_openai(monkeypatch, fake_openai, "sk-test-diff")
    monkeypatch.chdir(root)
    return r


def eval_ref(ref: str, *extra: str) -> dict[str, Any]:
    return eval_run("prompts/score.yaml", "--ref", ref, *extra)


def diff_json(*args: str) -> dict[str, Any]:
    return dict(json.loads(invoke("diff", *args, "--json").stdout))


def exact_match(version: str) -> float:
    return 1 - len(WRONG[version] | UNREADABLE[version]) / ROWS


# --- eval --ref -------------------------------------------------------------------------------


def test_eval_ref_evaluates_each_version_from_git_and_leaves_the_tree_alone(repo: Repo) -> None:
    # A dirty work tree: an edited prompt, a staged eval set change, an untracked file.
    repo.write("prompts/score.yaml", prompt_text("V9 work in progress"))
    repo.write("evalsets/score.jsonl", evalset_text(3))
    git(repo.root, "add", "evalsets/score.jsonl")
    repo.write("notes.txt", "scratch\n")
    before = (repo.status(), git(repo.root, "ls-files", "--stage"),
              (repo.root / ".git" / "index").read_bytes(),
              (repo.root / "prompts" / "score.yaml").read_bytes())
    assert before[0]  # really dirty
    for ref, version in (("HEAD~2", "V1"), ("HEAD~1", "V2"), ("HEAD", "V3")):
        run = eval_ref(ref)
        sha = repo.sha(ref)
        blob = git(repo.root, "show", f"{sha}:prompts/score.yaml").encode()
        assert run["git_commit"] == sha and run["git_dirty"] is False, ref
        assert run["prompt_version"] == hashlib.sha256(blob).hexdigest()
        # The eval set as committed at the ref (12 rows), not the staged 3-row one.
        assert run["n"] == ROWS
        assert run["metrics"]["exact_match"]["value"] == pytest.approx(exact_match(version))
    after = (repo.status(), git(repo.root, "ls-files", "--stage"),
             (repo.root / ".git" / "index").read_bytes(),
             (repo.root / "prompts" / "score.yaml").read_bytes())
    assert after == before
    systems = {str(r.body["messages"][0]["content"]) for r in repo.server.chat_requests}
    assert not any("V9" in s for s in systems)


def test_eval_ref_with_an_explicit_eval_set(repo: Repo) -> None:
    repo.write("other.jsonl", evalset_text(4))
    run = eval_ref("HEAD~2", "--evalset", "other.jsonl")
    assert run["n"] == 4 and run["git_commit"] == repo.sha("HEAD~2")


def test_eval_ref_unknown_ref_is_a_usage_error(repo: Repo) -> None:
    result = invoke("eval", "prompts/score.yaml", "--ref", "no-such-branch", code=2)
    assert "unknown git ref 'no-such-branch'" in result.stderr


# --- diff of git refs -------------------------------------------------------------------------


def test_diff_head2_head_reports_the_rows_the_server_changed(repo: Repo) -> None:
    a_run, b_run = eval_ref("HEAD~2"), eval_ref("HEAD")
    result = diff_json("HEAD~2", "HEAD", "--prompt", "prompts/score.yaml")
    assert (result["a"]["id"], result["b"]["id"]) == (a_run["id"], b_run["id"])
    flipped = result["flipped"]
    # V1 -> V3: items 1, 2, 7 become wrong and 9 unreadable; 5 becomes right.
    assert [f["row_id"] for f in flipped["pass_to_fail"]] == ["r01", "r02", "r07", "r09"]
    assert [f["row_id"] for f in flipped["fail_to_pass"]] == ["r05"]
    r01 = flipped["pass_to_fail"][0]
    assert (r01["input"], r01["expected"], r01["answer_a"], r01["answer_b"]) == ({"item": 1}, 1, 1, 4)
    assert flipped["pass_to_fail"][3]["answer_b"] is None
    assert flipped["pass_to_fail"][3]["completion_b"] == "I cannot say."
    assert [f["row_id"] for f in flipped["biggest_error_increases"]] == ["r01", "r02", "r07"]

    em = result["metrics"]["exact_match"]
    assert em["a"] == pytest.approx(11 / 12) and em["b"] == pytest.approx(8 / 12)
    assert em["delta"] == pytest.approx(-3 / 12)
    assert (em["n01"], em["n10"]) == (1, 4)
    assert em["p_value"] == pytest.approx(binomial_two_sided(1, 4))
    assert em["test"] == "mcnemar_exact" and em["direction"] == "worse"
    fv = result["metrics"]["format_validity"]
    assert (fv["a"], fv["b"], fv["n10"]) == (1.0, pytest.approx(11 / 12), 1)
    rmse = result["metrics"]["rmse"]
    # Rows with a number on both sides: all but 9. A is off by 3 on item 5, B on 1, 2 and 7.
    assert rmse["n"] == 11
    assert rmse["a"] == pytest.approx(math.sqrt(9 / 11))
    assert rmse["b"] == pytest.approx(math.sqrt(27 / 11))
    assert rmse["test"] == "paired_permutation" and rmse["direction"] == "worse"
    assert rmse["ci95"][0] <= rmse["delta"] <= rmse["ci95"][1]
    assert result["paired_rows"] == ROWS and result["warnings"] == []
    # The same comparison by prompt name, by run id and by run id prefix.
    for args in (("HEAD~2", "HEAD", "--prompt", "score"), (a_run["id"], b_run["id"]),
                 (a_run["id"][:12], b_run["id"][:12])):
        again = diff_json(*args)
        assert again["metrics"] == result["metrics"], args
        assert again["flipped"] == result["flipped"], args


def test_diff_human_output(repo: Repo) -> None:
    eval_ref("HEAD~2")
    eval_ref("HEAD")
    out = invoke("diff", "HEAD~2", "HEAD", "--prompt", "score").stdout
    assert "exact_match" in out and "mcnemar_exact" in out and "paired_permutation" in out
    assert "pass → fail (4)" in out and "fail → pass (1)" in out
    assert "biggest error increases (3)" in out
    assert re.search(r"r07\s.*\{\"item\": 7\}\s.*7\s.*7\s.*10", out), out
    assert "paired rows 12" in out
    assert "\x1b[" not in out


def test_diff_markdown(repo: Repo) -> None:
    eval_ref("HEAD~2")
    eval_ref("HEAD")
    md = invoke("diff", "HEAD~2", "HEAD", "--prompt", "score", "--markdown").stdout
    assert "| metric | A | B | delta (B-A) | 95% CI | p | test | n | |" in md
    shown = gfm.cmark(md)
    assert ["exact_match", "0.917", "0.667", "-0.250"] in [row[:4] for row in shown.rows], md
    assert "<details><summary>pass → fail (4)</summary>" in md
    assert "| <code>r09</code> |" in md


def test_a_ref_without_a_stored_run_names_the_eval_command(repo: Repo) -> None:
    eval_ref("HEAD")
    result = invoke("diff", "HEAD~1", "HEAD", "--prompt", "score", code=2)
    assert f"no stored run of 'score' at HEAD~1 ({repo.sha('HEAD~1')[:12]})" in result.stderr
    assert "promptctl eval prompts/score.yaml --ref 'HEAD~1'" in result.stderr
    assert "--run-missing" in result.stderr


def test_run_missing_evaluates_the_ref_from_git(repo: Repo) -> None:
    eval_ref("HEAD")
    repo.write("prompts/score.yaml", prompt_text("V9 unsaved"))
    before = repo.status()
    result = diff_json("HEAD~1", "HEAD", "--prompt", "prompts/score.yaml", "--run-missing")
    assert result["a"]["git_commit"] == repo.sha("HEAD~1") and result["a"]["git_dirty"] is False
    assert [f["row_id"] for f in result["flipped"]["pass_to_fail"]] == ["r01", "r02", "r09"]
    assert [f["row_id"] for f in result["flipped"]["fail_to_pass"]] == ["r05"]
    assert any(f"run {result['a']['id']} was evaluated at HEAD~1" in w for w in result["warnings"])
    assert repo.status() == before
    # Stored now: a second diff needs no evaluation.
    sent = repo.server.count
    assert diff_json("HEAD~1", "HEAD", "--prompt", "score")["a"]["id"] == result["a"]["id"]
    assert repo.server.count == sent


def test_a_ref_where_the_prompt_did_not_change_uses_the_same_versions_run(repo: Repo) -> None:
    eval_ref("HEAD")
    repo.write("README.md", "docs only\n")
    repo.commit("docs")
    result = diff_json("HEAD~1", "HEAD", "--prompt", "score")
    assert result["a"]["id"] == result["b"]["id"]
    assert any("same prompt and eval set versions" in w for w in result["warnings"])
    assert all(m["delta"] == 0 for m in result["metrics"].values())


def test_each_side_uses_the_model_its_version_names(repo: Repo) -> None:
    eval_ref("HEAD~2")
    eval_ref("HEAD")
    eval_ref("HEAD~2", "--model", "gpt-4o")  # the newest run at V1 is of another model...
    result = diff_json("HEAD~2", "HEAD", "--prompt", "score")
    assert result["a"]["model"] == result["b"]["model"] == "gpt-4o-mini"
    # ...and --model once picks that model on both sides.
    eval_ref("HEAD", "--model", "gpt-4o")
    both = diff_json("HEAD~2", "HEAD", "--prompt", "score", "--model", "gpt-4o")
    assert both["a"]["model"] == both["b"]["model"] == "gpt-4o"
    assert both["flipped"]["pass_to_fail"] == []


# --- diff of models ---------------------------------------------------------------------------


def test_two_models_at_the_current_prompt_version(repo: Repo) -> None:
    invoke("eval", "prompts/score.yaml", "-m", "gpt-4o-mini", "-m", "gpt-4o", "--json")
    eval_ref("HEAD~2", "--model", "gpt-4o")  # newer, but of another prompt version
    result = diff_json("--prompt", "prompts/score.yaml", "-m", "gpt-4o-mini", "-m", "gpt-4o")
    assert result["a"]["model"] == "gpt-4o-mini" and result["b"]["model"] == "gpt-4o"
    assert result["a"]["prompt_version"] == result["b"]["prompt_version"]
    assert [f["row_id"] for f in result["flipped"]["fail_to_pass"]] == ["r01", "r02", "r07", "r09"]
    assert "different models: gpt-4o-mini vs gpt-4o" in result["warnings"]
    # By name: the newest version both models ran.
    by_name = diff_json("--prompt", "score", "-m", "gpt-4o-mini", "-m", "gpt-4o")
    assert by_name["metrics"] == result["metrics"]
    # Models as A and B.
    positional = diff_json("gpt-4o-mini", "gpt-4o", "--prompt", "score")
    assert (positional["a"]["id"], positional["b"]["id"]) == (result["a"]["id"], result["b"]["id"])


def test_a_model_without_a_run_is_named_or_run(repo: Repo) -> None:
    invoke("eval", "prompts/score.yaml", "--json")
    result = invoke("diff", "--prompt", "prompts/score.yaml", "-m", "gpt-4o-mini", "-m", "gpt-4o",
                    code=2)
    assert "no stored run of 'score' with model gpt-4o" in result.stderr
    assert "promptctl eval prompts/score.yaml --model gpt-4o" in result.stderr
    ran = diff_json("--prompt", "prompts/score.yaml", "-m", "gpt-4o-mini", "-m", "gpt-4o",
                    "--run-missing")
    assert ran["b"]["model"] == "gpt-4o" and ran["metrics"]["exact_match"]["b"] == 1.0


# --- warnings and usage -----------------------------------------------------------------------


def test_an_edited_eval_set_and_a_dirty_run_are_warned_about(repo: Repo) -> None:
    base = eval_ref("HEAD")
    repo.write("evalsets/score.jsonl", evalset_text(ROWS + 1))
    repo.commit("one more row")
    grown = eval_ref("HEAD")
    result = diff_json(base["id"], grown["id"])
    assert any("different eval set versions" in w for w in result["warnings"])
    assert result["only_in_b"] == 1 and result["paired_rows"] == ROWS
    repo.write("prompts/score.yaml", prompt_text("V1"))
    dirty = eval_run("prompts/score.yaml")
    assert dirty["git_dirty"] is True
    w = diff_json(grown["id"], dirty["id"])["warnings"]
    assert any("ran on a dirty work tree" in x for x in w)


def test_usage_errors(repo: Repo) -> None:
    assert "not a stored run id" in invoke("diff", "nope", "HEAD", code=2).stderr
    assert "--prompt" in invoke("diff", "nope", "HEAD", code=2).stderr
    assert "neither a stored run id nor a git ref" in invoke(
        "diff", "nope", "HEAD", "--prompt", "score", code=2).stderr
    assert "diff needs two runs" in invoke("diff", "HEAD", code=2).stderr
    assert "needs --prompt" in invoke("diff", "-m", "a", "-m", "b", code=2).stderr
    assert "choose one" in invoke("diff", "a", "b", "--json", "--markdown", code=2).stderr


def test_an_ambiguous_run_prefix_says_so(repo: Repo) -> None:
    first, second = eval_ref("HEAD~2"), eval_ref("HEAD")
    common = ""
    for x, y in zip(first["id"], second["id"], strict=True):
        if x != y:
            break
        common += x
    assert common  # ids share their leading time digits
    assert "ambiguous" in invoke("diff", common, second["id"], code=2).stderr


# --- what a side is: model and server ------------------------------------------------------------


def test_refs_whose_versions_name_different_models_are_refused(repo: Repo) -> None:
    repo.write("prompts/score.yaml", prompt_text("V3").replace("model: gpt-4o-mini",
                                                              "model: gpt-4o"))
    repo.commit("switch the model")
    eval_ref("HEAD~1")
    eval_ref("HEAD")
    err = invoke("diff", "HEAD~1", "HEAD", "--prompt", "score", code=2).stderr
    assert "name different models (gpt-4o-mini at HEAD~1, gpt-4o at HEAD)" in err
    assert "--model gpt-4o-mini" in err and "promptctl diff run:" in err
    eval_ref("HEAD", "--model", "gpt-4o-mini")
    one = diff_json("HEAD~1", "HEAD", "--prompt", "score", "--model", "gpt-4o-mini")
    assert one["a"]["model"] == one["b"]["model"] == "gpt-4o-mini"


def test_a_ref_with_only_another_models_run_is_not_taken_for_it(repo: Repo) -> None:
    eval_ref("HEAD")
    eval_ref("HEAD~2", "--model", "gpt-4o")  # the only run at V1 is of another model
    err = invoke("diff", "HEAD~2", "HEAD", "--prompt", "score", code=2).stderr
    assert "with gpt-4o-mini" in err and "used gpt-4o" in err
    assert "--model gpt-4o" in err


def test_a_run_on_another_server_is_another_side(
        repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAI() as other:
        other.responder = lambda body: "Answer: 0"
        monkeypatch.setenv("OPENAI_BASE_URL", other.base_url)
        elsewhere = eval_ref("HEAD")
        other_url = other.base_url.rstrip("/")
        assert elsewhere["base_url"] == other_url
    monkeypatch.setenv("OPENAI_BASE_URL", repo.server.base_url)
    # The stored run of that version and model is from another server: not this side.
    err = invoke("diff", "HEAD~2", "HEAD", "--prompt", "score", code=2).stderr
    assert "no stored run of 'score' at HEAD~2" in err
    eval_ref("HEAD~2")
    assert "no stored run of 'score' at HEAD " in invoke(
        "diff", "HEAD~2", "HEAD", "--prompt", "score", code=2).stderr + " "
    here = eval_ref("HEAD")
    assert here["base_url"] == repo.server.base_url.rstrip("/")
    result = diff_json("HEAD~2", "HEAD", "--prompt", "score")
    assert result["b"]["id"] == here["id"]
    # Two runs given by id may differ in server: that is said.
    warned = diff_json(here["id"], elsewhere["id"])["warnings"]
    assert any("different servers for gpt-4o-mini" in w for w in warned)
    shown = helpers_runs_json()
    assert {r["base_url"] for r in shown} == {other_url,
                                               repo.server.base_url.rstrip("/")}
