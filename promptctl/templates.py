"""The one Jinja2 sandbox that every template renders in: prompt messages, and whatever
else the project templates (pipeline steps, judge prompts).

Templates come from pull requests, so they are hostile input. Jinja2's own sandbox
has had escapes (str.format reached through `|attr`, stored references to a format
method, ...); this one does not rely on Jinja2's checks alone:

- Attributes are an allowlist per type (the read-only methods of text, lists and
  mappings, the documented parts of `loop`, cyclers and namespaces). Everything
  else is refused, whatever Jinja2 version is installed: `str.format` and
  `format_map`, names starting with an underscore, methods that change data,
  attributes of functions, classes, macros and `self`.
- Only plain data can become text: a function, a class, `loop` or a namespace
  written into a prompt, joined with `~`, formatted with `%` or given to a filter
  that turns it into text is refused rather than printing Python internals.
- Every operation that can grow a value (`*`, `**`, `%`, `+`, `~`, the widening
  filters and string methods, `range`, `lipsum`) checks the size of its result
  before computing it, and every render has a budget of steps, nesting, written
  text and time, so a template cannot exhaust memory, CPU or the stack.
- Nothing is evaluated while compiling (every filter and `finalize` take the
  render context, every arithmetic operator is intercepted), so a bomb in a constant
  expression goes off at render time, inside the budget, not in `validate`'s
  compile step outside it.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import time
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptctl.errors import InputError

if TYPE_CHECKING:
    import jinja2

# --- limits --------------------------------------------------------------------------------

# Text one value may hold and one rendered template may produce: about a million tokens,
# more than any model's context window.
MAX_CHARS = 4_000_000
# Text written in all while rendering one template (macro bodies and {% set %} blocks are
# written, then written again where they are used).
MAX_WRITTEN = 4 * MAX_CHARS
# Text (and items) built in all while rendering one template: the real size of every result
# of a filter, a text method, an operator (`*`, `+`, `%`, `~`) or a call, whether it is
# written or not, so a loop that builds large values and drops them is bounded too.
MAX_BUILT = 8 * MAX_CHARS
# Items of a list a template builds.
MAX_ITEMS = 1_000_000
# Items of range(); Jinja2's sandbox has the same limit.
MAX_RANGE = 100_000
# Bits of an integer a template computes (about 1,200 decimal digits).
MAX_INT_BITS = 4096
# Steps of work in one render (a loop iteration costs the size of its body, a filter the
# size of its input): about a second of work.
MAX_STEPS = 1_000_000
# Nested macro calls (and recursive loops).
MAX_CALL_DEPTH = 64
# Steps a macro call costs beyond its body (Jinja2 binds its arguments in Python).
_CALL_COST = 20
# Nesting of lists and mappings written into text.
MAX_NESTING = 100
# Words lipsum() may generate.
MAX_LIPSUM_WORDS = 100_000
# A last resort for work the step count does not see.
MAX_SECONDS = 10.0
# One eval row renders many templates when a pipeline loops (`for_each`: every item renders
# its step's inputs and prompt): the row as a whole has a budget too, so a loop cannot
# multiply the limits of one render by its number of items.
MAX_ROW_STEPS = 4 * MAX_STEPS
MAX_ROW_WRITTEN = MAX_WRITTEN
MAX_ROW_SECONDS = 3 * MAX_SECONDS

_FIX_SIZE = "a prompt cannot hold that much: make the numbers, widths and repetitions smaller"


class TemplateRefused(Exception):
    """The template reached for something the sandbox does not allow."""

    def __init__(self, what: str, fix: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix or ("templates may use their variables, loops, filters and the read-only "
                           "methods of text, lists and mappings")


class TemplateTooBig(Exception):
    """Rendering would go over one of the limits above."""

    def __init__(self, what: str, fix: str = _FIX_SIZE) -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix


# --- the render budget ---------------------------------------------------------------------


@dataclass
class RowBudget:
    """What all the renders of one row have spent (see `row_budget`). Time counts only
    while a template renders: the row's requests may take as long as they take."""

    seconds: float = 0.0
    steps: int = 0
    written: int = 0

    def charge(self, steps: int, rendering_for: float) -> None:
        self.steps += steps
        if self.steps > MAX_ROW_STEPS:
            raise TemplateTooBig(f"the templates of one row take more than {MAX_ROW_STEPS:,} "
                                 "steps in all (every item of a for_each renders its step)",
                                 fix="loop over fewer items, or make each item's templates "
                                 "smaller")
        if self.seconds + rendering_for > MAX_ROW_SECONDS:
            raise TemplateTooBig(f"the templates of one row take more than {MAX_ROW_SECONDS:g} "
                                 "seconds in all (every item of a for_each renders its step)",
                                 fix="loop over fewer items, or make each item's templates "
                                 "smaller")

    def write(self, chars: int) -> None:
        self.written += chars
        if self.written > MAX_ROW_WRITTEN:
            raise TemplateTooBig(f"the templates of one row write more than "
                                 f"{MAX_ROW_WRITTEN:,} characters in all (every item of a "
                                 "for_each renders its step)",
                                 fix="loop over fewer items, or make each item's text shorter")


_ROW: contextvars.ContextVar[RowBudget | None] = contextvars.ContextVar("promptctl_row_budget",
                                                                       default=None)


@contextlib.contextmanager
def row_budget() -> Iterator[RowBudget]:
    """Every render inside this block (tasks it starts included: they copy the context)
    also spends from one budget for the row."""
    budget = RowBudget()
    token = _ROW.set(budget)
    try:
        yield budget
    finally:
        _ROW.reset(token)


