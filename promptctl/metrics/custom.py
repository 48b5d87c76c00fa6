"""The `custom` metric kind: the user's own scorer, `FILE.py:FUNCTION` or an installed one.

```yaml
metrics:
  - name: short_enough
    custom: ../scorers/length.py:score   # relative to the prompt file, inside the project
  - name: toxicity
    custom: toxicity                     # entry point `toxicity` of group promptctl.scorers
```
The function is called as `FUNCTION(answer, expected, row)` and returns a number, a bool
(1/0) or None (no score for that row). An exception is that row's scoring error: kept with
the row under the metric's name and counted in the run's summary, never a zero; so is a
`SystemExit` (`sys.exit()` in a scorer) or any other BaseException the code raises, on import
or on call, save a genuine interrupt (see `user_fault`): user code cannot end the run. The scorer
is the user's code, like a pytest conftest: it is loaded (run) only when it is needed (by
`validate`, `--dry-run` or a run), never when a prompt is merely read (by `history` or `diff`).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import inspect
import math
import re
import sys
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from promptctl.errors import InputError, display_path
from promptctl.files import MiB, Reference, project_path, project_root, quote, read_file
from promptctl.metrics.aggregates import rows_of, share
from promptctl.metrics.registry import (
    PAIRED_MEAN,
    Columns,
    Kind,
    Metric,
    Result,
    ScoreContext,
    Scores,
    register_kind,
)

ENTRY_POINT_GROUP = "promptctl.scorers"
MAX_SCORER_BYTES = 1 * MiB
# A scorer's message is shown with its row; a longer one is cut (it may quote a whole answer).
MAX_ERROR_CHARS = 500
# Keys the built-in metrics keep in a row's scores: a configured metric may not shadow them.
RESERVED_KEYS = frozenset({"answer_num", "expected_num", "squared_error", "label_answer",
                           "label_expected"})
_FILE_FUNCTION = re.compile(r"(?P<file>.+\.py):(?P<function>[A-Za-z_][A-Za-z0-9_]*)")
_ENTRY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")

ScorerFn = Callable[[Any, Any, dict[str, Any]], Any]


def mean_of(key: str) -> Callable[[Columns], Result]:
    """The aggregate of a configured metric: the mean over scored rows, with n and a 95%
    bootstrap interval."""
    def aggregate(columns: Columns) -> Result:
        return share(columns.get(key, []), rows_of(columns, key))

    return aggregate


def score_value(value: Any) -> float:
    """A scorer's return value as a score; ValueError says why it is none."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"returned {value!r}, not a finite number")
        return number
    raise ValueError(f"returned a {type(value).__name__}, not a number, a bool or None")


def user_fault(exc: BaseException) -> bool:
    """Whether `exc`, raised while user code ran, is that code's error (True) or an interrupt
    to pass on (False).

    Any Exception, `SystemExit` (`sys.exit()` in a scorer), `GeneratorExit` and any other
    BaseException subclass is the code's error: it must not end the run, silently or with a
    traceback. Passed on: `KeyboardInterrupt` (Ctrl-C, which must still stop the run) and the
    `asyncio.CancelledError` of a task that is being cancelled; a CancelledError the code
    raises itself while nothing cancels its task is its error."""
    if isinstance(exc, KeyboardInterrupt):
        return False
    if isinstance(exc, asyncio.CancelledError):
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no event loop: nothing can be cancelling us
            return True
        return task is None or task.cancelling() == 0
    return True


def error_text(exc: BaseException, who: str = "the scorer") -> str:
    """`Type: message`, cut; the message of an exception whose __str__ fails is left out.
    `who` names the code that raised it in the note on `sys.exit()`."""
    name = type(exc).__name__
    try:
        message = str(exc)
    except BaseException as failed:  # noqa: BLE001 - the user's __str__
        if not user_fault(failed):
            raise
        message = ""
    if isinstance(exc, SystemExit):  # sys.exit(0) has the message "0"
        name = f"SystemExit (sys.exit({message}) in {who})" if message else \
            f"SystemExit (sys.exit() in {who})"
        message = ""
    text = f"{name}: {message}" if message else name
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "…"


