"""JUnit XML, the report format CI systems show: one writer for every report bootfuzz makes.

The boot matrix writes one testcase per cell, the fuzzing campaign one per failure
signature; both describe their results as a :class:`Suite` and this module writes
the XML (``<testsuites>`` with the totals, one ``<testsuite>``, the usual
``failure``/``error``/``skipped`` children and ``system-out``), so the two cannot
drift apart in what a CI system sees.
"""

from __future__ import annotations

import enum
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass


class Outcome(enum.StrEnum):
    PASSED = "passed"
    FAILURE = "failure"  # what was tested is wrong
    ERROR = "error"  # the test could not run to an answer
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Case:
    classname: str
    name: str
    outcome: Outcome = Outcome.PASSED
    message: str = ""  # the failure's, error's or skip's one-line message
    text: str | None = None  # the failure's or error's body
    time: float | None = None  # seconds
    system_out: str | None = None


@dataclass(frozen=True)
class Suite:
    name: str
    cases: Sequence[Case]
    time: float  # seconds
    properties: Sequence[tuple[str, str]] = ()

    def count(self, outcome: Outcome) -> int:
        return sum(1 for c in self.cases if c.outcome is outcome)


def _totals(suite: Suite) -> dict[str, str]:
    return {
        "tests": str(len(suite.cases)), "failures": str(suite.count(Outcome.FAILURE)),
        "errors": str(suite.count(Outcome.ERROR)), "skipped": str(suite.count(Outcome.SKIPPED)),
        "time": f"{suite.time:.3f}",
    }


def junit_xml(suite: Suite) -> str:
    """The XML document for *suite*, declaration included."""
    root = ET.Element("testsuites", {"name": suite.name, **_totals(suite)})
    element = ET.SubElement(root, "testsuite", {"name": suite.name, **_totals(suite)})
    if suite.properties:
        props = ET.SubElement(element, "properties")
        for name, value in suite.properties:
            ET.SubElement(props, "property", {"name": name, "value": value})
    for case in suite.cases:
        attrs = {"classname": case.classname, "name": case.name}
        if case.time is not None:
            attrs["time"] = f"{case.time:.3f}"
        tc = ET.SubElement(element, "testcase", attrs)
        if case.outcome is not Outcome.PASSED:
            child = ET.SubElement(tc, case.outcome.value, {"message": case.message})
            if case.outcome is not Outcome.SKIPPED and case.text is not None:
                child.text = case.text
        if case.system_out is not None:
            ET.SubElement(tc, "system-out").text = case.system_out
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, "unicode") + "\n"


__all__ = ["Case", "Outcome", "Suite", "junit_xml"]
