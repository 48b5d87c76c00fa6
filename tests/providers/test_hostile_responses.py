"""Whatever a server sends back becomes a row's answer or a row's error: never a crash, never
a rolled-back cache, never a secret in the output.

The fake server rewrites its chat completion documents (`reshape`) into what a broken or
hostile server might send; the real openai SDK reads them over HTTP.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakeserver import Body, FakeOpenAI, error_body, last_user_message
from tests.helpers import eval_json, invoke, show_rows, use_fake_openai

KEY = "sk-test-hostile-71c4e9a2d05b8f36"


@pytest.fixture
def api(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, project: Path) -> FakeOpenAI:
    return use_fake_openai(monkeypatch, fake_openai, KEY)


def for_row(word: str, change: Any) -> Any:
    """A reshaper that applies `change` to the answer of the row asking about `word` only."""
    def reshape(body: Body, document: Body) -> Body | bytes:
        if last_user_message(body) == f"Question {word}":
            return change(document)  # type: ignore[no-any-return]
        return document
    return reshape


def raw(document: Body, **replace: str) -> bytes:
    """The document as JSON text, with some values replaced by raw JSON text."""
    text = json.dumps(document)
    for key, value in replace.items():
        text = text.replace(f'"{key}": "__{key}__"', f'"{key}": {value}')
    return text.encode()


def rows_by_id(run_id: str) -> dict[str, dict[str, Any]]:
    return {r["row_id"]: r for r in show_rows(run_id) if r["kind"] == "eval"}


def test_a_lone_surrogate_in_the_content_is_replaced_not_fatal(api: FakeOpenAI) -> None:
    def change(doc: Body) -> bytes:
        doc["choices"][0]["message"]["content"] = "__content__"
        return raw(doc, content='"echo: Question two \\ud800 tail"')
    api.reshape = for_row("two", change)
    run, _ = eval_json("prompts/echo.yaml")
    assert run["errors"] == 0 and run["n"] == 5
    row = rows_by_id(run["id"])["r2"]
    assert row["completion"] == "echo: Question two \ufffd tail"
    assert row["answer"] == "two"
    assert run["metrics"]["exact_match"]["value"] == 1.0


@pytest.mark.parametrize(("field", "value"), [
    ("model", {"nested": ["not", "a", "name"]}),
    ("model", 12345),
    ("system_fingerprint", ["a", "list"]),
])
def test_fields_of_the_wrong_type_are_left_out(api: FakeOpenAI, field: str, value: Any) -> None:
    def change(doc: Body) -> Body:
        doc[field] = value
        return doc
    api.reshape = for_row("three", change)
    run, _ = eval_json("prompts/echo.yaml")
    assert run["errors"] == 0
    row = rows_by_id(run["id"])["r3"]
    assert row["answer"] == "three"
    assert row["response_model" if field == "model" else "system_fingerprint"] is None


def test_token_counts_no_store_can_hold_are_dropped(api: FakeOpenAI) -> None:
    def change(doc: Body) -> bytes:
        doc["usage"]["prompt_tokens"] = "__prompt_tokens__"
        doc["usage"]["completion_tokens"] = "__completion_tokens__"
        return raw(doc, prompt_tokens=str(2**63 + 5), completion_tokens="-4")
    api.reshape = for_row("one", change)
    run, _ = eval_json("prompts/echo.yaml")
    assert run["errors"] == 0
    row = rows_by_id(run["id"])["r1"]
    assert row["prompt_tokens"] is None and row["completion_tokens"] is None
    assert row["answer"] == "one"


def test_a_deeply_nested_body_is_a_row_error(api: FakeOpenAI) -> None:
    api.reshape = for_row("four", lambda doc: b'{"choices": ' + b"[" * 200_000 + b"]" * 200_000 + b"}")
    run, result = eval_json("prompts/echo.yaml", code=3)
    assert run["errors"] == 1 and run["n"] == 5
    row = rows_by_id(run["id"])["r4"]
    assert "malformed response" in row["error"]
    assert "Traceback" not in result.stderr
    # The other rows are answered and scored; a resume sends only the failed row.
    assert run["metrics"]["exact_match"]["n"] == 4
    api.reshape = None
    sent = len(api.chat_requests)
    resumed, _ = eval_json("--resume", run["id"])
    assert resumed["errors"] == 0 and len(api.chat_requests) == sent + 1


def test_a_body_that_is_not_a_completion_is_a_row_error(api: FakeOpenAI) -> None:
    api.reshape = for_row("five", lambda doc: b'["not", "an", "object"]')
    run, _ = eval_json("prompts/echo.yaml", code=3)
    assert "no choices[0].message" in rows_by_id(run["id"])["r5"]["error"]


def test_tool_calls_and_null_content_are_shown_as_no_text_answer_and_not_scored(
        api: FakeOpenAI) -> None:
    def tool(doc: Body) -> Body:
        doc["choices"][0]["message"] = {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}
        return doc

    def null(doc: Body) -> Body:
        doc["choices"][0]["message"]["content"] = None
        return doc

    api.reshape = lambda body, doc: (tool(doc) if "two" in last_user_message(body)
                                     else null(doc) if "three" in last_user_message(body) else doc)
    run, _ = eval_json("prompts/echo.yaml")
    assert run["errors"] == 0
    rows = rows_by_id(run["id"])
    assert rows["r2"]["extract_error"] == "no text answer: the model called a tool (get_weather)"
    assert rows["r3"]["extract_error"] == "no text answer: the message content was null"
    assert rows["r2"]["scores"] == {} and rows["r2"]["completion"] is None
    # Not scored as wrong answers: the metrics rest on the three rows that answered in text.
    assert (run["metrics"]["exact_match"]["value"], run["metrics"]["exact_match"]["n"]) == (1.0, 3)
    assert run["no_text"] == 2
    assert "no text answer 2" in invoke("show", run["id"]).stdout
    shown = invoke("show", run["id"]).stdout
    assert "no text answer: the model called a tool (get_weather)" in shown


def test_content_as_a_list_of_parts_is_joined(api: FakeOpenAI) -> None:
    def parts(doc: Body) -> Body:
        doc["choices"][0]["message"]["content"] = [
            {"type": "text", "text": "echo: Question "}, {"type": "image_url", "image_url": {}},
            {"type": "text", "text": "one"}]
        return doc
    api.reshape = for_row("one", parts)
    run, _ = eval_json("prompts/echo.yaml")
    row = rows_by_id(run["id"])["r1"]
    assert row["completion"] == "echo: Question one" and row["answer"] == "one"


def test_rows_from_the_cache_stay_stored_when_a_later_answer_is_hostile(api: FakeOpenAI,
                                                                      project: Path) -> None:
    first, _ = eval_json("prompts/echo.yaml", "--limit", "3")
    api.reshape = for_row("five", lambda doc: b"{" * 100)
    run, _ = eval_json("prompts/echo.yaml", code=3)
    rows = rows_by_id(run["id"])
    assert [rows[f"r{i}"]["cached"] for i in (1, 2, 3)] == [True, True, True]
    assert rows["r4"]["answer"] == "four" and rows["r5"]["error"]
    assert first["n"] == 3


# --- retries the server asks for ----------------------------------------------------------


def test_a_retry_after_beyond_the_cap_is_still_retried_and_said(api: FakeOpenAI) -> None:
    from promptctl.providers import openai as provider

    # The cap is what matters, not its size: a test need not wait a minute.
    api.fail_next(10, status=429, retry_after=3600)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(provider, "MAX_RETRY_AFTER", 0.2)
        run, result = eval_json("prompts/echo.yaml", "--limit", "1", "--concurrency", "1", code=3)
    (row,) = rows_by_id(run["id"]).values()
    assert row["attempts"] == 5  # retried, not given up at the first 429
    assert "the server asked to wait 3600 s before retrying" in row["error"]
    gaps = [b.timestamp - a.timestamp for a, b in zip(api.chat_requests, api.chat_requests[1:],
                                                      strict=False)]
    assert min(gaps) >= 0.15  # the capped wait was honoured


# --- credentials in URLs --------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


URL_SECRET = "p4ss-w0rd-9e1d7c5b3a"


@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_credentials_in_the_base_url_are_sent_but_never_stored_or_shown(
        fake_openai: FakeOpenAI, project: Path, form: str) -> None:
    base = fake_openai.base_url
    if form == "userinfo":
        url = base.replace("http://", f"http://alice:{URL_SECRET}@")
    else:
        url = f"{base}?api_key={URL_SECRET}&api-version=2024-06-01"
    (project / "promptctl.yaml").write_text(f"endpoints:\n  gw: {{base_url: '{url}'}}\n",
                                            encoding="utf-8")
    auth = basic("alice", URL_SECRET)
    # The server's error quotes the Authorization header, the query it got and a prefix of the
    # secret: every form must be masked wherever promptctl writes it.
    message = f"denied for Basic {auth} (key {URL_SECRET[:9]}...) query api_key={URL_SECRET}"
    fake_openai.fail_next(5, status=503, body=error_body(503, message))
    run, result = eval_json("prompts/echo.yaml", "--model", "gw/gpt-4o-mini", "--concurrency",
                            "1", code=3)
    first = fake_openai.chat_requests[0]
    assert first.path == "/v1/chat/completions"  # the query form builds a proper path
    if form == "userinfo":
        assert first.headers["authorization"] == f"Basic {auth}"
    else:
        assert f"api_key={URL_SECRET}" in first.query and "api-version=2024-06-01" in first.query
    assert run["errors"] == 1 and run["n"] == 5  # the other rows were answered
    stored = json.loads(invoke("runs", "--json").stdout)
    everything = (json.dumps(run) + result.stdout + result.stderr + json.dumps(stored)
                  + invoke("show", run["id"]).stdout + json.dumps(show_rows(run["id"])))
    for leaked in (URL_SECRET, auth, URL_SECRET[:9]):
        assert leaked not in everything
    (error,) = [r["error"] for r in show_rows(run["id"]) if r.get("error")]
    # Every form masked (in the query form the user "alice" is not a secret, so the base64
    # text of "alice:" may stay: it decodes to nothing secret).
    assert error.count("***") >= 3 and error.startswith("HTTP 503: denied for Basic ")


def test_a_url_with_a_fragment_or_another_scheme_is_refused(project: Path) -> None:
    for url in ("ftp://host/v1", "http://host/v1#frag", "http://[::1/v1"):
        (project / "promptctl.yaml").write_text(f"endpoints:\n  gw: {{base_url: '{url}'}}\n",
                                                encoding="utf-8")
        result = invoke("eval", "prompts/echo.yaml", "--model", "gw/m", code=2)
        assert "base_url of endpoint 'gw'" in result.stderr
