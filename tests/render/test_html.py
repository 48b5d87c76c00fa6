"""The HTML report: built from real runs (the fake server over real HTTP, a real git
repository, the real CLI) and opened in Debian's headless Chromium through chromedriver.

The eval set, the completions and the commit subjects carry hostile text: scripts,
event handlers, `javascript:` links, tags that close the page's own elements,
bidirectional overrides, control bytes, and loads aimed at a local HTTP server that
counts every request it gets. The report must show all of it as text, run none of
it and load nothing, with its Content-Security-Policy and without it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from promptctl import index_install_command, install_command
from promptctl.render.html import CSP, render_report, row_failed, sanitize_svg, text
from tests.checkrepo import Repo, prompt_text
from tests.fakeserver import FakeOpenAI, last_user_message
from tests.helpers import git, git_init, invoke, run_cli

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,2000")
TITLE = "promptctl report: review"


# --- a local server that counts what reaches it ------------------------------------------------


class Counter:
    """An HTTP server on 127.0.0.1 that answers 204 and records every path asked for."""

    def __init__(self) -> None:
        hits = self.hits = []

        class Handler(BaseHTTPRequestHandler):
            def _hit(self) -> None:
                hits.append(self.path)
                self.send_response(204)
                self.end_headers()

            do_GET = do_POST = do_HEAD = do_OPTIONS = _hit

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def counter() -> Iterator[Counter]:
    c = Counter()
    yield c
    c.close()


# --- hostile text -------------------------------------------------------------------------------


def payloads(url: str) -> list[str]:
    """Text that runs script or loads `url` wherever it is not escaped."""
    return [
        "<script>document.title='pwned';window.pwned=1</script>",
        f"<img src=\"{url}/img\" onerror=\"document.title='pwned';window.pwned=1\">",
        "<a href=\"javascript:document.title='pwned'\">open me</a>",
        "</textarea></script></style></td></tr></table><script>window.pwned=1</script>",
        "]]><![CDATA[<script>window.pwned=1</script>]]>",
        f"<iframe src=\"{url}/iframe\"></iframe><object data=\"{url}/object\"></object>",
        f"<link rel=stylesheet href=\"{url}/css\"><style>@import '{url}/import';</style>",
        f"<meta http-equiv=\"refresh\" content=\"0;url={url}/refresh\">",
        "<svg onload=\"window.pwned=1\"><foreignObject><p>x</p></foreignObject></svg>",
        "evil\u202etxt.exe and \u2066isolate\u2069 and a mark\u200f here",
        "bell\x07 escape\x1b[31m delete\x7f c1\x85 nul\x00 end",
        "tag chars \U000e0041\U000e0042 hidden",
    ]


PROMPT = """\
name: review
model: gpt-4o-mini
messages:
  - role: system
    content: "Repeat the word. VERSION"
  - role: user
    content: "Word: {{ word }}"
output:
  pattern: 'Answer: (?P<answer>[^\\n]+)'
  type: string
