"""Benchmarks of `promptctl report`: the size of the file, the memory it takes to write it, and
the time Chromium takes to show it.

Short texts (the default): builds (in a temporary directory) a store with two runs of 10,000
rows each (the rows of bench/compare.py: a text of 8 to 20 words, a two-line completion,
three scores), then:

- times `promptctl report B -o FILE` and `promptctl report B --diff A B -o FILE`
  (whole processes) and prints each file's size (target < 5 MB);
- opens each report and a blank page in Debian's headless Chromium (through
  chromedriver), interleaved, and prints the time from the start of navigation to
  the first frame after the load event, minus the blank page's (target < 2 s), and
  the page's own navigation timing (load event end); and times the first search of the
  rows in the page.

Long texts (--long-texts): for each row count (default 2,000 and 20,000), a store with one
run whose every row has a 25,000-character input, completion and answer (--chars), built
through the store API; then `promptctl report RUN -o FILE` as a whole process, and prints
the file's size (and per row), the process's peak resident memory (ru_maxrss) and, in a
second process, the peak of Python's allocations (tracemalloc), with the ratio of each
between the largest and the smallest row count: flat memory is a ratio near 1. With
--chromium it also opens each file in headless Chromium (navigation to the first frame
after load).

Run: python bench/report.py [--rows N] [--repeat K] [--keep DIR]
     python bench/report.py --long-texts [--rows N [N ...]] [--chars C] [--text-limit L]
                            [--keep DIR] [--chromium]
Needs the test extra (selenium, vl-convert-python) and apt's chromium and chromium-driver.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from compare import build_diff_runs  # noqa: E402  (bench/compare.py: the same synthetic rows)

from promptctl.store.sqlite import SQLiteStore  # noqa: E402

PROMPTCTL = [sys.executable, "-m", "promptctl.cli"]
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000")
SIZE_TARGET = 5e6
RENDER_TARGET = 2.0

# Resolves after the first frame that follows the load event: parsing, style, layout, paint.
FIRST_FRAME = """
const done = arguments[arguments.length - 1];
requestAnimationFrame(() => requestAnimationFrame(() => {
  const nav = performance.getEntriesByType('navigation')[0];
  done([nav.loadEventEnd, performance.now()]);
}));
"""


# The first search of the eval rows (it builds the search text of every row), from the
# input event to the new count, less the 120 ms the page waits for typing to pause.
SEARCH = """
const done = arguments[arguments.length - 1];
const block = document.querySelector('div.rows[data-kind=eval]');
const input = block.querySelector('input.search');
const counter = block.querySelector('output.count');
const observer = new MutationObserver(() => {
  observer.disconnect();
  done([performance.now() - start - 120, counter.textContent]);
});
observer.observe(counter, {childList: true, characterData: true, subtree: true});
input.value = arguments[0];
const start = performance.now();
input.dispatchEvent(new Event('input'));
"""


def browser(profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    os.environ.setdefault("SE_OFFLINE", "true")
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def show(driver: Any, path: Path) -> tuple[float, float, float]:
    """Wall seconds from navigation to the first frame after load; the page's load event end
    and first-frame time (ms since its navigation started)."""
    driver.get("about:blank")
    t = time.perf_counter()
    driver.get(path.as_uri())  # returns once the load event has fired
    load_end, frame = driver.execute_async_script(FIRST_FRAME)
    return time.perf_counter() - t, float(load_end), float(frame)


# Runs the CLI in this process under tracemalloc and prints the peak of Python's allocations
# (bytes) on the last line of stderr.
TRACED = """\
import sys, tracemalloc
tracemalloc.start()
from promptctl.cli.app import app
try:
    app(sys.argv[1:], prog_name="promptctl")
except SystemExit as exc:
    if exc.code:
        raise
