"""What GitPython adds to a promptctl command that reads git (eval, check, diff, history, runs).

gitinfo imports GitPython (`import git`) on the first read of a repository, never for --help.
This prints:

  (a) the cumulative import time of `git` from `python -X importtime -c "import git"`,
      the median of RUNS runs (GitPython also runs `git version` once while importing);
  (b) the median wall time of a fresh `python -c "import git"` and of `python -c "pass"`,
      over RUNS runs each, and their difference: the start-up cost per command;
  (c) in one process, the first `gitinfo.git_state` on a small temporary repository (the
      import included) and the median of later calls.

Run: python bench/git_import.py [RUNS]   (default 10)
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def import_time_us() -> int:
    """Cumulative microseconds of `import git`, as -X importtime reports them."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import git"],
                          capture_output=True, text=True, check=True)
    for line in done.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] == "git":
            return int(parts[1])
    raise RuntimeError("no line for the git package in:\n" + done.stderr)


def wall_ms(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return (time.perf_counter() - started) * 1000


def git_state_ms(runs: int) -> tuple[float, float]:
    """(first call, median of later calls) of git_state in a fresh process, in ms."""
    script = f"""
import statistics, sys, time
from pathlib import Path
root = Path(sys.argv[1])
started = time.perf_counter()
from promptctl.gitinfo import git_state
git_state(root / "p.yaml", [root / "p.yaml"])
first = (time.perf_counter() - started) * 1000
later = []
for _ in range({runs}):
    started = time.perf_counter()
    git_state(root / "p.yaml", [root / "p.yaml"])
    later.append((time.perf_counter() - started) * 1000)
print(first, statistics.median(later))
"""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "p.yaml").write_text("name: p\n", encoding="utf-8")
        for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                     ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid",
                      "-c", "commit.gpgsign=false", "commit", "-q", "-m", "bench"]):
            subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
        done = subprocess.run([sys.executable, "-c", script, str(root)], capture_output=True,
                              text=True, check=True)
    first, later = done.stdout.split()
    return float(first), float(later)


def main(runs: int) -> None:
    wall_ms("import git")  # warm the file cache before measuring
    cumulative = statistics.median(import_time_us() for _ in range(runs))
    print(f"(a) import git, -X importtime cumulative: {cumulative / 1000:.1f} ms "
          f"({cumulative:.0f} us, median of {runs})")
    with_git = statistics.median(wall_ms("import git") for _ in range(runs))
    bare = statistics.median(wall_ms("pass") for _ in range(runs))
    print(f"(b) python -c 'import git': {with_git:.1f} ms, python -c 'pass': {bare:.1f} ms, "
          f"difference: {with_git - bare:.1f} ms (medians of {runs})")
    first, later = git_state_ms(runs)
    print(f"(c) gitinfo.git_state on a small repository: first call {first:.1f} ms "
          f"(GitPython imported), later calls {later:.1f} ms (median of {runs})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
