"""`eval --batch` against a batch server and a store that cannot be trusted: long and hostile
result lines, malformed batch objects, a batch that never finishes, and a stored batch state
edited between an interruption and its resume. Each ends as error rows or a clear error
(exit 2 or 3) that leaves the run resumable, never as a crash (exit 4), a hang, or requests
submitted twice."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from promptctl.config import Config
from promptctl.engine import EvalOptions, Progress, resume_eval, run_eval
from promptctl.engine.batch import COMPLETION_WINDOW_SECONDS, BatchLimits, poll_deadline
from promptctl.errors import InputError, ProviderError
from promptctl.prompts import load_prompt
from promptctl.providers import resolve_model
from promptctl.providers.base import BatchInfo, ReadLimits
from promptctl.providers.batch import OpenAIBatches
from promptctl.providers.openai import OpenAIProvider
from promptctl.render.terminal import batch_note
from promptctl.runs import read_run
from promptctl.store import SQLiteStore
from tests.fakeserver import FakeOpenAI
from tests.helpers import ECHO_WORDS, invoke, store_db
from tests.render.test_schema import check

pytestmark = pytest.mark.usefixtures("quick_polls")

R1, R3 = '["eval","r1",0]', '["eval","r3",0]'


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    # The store the CLI of these tests opens too (PROMPTCTL_STORE, set by `isolated`).
    path = store_db(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = SQLiteStore(path)
    yield s
    s.close()


def batched(root: Path, store: SQLiteStore, **kwargs: Any) -> Any:
    config = Config(root=root)
    prompt = load_prompt(root / "prompts" / "echo.yaml")
    return run_eval(prompt, resolve_model("gpt-4o-mini", config), store=store, config=config,
                    options=EvalOptions(batch=True), **kwargs)


def rows(store: SQLiteStore, run_id: str) -> dict[str, dict[str, Any]]:
    return {str(r["row_id"]): dict(r) for r in store.iter_rows(run_id)}


def uploads(api: FakeOpenAI) -> int:
    return sum(1 for r in api.requests if r.method == "POST" and r.path == "/v1/files")


def polls(api: FakeOpenAI) -> int:
    return sum(1 for r in api.requests if r.method == "GET" and r.path.startswith("/v1/batches/"))


def options_of(store: SQLiteStore, run_id: str) -> dict[str, Any]:
    return dict(store.get_run(run_id).get("options") or {})


def only_run(store: SQLiteStore) -> dict[str, Any]:
    (run,) = store.list_runs()
    return dict(store.get_run(str(run["id"])))


def rewrite_output(api: FakeOpenAI, change: Callable[[list[bytes]], list[bytes]]) -> None:
    """Serve each batch output file's lines through `change`."""
    def reshape(file_id: str, content: bytes) -> bytes:
        if api.files[file_id]["purpose"] != "batch_output":
            return content
        return b"".join(line + b"\n" for line in change(content.splitlines()))

    api.file_reshape = reshape


def rewrite_line(custom: str, change: Callable[[dict[str, Any]], Any]) -> Callable[[list[bytes]],
                                                                                 list[bytes]]:
    """Lines with the result line of `custom` replaced by `change` of it (bytes as they are)."""
    def lines(old: list[bytes]) -> list[bytes]:
        new = []
        for raw in old:
            doc = json.loads(raw)
            if doc["custom_id"] != custom:
                new.append(raw)
                continue
            changed = change(doc)
            new.append(changed if isinstance(changed, bytes) else json.dumps(changed).encode())
        return new

    return lines


# -- reading files: linear in their size, capped per line and per file ----------------------


