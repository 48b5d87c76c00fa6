"""Bounds that hold: every filter that expands text is bounded by its real output, and all
that a render builds shares one budget; a pipeline's step graph of any depth is walked
without recursion."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import jinja2
import pytest

from promptctl.templates import MAX_BUILT, MAX_CHARS, TemplateTooBig, environment
from tests.helpers import invoke

# Each of these would build far more than MAX_CHARS characters (gigabytes for some) if the
# filter's estimate were trusted; each must stop before.
EXPANDING = [
    "{{ ['a', 'b']|tojson(indent=3000000) }}",
    "{{ (['a'] * 2000)|tojson(indent=4000) }}",
    "{{ [[['x'] * 50] * 50]|tojson(indent=2000) }}",
    "{{ (['a'] * 2000)|tojson(indent='\t' * 4000) }}",
    "{{ {'k' * 200000: range(1000)|list}|pprint }}",
    "{{ ('\\r' * 100000)|indent(100) }}",
    "{{ ('\\u2028' * 100000)|indent(100, blank=true) }}",
    "{{ 'x'|indent(5000000, first=true) }}",
    "{{ 'x'|center(5000000) }}",
    "{{ '%a'|format('\\u00e9' * 1000000) }}",
    "{{ '%-*s'|format(5000000, 'x') }}",
    "{{ ('a ' * 1000000)|wordwrap(1, wrapstring='\\n\\n\\n') }}",
    "{{ ('a' * 1000)|replace('', 'b' * 10000) }}",
    "{{ ('a' * 1000).replace('a', 'b' * 10000) }}",
    "{{ (range(1000)|list)|join('x' * 10000) }}",
    "{{ 'ab' * 3000000 }}",
]


def render(source: str) -> str:
    return str(environment().from_string(source).render())


@pytest.mark.parametrize("source", EXPANDING)
def test_an_expanding_filter_stops_at_the_limit(source: str) -> None:
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(TemplateTooBig):
            render(source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 5
    # Never much more than one value at the limit (4 bytes a character at worst), however
    # large the text it would have made.
    assert peak < 8 * 4 * MAX_CHARS, f"{peak:,} bytes"


@pytest.mark.parametrize("source", [
    "{% for i in range(100) %}{% set x = 'a' * 3000000 %}{% endfor %}",
    "{% for i in range(100) %}{% set x = ('a' * 30000)|center(3000000) %}{% endfor %}",
    "{% for i in range(100) %}{% set x = (['a'] * 1000)|tojson(indent=3000) %}{% endfor %}",
    "{% for i in range(100) %}{% set x = ('a' * 1000000).upper() %}{% endfor %}",
    "{% for i in range(200) %}{% set x = ('a' * 1000000) ~ i %}{% endfor %}",
])
def test_what_a_render_builds_and_drops_shares_one_budget(source: str) -> None:
    with pytest.raises(TemplateTooBig, match=f"more than {MAX_BUILT:,} characters"):
        render(source)


@pytest.mark.parametrize("source", [
    "{{ v|tojson }}", "{{ v|tojson(indent=2) }}", "{{ v|tojson(indent='  ') }}", "{{ v|pprint }}",
    "{{ v.a|indent(3, first=true) }}",
])
def test_bounded_filters_write_what_jinja_writes(source: str) -> None:
    value = {"b": [1, {"c": "<x>&'y'", "é": 1.5, "n": None}], "a": "line\nline\rline",
             "z": [list(range(30))] * 3, "e": [], "f": {}}
    expected = jinja2.Environment().from_string(source).render(v=value)
    assert environment().from_string(source).render(v=value) == expected


def test_a_prompt_with_tojson_indent_fails_validate_quickly(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The reported case: validate built gigabytes for one message."""
    root = tmp_path / "proj"
    (root / "prompts").mkdir(parents=True)
    (root / "evalsets").mkdir()
    (root / "prompts" / "p.yaml").write_text(
        "model: gpt-4o-mini\nmessages:\n  - role: user\n"
        "    content: \"{{ items|tojson(indent=100000) }}\"\nevalset: ../evalsets/e.jsonl\n",
        encoding="utf-8")
    (root / "evalsets" / "e.jsonl").write_text(
        json.dumps({"input": {"items": ["x"] * 50000}}) + "\n", encoding="utf-8")
    monkeypatch.chdir(root)
    started = time.monotonic()
    result = invoke("validate", "prompts/p.yaml", code=2)
    assert time.monotonic() - started < 20
    assert "prompts/p.yaml:4" in result.stderr and "|tojson here" in result.stderr


