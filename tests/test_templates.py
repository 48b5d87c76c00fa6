"""The template sandbox (promptctl.templates): each escape class and each resource bomb is
refused at its root, with an error naming the file, the template line and the fix.

None of this depends on the Jinja2 version: these tests are also run against the lowest
version pyproject.toml allows, and against 3.1.4, whose own sandbox has known escapes.
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any

import pytest

from promptctl import templates
from promptctl.errors import InputError
from promptctl.templates import MAX_CHARS, Site, compile_template, render_template

CANARY = "sk-canary-7f3e9d2a1b"

# Like a prompt message: a template line maps to a file line, an error outside any line to
# the template's first line.
SITE = Site(file="prompts/t.yaml", where="template t", line_of=lambda line: line or 1)


@pytest.fixture(autouse=True)
def _canary(monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret in the environment, which no template may ever reach."""
    monkeypatch.setenv("PROMPTCTL_TEST_CANARY", CANARY)


def data() -> dict[str, Any]:
    return {"text": "hello", "row": {"a": 1, "update": "data"}, "items": [1, 2, 3],
            "examples": [{"id": "ex1", "input": {"text": "first"}, "expected": 1}]}


def render(source: str, variables: dict[str, Any] | None = None) -> str:
    return render_template(compile_template(source, SITE), data() if variables is None else variables,
                           SITE, "row 'r1'")


def failure(source: str, variables: dict[str, Any] | None = None) -> InputError:
    with pytest.raises(InputError) as info:
        render(source, variables)
    exc = info.value
    assert exc.file == "prompts/t.yaml"
    assert exc.fix, "every error says what to do"
    assert exc.line is not None
    text = str(exc)
    assert CANARY not in text
    # Python internals never reach the user, not even in the message.
    assert "Opaque" not in text and not re.search(r"0x[0-9a-f]{6,}|<(function|built-in|class) ", text)
    return exc


def refused(source: str, variables: dict[str, Any] | None = None) -> InputError:
    exc = failure(source, variables)
    assert "sandbox forbids" in exc.message, exc.message
    return exc


def too_big(source: str, variables: dict[str, Any] | None = None) -> InputError:
    exc = failure(source, variables)
    assert "template limit" in exc.message, exc.message
    return exc


# --- escape classes ---------------------------------------------------------------------------

