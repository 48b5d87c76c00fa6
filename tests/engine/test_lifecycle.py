"""The engine as a library: planning, cache keys, persistence, progress and interruption."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import promptctl.engine.plan
from promptctl.config import Config
from promptctl.engine import EvalOptions, Progress, run_eval
from promptctl.engine.lifecycle import new_run_id
from promptctl.engine.plan import RequestPlan, plan_requests
from promptctl.errors import InputError
from promptctl.evalsets import load_evalset
from promptctl.prompts import load_prompt
from promptctl.providers import resolve_model
from promptctl.store import SQLiteStore
from promptctl.store.keys import cache_key
from tests.fakeserver import FakeOpenAI
from tests.helpers import echo_evalset

PROMPT = """\
name: echo
model: gpt-4o-mini
params:
  max_tokens: 8
messages:
  - role: system
    content: "Answer with the word.{% for ex in examples %} {{ ex.input.q }}{% endfor %}"
  - role: user
    content: "Question {{ q }}"
examples:
  - input: {q: zero}
    expected: zero
output:
  pattern: 'echo: Question (?P<answer>\\w+)'
  type: string
metrics: [exact_match, format_validity]
evalset: echo.jsonl
"""
WORDS = ["one", "two", "three", "four", "five", "six"]
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "echo.yaml").write_text(PROMPT, encoding="utf-8")
    (root / "echo.jsonl").write_text(echo_evalset(WORDS), encoding="utf-8")
    return root


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "runner.db")
    yield s
    s.close()


def evaluate(files: Path, store: SQLiteStore, **kwargs: Any) -> dict[str, Any]:
    config = Config(root=files)
    prompt = load_prompt(files / "echo.yaml")
    return run_eval(prompt, resolve_model("gpt-4o-mini", config), store=store, config=config,
                    **kwargs)


# -- cache keys ------------------------------------------------------------------


def test_cache_key_is_stable_for_the_same_inputs() -> None:
    a = cache_key("http://x/v1", "m", [{"role": "user", "content": "hi"}], {"temperature": 0, "seed": 1}, 0)
    b = cache_key("http://x/v1", "m", [{"role": "user", "content": "hi"}], {"seed": 1, "temperature": 0}, 0)
    assert a == b
    assert re.fullmatch(r"[0-9a-f]{64}", a)


@pytest.mark.parametrize("change", [
    {"url": "http://y/v1"},
    {"model": "m2"},
    {"messages": [{"role": "user", "content": "hi!"}]},
    {"messages": [{"role": "system", "content": "hi"}]},
    {"messages": [*MESSAGES, {"role": "user", "content": "more"}]},
    {"params": {"temperature": 0, "seed": 2}},
    {"params": {"temperature": 0.5, "seed": 1}},
    {"params": {"temperature": 0, "seed": 1, "max_tokens": 5}},
    {"sample": 1},
])
def test_cache_key_changes_with_anything_that_changes_the_answer(change: dict[str, Any]) -> None:
    base: dict[str, Any] = {"url": "http://x/v1", "model": "m", "messages": MESSAGES,
                            "params": {"temperature": 0, "seed": 1}, "sample": 0}
    args = {**base, **change}
    assert cache_key(args["url"], args["model"], args["messages"], args["params"], args["sample"]) != \
        cache_key(base["url"], base["model"], base["messages"], base["params"], base["sample"])


# -- planning --------------------------------------------------------------------


def test_plan_renders_few_shot_then_rows_with_repeats(files: Path) -> None:
    prompt = load_prompt(files / "echo.yaml")
    items = list(plan_requests(prompt, load_evalset(files / "echo.jsonl"), limit=2, repeat=2))
    assert [(i.kind, i.row.id, i.sample) for i in items] == [
        ("fewshot", "ex1", 0), ("fewshot", "ex1", 1),
        ("eval", "r1", 0), ("eval", "r1", 1), ("eval", "r2", 0), ("eval", "r2", 1)]
    assert items[2].messages == [{"role": "system", "content": "Answer with the word. zero"},
                                 {"role": "user", "content": "Question one"}]


@pytest.mark.parametrize("keep", [5000, 0], ids=["kept", "rendered-as-sent"])
def test_a_plan_yields_every_request_and_skips_what_is_answered(
        files: Path, keep: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(promptctl.engine.plan, "KEEP_REQUESTS", keep)
    prompt = load_prompt(files / "echo.yaml")
    evalset = load_evalset(files / "echo.jsonl")
    full = plan_requests(prompt, evalset, repeat=2)
    assert len(full) == (1 + len(WORDS)) * 2 == len(list(full))
    assert full.eval_rows == len(WORDS)
    first, again = next(iter(full)), next(iter(full))
    assert first.messages == again.messages
    # A small plan keeps what it rendered; a large one renders anew on each pass.
    assert (first.messages[1] is again.messages[1]) == (keep > 0)
    done = {("fewshot", "ex1", 0), ("eval", "r1", 0), ("eval", "r1", 1), ("eval", "r3", 1)}
    rest = RequestPlan(prompt, evalset, repeat=2, skip=done)
    keys = [(i.kind, i.row.id, i.sample) for i in rest]
    assert len(rest) == len(keys) == len(list(full)) - len(done)
    assert not set(keys) & done
    assert ("eval", "r3", 0) in keys and keys == list(rest.keys())
    limited = RequestPlan(prompt, evalset, limit=2)
    assert [i.row.id for i in limited if i.kind == "eval"] == ["r1", "r2"] and len(limited) == 3


def test_iterating_a_plan_holds_one_request_at_a_time(files: Path) -> None:
    import tracemalloc

    (files / "big.jsonl").write_text(echo_evalset([f"word{i}" for i in range(20_000)]),
                                     encoding="utf-8")
    prompt = load_prompt(files / "echo.yaml")
    requests = plan_requests(prompt, load_evalset(files / "big.jsonl"))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        count = sum(1 for _ in requests)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert count == 20_001
    assert peak < 1_000_000  # 20,000 rendered requests held at once take over 8 MB


def test_plan_keeps_one_copy_of_a_message_every_row_shares(files: Path) -> None:
    prompt = load_prompt(files / "echo.yaml")
    items = [i for i in plan_requests(prompt, load_evalset(files / "echo.jsonl")) if i.kind == "eval"]
    systems = {id(i.messages[0]) for i in items}
    assert len(systems) == 1  # the system message is the same text for every row
    assert len({id(i.messages[1]) for i in items}) == len(WORDS)
    assert [i.messages[1]["content"] for i in items] == [f"Question {w}" for w in WORDS]


def test_a_row_missing_a_variable_fails_before_anything_is_sent(
        files: Path, api: FakeOpenAI, store: SQLiteStore) -> None:
    with (files / "echo.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"id": "bad", "input": {"question": "oops"}, "expected": "x"}\n')
    with pytest.raises(InputError) as info:
        evaluate(files, store)
    message = str(info.value)
    assert "echo.yaml" in message
    assert "'bad'" in message
    assert "q" in message
    assert api.count == 0
    assert store.list_runs() == []


def test_run_ids_sort_by_time_and_are_unique() -> None:
    ids = [new_run_id() for _ in range(200)]
    assert len(set(ids)) == 200
    assert all(re.fullmatch(r"[0-9a-z]{14}", i) for i in ids)
    assert [i[:10] for i in ids] == sorted(i[:10] for i in ids)


def test_ids_made_in_one_millisecond_never_collide_and_keep_their_order() -> None:
    # Thousands of ids land in a few milliseconds: random tails alone would collide.
    ids = [new_run_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


# -- running ---------------------------------------------------------------------


def test_run_eval_returns_the_stored_run(files: Path, api: FakeOpenAI, store: SQLiteStore) -> None:
    seen: list[Progress] = []
    started: list[str] = []
    run = evaluate(files, store, options=EvalOptions(concurrency=2),
                   progress=lambda p: seen.append(Progress(**vars(p))), on_start=started.append)
    assert started == [run["id"]]
    assert run == store.get_run(run["id"])
    assert run["status"] == "complete"
    assert run["n_planned"] == 6
    assert run["metrics"]["exact_match"] == {**run["metrics"]["exact_match"], "value": 1.0, "n": 6}
    assert run["fewshot_metrics"]["exact_match"]["value"] == 1.0
    assert run["params"] == {"temperature": 0, "max_tokens": 8}
    assert run["options"]["concurrency"] == 2
    assert run["summary"]["n"] == 6 and run["summary"]["fewshot_n"] == 1
    assert [p.done for p in seen] == list(range(1, 8))
    assert all(p.total == 7 for p in seen)
    assert seen[-1].errors == 0 and seen[-1].cached == 0
    assert api.count == 7
    assert api.max_in_flight <= 2


def test_rows_are_written_while_the_run_goes_on(
        files: Path, api: FakeOpenAI, store: SQLiteStore, tmp_path: Path) -> None:
    api.latency = 0.2
    reader = SQLiteStore(tmp_path / "runner.db")
    stored_at: list[int] = []
    try:
        run = evaluate(files, store, options=EvalOptions(concurrency=1),
                       progress=lambda p: stored_at.append(
                           sum(len(list(reader.iter_rows(r["id"]))) for r in reader.list_runs())))
    finally:
        reader.close()
    assert len(stored_at) == 7
    # Rows reach the file in batches at most half a second apart, not only at the end.
    assert stored_at[4] > 0
    assert len(list(store.iter_rows(run["id"]))) == 7


def test_an_interrupted_run_keeps_its_rows(files: Path, api: FakeOpenAI, store: SQLiteStore) -> None:
    def progress(state: Progress) -> None:
        if state.done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(files, store, options=EvalOptions(concurrency=1), progress=progress)
    (run,) = store.list_runs()
    assert run["status"] == "interrupted"
    assert [(r["kind"], r["row_id"]) for r in store.iter_rows(run["id"])] == [
        ("fewshot", "ex1"), ("eval", "r1"), ("eval", "r2")]
    assert run["summary"]["n"] == 2
    assert run["finished_at"] is not None
    assert api.count == 3


def test_cache_is_keyed_per_endpoint(files: Path, api: FakeOpenAI, store: SQLiteStore,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    evaluate(files, store)
    assert api.count == 7
    with FakeOpenAI() as other:
        monkeypatch.setenv("OPENAI_BASE_URL", other.base_url)
        evaluate(files, store)
        assert other.count == 7  # another server: the first one's answers are not reused
    assert api.count == 7


def test_cached_rows_do_not_count_cost(files: Path, api: FakeOpenAI, store: SQLiteStore) -> None:
    seen: list[float] = []
    first = evaluate(files, store)
    again = evaluate(files, store, progress=lambda p: seen.append(p.spent_usd))
    assert first["summary"]["cost_usd"] > 0
    assert seen[-1] == 0.0  # nothing was paid for this time
    assert again["summary"]["cached"] + again["summary"]["fewshot_cached"] == 7
    assert again["summary"]["spent_usd"] == 0.0
    assert first["summary"]["spent_usd"] == first["summary"]["cost_usd"]
    # What the answers cost stays a property of the prompt, cached or not.
    assert again["summary"]["cost_usd"] == first["summary"]["cost_usd"]


# -- an allowance: every HTTP attempt counted, retries included ----------------------------


def test_an_allowance_sends_no_attempt_past_it(files: Path, api: FakeOpenAI,
                                               store: SQLiteStore) -> None:
    from promptctl.allowance import Allowance

    allowance = Allowance(requests=5)
    run = evaluate(files, store, options=EvalOptions(concurrency=2, allowance=allowance))
    assert api.count == 5 and allowance.sent == 5 and allowance.refused == 2
    errors = [r["error"] for r in store.iter_rows(run["id"]) if r.get("error")]
    assert len(errors) == 2 and all(e.startswith("budget reached") for e in errors)
    assert all(r["attempts"] == 0 for r in store.iter_rows(run["id"]) if r.get("error"))


def test_retries_are_taken_from_the_allowance(files: Path, api: FakeOpenAI,
                                              store: SQLiteStore) -> None:
    from promptctl.allowance import Allowance

    api.fail_next(4, status=429, retry_after=0.01)
    allowance = Allowance(requests=9)
    run = evaluate(files, store, options=EvalOptions(concurrency=1, allowance=allowance))
    # 7 requests and 4 retries wanted, 9 allowed.
    assert api.count == 9 == allowance.sent
    rows = list(store.iter_rows(run["id"]))
    assert sum(r["attempts"] for r in rows) == 9
    assert sum(1 for r in rows if r.get("error")) == 2 and allowance.cut


def test_a_failure_on_the_last_allowed_attempt_is_not_retried(files: Path, api: FakeOpenAI,
                                                              store: SQLiteStore) -> None:
    from promptctl.allowance import Allowance

    api.fail_next(1, status=500)
    allowance = Allowance(requests=1)
    run = evaluate(files, store, options=EvalOptions(concurrency=1, limit=1, allowance=allowance))
    assert api.count == 1
    row = next(r for r in store.iter_rows(run["id"]) if r.get("error"))
    assert row["error"].startswith("HTTP 500") and "not retried: budget reached" in row["error"]
    assert row["attempts"] == 1


def test_a_dollar_allowance_counts_each_attempt_at_its_worst_case(
        files: Path, api: FakeOpenAI, store: SQLiteStore) -> None:
    from promptctl.allowance import Allowance
    from promptctl.engine.estimate import estimate

    config = Config(root=files)
    prompt = load_prompt(files / "echo.yaml")
    resolved = resolve_model("gpt-4o-mini", config)
    worst = estimate(prompt, load_evalset(files / "echo.jsonl"), resolved, config=config,
                     store=store, options=EvalOptions())["estimated_cost_usd_max"]
    # Room for about three of the seven requests at their worst case; a retry is charged
    # like a first try.
    allowance = Allowance(usd=worst * 3 / 7)
    api.fail_next(1, status=429, retry_after=0.01)
    run_eval(prompt, resolved, store=store, config=config,
             options=EvalOptions(concurrency=1, allowance=allowance))
    assert 0 < api.count == allowance.sent <= 3
    assert allowance.charged_usd <= worst * 3 / 7 + 1e-12 and allowance.cut


def test_a_run_under_an_allowance_refuses_batch(files: Path, api: FakeOpenAI,
                                                store: SQLiteStore) -> None:
    from promptctl.allowance import Allowance

    with pytest.raises(InputError, match="cannot use --batch"):
        evaluate(files, store, options=EvalOptions(batch=True, allowance=Allowance(requests=10)))
    assert api.count == 0


def test_a_dropped_connection_on_the_last_allowed_attempt_is_not_retried(
        files: Path, api: FakeOpenAI, store: SQLiteStore) -> None:
    from promptctl.allowance import Allowance

    api.drop_next(1)
    allowance = Allowance(requests=1)
    run = evaluate(files, store, options=EvalOptions(concurrency=1, limit=1, allowance=allowance))
    assert api.count == 1 and allowance.sent == 1 and allowance.refused == 2
    rows = list(store.iter_rows(run["id"]))
    dropped = next(r for r in rows if r["attempts"] == 1)
    assert "the attempt failed" in dropped["error"]
    assert "not retried: budget reached" in dropped["error"]
