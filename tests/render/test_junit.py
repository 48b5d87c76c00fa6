"""`check --junit` validates against the JUnit schema CI servers use (tests/data/jenkins-junit.xsd),
whatever the data, and carries it as inert text."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema

from promptctl.render.junit import check_junit
from tests.render import hostile
from tests.render.hostile import ACTS_ON_TERMINAL, MARKDOWN, TERMINAL

SCHEMA = xmlschema.XMLSchema(Path(__file__).parents[1] / "data" / "jenkins-junit.xsd")


def validate(document: str) -> ET.Element:
    """The parsed document, after the schema found nothing wrong with it."""
    SCHEMA.validate(document.encode("utf-8"))
    return ET.fromstring(document.encode("utf-8"))


def test_the_schema_refuses_what_report_writers_get_wrong() -> None:
    """The schema bites: the mistakes it exists for are errors."""
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        SCHEMA.validate('<testsuites skipped="1"/>')
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        SCHEMA.validate('<testsuite name="s" tests="1"><testcase name="c">'
                        '<skipped message="why"/></testcase></testsuite>')
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        SCHEMA.validate('<testsuite name="s" tests="1"><testcase name="c">'
                        '<system-out>x</system-out><failure/></testcase></testsuite>')


@pytest.mark.parametrize("name", [*TERMINAL, *MARKDOWN])
def test_every_status_validates_with_any_data(name: str) -> None:
    payload = {**TERMINAL, **MARKDOWN}[name]
    result = hostile.check_result(payload)
    document = check_junit(result)
    root = validate(document)
    assert ACTS_ON_TERMINAL.search(document) is None
    assert root.tag == "testsuites" and root.get("skipped") is None
    suites = root.findall("testsuite")
    # The prompt with four gates, the prompt that could not be checked, the deleted one.
    assert [s.get("tests") for s in suites] == ["5", "1", "1"]
    assert [s.get("skipped") for s in suites] == ["1", "0", "1"]
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("7", "1", "1")
    cases = suites[0].findall("testcase")
    assert [c[0].tag if len(c) else None for c in cases] == [
        "system-out", None, "failure", "system-out", "skipped"]
    assert "not applied" in (cases[4].find("skipped").text or "")  # type: ignore[union-attr]
    error = suites[1].find("testcase/error")
    assert error is not None and error.get("type") == "provider"
    assert "fix:" in (error.text or "") and "fix:" not in (error.get("message") or "")


def test_control_characters_show_as_escapes() -> None:
    root = validate(check_junit(hostile.check_result("a\x1b]0;t\x07b\x00c\ud800")))
    failure = root.find("testsuite/testcase/failure")
    assert failure is not None
    assert failure.get("message") == "a\\x1b]0;t\\x07b\\x00c\\ud800 is above"
