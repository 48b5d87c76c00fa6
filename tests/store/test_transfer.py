"""`promptctl store export` and `store import`: runs move between stores unchanged, an import
is idempotent by run id, and a run that differs is reported, never overwritten."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakeserver import FakeOpenAI
from tests.helpers import cli_process, copy_examples, eval_run, finish_process, invoke, run_cli

ECHO_PROMPT = """\
name: echo
model: gpt-4o-mini
messages:
  - role: user
    content: "Question {{ q }}"
examples:
  - input: {q: zero}
    expected: zero
output:
  pattern: 'echo: Question (?P<answer>\\w+)'
  type: string
metrics: [exact_match, format_validity]
evalset: ../evalsets/echo.jsonl
"""


@pytest.fixture
def api(api: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    """The fake server; the current directory a project with an echo prompt (a right answer,
    a wrong one, one without an expected value, one with an expected null)."""
    root = copy_examples(tmp_path / "proj")
    (root / "prompts" / "echo.yaml").write_text(ECHO_PROMPT, encoding="utf-8")
    (root / "evalsets" / "echo.jsonl").write_text(
        '{"id": "a", "input": {"q": "alpha"}, "expected": "alpha"}\n'
        '{"id": "b", "input": {"q": "beta \\u00e9 \\u2028"}, "expected": "gamma"}\n'
        '{"id": "c", "input": {"q": "delta"}}\n'
        '{"id": "d", "input": {"q": "eps"}, "expected": null}\n', encoding="utf-8")
    monkeypatch.chdir(root)
    return api


def stored_views(store: str) -> tuple[Any, dict[str, Any]]:
    """`runs --json` and every run's `show --json` of a store."""
    runs = json.loads(invoke("--store", store, "runs", "--json").stdout)
    shows = {r["id"]: json.loads(invoke("--store", store, "show", r["id"], "--json").stdout)
             for r in runs["runs"]}
    return runs, shows


def export(store: str, *args: str) -> bytes:
    result = invoke("--store", store, "store", "export", *args)
    return result.stdout_bytes


def make_runs(api: FakeOpenAI) -> list[str]:
    ids = [eval_run("prompts/echo.yaml")["id"],
           eval_run("prompts/echo.yaml", "--repeat", "2", "--no-cache")["id"]]
    api.fail_matching("delta", status=400)  # one row of the next run fails, the rest answer
    failed = run_cli("eval", "prompts/echo.yaml", "--no-cache", "--json")
    assert failed.exit_code == 3, failed.output
    ids.append(json.loads(failed.stdout)["runs"][0]["id"])
    api.responder = lambda body: "Controversy score: 3\nReason: fine."
    ids.append(eval_run("prompts/controversy.yaml", "--limit", "2")["id"])
    return ids


