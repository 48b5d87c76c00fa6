"""Agent benchmark against the local test server (tests/fakeserver.py, run in this process).

An agent of 3 turns per row (tool call, tool call, final answer: the fake model decides from
the number of tool results in the conversation so far) over ROWS rows at CONCURRENCY, each
request answered after LATENCY seconds. Measured: the whole-process wall time of
`promptctl eval AGENT --concurrency C --no-cache` (interpreter start-up included), against
the floor of 3 x the whole-process wall time of a single-prompt run of the same rows at the
same concurrency and latency (the 3 turns of a row are sequential). The two are measured
interleaved (A, B, A, B, ...), REPEATS times each, and the medians are compared. That floor
counts the process's fixed cost (start-up, loading, storing) three times, so a second ratio
is printed against a floor that counts it once: 3 x (single-prompt run - fixed) + fixed,
the fixed cost being a one-row run of the prompt less one request's latency (measured
interleaved too). Peak
memory is the ru_maxrss of the agent's process (os.wait4), the largest of the CLI and the
processes it waited for.

Run: python bench/agent.py [--rows 500] [--concurrency 50] [--latency 0.1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakeserver import Body, FakeOpenAI, Reply, content_text, tool_call_reply  # noqa: E402

PROMPTCTL = [sys.executable, "-m", "promptctl.cli"]

TOOLS_PY = """\
def add(a, b):
    return a + b


def multiply(a, b):
    return a * b
"""

AGENT = """\
name: bench_agent
kind: agent
model: bench-model
protocol: tools
max_turns: 3
params: {max_tokens: 8}
messages:
  - role: user
    content: "Agent {{ n }}"
tools:
  - name: add
    description: Add two numbers.
    parameters: {type: object, properties: {a: {type: number}, b: {type: number}}, required: [a, b]}
    tool: ../tools/calc.py:add
  - name: multiply
    description: Multiply two numbers.
    parameters: {type: object, properties: {a: {type: number}, b: {type: number}}, required: [a, b]}
    tool: ../tools/calc.py:multiply
output: {type: number}
metrics: [exact_match]
evalset: ../evalsets/agent.jsonl
"""

PROMPT = """\
name: bench_prompt
model: bench-model
params: {max_tokens: 8}
messages:
  - role: user
    content: "Prompt {{ n }}"
output: {pattern: 'echo: Prompt (?P<answer>\\d+)', type: number}
metrics: [exact_match]
evalset: ../evalsets/prompt.jsonl
"""


def model(body: Body) -> Reply:
    """The fake model. With tools: add(n, 1), then multiply(that, 2), then the last result.
    Without: echoes the question, which the prompt's pattern reads back."""
    user = next(content_text(m.get("content")) for m in body["messages"] if m["role"] == "user")
    if "tools" not in body:
        return f"echo: {user}"
    results = [content_text(m.get("content")) for m in body["messages"] if m["role"] == "tool"]
    if not results:
        match = re.search(r"\d+", user)
        return tool_call_reply(("add", {"a": int(match.group()) if match else 0, "b": 1}))
    if len(results) == 1:
        return tool_call_reply(("multiply", {"a": json.loads(results[0]), "b": 2}))
    return results[-1]