@dataclass
class _Budget:
    started: float
    steps: int = 0
    written: int = 0
    depth: int = 0
    row: RowBudget | None = None

    @property
    def deadline(self) -> float:
        return self.started + MAX_SECONDS

    def charge(self, steps: int) -> None:
        self.steps += steps
        if self.row is not None:
            self.row.charge(steps, time.monotonic() - self.started)
        if self.steps > MAX_STEPS:
            raise TemplateTooBig(f"rendering takes more than {MAX_STEPS:,} steps (loops, calls "
                                 "and filters on large values)",
                                 fix="loop over fewer items, or nest fewer loops and macro calls")
        if time.monotonic() > self.deadline:
            raise TemplateTooBig(f"rendering takes more than {MAX_SECONDS:g} seconds",
                                 fix="loop over fewer items, or use fewer filters on long text")

    built: int = 0

    def write(self, chars: int) -> None:
        self.written += chars
        if self.row is not None:
            self.row.write(chars)
        if self.written > MAX_WRITTEN:
            raise TemplateTooBig(f"rendering writes more than {MAX_WRITTEN:,} characters")

    def build(self, size: int, what: str) -> None:
        self.built += size
        if self.built > MAX_BUILT:
            raise TemplateTooBig(f"rendering builds more than {MAX_BUILT:,} characters of text "
                                 f"in all (filters, methods and operators; the last: {what})",
                                 fix="loop over fewer items, or build smaller values in the loop")


class _BoundedText:
    """A stream that keeps what a filter writes and stops it once it passes MAX_CHARS: the real
    output is counted as it is made, so no estimate can let a filter build more."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.parts: list[str] = []
        self.total = 0

    def write(self, piece: str) -> int:
        self.total += len(piece)
        if self.total > MAX_CHARS:
            raise TemplateTooBig(f"{self.what} would make more than {MAX_CHARS:,} characters; a "
                                 f"template may build at most {MAX_CHARS:,}")
        self.parts.append(piece)
        _charge(len(piece) // 1024)
        return len(piece)

    def text(self) -> str:
        return "".join(self.parts)


# jinja2.Undefined, once the environment is built (jinja2 loads lazily).
_UNDEFINED: type | None = None

_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("promptctl_template_budget",
                                                                        default=None)


def _budget() -> _Budget | None:
    """The budget of the render under way (None while compiling: nothing runs then)."""
    return _BUDGET.get()


def _charge(steps: int) -> None:
    budget = _budget()
    if budget is not None:
        budget.charge(steps)


# --- what a value is, in the user's words ----------------------------------------------------


class Opaque:
    """A function, method, class, iterator or other Python object a template reached.

    It can be called and iterated, but not turned into text or compared: its repr
    would put Python internals (type names, memory addresses) into the prompt.
    """

    __slots__ = ("wrapped",)

    def __init__(self, obj: Any) -> None:
        self.wrapped = obj

    def _refuse(self, verb: str = "written into a prompt") -> Any:
        raise TemplateRefused(f"{describe(self.wrapped)} cannot be {verb}", fix=_use_hint(self.wrapped))

    def __str__(self) -> str:
        return str(self._refuse())

    def __repr__(self) -> str:
        return str(self._refuse())

    def __format__(self, spec: str) -> str:
        return str(self._refuse())

    def __iter__(self) -> Iterator[Any]:
        return iter(self.wrapped)

    def __contains__(self, item: Any) -> bool:
        if isinstance(self.wrapped, Iterator):
            return item in self.wrapped
        return bool(self._refuse("searched with `in`"))

    def __lt__(self, other: Any) -> bool:
        return bool(self._refuse("compared"))

    __le__ = __gt__ = __ge__ = __lt__


def unwrap(value: Any) -> Any:
    """The object an Opaque stands for (anything else as it is)."""
    return value.wrapped if isinstance(value, Opaque) else value


def _jinja_kinds() -> dict[type, str]:
    from jinja2.runtime import BlockReference, LoopContext, Macro, TemplateReference
    from jinja2.utils import Cycler, Joiner, Namespace

    return {LoopContext: "the loop variable", Namespace: "a namespace", Cycler: "a cycler",
            Joiner: "a joiner", Macro: "a macro", TemplateReference: "self (the template itself)",
            BlockReference: "a block"}


def describe(obj: Any) -> str:
    """What a template value is, as a template author would call it."""
    import types

    obj = unwrap(obj)
    if isinstance(obj, bool):
        return "a true/false value"
    if obj is None:
        return "null"
    if isinstance(obj, str):
        return "text"
    if isinstance(obj, int | float | complex):
        return "a number"
    if isinstance(obj, list | tuple):
        return "a list"
    if isinstance(obj, dict):
        return "a mapping"
    for kind, words in _jinja_kinds().items():
        if isinstance(obj, kind):
            return words
    if isinstance(obj, type):
        return f"the built-in {_short(obj.__name__)}"
    if isinstance(obj, types.BuiltinMethodType | types.MethodType) and \
            getattr(obj, "__self__", None) is not None or \
            getattr(obj, "__qualname__", "").startswith("str."):
        return f"the method {_short(obj.__name__)}"
    if callable(obj):
        name = getattr(obj, "__name__", None)
        if name and name in _GLOBAL_NAMES:
            name = _GLOBAL_NAMES[name]
        return f"the function {_short(name)}" if name else "a function"
    if isinstance(obj, Iterator):
        return "a lazy sequence (from a filter such as map, select or reverse)"
    return "a Python object"


def _use_hint(obj: Any) -> str:
    from jinja2.runtime import LoopContext
    from jinja2.utils import Namespace

    obj = unwrap(obj)
    if isinstance(obj, LoopContext):
        return "write one of its attributes, such as loop.index"
    if isinstance(obj, Namespace):
        return "write one of its attributes, such as ns.total"
    if isinstance(obj, Iterator):
        return "add |list, or |join(', ') to make text of it"
    if callable(obj):
        return "call it, with brackets: name(...)"
    return "write the data it holds instead"


# The names Jinja2's globals go by in templates (lipsum is generate_lorem_ipsum...).
_GLOBAL_NAMES = {"generate_lorem_ipsum": "lipsum", "safe_range": "range", "_checked_range": "range",
                 "_checked_lipsum": "lipsum"}


def _short(text: Any, limit: int = 40) -> str:
    """A name from a file or template, cut so an error never echoes much of it."""
    s = str(text)
    return s if len(s) <= limit else s[:limit] + "…"


# --- sizes ---------------------------------------------------------------------------------


def _int_digits(n: int) -> int:
    return n.bit_length() * 30103 // 100000 + 2  # log10(2) = 0.30103, plus sign and rounding


def _str_bound(s: str, mode: str) -> int:
    """Upper bound of len(repr(s)) (mode "repr") or len(json.dumps(s)) (mode "json")."""
    n = len(s)
    if mode == "json":
        return 2 * n + 2 if s.isascii() and s.isprintable() else 12 * n + 2
    return 2 * n + 2 if s.isprintable() else 10 * n + 2


@dataclass
class Shape:
    """An upper bound on the text a value becomes, and how many values it holds."""

    chars: int = 0
    nodes: int = 0
    depth: int = 0


def measure(value: Any, mode: str = "str", *, limit: int = MAX_CHARS) -> Shape:
    """Check that `value` is plain data and bound the length of its text.

    `mode` is "str" (str(value)), "repr" (inside a container) or "json". Refuses
    anything that is not text, a number, true/false, null, a list or a mapping,
    and nesting deeper than MAX_NESTING. Counting stops once the bound passes
    `limit`, so a list holding the same long text many times costs little.
    """
    if isinstance(value, str):
        return Shape(len(value) if mode == "str" else _str_bound(value, mode), 1, 0)
    if isinstance(value, int | float | bool) or value is None:
        return Shape(_scalar_chars(value), 1, 0)
    shape = Shape()
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        shape.nodes += 1
        if depth > shape.depth:
            shape.depth = depth
            if depth > MAX_NESTING:
                raise TemplateTooBig(f"a value is nested more than {MAX_NESTING} levels deep",
                                     fix="nest lists and mappings less deeply")
        if isinstance(v, str):
            shape.chars += len(v) if (depth == 0 and mode == "str") else _str_bound(v, mode)
        elif isinstance(v, int | float | complex | bool) or v is None:
            shape.chars += _scalar_chars(v)
        elif isinstance(v, dict):
            shape.chars += 2 + 4 * len(v)
            for pair in v.items():
                for x in pair:
                    kind = type(x)
                    if kind is str:
                        shape.chars += _str_bound(x, mode)
                        shape.nodes += 1
                    elif kind is int:
                        shape.chars += _int_digits(x)
                        shape.nodes += 1
                    else:
                        stack.append((x, depth + 1))
        elif isinstance(v, list | tuple):
            shape.chars += 2 + 2 * len(v)
            for x in v:
                kind = type(x)
                if kind is str:
                    shape.chars += _str_bound(x, mode)
                    shape.nodes += 1
                elif kind is int:
                    shape.chars += _int_digits(x)
                    shape.nodes += 1
                else:
                    stack.append((x, depth + 1))
        elif _UNDEFINED is not None and isinstance(v, _UNDEFINED):
            str(v)  # StrictUndefined raises its "is undefined" error here
        else:
            raise TemplateRefused(f"{describe(v)} cannot be written into a prompt", fix=_use_hint(v))
        if shape.chars > limit:
            break
    return shape


def _scalar_chars(v: Any) -> int:
    if isinstance(v, bool) or v is None:
        return 5
    if isinstance(v, int):
        return _int_digits(v)
    return 64  # float, complex


def _text_len(value: Any) -> int:
    return len(value) if isinstance(value, str) else measure(value).chars


def _units(value: Any) -> int:
    """Work a value stands for, in steps: its items, or its characters / 64."""
    value = unwrap(value)
    if isinstance(value, str):
        return len(value) // 64
    if isinstance(value, list | tuple | dict | range):
        return len(value)
    return 0


def _need(chars: int, what: str) -> None:
    if chars > MAX_CHARS:
        raise TemplateTooBig(f"{what} would make about {chars:,} characters; a template may "
                             f"build at most {MAX_CHARS:,}")


def _need_items(items: int, what: str) -> None:
    if items > MAX_ITEMS:
        raise TemplateTooBig(f"{what} would make {items:,} items; a template may build at most "
                             f"{MAX_ITEMS:,}")


def _as_int(value: Any, what: str) -> int:
    value = unwrap(value)
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 62:
            return int(value)
        raise TemplateRefused(f"{what} must be a whole number, not {describe(value)}",
                              fix="give a whole number")
    return value


def check_result(value: Any, what: str) -> Any:
    """Refuse a value a template computed that is larger than a template may build, and
    charge its real size to the render's budget of text built."""
    if isinstance(value, str | list | tuple | dict):
        budget = _budget()
        if budget is not None:
            budget.build(len(value), what)
    if isinstance(value, str):
        _need(len(value), what)
    elif isinstance(value, list | tuple | dict):
        _need_items(len(value), what)
    elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise TemplateTooBig(f"{what} is a number of {_int_digits(value):,} digits; a template may "
                             f"compute numbers of at most {MAX_INT_BITS} bits")
    return value