def test_lines_are_split_at_each_newline_and_a_line_over_the_cap_is_skipped(
        server: FakeOpenAI) -> None:
    # Long enough to span many chunks of the download; the cap is exactly its length.
    long = json.dumps({"custom_id": "long", "pad": "x" * 300_000}).encode()
    too_long = json.dumps({"custom_id": "too long", "pad": "x" * 300_001}).encode()
    content = (b'{"custom_id": "a"}\n\n' + long + b"\n" + too_long + b'\n{"custom_id": "b"}\n'
               + b'[1]\n{"custom_id": "c"}')  # no newline after the last line
    file_id = server._new_file(content, "out.jsonl", "batch_output")

    async def read() -> list[tuple[str | None, str]]:
        api = OpenAIBatches(OpenAIProvider("openai", server.base_url, "k", concurrency=1,
                                           max_retries=0))
        api.limits = ReadLimits(line_bytes=len(long))
        try:
            return [(cid, str(result)) async for cid, result in
                    api.results(BatchInfo(id="batch_x", status="completed", output_file_id=file_id))]
        finally:
            await api.aclose()

    malformed = "the batch gave a malformed result line for this request"
    assert asyncio.run(read()) == [
        ("a", malformed),
        ("long", malformed),
        (None, f"a line of its file {file_id} is over {len(long):,} bytes "
               "($PROMPTCTL_BATCH_MAX_LINE_BYTES) and was not read"),
        ("b", malformed),
        (None, f"a line of its file {file_id} is a JSON array, not an object"),
        ("c", malformed),
    ]