metrics: [exact_match, format_validity]
evalset: ../evalsets/review.jsonl
"""
SEARCH_WORD = "zebracrossing"  # in one row only


def evalset(url: str) -> list[dict[str, Any]]:
    words = [*payloads(url), "apple", SEARCH_WORD, "banana", "cherry"]
    rows = []
    for i, word in enumerate(words, 1):
        # Every third row expects another word: a failure in both versions.
        expected = word if i % 3 else f"<b>not {i}</b>"
        rows.append({"id": f"r{i:02d}", "input": {"word": word}, "expected": expected})
    return rows


def responder(url: str) -> Any:
    hostile = payloads(url)

    def reply(body: dict[str, Any]) -> str:
        system = str(body["messages"][0]["content"])
        word = last_user_message(body).removeprefix("Word: ")
        note = hostile[len(word) % len(hostile)]
        if "V2" in system and word == "banana":
            return f"I will not answer. {note}"  # no answer: format_validity 0
        if "V2" in system and word == "apple":
            return f"Answer: pear\n{note}"  # passed in V1, fails in V2
        return f"Answer: {word}\nNote: {note}"

    return reply


@dataclass
class Project:
    root: Path
    store: str
    a: str
    b: str
    show: dict[str, Any]
    diff: dict[str, Any]
    history: dict[str, Any]
    report: Path


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, counter: Counter) -> Iterator[Project]:
    """Two versions of a prompt, each committed and evaluated, then reported by the CLI."""
    base = tmp_path_factory.mktemp("report")
    root = git_init(base / "proj")
    store = f"sqlite:///{base / 'store.db'}"
    with FakeOpenAI() as server, pytest.MonkeyPatch.context() as mp:
        server.responder = responder(counter.url)
        for key, value in {"PROMPTCTL_STORE": store, "OPENAI_BASE_URL": server.base_url,
                           "OPENAI_API_KEY": "sk-0q9w8e7r6t5y4u", "NO_COLOR": "1",
                           "GIT_AUTHOR_NAME": "Mallory & Eve's \"crew\"",
                           "GIT_AUTHOR_EMAIL": "m@example.invalid",
                           "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "t@example.invalid",
                           "GIT_CONFIG_NOSYSTEM": "1"}.items():
            mp.setenv(key, value)
        mp.chdir(root)
        (root / "prompts").mkdir()
        (root / "evalsets").mkdir()
        (root / "evalsets" / "review.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in evalset(counter.url)), encoding="utf-8")
        ids = []
        for version, subject in (("V1", f"first <img src=\"{counter.url}/subject\" "
                                        "onerror=\"window.pwned=1\">"),
                                 ("V2", "second \u202etxt.exe <script>window.pwned=1</script>")):
            (root / "prompts" / "review.yaml").write_text(PROMPT.replace("VERSION", version),
                                                         encoding="utf-8")
            git(root, "add", "-A")
            git(root, "commit", "-q", "-m", subject)
            out = invoke("eval", "prompts/review.yaml", "--json").stdout
            ids.append(json.loads(out)["runs"][0]["id"])
        a, b = ids
        show = json.loads(invoke("show", b, "--json").stdout)
        diff = json.loads(invoke("diff", a, b, "--json").stdout)
        history = json.loads(invoke("history", "review", "--json").stdout)
        report = base / "out" / "report.html"
        result = invoke("report", b, "--diff", a, b, "--history", "review", "-o", str(report))
        assert "wrote" in result.stdout
    yield Project(root, store, a, b, show, diff, history, report)


# --- rows with judges and pipeline steps (as the store will carry them) ----------------------


def synthetic_document(url: str) -> dict[str, Any]:
    """A run whose names, model and rows are hostile, with LLM-judge completions and steps."""
    hostile = payloads(url)
    run = {"id": "01synthetic0001", "prompt": hostile[0], "prompt_path": hostile[1],
           "prompt_version": "f" * 64, "git_commit": hostile[2], "git_dirty": True,
           "git_branch": hostile[3], "model": hostile[1], "endpoint": hostile[5],
           "evalset": hostile[6], "evalset_version": "e" * 64, "status": "complete",
           "created_at": "2026-01-01T00:00:00Z", "n": 3, "errors": 1,
           "metrics": {hostile[1]: {"value": 0.5, "n": 2, "ci95": [0.1, 0.9]},
                       hostile[9]: {"value": 2.0, "n": 2, "ci95": [1.0, 3.0]}},
           "fewshot_metrics": {}, "tokens": {"prompt": 30, "completion": 9}, "cost_usd": 0.00012,
           "latency_ms": {"p50": 10.0, "p75": 12.0, "p90": 14.0, "p99": 15.0}, "cached": 0,
           "retries": 2, "system_fingerprints": [hostile[8]], "consistency": None,
           "kind": "pipeline", "steps": {hostile[4]: {"metrics": {
               "exact_match": {"value": 1.0, "n": 2, "ci95": [1.0, 1.0]}}}},
           "composability_gap": {"value": 0.5, "n": 2}}

    def row(i: int, **extra: Any) -> dict[str, Any]:
        return {"run_id": run["id"], "kind": "eval", "position": i, "row_id": f"s{i}", "sample": 0,
                "input": {hostile[i]: hostile[i + 1]}, "expected": hostile[i + 2],
                "has_expected": True, "completion": hostile[i + 3], "answer": hostile[i + 4],
                "valid": True, "extract_error": None, "scores": {"exact_match": 1.0},
                "prompt_tokens": 10, "completion_tokens": 3, "latency_ms": 10.0 + i,
                "error": None, "cached": False, **extra}

    rows = [
        row(0, answer="lone\ud800surrogate",
            judges={"faithful": {"completion": "JUDGE-SAID " + hostile[0], "score": 0.75,
                                 "error": None}},
            steps={"route": {"answer": "billing " + hostile[1], "completion": "STEP-SAID "
                             + hostile[2], "skipped": False, "error": None},
                   "refund": {"answer": None, "completion": None, "skipped": True,
                              "error": None}}),
        row(1, judges={"faithful": {"completion": hostile[3], "score": None,
                                    "error": "JUDGE-ERROR " + hostile[4]}},
            steps={"route": {"answer": None, "completion": None, "skipped": False,
                             "error": "STEP-ERROR " + hostile[5]}}),
        row(2, error="REQUEST-ERROR " + hostile[6], completion=None, answer=None, valid=None,
            scores=None),
    ]
    return {"run": run, "rows": rows}


# --- the browser ----------------------------------------------------------------------------


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: CI runs the browser tests (.ci/run installs chromium and "
                    "chromium-driver)")
    pytest.skip(reason)


class Browser:
    """Debian's Chromium, headless, through chromedriver: pages, their requests, their DOM."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def open(self, path: Path) -> list[str]:
        """Load `path`; the URLs of every request the page made."""
        self.driver.get_log("performance")  # drop what came before
        self.driver.get(path.as_uri())
        return self.requests()

    def requests(self) -> list[str]:
        urls = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
        return urls

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    chromedriver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (Path(chromium).is_file() and Path(chromedriver).is_file()):
        _unavailable("Chromium or chromedriver is not installed (apt-get install chromium "
                     "chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[test]')")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SE_OFFLINE", "true")  # selenium must not look for drivers on the network
        driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    try:
        yield Browser(driver)
    finally:
        driver.quit()


def wait_for(browser: Browser, script: str, expected: Any) -> Any:
    """Poll `script` until it returns `expected` (the page's filter is debounced)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser.driver, 10).until(lambda _d: browser.js(script) == expected)
    return expected


# What the DOM must not hold: anything an escaping bug would have let in.
DOM_AUDIT = """
const bad = [];
for (const el of document.querySelectorAll('*')) {
  for (const attr of el.attributes) {
    if (attr.name.startsWith('on')) bad.push(el.tagName + ' ' + attr.name);
    if (/^(href|src|action|formaction|data|xlink:href)$/.test(attr.name)
        && !(el.tagName === 'A' && attr.value.startsWith('#'))) bad.push(el.tagName + ' ' + attr.name);
  }
}
const tags = ['img', 'iframe', 'object', 'embed', 'link', 'textarea', 'foreignObject',
              'a[href^="javascript"]', 'meta[http-equiv="refresh"]', 'base', 'form', 'audio',
              'video', 'source'];