# --- sized operations ----------------------------------------------------------------------

_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.S)


def _printf_bound(fmt: str, args: Any) -> int:
    """Upper bound of len(fmt % args)."""
    values = list(args.values()) if isinstance(args, Mapping) else \
        list(args) if isinstance(args, tuple) else [args]
    star = max((abs(v) for v in values if isinstance(v, int) and not isinstance(v, bool)), default=0)
    widest = max((measure(v, "repr").chars for v in values), default=0)
    # %f of a large float writes every digit of it (up to 309) before the precision.
    widest = max(widest, 330) if any(isinstance(v, float) for v in values) else widest
    conversions = {m.group(3) for m in _PRINTF.finditer(fmt)}
    if "a" in conversions:  # ascii(): \U0001f600 is ten characters for one
        widest *= 5
    specs = extra = 0
    for m in _PRINTF.finditer(fmt):
        if m.group(3) == "%":
            continue
        specs += 1
        for group in (m.group(1), m.group(2)):
            if group is None:
                continue
            if group == "*":
                extra += star
            else:
                extra += int(group[:18]) * 10 ** max(len(group) - 18, 0) if len(group) <= 24 \
                    else 10 ** 24
    return len(fmt) + extra + specs * widest


def _check_printf(fmt: str, args: Any, what: str) -> None:
    _need(len(fmt), what)
    _need(_printf_bound(fmt, args), what)


