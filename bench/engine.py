"""Engine benchmarks against the local test server (tests/fakeserver.py).

Prints each figure with its target. Whole-process wall times include
interpreter start-up. Run: python bench/engine.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPTCTL = [sys.executable, "-m", "promptctl.cli"]

PROMPT = """\
name: bench
model: bench-model
params: {max_tokens: 8}
messages:
  - role: user
    content: "Score: {{ text }}"
output: {pattern: 'echo: Score: (?P<answer>\\d+)', type: number}
metrics: [exact_match, rmse, format_validity]
evalset: ../evalsets/bench.jsonl
"""


def start_server(latency: float, *extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fakeserver.py"), "--port", "0",
                             "--latency", str(latency), *extra],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    return proc, line[1]


def make_project(base: Path, n: int) -> Path:
    (base / "prompts").mkdir(parents=True)
    (base / "evalsets").mkdir()
    (base / "prompts" / "bench.yaml").write_text(PROMPT, encoding="utf-8")
    with (base / "evalsets" / "bench.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(n):
            # Every row distinct: equal requests would be answered from the cache mid-run.
            fh.write(json.dumps({"id": f"r{i}", "input": {"text": str(i)}, "expected": i}))
            fh.write("\n")
    return base / "prompts" / "bench.yaml"


TREE_RSS = """
import json, os, resource, subprocess, sys, time
from pathlib import Path

def rss(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0

def tree(pid):
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid] + [p for k in kids for p in tree(int(k))]

t = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
peak_tree = 0.0
import threading
out = {}
reader = threading.Thread(target=lambda: out.update(zip(("out", "err"), p.communicate())))
reader.start()
while p.poll() is None:
    peak_tree = max(peak_tree, sum(rss(q) for q in tree(p.pid)))
    time.sleep(0.02)
reader.join()
w = time.perf_counter() - t
r = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"wall": w, "rss": r, "tree_rss": max(peak_tree, r), "rc": p.returncode,
                  "out": out["out"][-4000:], "err": out["err"][-2000:]}))
"""


def timed(cmd: list[str], env: dict[str, str],
          cwd: Path) -> tuple[float, dict[str, float], subprocess.CompletedProcess[str]]:
    """Wall seconds of one whole process, and its peak RSS in MiB: the largest single process
    ("rss", exact) and the whole process tree, sender processes included ("tree", sampled
    every 20 ms)."""
    out = subprocess.run([sys.executable, "-c", TREE_RSS, *cmd], capture_output=True, text=True,
                         env=env, cwd=cwd, check=True)
    data = json.loads(out.stdout)
    proc = subprocess.CompletedProcess(cmd, data["rc"], data["out"], data["err"])
    return data["wall"], {"rss": data["rss"], "tree": data["tree_rss"]}, proc


def run_case(n: int, concurrency: int, latency: float, *server_args: str,
             cached_rerun: bool = False) -> dict[str, float]:
    server, url = start_server(latency, *server_args)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            prompt = make_project(base, n)
            env = {**os.environ, "OPENAI_BASE_URL": url, "OPENAI_API_KEY": "bench",
                   "PROMPTCTL_STORE": f"sqlite:///{base / 'results.db'}"}
            cmd = [*PROMPTCTL, "eval", str(prompt), "--concurrency", str(concurrency), "--json"]
            wall, rss, proc = timed(cmd, env, base)
            if proc.returncode not in (0, 3):
                raise SystemExit(f"eval failed: {proc.stderr}")
            run = json.loads(proc.stdout)["runs"][0] if proc.returncode == 0 else None
            result = {"wall": wall, "rss": rss["rss"], "tree_rss": rss["tree"],
                      "errors": run["errors"] if run else -1,
                      "exact_match": run["metrics"]["exact_match"]["value"] if run else -1,
                      "retries": run.get("retries", 0) if run else -1}
            if cached_rerun:
                wall2, _, proc2 = timed(cmd, env, base)
                run2 = json.loads(proc2.stdout)["runs"][0]
                result.update(cached_wall=wall2, cached=run2["cached"])
            return result
    finally:
        server.terminate()
        server.wait()


def floor_case(n: int, concurrency: int, latency: float) -> float:
    """Wall seconds of bench/minimal_sdk.py sending the same n requests."""
    server, url = start_server(latency)
    try:
        wall, _, proc = timed([sys.executable, str(ROOT / "bench" / "minimal_sdk.py"), url, str(n),
                               str(concurrency)], dict(os.environ), ROOT)
        if proc.returncode != 0 or int(proc.stdout.strip() or 0) != n:
            raise SystemExit(f"the minimal script failed: {proc.stderr}")
        return wall
    finally:
        server.terminate()
        server.wait()


def ratio(n: int, concurrency: int, latency: float, rounds: int) -> None:
    """promptctl against the minimal SDK script, interleaved: both pay the SDK's import and the
    same server; the ratio is what promptctl adds."""
    pairs = []
    for _ in range(rounds):
        floor = floor_case(n, concurrency, latency)
        mine = run_case(n, concurrency, latency)
        if mine["errors"] != 0 or mine["exact_match"] != 1.0:
            raise SystemExit(f"promptctl's run was not clean: {mine}")
        pairs.append((mine["wall"], floor))
    ratios = sorted(m / f for m, f in pairs)
    median = ratios[len(ratios) // 2]
    print(f"N={n} c={concurrency} latency {latency * 1000:.0f} ms, {rounds} interleaved rounds: "
          f"promptctl {min(p[0] for p in pairs):.2f}-{max(p[0] for p in pairs):.2f} s, minimal SDK "
          f"script {min(p[1] for p in pairs):.2f}-{max(p[1] for p in pairs):.2f} s; ratio median "
          f"{median:.3f}x, range {ratios[0]:.3f}-{ratios[-1]:.3f}x (target <= 1.1x)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the N=5000 and N=50,000 cases")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per ratio")
    args = ap.parse_args()
    latency = 0.1

    wall, _, _ = timed([*PROMPTCTL, "--help"], dict(os.environ), ROOT)
    print(f"promptctl --help: {wall:.3f} s (target < 0.3 s)", flush=True)

    ratio(500, 50, latency, args.rounds)
    r = run_case(500, 50, latency, cached_rerun=True)
    print(f"cached re-run of 500 rows: {r['cached_wall']:.2f} s whole process, {r['cached']} cached "
          "(target < 0.5 s)", flush=True)
    print(f"peak RSS N=500: {r['rss']:.0f} MiB", flush=True)

    f = run_case(100, 10, latency, "--rate-429", "0.1", "--retry-after", "1", "--rate-500", "0.05",
                 "--seed", "1")
    print(f"faults (10% 429 Retry-After 1 s, 5% 500) N=100 c=10: {f['wall']:.2f} s, "
          f"errors {f['errors']} (target 0), retries {f['retries']}", flush=True)

    if not args.quick:
        ratio(5000, 50, latency, args.rounds)
        r = run_case(50_000, 200, 0.0)
        print(f"peak RSS N=50,000 (no latency, c=200): {r['rss']:.0f} MiB (target < 150 MiB), "
              f"{r['wall']:.1f} s", flush=True)


if __name__ == "__main__":
    main()