def load_function(source: bytes, file: Path, function: str, *, what: str, module_prefix: str,
                  naming_file: Path | str, line: int | None, missing: str, signature: str,
                  load_fix: str, who: str = "the scorer") -> Any:
    """`function` of the project's Python file `file` (its bytes `source`), run as a module of
    its own: a scorer, a pipeline's tool step, an agent's tool. Whatever the module does on
    import, `sys.exit()` included, is an InputError naming the file and line (the missing
    function's error names `naming_file` and `line`, where it was named)."""
    digest = hashlib.sha256(source).hexdigest()
    try:
        code = compile(source, str(file), "exec")
    except SyntaxError as exc:
        raise InputError(f"the {what} does not compile: {exc.msg}", file=file,
                         line=exc.lineno, fix="fix the Python syntax") from None
    except ValueError as exc:  # null bytes
        raise InputError(f"the {what} cannot be read as Python: {exc}", file=file,
                         fix="save it as UTF-8 Python source") from None
    # A module of its own per version, so that two files naming the same one share it and a
    # changed file is not confused with the old one.
    module = types.ModuleType(f"{module_prefix}_{digest[:16]}")
    module.__file__ = str(file)
    sys.modules[module.__name__] = module  # dataclasses and pickling look modules up
    try:
        exec(code, module.__dict__)  # noqa: S102 - the project's own code, like a conftest
        fn = getattr(module, function, None)  # a module __getattr__ is user code too
        is_function = callable(fn)
    except BaseException as exc:
        sys.modules.pop(module.__name__, None)
        if not user_fault(exc):
            raise
        raise InputError(f"the {what} failed while loading: {error_text(exc, who)}",
                         file=file, line=_line_in(exc, str(file)), fix=load_fix) from None
    if not is_function:
        names = sorted(n for n, v in vars(module).items()
                       if inspect.isfunction(v) and not n.startswith("_"))
        raise InputError(f"{missing} {function!r}", file=naming_file, line=line,
                         fix=f"define def {function}({signature}) in {file.name}"
                         + (f", or name one of: {', '.join(names)}" if names else ""))
    return fn


class Scorer:
    """One configured scorer: where it comes from, and the function once it is loaded."""

    def __init__(self, spec: str, prompt_path: Path, line: int | None) -> None:
        self.spec = spec
        self.prompt_path = prompt_path
        self.line = line
        self.identity: dict[str, Any] = {"custom": spec}
        self._fn: ScorerFn | None = None
        found = _FILE_FUNCTION.fullmatch(spec)
        if found is not None:
            self.file: Path | None = project_path(found["file"], prompt_path.parent)
            self.function = found["function"]
        elif _ENTRY_NAME.fullmatch(spec) and not spec.endswith(".py"):
            self.file, self.function = None, spec
        else:
            raise InputError(f"custom scorer {quote(spec, 80)} is neither FILE.py:FUNCTION nor the "
                             "name of an installed scorer", file=prompt_path, line=line,
                             fix="e.g. custom: ../scorers/length.py:score (relative to this file), "
                             f"or the name of an entry point of group {ENTRY_POINT_GROUP}")

    def load(self) -> ScorerFn:
        """The scorer function, loaded once; InputError names the file and line at fault."""
        if self._fn is None:
            fn = self._from_file() if self.file is not None else self._from_entry_point()
            self._check_signature(fn)
            self._fn = fn
        return self._fn

    def _from_file(self) -> ScorerFn:
        assert self.file is not None
        ref = Reference(self.prompt_path, self.line, "custom")
        source = read_file(self.file, what="scorer", max_bytes=MAX_SCORER_BYTES,
                           root=project_root(self.prompt_path), ref=ref)
        digest = hashlib.sha256(source).hexdigest()
        # Recorded with the run: which version of the scorer gave its scores.
        self.identity["sha256"] = digest
        fn: ScorerFn = load_function(
            source, self.file, self.function, what="scorer", module_prefix="promptctl_scorer",
            naming_file=self.prompt_path, line=self.line,
            missing="the scorer file has no function", signature="answer, expected, row",
            load_fix="fix the module so that importing it runs cleanly (a scorer module must "
            "not call sys.exit or raise)")
        return fn

    def _from_entry_point(self) -> ScorerFn:
        from importlib.metadata import entry_points

        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == self.function]
        if not found:
            known = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
            raise InputError(f"no installed scorer named {quote(self.function, 80)} (entry-point "
                             f"group {ENTRY_POINT_GROUP})", file=self.prompt_path, line=self.line,
                             fix=("installed scorers: " + ", ".join(known)) if known else
                             "install the package that offers it, or name a file: "
                             "custom: ../scorers/FILE.py:FUNCTION")
        ep = found[0]
        self.identity["entry_point"] = ep.value
        if ep.dist is not None:
            self.identity["package"] = f"{ep.dist.name} {ep.dist.version}"
        try:
            fn = ep.load()
            is_function = callable(fn)
        except BaseException as exc:
            if not user_fault(exc):
                raise
            where = _where(exc, None)
            raise InputError(f"the installed scorer {ep.name!r} ({ep.value}) failed to load"
                             f"{f' at {where}' if where else ''}: {error_text(exc)}",
                             file=self.prompt_path, line=self.line,
                             fix="reinstall or fix the package that offers it") from None
        if not is_function:
            raise InputError(f"the installed scorer {ep.name!r} ({ep.value}) is not a function",
                             file=self.prompt_path, line=self.line,
                             fix="the entry point must name a function (answer, expected, row)")
        return fn  # type: ignore[no-any-return]

    def _check_signature(self, fn: ScorerFn) -> None:
        try:
            signature = inspect.signature(fn)
        except BaseException as exc:  # noqa: BLE001 - a builtin, or a __signature__ that fails
            if not user_fault(exc):
                raise
            return  # it tells at its first call
        try:
            signature.bind(None, None, {})
        except TypeError:
            code = getattr(fn, "__code__", None)
            file = self.file if self.file is not None else getattr(code, "co_filename", None)
            line = getattr(code, "co_firstlineno", None) if file is not None else self.line
            raise InputError(f"the scorer {self.function}{signature} cannot be called with three "
                             "arguments (answer, expected, row)", file=file or self.prompt_path,
                             line=line, fix=f"def {self.function}(answer, expected, row): ...") \
                from None

    async def row(self, name: str, ctx: ScoreContext) -> Scores:
        fn = self.load()
        row = ctx.row
        expected = row.expected if row.has_expected else None
        answer = ctx.extraction.answer if ctx.extraction.valid else None
        # Copies: a scorer that changes what it is given must not change the stored row.
        data = copy.deepcopy({"id": row.id, "input": row.input, "expected": expected,
                              "completion": ctx.completion})
        try:
            value = fn(copy.deepcopy(answer), copy.deepcopy(expected), data)
            if inspect.isawaitable(value):  # an async scorer (it may call a service)
                value = await value
        except BaseException as exc:  # noqa: BLE001 - see user_fault
            if not user_fault(exc):
                raise
            return _failed(ctx, name, self._message(exc, fn))
        if value is None:
            return {}
        try:
            return {name: score_value(value)}
        except ValueError as exc:
            return _failed(ctx, name, f"the scorer {exc}")
        except BaseException as exc:  # noqa: BLE001 - the value's own __float__ or __repr__
            if not user_fault(exc):
                raise
            return _failed(ctx, name, self._message(exc, fn))

    def _message(self, exc: BaseException, fn: Any) -> str:
        """The row's error: what was raised, and where (file:line) in the scorer."""
        code = getattr(fn, "__code__", None)
        filename = str(self.file) if self.file is not None else getattr(code, "co_filename", None)
        where = _where(exc, filename)
        text = error_text(exc)
        return f"{text} (at {where})" if where else text


