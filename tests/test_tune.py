"""The parts of `promptctl tune` that need no server: splits, budgets, candidate files."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptctl.errors import InputError
from promptctl.evalsets import Row
from promptctl.prompts import parse_prompt
from promptctl.scaffold import PROMPT as LANGUAGE_PROMPT
from promptctl.tune import (
    MIN_TEST,
    MIN_VALIDATION,
    Budget,
    Plan,
    build,
    parse_budget,
    replace_key,
    split_rows,
    usable_counts,
)
from tests.cli.test_tune import INSTRUCTION_PROMPT, PROMPT


def rows(n: int) -> list[Row]:
    return [Row(id=f"r{i}", input={"item": i, "note": "x"}, expected=2 * i) for i in range(n)]


def test_splits_are_fixed_by_the_seed_and_disjoint() -> None:
    a = split_rows(rows(30), 0, evalset=Path("e.jsonl"), has_pool=False)
    b = split_rows(rows(30), 0, evalset=Path("e.jsonl"), has_pool=False)
    c = split_rows(rows(30), 1, evalset=Path("e.jsonl"), has_pool=False)
    assert a == b and a.test != c.test
    ids = [r.id for part in (a.train, a.validation, a.test) for r in part]
    assert sorted(ids) == sorted(r.id for r in rows(30)) and len(set(ids)) == 30
    assert (len(a.train), len(a.validation), len(a.test)) == (9, 9, 12)


def test_the_smallest_eval_set_is_stated_and_refused_below() -> None:
    least = MIN_TEST + MIN_VALIDATION + 1
    split = split_rows(rows(least), 0, evalset=Path("e.jsonl"), has_pool=False)
    assert len(split.test) == MIN_TEST and len(split.train) == 1
    # With a pool of examples besides, train may be empty.
    assert not split_rows(rows(least - 1), 0, evalset=Path("e.jsonl"), has_pool=True).train
    with pytest.raises(InputError) as exc:
        split_rows(rows(least - 1), 0, evalset=Path("e.jsonl"), has_pool=False)
    assert f"needs at least {least}" in str(exc.value) and "e.jsonl" in str(exc.value)


def test_six_flipped_rows_is_the_least_a_paired_test_can_call_significant() -> None:
    from promptctl.stats import mcnemar_exact

    assert mcnemar_exact(0, MIN_TEST) < 0.05 <= mcnemar_exact(0, MIN_TEST - 1)


@pytest.mark.parametrize(("text", "budget"), [("200", Budget(requests=200)),
                                              ("$0.50", Budget(usd=0.5)), (None, Budget())])
def test_budgets(text: str | None, budget: Budget) -> None:
    assert parse_budget(text) == budget


@pytest.mark.parametrize("text", ["0", "-3", "ten", "$", "$-1", "$nan", "1.5"])
def test_bad_budgets_are_refused_with_the_fix(text: str) -> None:
    with pytest.raises(InputError) as exc:
        parse_budget(text)
    assert "--budget 200" in str(exc.value)


def test_a_candidate_keeps_the_file_but_its_examples(tmp_path: Path) -> None:
    path = tmp_path / "prompts" / "double.yaml"
    original = parse_prompt(PROMPT.encode(), path, tmp_path)
    chosen = (Row(id="m1", input={"item": 7, "note": "ü: {x}\nline"}, expected=14),)
    data, candidate = build(original, Plan("test", chosen))
    assert candidate.examples[0].input == chosen[0].input and candidate.examples[0].id == "m1"
    assert candidate.version != original.version
    text = data.decode()
    # Everything else as it was, comments included.
    assert text.startswith("# Doubles a number") and text.count("thresholds:") == 1
    assert candidate.thresholds == original.thresholds
    assert candidate.messages == original.messages
    # The same candidate twice is the same file: the same version, the same cache keys.
    assert build(original, Plan("again", chosen))[1].version == candidate.version


def test_a_candidate_instruction_replaces_the_system_message(tmp_path: Path) -> None:
    original = parse_prompt(INSTRUCTION_PROMPT.encode(), tmp_path / "p.yaml", tmp_path)
    _, candidate = build(original, Plan("test", None, "Line one.\nLine two."))
    assert candidate.messages[0].content == "Line one.\nLine two."
    assert [m.role for m in candidate.messages] == [m.role for m in original.messages]
    # A system message that is a template stays, after the instruction.
    looped = parse_prompt(PROMPT.encode(), tmp_path / "q.yaml", tmp_path)
    _, both = build(looped, Plan("test", None, "Be exact."))
    assert [m.content for m in both.messages[:2]] == ["Be exact.", looped.messages[0].content]


def test_replace_key_adds_a_missing_key() -> None:
    assert replace_key("name: a\n", "examples", []) == "name: a\nexamples: []\n"


def test_example_counts_follow_the_templates(tmp_path: Path) -> None:
    pool = [Row(id=f"p{i}", input={"message": f"m{i}", "item": i, "note": "n"}, expected="English")
            for i in range(10)]
    probe = Row(id="q", input={"message": "hello", "item": 1, "note": "n"})
    # The init example indexes examples[0] to examples[5]: exactly 6.
    language = parse_prompt(LANGUAGE_PROMPT.encode(), tmp_path / "language.yaml", tmp_path)
    assert usable_counts(language, pool, probe) == [6]
    # A loop over the examples takes any number up to the most tried.
    looped = parse_prompt(PROMPT.encode(), tmp_path / "double.yaml", tmp_path)
    assert usable_counts(looped, pool, probe) == list(range(9))
    # A prompt that never shows its examples: nothing to choose.
    plain = parse_prompt(INSTRUCTION_PROMPT.encode(), tmp_path / "plain.yaml", tmp_path)
    assert usable_counts(plain, pool, probe) == [0]
