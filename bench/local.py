"""The built-in local model on this machine: time to first answer and per-row latency.

Runs `promptctl eval prompts/controversy.yaml --model local/smollm2` as a whole
process (cache off) and reads the answer times the store recorded.
Run: python bench/local.py
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "results.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        env["PROMPTCTL_STORE"] = f"sqlite:///{db}"
        started = time.time()
        proc = subprocess.run([sys.executable, "-m", "promptctl.cli", "eval", "prompts/controversy.yaml",
                               "--model", "local/smollm2", "--no-cache", "--json"],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.time() - started
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        run = json.loads(proc.stdout)["runs"][0]
        conn = sqlite3.connect(db)
        stamps = [datetime.fromisoformat(r[0].replace("Z", "+00:00")).timestamp()
                  for r in conn.execute("SELECT created_at FROM rows WHERE run_id = ? ORDER BY created_at",
                                        (run["id"],))]
        summary = json.loads(conn.execute("SELECT summary FROM runs WHERE id = ?",
                                          (run["id"],)).fetchone()[0])
    lat = run["latency_ms"]
    rows = len(stamps)
    print(f"rows answered: {rows} ({run['n']} eval rows + few-shot examples), errors {run['errors']}")
    print(f"whole command: {wall:.1f} s")
    print(f"server start-up: {summary['server']['startup_s']:.2f} s")
    print(f"command start to first answer: {stamps[0] - started:.2f} s")
    print(f"per-row latency ms: p50 {lat['p50']:.0f}  p75 {lat['p75']:.0f}  p90 {lat['p90']:.0f}  "
          f"p99 {lat['p99']:.0f}")
    print(f"throughput: {rows / (stamps[-1] - stamps[0] + lat['p50'] / 1000):.2f} rows/s; "
          f"format_validity {run['metrics']['format_validity']['value']:.3f}")


if __name__ == "__main__":
    main()
