"""One verdict rule for a change between two runs: the paired test decides, and every output
(terminal diff, Markdown, check's gates, --json for the HTML report) says the same."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from promptctl.render.compare import diff_markdown, diff_terminal
from promptctl.results import (
    DiffResult,
    Flipped,
    MetricDelta,
    RunBrief,
    SampleCounts,
    Verdict,
    verdict,
)


@pytest.mark.parametrize(("delta", "ci", "p", "higher", "expected"), [
    # Significant by the test, the interval agreeing: no note.
    (-0.2, (-0.3, -0.1), 0.01, True, Verdict(change="worse", significant=True, text="worse")),
    (0.2, (0.1, 0.3), 0.01, True, Verdict(change="better", significant=True, text="better")),
    # Lower is better: a rise is worse.
    (0.2, (0.1, 0.3), 0.01, False, Verdict(change="worse", significant=True, text="worse")),
    # Not significant, the interval agreeing.
    (-0.1, (-0.3, 0.1), 0.4, True,
     Verdict(change="none", significant=False, text="worse (not significant)")),
    # The interval excludes 0 but p is above the level: the test decides, and it is said.
    (-0.1, (-0.2, -0.01), 0.057, True,
     Verdict(change="none", significant=False, text="worse (not significant)",
             note="the 95% interval excludes 0 but p=0.057 ≥ 0.05: not significant "
                  "(the paired test decides)")),
    # The other way round: significant though the interval touches 0.
    (0.1, (0.0, 0.2), 0.03, True,
     Verdict(change="better", significant=True, text="better",
             note="p=0.03 < 0.05 though the 95% interval includes 0: significant "
                  "(the paired test decides)")),
    (0.0, (-0.1, 0.1), 1.0, True, Verdict(change="none", significant=False, text="no change")),
    (None, None, None, True, Verdict(change="none", significant=False, text="not compared")),
    (0.1, None, None, True,
     Verdict(change="none", significant=False, text="better (not tested)")),
])
def test_the_paired_test_decides(delta: float | None, ci: tuple[float, float] | None,
                                 p: float | None, higher: bool, expected: Verdict) -> None:
    assert verdict(delta, ci, p, higher_is_better=higher) == expected


def test_the_level_is_the_callers() -> None:
    loose = verdict(-0.1, (-0.2, -0.01), 0.057, higher_is_better=True, significance=0.1)
    assert (loose.text, loose.significant, loose.note) == ("worse", True, None)
    assert loose.sentence() == "worse"
    tight = verdict(-0.1, (-0.2, -0.01), 0.057, higher_is_better=True)
    assert tight.sentence().startswith("worse (not significant): the 95% interval excludes 0")


def _diff(p: float, ci: tuple[float, float]) -> DiffResult:
    side = RunBrief(id="r", created_at="t", status="complete", prompt_name="p", prompt_path="p",
                    prompt_version="v", git_commit=None, git_dirty=None, git_branch=None,
                    model="m", endpoint="openai", evalset_path=None, evalset_version=None,
                    metrics=None, summary=None)
    delta = MetricDelta(a=0.8, b=0.7, delta=-0.1, ci95=ci, p_value=p, test="mcnemar_exact",
                        n=100, n01=2, n10=12, a_run=0.8, b_run=0.7, higher_is_better=True,
                        direction="worse",
                        verdict=verdict(-0.1, ci, p, higher_is_better=True))
    return DiffResult(a=side, b=side, significance=0.05, metrics={"accuracy": delta},
                      paired_rows=100, only_in_a=0, only_in_b=0, errors_excluded=0,
                      samples=SampleCounts(a=1, b=1),
                      flipped=Flipped(pass_to_fail=(), fail_to_pass=(),
                                      biggest_error_increases=()), warnings=())


def test_terminal_markdown_and_json_say_the_same() -> None:
    result = _diff(0.057, (-0.2, -0.01))
    out = io.StringIO()
    diff_terminal(Console(file=out, width=200, no_color=True), result)
    text = out.getvalue()
    markdown = diff_markdown(result).replace("\\", "")  # as GitHub shows it: escapes gone
    for shown in (text, markdown):
        assert "worse (not significant)" in shown
        assert "the 95% interval excludes 0 but p=0.057 ≥ 0.05" in shown
    # What the HTML report reads: the diff's JSON carries the verdict.
    document = result.to_json()
    assert document["significance"] == 0.05
    assert document["metrics"]["accuracy"]["verdict"] == {
        "change": "none", "significant": False, "text": "worse (not significant)",
        "note": "the 95% interval excludes 0 but p=0.057 ≥ 0.05: not significant "
                "(the paired test decides)"}

    significant = _diff(0.01, (-0.2, -0.01))
    out = io.StringIO()
    diff_terminal(Console(file=out, width=200, no_color=True), significant)
    assert "not significant" not in out.getvalue() and "worse" in out.getvalue()
    assert "excludes 0" not in diff_markdown(significant)