def _binop_check(op: str, left: Any, right: Any) -> None:
    ints = all(isinstance(x, int) and not isinstance(x, bool) for x in (left, right))
    if op == "**" and ints and right > 0 and abs(left) > 1:
        bits = (abs(left).bit_length() - 1) * right
        if bits > MAX_INT_BITS:
            raise TemplateTooBig(f"** here makes a number of about {bits * 30103 // 100000:,} digits; "
                                 f"a template may compute numbers of at most {MAX_INT_BITS} bits")
    elif op == "*":
        if ints:
            if left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
                raise TemplateTooBig(f"* here makes a number of more than {MAX_INT_BITS} bits")
            return
        for seq, n in ((left, right), (right, left)):
            if isinstance(n, int) and isinstance(seq, str | list | tuple):
                if isinstance(seq, str):
                    _need(len(seq) * max(n, 0), f"repeating text {n:,} times")
                else:
                    _need_items(len(seq) * max(n, 0), f"repeating a list {n:,} times")
    elif op == "%" and isinstance(left, str):
        _check_printf(left, right, "% formatting here")
    elif op == "+":
        if isinstance(left, str) and isinstance(right, str):
            _need(len(left) + len(right), "+ here")
        elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
            _need_items(len(left) + len(right), "+ here")


def _checked_range(*args: Any) -> range:
    rng = range(*(unwrap(a) for a in args))
    try:
        n = len(rng)
    except OverflowError:
        n = MAX_RANGE + 1
    if n > MAX_RANGE:
        shown = ", ".join(_short(a, 20) for a in args)
        raise TemplateTooBig(f"range({shown}) has more than {MAX_RANGE:,} items",
                             fix=f"a range in a template may have at most {MAX_RANGE:,} items")
    return rng


