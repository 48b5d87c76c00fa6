"""The CI gate as a library: affected prompts, baselines, gates and exit codes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from promptctl.config import load_config
from promptctl.errors import InputError
from promptctl.gate import CheckOptions, absolute_gates, exit_code, regression_gates, run_check
from promptctl.prompts import parse_prompt
from promptctl.results import (
    CheckError,
    CheckResult,
    Comparison,
    Flipped,
    Gate,
    MetricDelta,
    PromptCheck,
    PromptFile,
    RowErrors,
    verdict,
)
from promptctl.store import open_store
from tests.checkrepo import ROWS, Repo, evalset_text, prompt_text
from tests.fakeserver import FakeOpenAI
from tests.helpers import git


def check(root: Path, **options: Any) -> CheckResult:
    config = load_config(root)
    store = open_store(config.store_url())
    try:
        return run_check(config, store, CheckOptions(**options))
    finally:
        store.close()


def only(result: CheckResult) -> PromptCheck:
    assert len(result.prompts) == 1, result.prompts
    return result.prompts[0]


def gate(entry: PromptCheck, gate_id: str) -> Gate:
    return next(g for g in entry.gates if g.id == gate_id)


def compared(**metrics: tuple[float, float, float, float | None, bool]) -> Comparison:
    """A comparison with the baseline holding only these metrics: (a, b, delta, p, higher is
    better) each."""
    return Comparison(
        metrics={m: MetricDelta(a=a, b=b, delta=d, ci95=None, p_value=p, test="mcnemar_exact",
                                n=10, a_run=a, b_run=b, higher_is_better=higher,
                                verdict=verdict(d, None, p, higher_is_better=higher))
                 for m, (a, b, d, p, higher) in metrics.items()},
        paired_rows=10, only_in_a=0, only_in_b=0, errors_excluded=0,
        flipped=Flipped(pass_to_fail=(), fail_to_pass=(), biggest_error_increases=()),
        warnings=())


def checked(status: str, error_code: int | None = None) -> PromptCheck:
    """A checked prompt with this verdict, and an error of this exit code."""
    error = None if error_code is None else CheckError(message="x", exit_code=error_code,
                                                       kind="input")
    return PromptCheck(prompt="p", path="prompts/p.yaml", new=False, reasons=(), status=status,
                       model=None, baseline_model=None, current_run=None, current_source=None,
                       baseline_run=None, baseline_source=None, metrics={}, comparison=None,
                       gates=(), warnings=(), error=error,
                       row_errors=RowErrors(current=0, baseline=0))


def test_nothing_changed_checks_nothing(repo: Repo, fake_openai: FakeOpenAI) -> None:
    result = check(repo.root)
    assert result.prompts == () and result.exit_code == 0
    assert result.summary.unchanged == 1
    assert result.base.how == "merge base of HEAD and main"
    assert fake_openai.chat_requests == []


def test_harmless_change_passes(repo: Repo) -> None:
    repo.write("prompts/score.yaml", prompt_text(description="Echo the item number, please."))
    repo.commit("reword the description")
    result = check(repo.root)
    entry = only(result)
    assert entry.status == "pass" and result.exit_code == 0
    assert entry.reasons == ("prompt file changed",)
    assert entry.baseline_source == "evaluated"
    assert gate(entry, "exact_match.max_regression").delta == 0
    assert gate(entry, "format_validity.min").status == "pass"


def test_significant_regression_fails_and_names_the_gate(repo: Repo) -> None:
    repo.write("prompts/score.yaml", prompt_text(style="BREAK 15"))
    repo.commit("worse")
    result = check(repo.root)
    entry = only(result)
    assert result.exit_code == 1 and entry.status == "fail"
    g = gate(entry, "exact_match.max_regression")
    assert g.status == "fail"
    assert g.drop == pytest.approx(15 / ROWS)
    assert g.p_value < 0.001
    assert "exact_match" in g.message
    # Format is still valid: that gate passes.
    assert gate(entry, "format_validity.min").status == "pass"
    flipped = entry.comparison.flipped.pass_to_fail
    assert len(flipped) == 15


def test_small_insignificant_drop_warns_and_strict_fails(repo: Repo) -> None:
    repo.write("prompts/score.yaml", prompt_text(style="BREAK 2"))
    repo.commit("slightly worse")
    result = check(repo.root)
    entry = only(result)
    g = gate(entry, "exact_match.max_regression")
    assert g.drop == pytest.approx(2 / ROWS) and g.drop > g.limit
    assert g.status == "warn" and g.p_value > 0.05
    assert "p=0.5" in g.message
    assert entry.status == "warn" and result.exit_code == 0

    strict = check(repo.root, strict=True)
    g = gate(only(strict), "exact_match.max_regression")
    assert g.status == "fail" and strict.exit_code == 1
    # The second check reuses the baseline evaluated by the first.
    assert only(strict).baseline_source == "stored"


def test_significance_level_is_configurable(repo: Repo) -> None:
    repo.write("prompts/score.yaml", prompt_text(style="BREAK 5"))
    repo.commit("worse by five")
    # McNemar with 5 discordant pairs, all one way: p = 2 / 32 = 0.0625.
    loose_check = only(check(repo.root, significance=0.1))
    loose = gate(loose_check, "exact_match.max_regression")
    assert loose.p_value == pytest.approx(0.0625) and loose.status == "fail"
    tight_check = only(check(repo.root))
    tight = gate(tight_check, "exact_match.max_regression")
    assert tight.status == "warn"
    # Five rows all one way: the bootstrap interval lies below 0 while p = 0.0625. The paired
    # test decides, the gate and the comparison say the same, and both say why.
    assert tight.ci95 is not None and tight.ci95[1] < 0
    assert tight.verdict is not None and not tight.verdict.significant
    assert tight.verdict.text == "worse (not significant)"
    note = "the 95% interval excludes 0 but p=0.062 ≥ 0.05: not significant"
    assert note in (tight.verdict.note or "") and note in tight.message.lower()
    assert tight_check.comparison is not None
    assert tight_check.comparison.metrics["exact_match"].verdict == tight.verdict
    assert loose.verdict is not None and loose.verdict.text == "worse" and loose.verdict.note is None
    assert loose_check.comparison is not None
    assert loose_check.comparison.metrics["exact_match"].verdict == loose.verdict


def test_evalset_only_change_is_detected(repo: Repo) -> None:
    repo.write("evalsets/score.jsonl", evalset_text(ROWS + 4))
    repo.commit("more rows")
    entry = only(check(repo.root))
    assert entry.reasons == ("eval set evalsets/score.jsonl changed",)
    assert entry.status == "pass"
    comparison = entry.comparison
    assert comparison.paired_rows == ROWS and comparison.only_in_b == 4
    assert any("different eval set versions" in w for w in comparison.warnings)


def test_new_prompt_gets_absolute_thresholds_only(repo: Repo) -> None:
    text = prompt_text(style="BREAK 3").replace("name: score", "name: fresh").replace(
        "format_validity: {min: 0.9}", "format_validity: {min: 0.9}\n  exact_match: {min: 0.99}")
    repo.write("prompts/fresh.yaml", text)
    repo.commit("a new prompt")
    result = check(repo.root)
    entry = only(result)
    assert entry.new and entry.reasons == ("new prompt",) and entry.baseline_run is None
    assert gate(entry, "exact_match.max_regression").status == "skip"
    em = gate(entry, "exact_match.min")
    assert em.status == "fail" and em.value == pytest.approx(17 / ROWS)
    assert result.exit_code == 1


def test_unusable_base_version_skips_the_regression_gate(repo: Repo) -> None:
    git(repo.root, "checkout", "-q", "main")
    repo.write("prompts/score.yaml", prompt_text().replace("evalset: ../evalsets/score.jsonl\n", ""))
    repo.commit("no eval set yet")
    git(repo.root, "checkout", "-q", "-b", "with-evalset")
    repo.write("prompts/score.yaml", prompt_text(style="BREAK 15"))
    repo.commit("name the eval set")
    result = check(repo.root)
    entry = only(result)
    assert entry.baseline_run is None
    assert any("names no eval set" in w for w in entry.warnings)
    assert gate(entry, "exact_match.max_regression").status == "skip"
    assert entry.status == "pass" and result.exit_code == 0


def test_deleted_prompt_is_listed(repo: Repo) -> None:
    (repo.root / "prompts" / "score.yaml").unlink()
    repo.commit("remove the prompt")
    result = check(repo.root)
    assert result.prompts == ()
    assert result.deleted == (PromptFile(prompt="score", path="prompts/score.yaml"),)
    assert result.exit_code == 0


def test_renamed_prompt_keeps_its_baseline(repo: Repo) -> None:
    git(repo.root, "mv", "prompts/score.yaml", "prompts/scoring.yaml")
    repo.commit("rename")
    result = check(repo.root)
    entry = only(result)
    assert entry.reasons == ("renamed from prompts/score.yaml",)
    assert entry.baseline_run is not None and entry.status == "pass"
    assert result.deleted == ()


def test_baseline_from_git_leaves_work_tree_and_index_alone(repo: Repo) -> None:
    repo.write("prompts/score.yaml", prompt_text(style="Be very brief."))
    git(repo.root, "add", "prompts/score.yaml")
    repo.write("evalsets/score.jsonl", evalset_text(ROWS - 1))  # unstaged as well
    before = repo.status()
    staged = git(repo.root, "diff", "--cached")
    entry = only(check(repo.root))
    assert entry.baseline_source == "evaluated" and entry.status == "pass"
    assert repo.status() == before
    assert git(repo.root, "diff", "--cached") == staged
    assert (repo.root / "prompts" / "score.yaml").read_text(encoding="utf-8") == \
        prompt_text(style="Be very brief.")


def test_provider_outage_is_exit_3(repo: Repo, fake_openai: FakeOpenAI) -> None:
    repo.write("prompts/score.yaml", prompt_text(style="BREAK 15"))
    repo.commit("worse, but nobody can tell")
    fake_openai.fail_next(10_000, status=503, retry_after_ms=1)
    result = check(repo.root)
    entry = only(result)
    assert entry.status == "error" and entry.error.kind == "provider"
    assert entry.row_errors.baseline == ROWS
    assert result.exit_code == 3


def test_model_override_and_selection(repo: Repo, fake_openai: FakeOpenAI) -> None:
    repo.write("prompts/score.yaml", prompt_text(style="Be kind."))
    repo.write("prompts/other.yaml", prompt_text().replace("name: score", "name: other"))
    repo.commit("two prompts")
    result = check(repo.root, prompts=["score"], model="gpt-4o")
    entry = only(result)
    assert entry.prompt == "score" and entry.model == "gpt-4o"
    assert entry.baseline_model == "gpt-4o"
    assert {r.body["model"] for r in fake_openai.chat_requests} == {"gpt-4o"}


def test_changed_model_is_measured(repo: Repo, fake_openai: FakeOpenAI) -> None:
    repo.write("prompts/score.yaml", prompt_text().replace("model: gpt-4o-mini", "model: gpt-4o"))
    repo.commit("switch model")
    entry = only(check(repo.root))
    assert entry.model == "gpt-4o" and entry.baseline_model == "gpt-4o-mini"
    assert any("switches the model" in w for w in entry.warnings)


def test_explicit_base_and_missing_default_base(repo: Repo) -> None:
    first = git(repo.root, "rev-parse", "HEAD").strip()
    repo.write("prompts/score.yaml", prompt_text(style="BREAK 15"))
    repo.commit("worse")
    repo.write("prompts/score.yaml", prompt_text())
    repo.commit("back")
    assert check(repo.root).prompts == ()  # the merge base with main: nothing changed
    worse = check(repo.root, base="HEAD~1")
    assert worse.base.how == "--base HEAD~1"
    assert only(worse).status == "pass"  # back to the original: better, not worse
    assert check(repo.root, base=first).prompts == ()
    git(repo.root, "branch", "-q", "-m", "main", "trunk")
    with pytest.raises(InputError, match="no base"):
        check(repo.root)
    with pytest.raises(InputError, match="unknown git ref"):
        check(repo.root, base="no-such-ref")


def test_regression_gate_directions() -> None:
    prompt = parse_prompt(b"""\
