"""`promptctl init`: a project with one working example."""

from __future__ import annotations

from pathlib import Path

from promptctl.errors import InputError

CONFIG = """\
# promptctl project configuration. Every key is optional.
# endpoints:            # OpenAI-compatible servers, addressed as --model NAME/MODEL
#   ollama: {base_url: "http://127.0.0.1:11434/v1"}
#   qwen: {gguf: "~/models/qwen2.5-1.5b-instruct-q4_k_m.gguf", ctx: 4096}
# pricing:              # USD per million tokens (built-ins cover OpenAI models)
#   ollama/llama3.2: {input: 0, output: 0}
# store: sqlite:///.promptctl/results.db
"""

PROMPT = """\
name: sentiment
description: Sentiment of a short product review.
model: gpt-4o-mini
params:
  temperature: 0
  max_tokens: 16
messages:
  - role: system
    content: |
      Classify the sentiment of a product review as positive, negative or neutral.
      {% for ex in examples %}
      Review: {{ ex.input.review }}
      Sentiment: {{ ex.expected }}
      {% endfor %}
      Answer with one line: "Sentiment: <label>".
  - role: user
    content: "Review: {{ review }}"
examples:
  - input: {review: "Stopped working after two days."}
    expected: negative
  - input: {review: "Does exactly what it says, fast shipping."}
    expected: positive
output:
  pattern: 'Sentiment:\\s*(?P<answer>\\w+)'
  type: label
  labels: [positive, negative, neutral]
metrics: [accuracy, f1_macro, format_validity]
evalset: ../evalsets/sentiment.jsonl
thresholds:
  accuracy: {min: 0.8}
  format_validity: {min: 0.95}
  max_regression: {accuracy: 0.05}
"""

EVALSET = """\
{"id": "s1", "input": {"review": "Love it, best purchase this year."}, "expected": "positive"}
{"id": "s2", "input": {"review": "The strap broke the first time I used it."}, "expected": "negative"}
{"id": "s3", "input": {"review": "It is a phone case. It holds the phone."}, "expected": "neutral"}
{"id": "s4", "input": {"review": "Arrived late and the box was crushed, but it works."}, "expected": "neutral"}
{"id": "s5", "input": {"review": "Refund took six weeks. Never again."}, "expected": "negative"}
{"id": "s6", "input": {"review": "Sound quality is stunning for the price."}, "expected": "positive"}
"""


def scaffold(directory: Path) -> list[Path]:
    """Create promptctl.yaml, prompts/sentiment.yaml and evalsets/sentiment.jsonl."""
    files = {
        directory / "promptctl.yaml": CONFIG,
        directory / "prompts" / "sentiment.yaml": PROMPT,
        directory / "evalsets" / "sentiment.jsonl": EVALSET,
    }
    existing = [p for p in files if p.exists()]
    if existing:
        raise InputError("already exists: init does not overwrite files", file=existing[0],
                         fix="run init in an empty directory, or move the file away")
    created = []
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        created.append(path)
    ignore = directory / ".gitignore"
    lines = ignore.read_text(encoding="utf-8").splitlines() if ignore.exists() else []
    if ".promptctl/" not in lines:
        with ignore.open("a", encoding="utf-8") as fh:
            fh.write(("\n" if lines and lines[-1] else "") + ".promptctl/\n")
        created.append(ignore)
    return created