def _checked_lipsum(n: Any = 5, html: Any = True, min: Any = 20, max: Any = 100) -> str:  # noqa: A002
    from jinja2.utils import generate_lorem_ipsum

    n, low, high = _as_int(n, "lipsum's n"), _as_int(min, "lipsum's min"), _as_int(max, "lipsum's max")
    words = max_words = n * high if n > 0 and high > 0 else 0
    if words > MAX_LIPSUM_WORDS:
        raise TemplateTooBig(f"lipsum(n={n:,}, max={high:,}) makes up to {max_words:,} words; "
                             f"a template may make at most {MAX_LIPSUM_WORDS:,}",
                             fix="ask for fewer paragraphs or fewer words each")
    _charge(1 + words // 8)
    return generate_lorem_ipsum(n=n, html=bool(html), min=low, max=high)


# What a string method may make, as a bound on its length; methods not listed are not
# available (format and format_map reach Python internals; encode, translate and
# expandtabs are not worth their risks).
def _str_bounds() -> dict[str, Callable[..., int]]:
    def width(s: str, w: Any, *rest: Any) -> int:
        return max(len(s), _as_int(w, "the width"))

    def replace(s: str, old: str, new: str, count: Any = -1) -> int:
        if not isinstance(old, str) or not isinstance(new, str):
            raise TypeError("replace() arguments must be text")
        n = s.count(old)
        count = _as_int(count, "replace's count")
        if count >= 0:
            n = min(n, count)
        return len(s) + n * (len(new) - len(old))

    def same(s: str, *args: Any, **kwargs: Any) -> int:
        return len(s)

    def cased(s: str, *args: Any, **kwargs: Any) -> int:
        return 3 * len(s)  # a few characters case-map to three (ß -> SS, ŉ -> ʼN)

    def nothing(s: str, *args: Any, **kwargs: Any) -> int:
        return 0

    bounds: dict[str, Callable[..., int]] = {
        "center": width, "ljust": width, "rjust": width, "zfill": width, "replace": replace,
        "join": same,  # checked with its items, below
    }
    for name in ("lower", "upper", "title", "capitalize", "casefold", "swapcase"):
        bounds[name] = cased
    for name in ("strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "partition",
                 "rpartition", "removeprefix", "removesuffix"):
        bounds[name] = same
    for name in ("count", "find", "rfind", "index", "rindex", "startswith", "endswith", "isalnum",
                 "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower",
                 "isnumeric", "isprintable", "isspace", "istitle", "isupper"):
        bounds[name] = nothing
    return bounds


_STR_BOUNDS = _str_bounds()


def _joined_size(items: list[Any], sep_len: int) -> int:
    """Upper bound of the length of the items joined; refuses items that are not plain data."""
    total = sep_len * max(len(items) - 1, 0)
    for item in items:
        total += len(item) if isinstance(item, str) else measure(item).chars
        if total > MAX_CHARS:
            break
    return total


def _str_method(s: str, name: str) -> Callable[..., Any]:
    method = getattr(s, name)
    bound = _STR_BOUNDS[name]

    def checked(*args: Any, **kwargs: Any) -> Any:
        args = tuple(unwrap(a) for a in args)
        if name == "join":
            if len(args) != 1 or kwargs:
                raise TypeError("join() takes exactly one argument")
            items = list(args[0])
            _need_items(len(items), "join")
            _need(_joined_size(items, len(s)), "join here")
            _charge(1 + len(items) + len(s) // 64)
            return check_result(method(items), "join here")
        if bound is not _STR_BOUNDS["count"]:
            _need(len(s), f"{name}() of this text")
            _need(bound(s, *args, **kwargs), f"{name}() here")
        _charge(1 + len(s) // 64)
        return check_result(method(*args, **kwargs), f"{name}() here")

    checked.__name__ = name
    checked.__qualname__ = f"str.{name}"  # describe() calls it a method
    return checked


def _allowed_attributes() -> dict[type, frozenset[str]]:
    from jinja2.filters import _GroupTuple
    from jinja2.runtime import LoopContext
    from jinja2.utils import Cycler

    loop = frozenset({"index", "index0", "revindex", "revindex0", "first", "last", "length",
                      "depth", "depth0", "previtem", "nextitem", "cycle", "changed"})
    return {
        str: frozenset(_STR_BOUNDS),
        dict: frozenset({"get", "items", "keys", "values"}),
        list: frozenset({"count", "index"}),
        tuple: frozenset({"count", "index"}),
        _GroupTuple: frozenset({"grouper", "list", "count", "index"}),
        int: frozenset({"real", "imag", "is_integer"}),
        float: frozenset({"real", "imag", "is_integer"}),
        bool: frozenset(),
        type(None): frozenset(),
        LoopContext: loop,
        Cycler: frozenset({"next", "reset", "current"}),
    }


_NEVER = {
    "format": ("text's format method is not available in templates (it can reach Python internals)",
               "use the format filter ('%s items'|format(n)) or ~ to build text"),
    "format_map": ("text's format_map method is not available in templates (it can reach Python "
                   "internals)", "use the format filter ('%(n)s items'|format(n=n)) or ~"),
}


def _refusal(obj: Any, name: str) -> TemplateRefused:
    what = describe(obj)
    if name.startswith("_"):
        return TemplateRefused(f"{_short(name)!r} of {what} is a Python internal: templates cannot "
                               "read names that start with an underscore",
                               fix="use the data's own keys, and filters")
    if isinstance(obj, str) and name in _NEVER:
        return TemplateRefused(*_NEVER[name])
    if isinstance(obj, list | dict) and name in ("append", "extend", "insert", "pop", "remove",
                                                 "clear", "sort", "reverse", "update",
                                                 "setdefault", "popitem", "__setitem__"):
        return TemplateRefused(f"{_short(name)} would change {what}, and templates cannot change "
                               "their data", fix="build a new value instead (a + b, |list, dict(...))")
    if isinstance(obj, str | int | float | list | tuple | dict):
        return TemplateRefused(f"the {_short(name)} method of {what} is not available in templates")
    return TemplateRefused(f"templates cannot use {_short(name)!r} of {what}")


# --- the environment -------------------------------------------------------------------------

_ENV: Any = None

_STEP_FILTER = "_promptctl_step"
_CONCAT_FILTER = "_promptctl_concat"

# Filters that look into or rearrange values without turning them into text: they may
# take lazy sequences, namespaces and loop items. Every other filter makes text (or a
# number) of its value, which must therefore be plain data.
_STRUCTURAL = frozenset({"attr", "map", "select", "reject", "selectattr", "rejectattr", "list",
                         "first", "last", "length", "count", "sum", "min", "max", "unique", "sort",
                         "reverse", "batch", "slice", "groupby", "default", "d", "random",
                         "dictsort", "items",
                         "join"})  # join checks its items itself: they may come from map
# Steps per character of input, for the filters that are slow per character.
_PER_CHAR = {"title": 1.0, "urlize": 2.0, "wordwrap": 1.0, "striptags": 0.25, "urlencode": 0.25,
             "wordcount": 0.25, "indent": 1 / 16, "capitalize": 1 / 16}
# How many times longer than its input a filter's text may be.
_GROWTH = {"e": 6, "escape": 6, "forceescape": 6, "urlencode": 12, "upper": 3, "lower": 3,
           "title": 3, "capitalize": 3, "pprint": 3, "xmlattr": 6, "tojson": 1}


_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def _filter_bound(name: str, value: Any, size: int, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> int:
    """Upper bound of the length of the text filter `name` makes of `value` (whose own text
    is at most `size` characters)."""
    if name == "tojson":
        shape = measure(value, "json")

        def tojson(value: Any, indent: Any = None) -> int:
            if indent is None:
                return shape.chars
            step = len(indent) if isinstance(indent, str) else _as_int(indent, "the indent")
            # Each value starts a line indented once more than the container that holds
            # it: one level deeper than the deepest container.
            return shape.chars + shape.nodes * (1 + (shape.depth + 1) * max(step, 0))

        return tojson(value, *args, **kwargs)
    if name == "pprint":
        shape = measure(value, "repr")
        return 3 * shape.chars + shape.nodes * (2 + shape.depth)
    if name == "center":
        def center(value: Any, width: Any = 80) -> int:
            return max(size, _as_int(width, "the width"))

        return center(value, *args, **kwargs)
    if name == "indent":
        def indent(s: Any, width: Any = 4, first: Any = False, blank: Any = False) -> int:
            w = len(width) if isinstance(width, str) else max(_as_int(width, "the width"), 0)
            # splitlines() breaks at \r, \v, \f, \x1c-\x1e, \x85, \u2028 and \u2029 too.
            lines = 1 + sum(s.count(c) for c in _LINE_BREAKS) if isinstance(s, str) else size
            return size + lines * w

        return indent(value, *args, **kwargs)
    if name == "wordwrap":
        def wordwrap(s: Any, width: Any = 79, break_long_words: Any = True, wrapstring: Any = None,
                     break_on_hyphens: Any = True) -> int:
            if _as_int(width, "the width") < 1:
                raise TemplateRefused("wordwrap's width must be 1 or more", fix="give a width such as 79")
            return size * (1 + (len(wrapstring) if isinstance(wrapstring, str) else 1))

        return wordwrap(value, *args, **kwargs)
    if name == "format":
        if args and kwargs:
            raise TypeError("the format filter takes positional or keyword arguments, not both")
        return _printf_bound(str(value), kwargs or tuple(args))
    if name == "replace":
        def replace(s: Any, old: Any, new: Any, count: Any = None) -> int:
            text, old, new = str(s), str(old), str(new)
            n = text.count(old)
            if count is not None:
                n = min(n, max(_as_int(count, "replace's count"), 0))
            return len(text) + n * (len(new) - len(old))

        return replace(value, *args, **kwargs)
    if name == "truncate":
        def truncate(s: Any, length: Any = 255, killwords: Any = False, end: Any = "...",
                     leeway: Any = None) -> int:
            return size + len(str(end))

        return truncate(value, *args, **kwargs)
    if name == "urlize":
        extra = sum(len(str(unwrap(a))) for a in (*args, *kwargs.values()) if isinstance(unwrap(a), str))
        return 3 * size + (size // 2 + 1) * (64 + extra)
    return size * _GROWTH.get(name, 1) + sum(_text_len(a) for a in (*args, *kwargs.values())
                                             if isinstance(unwrap(a), str))


def _wrap_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that checks its input and output; it takes the render context, so Jinja2
    never runs it while compiling."""
    from jinja2 import pass_context

    kind = getattr(getattr(fn, "jinja_pass_arg", None), "name", None)
    structural = name in _STRUCTURAL
    per_char = _PER_CHAR.get(name, 1 / 64)

    @pass_context
    def checked(context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        if structural:
            value = unwrap(value)
            if name in ("batch", "slice"):
                count = args[0] if args else kwargs.get("linecount", kwargs.get("slices", 1))
                _need_items(_as_int(count, f"{name}'s size"), f"|{name}")
            _charge(1 + _units(value))
        else:
            # tojson and pprint measure the value in their own way in _filter_bound.
            shape = measure(value) if name not in ("tojson", "pprint") else Shape(0, 1, 0)
            for arg in (*args, *kwargs.values()):
                measure(arg)
            if isinstance(value, str):
                _need(len(value), f"|{name} of this text")
            bound = _filter_bound(name, value, shape.chars, args, kwargs)
            _need(bound, f"|{name} here")
            _charge(1 + int(shape.chars * per_char) + shape.nodes + bound // 1024)
        if name == "join":
            value = _prepare_join(value, args, kwargs)
        if kind == "context":
            result = fn(context, value, *args, **kwargs)
        elif kind == "eval_context":
            result = fn(context.eval_ctx, value, *args, **kwargs)
        elif kind == "environment":
            result = fn(context.environment, value, *args, **kwargs)
        else:
            result = fn(value, *args, **kwargs)
        return guard(check_result(result, f"|{name} here"))

    checked.__name__ = f"checked_{name}"
    return checked


def _prepare_join(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    items = list(unwrap(value))
    _need_items(len(items), "|join")
    sep = args[0] if args else kwargs.get("d", "")
    _need(_joined_size(items, len(str(unwrap(sep)))), "|join here")
    _charge(len(items))
    return items


# What guard() lets through as it is (set with the environment: jinja2 loads lazily).
_HELD: tuple[type, ...] = (str, int, float, complex, bool, type(None), list, tuple, dict, Opaque)
_VIEWS = (KeysView, ValuesView, ItemsView, range)


def guard(value: Any) -> Any:
    """What a template may hold as it is; anything else is wrapped in an Opaque."""
    if isinstance(value, _HELD):
        return value
    if isinstance(value, _VIEWS):
        return list(value)
    return Opaque(value)


def environment() -> Any:
    """The shared sandboxed environment (built on first use: jinja2 loads lazily)."""
    global _ENV
    if _ENV is None:
        _ENV = _make_environment()
    return _ENV


def _make_environment() -> Any:
    import jinja2
    from jinja2 import nodes, pass_context, pass_environment, pass_eval_context
    from jinja2.compiler import CodeGenerator
    from jinja2.runtime import BlockReference, LoopContext, Macro
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from jinja2.utils import Namespace, missing
    from jinja2.visitor import NodeTransformer

    global _UNDEFINED, _HELD
    _UNDEFINED = jinja2.Undefined
    _HELD = (*_HELD, Namespace, jinja2.Undefined)
    allowed = _allowed_attributes()
    runs_template_code = (Macro, LoopContext, BlockReference)

    class Undefined(jinja2.StrictUndefined):
        """StrictUndefined whose messages name values as a template author would."""

        __slots__ = ()

        @property
        def _undefined_message(self) -> str:
            if self._undefined_hint:
                return str(self._undefined_hint)
            name = _short(self._undefined_name)
            if self._undefined_obj is missing:
                return f"{name!r} is undefined"
            obj = unwrap(self._undefined_obj)
            if isinstance(obj, dict):
                return f"the mapping has no key or attribute {name!r}"
            if isinstance(obj, list | tuple | str):
                return f"{describe(obj)} has no item or attribute {name!r}"
            return f"{describe(obj)} has no attribute {name!r}"

        def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> Any:
            obj = unwrap(self._undefined_obj)
            if not (obj is missing or isinstance(obj, str | int | float | list | tuple | dict |
                                                  Namespace | type(None))):
                # Not a value the row lacks: the template reached into a function, a macro,
                # `loop`... for something it does not have.
                raise TemplateRefused(f"templates cannot use {_short(self._undefined_name)!r} of "
                                      f"{describe(obj)}")
            return super()._fail_with_undefined_error(*args, **kwargs)

    class Instrument(NodeTransformer):
        """Charges the budget where templates repeat work, and routes ~ through a check."""

        def _step(self, cost: int, lineno: int) -> Any:
            return nodes.Filter(nodes.Const(cost, lineno=lineno), _STEP_FILTER, [], [], None, None,
                                lineno=lineno)

        def _charge_body(self, node: Any) -> None:
            cost = 1 + sum(1 for child in node.body for _ in child.find_all(nodes.Node)) + len(node.body)
            node.body.insert(0, nodes.ExprStmt(self._step(cost, node.lineno), lineno=node.lineno))

        def visit_For(self, node: Any) -> Any:
            node = self.generic_visit(node)
            self._charge_body(node)
            if node.test is not None:  # the filter of `for x in y if test` runs for every item
                node.test = nodes.And(self._step(1, node.lineno), node.test, lineno=node.lineno)
            return node

        def visit_Macro(self, node: Any) -> Any:
            node = self.generic_visit(node)
            self._charge_body(node)
            return node

        visit_CallBlock = visit_Macro

        def visit_Concat(self, node: Any) -> Any:
            node = self.generic_visit(node)
            return nodes.Filter(nodes.List(node.nodes, lineno=node.lineno), _CONCAT_FILTER, [], [],
                                None, None, lineno=node.lineno)

    class Generator(CodeGenerator):
        def visit_Template(self, node: Any, frame: Any = None) -> None:
            node = Instrument().visit(node)
            node.set_environment(self.environment)
            super().visit_Template(node, frame)

    class Template(jinja2.Template):
        def render(self, *args: Any, **kwargs: Any) -> str:
            budget = _Budget(started=time.monotonic(), row=_ROW.get())
            token = _BUDGET.set(budget)
            try:
                return str(super().render(*args, **kwargs))
            finally:
                _BUDGET.reset(token)
                if budget.row is not None:
                    budget.row.seconds += time.monotonic() - budget.started

    def checked_concat(pieces: Iterable[str]) -> str:
        out: list[str] = []
        total = 0
        for piece in pieces:
            total += len(piece)
            if total > MAX_CHARS:
                raise TemplateTooBig(f"the text would be longer than {MAX_CHARS:,} characters")
            out.append(piece)
        return "".join(out)

    class PromptSandbox(ImmutableSandboxedEnvironment):
        """Jinja2's immutable sandbox with an attribute allowlist, sized operations and a budget."""

        code_generator_class = Generator
        template_class = Template
        concat = staticmethod(checked_concat)
        intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
        intercepted_unops = frozenset({"+", "-"})

        def _attribute(self, obj: Any, name: str, *, keys: bool = True) -> Any:
            obj = unwrap(obj)
            if isinstance(obj, jinja2.Undefined):
                return super().getattr(obj, name)  # raises the undefined error
            if name.startswith("_"):
                raise _refusal(obj, name)
            if isinstance(obj, Namespace):
                try:
                    return guard(getattr(obj, name))
                except AttributeError:
                    return self.undefined(obj=obj, name=name)
            names = allowed.get(type(obj))
            if names is None:
                names = next((v for k, v in allowed.items() if isinstance(obj, k)), None)
            if names is None:
                raise _refusal(obj, name)
            if name in names:
                if isinstance(obj, str):
                    return Opaque(_str_method(obj, name))
                try:
                    return guard(getattr(obj, name))
                except AttributeError:
                    return self.undefined(obj=obj, name=name)
            if isinstance(obj, dict) and keys:
                # Attributes come first in Jinja2 (row.items is the method), but one a
                # template may not use does not hide a key of the same name.
                try:
                    return guard(obj[name])
                except (KeyError, TypeError):
                    pass
            if hasattr(obj, name):
                raise _refusal(obj, name)
            return self.undefined(obj=obj, name=name)

        def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
            # Older Jinja2 versions' |attr look attributes up themselves and ask only this.
            obj = unwrap(obj)
            if isinstance(obj, Namespace):
                return not attr.startswith("_")
            names = next((v for k, v in allowed.items() if isinstance(obj, k)), frozenset())
            return attr in names and attr not in _NEVER and \
                bool(super().is_safe_attribute(obj, attr, value))

        def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
            raise _refusal(unwrap(obj), attribute)

        def getattr(self, obj: Any, attribute: str) -> Any:
            return self._attribute(obj, attribute)

        def getitem(self, obj: Any, argument: Any) -> Any:
            obj = unwrap(obj)
            if isinstance(obj, jinja2.Undefined):
                return super().getitem(obj, argument)
            if isinstance(obj, str | list | tuple | dict):
                try:
                    return guard(obj[argument])
                except (TypeError, LookupError):
                    pass
            if isinstance(argument, str):
                return self._attribute(obj, argument)
            if not isinstance(obj, str | list | tuple | dict):
                raise TemplateRefused(f"templates cannot index {describe(obj)}")
            return self.undefined(obj=obj, name=argument)

        def call(__self, __context: Any, __obj: Any, /, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
            obj = unwrap(__obj)
            budget = _budget()
            owner = getattr(obj, "__self__", None)
            if budget is not None:
                budget.charge(1 + sum(_units(a) for a in (*args, *kwargs.values())) +
                              (_units(owner) if isinstance(owner, list | tuple | dict) else 0) +
                              (_CALL_COST if isinstance(obj, runs_template_code) else 0))
            if isinstance(obj, runs_template_code) and budget is not None:
                budget.depth += 1
                try:
                    if budget.depth > MAX_CALL_DEPTH:
                        raise TemplateTooBig(f"macro calls nest more than {MAX_CALL_DEPTH} deep",
                                             fix="end the recursion sooner (check its condition)")
                    result = super().call(__context, obj, *args, **kwargs)
                finally:
                    budget.depth -= 1
            else:
                result = super().call(__context, obj, *args, **kwargs)
            return guard(check_result(result, f"calling {describe(obj)}"))

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            for operand in (left, right):
                if isinstance(operand, Opaque):
                    operand._refuse(f"used with {operator}")
            _binop_check(operator, left, right)
            _charge(1 + (len(left) // 64 if isinstance(left, str) else 0))
            try:
                result = self.binop_table[operator](left, right)
            except OverflowError:
                raise TemplateTooBig(f"{operator} here makes a number too large to hold") from None
            return check_result(result, f"{operator} here")

        def call_unop(self, context: Any, operator: str, arg: Any) -> Any:
            if isinstance(arg, Opaque):
                arg._refuse(f"used with {operator}")
            return self.unop_table[operator](arg)

    @pass_context
    def finalize(context: Any, value: Any) -> Any:
        if type(value) is str:  # most of what is written: no walk needed
            chars, nodes = len(value), 1
        else:
            shape = measure(value)
            chars, nodes = shape.chars, shape.nodes
        if chars > MAX_CHARS:
            raise TemplateTooBig(f"a value written into the prompt would be about {chars:,} "
                                 f"characters; a prompt may hold at most {MAX_CHARS:,}")
        budget = _BUDGET.get()
        if budget is not None:
            budget.write(chars)
            budget.charge(1 + chars // 1024 + nodes // 8)
        return value

    def no_files(name: str) -> Any:
        # A template is one message of one file: reading others would reach past the
        # project's checks on what files it names.
        raise TemplateRefused(f"templates cannot include, import or extend other templates "
                              f"({_short(name)!r})", fix="write the text into this template, or "
                              "use a macro defined in it")

    env = PromptSandbox(undefined=Undefined, keep_trailing_newline=True, autoescape=False,
                        finalize=finalize, optimized=False, cache_size=0,
                        loader=jinja2.FunctionLoader(no_files))

    @pass_context
    def step(context: Any, cost: int) -> bool:
        _charge(cost)
        return True

    @pass_context
    def concat(context: Any, items: list[Any]) -> str:
        total = 0
        out: list[str] = []
        for item in items:
            if not isinstance(item, str):
                _need(total + measure(item).chars, "~ here")  # refuses what is not plain data
                item = str(item)
            total += len(item)
            _need(total, "~ here")
            out.append(item)
        _charge(1 + total // 1024)
        joined = "".join(out)
        check_result(joined, "~ here")
        return joined

    @pass_environment
    def attr(environment: Any, obj: Any, name: Any) -> Any:
        # Jinja2 before 3.1.6 looked the attribute up itself, around the sandbox's getattr.
        return environment._attribute(obj, str(name), keys=False)

    @pass_eval_context
    def tojson(eval_ctx: Any, value: Any, indent: Any = None) -> Any:
        # Jinja2's tojson (json.dumps with the environment's policies, then <, >, & and '
        # escaped), written through a bounded stream.
        import json

        import markupsafe

        kwargs = dict(eval_ctx.environment.policies["json.dumps_kwargs"])
        if indent is not None:
            kwargs["indent"] = indent
        out = _BoundedText("|tojson here")
        for chunk in json.JSONEncoder(**kwargs).iterencode(value):
            out.write(chunk.replace("<", "\\u003c").replace(">", "\\u003e")
                      .replace("&", "\\u0026").replace("'", "\\u0027"))
        return markupsafe.Markup(out.text())

    def pprint(value: Any) -> str:
        # pprint.pformat, written through a bounded stream: a value under a long key is
        # indented by the key's width on every line.
        import pprint as pretty

        out = _BoundedText("|pprint here")
        pretty.PrettyPrinter(stream=out).pprint(value)  # type: ignore[arg-type]
        return out.text()[:-1]  # pprint ends with a newline pformat does not write

    env.filters["attr"] = attr
    env.filters["tojson"] = tojson
    env.filters["pprint"] = pprint
    for name, fn in list(env.filters.items()):
        env.filters[name] = _wrap_filter(name, fn)
    env.filters[_STEP_FILTER] = step
    env.filters[_CONCAT_FILTER] = concat

    env.globals["range"] = _checked_range
    env.globals["lipsum"] = _checked_lipsum
    for name, value in list(env.globals.items()):
        if callable(value):
            env.globals[name] = Opaque(value)
    return env


# --- compiling and rendering, with errors that name the file and line ------------------------


def template_line(exc: BaseException) -> int | None:
    """Line of the template being rendered when `exc` was raised (Jinja2 keeps it in the traceback)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


LineOf = Callable[[int | None], int | None]


@dataclass(frozen=True)
class Site:
    """Where a template stands: its file, how it is named in messages, and how a line
    of the template maps to a line of the file."""

    file: Path | str
    where: str
    line_of: LineOf = field(default=lambda line: line)


def _cut(text: Any, limit: int = 160) -> str:
    s = str(text)
    return s if len(s) <= limit else s[:limit] + "…"


def compile_template(source: str, site: Site) -> jinja2.Template:
    """Compile a template in the sandbox; a syntax error names the file and line."""
    import jinja2

    try:
        template: jinja2.Template = environment().from_string(source)
        return template
    except jinja2.TemplateSyntaxError as exc:
        raise InputError(f"{site.where} has a syntax error: {_cut(exc.message)}", file=site.file,
                         line=site.line_of(exc.lineno),
                         fix="fix the Jinja2 syntax ({{ var }}, {% for %}...{% endfor %})") from None
    except RecursionError:
        raise InputError(f"{site.where} nests too deeply to compile", file=site.file,
                         line=site.line_of(None),
                         fix="use fewer nested brackets, blocks and expressions") from None
    except (ValueError, OverflowError, SyntaxError) as exc:
        # int() of a number literal over Python's digit limit, and the like
        raise InputError(f"{site.where} cannot be compiled: {_cut(exc, 100)}", file=site.file,
                         line=site.line_of(getattr(exc, "lineno", None)),
                         fix="shorten the number literals and expressions") from None


def render_template(template: jinja2.Template, variables: Mapping[str, Any], site: Site,
                    who: str) -> str:
    """Render within the sandbox's budget; any failure is an InputError naming the file,
    the template line, what went wrong for `who` (a row, an example) and the fix."""
    import jinja2
    from jinja2.exceptions import SecurityError

    where = site.where
    try:
        return str(template.render(variables))
    except TemplateRefused as exc:
        raise InputError(f"{where} tried something the sandbox forbids, for {who}: {exc.what}",
                         file=site.file, line=site.line_of(template_line(exc)), fix=exc.fix) from None
    except TemplateTooBig as exc:
        raise InputError(f"{where} goes over a template limit, for {who}: {exc.what}",
                         file=site.file, line=site.line_of(template_line(exc)), fix=exc.fix) from None
    except SecurityError as exc:
        raise InputError(f"{where} tried something the sandbox forbids, for {who}: {_cut(exc)}",
                         file=site.file, line=site.line_of(template_line(exc)),
                         fix="templates may use their variables, loops, filters and the read-only "
                         "methods of text, lists and mappings") from None
    except jinja2.UndefinedError as exc:
        raise InputError(f"{where} uses a variable that {who} lacks: {_cut(exc.message)}",
                         file=site.file, line=site.line_of(template_line(exc)),
                         fix=f"add it to the input of {who}, or fix the template") from None
    except jinja2.TemplateError as exc:
        raise InputError(f"{where} failed to render for {who}: {_cut(exc)}", file=site.file,
                         line=site.line_of(template_line(exc)), fix="fix the template") from None
    except RecursionError as exc:
        raise InputError(f"{where} nests too deeply to render for {who}", file=site.file,
                         line=site.line_of(template_line(exc)),
                         fix="nest fewer macro calls, loops and values") from None
    except (TypeError, ValueError, ArithmeticError, AttributeError, LookupError) as exc:
        raise InputError(f"{where} failed to render for {who}: {_cut(exc)}", file=site.file,
                         line=site.line_of(template_line(exc)),
                         fix="fix the template or the row's values") from None
