"""The HTML report of long texts: each cell shows at most the text limit and says what it left
out, the header says what the limit is, the file grows by a bounded amount a row, and the
page comes in pieces from rows read once (bench/report.py --long-texts has the figures).
The page in Chromium: tests/render/test_html.py."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promptctl.render import TEXT_LIMIT, html
from promptctl.render.html import cut_at, iter_report, render_report, show_row_command, text
from tests import helpers
from tests.fakeserver import FakeOpenAI, last_user_message

LONG = 25_000
ISLAND = re.compile(r'<script type="application/json" class="rowdata">(.*?)</script>', re.S)


def long_text(tag: str, n: int = LONG) -> str:
    return (f"{tag}: " + "all work and no play makes a long text " * (n // 30 + 1))[:n]


def long_row(i: int, **extra: Any) -> dict[str, Any]:
    """A row whose every text is 25,000 characters: input (two variables), completion, answer,
    expected, a judge's completion and a step's."""
    return {"row_id": f"r{i:04d}", "kind": "eval", "sample": 0,
            "input": {"question": long_text(f"question {i}"), "context": long_text("context")},
            "expected": long_text("expected"), "completion": long_text(f"completion {i}"),
            "answer": long_text("answer"), "valid": True, "error": None,
            "scores": {"exact_match": 0.0}, "latency_ms": 10.0 + i,
            "judges": {"faithful": {"completion": long_text("judge"), "score": 0.5,
                                    "error": None}},
            "steps": {"route": {"answer": long_text("step answer"),
                                "completion": long_text("step"), "error": None}},
            **extra}


def document(rows: Any, run_id: str = "01long") -> dict[str, Any]:
    return {"run": {"id": run_id, "prompt": "long", "n": 0}, "rows": rows}


def islands(page: str) -> list[dict[str, Any]]:
    return [json.loads(m) for m in ISLAND.findall(page)]


def texts(value: Any) -> Iterator[Any]:
    """Every text of a row's data, a cut one as its [text, left out] pair."""
    if isinstance(value, str) or (isinstance(value, list) and len(value) == 2
                                  and isinstance(value[0], str) and isinstance(value[1], int)):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from texts(v)


def shown(value: Any) -> str:
    return value if isinstance(value, str) else value[0]


# --- cutting a text -------------------------------------------------------------------------------


@pytest.mark.parametrize(("s", "limit", "kept"), [
    ("abcdef", 3, "abc"),
    ("abc", 3, "abc"),
    ("cafe\u0301 au lait", 4, "caf"),  # not the e without its accent
    ("ok \U0001f469\u200d\U0001f469\u200d\U0001f467 family", 5, "ok "),  # a ZWJ sequence whole
    ("hi \u2764\ufe0f there", 4, "hi "),  # a variation selector stays with its heart
    ("\U0001f1eb\U0001f1f7\U0001f1e9\U0001f1ea", 3, "\U0001f1eb\U0001f1f7"),  # two flags, one kept
    ("\U0001f1eb\U0001f1f7\U0001f1e9\U0001f1ea", 1, ""),
    ("x\ud83d\ude00y", 2, "x"),  # the halves of a surrogate pair (as surrogatepass reads them)
    ("a" + "\u0301" * 100, 50, "a" + "\u0301" * 49),  # past the back-off: cut where asked
])
def test_a_cut_keeps_what_reads_as_one_character_whole(s: str, limit: int, kept: str) -> None:
    assert s[:cut_at(s, limit)] == kept


def test_a_cut_text_is_escaped_whole_and_says_what_it_left_out() -> None:
    # Cut before it is escaped: exactly `limit` characters, never half of an entity.
    assert text("&" * 3000, 2000) == "&amp;" * 2000 + '<span class="cut">… 1,000 more characters</span>'
    assert text("<\u202e" * 3, 3) == ('&lt;<span class="ctl">U+202E</span>&lt;'
                                      '<span class="cut">… 3 more characters</span>')
    note = text("x" * 10, 4, full=show_row_command("01a", "r1"))
    assert note.endswith("; full text: <code>promptctl show 01a --row r1</code></span>")
    page = render_report([document([long_row(0, completion="<\u2028>" * 3000)])], title="x")
    [island] = islands(page)
    assert island["rows"][0]["c"] == ["<\u2028>" * 666 + "<\u2028", 9000 - 2000]
    assert "<\u2028>" not in page and "\\u003c\\u2028\\u003e" in page


