"""A shared store is read defensively: a run or row that another writer left malformed is left
out with a warning naming it, never a crash, in every command that reads runs."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from promptctl.store import Store, open_store
from tests.checkrepo import Repo, prompt_text
from tests.helpers import eval_run, run_cli

pytestmark = pytest.mark.both_stores  # run on SQLite, then on PostgreSQL

# (column, stored value, whether only SQLite can hold it: PostgreSQL's columns are typed)
BAD_RUNS = {
    "summary not JSON": ("summary", '{"n": 20,', False),
    "summary a list": ("summary", "[1, 2]", False),
    "count as text": ("summary", '{"n": "twenty"}', False),
    "negative count": ("summary", '{"n": 20, "errors": -3}', False),
    "NaN metric": ("metrics", '{"exact_match": {"value": NaN, "n": 20}}', False),
    "infinite metric": ("metrics", '{"exact_match": {"value": 1e999, "n": 20}}', False),
    "metric not a mapping": ("metrics", '{"exact_match": 0.5}', False),
    "options a string": ("options", '"limit"', False),
    "params a list": ("params", "[]", False),
    "huge number": ("summary", '{"n": ' + "9" * 5000 + "}", False),
    "deep nesting": ("summary", '{"server": ' + "[" * 5000 + "]" * 5000 + "}", False),
    "created_at not a time": ("created_at", "yesterday", False),
    "n_planned text": ("n_planned", "many", True),
    "git_dirty not a flag": ("git_dirty", 5, True),
    "model a blob": ("model", b"\x00\xff", True),
}
BAD_ROWS = {
    "scores not JSON": ("scores", "{not json", False),
    "scores a list": ("scores", "[1, 0]", False),
    "input not JSON": ("input", "", False),
    "steps a number": ("steps", "3", False),
    "NaN in the answer": ("answer", "NaN", False),
    "latency as text": ("latency_ms", "slow", True),
    "sample as text": ("sample", "first", True),
}


@pytest.fixture
def store() -> Iterator[Store]:
    """The store the commands use, opened to edit it behind promptctl's back."""
    opened = open_store(os.environ["PROMPTCTL_STORE"])
    yield opened
    opened.close()


def corrupt(store: Store, sql: str, *args: Any) -> None:
    """Run an UPDATE on the store's own connection (SQLite or psycopg)."""
    if type(store).__name__ == "PostgresStore":
        sql = sql.replace("?", "%s")
    store.conn.execute(sql, args)  # type: ignore[attr-defined]


def two_runs(repo: Repo) -> tuple[str, str]:
    """Two complete runs of the score prompt at the base commit: the older one stays good."""
    good = eval_run("prompts/score.yaml")["id"]
    other = eval_run("prompts/score.yaml", "--no-cache")["id"]
    return good, other


def calm(result: Result, code: int) -> Result:
    """`result` ended with `code`, through promptctl's own exit and without a traceback."""
    output = result.stdout + result.stderr
    assert result.exit_code == code, output
    assert result.exception is None or isinstance(result.exception, SystemExit), output
    assert "Traceback" not in output
    return result


def changed(repo: Repo) -> None:
    """A commit on the feature branch that `check` evaluates against the stored baseline."""
    repo.write("prompts/score.yaml", prompt_text(description="Reworded."))
    repo.commit("reword")