print("PEAK", tracemalloc.get_traced_memory()[1], file=sys.stderr)
"""
WORDS = ("the model said that a long answer keeps going with more words about the question "
         "and its context while the reader scrolls through every line of it again").split()


def long_run(store: SQLiteStore, rows: int, chars: int) -> str:
    """One finished run of `rows` rows, each with an input, a completion and an answer of
    `chars` characters (the answer is the whole completion, as a `type: string` pattern
    that matches everything gives it); returns its id."""
    rng = random.Random(rows)
    base = " ".join(rng.choice(WORDS) for _ in range(chars // 3))[:chars]
    run_id = f"01benchlong{rows:08d}"
    store.create_run({
        "id": run_id, "created_at": "2026-01-01T00:00:00.000Z", "status": "running",
        "prompt_name": "long", "prompt_path": "prompts/long.yaml", "prompt_version": "a" * 64,
        "prompt_source": "name: long\n", "model": "gpt-4o-mini", "endpoint": "openai",
        "params": {}, "n_planned": rows, "git_commit": "0" * 40, "git_dirty": False,
        "evalset_path": "evalsets/long.jsonl", "evalset_version": "e" * 64})
    batch = []
    for i in range(rows):
        shift = (i * 7919) % len(base)  # a different text in every row, made in no time
        text = f"row {i}: " + base[shift:] + base[:shift]
        said = f"answer {i}: " + base[shift // 2:] + base[:shift // 2]
        batch.append({
            "run_id": run_id, "kind": "eval", "position": i, "row_id": f"r{i:06d}", "sample": 0,
            "input": {"text": text[:chars]}, "expected": "short label",
            "messages": [{"role": "user", "content": text[:chars]}],
            "completion": said[:chars], "answer": said[:chars], "valid": True,
            "extract_error": None, "scores": {"exact_match": float(i % 3 == 0)},
            "prompt_tokens": chars // 4, "completion_tokens": chars // 4,
            "latency_ms": 400.0 + i % 300, "error": None, "cached": False, "attempts": 1,
            "created_at": "2026-01-01T00:00:00.000Z"})
        if len(batch) == 500:
            store.write_rows(batch)
            batch = []
    if batch:
        store.write_rows(batch)
    store.update_run(run_id, status="complete", finished_at="2026-01-01T00:10:00.000Z",
                     metrics={"exact_match": {"value": 0.33, "n": rows, "ci95": [0.3, 0.36]}},
                     fewshot_metrics={}, summary={
                         "n": rows, "errors": 0, "cached": 0, "retries": 0,
                         "tokens": {"prompt": rows * chars // 4, "completion": rows * chars // 4},
                         "cost_usd": 0.0, "latency_ms": {"p50": 550.0, "p90": 670.0}})
    return run_id


def measured(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak resident memory (bytes) of one process."""
    t = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{err.decode(errors='replace')}")
    return wall, usage.ru_maxrss * 1024  # kilobytes on Linux