def make_project(base: Path, rows: int) -> None:
    for folder in ("agents", "prompts", "tools", "evalsets"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    (base / "tools" / "calc.py").write_text(TOOLS_PY, encoding="utf-8")
    (base / "agents" / "bench.yaml").write_text(AGENT, encoding="utf-8")
    (base / "prompts" / "bench.yaml").write_text(PROMPT, encoding="utf-8")
    with (base / "evalsets" / "agent.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(rows):
            fh.write(json.dumps({"id": f"r{i}", "input": {"n": i}, "expected": (i + 1) * 2}) + "\n")
    with (base / "evalsets" / "prompt.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(rows):
            fh.write(json.dumps({"id": f"r{i}", "input": {"n": i}, "expected": i}) + "\n")


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int, str, str]:
    """Wall seconds of one whole process, its ru_maxrss in MiB, exit code, stdout, stderr."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return wall, usage.ru_maxrss / 1024, proc.returncode, out.read(), err.read()


def run_once(server: FakeOpenAI, base: Path, target: str, concurrency: int,
             expected_requests: int, *extra: str) -> tuple[float, float, dict[str, Any]]:
    """One `promptctl eval TARGET` in a fresh store: wall seconds, peak RSS in MiB, the run."""
    store = base / "results.db"
    store.unlink(missing_ok=True)
    env = {**os.environ, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "bench",
           "PROMPTCTL_STORE": f"sqlite:///{store}"}
    before = server.count
    cmd = [*PROMPTCTL, "eval", target, "--concurrency", str(concurrency), "--no-cache", "--json",
           *extra]
    wall, rss, code, out, err = timed(cmd, env, base)
    if code != 0:
        raise SystemExit(f"promptctl eval {target} exited {code}:\n{err[-3000:]}")
    (run,) = json.loads(out)["runs"]
    sent = server.count - before
    if run["errors"] != 0 or run["metrics"]["exact_match"]["value"] != 1.0 \
            or sent != expected_requests:
        raise SystemExit(f"the run of {target} was not clean ({sent} requests, expected "
                         f"{expected_requests}): errors {run['errors']}, metrics {run['metrics']}")
    return wall, rss, run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--latency", type=float, default=0.1, help="seconds per request")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs of each")
    args = ap.parse_args()

    load = os.getloadavg()
    agent_walls: list[float] = []
    prompt_walls: list[float] = []
    fixed_walls: list[float] = []
    rss: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI(latency=args.latency) as server:
        server.responder = model
        base = Path(tmp)
        make_project(base, args.rows)
        for _ in range(args.repeats):
            wall, _, _ = run_once(server, base, "prompts/bench.yaml", args.concurrency, args.rows)
            prompt_walls.append(wall)
            wall, peak, run = run_once(server, base, "agents/bench.yaml", args.concurrency,
                                       3 * args.rows)
            agent_walls.append(wall)
            rss.append(peak)
            one, _, _ = run_once(server, base, "prompts/bench.yaml", 1, 1, "--limit", "1")
            fixed_walls.append(one - args.latency)
            print(f"  prompt {prompt_walls[-1]:.2f} s, agent {wall:.2f} s, agent peak RSS "
                  f"{peak:.0f} MiB, one-row prompt {one:.2f} s", flush=True)
        if server.errors:
            raise SystemExit(f"the fake server failed: {server.errors[0]!r}")
    agent = statistics.median(agent_walls)
    floor = 3 * statistics.median(prompt_walls)
    print(f"N={args.rows} c={args.concurrency} latency {args.latency * 1000:.0f} ms, "
          f"{args.repeats} interleaved runs each (whole processes, --no-cache); "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} before")
    print(f"agent (3 turns a row): median {agent:.2f} s "
          f"(range {min(agent_walls):.2f}-{max(agent_walls):.2f})")
    print(f"floor, 3 x single-prompt run: median 3 x {floor / 3:.2f} = {floor:.2f} s "
          f"(range {min(prompt_walls):.2f}-{max(prompt_walls):.2f} per run)")
    print(f"ratio agent / floor: {agent / floor:.3f}x")
    fixed = statistics.median(fixed_walls)
    tight = 3 * (floor / 3 - fixed) + fixed
    print(f"fixed cost per process (one-row prompt run less {args.latency * 1000:.0f} ms): "
          f"median {fixed:.2f} s; floor counting it once {tight:.2f} s; "
          f"ratio agent / that floor: {agent / tight:.3f}x")
    after = os.getloadavg()
    print(f"load average {after[0]:.2f} {after[1]:.2f} {after[2]:.2f} after")
    print(f"agent peak RSS (ru_maxrss): median {statistics.median(rss):.0f} MiB, "
          f"max {max(rss):.0f} MiB")


if __name__ == "__main__":
    main()
