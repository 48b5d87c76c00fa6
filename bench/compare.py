"""Benchmarks of `promptctl diff` and `promptctl history` on a large synthetic store.

Builds (once per invocation, in a temporary directory) a store holding two runs
of 100,000 rows each and 1,000 runs of one prompt, each at its own commit of a
real git repository, then times whole processes:

    promptctl diff A B --json        (target < 2 s)
    promptctl history NAME --json    (target < 0.5 s)

Run: python bench/compare.py [--rows N] [--runs N] [--repeat K] [--keep DIR] [--metrics M,...]
                             [--store URL]

--metrics picks the diff runs' metrics (by default rmse, exact_match and format_validity;
mae, pearson and spearman time the other paired tests on the same integer scores). A kept
store keeps the metrics it was built with.

--store URL (a PostgreSQL store, e.g. postgresql://USER@127.0.0.1:5432/DB with the password
in PGPASSWORD) builds the same data there too (once: a store that already holds the bench
runs is reused) and times both stores interleaved, SQLite then the other, command by
command, so both see the same machine load; it prints each median and their ratio against
the target of at most 2x SQLite's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
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

from promptctl.metrics import aggregate  # noqa: E402
from promptctl.store import Store, open_store, public_url  # noqa: E402

PROMPTCTL = [sys.executable, "-m", "promptctl.cli"]
METRICS = ("rmse", "exact_match", "format_validity")
SYSTEM = ("Given a text, give it a controversy score from 0 to 10.\nExamples:\n"
          + "".join(f"Example text number {i} about a topic people disagree on.\n"
                    f"Controversy score: {i}\n" for i in range(4))
          + "The response should follow the format:\nControversy score: { score }\n"
          "Reason: { reason }\n")
WORDS = ("tax policy immigration vaccines pizza football climate nuclear energy school "
         "uniforms social media privacy art music cats dogs gardens trains").split()
PROMPT_TEMPLATE = """\
name: {name}
model: gpt-4o-mini
messages:
  - role: system
    content: "Rate the text. Version {version}."
  - role: user
    content: "{{{{ text }}}}"
output: {{pattern: 'Controversy score: (?P<answer>\\d+)', type: number}}
metrics: [rmse, exact_match, format_validity]
evalset: ../evalsets/{name}.jsonl
"""


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))) + "."


def _row(run_id: str, i: int, text: str, expected: int, answer: int | None) -> dict[str, Any]:
    if answer is None:
        completion = "I would rather not rate this text."
        scores: dict[str, Any] = {"format_validity": 0.0, "exact_match": 0.0}
    else:
        completion = f"Controversy score: {answer}\nReason: the text touches on a divisive topic."
        scores = {"format_validity": 1.0, "exact_match": 1.0 if answer == expected else 0.0,
                  "answer_num": float(answer), "expected_num": float(expected),
                  "squared_error": float((answer - expected) ** 2)}
    return {
        "run_id": run_id, "kind": "eval", "position": i, "row_id": f"r{i:06d}", "sample": 0,
        "input": {"text": text}, "expected": expected,
        "messages": [{"role": "system", "content": SYSTEM},
                     {"role": "user", "content": f"Here is the text.\n{text}"}],
        "completion": completion, "answer": answer, "valid": answer is not None,
        "extract_error": None if answer is not None else "no match", "scores": scores,
        "prompt_tokens": 180 + len(text) // 4, "completion_tokens": 14, "latency_ms": 420.0,
        "response_model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_bench",
        "error": None, "cached": False, "attempts": 1, "created_at": "2026-01-01T00:00:00.000Z",
    }


def _run_record(run_id: str, name: str, version: str, commit: str | None, n: int,
                created: str, evalset_version: str = "e" * 64) -> dict[str, Any]:
    return {
        "id": run_id, "created_at": created, "status": "running", "prompt_name": name,
        "prompt_path": f"prompts/{name}.yaml", "prompt_version": version,
        "prompt_source": PROMPT_TEMPLATE.format(name=name, version=version[:8]),
        "git_commit": commit, "git_dirty": False, "git_branch": "main", "model": "gpt-4o-mini",
        "endpoint": "openai", "base_url": "https://api.openai.com/v1",
        "params": {"temperature": 0}, "evalset_path": f"evalsets/{name}.jsonl",
        "evalset_version": evalset_version, "n_planned": n,
        "options": {"limit": None, "repeat": 1, "concurrency": 8, "use_cache": True,
                    "cache_only": False},
    }


def _summary(n: int) -> dict[str, Any]:
    return {"n": n, "errors": 0, "cached": 0, "retries": 0, "fewshot_n": 0, "fewshot_errors": 0,
            "fewshot_cached": 0, "tokens": {"prompt": 200 * n, "completion": 14 * n},
            "cost_usd": 0.0, "spent_usd": 0.0, "consistency": None,
            "latency_ms": {"p50": 400.0, "p75": 450.0, "p90": 520.0, "p99": 900.0},
            "system_fingerprints": ["fp_bench"], "response_models": ["gpt-4o-mini-2024-07-18"]}


def build_diff_runs(store: Store, rows: int, seed: int = 1,
                    metrics: tuple[str, ...] = METRICS) -> tuple[str, str]:
    """Two runs of the same eval set: B changes about 8% of A's answers."""
    rng = random.Random(seed)
    texts = [_text(rng) for _ in range(rows)]
    expected = [rng.randint(0, 10) for _ in range(rows)]
    noise = (-2, -1, -1, 0, 0, 0, 0, 0, 1, 1, 2)

    def answer_a(i: int) -> int | None:
        return None if rng.random() < 0.02 else min(10, max(0, expected[i] + rng.choice(noise)))

    answers_a = [answer_a(i) for i in range(rows)]
    answers_b = [answers_a[i] if rng.random() > 0.08 else answer_a(i) for i in range(rows)]
    ids = []
    for label, answers in (("a", answers_a), ("b", answers_b)):
        run_id = f"01benchdiff{label}{seed:03d}"
        store.create_run(_run_record(run_id, "bench", hashlib.sha256(label.encode()).hexdigest(),
                                     "0" * 40, rows, "2026-01-01T00:00:00.000Z"))
        records = [_row(run_id, i, texts[i], expected[i], answers[i]) for i in range(rows)]
        for start in range(0, rows, 5000):
            store.write_rows(records[start:start + 5000])
        store.update_run(run_id, status="complete", finished_at="2026-01-01T00:10:00.000Z",
                         metrics=aggregate(metrics, [r["scores"] for r in records]),
                         fewshot_metrics={}, summary=_summary(rows))
        ids.append(run_id)
    return ids[0], ids[1]


