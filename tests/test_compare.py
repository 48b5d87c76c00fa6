"""compare_runs, history and run lookup on stores written by hand."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as sp

from promptctl import compare_runs, history
from promptctl.metrics import aggregate, f1_macro
from promptctl.store.sqlite import SQLiteStore
from tests.test_stats import binomial_two_sided

NUMERIC = ("rmse", "mae", "exact_match", "format_validity", "spearman")
ERR = "ERR"  # an answer that stands for a failed request


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(tmp_path / "results.db")


def scores_for(answer: Any, expected: Any, metrics: tuple[str, ...]) -> dict[str, Any]:
    if "f1_macro" in metrics:
        return {"format_validity": 1.0 if answer is not None else 0.0,
                "label_expected": expected, "label_answer": answer}
    if answer is None:
        return {"format_validity": 0.0, "exact_match": 0.0}
    out = {"format_validity": 1.0, "exact_match": 1.0 if answer == expected else 0.0}
    if isinstance(answer, int | float):
        out.update(answer_num=float(answer), expected_num=float(expected),
                   squared_error=float((answer - expected) ** 2))
    return out


def put_run(store: SQLiteStore, run_id: str, answers: dict[str, Any], *,
            expected: dict[str, Any] | None = None, metrics: tuple[str, ...] = NUMERIC,
            prompt: str = "p", version: str = "v1", model: str = "m", commit: str | None = None,
            dirty: bool = False, evalset: str = "e1", status: str = "complete",
            fingerprints: tuple[str, ...] = ("fp1",), created: str = "2026-01-01T00:00:00.000Z",
            coverage: str | None = "full", base_url: str = "https://api.openai.com/v1",
            keys: dict[str, str] | None = None) -> None:
    """A run whose rows answer `answers[row_id]` (a list for several samples; None is an
    unreadable answer, ERR a failed request); `keys` renames score keys (as a metric kept
    them)."""
    expected = expected or {}
    store.create_run({
        "id": run_id, "created_at": created, "status": "running", "prompt_name": prompt,
        "prompt_path": f"prompts/{prompt}.yaml", "prompt_version": version, "prompt_source": "x",
        "git_commit": commit, "git_dirty": dirty, "git_branch": None, "model": model,
        "endpoint": "openai", "base_url": base_url, "params": {}, "evalset_path": "e.jsonl",
        "evalset_version": evalset,
        "n_planned": len(answers)})
    rows, scored = [], []
    for position, (row_id, given) in enumerate(answers.items()):
        for k, answer in enumerate(given if isinstance(given, list) else [given]):
            exp = expected.get(row_id, int(row_id.strip("r")) if row_id.strip("r").isdigit() else 0)
            row: dict[str, Any] = {
                "run_id": run_id, "kind": "eval", "position": position, "row_id": row_id,
                "sample": k, "input": {"q": row_id}, "expected": exp, "messages": [],
                "created_at": created, "cached": False, "attempts": 1}
            if answer == ERR:
                row["error"] = "HTTP 500"
            else:
                row.update(completion=f"Answer: {answer}", answer=answer, valid=answer is not None,
                           scores={(keys or {}).get(k, k): v
                                   for k, v in scores_for(answer, exp, metrics).items()})
                scored.append(row["scores"])
            rows.append(row)
    store.write_rows(rows)
    errors = sum(1 for r in rows if "error" in r)
    store.update_run(run_id, status=status, metrics=aggregate(metrics, scored), coverage=coverage,
                     errors=errors, summary={"n": len(rows), "errors": errors,
                                             "system_fingerprints": list(fingerprints)})


def answers_for(n: int, wrong: dict[int, Any] | None = None) -> dict[str, Any]:
    """Rows r1..rn answering their own number, except `wrong`."""
    wrong = wrong or {}
    return {f"r{i}": wrong.get(i, i) for i in range(1, n + 1)}


# --- compare_runs ---------------------------------------------------------------------------


def test_rows_are_paired_by_id_and_errors_and_strays_left_out(store: SQLiteStore) -> None:
    put_run(store, "A", {"r1": 1, "r2": 2, "r3": 3, "r4": 9, "r5": 5, "r6": None})
    # B lists its rows in another order, lacks r1, has r7, and its request for r3 failed.
    put_run(store, "B", {"r7": 7, "r6": 6, "r5": 8, "r4": 4, "r3": ERR, "r2": 2})
    r = compare_runs(store, "A", "B")
    assert (r.paired_rows, r.only_in_a, r.only_in_b, r.errors_excluded) == (4, 1, 1, 1)
    em = r.metrics["exact_match"]
    # Paired rows r2, r4, r5, r6: A hits r2, r5; B hits r2, r4, r6.
    assert em.a == pytest.approx(2 / 4) and em.b == pytest.approx(3 / 4)
    assert (em.n, em.n01, em.n10) == (4, 2, 1)
    assert em.delta == pytest.approx(0.25)
    assert em.p_value == pytest.approx(binomial_two_sided(2, 1))
    # The stored run-level values cover each run's own rows.
    assert em.a_run == pytest.approx(4 / 6) and em.b_run == pytest.approx(4 / 5)
    assert em.direction == "better" and em.higher_is_better is True
    rmse = r.metrics["rmse"]
    # Numeric answers on both sides: r2 (0, 0), r4 (25, 0), r5 (0, 9).
    assert rmse.n == 3
    assert rmse.a == pytest.approx(math.sqrt(25 / 3)) and rmse.b == pytest.approx(math.sqrt(3))
    assert rmse.delta == pytest.approx(math.sqrt(3) - math.sqrt(25 / 3))
    assert rmse.direction == "better" and rmse.higher_is_better is False
    assert any("1 row(s) only in A and 1 only in B" in w for w in r.warnings)
    assert any("1 row(s) with a failed request" in w for w in r.warnings)


def test_flipped_rows_carry_input_answers_and_expected(store: SQLiteStore) -> None:
    put_run(store, "A", answers_for(8, {3: 30}))
    put_run(store, "B", answers_for(8, {1: 4, 2: None, 6: 9}))
    r = compare_runs(store, "A", "B")
    flipped = r.flipped
    assert [f.row_id for f in flipped.pass_to_fail] == ["r1", "r2", "r6"]
    assert [f.row_id for f in flipped.fail_to_pass] == ["r3"]
    first = flipped.pass_to_fail[0]
    assert first.to_json() == {"row_id": "r1", "input": {"q": "r1"}, "expected": 1, "answer_a": 1,
                     "answer_b": 4, "completion_a": "Answer: 1", "completion_b": "Answer: 4",
                     "metric": "exact_match"}
    assert flipped.pass_to_fail[1].answer_b is None  # unreadable
    # Error increases, largest first: r1 0 -> 3, r6 0 -> 3 (r2 has no number in B).
    assert [(f.row_id, f.error_a, f.error_b) for f in flipped.biggest_error_increases] \
        == [("r1", 0.0, 3.0), ("r6", 0.0, 3.0)]


def test_accuracy_is_compared_and_flipped_by_its_own_name(store: SQLiteStore) -> None:
    metrics = ("accuracy", "format_validity")
    # A run stored by an older version kept accuracy's per-row score under exact_match.
    put_run(store, "A", answers_for(8, {3: 30}), metrics=metrics)
    put_run(store, "B", answers_for(8, {1: 4, 6: 9}), metrics=metrics,
            keys={"exact_match": "accuracy"})
    r = compare_runs(store, "A", "B")
    accuracy = r.metrics["accuracy"]
    assert (accuracy.n, accuracy.n01, accuracy.n10) == (8, 1, 2)
    assert accuracy.a == pytest.approx(7 / 8) and accuracy.b == pytest.approx(6 / 8)
    assert [(f.row_id, f.metric) for f in r.flipped.pass_to_fail] == [("r1", "accuracy"),
                                                                      ("r6", "accuracy")]
    assert [(f.row_id, f.metric) for f in r.flipped.fail_to_pass] == [("r3", "accuracy")]


def test_error_increases_are_the_twenty_largest(store: SQLiteStore) -> None:
    put_run(store, "A", answers_for(30))
    put_run(store, "B", answers_for(30, {i: i + i for i in range(1, 31)}))
    ups = compare_runs(store, "A", "B").flipped.biggest_error_increases
    assert [u.row_id for u in ups] == [f"r{i}" for i in range(30, 10, -1)]


def test_a_run_against_itself(store: SQLiteStore) -> None:
    put_run(store, "A", answers_for(12, {2: 5, 7: None, 9: 1}))
    r = compare_runs(store, "A", "A")
    for name, e in r.metrics.items():
        assert e.delta == 0 and e.p_value == 1.0, name
        assert e.direction == "same", name
    assert r.flipped.to_json() == {"pass_to_fail": [], "fail_to_pass": [],
                                   "biggest_error_increases": []}
    assert r.warnings == ()


def test_prefixes_name_runs(store: SQLiteStore) -> None:
    put_run(store, "01abc", answers_for(3))
    put_run(store, "01xyz", answers_for(3, {1: 2}))
    r = compare_runs(store, "01a", "01x")
    assert (r.a.id, r.b.id) == ("01abc", "01xyz")


def test_correlations_and_mae_on_the_paired_rows(store: SQLiteStore) -> None:
    rng = np.random.default_rng(5)
    expected = {f"r{i}": int(rng.integers(0, 11)) for i in range(1, 41)}
    a = {k: int(np.clip(v + rng.integers(-2, 3), 0, 10)) for k, v in expected.items()}
    b = {k: int(np.clip(v + rng.integers(-1, 2), 0, 10)) for k, v in expected.items()}
    metrics = ("mae", "pearson", "spearman")
    put_run(store, "A", a, expected=expected, metrics=metrics)
    put_run(store, "B", b, expected=expected, metrics=metrics)
    r = compare_runs(store, "A", "B").metrics
    e = list(expected.values())
    assert r["spearman"].a == pytest.approx(sp.spearmanr(list(a.values()), e).statistic)
    assert r["spearman"].b == pytest.approx(sp.spearmanr(list(b.values()), e).statistic)
    assert r["pearson"].a == pytest.approx(sp.pearsonr(list(a.values()), e).statistic)
    assert r["mae"].b == pytest.approx(np.mean(np.abs(np.array(list(b.values())) - e)))
    for name in metrics:
        assert r[name].a == pytest.approx(r[name].a_run), name
        assert r[name].test == "paired_permutation"
        lo, hi = r[name].ci95
        assert lo <= r[name].delta <= hi, name


def test_constant_answers_give_no_correlation_and_valid_json(store: SQLiteStore) -> None:
    put_run(store, "A", {f"r{i}": 5 for i in range(1, 7)}, metrics=("pearson", "spearman"))
    put_run(store, "B", answers_for(6), metrics=("pearson", "spearman"))
    r = compare_runs(store, "A", "B")
    assert r.metrics["spearman"].delta is None and r.metrics["spearman"].b == 1.0
    json.dumps(r.to_json(), allow_nan=False)


def test_a_null_score_counts_as_missing(store: SQLiteStore) -> None:
    put_run(store, "A", answers_for(6, {2: 4}))
    put_run(store, "B", answers_for(6, {2: 5, 4: 1}))
    nulled = json.dumps({"format_validity": 1.0, "exact_match": 0.0, "answer_num": 1.0,
                         "expected_num": 4.0, "squared_error": None})
    store.conn.execute("UPDATE rows SET scores = ? WHERE run_id = 'B' AND row_id = 'r4'", (nulled,))
    r = compare_runs(store, "A", "B").metrics
    assert r["exact_match"].n == 6
    assert r["rmse"].n == 5  # r4 has no squared error in B
    assert r["rmse"].a == pytest.approx(math.sqrt(4 / 5))
    assert r["rmse"].b == pytest.approx(math.sqrt(9 / 5))


def test_score_columns_read_back_what_was_written(store: SQLiteStore) -> None:
    # Repeated scores, several samples, a failed request and a label holding a control
    # character (JSON escapes it, so it cannot split the stored scores apart).
    answers = {"r1": "a\x1eb", "r2": ["neg", "neg", None], "r3": ERR, "r4": "neg", "r5": "pos"}
    expected = {"r1": "a\x1eb", "r2": "neg", "r3": "pos", "r4": "neg", "r5": "neg"}
    put_run(store, "A", answers, expected=expected, metrics=("f1_macro",))
    cols = store.score_columns("A")
    got = {(r, k): (ok, s) for r, k, ok, s in zip(cols["row_id"], cols["sample"], cols["ok"],
                                                  cols["scores"], strict=True)}
    want = {(r["row_id"], r["sample"]): (r["error"] is None, r["scores"])
            for r in store.iter_rows("A", kind="eval")}
    assert got == want and len(cols["row_id"]) == 7
    assert got[("r1", 0)][1]["label_answer"] == "a\x1eb"
    assert got[("r3", 0)] == (False, None)
    ((_, r2), (_, r4)) = got[("r2", 0)], got[("r4", 0)]
    assert r2 == r4 == {"format_validity": 1.0, "label_expected": "neg", "label_answer": "neg"}


def test_f1_macro(store: SQLiteStore) -> None:
    labels = ["neg", "neu", "pos"]
    rng = np.random.default_rng(9)
    expected = {f"r{i}": labels[int(rng.integers(0, 3))] for i in range(1, 31)}
    a = {k: v if rng.random() < 0.6 else labels[int(rng.integers(0, 3))] for k, v in expected.items()}
    b = {k: v if rng.random() < 0.8 else None for k, v in expected.items()}
    put_run(store, "A", a, expected=expected, metrics=("f1_macro",))
    put_run(store, "B", b, expected=expected, metrics=("f1_macro",))
    r = compare_runs(store, "A", "B").metrics["f1_macro"]
    assert r.a == pytest.approx(f1_macro(list(a.values()), list(expected.values()))["value"])
    assert r.b == pytest.approx(f1_macro(list(b.values()), list(expected.values()))["value"])
    assert r.delta == pytest.approx(r.b - r.a)
    assert r.ci95 is not None and 0 < r.p_value <= 1


def test_warnings_make_a_comparison_suspect(store: SQLiteStore) -> None:
    put_run(store, "A", answers_for(4), model="gpt-4o-mini", evalset="e1")
    put_run(store, "B", answers_for(4), model="gpt-4o", evalset="e2", dirty=True, status="failed",
            fingerprints=("fp2",))
    w = compare_runs(store, "A", "B").warnings
    assert any("different eval set versions" in x for x in w)
    assert any("different models: gpt-4o-mini vs gpt-4o" in x for x in w)
    assert any("B (B) ran on a dirty work tree" in x for x in w)
    assert any("B (B) is failed" in x for x in w)
    put_run(store, "C", answers_for(4), model="gpt-4o-mini", fingerprints=("fp9",))
    w = compare_runs(store, "A", "C").warnings
    assert w == ("the server reported different system fingerprints (fp1 vs fp9): the model "
                 "behind the name may have changed",)


# --- repeated samples -------------------------------------------------------------------------


def test_repeated_samples_of_a_row_stay_together(store: SQLiteStore) -> None:
    # Three samples per row; B is right more often on r1 and wrong more often on r3.
    put_run(store, "A", {"r1": [1, 0, 0], "r2": [2, 2, 2], "r3": [3, 3, 3], "r4": [4, 4, 0]})
    put_run(store, "B", {"r1": [1, 1, 0], "r2": [2, 2, 2], "r3": [3, 0, 0], "r4": [4, 4, 0]})
    r = compare_runs(store, "A", "B")
    em = r.metrics["exact_match"]
    assert em.test == "paired_permutation" and em.n == 4  # rows, not 12 samples
    assert em.a == pytest.approx(9 / 12) and em.b == pytest.approx(8 / 12)
    assert em.a == pytest.approx(em.a_run)
    assert r.samples.to_json() == {"a": 3, "b": 3}
    (down,) = r.flipped.pass_to_fail
    assert down.row_id == "r3" and down.pass_a == 1 and down.pass_b == pytest.approx(1 / 3)
    (up,) = r.flipped.fail_to_pass
    assert up.row_id == "r1" and up.pass_a == pytest.approx(1 / 3)
    rmse = r.metrics["rmse"]
    assert rmse.a == pytest.approx(math.sqrt((1 + 1 + 16) / 12))
    assert rmse.b == pytest.approx(math.sqrt((1 + 9 + 9 + 16) / 12))
    # Correlations pool every sample; resampling still moves whole rows.
    expected = [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    spearman = r.metrics["spearman"]
    assert spearman.a == pytest.approx(sp.spearmanr([1, 0, 0, 2, 2, 2, 3, 3, 3, 4, 4, 0],
                                                       expected).statistic)
    assert spearman.b == pytest.approx(sp.spearmanr([1, 1, 0, 2, 2, 2, 3, 0, 0, 4, 4, 0],
                                                       expected).statistic)
    assert spearman.n == 4 and spearman.ci95 is not None


def test_different_sample_counts_are_pooled_with_a_warning(store: SQLiteStore) -> None:
    put_run(store, "A", {"r1": [1, 1, 0], "r2": [2, 2, 2]})
    put_run(store, "B", {"r1": 1, "r2": 2})
    r = compare_runs(store, "A", "B")
    assert r.metrics["exact_match"].a == pytest.approx(5 / 6)
    assert any("A has 3 sample(s) per row and B 1" in w for w in r.warnings)


# --- history ----------------------------------------------------------------------------------


def git(root: Path, *args: str, date: str | None = None) -> str:
    env = None
    if date is not None:
        import os

        env = {**os.environ, "GIT_COMMITTER_DATE": date, "GIT_AUTHOR_DATE": date}
    return subprocess.run(["git", "-c", "commit.gpgsign=false", *args], cwd=root, check=True,
                          capture_output=True, text=True, env=env).stdout


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """Four commits: two a day apart, then two in the same second (a rebase, a script)."""
    for var, value in (("GIT_AUTHOR_NAME", "Ada Lovelace"), ("GIT_AUTHOR_EMAIL", "ada@example.invalid"),
                       ("GIT_COMMITTER_NAME", "Bot"), ("GIT_COMMITTER_EMAIL", "bot@example.invalid"),
                       ("GIT_CONFIG_NOSYSTEM", "1")):
        monkeypatch.setenv(var, value)
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    shas = []
    dates = ["2026-03-01T10:00:00+02:00", "2026-03-02T10:00:00+02:00",
             "2026-03-03T10:00:00+02:00", "2026-03-03T10:00:00+02:00"]
    for i, date in enumerate(dates):
        (root / "prompt.txt").write_text(f"version {i}\n", encoding="utf-8")
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", f"prompt v{i}\n\nbody {i}", date=date)
        shas.append(git(root, "rev-parse", "HEAD").strip())
    return root, shas


def test_history_is_newest_first_by_commit_with_its_facts(store: SQLiteStore,
                                                           repo: tuple[Path, list[str]]) -> None:
    root, shas = repo
    # Stored in scrambled order: run times say nothing about the versions' order.
    for run_id, i in (("01r1", 3), ("01r2", 0), ("01r3", 2), ("01r4", 1)):
        put_run(store, run_id, answers_for(4, {1: 0} if i % 2 else {}), commit=shas[i],
                version=f"v{i}", created=f"2026-04-0{int(run_id[-1])}T00:00:00.000Z")
    h = history(store, "p", root=root)
    assert [v.git_commit for v in h.versions] == shas[::-1]
    assert [v.subject for v in h.versions] == ["prompt v3", "prompt v2", "prompt v1",
                                                     "prompt v0"]
    newest = h.versions[0]
    log = git(root, "log", "-1", "--format=%an|%cI|%s", shas[3]).strip().split("|")
    assert (newest.author, newest.date, newest.subject) == (log[0], log[1], log[2])
    assert newest.date == "2026-03-03T10:00:00+02:00"
    assert newest.prompt_version == "v3" and newest.run == "01r1"
    assert newest.metrics["exact_match"] == pytest.approx(0.75)
    assert h.versions[-1].metrics["exact_match"] == 1.0
    assert h.warnings == ()


def test_history_keeps_one_run_per_version_and_model(store: SQLiteStore,
                                                     repo: tuple[Path, list[str]]) -> None:
    root, shas = repo
    put_run(store, "01a", answers_for(2), commit=shas[0], version="v0")
    put_run(store, "01b", answers_for(2, {1: 0}), commit=shas[1], version="v0")  # same text
    put_run(store, "01c", answers_for(2), commit=shas[1], version="v1", model="big")
    put_run(store, "01d", answers_for(2), commit=shas[1], version="v1", status="failed")
    h = history(store, "p", root=root)
    assert [(v.run, v.model) for v in h.versions] == [("01c", "big"), ("01b", "m")]
    only = history(store, "p", model="big", root=root)
    assert [v.run for v in only.versions] == ["01c"] and only.model == "big"


def test_a_dirty_run_is_placed_by_its_own_time(store: SQLiteStore,
                                               repo: tuple[Path, list[str]]) -> None:
    root, shas = repo
    put_run(store, "01a", answers_for(2), commit=shas[2], version="v2")
    put_run(store, "01b", answers_for(2), commit=shas[3], version="v3")
    put_run(store, "01c", answers_for(2), commit=shas[2], version="wip", dirty=True,
            created="2026-03-02T12:00:00.000Z")  # edited on top of v1 before v2 was committed
    h = history(store, "p", root=root)
    assert [v.prompt_version for v in h.versions] == ["v3", "v2", "wip"]


def test_a_clean_run_of_a_version_wins_over_a_dirty_one(store: SQLiteStore) -> None:
    put_run(store, "01a", answers_for(2), version="v1", commit="c1")
    put_run(store, "01b", answers_for(2, {1: 0}), version="v1", commit="c1", dirty=True)
    (entry,) = history(store, "p").versions
    assert entry.run == "01a" and entry.git_dirty is False


def test_commits_git_does_not_know_and_runs_outside_git(store: SQLiteStore,
                                                        repo: tuple[Path, list[str]]) -> None:
    root, shas = repo
    put_run(store, "01a", answers_for(2), commit="f" * 40, version="gone",
            created="2026-05-01T00:00:00.000Z")
    put_run(store, "01b", answers_for(2), commit=None, version="nogit",
            created="2026-05-02T00:00:00.000Z")
    put_run(store, "01c", answers_for(2), commit=shas[0], version="v0")
    h = history(store, "p", root=root)
    assert [v.prompt_version for v in h.versions] == ["nogit", "gone", "v0"]
    assert h.versions[0].date is None and h.versions[1].subject is None
    assert history(store, "p").versions[0].subject is None  # no root: no git facts


def test_eval_set_changes_are_flagged(store: SQLiteStore) -> None:
    put_run(store, "01a", answers_for(2), version="v1", evalset="e1")
    put_run(store, "01b", answers_for(2), version="v2", evalset="e2")
    (w,) = history(store, "p").warnings
    assert "2 different eval set versions" in w


def test_history_of_an_unknown_prompt_is_empty(store: SQLiteStore) -> None:
    assert history(store, "nothing").to_json() == {
        "prompt": "nothing", "model": None, "versions": [], "higher_is_better": {},
        "warnings": [], "searches": []}
