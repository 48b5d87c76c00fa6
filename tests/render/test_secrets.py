"""No output sink prints a secret in use: terminal tables and messages, error messages,
Markdown, JUnit and JSON all pass their text through `promptctl.redact`."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from promptctl import redact
from promptctl.render.compare import diff_markdown
from promptctl.render.jsonout import dumps
from promptctl.render.junit import check_junit
from promptctl.render.markdown import check_markdown
from tests import helpers
from tests.fakeserver import FakeOpenAI
from tests.render import gfm, hostile

SECRET = "sk-live-9f8e7d6c5b4a39281706"
ECHOED = f"key {SECRET}, basic {base64.b64encode(f'u:{SECRET}'.encode()).decode()}, " \
         f"prefix {SECRET[:12]}****"


@pytest.fixture
def secret() -> Iterator[str]:
    redact.register(SECRET, user="u")
    yield SECRET
    redact.forget_all()


def leaks(text: str) -> bool:
    basic = base64.b64encode(f"u:{SECRET}".encode()).decode()
    return SECRET in text or SECRET[:12] in text or basic[4:20] in text


def test_every_report_format_masks_the_secret(secret: str) -> None:
    result = hostile.check_result(ECHOED)
    for markdown in (check_markdown(result), diff_markdown(hostile.diff_result(ECHOED))):
        assert not leaks(markdown), markdown
        assert redact.MASK in gfm.cmark(markdown).text  # shown as *** on GitHub
    for text in (check_junit(result), dumps(result.to_json())):
        assert not leaks(text), text
        assert redact.MASK in text


def test_terminal_output_and_errors_mask_the_secret(secret: str, echo_project: Path,
                                                    api: FakeOpenAI) -> None:
    api.responder = lambda body: f"echo: Question {ECHOED}"
    run = helpers.eval_run("prompts/echo.yaml")
    for args in (["show", run["id"]], ["show", run["id"], "--json"], ["runs"],
                 ["show", ECHOED], ["history", ECHOED]):
        result = helpers.run_cli(*args)
        assert result.exit_code in (0, 2), result.stderr
        assert not leaks(result.stdout + result.stderr), (args, result.stdout, result.stderr)
    assert redact.MASK in helpers.invoke("show", run["id"]).stdout
    assert redact.MASK in helpers.run_cli("show", ECHOED).stderr