ESCAPES = {
    "str.format reached directly": [
        "{{ '{0.__class__}'.format(text) }}",
        "{{ '{0.__init__.__globals__}'.format(lipsum) }}",
        "{{ ''.format_map }}",
        "{{ '{a}'.format_map(row) }}",
        "{{ text.format() }}",
        "{{ text['format'] }}",
        "{{ text['format_map']('x') }}",
    ],
    "str.format through attr": [
        "{{ text|attr('format') }}",
        "{{ (text|attr('format'))('{0.__class__}', 1) }}",
        "{{ ''|attr('format_map') }}",
        "{% set f = '{0.__init__.__globals__}'|attr('format') %}{{ f(lipsum) }}",
        "{{ (row|attr('items'))|attr('format') }}",
    ],
    "str.format through map(attribute=) and other attribute filters": [
        "{{ ['{0.__class__}']|map(attribute='format')|list }}",
        "{{ [text]|map(attribute='format_map')|first }}",
        "{{ [text]|selectattr('format')|list }}",
        "{{ [text, 'b']|sort(attribute='format')|list }}",
        "{{ [text]|groupby('format')|list }}",
        "{{ [text]|sum(attribute='format') }}",
    ],
    "objects through |format and %": [
        "{{ '%s'|format(text.upper) }}",
        "{{ '%(a)r'|format(a=cycler) }}",
        "{{ '%s' % namespace() }}",
        "{% for i in items %}{{ '%s' % loop }}{% endfor %}",
        "{{ '%s %s' % (1, lipsum) }}",
    ],
    "bound methods stored in variables": [
        "{% set f = text.format %}{{ f('{0.__class__}') }}",
        "{% set u = text.upper %}{{ u }}",
        "{% set u = text.upper %}{{ [u]|map('string')|list }}",
        "{% set g = row.get %}{{ g ~ '' }}",
        "{% set p = items.pop %}{{ p() }}",
        "{% set m = dict.update %}{{ m(row, a=2) }}",
    ],
    "underscores and classes": [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''['__class__'] }}",
        "{{ text|attr('__class__') }}",
        "{{ row.__init__ }}",
        "{{ items.__len__() }}",
        "{{ dict.fromkeys }}",
        "{{ dict.__dict__ }}",
        "{{ dict['x'] }}",
    ],
    "cycler, joiner, namespace and lipsum internals": [
        "{{ cycler.__init__.__globals__ }}",
        "{{ cycler('a').items }}",
        "{{ cycler('a').pos }}",
        "{{ cycler }}",
        "{{ joiner(', ').sep }}",
        "{{ joiner }}",
        "{{ namespace(a=1)._Namespace__attrs }}",
        "{{ namespace(a=1) }}",
        "{{ namespace.__init__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ lipsum|attr('__globals__') }}",
        "{{ lipsum.__module__ }}",
        "{{ lipsum }}",
    ],
    "self": [
        "{{ self }}",
        "{{ self._TemplateReference__context }}",
        "{% block b %}x{% endblock %}{{ self.b() }}",
        "{{ self['b'] }}",
        "{{ self|string }}",
    ],
    "range objects": [
        "{{ range }}",
        "{{ range.__globals__ }}",
        "{{ range|attr('__closure__') }}",
        "{{ range(3).__class__ }}",
    ],
    "loop internals": [
        "{% for i in items %}{{ loop }}{% endfor %}",
        "{% for i in items %}{{ loop._iterator }}{% endfor %}",
        "{% for i in items %}{{ loop|attr('_recurse') }}{% endfor %}",
        "{% for i in items %}{{ loop|string }}{% endfor %}",
        "{% for i in items %}{{ loop ~ '' }}{% endfor %}",
        "{% for i in items %}{{ [loop]|join }}{% endfor %}",
        "{% for i in items %}{{ loop.cycle.__self__ }}{% endfor %}",
    ],
    "mutating data (dict.__init__ and the like)": [
        "{{ row.__init__(a=2) }}",
        "{{ dict.__init__(row, a=2) }}",
        "{{ dict.update(row, a=2) }}",
        "{{ row.setdefault('b', 1) }}",
        "{{ row.popitem() }}",
        "{{ row|attr('update') }}",
        "{{ items.append(4) }}",
        "{{ items.clear() }}",
        "{{ items|attr('sort') }}",
        "{{ examples[0].input.clear() }}",
    ],
    "other templates and files": [
        "{% include '/etc/passwd' %}",
        "{% import '../../.env' as env %}",
        "{% extends 'base.j2' %}",
        "{% from 'x' import y %}{{ y }}",
    ],
    "{% set %} tricks": [
        "{% set ns = namespace() %}{% set ns.__class__ = 1 %}{{ ns.__class__ }}",
        "{% set ns = namespace(f=text.upper) %}{{ ns.f }}",
        "{% set ns = namespace() %}{% set ns.f = text|attr('format') %}x",
        "{% set x = text.format %}x",
        "{% set row = dict %}{{ row.update }}",
        "{% set m %}{{ lipsum }}{% endset %}{{ m }}",
    ],
}


@pytest.mark.parametrize("source", [pytest.param(s, id=f"{cls}: {s}") for cls, sources in ESCAPES.items()
                                    for s in sources])
def test_escape_classes_are_refused(source: str) -> None:
    before = data()
    variables = copy.deepcopy(before)
    refused(source, variables)
    assert variables == before, "a template changed its data"


def test_set_on_data_that_is_not_a_namespace_fails_cleanly() -> None:
    exc = failure("{% set row.a = 2 %}x")
    assert "namespace" in exc.message


def test_a_mapping_key_named_like_a_refused_method_is_data() -> None:
    # row.update is the method in plain Jinja2; here it is refused as a method, so the key wins.
    assert render("{{ row.update }} {{ row['update'] }}") == "data data"


def test_percent_formatting_never_reads_attributes() -> None:
    # printf-style formatting has no attribute syntax: braces stay text.
    assert render("{{ '{0.__class__}%s'|format(1) }}") == "{0.__class__}1"


def test_refusals_say_what_was_refused_in_the_users_words() -> None:
    exc = refused("{{ lipsum|attr('x') }}")
    assert exc.message.endswith("templates cannot use 'x' of the function lipsum")
    assert "the method upper" in refused("{{ text.upper.x }}").message
    assert "text's format method" in refused("{{ text.format }}").message
    assert "would change a mapping" in refused("{{ row.pop('a') }}").message
    exc = refused("{% for i in items %}{{ loop }}{% endfor %}")
    assert "the loop variable cannot be written" in exc.message and "loop.index" in exc.fix
    exc = refused("{{ text.upper }}")
    assert "the method upper cannot be written into a prompt" in exc.message
    assert "call it" in exc.fix
    exc = refused("{{ items|map('string') }}")
    assert "lazy sequence" in exc.message and "|list" in exc.fix
    assert "underscore" in refused("{{ row.__class__ }}").message
    assert "cannot be compared" in refused("{{ text.upper < 1 }}").message
    assert "used with -" in refused("{{ -text.upper }}").message


