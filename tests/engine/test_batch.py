"""engine/batch.py: batch ids kept with the run, resume re-attaching without resubmitting,
the batch price, and requests made while scoring reported as sent directly."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import pytest

from promptctl import providers
from promptctl.config import Config, Price
from promptctl.engine import EvalOptions, Progress, resume_eval, run_eval
from promptctl.engine.batch import BatchLimits, batch_price, custom_id
from promptctl.errors import InputError
from promptctl.metrics.registry import Metric, ScoreContext, builtin
from promptctl.prompts import load_prompt
from promptctl.providers import (
    Backend,
    ChatRequest,
    ChatResponse,
    Provider,
    RequestFailed,
    ResolvedModel,
    resolve_model,
)
from promptctl.providers.base import BatchAPI, BatchInfo, BatchSupport
from promptctl.store import SQLiteStore
from tests.fakeserver import FakeOpenAI
from tests.helpers import ECHO_WORDS, invoke, store_db

pytestmark = pytest.mark.usefixtures("quick_polls")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    # The store the CLI of these tests opens too (PROMPTCTL_STORE, set by `isolated`).
    path = store_db(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = SQLiteStore(path)
    yield s
    s.close()


class Stop(KeyboardInterrupt):
    """Stands for Ctrl-C at a chosen moment of a batched run."""


def stop_when(note_prefix: str, times: int = 1) -> Any:
    """A progress callback that interrupts the run the `times`-th time its note starts so."""
    seen = [0]

    def progress(state: Progress) -> None:
        if state.note.startswith(note_prefix):
            seen[0] += 1
            if seen[0] == times:
                raise Stop

    return progress


def batched(root: Path, store: SQLiteStore, **kwargs: Any) -> dict[str, Any]:
    config = Config(root=root)
    prompt = load_prompt(root / "prompts" / "echo.yaml")
    return run_eval(prompt, resolve_model("gpt-4o-mini", config), store=store, config=config,
                    options=EvalOptions(batch=True), **kwargs)


def started(store: SQLiteStore) -> str:
    (run,) = store.list_runs()
    return str(run["id"])


def uploaded_ids(api: FakeOpenAI) -> list[list[str]]:
    return [[json.loads(line)["custom_id"] for line in r.body["file"]["content"].splitlines()]
            for r in api.requests if r.method == "POST" and r.path == "/v1/files"]


def test_resume_reattaches_to_a_running_batch_without_resubmitting(
        api: FakeOpenAI, echo_project: Path, store: SQLiteStore) -> None:
    api.batch_polls = (2, 2)
    with pytest.raises(Stop):
        batched(echo_project, store, progress=stop_when("1 batch: 1 validating"))
    run_id = started(store)
    interrupted = store.get_run(run_id)
    assert interrupted["status"] == "interrupted"
    (batch_id,) = api.batches
    assert interrupted["options"]["batch"] is True
    assert interrupted["options"]["batches"] == [{
        "id": batch_id, "input_file_id": api.batches[batch_id]["input_file_id"],
        "requests": 5, "status": "validating", "collected": False}]
    assert store.answered_keys(run_id) == set()

    resumed = resume_eval(run_id, store=store, config=Config(root=echo_project))
    assert resumed["status"] == "complete" and resumed["summary"]["n"] == 5
    assert resumed["errors"] == 0
    assert len(api.batch_creations) == 1 and len(uploaded_ids(api)) == 1
    assert resumed["summary"]["batch"]["reattached"] == 1
    assert resumed["summary"]["batch"]["submitted"] == 0
    assert resumed["options"]["batches"][0]["collected"] is True
    assert [r["answer"] for r in store.iter_rows(run_id)] == ["one", "two", "three", "four", "five"]


def test_resume_through_the_cli_reattaches(api: FakeOpenAI, echo_project: Path,
                                           store: SQLiteStore) -> None:
    with pytest.raises(Stop):
        batched(echo_project, store, progress=stop_when("1 batch:"))
    run_id = started(store)
    result = invoke("eval", "--resume", run_id, "--json")
    (run,) = json.loads(result.stdout)["runs"]
    assert run["id"] == run_id and run["n"] == 5 and run["errors"] == 0
    assert len(api.batch_creations) == 1
    assert run["batch"]["reattached"] == 1


def test_an_interruption_between_two_submissions_sends_each_request_once(
        api: FakeOpenAI, echo_project: Path, store: SQLiteStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTCTL_BATCH_MAX_REQUESTS", "2")
    with pytest.raises(Stop):
        batched(echo_project, store, progress=stop_when("uploading", times=2))
    run_id = started(store)
    assert len(store.get_run(run_id)["options"]["batches"]) == 1
    assert len(api.batch_creations) == 1

    resumed = resume_eval(run_id, store=store, config=Config(root=echo_project))
    # The second upload was cut short before its batch was made; the resume re-attached to
    # the first batch and sent the three other requests, in two more.
    assert len(api.batch_creations) == 3
    in_batches = [json.loads(line)["custom_id"]
                  for r in api.batch_creations
                  for line in api.files[r.body["input_file_id"]]["content"].splitlines()]
    assert sorted(in_batches) == sorted(f'["eval","r{n}",0]' for n in range(1, 6))
    assert resumed["summary"]["n"] == 5 and resumed["errors"] == 0
    assert resumed["summary"]["batch"]["reattached"] == 1
    assert resumed["summary"]["batch"]["submitted"] == 2


def test_requests_made_while_scoring_are_sent_directly_and_reported(
        api: FakeOpenAI, echo_project: Path, store: SQLiteStore) -> None:
    async def judge(ctx: ScoreContext) -> dict[str, Any]:
        services = ctx.services
        channel = services.channel("gpt-4o")
        answer = await services.gateway.complete(
            channel, [{"role": "user", "content": f"grade {ctx.completion}"}], {}, 0)
        return {"judged": 1.0 if answer.response else 0.0}

    base = builtin("exact_match")
    assert base is not None
    metric = Metric("judged", judge, base.aggregate, base.paired, "judged", kind="test")
    config = Config(root=echo_project)
    prompt = load_prompt(echo_project / "prompts" / "echo.yaml")
    prompt = dataclasses.replace(prompt, configured_metrics=(metric,))
    run = run_eval(prompt, resolve_model("gpt-4o-mini", config), store=store, config=config,
                   options=EvalOptions(batch=True))
    direct = run["summary"]["batch"]["direct"]
    assert list(direct) == ["gpt-4o"] and direct["gpt-4o"]["requests"] == 5
    # gpt-4o at its standard price ($2.50 / $10 per million): "grade echo: Question one"
    # is 4 words in, "echo: grade echo: Question one" 5 out, for each of 5 rows.
    assert direct["gpt-4o"]["cost_usd"] == pytest.approx(5 * (4 * 2.5 + 5 * 10.0) / 1e6)
    assert len(api.chat_requests) == 5
    assert all(r.body["model"] == "gpt-4o" for r in api.chat_requests)
    assert len(api.batch_creations) == 1
    # ... and the terminal summary says so.
    from rich.console import Console

    from promptctl.render.terminal import batch_note
    from promptctl.runs import read_run

    con = Console(record=True, width=200)
    batch_note(con, read_run(run))
    assert "sent directly, not batched (judge / embedding requests made while scoring): gpt-4o " \
        "5 requests" in con.export_text()


def test_custom_ids_carry_the_request_key() -> None:
    assert custom_id(("eval", "r1", 0)) == '["eval","r1",0]'
    assert custom_id(("fewshot", 'q"é', 2)) == '["fewshot","q\\"é",2]'


def test_batch_price_halves_openai_prices_and_leaves_others(echo_project: Path) -> None:
    config = Config(root=echo_project)
    openai = resolve_model("gpt-4o-mini", config)
    assert batch_price(Price(0.15, 0.60), openai) == Price(0.075, 0.30)
    assert batch_price(None, openai) is None
    local = resolve_model("local/smollm2", config)
    assert batch_price(Price(1.0, 2.0), local) == Price(1.0, 2.0)


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMPTCTL_BATCH_POLL")
    assert BatchLimits.from_env() == BatchLimits(50_000, 200 * 1024 * 1024, 15.0)
    monkeypatch.setenv("PROMPTCTL_BATCH_MAX_REQUESTS", "7")
    monkeypatch.setenv("PROMPTCTL_BATCH_MAX_BYTES", "1000")
    monkeypatch.setenv("PROMPTCTL_BATCH_POLL", "0.5")
    assert BatchLimits.from_env() == BatchLimits(7, 1000, 0.5)
    monkeypatch.setenv("PROMPTCTL_BATCH_MAX_REQUESTS", "0")
    with pytest.raises(InputError, match="PROMPTCTL_BATCH_MAX_REQUESTS"):
        BatchLimits.from_env()


def test_progress_reports_each_stage_of_the_batch(api: FakeOpenAI, echo_project: Path,
                                                  store: SQLiteStore) -> None:
    api.batch_polls = (1, 1)
    seen: list[tuple[str, int]] = []

    def progress(state: Progress) -> None:
        if not seen or seen[-1] != (state.note, state.done):
            seen.append((state.note, state.done))

    batched(echo_project, store, progress=progress)
    (batch_id,) = api.batches
    assert seen == [
        ("uploading 5 requests", 0),
        ("1 batch: 1 validating · server 0/5", 0),
        ("1 batch: 1 in_progress · server 0/5", 0),
        (f"reading the results of batch {batch_id}", 0),
        (f"reading the results of batch {batch_id}", 5),
        ("1 batch: 1 completed", 5),
    ]


# -- a backend of its own: batch support is one BatchAPI class plus `batch=` in its Backend ---


class MemoryBatches(BatchAPI):
    """Keeps uploaded files and batches in memory; a batch completes on its second poll."""

    submitted: list[list[str]] = []  # the request texts of each batch, across instances

    def __init__(self) -> None:
        self.name, self.base_url = "mem", "memory://"
        self.files: dict[str, list[dict[str, Any]]] = {}
        self.polls: dict[str, int] = {}

    def request_line(self, custom_id: str, request: ChatRequest) -> bytes:
        return (json.dumps({"id": custom_id, "text": request.messages[-1]["content"]}) + "\n").encode()

    async def upload(self, path: str) -> str:
        file_id = f"f{len(self.files)}"
        self.files[file_id] = [json.loads(line) for line in Path(path).read_text().splitlines()]
        return file_id

    async def submit(self, file_id: str, metadata: dict[str, str]) -> BatchInfo:
        MemoryBatches.submitted.append([line["text"] for line in self.files[file_id]])
        self.polls[file_id] = 0
        return BatchInfo(id=file_id, status="queued", input_file_id=file_id)

    async def retrieve(self, batch_id: str) -> BatchInfo:
        self.polls[batch_id] += 1
        status = "completed" if self.polls[batch_id] >= 2 else "running"
        return BatchInfo(id=batch_id, status=status, input_file_id=batch_id,
                         output_file_id=batch_id if status == "completed" else None)

    async def request_lines(self, file_id: str) -> AsyncGenerator[tuple[str, Any]]:
        for line in self.files[file_id]:
            yield line["id"], line

    async def results(self, info: BatchInfo) -> AsyncGenerator[tuple[str | None,
                                                                     ChatResponse | RequestFailed]]:
        for line in self.files[info.output_file_id or ""]:
            if "three" in line["text"]:
                yield line["id"], RequestFailed("refused by memory")
            else:
                yield line["id"], ChatResponse(text=f"echo: {line['text']}", prompt_tokens=10,
                                               completion_tokens=1)


def _no_direct_requests(resolved: ResolvedModel, concurrency: int,
                        params: dict[str, Any]) -> Provider:
    raise AssertionError("a batched run sends nothing directly")


MEMORY = Backend(type="memory", open=_no_direct_requests,
                 batch=BatchSupport(open=lambda resolved: MemoryBatches(), price_factor=0.25))


@pytest.fixture
def memory_backend(echo_project: Path) -> Iterator[Path]:
    providers.register(MEMORY)
    MemoryBatches.submitted.clear()
    (echo_project / "promptctl.yaml").write_text(
        "endpoints:\n  mem: {type: memory}\npricing:\n  mem/m: {input: 4, output: 8}\n",
        encoding="utf-8")
    yield echo_project
    providers.registry._loaded.pop("memory", None)
    providers.BACKENDS.pop("memory", None)


def test_any_backend_with_a_batch_capability_runs_batched(memory_backend: Path) -> None:
    result = invoke("eval", "prompts/echo.yaml", "--batch", "--model", "mem/m", "--json", code=3)
    (run,) = json.loads(result.stdout)["runs"]
    assert MemoryBatches.submitted == [[f"Question {w}" for w in ECHO_WORDS]]
    assert run["n"] == 5 and run["errors"] == 1
    assert run["metrics"]["exact_match"] == {"value": 1.0, "n": 4, "ci95": [1.0, 1.0]}
    assert run["batch"]["price_factor"] == 0.25
    # Four answers of 10 + 1 tokens at a quarter of $4 / $8 per million.
    assert run["cost_usd"] == pytest.approx(4 * (10 * 1.0 + 1 * 2.0) / 1e6)
    again = json.loads(invoke("eval", "prompts/echo.yaml", "--batch", "--model", "mem/m", "--json",
                              code=3).stdout)["runs"][0]
    assert again["cached"] == 4 and MemoryBatches.submitted[1:] == [["Question three"]]
