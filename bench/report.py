"""Benchmark of `promptctl report`: the size of the file and the time Chromium takes to show it.

Builds (in a temporary directory) a store with two runs of 10,000 rows each (the rows of
bench/compare.py: a text of 8 to 20 words, a two-line completion, three scores), then:

- times `promptctl report B -o FILE` and `promptctl report B --diff A B -o FILE`
  (whole processes) and prints each file's size (target < 5 MB);
- opens each report and a blank page in Debian's headless Chromium (through
  chromedriver), interleaved, and prints the time from the start of navigation to
  the first frame after the load event, minus the blank page's (target < 2 s), and
  the page's own navigation timing (load event end); and times the first search of the
  rows in the page.

Run: python bench/report.py [--rows N] [--repeat K] [--keep DIR]
Needs the test extra (selenium, vl-convert-python) and apt's chromium and chromium-driver.
"""

from __future__ import annotations

import argparse
import os
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000, help="rows per run")
    ap.add_argument("--repeat", type=int, default=5, help="page loads per file (interleaved)")
    ap.add_argument("--keep", type=Path, help="build in this directory and keep it")
    args = ap.parse_args()
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