def long_texts(args: argparse.Namespace) -> None:
    counts = args.rows or [2_000, 20_000]
    extra = [] if args.text_limit is None else ["--text-limit", str(args.text_limit)]
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
        results: list[tuple[int, int, int, int]] = []
        pages = []
        for rows in counts:
            db = base / f"long-{rows}-{args.chars}.db"
            run_id = f"01benchlong{rows:08d}"
            t = time.perf_counter()
            store = SQLiteStore(db)
            if not store.has_run(run_id):
                long_run(store, rows, args.chars)
            store.close()
            print(f"{rows:,} rows of {args.chars:,}-character texts: store "
                  f"{db.stat().st_size / 1e6:,.0f} MB (ready in {time.perf_counter() - t:.0f} s)")
            out = base / f"report-long-{rows}.html"
            run_env = {**env, "PROMPTCTL_STORE": f"sqlite:///{db}"}
            wall, rss = measured([*PROMPTCTL, "report", run_id, *extra, "-o", str(out)], base,
                                 run_env)
            size = out.stat().st_size
            done = subprocess.run([sys.executable, "-c", TRACED, "report", run_id, *extra, "-o",
                                   str(out)], cwd=base, env=run_env, capture_output=True,
                                  text=True)
            if done.returncode != 0:
                raise SystemExit(f"promptctl report under tracemalloc failed:\n{done.stderr}")
            peak = int(done.stderr.strip().splitlines()[-1].split()[1])
            results.append((rows, size, rss, peak))
            pages.append(out)
            print(f"  report: {size / 1e6:,.1f} MB ({size / rows:,.0f} bytes a row), written in "
                  f"{wall:.1f} s; peak resident memory {rss / 1e6:,.0f} MB; peak of Python's "
                  f"allocations (tracemalloc) {peak / 1e6:,.1f} MB")
        if len(results) > 1:
            (n0, s0, r0, p0), (n1, s1, r1, p1) = results[0], results[-1]
            print(f"{n1:,} rows against {n0:,} ({n1 / n0:.0f}x the rows): file {s1 / s0:.2f}x, "
                  f"peak resident memory {r1 / r0:.2f}x, peak of Python's allocations "
                  f"{p1 / p0:.2f}x")
        if args.chromium:
            driver = browser(base / "chromium-profile")
            try:
                blank = base / "blank.html"
                blank.write_text("<!DOCTYPE html><title>blank</title>\n", encoding="utf-8")
                show(driver, blank)  # the first load pays for the browser's own start-up
                for (rows, *_), page in zip(results, pages, strict=True):
                    wall, load, frame = show(driver, page)
                    print(f"Chromium: the {rows:,}-row report shows its first frame after "
                          f"{wall:.1f} s (load event at {load / 1000:.1f} s)")
            finally:
                driver.quit()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+",
                    help="rows per run (default 10,000; --long-texts: 2,000 and 20,000)")
    ap.add_argument("--repeat", type=int, default=5, help="page loads per file (interleaved)")
    ap.add_argument("--keep", type=Path, help="build in this directory and keep it (and reuse "
                    "the long-text stores found there)")
    ap.add_argument("--long-texts", action="store_true",
                    help="file size and memory of reports of long texts")
    ap.add_argument("--chars", type=int, default=25_000, help="--long-texts: characters of "
                    "each input, completion and answer")
    ap.add_argument("--text-limit", type=int, help="--long-texts: pass this --text-limit")
    ap.add_argument("--chromium", action="store_true",
                    help="--long-texts: also open each report in Chromium")
    args = ap.parse_args()
    if args.long_texts:
        long_texts(args)
        return
    if args.rows is not None and len(args.rows) != 1:
        ap.error("give one --rows without --long-texts")
    args.rows = args.rows[0] if args.rows else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        db = base / "results.db"
        db.unlink(missing_ok=True)
        store = SQLiteStore(db)
        a, b = build_diff_runs(store, args.rows)
        store.close()
        env = {**os.environ, "PROMPTCTL_STORE": f"sqlite:///{db}", "NO_COLOR": "1",
               "PYTHONPATH": str(ROOT)}
        blank = base / "blank.html"
        blank.write_text("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>blank</title>"
                         "</head><body></body></html>\n", encoding="utf-8")
        pages: dict[str, Path] = {}
        for name, extra in (("run", []), ("run+diff", ["--diff", a, b])):
            out = base / f"report-{name.replace('+', '-')}.html"
            t = time.perf_counter()
            done = subprocess.run([*PROMPTCTL, "report", b, *extra, "-o", str(out)], cwd=base,
                                  env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t
            if done.returncode != 0:
                raise SystemExit(f"promptctl report failed:\n{done.stderr}")
            size = out.stat().st_size
            print(f"report of a {args.rows:,}-row run ({name}): {size / 1e6:.2f} MB, target "
                  f"< {SIZE_TARGET / 1e6:.0f} MB (size/target {size / SIZE_TARGET:.2f}x) "
                  f"{'OK' if size < SIZE_TARGET else 'MISSED'}; written in {wall:.2f} s")
            pages[name] = out

        driver = browser(base / "chromium-profile")
        try:
            show(driver, blank)  # the first load pays for the browser's own start-up
            walls: dict[str, list[float]] = {"blank": [], **{k: [] for k in pages}}
            loads: dict[str, list[float]] = {k: [] for k in walls}
            frames: dict[str, list[float]] = {k: [] for k in walls}
            searches: list[float] = []
            found = ""
            for _ in range(args.repeat):
                for name, path in (("blank", blank), *pages.items()):
                    wall, load, frame = show(driver, path)
                    walls[name].append(wall)
                    loads[name].append(load)
                    frames[name].append(frame)
                    if name == "run":
                        took, found = driver.execute_async_script(SEARCH, "r004321")
                        searches.append(float(took))
        finally:
            driver.quit()
        blank_wall = statistics.median(walls["blank"])
        print(f"blank page: median {blank_wall:.3f} s wall (driver round trips), load event at "
              f"{statistics.median(loads['blank']):.0f} ms")
        for name in pages:
            med = statistics.median(walls[name]) - blank_wall
            print(f"Chromium render of the {name} report: median {med:.3f} s (navigation to the "
                  f"first frame after load, minus the blank page's; best "
                  f"{min(walls[name]) - blank_wall:.3f} s over {args.repeat}); load event at "
                  f"{statistics.median(loads[name]):.0f} ms, first frame at "
                  f"{statistics.median(frames[name]):.0f} ms (page's own timing); target "
                  f"< {RENDER_TARGET} s (median/target {med / RENDER_TARGET:.2f}x) "
                  f"{'OK' if med < RENDER_TARGET else 'MISSED'}")
        print(f"first search of the {args.rows:,} rows: median {statistics.median(searches):.0f} ms "
              f"({found})")


if __name__ == "__main__":
    main()
