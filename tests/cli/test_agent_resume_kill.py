"""`promptctl eval --resume RUN` of an agent run whose process was killed (SIGKILL) while some
rows were mid-trajectory: the rows it finished are kept, the interrupted rows start again
with their earlier turns replayed from the cache, and the metrics are an uninterrupted
run's."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests import agentkit
from tests.fakeserver import Body, FakeOpenAI, Reply, content_text
from tests.helpers import (
    GitRepo,
    cli_process,
    eval_json,
    finish_process,
    git_identity,
    git_init,
    runs_json,
    show_rows,
    store_db,
    use_fake_openai,
)

AGENT = "agents/calc.yaml"
FAST = ("r1", "r2")  # answered in full before the kill
SLOW = ("r3", "r4", "r5", "r6")  # their second turn waits until the process is killed
ROWS = [{"id": rid, "input": {"question": f"[three] What is (3 + 4) times 5? ({rid})"},
         "expected": 35, "expected_tools": ["add", "multiply"], "tools_order": "strict"}
        for rid in (*FAST, *SLOW)]


def row_and_turn(body: Body) -> tuple[str, int]:
    """The row a request belongs to (from its question) and its turn, counted from 1."""
    question = next(content_text(m.get("content")) for m in body["messages"]
                    if m["role"] == "user")
    match = re.search(r"\((r\d+)\)", question)
    assert match is not None, question
    return match.group(1), 1 + sum(1 for m in body["messages"] if m["role"] == "assistant")


class SlowSecondTurn:
    """agentkit's model, recording each (row, turn) it is asked; while `hold` is set, the
    second turn of the SLOW rows waits for `release` (the killed process never gets it)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.hold = True
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, body: Body) -> Reply:
        row, turn = row_and_turn(body)
        with self._lock:
            self.seen.append((row, turn))
        if self.hold and row in SLOW and turn == 2:
            self.release.wait(60)
        return agentkit.answer(body)

    def waiting(self) -> set[str]:
        with self._lock:
            return {row for row, turn in self.seen if turn == 2 and row in SLOW}


@pytest.fixture
def api(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    return use_fake_openai(monkeypatch, fake_openai, "sk-test-agent-kill-1a2b3c4d5e6f")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GitRepo:
    git_identity(monkeypatch)
    root = git_init(tmp_path / "proj")
    agentkit.write_project(root)
    (root / "evalsets" / "agent.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    (root / ".gitignore").write_text(".promptctl/\n", encoding="utf-8")
    monkeypatch.chdir(root)
    repo = GitRepo(root)
    repo.commit("calc agent")
    return repo


def stored(tmp_path: Path) -> list[tuple[str, str, str]]:
    """(run id, run status, row id) of every stored eval row, straight from SQLite."""
    db = store_db(tmp_path)
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db) as conn:
            found = conn.execute(
                "SELECT runs.id, runs.status, rows.row_id FROM rows JOIN runs "
                "ON rows.run_id = runs.id WHERE rows.kind = 'eval' ORDER BY rows.row_id"
            ).fetchall()
        conn.close()
    except sqlite3.OperationalError:  # the tables are not there yet
        return []
    return [tuple(r) for r in found]


def wait_for(check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_resume_after_a_kill_mid_trajectory_replays_the_earlier_turns_from_the_cache(
        api: FakeOpenAI, repo: GitRepo, tmp_path: Path) -> None:
    model = SlowSecondTurn()
    api.responder = model
    proc = cli_process("eval", AGENT, "--concurrency", "6", "--json")
    try:
        # Killed once every SLOW row waits in its second turn (its first turn answered) and
        # the FAST rows are stored.
        wait_for(lambda: model.waiting() == set(SLOW) or proc.poll() is not None,
                 "the second turns of the slow rows")
        wait_for(lambda: {r[2] for r in stored(tmp_path)} >= set(FAST) or proc.poll() is not None,
                 "the fast rows in the store")
        assert proc.poll() is None, finish_process(proc)
        proc.send_signal(signal.SIGKILL)
        code, _, _ = finish_process(proc)
    finally:
        model.release.set()
    assert code == -signal.SIGKILL
    [(run_id, status, _), *_] = stored(tmp_path)
    assert status == "running"  # its owner is dead: the run can be resumed
    assert {r[2] for r in stored(tmp_path)} == set(FAST)
    before = {r["row_id"]: r for r in show_rows(run_id)}
    first_process = list(model.seen)
    assert sorted(first_process) == sorted(
        [(rid, turn) for rid in FAST for turn in (1, 2, 3)] + [(rid, t) for rid in SLOW
                                                               for t in (1, 2)])

    model.hold = False
    model.seen.clear()
    run, _ = eval_json("--resume", run_id)
    # The FAST rows are not sent again; each SLOW row starts over, its first turn from the
    # cache: only its second and third turns reach the server.
    assert sorted(model.seen) == sorted((rid, t) for rid in SLOW for t in (2, 3))
    assert run["id"] == run_id and run["status"] == "complete"
    assert run["n"] == len(ROWS) and run["errors"] == 0
    rows = {r["row_id"]: r for r in show_rows(run_id)}
    for rid in FAST:
        assert rows[rid] == before[rid]  # kept as the killed process stored them
    for rid in SLOW:
        assert [t["cached"] for t in rows[rid]["trajectory"]["turns"]] == [True, False, False]
        assert rows[rid]["answer"] == 35
    assert [r["id"] for r in runs_json()] == [run_id]

    # An uninterrupted run of the same rows (sending every request) has the same metrics.
    model.seen.clear()
    whole, _ = eval_json(AGENT, "--no-cache")
    assert len(model.seen) == 3 * len(ROWS)
    assert run["metrics"] == whole["metrics"]
    assert run["metrics"]["exact_match"]["value"] == 1.0
