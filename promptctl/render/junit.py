"""`promptctl check` (and `compat`) as JUnit XML: one test suite per prompt, one test case per
prompt and gate.

Each prompt has an `evaluate` case (an error when it could not be evaluated)
and one case per gate: a failed gate is a <failure>, a warning passes with the
warning in <system-out>, a gate that could not be applied is <skipped>.
Deleted prompts appear as skipped cases.

The document validates against the JUnit schema CI servers check reports with
(Jenkins' junit-4 XSD): counts of skipped cases only on <testsuite>, never on
<testsuites>; <skipped> carries its reason as text, not as an attribute; a
test case's children come in the order skipped, error, failure, system-out.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any

from promptctl.render import fmt, inert
from promptctl.render.markdown import gate_label
from promptctl.results import CheckResult, CompatResult, Gate, PromptCheck


def _clean(value: Any) -> str:
    """Untrusted text for an XML attribute or text node: secrets masked, control characters
    (which XML 1.0 cannot carry, or a CI log would act on) shown as escapes."""
    return inert.text(value)


def _case(suite: ET.Element, classname: str, name: str) -> ET.Element:
    return ET.SubElement(suite, "testcase", name=_clean(name), classname=_clean(classname),
                         time="0")


def _detail_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_detail_value(v) for v in value) + "]"
    if isinstance(value, float):
        return fmt.short(value)
    return inert.as_text(value)


def _gate_detail(gate: Gate) -> str:
    values = (("value", gate.value), ("baseline", gate.baseline), ("delta", gate.delta),
              ("drop", gate.drop), ("ci95", gate.ci95), ("p_value", gate.p_value),
              ("test", gate.test), ("n", gate.n))
    return "\n".join(f"{k}: {_detail_value(v)}" for k, v in values if v is not None)


def _counts(suite: ET.Element, counts: dict[str, int]) -> None:
    for k in ("tests", "failures", "errors", "skipped"):
        suite.set(k, str(counts[k]))


def _suites(root: ET.Element, prompts: Sequence[PromptCheck], command: str) -> dict[str, int]:
    """A suite per prompt (or file) under `root`; the totals. The `evaluate` case names the
    two runs: `check`'s current and baseline, `compat`'s A and B."""
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for entry in prompts:
        classname = f"promptctl.{entry.prompt}"
        suite = ET.SubElement(root, "testsuite", name=_clean(f"promptctl {command} {entry.prompt}"))
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        ET.SubElement(ET.SubElement(suite, "properties"), "property", name="path",
                      value=_clean(entry.path))
        case = _case(suite, classname, "evaluate")
        counts["tests"] += 1
        if entry.error:
            message = inert.as_text(entry.error.message)
            err = ET.SubElement(case, "error", type=_clean(entry.error.kind),
                                message=_clean(message.split("\n")[0]))
            err.text = _clean(entry.error.message)
            counts["errors"] += 1
        elif entry.status == "skip":
            ET.SubElement(case, "skipped").text = _clean("; ".join(entry.reasons))
            counts["skipped"] += 1
        else:
            out = ET.SubElement(case, "system-out")
            baseline = (f"{entry.baseline_run} ({entry.baseline_source})"
                        if entry.baseline_run else "none")
            if command == "compat":
                out.text = _clean(f"A: {entry.baseline_model} run {entry.baseline_run}\n"
                                  f"B: {entry.model} run {entry.current_run}")
            else:
                out.text = _clean(f"{'; '.join(entry.reasons)}\nmodel: {entry.model}\n"
                                  f"current run: {entry.current_run}\nbaseline run: {baseline}")
        for gate in entry.gates:
            case = _case(suite, classname, f"{gate.id} ({gate_label(gate)})")
            counts["tests"] += 1
            if gate.status == "fail":
                failure = ET.SubElement(case, "failure", type="gate", message=_clean(gate.message))
                failure.text = _clean(_gate_detail(gate))
                counts["failures"] += 1
            elif gate.status == "skip":
                ET.SubElement(case, "skipped").text = _clean(gate.message)
                counts["skipped"] += 1
            elif gate.status == "warn":
                out = ET.SubElement(case, "system-out")
                out.text = _clean(f"warning: {gate.message}\n{_gate_detail(gate)}")
        _counts(suite, counts)
        for k, v in counts.items():
            totals[k] += v
    return totals


def _document(root: ET.Element, totals: dict[str, int]) -> str:
    # <testsuites> has no `skipped` in the schema: the suites carry it.
    for k in ("tests", "failures", "errors"):
        root.set(k, str(totals[k]))
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


def compat_junit(result: CompatResult) -> str:
    """`promptctl compat` as a JUnit XML document: a suite per file, an `evaluate` case (an
    error when it could not be compared, skipped when it has no eval set) and a case per
    `max_regression` gate."""
    root = ET.Element("testsuites", name=_clean(
        f"promptctl compat {result.from_model} -> {result.to_model}"))
    return _document(root, _suites(root, result.files, "compat"))


def check_junit(result: CheckResult) -> str:
    """The report as a JUnit XML document (UTF-8, with an XML declaration)."""
    root = ET.Element("testsuites", name="promptctl check")
    totals = _suites(root, result.prompts, "check")
    if result.deleted:
        suite = ET.SubElement(root, "testsuite", name="promptctl check deleted prompts")
        for d in result.deleted:
            case = _case(suite, f"promptctl.{d.prompt}", "deleted")
            ET.SubElement(case, "skipped").text = _clean(f"{d.path} was deleted")
        n = len(result.deleted)
        _counts(suite, {"tests": n, "failures": 0, "errors": 0, "skipped": n})
        totals["tests"] += n
        totals["skipped"] += n
    return _document(root, totals)