def test_sqlite_to_postgresql_to_sqlite_gives_identical_runs_and_shows(
        api: FakeOpenAI, tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    first = os.environ["PROMPTCTL_STORE"]
    ids = make_runs(api)
    before = stored_views(first)
    assert sorted(r["id"] for r in before[0]["runs"]) == sorted(ids)
    assert any(r["error"] for show in before[1].values() for r in show["rows"])

    dump = tmp_path / "a.jsonl"
    dump.write_bytes(export(first))
    assert len(dump.read_bytes().splitlines()) == len(ids)
    result = invoke("--store", pg_url, "store", "import", str(dump))
    assert f"imported {len(ids)} run(s)" in result.stdout
    assert stored_views(pg_url) == before

    again = tmp_path / "b.jsonl"
    again.write_bytes(export(pg_url))
    assert again.read_bytes() == dump.read_bytes()
    last = f"sqlite:///{tmp_path / 'last.db'}"
    invoke("--store", last, "store", "import", str(again))
    assert stored_views(last) == before

    # A second import changes nothing, and says so.
    second = invoke("--store", last, "store", "import", str(again))
    assert "nothing to import" in second.stdout and "imported" not in second.stdout
    document = json.loads(invoke("--store", pg_url, "store", "import", str(dump), "--json").stdout)
    assert document["imported"] == [] and document["conflicts"] == [] and document["rows"] == 0
    assert sorted(document["unchanged"]) == sorted(ids)
    assert export(last) == dump.read_bytes()


def test_a_run_that_differs_is_reported_and_left_as_stored(api: FakeOpenAI, tmp_path: Path) -> None:
    run = eval_run("prompts/echo.yaml")
    dump = tmp_path / "a.jsonl"
    dump.write_bytes(export(_current()))
    record = json.loads(dump.read_text(encoding="utf-8"))
    record["run"]["status"] = "interrupted"
    record["rows"][0]["completion"] = "something else"
    edited = tmp_path / "edited.jsonl"
    edited.write_text(json.dumps(record) + "\n", encoding="utf-8")
    result = run_cli("store", "import", str(edited))
    assert result.exit_code == 2, result.output
    assert run["id"] in result.stderr and "differ" in result.stderr and "status" in result.stderr
    assert "Traceback" not in result.output
    assert json.loads(invoke("show", run["id"], "--json").stdout)["run"]["status"] == "complete"


def test_export_filters_by_prompt_and_date(api: FakeOpenAI) -> None:
    echo = eval_run("prompts/echo.yaml")
    api.responder = lambda body: "Controversy score: 3"
    contro = eval_run("prompts/controversy.yaml", "--limit", "1")
    store = _current()

    def ids(*args: str) -> list[str]:
        return [json.loads(line)["run"]["id"] for line in export(store, *args).splitlines()]

    assert ids() == [echo["id"], contro["id"]]  # oldest first
    assert ids("--prompt", "echo") == [echo["id"]]
    assert ids("--since", "2000-01-01") == [echo["id"], contro["id"]]
    assert ids("--since", "2999-01-01T00:00") == []
    assert ids("--since", contro["created_at"]) == [contro["id"]]
    bad = run_cli("store", "export", "--since", "last tuesday")
    assert bad.exit_code == 2 and "not a date" in bad.stderr


def test_export_marks_rows_without_an_expected_value(api: FakeOpenAI) -> None:
    eval_run("prompts/echo.yaml")
    (line,) = export(_current()).splitlines()
    record = json.loads(line)
    rows = {r["row_id"]: r for r in record["rows"] if r["kind"] == "eval"}
    assert "expected" not in rows["c"]  # no expected value
    assert "expected" in rows["d"] and rows["d"]["expected"] is None  # an expected null
    assert all("run_id" not in r and "has_expected" not in r for r in record["rows"])
    assert record["format"] == "promptctl-run/1"


@pytest.mark.parametrize(("text", "message", "line"), [
    ("{not json\n", "not a JSON line", 1),
    ('{"format": "promptctl-run/1", "run": {}, "rows": []}\n', "run lacks id", 1),
    ('\n{"format": "other"}\n', "not a promptctl run export", 2),
    ('{"format": "promptctl-run/1", "run": 1, "rows": []}\n', '"run"', 1),
])
def test_a_bad_import_file_names_the_line(api: FakeOpenAI, tmp_path: Path, text: str, message: str,
                                          line: int) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text, encoding="utf-8")
    result = run_cli("store", "import", str(path))
    assert result.exit_code == 2, result.output
    assert f"{path}:{line}" in result.stderr and message in result.stderr


def test_a_bad_run_is_refused_whole_after_the_good_ones_went_in(api: FakeOpenAI,
                                                                tmp_path: Path) -> None:
    eval_run("prompts/echo.yaml")
    good = export(_current())
    record = json.loads(good)
    record["run"]["id"] = "0000000000zzzz"  # another run of the same form
    record["rows"].append(dict(record["rows"][0]))  # a duplicate row
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(good + json.dumps(record).encode() + b"\n")
    target = f"sqlite:///{tmp_path / 'target.db'}"
    result = run_cli("--store", target, "store", "import", str(path))
    assert result.exit_code == 2 and f"{path}:2" in result.stderr and "two rows" in result.stderr
    listed = json.loads(invoke("--store", target, "runs", "--json").stdout)["runs"]
    assert [r["id"] for r in listed] == [json.loads(good)["run"]["id"]]


def test_import_from_stdin_and_a_missing_file(api: FakeOpenAI, tmp_path: Path) -> None:
    eval_run("prompts/echo.yaml")
    dump = export(_current())
    from typer.testing import CliRunner

    from promptctl.cli.app import app

    target = f"sqlite:///{tmp_path / 'target.db'}"
    result = CliRunner().invoke(app, ["--store", target, "store", "import", "-"], input=dump)
    assert result.exit_code == 0 and "imported 1 run(s)" in result.stdout
    missing = run_cli("store", "import", str(tmp_path / "nope.jsonl"))
    assert missing.exit_code == 2 and "cannot read the export" in missing.stderr


