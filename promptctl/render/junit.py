"""`promptctl check` as JUnit XML: one test suite per prompt, one test case per prompt and gate.

Each prompt has an `evaluate` case (an error when it could not be evaluated)
and one case per gate: a failed gate is a <failure>, a warning passes with the
warning in <system-out>, a gate that could not be applied is <skipped>.
Deleted prompts appear as skipped cases.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from promptctl.render.markdown import gate_label

# Characters XML 1.0 cannot carry at all, even escaped.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text: Any) -> str:
    return _INVALID_XML.sub("\ufffd", str(text))


def _case(suite: ET.Element, classname: str, name: str) -> ET.Element:
    return ET.SubElement(suite, "testcase", classname=_clean(classname), name=_clean(name),
                         time="0")


def _gate_detail(gate: dict[str, Any]) -> str:
    keys = ("value", "baseline", "delta", "drop", "ci95", "p_value", "test", "n")
    return "\n".join(f"{k}: {gate[k]}" for k in keys if gate.get(k) is not None)


def check_junit(result: dict[str, Any]) -> str:
    """The report as a JUnit XML document (UTF-8, with an XML declaration)."""
    root = ET.Element("testsuites", name="promptctl check")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for entry in result["prompts"]:
        classname = f"promptctl.{entry['prompt']}"
        suite = ET.SubElement(root, "testsuite", name=_clean(f"promptctl check {entry['prompt']}"))
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        ET.SubElement(ET.SubElement(suite, "properties"), "property", name="path",
                      value=_clean(entry["path"]))
        case = _case(suite, classname, "evaluate")
        counts["tests"] += 1
        if entry.get("error"):
            err = ET.SubElement(case, "error", type=entry["error"]["kind"],
                                message=_clean(entry["error"]["message"].splitlines()[0]))
            err.text = _clean(entry["error"]["message"])
            counts["errors"] += 1
        else:
            out = ET.SubElement(case, "system-out")
            baseline = (f"{entry['baseline_run']} ({entry['baseline_source']})"
                        if entry.get("baseline_run") else "none")
            out.text = _clean(f"{'; '.join(entry['reasons'])}\nmodel: {entry['model']}\n"
                              f"current run: {entry['current_run']}\nbaseline run: {baseline}")
        for gate in entry["gates"]:
            case = _case(suite, classname, f"{gate['id']} ({gate_label(gate)})")
            counts["tests"] += 1
            if gate["status"] == "fail":
                failure = ET.SubElement(case, "failure", type="gate", message=_clean(gate["message"]))
                failure.text = _clean(_gate_detail(gate))
                counts["failures"] += 1
            elif gate["status"] == "skip":
                ET.SubElement(case, "skipped", message=_clean(gate["message"]))
                counts["skipped"] += 1
            elif gate["status"] == "warn":
                out = ET.SubElement(case, "system-out")
                out.text = _clean(f"warning: {gate['message']}\n{_gate_detail(gate)}")
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
    if result["deleted"]:
        suite = ET.SubElement(root, "testsuite", name="promptctl check deleted prompts")
        for d in result["deleted"]:
            case = _case(suite, f"promptctl.{d['prompt']}", "deleted")
            ET.SubElement(case, "skipped", message=_clean(f"{d['path']} was deleted"))
        n = len(result["deleted"])
        for k, v in (("tests", n), ("failures", 0), ("errors", 0), ("skipped", n)):
            suite.set(k, str(v))
            totals[k] += v
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"