@pytest.mark.parametrize(("run_id", "row_id"), [
    ("01jq3k8v", "r0042"), ("01a", "$(touch pwned)"), ("01a", "it's; rm -rf ~"), ("01a", ""),
    ("01a", "-x"), ("01a b", "a\nb"),
])
def test_the_full_text_command_quotes_ids_for_a_shell(run_id: str, row_id: str) -> None:
    command = show_row_command(run_id, row_id)
    assert shlex.split(command) == ["promptctl", "show", run_id, "--row", row_id]
    if row_id == "r0042":
        assert command == "promptctl show 01jq3k8v --row r0042"  # plain ids stay plain


# --- the cells and the header -----------------------------------------------------------------


def test_each_cell_shows_at_most_the_limit_and_says_what_it_left_out() -> None:
    rows = [long_row(0), long_row(1, error=long_text("HTTP 500"), completion=None, answer=None),
            long_row(2, input={f"v{i}": long_text(f"v{i}", 300) for i in range(25)}),
            long_row(3, input={"q": "short", "context": long_text("context")}, expected="yes",
                     completion="yes", answer="yes", judges=None, steps=None)]
    page = render_report([document(rows)], title="x")
    assert (f"Texts are cut to {TEXT_LIMIT:,} characters a cell: a cut text says how many "
            "characters it leaves out") in page
    [island] = islands(page)
    data = {r["id"]: r for r in island["rows"]}
    for r in island["rows"]:
        for value in texts([r[k] for k in ("c", "err", "a", "e", "j", "st") if k in r]):
            assert len(shown(value)) <= TEXT_LIMIT
        # An input's variables share one cell's limit.
        assert sum(len(shown(v)) for _, v in r["in"]) <= TEXT_LIMIT

    first = data["r0000"]
    assert first["c"] == [long_text("completion 0")[:TEXT_LIMIT], LONG - TEXT_LIMIT]
    for key in ("a", "e"):
        assert first[key][1] == LONG - TEXT_LIMIT
    [[metric, score, error, said]] = first["j"]
    assert (metric, score, error, said[1]) == ("faithful", "0.5", None, LONG - TEXT_LIMIT)
    assert first["st"][0][2][1] == first["st"][0][3][1] == LONG - TEXT_LIMIT
    assert [(k, len(v[0]), v[1]) for k, v in first["in"]] == [
        ("question", TEXT_LIMIT // 2, LONG - TEXT_LIMIT // 2),
        ("context", TEXT_LIMIT // 2, LONG - TEXT_LIMIT // 2)]
    assert first["x"] == "promptctl show 01long --row r0000"
    assert data["r0001"]["err"][1] == LONG - TEXT_LIMIT and "c" not in data["r0001"]

    many = data["r0002"]["in"]  # 25 variables: 20 shown, sharing the limit; the rest counted
    assert [k for k, _ in many[:20]] == [f"v{i}" for i in range(20)] and len(many) == 21
    assert all(len(v[0]) == TEXT_LIMIT // 20 for _, v in many[:20])
    assert many[20] == [None, ["", sum(len(f"v{i}") + 300 for i in range(20, 25))]]

    short = data["r0003"]  # a short variable leaves its share to the long one
    assert short["in"] == [["q", "short"], ["context", [long_text("context")[:TEXT_LIMIT - 5],
                                                        LONG - TEXT_LIMIT + 5]]]
    assert short["c"] == short["a"] == short["e"] == "yes"


def test_a_smaller_limit_is_said_in_the_header_and_kept_in_every_cell() -> None:
    page = render_report([document([long_row(0)])], title="x", text_limit=100)
    assert "Texts are cut to 100 characters a cell" in page
    [island] = islands(page)
    assert island["rows"][0]["c"][1] == LONG - 100
    with pytest.raises(ValueError):
        render_report([document([long_row(0)])], title="x", text_limit=0)


def test_failed_requests_are_counted_by_message_each_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(html, "MAX_MESSAGES", 3)
    rows = [long_row(i, error=f"error {i % 5} " + long_text("detail"), completion=None)
            for i in range(10)]
    page = render_report([document(rows)], title="x")
    failed = page[page.index("<h3>Failed requests</h3>"):page.index("<h3>Rows")]
    assert failed.count("<li><b>2×</b> error ") == 3  # three messages, two rows each
    assert failed.count(f"… {LONG + 8 - TEXT_LIMIT:,} more characters") == 3
    assert "and 4 more failed requests, not counted by message (past 3 different ones)" in failed


# --- size and pieces ----------------------------------------------------------------------------


def test_the_file_grows_by_a_bounded_amount_a_row() -> None:
    # Seven texts of 25,000 characters a row (input, completion, answer, expected, a judge's
    # and a step's completion and answer): at most seven times the limit, and a few hundred
    # bytes of names and numbers, whatever the texts' length. Without the limit a row would
    # add 175,000 bytes.
    sizes = {n: len(render_report([document([long_row(i) for i in range(n)])], title="x",
                                  generated_at="2026-01-01T00:00:00Z").encode("utf-8"))
             for n in (10, 60)}
    per_row = (sizes[60] - sizes[10]) / 50
    assert 7 * TEXT_LIMIT < per_row < 7 * TEXT_LIMIT + 600, per_row


def test_the_page_comes_in_pieces_from_rows_read_once() -> None:
    taken: list[int] = []

    def rows() -> Iterator[dict[str, Any]]:  # read once, like the store's rows
        for i in range(150):
            taken.append(i)
            yield long_row(i)

    pieces = iter_report([document(rows())], title="x")
    assert taken == list(range(150))  # every row was read once the sections were made
    sizes = [len(p) for p in pieces]
    # The rows' data (about 2 MB) is read back from its temporary file a block at a time:
    # no piece of the page holds it whole.
    assert sum(sizes) > 2_000_000 and max(sizes) <= html.SPOOL_READ


# --- the command ----------------------------------------------------------------------------


@pytest.fixture
def long_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: FakeOpenAI) -> FakeOpenAI:
    root = tmp_path / "proj"
    (root / "prompts").mkdir(parents=True)
    (root / "evalsets").mkdir()
    (root / "prompts" / "long.yaml").write_text(
        "name: long\nmodel: gpt-4o-mini\nmessages:\n  - role: user\n    content: \"{{ text }}\"\n"
        "metrics: [format_validity]\nevalset: ../evalsets/long.jsonl\n", encoding="utf-8")
    (root / "evalsets" / "long.jsonl").write_text("".join(
        json.dumps({"id": f"doc {i}", "input": {"text": long_text(f"document {i}", 5000)}}) + "\n"
        for i in range(3)), encoding="utf-8")
    monkeypatch.chdir(root)
    api.responder = lambda body: "Summary of " + last_user_message(body)[:12] + ": " + long_text(
        "summary", 8000) + " THE END"
    return api


def test_the_report_command_cuts_each_text_and_names_the_command_for_the_rest(
        long_project: FakeOpenAI, tmp_path: Path) -> None:
    run = helpers.eval_run("prompts/long.yaml")
    out = tmp_path / "report.html"
    helpers.invoke("report", run["id"], "--text-limit", "300", "-o", str(out))
    page = out.read_text(encoding="utf-8")
    assert "Texts are cut to 300 characters a cell" in page
    [island] = islands(page)
    assert [r["id"] for r in island["rows"]] == ["doc 0", "doc 1", "doc 2"]
    first = island["rows"][0]
    assert len(first["c"][0]) == 300 and first["c"][1] > 7000
    assert first["in"][0][1][1] == 5000 - 300 and "THE END" not in page
    # The command the row names prints what the cells left out.
    assert first["x"] == f"promptctl show {run['id']} --row 'doc 0'"
    full = helpers.invoke(*shlex.split(first["x"])[1:], "--json").stdout
    [row] = json.loads(full)["rows"]
    assert row["row_id"] == "doc 0" and row["completion"].endswith("THE END")