for (const t of tags) { if (document.querySelector(t)) bad.push(t); }
const data = document.querySelectorAll('script[type="application/json"].rowdata').length;
return {bad: bad, scripts: document.scripts.length - data, styles: document.querySelectorAll('style').length,
        title: document.title, pwned: typeof window.pwned, body: document.body.innerText};
"""


def audit(browser: Browser, expected_title: str) -> dict[str, Any]:
    found: dict[str, Any] = browser.js(DOM_AUDIT)
    assert found["bad"] == [], found["bad"]
    assert found["title"] == expected_title
    assert found["pwned"] == "undefined"
    assert found["scripts"] == 1 and found["styles"] == 1
    return found


# --- tests: the real report in the browser ------------------------------------------------


def test_the_report_has_runs_diff_history_with_their_numbers(project: Project, browser: Browser,
                                                             tmp_path: Path) -> None:
    browser.open(project.report)
    assert browser.driver.title == TITLE
    sections = browser.js("return [...document.querySelectorAll('main > section')]"
                          ".map(s => [s.id, s.className, s.querySelectorAll('svg').length])")
    assert [s[:2] for s in sections] == [["run-1", "run"], ["diff-1", "diff"],
                                         ["history-1", "history"]]
    assert all(s[2] >= 1 for s in sections), sections  # every section has its chart

    # The run's metrics, exactly as `show --json` has them.
    shown = browser.js("""return Object.fromEntries([...document.querySelectorAll(
        '#run-1 table.metrics:not(.fewshot) tbody tr')].map(tr => [tr.dataset.metric,
        [...tr.querySelectorAll('td[data-value]')].map(td => Number(td.dataset.value))]))""")
    metrics = project.show["run"]["metrics"]
    assert set(shown) == {"exact_match", "format_validity"}
    for name, (value, n) in shown.items():
        assert (value, n) == (metrics[name]["value"], metrics[name]["n"])
    stats = browser.js("return [...document.querySelectorAll('#run-1 .stat')].map(s => "
                       "[s.querySelector('.sn').textContent, s.querySelector('.sv').dataset.value])")
    stat = {k: float(v) for k, v in stats if v is not None}
    run = project.show["run"]
    assert stat["rows"] == run["n"] == 16
    assert stat["prompt tokens"] == run["tokens"]["prompt"]
    assert stat["latency p90"] == run["latency_ms"]["p90"]
    assert stat["cost (as if uncached)"] == run["cost_usd"]
    assert stat["paid now"] == run["spent_usd"]
    assert stat["saved by the cache"] == run["saved_usd"]

    # Every eval row is in the table, each failure marked.
    eval_rows = [r for r in project.show["rows"] if r["kind"] == "eval"]
    marks = browser.js("return [...document.querySelectorAll('#run-1 div.rows[data-kind=eval] "
                       "tbody tr')].map(tr => [tr.cells[0].textContent, tr.classList.contains('f')])")
    assert marks == [[r["row_id"], row_failed(r)] for r in eval_rows]
    assert sum(f for _, f in marks) == 6  # five expect another word, banana has no answer

    # The diff: deltas and p-values as `diff --json` has them; the flipped rows side by side.
    deltas = browser.js("""return Object.fromEntries([...document.querySelectorAll(
        '#diff-1 table.deltas tbody tr')].map(tr => [tr.dataset.metric,
        [...tr.querySelectorAll('td[data-value]')].map(td => Number(td.dataset.value))]))""")
    for name, m in project.diff["metrics"].items():
        assert deltas[name] == [m["a"], m["b"], m["delta"], m["p_value"], m["n"]]
    assert project.diff["metrics"]["exact_match"]["delta"] < 0
    flipped = browser.js("return [...document.querySelectorAll('#diff-1 table.flips')]"
                         ".map(t => [t.dataset.group, t.tBodies[0].rows.length])")
    assert ["pass_to_fail", 1] in flipped  # apple: pear in V2
    apple = browser.js("const tr = document.querySelector('#diff-1 table.flips[data-group=pass_to_fail]"
                       " tbody tr'); return [...tr.cells].map(td => td.innerText)")
    assert "apple" in apple[1] and "answer apple" in apple[2] and "answer pear" in apple[3]

    # The history: one line per commit, newest first, with its subject and date, as text.
    lines = browser.js("return [...document.querySelectorAll('#history-1 table.versions tbody tr')]"
                       ".map(tr => [...tr.cells].map(td => td.textContent))")
    versions = project.history["versions"]
    # Each line's number counts from the oldest, as the charts number the points.
    assert [line[0] for line in lines] == [str(len(versions) - i) for i in range(len(versions))]
    lines = [line[1:] for line in lines]
    assert [line[0] for line in lines] == [v["date"] for v in versions]
    assert [line[1] for line in lines] == [v["git_commit"][:12] for v in versions]
    assert lines[1][2] == versions[1]["subject"]
    assert lines[1][2].startswith("first <img src=")
    assert lines[0][3] == versions[0]["author"]
    assert lines[0][3].startswith("Mallory & Eve's \"crew")  # git drops <, > and a last quote

    shot = tmp_path / "report.png"
    assert browser.driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_hostile_text_is_shown_and_nothing_runs_or_loads(project: Project, browser: Browser,
                                                         counter: Counter, tmp_path: Path) -> None:
    page = tmp_path / "all.html"
    page.write_text(render_report([project.show, synthetic_document(counter.url)], [project.diff],
                                  [project.history], title="hostile"), encoding="utf-8")
    for path, title in ((project.report, TITLE), (page, "hostile")):
        requests = browser.open(path)
        assert requests == [path.as_uri()]
        found = audit(browser, title)
        body = found["body"]
        # Shown as text: the payloads, and the marks for the invisible characters.
        assert "<script>document.title='pwned';window.pwned=1</script>" in body
        assert f"<img src=\"{counter.url}/img\"" in body
        assert "</textarea></script></style></td></tr></table>" in body
        assert "evilU+202Etxt.exe" in body and "U+2066isolateU+2069" in body
        assert "bellU+0007" in body and "nulU+0000" in body and "U+E0041U+E0042" in body
        for raw in ("\u202e", "\u2066", "\x07", "\x1b", "\x00", "\U000e0041"):
            assert raw not in browser.js("return document.documentElement.outerHTML")
    assert counter.hits == []


def test_escaping_alone_keeps_the_payloads_inert(project: Project, browser: Browser,
                                                 counter: Counter, tmp_path: Path) -> None:
    # The same reports with the Content-Security-Policy removed: only the escaping is left.
    for name, document in (("real", project.report.read_text(encoding="utf-8")),
                           ("synthetic", render_report([synthetic_document(counter.url)],
                                                       title="hostile"))):
        page = tmp_path / f"{name}-no-csp.html"
        stripped = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", document)
        assert stripped != document
        page.write_text(stripped, encoding="utf-8")
        requests = browser.open(page)
        assert requests == [page.as_uri()]
        audit(browser, TITLE if name == "real" else "hostile")
    assert counter.hits == []


def test_the_policy_alone_blocks_loads_and_foreign_script(project: Project, browser: Browser,
                                                          counter: Counter, tmp_path: Path) -> None:
    # Injected through the driver, past the escaping: only the policy stands in the way.
    inject = """
    const [url, done] = arguments;
    const img = new Image();
    const loaded = new Promise(resolve => { img.onload = img.onerror = resolve; });
    img.src = url + '/injected-img';
    document.body.appendChild(img);
    const fetched = fetch(url + '/injected-fetch', {mode: 'no-cors'}).catch(() => null);
    const s = document.createElement('script');
    s.textContent = 'window.pwned = 1';
    document.body.appendChild(s);
    Promise.all([loaded, fetched]).then(() => done(typeof window.pwned));
    """
    browser.open(project.report)
    assert browser.driver.execute_async_script(inject, counter.url) == "undefined"
    assert counter.hits == []
    # The same injection without the policy does reach the server: the check above can fail.
    naked = tmp_path / "no-csp.html"
    naked.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "",
                            project.report.read_text(encoding="utf-8")), encoding="utf-8")
    browser.open(naked)
    assert browser.driver.execute_async_script(inject, counter.url) == "number"
    assert sorted(counter.hits) == ["/injected-fetch", "/injected-img"]
    counter.hits.clear()


def test_search_box_and_failures_filter(project: Project, browser: Browser) -> None:
    from selenium.webdriver.common.by import By

    browser.open(project.report)
    block = "#run-1 div.rows[data-kind=eval]"
    visible = (f"return [...document.querySelectorAll('{block} tbody tr')]"
               ".filter(tr => !tr.hidden).map(tr => tr.cells[0].textContent).join(',')")
    count = f"return document.querySelector('{block} output.count').textContent"
    eval_rows = [r for r in project.show["rows"] if r["kind"] == "eval"]
    every = ",".join(r["row_id"] for r in eval_rows)
    failed = ",".join(r["row_id"] for r in eval_rows if row_failed(r))
    assert browser.js(visible) == every

    search = browser.driver.find_element(By.CSS_SELECTOR, f"{block} input.search")
    search.send_keys(SEARCH_WORD.upper())
    [row] = [r["row_id"] for r in eval_rows if r["input"]["word"] == SEARCH_WORD]
    wait_for(browser, visible, row)
    assert browser.js(count) == "1 of 16 rows"

    search.clear()
    search.send_keys("pwned")  # in the text of the hostile rows, shown as text
    expected = ",".join(r["row_id"] for r in eval_rows if "pwned" in json.dumps(r["input"])
                        + (r["completion"] or "") + json.dumps(r["expected"]))
    wait_for(browser, visible, expected)

    browser.js(f"const s = document.querySelector('{block} input.search'); s.value = '';"
               "s.dispatchEvent(new Event('input'))")
    wait_for(browser, visible, every)
    browser.driver.find_element(By.CSS_SELECTOR, f"{block} input.failures").click()
    wait_for(browser, visible, failed)
    assert browser.js(count) == f"{failed.count(',') + 1} of 16 rows"
    search.send_keys("banana")
    wait_for(browser, visible, "r15")  # a failure that matches the search


def test_long_tables_show_a_page_at_a_time_and_search_them_all(browser: Browser,
                                                                 tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    rows = [{"row_id": f"q{i:03d}", "kind": "eval", "sample": 0, "input": {"text": f"item {i}"},
             "expected": "yes", "completion": "Answer: " + ("yes" if i % 5 else "no"),
             "answer": "yes" if i % 5 else "no", "valid": True, "error": None,
             "scores": {"exact_match": 1.0 if i % 5 else 0.0}} for i in range(450)]
    page = tmp_path / "long.html"
    page.write_text(render_report([{"run": {"id": "01long", "prompt": "long"}, "rows": rows}],
                                  title="long"), encoding="utf-8")
    browser.open(page)
    block = "#run-1 div.rows[data-kind=eval]"
    state = (f"const b = document.querySelector('{block}'); return [b.querySelectorAll('tbody tr')"
             ".length, b.querySelector('output.count').textContent, b.querySelector('button.more')"
             ".hidden, b.querySelector('button.more').textContent]")
    assert browser.js(state) == [200, "450 of 450 rows (200 shown)", False, "Show 200 more rows"]
    more = browser.driver.find_element(By.CSS_SELECTOR, f"{block} button.more")
    more.click()
    assert browser.js(state) == [400, "450 of 450 rows (400 shown)", False, "Show 50 more rows"]
    more.click()
    assert browser.js(state)[:3] == [450, "450 of 450 rows", True]
    # Search and the filter see every row, shown or not.
    browser.driver.find_element(By.CSS_SELECTOR, f"{block} input.search").send_keys("item 449")
    wait_for(browser, state, [1, "1 of 450 rows", True, "Show 0 more rows"])
    browser.js(f"const s = document.querySelector('{block} input.search'); s.value = '';"
               "s.dispatchEvent(new Event('input'))")
    browser.driver.find_element(By.CSS_SELECTOR, f"{block} input.failures").click()
    wait_for(browser, state, [90, "90 of 450 rows", True, "Show 0 more rows"])
    assert browser.js(f"return [...document.querySelectorAll('{block} tbody tr')].every("
                      "tr => tr.className === 'f' && tr.cells[2].textContent === 'Answer: no')")


def test_judges_steps_and_failed_requests_are_shown(browser: Browser, counter: Counter,
                                                    tmp_path: Path) -> None:
    page = tmp_path / "pipeline.html"
    page.write_text(render_report([synthetic_document(counter.url)], title="pipeline"),
                    encoding="utf-8")
    browser.open(page)
    cells = browser.js("return [...document.querySelectorAll('#run-1 div.rows tbody tr')]"
                       ".map(tr => [tr.className, [...tr.cells].map(td => td.textContent)])")
    assert [c[0] for c in cells] == ["", "f", "f"]  # a judge and a step failed; a request failed
    first, second, third = (c[1] for c in cells)
    head = browser.js("return [...document.querySelectorAll('#run-1 div.rows thead th')]"
                      ".map(th => th.textContent)")
    scores, steps = head.index("scores"), head.index("steps or turns")
    assert "faithful (judge) 0.75" in first[scores] and "JUDGE-SAID <script>" in first[scores]
    assert "route → billing <img" in first[steps] and "STEP-SAID <a href" in first[steps]
    assert "refund → skipped" in first[steps]
    assert first[3] == "loneU+D800surrogate"
    assert "JUDGE-ERROR" in second[scores] and "STEP-ERROR" in second[steps]
    assert "request failed: REQUEST-ERROR" in third[2]
    summary = browser.js("return document.querySelector('#run-1').innerText")
    assert "Composability gap (every step with an expected answer right, the final answer " \
        "wrong): 0.5" in summary and "Failed requests" in summary
    assert "1× REQUEST-ERROR" in summary
    audit(browser, "pipeline")
    assert counter.hits == []


def test_cut_cells_say_so_in_the_browser(browser: Browser, counter: Counter,
                                         tmp_path: Path) -> None:
    from promptctl.render import TEXT_LIMIT

    hostile = payloads(counter.url)
    long = " ".join(hostile) * 40  # about 25,000 characters of payloads
    rows = [{"row_id": f"c{i}", "kind": "eval", "sample": 0,
             "input": {"q": f"needle{i} " + long, "ctx": long},
             "expected": long, "completion": f"said{i} " + long, "answer": "x", "valid": True,
             "error": None, "scores": {"exact_match": 1.0}} for i in range(3)]
    rows.append({"row_id": "short", "kind": "eval", "sample": 0, "input": {"q": "small"},
                 "expected": "x", "completion": "x", "answer": "x", "valid": True, "error": None,
                 "scores": {"exact_match": 1.0}})
    page = tmp_path / "cut.html"
    page.write_text(render_report([{"run": {"id": "01cut", "prompt": "cut"}, "rows": rows}],
                                  title="cut"), encoding="utf-8")
    browser.open(page)  # a fresh browser's first page also loads Chromium's own resources
    assert browser.open(page) == [page.as_uri()]
    header = browser.js("return document.querySelector('header p.limit').textContent")
    assert header.startswith(f"Texts are cut to {TEXT_LIMIT:,} characters a cell")
    cells = browser.js("return [...document.querySelectorAll('#run-1 div.rows tbody tr')]"
                       ".map(tr => [...tr.cells].map(td => [td.textContent, [...td.querySelectorAll("
                       "'.cut')].map(c => c.textContent)]))")
    first, short = cells[0], cells[3]
    assert first[0][1] == ["full text: promptctl show 01cut --row c0"]
    assert first[1][1] == [f"… {len(long) + 8 - TEXT_LIMIT // 2:,} more characters",
                           f"… {len(long) - TEXT_LIMIT // 2:,} more characters"]
    assert first[2][1] == [f"… {len(long) + 6 - TEXT_LIMIT:,} more characters"]
    assert first[4][1] == [f"… {len(long) - TEXT_LIMIT:,} more characters"]
    assert first[2][0].startswith("said0 <script>")  # the payloads shown as text
    assert all(c[1] == [] for c in short)  # nothing cut, nothing said
    # The search still reads the texts the cells keep.
    browser.driver.find_element("css selector", "#run-1 input.search").send_keys("NEEDLE1")
    wait_for(browser, "return [...document.querySelectorAll('#run-1 tbody tr')]"
             ".map(tr => tr.cells[0].firstChild.textContent).join()", "c1")
    audit(browser, "cut")
    assert counter.hits == []
    shot = tmp_path / "cut.png"
    assert browser.driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_page_script_marks_the_characters_the_renderers_mark(browser: Browser,
                                                                 tmp_path: Path) -> None:
    from promptctl.render.inert import VISIBLE_MARKS

    marked = [chr(c) for first, last, _ in VISIBLE_MARKS for c in sorted({first, last})]
    kept = "a\u200d\u2060é\u00ad"  # joiners and a soft hyphen: shown as they are
    completion = "-".join(marked) + kept  # apart: two lone surrogates side by side are a pair
    rows = [{"row_id": "m1", "kind": "eval", "input": {"t": "x"}, "completion": completion,
             "answer": "x", "valid": True, "error": None, "scores": {}}]
    page = tmp_path / "marks.html"
    page.write_text(render_report([{"run": {"id": "01marks"}, "rows": rows}], title="marks"),
                    encoding="utf-8")
    browser.open(page)
    cell = "document.querySelector('#run-1 div.rows tbody tr').cells[2]"
    shown = browser.js(f"return [...{cell}.querySelectorAll('span.ctl')].map(s => s.textContent)")
    assert shown == [f"U+{ord(c):04X}" for c in marked]
    assert browser.js(f"return {cell}.textContent").endswith(kept)
    # The server-side text() marks the same characters the same way.
    assert text(completion).count('class="ctl"') == len(marked)


# --- tests: the file itself ----------------------------------------------------------------------


def test_the_policy_allows_only_the_inline_script_and_style(project: Project) -> None:
    document = project.report.read_text(encoding="utf-8")
    [policy] = re.findall(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', document)
    assert policy == CSP
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert "unsafe" not in policy and "http" not in policy and "*" not in policy
    [script] = re.findall(r"<script>(.*?)</script>", document, re.S)
    [style] = re.findall(r"<style>(.*?)</style>", document, re.S)
    for directive, source in (("script-src", script), ("style-src", style)):
        digest = base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()
        assert directives[directive] == f"'sha256-{digest}'"
    # The head ends before anything that came from the data.
    assert document.index("Content-Security-Policy") < document.index("<title>")


def test_templates_read_fields_by_attribute() -> None:
    # Documents are mappings today and records tomorrow: templates read both by attribute.
    from importlib import resources

    templates = resources.files("promptctl.render").joinpath("templates")
    names = [t.name for t in templates.iterdir() if t.name.endswith(".j2")]
    assert {"report.html.j2", "run.html.j2", "diff.html.j2", "history.html.j2"} <= set(names)
    for name in names:
        source = templates.joinpath(name).read_text(encoding="utf-8")
        for tag in re.findall(r"\{[{%].*?[}%]\}", source, re.S):
            assert ".get(" not in tag and not re.search(r"\[\s*['\"]", tag), (name, tag)


def test_text_escapes_and_makes_invisible_characters_visible() -> None:
    shown = text("<b>&\"'</b>\u202eabc\x00\x1b\u2066\U000e0041\ud800 fine\ttab\nline")
    assert "<b>" not in shown and "&lt;b&gt;&amp;&quot;&#x27;&lt;/b&gt;" in shown
    for code in ("202E", "0000", "001B", "2066", "E0041", "D800"):
        assert f'<span class="ctl">U+{code}</span>' in shown
    assert "fine\ttab\nline" in shown
    assert text("x" * 30, limit=10) == "x" * 10 + '<span class="cut">… 20 more characters</span>'


def test_registered_secrets_are_masked_everywhere_in_the_report() -> None:
    from promptctl import redact

    secret = "sk-live-7Hq2Zp9Lx4Wm"
    doc = synthetic_document("http://127.0.0.1:9")
    doc["run"]["model"] = f"model {secret}"
    doc["rows"][0].update(completion=f"the key is {secret}", input={"q": secret[:12] + "..."})
    doc["rows"][2]["error"] = f"401 Incorrect API key provided: {secret[:8]}****"
    assert secret in render_report([doc], title="x")  # nothing registered yet: the check can fail
    redact.register(secret)
    try:
        document = render_report([doc], title="x")
    finally:
        redact.forget_all()
    assert secret not in document and secret[:12] not in document and secret[3:9] not in document
    assert "model ***" in document and "the key is ***" in document


def test_chart_svg_is_rebuilt_from_an_allowlist() -> None:
    hostile = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
               'width="10" onload="alert(1)"><script>alert(1)</script><style>*{}</style>'
               '<defs><clipPath id="clip1"><rect width="5"/></clipPath></defs>'
               '<g clip-path="url(#clip1)" style="background:url(http://x/)" fill="url(http://x/)">'
               '<a xlink:href="javascript:alert(1)"><text>link</text></a>'
               '<foreignObject><div xmlns="http://www.w3.org/1999/xhtml">x</div></foreignObject>'
               '<text x="1">&lt;img src=x onerror=alert(1)&gt;\u202e</text>'
               '<image href="http://x/i.png"/></g></svg>')
    clean = sanitize_svg(hostile, "c7-")
    assert clean.startswith('<svg width="10">')
    for gone in ("onload", "<script", "<style", "style=", "javascript", "<a", "foreignObject",
                 "<image", "http://x", "\u202e", "<div", "<img"):
        assert gone not in clean, gone
    assert '<clipPath id="c7-clip1">' in clean and 'clip-path="url(#c7-clip1)"' in clean
    assert "&lt;img src=x onerror=alert(1)&gt;?" in clean
    with pytest.raises(ValueError):
        sanitize_svg('<!DOCTYPE svg [<!ENTITY x "y">]><svg xmlns="http://www.w3.org/2000/svg"/>', "c")


def test_chart_labels_from_the_data_are_plain_text_in_the_svg(counter: Counter) -> None:
    document = render_report([synthetic_document(counter.url)], title="x")
    svgs = re.findall(r"<svg.*?</svg>", document, re.S)
    assert len(svgs) == 1  # the metrics; too few rows for a latency histogram
    labels = " ".join(re.findall(r"<text[^>]*>([^<]*)</text>", svgs[0]))
    assert "&lt;img src=" in labels and "&lt;U+202E&gt;" in labels  # escaped, marked, cut short
    assert not re.search(r"<(?!/?(svg|g|path|rect|line|text|tspan|circle|title|defs|clipPath)\b)",
                         "".join(svgs))


# --- tests: the commands ----------------------------------------------------------------------


def test_report_command_errors_name_the_fix(project: Project, monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setenv("PROMPTCTL_STORE", project.store)
    monkeypatch.chdir(project.root)
    missing = run_cli("report", project.b)
    assert missing.exit_code == 2 and "-o FILE.html" in missing.stderr
    nothing = run_cli("report", "-o", str(tmp_path / "r.html"))
    assert nothing.exit_code == 2 and "--diff A B" in nothing.stderr
    unknown = run_cli("report", "zzzz", "-o", str(tmp_path / "r.html"))
    assert unknown.exit_code == 2 and "no run 'zzzz'" in unknown.stderr
    blocked = tmp_path / "file"
    blocked.write_text("", encoding="utf-8")
    unwritable = run_cli("report", project.b, "-o", str(blocked / "r.html"))
    assert unwritable.exit_code == 2 and "cannot write the report" in unwritable.stderr
    assert not (tmp_path / "r.html").exists()
    # A history alone, by prompt file.
    invoke("report", "--history", "prompts/review.yaml", "-o", str(tmp_path / "h.html"))
    assert 'id="history-1"' in (tmp_path / "h.html").read_text(encoding="utf-8")


# Runs the CLI with vl-convert made unimportable, as when the extra is not installed.
WITHOUT_CHARTS = """\
import sys
sys.modules["vl_convert"] = None
from promptctl.cli.app import app
app(sys.argv[1:], prog_name="promptctl")
"""


@pytest.mark.parametrize("args", [["report", "RUN", "-o", "r.html"], ["check", "--html", "r.html"]])
def test_without_the_report_extra_the_error_names_the_install_command(
        args: list[str], project: Project, tmp_path: Path) -> None:
    env = {**os.environ, "PROMPTCTL_STORE": project.store, "NO_COLOR": "1"}
    args = [project.b if a == "RUN" else a for a in args]
    done = subprocess.run([sys.executable, "-c", WITHOUT_CHARTS, *args], cwd=project.root, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert install_command("report") in done.stderr
    assert "Traceback" not in done.stderr
    assert not (project.root / "r.html").exists()


def test_check_html_reports_the_changed_prompt_and_its_diff(repo: Repo, tmp_path: Path) -> None:
    repo.write("prompts/score.yaml", prompt_text(style="BREAK 3"))
    repo.write("prompts/other.yaml", prompt_text().replace("name: score", "name: other"))
    repo.commit("change score, add other")
    out = tmp_path / "ci" / "report.html"
    result = json.loads(invoke("check", "--json", "--html", str(out)).stdout)
    entries = {e["prompt"]: e for e in result["prompts"]}
    assert set(entries) == {"score", "other"}
    document = out.read_text(encoding="utf-8")
    assert re.findall(r'<section class="(\w+)" id="([\w-]+)"', document) == [
        ("run", "run-1"), ("run", "run-2"), ("diff", "diff-1")]
    score = entries["score"]
    assert f"<code>{score['current_run']}</code>" in document
    # The diff is the changed prompt's: its baseline against its current run.
    diff = document[document.index('id="diff-1"'):]
    assert diff.index(score["baseline_run"]) < diff.index("Deltas")
    assert "Passed in A, failed in B <span class=\"dim\">(3)</span>" in diff
    assert entries["other"]["baseline_run"] is None


def test_check_html_opens_with_the_verdict_and_its_gates(repo: Repo, tmp_path: Path) -> None:
    repo.write("prompts/score.yaml", prompt_text(style="BREAK 15"))
    repo.commit("worse")
    out = tmp_path / "report.html"
    invoke("check", "--html", str(out), code=1)
    document = out.read_text(encoding="utf-8")
    main = document[document.index("<main>"):]
    # The verdict is the first thing on the page, before any run.
    assert main.index('id="check"') < main.index('id="run-1"')
    verdict = main[main.index('id="check"'):main.index("</section>")]
    assert '<h2 class="verdict">check failed</h2>' in verdict
    assert "1 failed" in verdict and "p &lt; 0.05" in verdict
    rows = re.findall(r"<td>([^<]*)</td>.*?<td class=\"status (\w+)\">", verdict)
    assert ("exact_match drop ≤ 0.02", "fail") in rows
    assert ("format_validity ≥ 0.9", "pass") in rows
    assert "fell by 0.75, more than the limit 0.02" in verdict


def test_history_charts_show_bounded_metrics_on_their_whole_range() -> None:
    """0.2 accuracy sits near the bottom of its axis, not mid-way; an error starts at zero;
    the version labels are drawn whole."""
    def version(i: int) -> dict[str, Any]:
        return {"run": f"r{i}", "created_at": f"2026-11-{10 + i}T00:00:00Z",
                "prompt_version": f"{i:064d}", "model": "gpt-4o-mini",
                "git_commit": f"{i:02d}" + "a" * 38, "git_dirty": False,
                "date": f"2026-11-{10 + i}T12:00:00+00:00", "author": "A", "subject": "s",
                "evalset_version": "0" * 64, "n": 10, "errors": 0,
                "metrics": {"exact_match": 0.2 + 0.01 * i, "rmse": 1.0 + 0.1 * i,
                            "pearson": 0.3, "faithful": 3.0 + i}}
    document = render_report(histories=[{"prompt": "score", "model": None, "warnings": [],
                                         "versions": [version(i) for i in range(6, 0, -1)]}])
    axes = re.findall(r'aria-label="Y-axis for a linear scale with values from ([^"]+)"',
                      document)
    # One strip per metric, in the order first seen: exact_match, rmse, pearson, faithful.
    assert axes[0] == "0.0 to 1.0"
    assert axes[1].startswith("0.0 to ")
    assert axes[2] == "−1.0 to 1.0" or axes[2] == "-1.0 to 1.0"
    assert not axes[3].startswith("0")  # a judge's scale is its own
    assert "1: 01aaaaa 2026-11-11" in document and "…" not in document.split("<svg", 1)[1]


def test_history_draws_each_metric_against_cost_with_the_pareto_front(
        browser: Browser, tmp_path: Path) -> None:
    """In Chromium: a scatter per metric, the front's points drawn, a dominated point apart,
    and the version of unknown cost listed under the charts, not drawn."""
    def version(i: int, cost: float | None, em: float, rmse: float) -> dict[str, Any]:
        return {"run": f"r{i}", "created_at": f"2026-11-{10 + i}T00:00:00Z",
                "prompt_version": f"{i:064d}", "model": f"model-{i}",
                "git_commit": f"{i:02d}" + "b" * 38, "git_dirty": False, "date": None,
                "author": None, "subject": None, "evalset_version": "0" * 64, "n": 10,
                "errors": 0, "metrics": {"exact_match": em, "rmse": rmse},
                "cost_per_row": cost}
    # Newest first, as history lists them: 4 (unknown cost), 3, 2, 1.
    versions = [version(4, None, 1.0, 0.0), version(3, 3e-5, 0.7, 0.5),
                version(2, 2e-5, 0.9, 1.0), version(1, 1e-5, 0.6, 2.0)]
    page = tmp_path / "pareto.html"
    page.write_text(render_report(histories=[{
        "prompt": "score", "model": None, "warnings": [], "versions": versions,
        "higher_is_better": {"exact_match": True, "rmse": False}}]), encoding="utf-8")
    assert browser.open(page) == [page.as_uri()]
    charts = browser.js("""return [...document.querySelectorAll('.pareto figure')].map(f => [
        f.getAttribute('aria-label'),
        [...f.querySelectorAll('path[aria-roledescription="point"]')].map(p => {
            const box = p.getBoundingClientRect();
            return [p.getAttribute('aria-label').match(/front: ([^;]+); version: (\\d+)/)
                    .slice(1).join(' '), box.width > 0 && box.height > 0];
        })])""")
    assert [c[0] for c in charts] == ["exact_match against cost per row, Pareto front marked",
                                      "rmse against cost per row, Pareto front marked"]
    # exact_match: 1 ($0.01, 0.6) and 2 ($0.02, 0.9) on the front; 3 ($0.03, 0.7) dominated.
    assert sorted(charts[0][1]) == [["dominated 3", True], ["on the Pareto front 1", True],
                                    ["on the Pareto front 2", True]]
    # rmse, lower is better: each dearer version has a smaller error, so all three are on it.
    assert sorted(charts[1][1]) == [["on the Pareto front 1", True],
                                    ["on the Pareto front 2", True],
                                    ["on the Pareto front 3", True]]
    unpriced = browser.js("const p = document.querySelector('#history-1 p.unpriced');"
                          "return [p.innerText, p.offsetHeight > 0]")
    assert unpriced[1] and "4: 04bbbbb model-4" in unpriced[0]


def test_the_workflow_uploads_the_html_report() -> None:
    from promptctl.ci_templates import WORKFLOW, workflow

    steps = yaml.safe_load(WORKFLOW)["jobs"]["check"]["steps"]
    [check] = [s for s in steps if "promptctl check" in s.get("run", "")]
    assert "--html promptctl-report.html" in check["run"]
    [upload] = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["uses"] == "actions/upload-artifact@v4" and upload["if"] == "always()"
    assert upload["with"]["path"] == "promptctl-report.html"
    # Once released, the workflow installs the extra that --html needs.
    released = yaml.safe_load(workflow(released=True))["jobs"]["check"]["steps"]
    [install] = [s for s in released if s.get("name") == "Install promptctl"]
    assert install["run"] == index_install_command("report")