def _current() -> str:
    import os

    return os.environ["PROMPTCTL_STORE"]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_imports_of_one_file_at_once_each_succeed(api: FakeOpenAI, tmp_path: Path, kind: str,
                                                  request: pytest.FixtureRequest) -> None:
    """Six processes importing the same file into one store: every run goes in once, whole,
    and each process says which it added and which it found there already."""
    ids = make_runs(api)
    before = stored_views(_current())
    dump = tmp_path / "runs.jsonl"
    dump.write_bytes(export(_current()))
    target = (f"sqlite:///{tmp_path / 'target.db'}" if kind == "sqlite"
              else str(request.getfixturevalue("pg_url")))
    procs = [cli_process("--store", target, "store", "import", str(dump), "--json")
             for _ in range(6)]
    finished = [finish_process(p, timeout=120) for p in procs]
    for code, _, err in finished:
        assert code == 0 and "Traceback" not in err, err
    documents = [json.loads(out) for _, out, _ in finished]
    for run_id in ids:
        assert sorted(run_id in d["imported"] for d in documents) == [False] * 5 + [True]
        assert sum(run_id in d["unchanged"] for d in documents) == 5
    assert all(d["conflicts"] == [] for d in documents)
    assert stored_views(target) == before


def _bad_line(record: dict[str, Any], case: str) -> str:
    """An exported run (`record`) spoilt as `case` says, as one line of an export."""
    run, row = record["run"], record["rows"][0]
    run["id"] = "0000000000zzzz"  # another run: were it not refused, it would be stored
    text_marker = "__NUMBER__"
    if case == "lone surrogate":
        row["completion"] = "ok \ud800 ok"
    elif case == "lone surrogate in a key":
        row["input"] = {"\udfff": 1}
    elif case == "NaN":
        row["latency_ms"] = float("nan")
    elif case == "infinity written as 1e999":
        row["answer"] = text_marker
    elif case == "integer column beyond 64 bits":
        row["prompt_tokens"] = 2 ** 64
    elif case == "integer beyond a float":
        row["input"] = {"q": 10 ** 400}
    elif case == "number past the digit limit":
        row["answer"] = text_marker
    elif case == "id of another form":
        run["id"] = "0000000000"
    elif case == "summary of the wrong shape":
        run["summary"]["n"] = "twenty"
    elif case == "created_at not a time":
        run["created_at"] = "last week"
    elif case == "scores a list":
        row["scores"] = [1, 0]
    elif case == "row kind":
        row["kind"] = "holdout"
    line = json.dumps(record)
    number = "1e999" if case == "infinity written as 1e999" else "7" * 5000
    return line.replace(f'"{text_marker}"', number)


@pytest.mark.parametrize(("case", "message"), [
    ("lone surrogate", "lone surrogate (U+D800)"),
    ("lone surrogate in a key", "lone surrogate (U+DFFF)"),
    ("NaN", "holds NaN, which is not a finite number"),
    ("infinity written as 1e999", "too large for a 64-bit float"),
    ("integer column beyond 64 bits", "prompt_tokens is a number of about 20 digits, beyond the "
                                      "64-bit integers"),
    ("integer beyond a float", "a number of about 401 digits, too large for a 64-bit float"),
    ("number past the digit limit", "a number too large to read"),
    ("id of another form", "is not a run id promptctl makes"),
    ("summary of the wrong shape", "summary.n is 'twenty', not a count"),
    ("created_at not a time", "created_at is 'last week', not an ISO time"),
    ("scores a list", "scores is a list, not a mapping"),
    ("row kind", "kind is 'holdout', not eval or fewshot"),
])
def test_import_checks_each_run_as_a_read_does(api: FakeOpenAI, tmp_path: Path, case: str,
                                               message: str) -> None:
    """What a store could not hold, or would leave out when read, is an error naming the line,
    and nothing of that run is written."""
    eval_run("prompts/echo.yaml")
    good = export(_current())
    path = tmp_path / "bad.jsonl"
    path.write_text(good.decode() + _bad_line(json.loads(good), case) + "\n", encoding="utf-8")
    target = f"sqlite:///{tmp_path / 'target.db'}"
    result = run_cli("--store", target, "store", "import", str(path))
    assert result.exit_code == 2, result.output
    assert f"{path}:2: " in result.stderr and message in result.stderr, result.stderr
    assert "store export" in result.stderr and "Traceback" not in result.output
    listed = json.loads(invoke("--store", target, "runs", "--json").stdout)["runs"]
    assert [r["id"] for r in listed] == [json.loads(good)["run"]["id"]]