def test_the_environment_is_never_reachable() -> None:
    # The canary is in os.environ: every way in above is refused, and nothing renders it.
    for sources in ESCAPES.values():
        for source in sources:
            try:
                out = render(source)
            except InputError as exc:
                out = str(exc)
            assert CANARY not in out
    assert os.environ["PROMPTCTL_TEST_CANARY"] == CANARY


# --- what templates may still do ----------------------------------------------------------------

@pytest.mark.parametrize("source, expected", [
    ("{{ text.upper() }} {{ text.center(9, '*') }} {{ 'a,b'.split(',') }}", "HELLO **hello** ['a', 'b']"),
    ("{{ '%-6s|%5.2f'|format(text, 1.5) }} {{ '%(a)s!' % row }}", "hello | 1.50 1!"),
    ("{{ row.get('a') }} {{ row.items()|list }} {{ items.index(2) }}", "1 [('a', 1), ('update', 'data')] 1"),
    ("{% set ns = namespace(t=0) %}{% for i in range(4) %}{% set ns.t = ns.t + i %}{% endfor %}"
     "{{ ns.t }}", "6"),
    ("{% set c = cycler('a', 'b') %}{{ c.next() }}{{ c.next() }}{{ c.current }}"
     "{% set j = joiner('+') %}{{ j() }}x{{ j() }}y", "aba" + "x+y"),
    ("{% for i in items %}{{ loop.index }}{{ loop.cycle('a', 'b') }}{% endfor %}", "1a2b3a"),
    ("{% macro m(n) %}{% if n %}{{ n }}{{ m(n - 1) }}{% endif %}{% endmacro %}{{ m(10) }}",
     "10987654321"),
    ("{% for x in [[1, [2]], [3]] recursive %}{{ x if x is number else loop(x) }}{% endfor %}", "123"),
    ("{{ range(1000)|join(',')|length }} {{ lipsum(2, False, 5, 6)|wordcount > 9 }}", "3889 True"),
    ("{{ text|tojson }} {{ items|tojson(2)|length }} {{ row|pprint }}",
     '"hello" 17 {\'a\': 1, \'update\': \'data\'}'),
    ("{{ ('a b ' * 3)|wordwrap(4) }} {{ 'a\nb'|indent(4) }}", "a b\na b\na b a\n    b"),
    ("{{ examples|map(attribute='input.text')|join }} {{ examples|groupby('expected')|list|length }}",
     "first 1"),
    ("{{ 2 ** 100 }} {{ 'ab' * 3 }} {{ [0] * 3 }} {{ 7 // 2 }} {{ -(text|length) }}",
     "1267650600228229401496703205376 ababab [0, 0, 0] 3 -5"),
])
def test_ordinary_templates_still_render(source: str, expected: str) -> None:
    assert render(source) == expected


def test_a_loop_over_thousands_of_examples_is_within_budget() -> None:
    examples = [{"input": {"text": f"example {i}"}, "expected": i} for i in range(5000)]
    out = render("{% for ex in examples %}{{ loop.index }}. {{ ex.input.text }} -> {{ ex.expected }}\n"
                 "{% endfor %}", {"examples": examples})
    assert out.count("\n") == 5000