@pytest.mark.parametrize("case", sorted(BAD_RUNS))
def test_a_malformed_run_is_left_out_of_every_command(repo: Repo, store: Store, store_kind: str,
                                                      tmp_path: Path, case: str) -> None:
    column, value, sqlite_only = BAD_RUNS[case]
    if sqlite_only and store_kind != "sqlite":
        pytest.skip("a PostgreSQL column of this type cannot hold the value")
    good, bad = two_runs(repo)
    corrupt(store, f"UPDATE runs SET {column} = ? WHERE id = ?", value, bad)
    warned = f"run {bad} is malformed and was left out"

    listed = calm(run_cli("runs"), 0)
    assert warned in listed.stderr and "promptctl store check" in listed.stderr
    assert good in listed.stdout and bad not in listed.stdout
    document = calm(run_cli("runs", "--json"), 0)
    assert [r["id"] for r in json.loads(document.stdout)["runs"]] == [good]
    assert warned in document.stderr

    assert json.loads(calm(run_cli("show", good, "--json"), 0).stdout)["run"]["id"] == good
    calm(run_cli("show", good), 0)
    for args in (["show", bad], ["show", bad, "--json"], ["diff", good, bad],
                 ["report", bad, "-o", str(tmp_path / "bad.html")]):
        refused = calm(run_cli(*args), 2)
        assert f"run {bad}: " in refused.stderr and "promptctl store check" in refused.stderr

    history = calm(run_cli("history", "score", "--json"), 0)
    assert [v["run"] for v in json.loads(history.stdout)["versions"]] == [good]
    assert warned in history.stderr
    report = calm(run_cli("report", good, "--history", "score", "-o", str(tmp_path / "r.html")), 0)
    assert warned in report.stderr

    changed(repo)
    checked = calm(run_cli("check", "--json"), 0)
    assert json.loads(checked.stdout)["prompts"][0]["baseline_run"] == good
    assert warned in checked.stderr


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_a_malformed_row_is_left_out_and_named(repo: Repo, store: Store, store_kind: str,
                                              tmp_path: Path, case: str) -> None:
    column, value, sqlite_only = BAD_ROWS[case]
    if sqlite_only and store_kind != "sqlite":
        pytest.skip("a PostgreSQL column of this type cannot hold the value")
    good, bad = two_runs(repo)
    corrupt(store, f"UPDATE rows SET {column} = ? WHERE run_id = ? AND row_id = 'r03'", value, bad)
    warned = f"run {bad}, eval row r03 sample "

    for args in (["show", bad], ["show", bad, "--json"]):
        shown = calm(run_cli(*args), 0)
        assert warned in shown.stderr and "is malformed and was left out" in shown.stderr
    rows = json.loads(run_cli("show", bad, "--json").stdout)["rows"]
    assert sorted(r["row_id"] for r in rows) == [f"r{i:02d}" for i in range(1, 21) if i != 3]
    calm(run_cli("runs"), 0)
    calm(run_cli("history", "score"), 0)
    report = calm(run_cli("report", bad, "-o", str(tmp_path / "r.html")), 0)
    assert warned in report.stderr
    if column in ("scores", "sample"):  # what a diff reads of a row
        diffed = calm(run_cli("diff", good, bad, "--json"), 0)
        assert warned in diffed.stderr
        assert json.loads(diffed.stdout)["only_in_a"] == 1
    else:
        calm(run_cli("diff", good, bad), 0)
    changed(repo)
    calm(run_cli("check"), 0)


@pytest.mark.parametrize("scores", ['{"exact_match": "yes", "format_validity": [1]}',
                                    '{"exact_match": {"value": 1}, "format_validity": null}'])
def test_scores_of_another_shape_are_no_scores(repo: Repo, store: Store, tmp_path: Path,
                                               scores: str) -> None:
    """A row's scores of a type no metric writes are shown as stored and compared as missing."""
    good, bad = two_runs(repo)
    corrupt(store, "UPDATE rows SET scores = ? WHERE run_id = ? AND row_id = 'r03'", scores, bad)
    document = json.loads(calm(run_cli("show", bad, "--json"), 0).stdout)
    assert [r["scores"] for r in document["rows"] if r["row_id"] == "r03"] == [json.loads(scores)]
    calm(run_cli("show", bad), 0)
    diffed = json.loads(calm(run_cli("diff", good, bad, "--json"), 0).stdout)
    assert diffed["metrics"]["exact_match"]["n"] == 19
    calm(run_cli("report", bad, "--diff", good, bad, "-o", str(tmp_path / "r.html")), 0)


