"""What `promptctl tune` costs beyond the evaluations it makes.

A tuning is a sequence of ordinary runs (the pool run, one run per candidate, the final
test); everything else (splitting, building candidate files, budget estimates before each
evaluation, the state file, the paired test, the branch commit) is the search's overhead.
This times a whole tuning (in process, against the fake server answering over real HTTP)
and, separately, each of the evaluations it made run alone through `run_eval`, and prints
the ratio of the tuning's time to the sum of its evaluations' times: uncached (a new store)
and cached (the same store again, every answer from the cache). Measurements are
interleaved, repeat by repeat, so both see the same machine load; each figure is the
minimum over repeats.

Run: python bench/tune.py [--repeat K] [--rows N] [--latency SECONDS]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import promptctl.tune as tune_module  # noqa: E402
from promptctl.engine import EvalOptions, run_eval  # noqa: E402
from promptctl.project import open_project  # noqa: E402
from promptctl.prompts import load_prompt  # noqa: E402
from promptctl.providers import resolve_model  # noqa: E402
from promptctl.store import open_store  # noqa: E402
from tests.cli.test_tune import PROMPT, magic_reply, rows  # noqa: E402
from tests.fakeserver import FakeOpenAI  # noqa: E402


def project(root: Path, n: int) -> None:
    (root / "prompts").mkdir(parents=True)
    (root / "evalsets").mkdir()
    (root / "prompts" / "double.yaml").write_text(PROMPT)
    (root / "evalsets" / "double.jsonl").write_text(rows(n))
    (root / "pool.jsonl").write_text(rows(2, start=500, note="MAGIC").replace('"r5', '"m5'))
    (root / ".gitignore").write_text(".promptctl/\n*.db\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@example.invalid",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@example.invalid"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "bench"]):
        subprocess.run(["git", "-c", "commit.gpgsign=false", *args], cwd=root, check=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds the fake server waits before each answer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI(latency=args.latency) as server:
        root = Path(tmp) / "repo"
        project(root, args.rows)
        os.chdir(root)
        os.environ.update(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="sk-bench")
        server.responder = magic_reply
        config = open_project(root)
        prompt = load_prompt(root / "prompts" / "double.yaml", root)
        resolved = resolve_model("gpt-4o-mini", config)
        evalset = prompt.load_evalset()
        options = tune_module.TuneOptions(pool=root / "pool.jsonl")
        # Every evaluation the tuning makes, as it makes it, to be timed alone afterwards.
        made: list[tuple[Any, Any, EvalOptions, Any]] = []
        real_run_eval = tune_module.run_eval

        def recording(target: Any, res: Any, **kw: Any) -> Any:
            made.append((target, kw["evalset"], kw["options"], kw.get("git")))
            return real_run_eval(target, res, **kw)

        best: dict[str, list[float]] = {k: [] for k in ("tune", "tune_cached", "evals",
                                                        "evals_cached")}
        requests = 0
        for r in range(args.repeat):
            store = open_store(f"sqlite:///{root}/tune{r}.db")
            made.clear()
            tune_module.run_eval = recording  # type: ignore[assignment]
            before = len(server.chat_requests)
            started = time.perf_counter()
            result = tune_module.tune(prompt.path, resolved, evalset, store=store, config=config,
                                      options=options)
            best["tune"].append(time.perf_counter() - started)
            requests = len(server.chat_requests) - before
            started = time.perf_counter()
            tune_module.tune(prompt.path, resolved, evalset, store=store, config=config,
                             options=options)
            best["tune_cached"].append(time.perf_counter() - started)
            tune_module.run_eval = real_run_eval  # type: ignore[assignment]
            evaluations = list(made[:len(made) // 2])
            fresh = open_store(f"sqlite:///{root}/evals{r}.db")
            for key, st in (("evals", fresh), ("evals_cached", fresh)):
                total = 0.0
                for target, subset, opts, git in evaluations:
                    started = time.perf_counter()
                    run_eval(target, resolved, store=st, config=config, evalset=subset,
                             options=opts, git=git)
                    total += time.perf_counter() - started
                best[key].append(total)
        m = {k: min(v) for k, v in best.items()}
        print(f"tuning: {len(evaluations)} evaluations, {requests} requests, "
              f"{len(result.candidates)} candidates, written={result.written}")
        print(f"uncached: tune {m['tune']:.3f} s, its evaluations alone {m['evals']:.3f} s, "
              f"ratio {m['tune'] / m['evals']:.2f}")
        print(f"cached:   tune {m['tune_cached']:.3f} s, its evaluations alone "
              f"{m['evals_cached']:.3f} s, ratio {m['tune_cached'] / m['evals_cached']:.2f}")


if __name__ == "__main__":
    main()
