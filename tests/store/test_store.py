"""Every store method behaves the same on SQLite and PostgreSQL (the fixtures run each test on both)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from promptctl.engine.lifecycle import new_run_id
from promptctl.errors import InputError
from promptctl.store import RowRecord, RunRecord, Store, is_run_id, open_store, utcnow


def run_record(run_id: str, **extra: Any) -> RunRecord:
    record: dict[str, Any] = {
        "id": run_id, "created_at": utcnow(), "status": "running", "prompt_name": "p",
        "prompt_path": "prompts/p.yaml", "prompt_version": "v1", "prompt_source": "src",
        "git_commit": "abc", "git_dirty": False, "git_branch": "main", "model": "gpt-4o-mini",
        "endpoint": "openai", "base_url": "https://api.openai.com/v1",
        "params": {"temperature": 0, "max_tokens": 8}, "evalset_path": "evalsets/e.jsonl",
        "evalset_version": "e1", "n_planned": 2, "options": {"repeat": 1}, **extra,
    }
    return record  # type: ignore[return-value]


def row(run_id: str, row_id: str, position: int, **extra: Any) -> RowRecord:
    record: dict[str, Any] = {
        "run_id": run_id, "kind": "eval", "position": position, "row_id": row_id, "sample": 0,
        "input": {"text": f"t{row_id}"}, "messages": [{"role": "user", "content": row_id}],
        "created_at": utcnow(), "cached": False, "attempts": 1, **extra,
    }
    return record  # type: ignore[return-value]


def test_run_round_trip(any_store: Store) -> None:
    any_store.create_run(run_record("01aaa"))
    assert any_store.has_run("01aaa")
    assert not any_store.has_run("01aab")
    any_store.update_run("01aaa", status="complete",
                         metrics={"rmse": {"value": 1.5, "n": 2, "ci95": None}},
                         summary={"n": 2, "errors": 0})
    run = any_store.get_run("01aaa")
    assert run["status"] == "complete"
    assert run["git_dirty"] is False
    assert run["params"] == {"temperature": 0, "max_tokens": 8}
    assert run["metrics"] == {"rmse": {"value": 1.5, "n": 2, "ci95": None}}
    assert run["summary"] == {"n": 2, "errors": 0}
    assert run["options"] == {"repeat": 1}
    assert run["fewshot_metrics"] is None
    # The columns m002 added: defaults, then values.
    assert (run["owner"], run["coverage"], run["errors"], run["parent_run"], run["kind"]) == (
        None, None, None, None, "prompt")
    any_store.update_run("01aaa", coverage="partial", errors=3, parent_run="01zzz", kind="pipeline")
    run = any_store.get_run("01aaa")
    assert (run["coverage"], run["errors"], run["parent_run"], run["kind"]) == (
        "partial", 3, "01zzz", "pipeline")


def test_json_keeps_key_order_and_exact_values(any_store: Store) -> None:
    # jsonb would sort these keys; the reports list metrics in the order they were given.
    metrics = {"rmse": {"value": 0.1 + 0.2, "n": 3}, "exact_match": {"value": 1e-300, "n": 3},
               "accuracy": {"value": -0.0, "n": 3}}
    any_store.create_run(run_record("01aaa", metrics=metrics))
    stored = any_store.get_run("01aaa")["metrics"]
    assert stored is not None
    assert list(stored) == ["rmse", "exact_match", "accuracy"]
    assert stored["rmse"]["value"] == 0.1 + 0.2
    assert stored["exact_match"]["value"] == 1e-300


def test_unknown_run_fields_are_refused(any_store: Store) -> None:
    any_store.create_run(run_record("01aaa"))
    with pytest.raises(ValueError, match="status; DROP"):
        any_store.update_run("01aaa", **{"status; DROP TABLE runs": "x"})


def test_rows_round_trip_and_expected_none_versus_missing(any_store: Store) -> None:
    any_store.create_run(run_record("01aaa"))
    any_store.write_rows([
        row("01aaa", "r2", 1, expected=None, completion="x", answer=None, valid=False,
            scores={"format_validity": 0.0}),
        row("01aaa", "r1", 0, expected={"k": [1, 2]}, completion="y", answer={"k": [1, 2]},
            valid=True, scores={"exact_match": 1.0}, prompt_tokens=3, completion_tokens=1,
            latency_ms=12.5, cached=True, judges={"j": {"score": 1}},
            steps={"s1": {"completion": "z"}}),
        row("01aaa", "r3", 2, error="HTTP 500: boom", attempts=5),
        {**row("01aaa", "ex1", 0, expected=0), "kind": "fewshot"},
    ])
    rows = list(any_store.iter_rows("01aaa"))
    assert [(r["kind"], r["row_id"]) for r in rows] == [
        ("fewshot", "ex1"), ("eval", "r1"), ("eval", "r2"), ("eval", "r3")]
    by_id = {r["row_id"]: r for r in rows}
    assert by_id["r1"]["expected"] == {"k": [1, 2]}
    assert by_id["r1"]["answer"] == {"k": [1, 2]}
    assert by_id["r1"]["valid"] is True
    assert by_id["r1"]["cached"] is True
    assert by_id["r1"]["latency_ms"] == 12.5
    assert by_id["r1"]["judges"] == {"j": {"score": 1}}
    assert by_id["r1"]["steps"] == {"s1": {"completion": "z"}}
    assert by_id["r2"]["has_expected"] is True and by_id["r2"]["expected"] is None
    assert by_id["r2"]["valid"] is False
    assert by_id["r2"]["judges"] is None
    assert by_id["r3"]["has_expected"] is False
    assert by_id["r3"]["error"] == "HTTP 500: boom"
    assert by_id["r3"]["attempts"] == 5
    assert by_id["r3"]["valid"] is None
    assert by_id["ex1"]["expected"] == 0
    assert [r["row_id"] for r in any_store.iter_rows("01aaa", kind="eval")] == ["r1", "r2", "r3"]


def test_both_stores_give_the_same_row_dicts(tmp_path: Path, pg_url: str) -> None:
    rows = [row("01aaa", "r1", 0, expected=None, completion="é\u2028", valid=True,
                scores={"b": 1, "a": 0.5}, latency_ms=1.25, system_fingerprint="fp"),
            {**row("01aaa", "ex", 0), "kind": "fewshot", "sample": 1, "error": "x"}]
    got = []
    run = run_record("01aaa")
    for url in (f"sqlite:///{tmp_path / 'r.db'}", pg_url):
        store = open_store(url)
        store.create_run(run)
        store.write_rows(rows)
        got.append((store.get_run("01aaa"), list(store.iter_rows("01aaa"))))
        store.close()
    assert got[0] == got[1]
    assert [list(r) for r in got[0][1]] == [list(r) for r in got[1][1]]  # key order too


def test_missing_defaults_are_filled_in(any_store: Store) -> None:
    any_store.create_run(run_record("01aaa"))
    bare = row("01aaa", "r1", 0)
    for key in ("sample", "cached", "attempts"):
        del bare[key]  # type: ignore[misc]
    any_store.write_rows([bare])
    (only,) = any_store.iter_rows("01aaa")
    assert (only["sample"], only["cached"], only["attempts"]) == (0, False, 1)


def test_rewriting_a_row_replaces_it(any_store: Store) -> None:
    any_store.create_run(run_record("01aaa"))
    any_store.write_rows([row("01aaa", "r1", 0, error="timeout", attempts=5)])
    any_store.write_rows([row("01aaa", "r1", 0, completion="ok")])
    (only,) = any_store.iter_rows("01aaa")
    assert only["error"] is None and only["completion"] == "ok" and only["attempts"] == 1


def test_a_large_batch_inserts_and_replaces_as_a_small_one_does(any_store: Store) -> None:
    any_store.create_run(run_record("01aaa"))
    any_store.write_rows([row("01aaa", f"r{i}", i, error="timeout") for i in range(300)])
    again = [row("01aaa", f"r{i}", i, completion=f"c{i}") for i in range(250)]
    again.append(row("01aaa", "r0", 0, completion="last wins"))
    any_store.write_rows(again, cache=[("k", {"text": "t"})])
    rows = list(any_store.iter_rows("01aaa"))
    assert len(rows) == 300 and any_store.cache_get("k") == {"text": "t"}
    assert rows[0]["completion"] == "last wins" and rows[0]["error"] is None
    assert rows[249]["completion"] == "c249" and rows[250]["error"] == "timeout"


def test_get_run_by_prefix(any_store: Store) -> None:
    for run_id in ("01abc00", "01abd00", "01abd01"):
        any_store.create_run(run_record(run_id))
    assert any_store.get_run("01abc")["id"] == "01abc00"
    assert any_store.get_run("01abd00")["id"] == "01abd00"  # a full id wins over longer ids
    with pytest.raises(InputError, match="ambiguous"):
        any_store.get_run("01abd")
    with pytest.raises(InputError, match="ambiguous"):
        any_store.get_run("01ab")
    with pytest.raises(InputError, match="no run"):
        any_store.get_run("01abe")
    with pytest.raises(InputError, match="no run"):
        any_store.get_run("zz")
    with pytest.raises(InputError, match="empty run id"):
        any_store.get_run(" ")


def test_run_ids_are_of_the_form_the_store_names() -> None:
    made = {new_run_id() for _ in range(50)}
    assert all(is_run_id(r) for r in made) and len(made) == 50
    assert not any(is_run_id(r) for r in ("01kabc", "01kabcdefghjkmx", "01KABCDEFGHJKM",
                                          "01kabcdefghjki"))


def test_an_id_that_starts_other_ids_never_stands_for_them(any_store: Store) -> None:
    mine = "01kabcdefghjkm"  # of the form promptctl makes
    any_store.create_run(run_record(mine))
    any_store.create_run(run_record("01kabc"))  # another writer's run, its id a prefix of mine
    with pytest.raises(InputError, match="ambiguous") as found:
        any_store.get_run("01kabc")  # what a user types for mine: no longer the other run
    assert f"01kabc, {mine}" in found.value.message
    assert "store check" in (found.value.fix or "")
    any_store.create_run(run_record(mine + "x"))  # an id that starts with a whole id
    assert any_store.get_run(mine)["id"] == mine  # a whole id of promptctl's form resolves
    for i in range(6):
        any_store.create_run(run_record(f"01kabcz{i}"))
    with pytest.raises(InputError, match="ambiguous") as many:
        any_store.get_run("01kab")
    assert many.value.message.endswith(", ...)") and many.value.message.count(", ") == 5


def test_list_runs_newest_first_with_filter_and_limit(any_store: Store) -> None:
    any_store.create_run(run_record("01a"))
    any_store.create_run(run_record("01b", prompt_name="q"))
    any_store.create_run(run_record("01c"))
    assert [r["id"] for r in any_store.list_runs()] == ["01c", "01b", "01a"]
    assert [r["id"] for r in any_store.list_runs("p")] == ["01c", "01a"]
    assert [r["id"] for r in any_store.list_runs(limit=1)] == ["01c"]


def test_list_runs_reads_only_the_columns_asked_for(any_store: Store) -> None:
    any_store.create_run(run_record("01a", git_dirty=True))
    any_store.update_run("01a", metrics={"rmse": {"value": 1.0, "n": 1, "ci95": None}})
    (run,) = any_store.list_runs("p", columns=("id", "git_dirty", "metrics"))
    assert run == {"id": "01a", "git_dirty": True,
                   "metrics": {"rmse": {"value": 1.0, "n": 1, "ci95": None}}}
    with pytest.raises(ValueError, match="prompt_sauce"):
        any_store.list_runs(columns=("id", "prompt_sauce"))


def test_cache_round_trip_stats_and_clear(any_store: Store) -> None:
    assert any_store.cache_get("k1") is None
    any_store.cache_put([("k1", {"text": "héllo", "prompt_tokens": 3}), ("k2", {"text": "b"})])
    assert any_store.cache_get("k1") == {"text": "héllo", "prompt_tokens": 3}
    any_store.cache_put([("k1", {"text": "new"}), ("k1", {"text": "newer"})])
    assert any_store.cache_get("k1") == {"text": "newer"}
    any_store.cache_put([])
    stats = any_store.cache_stats()
    assert stats["entries"] == 2
    assert stats["response_bytes"] == len('{"text":"newer"}') + len('{"text":"b"}')
    assert stats["store_bytes"] > 0 and stats["oldest"] is not None
    assert any_store.cache_clear(before="2000-01-01T00:00:00.000Z") == 0
    assert any_store.cache_clear() == 2
    assert any_store.cache_get("k2") is None


def test_rows_and_their_cache_entries_commit_together_or_not_at_all(any_store: Store) -> None:
    any_store.create_run(run_record("01aaa"))
    any_store.write_rows([row("01aaa", "r1", 0)], cache=[("k1", {"text": "a"})])
    assert [r["row_id"] for r in any_store.iter_rows("01aaa")] == ["r1"]
    assert any_store.cache_get("k1") == {"text": "a"}
    bad = row("01aaa", "r2", 1)
    del bad["messages"]  # type: ignore[misc]  # NOT NULL: the insert fails
    with pytest.raises(Exception, match="(?i)not.null|null value"):
        any_store.write_rows([row("01aaa", "r3", 2), bad], cache=[("k2", {"text": "b"})])
    assert any_store.cache_get("k2") is None  # rolled back with the rows
    assert [r["row_id"] for r in any_store.iter_rows("01aaa")] == ["r1"]
    # The store is still usable afterwards.
    any_store.write_rows([row("01aaa", "r2", 1)])
    assert [r["row_id"] for r in any_store.iter_rows("01aaa")] == ["r1", "r2"]


def test_run_totals_and_answered_columns_match_the_rows(any_store: Store) -> None:
    any_store.create_run(run_record("01aaa"))
    any_store.write_rows([
        row("01aaa", "r1", 0, scores={"exact_match": 1}, prompt_tokens=10, completion_tokens=2,
            latency_ms=5.0, system_fingerprint="fp1", response_model="m1", completion="a"),
        row("01aaa", "r2", 1, scores={"exact_match": 1}, prompt_tokens=20, completion_tokens=3,
            cached=True, latency_ms=7.0, system_fingerprint="fp2", response_model="m1",
            completion="b"),
        row("01aaa", "r3", 2, error="HTTP 500", attempts=5),
        row("01aaa", "r4", 3, scores={"exact_match": 0}, prompt_tokens=1, completion_tokens=1,
            attempts=3),
        {**row("01aaa", "ex1", 0, scores=None, prompt_tokens=4, completion_tokens=1),
         "kind": "fewshot"},
    ])
    totals = any_store.run_totals("01aaa")
    assert totals["eval"] == {"n": 4, "errors": 1, "cached": 1, "retries": 4 + 2,
                              "prompt_tokens": 31, "completion_tokens": 6,
                              "spent_prompt_tokens": 11, "spent_completion_tokens": 3,
                              "no_text": 1}  # r4 answered without text
    assert totals["fewshot"]["n"] == 1 and totals["fewshot"]["prompt_tokens"] == 4
    assert any_store.run_totals("01nope")["eval"]["n"] == 0
    assert list(any_store.iter_scores("01aaa", "eval")) == [{"exact_match": 1}, {"exact_match": 1},
                                                            {"exact_match": 0}]
    assert list(any_store.iter_scores("01aaa", "fewshot")) == [{}]
    assert list(any_store.iter_scores("01nope", "eval")) == []
    assert any_store.answered_column("01aaa", "latency_ms") == [5.0, 7.0]
    assert any_store.answered_column("01aaa", "system_fingerprint") == ["fp1", "fp2"]
    assert any_store.answered_keys("01aaa") == {("eval", "r1", 0), ("eval", "r2", 0),
                                                ("eval", "r4", 0), ("fewshot", "ex1", 0)}
    with pytest.raises(ValueError):
        any_store.answered_column("01aaa", "error; DROP TABLE rows")  # type: ignore[arg-type]


def test_score_columns_order_by_row_id_and_share_equal_scores(any_store: Store) -> None:
    any_store.create_run(run_record("01aaa"))
    any_store.create_run(run_record("01bbb"))
    any_store.write_rows([
        row("01aaa", "b", 0, scores={"exact_match": 1}),
        row("01aaa", "a", 1, sample=1, scores={"exact_match": 0}),
        row("01aaa", "a", 1, scores={"exact_match": 1}),
        row("01aaa", "B", 2, error="x"),
        row("01bbb", "z", 0, scores={"exact_match": 1}),
    ])
    cols = any_store.score_columns("01aaa")
    # Byte order, as SQLite's: "B" before "a" before "b".
    assert cols["row_id"] == ["B", "a", "a", "b"]
    assert cols["sample"] == [0, 0, 1, 0]
    assert cols["ok"] == [False, True, True, True]
    assert cols["scores"] == [None, {"exact_match": 1}, {"exact_match": 0}, {"exact_match": 1}]
    assert cols["scores"][1] is cols["scores"][3]  # one shared dict for equal scores
    both = any_store.score_columns_of(["01aaa", "01bbb"])
    assert both[0] == cols and both[1]["row_id"] == ["z"]
    assert any_store.score_columns("01aaa", kind="fewshot") == {
        "row_id": [], "sample": [], "ok": [], "scores": []}


def test_rows_by_id_reads_every_sample_of_the_rows_asked_for(any_store: Store) -> None:
    any_store.create_run(run_record("01aaa"))
    any_store.write_rows([row("01aaa", f"r{i}", i, answer=i, expected=i) for i in range(700)]
                         + [row("01aaa", "r5", 5, sample=1, answer=-5)])
    found = any_store.rows_by_id("01aaa", ["r5", "r650", "nope"], columns=("answer",))
    assert [(r["row_id"], r["sample"], r["answer"]) for r in found] == [
        ("r5", 0, 5), ("r5", 1, -5), ("r650", 0, 650)]
    assert set(found[0]) == {"run_id", "kind", "row_id", "sample", "expected", "answer",
                             "has_expected"}
    full = any_store.rows_by_id("01aaa", [f"r{i}" for i in range(600)])
    assert len(full) == 601 and full[0]["messages"] == [{"role": "user", "content": "r0"}]
    with pytest.raises(ValueError, match="nonsense"):
        any_store.rows_by_id("01aaa", ["r1"], columns=("nonsense",))


def test_iterating_a_large_run_keeps_the_order_and_allows_other_calls(any_store: Store) -> None:
    any_store.create_run(run_record("01aaa"))
    n = 4500  # several of PostgreSQL's pages
    any_store.write_rows([row("01aaa", f"r{(i * 7919) % n}", i, sample=i % 2) for i in range(n)])
    seen = []
    for r in any_store.iter_rows("01aaa"):
        if len(seen) % 1000 == 0:
            any_store.has_run("01aaa")  # the connection is free between rows
        seen.append((r["position"], r["sample"]))
    assert seen == [(i, i % 2) for i in range(n)]


def test_paged_iteration_gives_the_rows_of_iter_rows_in_their_order(any_store: Store) -> None:
    # Pages of 50 keys: three samples a row make every page end inside a row's samples, and
    # the few-shot rows come first, in a page shared with eval rows.
    any_store.create_run(run_record("01aaa"))
    any_store.write_rows([row("01aaa", f"f{i}", i, kind="fewshot") for i in range(3)]
                         + [row("01aaa", f"r{(i * 37) % 130}", i, sample=s, completion="x" * i)
                            for i in range(60) for s in range(3)])
    for kind in (None, "eval", "fewshot"):
        paged = list(any_store.iter_rows_paged("01aaa", kind))
        assert paged == list(any_store.iter_rows("01aaa", kind))
        assert len(paged) == {None: 183, "eval": 180, "fewshot": 3}[kind]
    assert list(any_store.iter_rows_paged("01nope")) == []


def test_add_run_is_one_transaction(any_store: Store) -> None:
    rows = [row("01new", "r1", 0), row("01new", "r2", 1)]
    assert any_store.add_run(run_record("01new", status="complete"), rows)
    assert [r["row_id"] for r in any_store.iter_rows("01new")] == ["r1", "r2"]
    # A run already stored is left as it is, its rows too: add_run says so, no error.
    assert not any_store.add_run(run_record("01new", status="failed"), [row("01new", "r9", 9)])
    assert any_store.get_run("01new")["status"] == "complete"
    assert [r["row_id"] for r in any_store.iter_rows("01new")] == ["r1", "r2"]
    broken = row("01bad", "r1", 0)
    del broken["input"]  # type: ignore[misc]
    with pytest.raises(Exception, match="(?i)not.null|null value"):
        any_store.add_run(run_record("01bad"), [row("01bad", "r0", 0), broken])
    assert not any_store.has_run("01bad")  # the run went with its rows


def test_a_second_connection_sees_the_writes(any_url: str) -> None:
    a, b = open_store(any_url), open_store(any_url)
    try:
        a.create_run(run_record("01x"))
        a.write_rows([row("01x", "r1", 0)], cache=[("k", {"text": "t"})])
        assert [r["row_id"] for r in b.iter_rows("01x")] == ["r1"]
        assert b.cache_get("k") == {"text": "t"}  # one shared cache
    finally:
        a.close()
        b.close()


# -- claiming a run -------------------------------------------------------------------------


def test_claim_run_is_a_null_safe_compare_and_swap(any_store: Store) -> None:
    any_store.create_run(run_record("01aaa", status="interrupted"))
    assert any_store.claim_run("01aaa", "h:1:a", None)
    run = any_store.get_run("01aaa")
    assert (run["owner"], run["status"]) == ("h:1:a", "running")
    assert not any_store.claim_run("01aaa", "h:2:b", None)  # owned: a NULL expectation fails
    assert not any_store.claim_run("01aaa", "h:2:b", "h:9:z")  # a wrong owner fails
    assert any_store.claim_run("01aaa", "h:2:b", "h:1:a")  # taking over from a known owner
    assert not any_store.release_run("01aaa", "h:1:a")
    assert any_store.release_run("01aaa", "h:2:b")
    assert any_store.get_run("01aaa")["owner"] is None
    assert any_store.claim_run("01aaa", "h:3:c", None)
    assert not any_store.claim_run("01nope", "h:3:c", None)


CLAIM_SCRIPT = """\
import os, sys, time
from promptctl.store import open_store
url, run_id, expected, go = sys.argv[1:5]
store = open_store(url)
while not os.path.exists(go):
    time.sleep(0.001)
won = store.claim_run(run_id, f"host:{os.getpid()}:t", expected or None)
print("won" if won else "lost", flush=True)
"""


@pytest.mark.parametrize("expected", [None, "host:1:dead"])
def test_processes_racing_for_a_run_have_exactly_one_winner(any_url: str, tmp_path: Path,
                                                            expected: str | None) -> None:
    store = open_store(any_url)
    store.create_run(run_record("01race", status="interrupted", owner=expected))
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", CLAIM_SCRIPT, any_url, "01race",
                               expected or "", str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=dict(os.environ))
             for _ in range(6)]
    try:
        time.sleep(1.0)  # every process connected and waiting (a late one only loses)
        go.touch()
        results = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    outcomes = [out.strip() for out, _ in results]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    assert sorted(outcomes) == ["lost"] * 5 + ["won"]
    owner = store.get_run("01race")["owner"]
    assert owner is not None and owner != expected
    winner = procs[outcomes.index("won")].pid
    assert owner == f"host:{winner}:t"
    store.close()