messages: [{role: user, content: hi}]
output: {type: number}
metrics: [rmse, exact_match]
thresholds:
  max_regression: {rmse: 0.1, exact_match: 0.05}
""", Path("p.yaml"))
    comparison = compared(rmse=(1.0, 1.3, 0.3, 0.01, False),
                          exact_match=(0.5, 0.7, 0.2, 0.01, True))
    gates = {g.metric: g for g in regression_gates(prompt, comparison, significance=0.05,
                                                   strict=False)}
    assert gates["rmse"].status == "fail" and gates["rmse"].drop == pytest.approx(0.3)
    assert gates["exact_match"].status == "pass"
    assert gates["exact_match"].drop == pytest.approx(-0.2)
    skipped = regression_gates(prompt, None, significance=0.05, strict=False)
    assert {g.status for g in skipped} == {"skip"}


def test_gate_messages_say_how_the_metric_moved_in_words() -> None:
    prompt = parse_prompt(b"""\
messages: [{role: user, content: hi}]
output: {type: number}
metrics: [rmse, exact_match, contains, format_validity, mae]
thresholds:
  format_validity: {min: 0.9}
  rmse: {max: 1.5}
  max_regression: {exact_match: 0.05, contains: 0.05, format_validity: 0.05, rmse: 0.1,
                   mae: 0.1}
