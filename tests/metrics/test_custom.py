"""The custom metric kind: the user's own scorer, from a file of the project or an installed
package, scored row by row, its errors kept with their rows (never a zero)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.fakeserver import FakeOpenAI
from tests.helpers import (
    ECHO_PROMPT,
    commit_all,
    eval_json,
    eval_run,
    git_identity,
    git_init,
    invoke,
    show,
    write_echo_project,
)

# len(answer) / 10, except: r3 raises, r4 gives no score. The echo rows answer one, two,
# three, four, five.
SCORER = """\
def score(answer, expected, row):
    if row["id"] == "r3":
        raise ZeroDivisionError("boom on " + row["id"])
    if row["id"] == "r4":
        return None
    return len(answer) / 10


def same(answer, expected, row):
    return answer == expected and row["completion"].startswith("echo:")


def two_args(answer, expected):
    return 1


async def later(answer, expected, row):
    if row["id"] == "r2":
        raise KeyError("late")
    return len(row["completion"])
"""


def prompt_with(metrics: str, extra: str = "") -> str:
    return ECHO_PROMPT.replace("metrics: [exact_match, format_validity]",
                               f"metrics:\n{textwrap.indent(metrics, '  ')}{extra}")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    prompt = prompt_with("- exact_match\n"
                         "- name: length\n  custom: ../scorers/length.py:score\n"
                         "- name: same\n  custom: ../scorers/length.py:same\n")
    root = write_echo_project(tmp_path / "proj", prompt)
    (root / "scorers").mkdir()
    (root / "scorers" / "length.py").write_text(SCORER, encoding="utf-8")
    monkeypatch.chdir(root)
    return root


def test_values_errors_and_no_scores(project: Path, api: FakeOpenAI) -> None:
    run, _ = eval_json("prompts/echo.yaml")
    assert run["status"] == "complete"
    length = run["metrics"]["length"]
    # r1 one 0.3, r2 two 0.3, r5 five 0.4; r3 raised and r4 returned None: no score, no zero.
    assert length["value"] == pytest.approx((0.3 + 0.3 + 0.4) / 3)
    assert length["n"] == 3
    assert length["kind"] == "custom" and length["paired"] == "mean"
    assert length["identity"]["custom"] == "../scorers/length.py:score"
    assert len(length["identity"]["sha256"]) == 64
    lo, hi = length["ci95"]
    assert 0.3 - 1e-9 <= lo <= length["value"] <= hi <= 0.4 + 1e-9
    # A bool is 1/0: every echo answer is its expected word.
    assert run["metrics"]["same"]["value"] == 1.0 and run["metrics"]["same"]["n"] == 5
    failed = run["scoring_errors"]
    assert failed == {"length": {"count": 1, "samples": 1, "fewshot": 0, "rows": [
        {"row_id": "r3", "kind": "eval", "sample": 0,
         "error": "ZeroDivisionError: boom on r3 (at scorers/length.py:3)"}]}}
    document = show(run["id"])
    rows = {r["row_id"]: r for r in document["rows"]}
    assert rows["r3"]["judges"] == {"length": {
        "score": None, "error": "ZeroDivisionError: boom on r3 (at scorers/length.py:3)"}}
    assert "length" not in rows["r3"]["scores"] and "length" not in rows["r4"]["scores"]
    assert rows["r1"]["scores"]["length"] == pytest.approx(0.3)
    shown = invoke("show", run["id"]).stdout
    assert "length: no score for 1 rows (r3: ZeroDivisionError: boom on r3 (at scorers/length.py:3))" in shown
    assert shown.count("boom on r3") == 2  # the summary line and the row


def test_a_scorer_returning_text_is_that_rows_error(project: Path, api: FakeOpenAI) -> None:
    (project / "scorers" / "length.py").write_text(
        SCORER.replace("return len(answer) / 10", "return 'high' if row['id'] == 'r1' "
                       "else float('nan') if row['id'] == 'r2' else 1"), encoding="utf-8")
    run = eval_run("prompts/echo.yaml")
    assert run["metrics"]["length"]["value"] == 1.0 and run["metrics"]["length"]["n"] == 1
    errors = {r["row_id"]: r["error"] for r in run["scoring_errors"]["length"]["rows"]}
    assert errors == {"r1": "the scorer returned a str, not a number, a bool or None",
                      "r2": "the scorer returned nan, not a finite number",
                      "r3": "ZeroDivisionError: boom on r3 (at scorers/length.py:3)"}


def test_diff_compares_a_custom_metric_by_paired_test(project: Path, api: FakeOpenAI) -> None:
    first = eval_run("prompts/echo.yaml")
    api.add_rule("Question two", "echo: Question twooooo")
    second = eval_run("prompts/echo.yaml", "--no-cache")
    # two's row scores 0.7 instead of 0.3.
    assert second["metrics"]["length"]["value"] == pytest.approx((0.3 + 0.7 + 0.4) / 3)
    diff = json.loads(invoke("diff", first["id"], second["id"], "--json").stdout)
    entry = diff["metrics"]["length"]
    assert entry["delta"] == pytest.approx(0.4 / 3)
    assert entry["direction"] == "better"
    assert entry["test"] != "mcnemar_exact"  # a continuous score: a paired permutation test
    assert diff["metrics"]["same"]["delta"] == pytest.approx(-0.2)
    assert diff["metrics"]["same"]["test"] == "mcnemar_exact"


def test_check_gates_a_custom_metric_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             api: FakeOpenAI) -> None:
    prompt = prompt_with("- name: length\n  custom: ../scorers/length.py:score\n",
                         "thresholds:\n  length: {min: 0.25}\n  max_regression: {length: 0.05}\n")
    root = write_echo_project(tmp_path / "proj", prompt)
    (root / "scorers").mkdir()
    (root / "scorers" / "length.py").write_text(SCORER, encoding="utf-8")
    git_identity(monkeypatch)
    git_init(root)
    base = commit_all(root, "base")
    monkeypatch.chdir(root)
    # Two letters of each word: 0.2 on r1, r2 and r5 (r3 raises, r4 gives None).
    (root / "prompts" / "echo.yaml").write_text(prompt.replace("{{ q }}", "{{ q[:2] }}"),
                                                encoding="utf-8")
    commit_all(root, "shorter")
    result = invoke("check", "--base", base, "--json", code=1)
    (entry,) = json.loads(result.stdout)["prompts"]
    gates = {g["id"]: g for g in entry["gates"]}
    assert gates["length.min"]["status"] == "fail"
    assert gates["length.min"]["value"] == pytest.approx(0.2)
    drop = gates["length.max_regression"]
    assert drop["status"] == "warn"  # three paired rows cannot make a drop significant
    assert drop["baseline"] == pytest.approx(1 / 3)
    assert drop["delta"] == pytest.approx(0.2 - 1 / 3)


@pytest.mark.parametrize(("spec", "where", "message"), [
    ("../scorers/length.py:missing", "prompts/echo.yaml:16", "has no function 'missing'"),
    ("../scorers/length.py:two_args", "scorers/length.py:13", "cannot be called with three"),
    ("../scorers/nothere.py:score", "prompts/echo.yaml:16", "was not found"),
    ("../../outside.py:score", "prompts/echo.yaml:16", "lies outside the project"),
    ("not a spec", "prompts/echo.yaml:16", "neither FILE.py:FUNCTION"),
    ("no_such_scorer", "prompts/echo.yaml:16", "no installed scorer named 'no_such_scorer'"),
])
def test_validate_loads_the_scorer(project: Path, spec: str, where: str, message: str) -> None:
    (project.parent / "outside.py").write_text(SCORER, encoding="utf-8")
    prompt = (project / "prompts" / "echo.yaml").read_text(encoding="utf-8")
    (project / "prompts" / "echo.yaml").write_text(
        prompt.replace("../scorers/length.py:same", spec), encoding="utf-8")
    result = invoke("validate", "prompts/echo.yaml", code=2)
    assert where in result.stdout + result.stderr
    assert message in result.stdout + result.stderr


def test_a_broken_scorer_file_names_its_line(project: Path) -> None:
    (project / "scorers" / "length.py").write_text("x = 1\ndef score(a, e, row:\n",
                                                    encoding="utf-8")
    result = invoke("validate", "prompts/echo.yaml", code=2)
    assert "scorers/length.py:2" in result.stderr and "does not compile" in result.stderr
    (project / "scorers" / "length.py").write_text("x = 1\nraise RuntimeError('no')\n",
                                                    encoding="utf-8")
    result = invoke("validate", "prompts/echo.yaml", code=2)
    assert "scorers/length.py:2" in result.stderr
    assert "failed while loading: RuntimeError: no" in result.stderr


def test_a_broken_scorer_stops_a_run_before_anything_is_sent(project: Path,
                                                             api: FakeOpenAI) -> None:
    (project / "scorers" / "length.py").write_text("def score(a):\n    return 1\n",
                                                    encoding="utf-8")
    invoke("eval", "prompts/echo.yaml", code=2)
    invoke("eval", "prompts/echo.yaml", "--dry-run", code=2)
    assert api.count == 0


@pytest.fixture
def installed_scorer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package `wordscore` offering the scorer `word_length` through the entry-point group,
    installed as pip would lay it out (a module and its .dist-info) on sys.path."""
    site = tmp_path / "site"
    (site / "wordscore").mkdir(parents=True)
    (site / "wordscore" / "__init__.py").write_text(
        "def word_length(answer, expected, row):\n"
        "    if answer == 'four':\n"
        "        raise ValueError('four is unlucky')\n"
        "    return len(answer)\n", encoding="utf-8")
    info = site / "wordscore-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wordscore\nVersion: 1.2\n",
                                   encoding="utf-8")
    (info / "entry_points.txt").write_text(
        "[promptctl.scorers]\nword_length = wordscore:word_length\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    return site


def test_an_installed_scorer_by_entry_point(installed_scorer: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            api: FakeOpenAI) -> None:
    root = write_echo_project(tmp_path / "proj", prompt_with(
        "- name: letters\n  custom: word_length\n"))
    monkeypatch.chdir(root)
    invoke("validate", "prompts/echo.yaml")
    run = eval_run("prompts/echo.yaml")
    # one 3, two 3, three 5, five 4; four raised.
    assert run["metrics"]["letters"]["value"] == pytest.approx((3 + 3 + 5 + 4) / 4)
    assert run["metrics"]["letters"]["identity"] == {
        "custom": "word_length", "entry_point": "wordscore:word_length",
        "package": "wordscore 1.2"}
    error = run["scoring_errors"]["letters"]["rows"][0]["error"]
    assert error.startswith("ValueError: four is unlucky (at ")
    assert error.endswith("wordscore/__init__.py:3)")


def test_an_unknown_entry_point_names_the_installed_ones(installed_scorer: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_echo_project(tmp_path / "proj", prompt_with(
        "- name: letters\n  custom: word_lenght\n"))
    monkeypatch.chdir(root)
    result = invoke("validate", "prompts/echo.yaml", code=2)
    assert "no installed scorer named 'word_lenght'" in result.stderr
    assert "installed scorers: word_length" in result.stderr


def test_repeat_fewshot_and_history(project: Path, api: FakeOpenAI) -> None:
    prompt = (project / "prompts" / "echo.yaml").read_text(encoding="utf-8")
    (project / "prompts" / "echo.yaml").write_text(
        prompt + "examples:\n  - {input: {q: seven}, expected: seven}\n"
        "  - {input: {q: ten}, expected: ten}\n", encoding="utf-8")
    run = eval_run("prompts/echo.yaml", "--repeat", "2")
    # Each row twice: r1, r2 and r5 scored twice each (three rows), r3's error twice.
    assert run["metrics"]["length"]["n"] == 3
    assert run["metrics"]["length"]["value"] == pytest.approx((0.3 + 0.3 + 0.4) / 3)
    # One row without a score, as n counts rows; both its samples listed.
    failed = run["scoring_errors"]["length"]
    assert (failed["count"], failed["samples"], failed["fewshot"]) == (1, 2, 0)
    assert sorted(r["sample"] for r in failed["rows"]) == [0, 1]
    assert "length: no score for 1 rows (2 samples) (r3: " in invoke("show", run["id"]).stdout
    # The few-shot self-check scores the examples too (twice each): seven 0.5, ten 0.3.
    assert run["fewshot_metrics"]["length"]["value"] == pytest.approx(0.4)
    assert run["fewshot_metrics"]["length"]["n"] == 2
    history = json.loads(invoke("history", "echo", "--json").stdout)
    assert history["versions"][0]["metrics"]["length"] == pytest.approx(0.4 / 3 + 0.2)


def test_an_async_scorer_is_awaited(project: Path, api: FakeOpenAI) -> None:
    prompt = (project / "prompts" / "echo.yaml").read_text(encoding="utf-8")
    (project / "prompts" / "echo.yaml").write_text(
        prompt.replace("../scorers/length.py:same", "../scorers/length.py:later"),
        encoding="utf-8")
    run = eval_run("prompts/echo.yaml")
    # "echo: Question one" is 18 characters; three 20, four 19, five 19; r2 raised.
    assert run["metrics"]["same"]["value"] == pytest.approx((18 + 20 + 19 + 19) / 4)
    assert run["scoring_errors"]["same"]["rows"][0]["error"] == \
        "KeyError: 'late' (at scorers/length.py:19)"
