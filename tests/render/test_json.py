"""Every `--json` document is strict JSON with the exact text of the data: NaN and infinities
(which JSON has no form for) are null, characters a terminal acts on are \\u escapes that parse
back to themselves."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from promptctl.render.jsonout import dumps
from tests import helpers
from tests.fakeserver import FakeOpenAI
from tests.render.hostile import ACTS_ON_TERMINAL, EVERY_ESCAPE


def strict(text: str) -> Any:
    """`text` parsed as JSON proper: NaN, Infinity and -Infinity are refused."""
    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_become_null_wherever_they_are() -> None:
    document = {"a": float("nan"), "b": [1.5, float("inf"), {"c": -float("inf")}], "d": (2, 3)}
    assert strict(dumps(document)) == {"a": None, "b": [1.5, None, {"c": None}], "d": [2, 3]}


def test_text_is_exact_and_nothing_in_it_reaches_the_terminal() -> None:
    text = EVERY_ESCAPE + " \ud800 \u2028 é ✓"
    out = dumps({"completion": text, text: 1})
    assert ACTS_ON_TERMINAL.search(out) is None
    out.encode("utf-8")  # the lone surrogate is an escape, not an encoding error
    assert strict(out) == {"completion": text, text: 1}
    assert "é ✓" in out  # readable text stays readable


def test_numbers_of_other_types_stay_numbers() -> None:
    np = pytest.importorskip("numpy")
    assert strict(dumps({"x": np.float64(0.5), "n": np.int64(3), "bad": np.float64("nan")})) == {
        "x": 0.5, "n": 3, "bad": None}


@pytest.fixture
def stored(echo_project: Path, api: FakeOpenAI, tmp_path: Path) -> tuple[str, str]:
    """Two runs of the echo prompt, then a store damaged the way a crash or an old version can
    leave it: an infinite latency, NaN and infinite scores, a NaN metric and percentile."""
    first = helpers.eval_run("prompts/echo.yaml")["id"]
    second = helpers.eval_run("prompts/echo.yaml", "--no-cache")["id"]
    with sqlite3.connect(helpers.store_db(tmp_path)) as conn:
        conn.execute("UPDATE rows SET latency_ms = ? WHERE run_id = ?", (float("inf"), first))
        conn.execute("UPDATE rows SET scores = ? WHERE run_id = ? AND row_id = 'r1'",
                     ('{"exact_match": NaN, "format_validity": Infinity}', first))
        summary, metrics = conn.execute("SELECT summary, metrics FROM runs WHERE id = ?",
                                        (first,)).fetchone()
        summary = json.loads(summary)
        summary["latency_ms"]["p50"] = float("nan")
        summary["cost_usd"] = float("inf")
        metrics = json.loads(metrics)
        metrics["exact_match"]["value"] = float("nan")
        conn.execute("UPDATE runs SET summary = ?, metrics = ? WHERE id = ?",
                     (json.dumps(summary), json.dumps(metrics), first))
    return first, second


def test_every_json_command_is_strict_on_a_store_with_nan(stored: tuple[str, str]) -> None:
    """A run holding non-finite numbers is malformed: the commands that list runs leave it
    out with a warning and print strict JSON; naming it is an error that says what is wrong."""
    first, second = stored
    refused = helpers.invoke("show", first, "--json", code=2)
    assert refused.stdout == "" and "not a finite number" in refused.stderr
    assert "promptctl store check" in refused.stderr
    listed = helpers.invoke("runs", "--json")
    assert [r["id"] for r in strict(listed.stdout)["runs"]] == [second]
    assert first in listed.stderr
    strict(helpers.invoke("history", "echo", "--json").stdout)
    assert "not a finite number" in helpers.invoke("diff", first, second, "--json",
                                                   code=2).stderr
    shown = strict(helpers.invoke("show", second, "--json").stdout)
    assert shown["run"]["id"] == second


def test_a_row_stored_with_internal_markers_shows_only_its_scores() -> None:
    from promptctl.render.jsonout import row_json

    # As older versions stored a row whose judge gave no score (and a pipeline step's).
    stored = {"row_id": "r1", "scores": {"exact_match": 1.0, "faithful__unscored": 1},
              "steps": {"s": {"scores": {"long__unscored": 1, "format_validity": 1.0},
                              "items": [{"scores": {"x__unscored": 1}}]}}}
    shown = row_json(stored)
    assert shown["scores"] == {"exact_match": 1.0}
    assert shown["steps"]["s"]["scores"] == {"format_validity": 1.0}
    assert shown["steps"]["s"]["items"][0]["scores"] == {}
    assert stored["scores"] == {"exact_match": 1.0, "faithful__unscored": 1}  # not changed