""", Path("p.yaml"))

    def messages(**deltas: tuple[float, float | None]) -> dict[str, str]:
        comparison = compared(**{m: (0.5, 0.5 + d, d, p, m not in ("rmse", "mae"))
                                 for m, (d, p) in deltas.items()})
        return {g.metric: g.message for g in regression_gates(
            prompt, comparison, significance=0.05, strict=False)}

    said = messages(exact_match=(1 / 3, 0.5), contains=(-0.0, 1.0), format_validity=(-0.04, 0.6),
                    rmse=(0.3, 0.01), mae=(-0.2, 0.3))
    assert said == {
        "exact_match": "exact_match rose by 0.333: better than the baseline",
        "contains": "no change in contains",
        "format_validity": "format_validity fell by 0.04, within the limit 0.05",
        "rmse": "rmse rose by 0.3, more than the limit 0.1, and significantly (p=0.01, "
                "below 0.05)",
        "mae": "mae fell by 0.2: better than the baseline",
    }
    warned = messages(exact_match=(-0.2, 0.5))["exact_match"]
    assert warned == ("exact_match fell by 0.2, more than the limit 0.05, but not significantly "
                      "(p=0.5, not below 0.05): could be noise; --strict would fail it")
    for text in [*said.values(), warned]:
        assert not re.search(r"-0\b|\d\.\d{4,}|drop -", text), text

    run = {"metrics": {"format_validity": {"value": 0.8999}, "rmse": {"value": 1.2345678}}}
    absolute = {g.id: g.message for g in absolute_gates(prompt, run)}
    assert absolute == {"format_validity.min": "format_validity 0.8999 is below the minimum 0.9",
                        "rmse.max": "rmse 1.235 is within the maximum 1.5"}


def test_exit_code_priority() -> None:
    failed = checked("fail")
    provider = checked("error", 3)
    bad_input = checked("error", 2)
    assert exit_code([]) == 0
    assert exit_code([failed]) == 1
    assert exit_code([failed, provider]) == 3
    assert exit_code([failed, provider, bad_input]) == 2