def _failed(ctx: ScoreContext, name: str, message: str) -> Scores:
    """No score for the row: the message is kept with it (stored, shown and counted)."""
    ctx.details[name] = {"score": None, "error": message}
    return {}

def where_raised(exc: BaseException, filename: str | None) -> str | None:
    """`FILE:LINE` of the user code in `filename` (else the last frame outside promptctl's
    scorer module) that raised `exc`: for a pipeline's tool steps too."""
    return _where(exc, filename)


def line_raised(exc: BaseException, filename: str) -> int | None:
    """The last line of `filename` in the traceback of `exc`."""
    return _line_in(exc, filename)


def _where(exc: BaseException, filename: str | None) -> str | None:
    """`FILE:LINE` of the user code that raised `exc`: the last frame of `filename` in its
    traceback, else the last frame outside this module."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    chosen = [f for f in frames if filename is not None and f.filename == filename] or frames
    if not chosen:
        return None
    return f"{display_path(chosen[-1].filename)}:{chosen[-1].lineno}"


def _line_in(exc: BaseException, filename: str) -> int | None:
    """The last line of `filename` in the traceback of `exc`."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == filename:
            line = frame.lineno
    return line


def build(name: str, raw: Any, path: Path, line_of: Callable[..., int | None]) -> Metric:
    if not isinstance(raw, str) or not raw.strip():
        raise InputError(f"metric {name}: custom must be FILE.py:FUNCTION or an installed "
                         "scorer's name", file=path, line=line_of(),
                         fix="e.g. custom: ../scorers/length.py:score")
    if name in RESERVED_KEYS:
        raise InputError(f"metric name {name!r} is a key the built-in metrics keep", file=path,
                         line=line_of(), fix="choose another name")
    scorer = Scorer(raw.strip(), path, line_of())

    async def row(ctx: ScoreContext) -> Scores:
        return await scorer.row(name, ctx)

    def check() -> None:
        scorer.load()

    return Metric(name, row, mean_of(name), PAIRED_MEAN, name, kind="custom",
                  identity=scorer.identity, check=check,
                  files=(scorer.file,) if scorer.file is not None else ())


register_kind(Kind("custom", build, "the user's own scorer: FILE.py:FUNCTION or an installed one"))