def build_history(store: Store, repo: Path, runs: int,
                  shas: dict[int, str] | None = None) -> dict[int, str]:
    """A git repository with one commit per prompt version and one stored run at each (with
    `shas`, the repository exists: only the runs are stored); returns the commits."""
    versions = [hashlib.sha256(PROMPT_TEMPLATE.format(name="hist", version=i).encode("utf-8"))
                .hexdigest() for i in range(runs)]
    t0 = 1_700_000_000
    if shas is None:
        shas = _history_repo(repo, runs)
    metrics_rng = random.Random(2)
    for i in range(runs):
        run_id = f"01benchhist{i:05d}"
        created = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t0 + 60 * i + 30))
        store.create_run(_run_record(run_id, "hist", versions[i], shas[i + 1], 200, created))
        value = metrics_rng.random()
        metrics = {"rmse": {"value": 1 + value, "n": 196, "ci95": [0.8 + value, 1.2 + value]},
                   "exact_match": {"value": 0.5 + value / 3, "n": 200, "ci95": [0.4, 0.7]},
                   "format_validity": {"value": 0.98, "n": 200, "ci95": [0.96, 1.0]}}
        store.update_run(run_id, status="complete", finished_at=created, metrics=metrics,
                         fewshot_metrics={}, summary=_summary(200))
    return shas


def _history_repo(repo: Path, runs: int) -> dict[int, str]:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
           "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=env)
    # fast-import writes a thousand commits in well under a second.
    stream = []
    t0 = 1_700_000_000
    for i in range(runs):
        text = PROMPT_TEMPLATE.format(name="hist", version=i).encode("utf-8")
        message = f"hist: prompt revision {i}".encode()
        stream.append(b"commit refs/heads/main\nmark :%d\n" % (i + 1))
        stream.append(b"committer Bench <bench@example.invalid> %d +0000\n" % (t0 + 60 * i))
        stream.append(b"data %d\n%s\n" % (len(message), message))
        if i:
            stream.append(b"from :%d\n" % i)
        stream.append(b"M 644 inline prompts/hist.yaml\ndata %d\n%s\n" % (len(text), text))
    marks_file = repo / ".git" / "bench-marks"
    subprocess.run(["git", "fast-import", "--quiet", f"--export-marks={marks_file}"],
                   input=b"".join(stream), cwd=repo, check=True, env=env)
    marks = marks_file.read_text(encoding="ascii").split("\n")
    sha_of = {int(line.split()[0][1:]): line.split()[1] for line in marks if line.startswith(":")}
    subprocess.run(["git", "checkout", "-q", "main"], cwd=repo, check=True, env=env)
    return sha_of


def timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Wall time and stdout of one `promptctl ARGS` process."""
    t = time.perf_counter()
    done = subprocess.run([*PROMPTCTL, *args], cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"promptctl {' '.join(args)} failed:\n{done.stderr}")
    return wall, done.stdout


def report(label: str, walls: list[float], target: float) -> None:
    best, med = min(walls), statistics.median(walls)
    print(f"{label}: median {med:.3f} s, best {best:.3f} s over {len(walls)} runs; target "
          f"< {target} s (median/target {med / target:.2f}x) {'OK' if med < target else 'MISSED'}")


def _commits(repo: Path) -> dict[int, str]:
    shas = subprocess.run(["git", "rev-list", "--reverse", "main"], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.split()
    return {i + 1: sha for i, sha in enumerate(shas)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000, help="rows per diff run")
    ap.add_argument("--runs", type=int, default=1000, help="stored runs for history")
    ap.add_argument("--repeat", type=int, default=5, help="timed processes per command")
    ap.add_argument("--keep", type=Path, help="build in this directory and keep it")
    ap.add_argument("--metrics", default=",".join(METRICS),
                    help="metrics of the two diff runs, comma-separated")
    ap.add_argument("--store", help="also time this store (postgresql://...), against SQLite")
    args = ap.parse_args()
    metrics = tuple(args.metrics.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        project = base / "project"
        db = base / "results.db"
        urls = {"sqlite": f"sqlite:///{db}"}
        t = time.perf_counter()
        store = open_store(urls["sqlite"])
        if not project.exists():
            project.mkdir()
            build_diff_runs(store, args.rows, metrics=metrics)
            build_history(store, project, args.runs)
        store.close()
        a, b = "01benchdiffa001", "01benchdiffb001"
        print(f"SQLite store built in {time.perf_counter() - t:.1f} s "
              f"({db.stat().st_size / 1e6:.0f} MB): 2 runs of {args.rows:,} rows, "
              f"{args.runs:,} runs of one prompt")
        if args.store:
            urls["other"] = args.store
            t = time.perf_counter()
            other = open_store(args.store)
            built = []
            if not other.has_run(a):
                build_diff_runs(other, args.rows, metrics=metrics)
                built.append("diff")
            if not other.has_run("01benchhist00000"):
                build_history(other, project, args.runs, shas=_commits(project))
                built.append("history")
            other.close()
            print(f"{public_url(args.store)}: built {' and '.join(built) or 'nothing (reused)'} "
                  f"in {time.perf_counter() - t:.1f} s")
        env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
        walls: dict[tuple[str, str], list[float]] = {}
        outs: dict[tuple[str, str], str] = {}
        commands = {"diff": ["diff", a, b, "--json"], "history": ["history", "hist", "--json"]}
        for _ in range(args.repeat):
            for command, argv in commands.items():
                for label, url in urls.items():  # interleaved: both see the same load
                    wall, out = timed(argv, project, {**env, "PROMPTCTL_STORE": url})
                    walls.setdefault((label, command), []).append(wall)
                    outs[(label, command)] = out
        result = json.loads(outs[("sqlite", "diff")])
        flips = result["flipped"]
        print(f"diff: {result['paired_rows']:,} paired rows, {len(flips['pass_to_fail'])} pass→fail, "
              f"{len(flips['fail_to_pass'])} fail→pass; "
              + ", ".join(f"{k} {v['delta']:+.4f} p={v['p_value']:.3g}"
                          for k, v in result["metrics"].items()))
        versions = json.loads(outs[("sqlite", "history")])["versions"]
        print(f"history: {len(versions)} versions, newest {versions[0]['git_commit'][:10]} "
              f"({versions[0].get('subject')})")
        targets = {"diff": (f"diff of two {args.rows:,}-row runs --json", 2.0),
                   "history": (f"history over {args.runs:,} runs --json", 0.5)}
        for command, (label, target) in targets.items():
            report(f"SQLite {label}", walls[("sqlite", command)], target)
            if "other" not in urls:
                continue
            report(f"{public_url(args.store)} {label}", walls[("other", command)], target)
            ratio = (statistics.median(walls[("other", command)])
                     / statistics.median(walls[("sqlite", command)]))
            same = outs[("other", command)] == outs[("sqlite", command)]
            print(f"  {command}: median other/SQLite {ratio:.2f}x (target <= 2x) "
                  f"{'OK' if ratio <= 2 else 'MISSED'}; output identical: {same}")


if __name__ == "__main__":
    main()