def test_a_result_line_over_the_cap_is_an_error_row_naming_the_cap(
        api: FakeOpenAI, echo_project: Path, store: SQLiteStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTCTL_BATCH_MAX_LINE_BYTES", "3000")
    api.add_rule("three", "three " * 1000)  # a line of about 6,500 bytes
    api.add_rule("four", "four " * 400)  # about 2,500: under the cap
    run = batched(echo_project, store)
    found = rows(store, run["id"])
    (batch_id,) = api.batches
    assert found["r3"]["error"] == (
        f"the batch {batch_id} ended (completed) without a result for this request; left out of "
        f"its result files: 1 unreadable line(s) (first: a line of its file "
        f"{api.batches[batch_id]['output_file_id']} is over 3,000 bytes "
        "($PROMPTCTL_BATCH_MAX_LINE_BYTES) and was not read)")
    assert found["r4"]["error"] is None and found["r4"]["completion"] == "four " * 400
    assert [found[f"r{i}"]["answer"] for i in (1, 2, 5)] == ["one", "two", "five"]
    assert run["errors"] == 1
    assert run["summary"]["batch"]["batches"][0]["ignored"] == 1


def test_a_result_file_over_the_cap_stops_the_run_which_resumes(
        api: FakeOpenAI, echo_project: Path, store: SQLiteStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTCTL_BATCH_MAX_RESULT_BYTES", "300")
    result = invoke("eval", "prompts/echo.yaml", "--batch", code=3)
    assert "the file is over 300 bytes ($PROMPTCTL_BATCH_MAX_RESULT_BYTES); stopped reading it" \
        in result.stderr
    assert "raise PROMPTCTL_BATCH_MAX_RESULT_BYTES" in result.stderr
    run_id = only_run(store)["id"]
    assert f"promptctl eval --resume {run_id}" in result.stderr
    monkeypatch.delenv("PROMPTCTL_BATCH_MAX_RESULT_BYTES")
    resumed = json.loads(invoke("eval", "--resume", run_id, "--json").stdout)["runs"][0]
    assert resumed["n"] == 5 and resumed["errors"] == 0
    assert len(api.batch_creations) == 1 and resumed["batch"]["reattached"] == 1


def test_a_download_cut_short_is_a_provider_error_and_the_run_resumes(
        api: FakeOpenAI, echo_project: Path, store: SQLiteStore) -> None:
    api.file_cut_at = 40
    result = invoke("eval", "prompts/echo.yaml", "--batch", code=3)
    assert "/content failed:" in result.stderr
    run_id = only_run(store)["id"]
    assert f"promptctl eval --resume {run_id}" in result.stderr
    api.file_cut_at = None
    resumed = json.loads(invoke("eval", "--resume", run_id, "--json").stdout)["runs"][0]
    assert resumed["n"] == 5 and resumed["errors"] == 0 and len(api.batch_creations) == 1


# -- result lines: each field checked, a bad one an error row --------------------------------


def deep(doc: dict[str, Any]) -> bytes:
    return b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(("change", "error"), [
    (lambda d: {**d, "custom_id": 5}, "has the custom_id 5, not a string"),
    (lambda d: {k: v for k, v in d.items() if k != "custom_id"}, "has the custom_id null"),
    (lambda d: {**d, "custom_id": '["eval","zz",0]'}, "1 line(s) for requests it was not given"),
    (lambda d: {**d, "custom_id": {"id": R3}}, "has the custom_id a JSON object, not a string"),
    (lambda d: {**d, "response": {**d["response"], "status_code": "200"}},
     'the batch gave the status_code "200" for this request'),
    (lambda d: {**d, "response": [d["response"]]},
     "the batch gave a malformed result line for this request"),
    (lambda d: {**d, "response": {**d["response"], "body": {"choices": {"0": 1}}}},
     "the response has no choices[0].message"),
    (lambda d: {**d, "response": {**d["response"], "body": "ok"}},
     "the response has no choices[0].message"),
    (lambda d: {**d, "response": {"status_code": 500, "body": {"error": {"message": ["x"] * 999}}}},
     "HTTP 500: ['x', 'x'"),
    (lambda d: {**d, "response": None, "error": {"code": ["x"], "message": 5}},
     "batch error: no message"),
    (lambda d: [d], "is a JSON array, not an object"),
    (deep, "is not JSON"),
    (lambda d: b"\xff\xfe not utf-8", "is not JSON"),
])
def test_a_malformed_result_line_is_an_error_row(api: FakeOpenAI, echo_project: Path,
                                                 store: SQLiteStore, change: Any,
                                                 error: str) -> None:
    rewrite_output(api, rewrite_line(R3, change))
    run = batched(echo_project, store)
    found = rows(store, run["id"])
    assert error in found["r3"]["error"]
    assert len(found["r3"]["error"]) < 1000
    assert [found[f"r{i}"]["answer"] for i in (1, 2, 4, 5)] == ["one", "two", "four", "five"]
    assert run["errors"] == 1


def test_a_repeated_custom_id_keeps_the_first_answer_and_is_counted(
        api: FakeOpenAI, echo_project: Path, store: SQLiteStore) -> None:
    def repeat_r1(lines: list[bytes]) -> list[bytes]:
        first = json.loads(lines[0])
        assert first["custom_id"] == R1
        first["response"]["body"]["choices"][0]["message"]["content"] = "echo: Question other"
        return [*lines, json.dumps(first).encode()]

    rewrite_output(api, repeat_r1)
    run = batched(echo_project, store)
    assert rows(store, run["id"])["r1"]["answer"] == "one"
    assert run["errors"] == 0 and run["summary"]["n"] == 5
    assert run["summary"]["batch"]["batches"][0]["ignored"] == 1


def test_left_out_lines_are_in_the_json_summary_and_on_the_terminal(
        api: FakeOpenAI, echo_project: Path, store: SQLiteStore) -> None:
    rewrite_output(api, lambda lines: [*lines, lines[0], b"not json"])
    result = invoke("eval", "prompts/echo.yaml", "--batch", "--json")
    check("eval", json.loads(result.stdout))
    (run,) = json.loads(result.stdout)["runs"]
    (batch,) = run["batch"]["batches"]
    assert batch["ignored"] == 2 and run["errors"] == 0
    con = Console(record=True, width=200)
    batch_note(con, read_run(store.get_run(run["id"])))
    assert (f"batch {batch['id']}: 2 line(s) of its result files left out (unreadable, for "
            "requests it was not given, or repeated)") in con.export_text()


def test_a_flood_of_lines_for_no_request_stops_reading_and_the_run_resumes(
        api: FakeOpenAI, echo_project: Path, store: SQLiteStore) -> None:
    def flood(lines: list[bytes]) -> list[bytes]:
        stray = json.loads(lines[0])
        return [json.dumps({**stray, "custom_id": f"stray {n}"}).encode() for n in range(1000)]

    rewrite_output(api, flood)
    with pytest.raises(ProviderError, match="hold over 105 lines that answer none of its 5 "
                       "requests"):
        batched(echo_project, store)
    run = only_run(store)
    assert run["status"] == "failed" and run["options"]["batches"][0]["collected"] is False
    api.file_reshape = None
    resumed: Any = resume_eval(run["id"], store=store, config=Config(root=echo_project))
    assert resumed["errors"] == 0 and resumed["summary"]["n"] == 5
    assert len(api.batch_creations) == 1


# -- batch objects: what decides the next step is checked, what is only shown may be junk --------


def on_retrieve(api: FakeOpenAI, change: Callable[[dict[str, Any]], Any]) -> None:
    """Serve the batch objects of GET /batches/ID (not the one POST /batches answers) changed."""
    api.batch_reshape = lambda batch: change(batch) if api.batch_creations else batch


@pytest.mark.parametrize(("change", "message"), [
    (lambda b: {**b, "id": 5}, "answered a batch whose id is 5, not a batch id"),
    (lambda b: {**b, "id": "../files/x"}, 'answered a batch whose id is "../files/x", not a batch id'),
    (lambda b: {**b, "id": "batch_other"}, 'answered batch "batch_other" instead'),
    (lambda b: {**b, "status": ["completed"]}, "gave the status a JSON array, not a batch status"),
    (lambda b: {**b, "status": 7}, "gave the status 7, not a batch status"),
    (lambda b: {**b, "status": "completed", "output_file_id": {"id": "file-1"}},
     "gave the output_file_id a JSON object, not a file id"),
    (lambda b: {**b, "status": "completed", "error_file_id": "file-1/../../x"},
     'gave the error_file_id "file-1/../../x", not a file id'),
    (lambda b: {**b, "input_file_id": "file-other"},
     'the server says it holds the input file "file-other"'),
    (lambda b: b"[1, 2]", "answered a JSON array, not an object"),
    (lambda b: b'{"id": ', "answered a body that is not JSON"),
])
def test_a_malformed_batch_object_is_exit_3_and_the_run_resumes(
        api: FakeOpenAI, echo_project: Path, store: SQLiteStore, change: Any, message: str) -> None:
    on_retrieve(api, change)
    result = invoke("eval", "prompts/echo.yaml", "--batch", code=3)
    assert message in result.stderr
    run_id = only_run(store)["id"]
    assert f"promptctl eval --resume {run_id}" in result.stderr
    api.batch_reshape = None
    resumed = json.loads(invoke("eval", "--resume", run_id, "--json").stdout)["runs"][0]
    assert resumed["n"] == 5 and resumed["errors"] == 0
    assert len(api.batch_creations) == 1 and uploads(api) == 1


def test_a_malformed_batch_object_from_post_batches_is_exit_3(api: FakeOpenAI,
                                                             echo_project: Path) -> None:
    api.batch_reshape = lambda batch: {**batch, "id": None}
    result = invoke("eval", "prompts/echo.yaml", "--batch", code=3)
    assert "POST /batches answered a batch whose id is null, not a batch id" in result.stderr


def test_a_submission_answered_with_a_bad_status_is_kept_and_polled(
        api: FakeOpenAI, echo_project: Path, store: SQLiteStore) -> None:
    # Only the id of a new batch decides anything (the run stores it at once); were the
    # submission refused for the rest, a resume would submit its requests a second time.
    api.batch_reshape = lambda batch: batch if api.batch_creations else \
        {**batch, "status": ["validating"], "output_file_id": 5}
    run = batched(echo_project, store)
    assert run["status"] == "complete" and run["errors"] == 0
    assert len(api.batch_creations) == 1


@pytest.mark.parametrize("change", [
    lambda b: {**b, "request_counts": [1, 2]},
    lambda b: {**b, "request_counts": {"completed": "x", "failed": None, "total": 10**400}},
    lambda b: {**b, "errors": {"data": 5}},
    lambda b: {**b, "errors": {"data": [5, {"message": {"a": 1}}, None]}},
    lambda b: {**b, "expires_at": "soon", "metadata": ["x"], "created_at": "then"},
    lambda b: {**b, "expires_at": float("nan")},
])
def test_junk_in_what_is_only_shown_is_left_out(api: FakeOpenAI, echo_project: Path,
                                                store: SQLiteStore, change: Any) -> None:
    api.batch_reshape = change
    run = batched(echo_project, store)
    assert run["status"] == "complete" and run["errors"] == 0
    assert [r["answer"] for r in rows(store, run["id"]).values()] == ECHO_WORDS


def test_junk_reasons_of_a_failed_batch_leave_its_rows_errors_without_reasons(
        api: FakeOpenAI, echo_project: Path, store: SQLiteStore) -> None:
    api.batch_refuse = "refused"
    api.batch_reshape = lambda b: {**b, "errors": {"data": [{"message": 5}, "x"]}} \
        if b["status"] == "failed" else b
    run = batched(echo_project, store)
    (batch_id,) = api.batches
    assert {r["error"] for r in rows(store, run["id"]).values()} == {
        f"the batch {batch_id} failed: no reason given"}


# -- a batch that never finishes: polled until its expiry time, plus a margin ----------------


def test_the_poll_deadline_is_the_expiry_plus_the_margin_within_a_day() -> None:
    day = COMPLETION_WINDOW_SECONDS
    assert day == 24 * 3600
    assert poll_deadline(5000.0, 1000.0, 600) == 5600.0
    assert poll_deadline(500.0, 1000.0, 0) == 500.0  # expired before this process saw it
    # No usable expiry time, or one beyond a day from when it was first seen: a day.
    assert poll_deadline(None, 1000.0, 600) == 1000.0 + day + 600
    assert poll_deadline(1e12, 1000.0, 600) == 1000.0 + day + 600


def test_limits_read_the_margin_and_the_read_caps_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert BatchLimits.from_env().expiry_margin == 600
    assert BatchLimits.from_env().read == ReadLimits(16 * 1024 * 1024, 4 * 1024**3)
    monkeypatch.setenv("PROMPTCTL_BATCH_EXPIRY_MARGIN", "0")
    monkeypatch.setenv("PROMPTCTL_BATCH_MAX_LINE_BYTES", "100")
    monkeypatch.setenv("PROMPTCTL_BATCH_MAX_RESULT_BYTES", "1000")
    limits = BatchLimits.from_env()
    assert limits.expiry_margin == 0 and limits.read == ReadLimits(100, 1000)
    for name, value in [("PROMPTCTL_BATCH_EXPIRY_MARGIN", "-1"), ("PROMPTCTL_BATCH_POLL", "inf"),
                        ("PROMPTCTL_BATCH_MAX_LINE_BYTES", "0")]:
        monkeypatch.setenv(name, value)
        with pytest.raises(InputError, match=f"\\${name} is '{value}'"):
            BatchLimits.from_env()
        monkeypatch.delenv(name)


def cancelled_after(api: FakeOpenAI, retrieves: int) -> None:
    """Batch objects say "cancelled" from the `retrieves`-th GET on: a run that misses its
    deadline ends then (with other messages) rather than polling for ever."""
    def reshape(batch: dict[str, Any]) -> dict[str, Any]:
        return {**batch, "status": "cancelled"} if polls(api) >= retrieves else batch

    api.batch_reshape = reshape


def test_a_batch_still_running_after_its_expiry_is_left_resumable(
        api: FakeOpenAI, echo_project: Path, store: SQLiteStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTCTL_BATCH_EXPIRY_MARGIN", "0")
    api.batch_polls = (10**6, 0)  # validating for ever
    api.batch_expires_in = -60  # ... though it expired a minute ago
    cancelled_after(api, 100)
    result = invoke("eval", "prompts/echo.yaml", "--batch", code=3)
    run = only_run(store)
    (batch_id,) = api.batches
    assert f"run {run['id']}: batch {batch_id} is still validating after its expiry time (" \
        in result.stderr
    assert "promptctl stopped waiting. The batch is left on the server, not cancelled" \
        in result.stderr
    assert f"promptctl eval --resume {run['id']} later re-attaches to it" in result.stderr
    assert polls(api) == 1  # stopped at the first answer past the deadline
    assert run["status"] == "failed"
    assert run["options"]["batches"][0]["collected"] is False
    assert store.answered_keys(run["id"]) == set()

    api.batch_polls = (0, 0)  # the server finally runs it
    api.batch_reshape = None
    resumed = json.loads(invoke("eval", "--resume", run["id"], "--json").stdout)["runs"][0]
    assert resumed["n"] == 5 and resumed["errors"] == 0
    assert len(api.batch_creations) == 1 and resumed["batch"]["reattached"] == 1


def test_a_batch_expiring_while_polled_stops_the_polling(
        api: FakeOpenAI, echo_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTCTL_BATCH_EXPIRY_MARGIN", "0")
    monkeypatch.setenv("PROMPTCTL_BATCH_POLL", "0.05")
    api.batch_polls = (10**6, 0)
    api.batch_expires_in = 2
    cancelled_after(api, 2000)  # 100 s of polls
    result = invoke("eval", "prompts/echo.yaml", "--batch", code=3)
    assert "is still validating after its expiry time" in result.stderr
    assert polls(api) > 1


# -- the stored batch state, edited between an interruption and its resume -------------------


class Stop(KeyboardInterrupt):
    """Ctrl-C once the batch is submitted and polled."""


def interrupted(root: Path, store: SQLiteStore, api: FakeOpenAI) -> str:
    """A batched run stopped while its batch is validating; its id."""
    api.batch_polls = (10**6, 0)

    def progress(state: Progress) -> None:
        if state.note.startswith("1 batch: 1 validating"):
            raise Stop

    before = {r["id"] for r in store.list_runs()}
    with pytest.raises(Stop):
        batched(root, store, progress=progress)
    (run_id,) = {str(r["id"]) for r in store.list_runs()} - before
    return run_id


def edit_run(tmp_path: Path, run_id: str, column: str, value: Any) -> None:
    """Change a run's column in the SQLite file itself, as a damaged or edited store would."""
    conn = sqlite3.connect(store_db(tmp_path))
    with conn:
        conn.execute(f"UPDATE runs SET {column} = ? WHERE id = ?",
                     (json.dumps(value) if column == "options" else value, run_id))
    conn.close()


def entry(change: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    return lambda options: {**options, "batches": [change(options["batches"][0])]}


@pytest.mark.sqlite_only
@pytest.mark.parametrize(("change", "message"), [
    (lambda o: {**o, "batches": "garbage"}, 'options.batches is "garbage", not a list'),
    (lambda o: {**o, "batches": {"0": o["batches"][0]}}, "options.batches is an object, not a list"),
    (lambda o: {**o, "batch": "yes"}, 'options.batch is "yes", not true or false'),
    (lambda o: {**o, "batch": False}, "options.batches lists batches, but options.batch is not true"),
    # Not batch state at all: the store's reading refuses the run before the resume looks.
    (lambda o: [o], "options is a list, not a mapping"),
    (lambda o: {**o, "batches": o["batches"] * 2}, "options.batches[1].id repeats batch"),
    (lambda o: {**o, "batches": [*o["batches"], {**o["batches"][0], "id": "batch_2"}]},
     "options.batches[1].input_file_id repeats the input file"),
    (lambda o: {**o, "batches": [5]}, "options.batches[0] is 5, not an object"),
    (entry(lambda b: {**b, "id": 5}), "options.batches[0].id is 5, not a batch id"),
    (entry(lambda b: {**b, "id": "../files/x"}), 'options.batches[0].id is "../files/x", not a batch id'),
    (entry(lambda b: {**b, "id": ""}), 'options.batches[0].id is "", not a batch id'),
    (entry(lambda b: {**b, "input_file_id": None}),
     "options.batches[0].input_file_id is null, not a file id"),
    (entry(lambda b: {**b, "requests": "5"}),
     'options.batches[0].requests is "5", not a count of requests'),
    (entry(lambda b: {**b, "requests": 0}), "options.batches[0].requests is 0, not a count"),
    (entry(lambda b: {**b, "status": ["validating"]}),
     "options.batches[0].status is a list, not a batch status"),
    (entry(lambda b: {**b, "collected": "no"}),
     'options.batches[0].collected is "no", not true or false'),
    (entry(lambda b: {k: v for k, v in b.items() if k != "input_file_id"}),
     "options.batches[0] lacks input_file_id"),
    (entry(lambda b: {**b, "owner": "x"}), 'options.batches[0] has the unknown key "owner"'),
])
def test_a_damaged_batch_state_stops_the_resume_before_anything_is_sent(
        api: FakeOpenAI, echo_project: Path, store: SQLiteStore, tmp_path: Path,
        change: Callable[[dict[str, Any]], Any], message: str) -> None:
    run_id = interrupted(echo_project, store, api)
    requests = api.count
    options = options_of(store, run_id)
    edit_run(tmp_path, run_id, "options", change(options))
    result = invoke("eval", "--resume", run_id, code=2)
    if message.startswith("options is a list"):
        assert f"run {run_id}: {message}" in result.stderr
        assert "promptctl store check" in result.stderr
    else:
        assert f"run {run_id}: its stored batch state cannot be used: {message}" in result.stderr
        assert "restore the run's options from a backup" in result.stderr
    assert api.count == requests  # nothing sent, not even a poll

    edit_run(tmp_path, run_id, "options", options)
    api.batch_polls = (0, 0)
    resumed = json.loads(invoke("eval", "--resume", run_id, "--json").stdout)["runs"][0]
    assert resumed["n"] == 5 and resumed["errors"] == 0 and len(api.batch_creations) == 1


@pytest.mark.sqlite_only
def test_a_stored_batch_of_another_run_is_refused(api: FakeOpenAI, echo_project: Path,
                                                  store: SQLiteStore, tmp_path: Path) -> None:
    mine = interrupted(echo_project, store, api)
    other = interrupted(echo_project, store, api)
    theirs = options_of(store, other)["batches"][0]
    options = options_of(store, mine)
    edit_run(tmp_path, mine, "options", {**options, "batches": [theirs]})
    result = invoke("eval", "--resume", mine, code=2)
    assert (f"run {mine}: its stored batch state cannot be used: options.batches names batch "
            f'{theirs["id"]}, which run "{other}" submitted, not this one') in result.stderr
    assert len(api.batch_creations) == 2 and uploads(api) == 2


@pytest.mark.sqlite_only
def test_a_stored_input_file_of_another_batch_is_refused(api: FakeOpenAI, echo_project: Path,
                                                         store: SQLiteStore, tmp_path: Path) -> None:
    mine = interrupted(echo_project, store, api)
    other = interrupted(echo_project, store, api)
    options = options_of(store, mine)
    (batch,) = options["batches"]
    elsewhere = options_of(store, other)["batches"][0]["input_file_id"]
    edit_run(tmp_path, mine, "options", {**options, "batches": [
        {**batch, "input_file_id": elsewhere}]})
    result = invoke("eval", "--resume", mine, code=2)
    assert (f"options.batches gives batch {batch['id']} the input file {elsewhere}; the server "
            f'says it holds "{batch["input_file_id"]}"') in result.stderr
    assert len(api.batch_creations) == 2


@pytest.mark.sqlite_only
def test_a_stored_batch_the_server_does_not_know_is_exit_3(api: FakeOpenAI, echo_project: Path,
                                                           store: SQLiteStore, tmp_path: Path) -> None:
    run_id = interrupted(echo_project, store, api)
    options = options_of(store, run_id)
    edit_run(tmp_path, run_id, "options", entry(lambda b: {**b, "id": "batch_unknown"})(options))
    result = invoke("eval", "--resume", run_id, code=3)
    assert "GET /batches/batch_unknown answered HTTP 404 (it no longer exists" in result.stderr
    assert len(api.batch_creations) == 1


@pytest.mark.sqlite_only
def test_a_run_whose_model_changed_does_not_take_its_batch_answers(
        api: FakeOpenAI, echo_project: Path, store: SQLiteStore, tmp_path: Path) -> None:
    run_id = interrupted(echo_project, store, api)
    edit_run(tmp_path, run_id, "model", "gpt-4o")
    result = invoke("eval", "--resume", run_id, code=2)
    (batch_id,) = api.batches
    assert (f'run {run_id}: batch {batch_id} holds request "[\\"eval\\",\\"r1\\",0]" with '
            'body.model "gpt-4o-mini" (the run sends "gpt-4o"): the batch was submitted for '
            "another model, parameters or messages than the run sends now") in result.stderr
    assert len(api.batch_creations) == 1 and api.chat_requests == []

    edit_run(tmp_path, run_id, "model", "gpt-4o-mini")
    api.batch_polls = (0, 0)
    resumed = json.loads(invoke("eval", "--resume", run_id, "--json").stdout)["runs"][0]
    assert resumed["n"] == 5 and resumed["errors"] == 0 and len(api.batch_creations) == 1


@pytest.mark.sqlite_only
def test_a_pipeline_run_with_stored_batches_is_refused(api: FakeOpenAI, echo_project: Path,
                                                       store: SQLiteStore, tmp_path: Path) -> None:
    run_id = interrupted(echo_project, store, api)
    edit_run(tmp_path, run_id, "kind", "pipeline")
    result = invoke("eval", "--resume", run_id, code=2)
    assert "options.batches lists batches of a pipeline, which is never batched" in result.stderr
    assert len(api.batch_creations) == 1