# --- the step graph ---------------------------------------------------------------------


def deep_pipeline(root: Path, depth: int, *, cycle: bool = False) -> Path:
    """A chain of `depth` steps, each reading the one before (the first reads the last when
    `cycle`), written in reverse order so the walk must go the whole depth at once."""
    (root / "prompts").mkdir(parents=True, exist_ok=True)
    (root / "pipelines").mkdir(exist_ok=True)
    (root / "evalsets").mkdir(exist_ok=True)
    (root / "prompts" / "echo.yaml").write_text(
        "model: gpt-4o-mini\nmessages:\n  - role: user\n    content: \"{{ text }}\"\n",
        encoding="utf-8")
    steps = []
    for i in reversed(range(depth)):
        source = "{{ input.text }}" if i == 0 and not cycle else \
            f"{{{{ steps.s{(i - 1) % depth}.answer }}}}"
        steps.append(f"  - {{id: s{i}, prompt: ../prompts/echo.yaml, input: {{text: \"{source}\"}}}}")
    text = ("name: deep\nkind: pipeline\nsteps:\n" + "\n".join(steps) +
            f"\noutput: \"{{{{ steps.s{depth - 1}.answer }}}}\"\nevalset: ../evalsets/e.jsonl\n")
    (root / "pipelines" / "deep.yaml").write_text(text, encoding="utf-8")
    (root / "evalsets" / "e.jsonl").write_text(
        json.dumps({"input": {"text": "hi"}, "expected": "hi"}) + "\n", encoding="utf-8")
    return root / "pipelines" / "deep.yaml"


def test_a_step_graph_1000_deep_validates(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    deep_pipeline(tmp_path / "proj", 1000)
    monkeypatch.chdir(tmp_path / "proj")
    invoke("validate", "pipelines/deep.yaml")
    deep_pipeline(tmp_path / "proj", 1000, cycle=True)
    result = invoke("validate", "pipelines/deep.yaml", code=2)
    assert "the steps form a cycle: s" in result.stderr
    assert "Traceback" not in result.stderr and "RecursionError" not in result.stderr


@pytest.mark.parametrize("depth", [1000, 5000])
def test_the_step_graph_walk_has_no_depth_limit(depth: int) -> None:
    """The walk itself, on graphs too deep for any recursion limit (loading 5,000 prompt
    files through the CLI would only time the loading)."""
    from types import SimpleNamespace

    from promptctl.pipelines import _CycleError, _topological

    def chain(cycle: bool) -> list[SimpleNamespace]:
        return [SimpleNamespace(id=f"s{i}", deps=frozenset(
            {f"s{(i - 1) % depth}"} if i or cycle else set())) for i in reversed(range(depth))]

    assert _topological(chain(False)) == tuple(f"s{i}" for i in range(depth))
    with pytest.raises(_CycleError) as found:
        _topological(chain(True))
    assert len(found.value.cycle) == depth + 1
    assert found.value.cycle[0] == found.value.cycle[-1]
    # A diamond lattice: many paths to each step, each step visited once.
    lattice = [SimpleNamespace(id=f"d{i}", deps=frozenset({f"d{j}" for j in (i - 1, i - 2) if j >= 0}))
               for i in range(depth)]
    assert _topological(reversed(lattice)) == tuple(f"d{i}" for i in range(depth))