def test_store_check_lists_what_reads_leave_out(repo: Repo, store: Store) -> None:
    good, bad = two_runs(repo)
    clean = calm(run_cli("store", "check"), 0)
    assert "checked 2 run(s) and 40 row(s)" in clean.stdout
    corrupt(store, "UPDATE runs SET summary = ? WHERE id = ?", '{"n": "twenty"}', bad)
    corrupt(store, "UPDATE rows SET scores = ? WHERE run_id = ? AND row_id = 'r03'", "[1]", good)
    listed = calm(run_cli("store", "check"), 1)
    assert f"run {bad}: summary.n is 'twenty', not a count" in listed.stdout
    assert f"run {good}, eval row r03 sample 0: scores is a list, not a mapping" in listed.stdout
    assert "2 malformed of 2 run(s) and 39 row(s)" in listed.stdout and "fix: " in listed.stdout
    assert listed.stderr == ""  # the list is the output, not warnings
    document = json.loads(calm(run_cli("store", "check", "--json"), 1).stdout)
    assert document["runs"] == 2 and document["rows"] == 39
    assert sorted((m["run"], m["row"]) for m in document["malformed"]) == sorted(
        [(bad, None), (good, "eval row r03 sample 0")])


def test_a_run_whose_id_starts_another_cannot_take_its_place(repo: Repo, store: Store) -> None:
    good, _ = two_runs(repo)
    typed = good[:-1]  # what a user types for the good run
    # Another writer stores a run under that prefix (an import refuses such an id).
    store.create_run({**store.get_run(good), "id": typed, "model": "impostor"})
    refused = calm(run_cli("show", typed), 2)
    assert "ambiguous" in refused.stderr and f"{typed}, {good}" in refused.stderr
    assert "impostor" not in refused.stdout
    assert json.loads(calm(run_cli("show", good, "--json"), 0).stdout)["run"]["model"] != "impostor"
    listed = calm(run_cli("store", "check"), 1)
    assert f"run {typed}: its id is the start of run {good}'s id" in listed.stdout


@pytest.mark.sqlite_only  # PostgreSQL stores only valid UTF-8
def test_text_that_is_not_utf8_is_malformed_not_a_crash(repo: Repo, store: Store,
                                                        tmp_path: Path) -> None:
    good, bad = two_runs(repo)
    third = eval_run("prompts/score.yaml", "--no-cache")["id"]
    corrupt(store, "UPDATE runs SET model = CAST(X'ff41' AS TEXT) WHERE id = ?", bad)
    corrupt(store, "UPDATE rows SET scores = CAST(X'7bff7d' AS TEXT) WHERE run_id = ? "
            "AND row_id = 'r05'", third)
    corrupt(store, "UPDATE rows SET completion = CAST(X'c3' AS TEXT) WHERE run_id = ? "
            "AND row_id = 'r07'", third)
    listed = calm(run_cli("runs", "--json"), 0)
    assert [r["id"] for r in json.loads(listed.stdout)["runs"]] == [third, good]
    assert f"run {bad} is malformed" in listed.stderr
    assert "not text" in calm(run_cli("show", bad), 2).stderr
    shown = calm(run_cli("show", third, "--json"), 0)
    assert len(json.loads(shown.stdout)["rows"]) == 18
    assert f"run {third}, eval row r05 sample 0," in shown.stderr
    assert f"run {third}, eval row r07 sample 0," in shown.stderr
    diffed = calm(run_cli("diff", good, third, "--json"), 0)
    assert f"run {third}, eval row r05 sample 0," in diffed.stderr
    calm(run_cli("history", "score"), 0)
    calm(run_cli("report", third, "-o", str(tmp_path / "r.html")), 0)
    checked = json.loads(calm(run_cli("store", "check", "--json"), 1).stdout)
    assert sorted((m["run"], m["row"]) for m in checked["malformed"]) == [
        (bad, None), (third, "eval row r05 sample 0"), (third, "eval row r07 sample 0")]