def test_long_data_can_be_written_and_sliced() -> None:
    doc = "word " * (MAX_CHARS // 5 - 10)
    assert render("{{ doc }}", {"doc": doc}) == doc
    huge = "x" * (MAX_CHARS + 10)
    assert render("{{ doc[:5] }}|{{ doc|length }}", {"doc": huge}) == f"xxxxx|{MAX_CHARS + 10}"
    exc = too_big("{{ doc }}", {"doc": huge})
    assert f"{MAX_CHARS:,}" in exc.message


# --- resource bombs ------------------------------------------------------------------------------

BOMBS = {
    "powers and products of numbers": [
        "{{ 7 ** 30000000 }}",
        "{{ 2 ** 100000 }}",
        "{{ (10 ** 1000) * (10 ** 1000) }}",
        "{% set ns = namespace(x=2) %}{% for i in range(100) %}{% set ns.x = ns.x * ns.x %}{% endfor %}",
        "{{ 2.0 ** 100000 }}",
    ],
    "repeated text and lists": [
        "{{ 'a' * 10**10 }}",
        "{{ 10**10 * 'a' }}",
        "{{ [1] * 10**9 }}",
        "{{ ('a' * 3000000) + ('a' * 3000000) }}",
        "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
    ],
    "widths": [
        "{{ 'x'|center(10**10) }}",
        "{{ text.center(10**10) }}",
        "{{ text.ljust(10**10, '-') }}",
        "{{ text.zfill(10**10) }}",
        "{{ text|attr('rjust')(10**10) }}",
        "{{ ('a\n' * 1000)|indent(10**9) }}",
        "{{ ('a\n' * 1000)|indent('x' * 100000) }}",
        "{{ ('a ' * 100000)|wordwrap(1, wrapstring='x' * 1000) }}",
        "{{ {'a': [1, 2]}|tojson(10**9) }}",
    ],
    "printf formatting": [
        "{{ '%10000000000s' % 1 }}",
        "{{ '%.1000000000f'|format(1.5) }}",
        "{{ '%*d' % (10**9, 1) }}",
        "{{ ('%s' * 1000) % ((text * 100000,) * 1000) }}",
        "{{ ('%(a)s' * 1000)|format(a=text * 100000) }}",
    ],
    "nested loops": [
        "{% for i in range(10**6) %}{% for j in range(10**6) %}{% endfor %}{% endfor %}",
        "{% for i in range(10**5) %}{% for j in range(10**5) %}{% endfor %}{% endfor %}",
        "{% for i in range(10**5) %}{% for j in range(10**5) if false %}{% endfor %}{% endfor %}",
        "{% for i in range(10**5) %}{% for j in range(10**5) %}x{% endfor %}{% endfor %}",
        "{% for i in range(10**5) %}{{ range(10**5)|sum }}{% endfor %}",
    ],
    "lipsum and range": [
        "{{ lipsum(n=10**8) }}",
        "{{ lipsum(1, max=10**9) }}",
        "{{ range(10**12)|list }}",
        "{{ range(10**100) }}",
        "{{ range(0, 10**12, 2)|length }}",
    ],
    "recursion": [
        "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
        "{% macro m(n) %}{% if n %}{{ m(n-1) }}{{ m(n-1) }}{% endif %}{% endmacro %}{{ m(60) }}",
        "{% macro m() %}{{ caller() }}{% endmacro %}"
        "{% macro r() %}{% call m() %}{{ r() }}{% endcall %}{% endmacro %}{{ r() }}",
        "{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}",
        "{% for x in range(100000) recursive %}{{ loop(range(100000)) if loop.depth < 3 }}{% endfor %}",
    ],
    "joining and writing": [
        "{{ range(100000)|join('x' * 1000) }}",
        "{{ ('x' * 1000).join(range(100000)|map('string')) }}",
        "{% set a = 'x' * 4000000 %}{{ [a, a]|join }}",
        "{% set a = 'x' * 4000000 %}{{ a ~ a }}",
        "{% set a = 'x' * 3000000 %}{{ [a, a, a]|string }}",
        "{% set a = 'x' * 3000000 %}{{ [a, a, a]|pprint }}",
        "{% set a = 'x' * 4000000 %}{% macro m() %}{% for i in range(1000) %}{{ a }}{% endfor %}"
        "{% endmacro %}{{ m()|length }}",
        "{% set a = 'x' * 1000000 %}{% for i in range(1000) %}{{ a }}{% endfor %}",
        "{{ [1]|batch(10**9, 0)|list }}",
        "{{ [1]|slice(10**9, 0)|list }}",
    ],
}


@pytest.mark.parametrize("source", [pytest.param(s, id=f"{cls}: {s[:60]}") for cls, sources in BOMBS.items()
                                    for s in sources])
def test_resource_bombs_end_with_a_clear_error(source: str) -> None:
    too_big(source)


def test_a_bomb_names_its_template_line() -> None:
    exc = too_big("one\ntwo\n{{ 'a' * 10**10 }}\nfour")
    assert exc.line == 3
    exc = refused("one\n{% for i in items %}\n{{ text|attr('format') }}\n{% endfor %}")
    assert exc.line == 3


@pytest.mark.parametrize("source, needle", [
    ("{{ " + "9" * 5000 + " }}", "cannot be compiled"),
    ("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "nests too deeply"),
])
def test_templates_that_cannot_compile_are_input_errors(source: str, needle: str) -> None:
    with pytest.raises(InputError) as info:
        compile_template(source, SITE)
    assert needle in info.value.message
    assert info.value.fix


def test_nothing_runs_while_compiling() -> None:
    # Constant expressions are not folded at compile time, where no budget applies.
    for sources in BOMBS.values():
        for source in sources:
            compile_template(source, SITE)


def test_each_render_has_its_own_budget() -> None:
    template = compile_template("{% for i in range(90000) %}{% endfor %}ok", SITE)
    for _ in range(30):  # far more steps in all than one render may take
        assert render_template(template, {}, SITE, "the row") == "ok"
    assert templates._budget() is None
