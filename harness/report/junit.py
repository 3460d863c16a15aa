"""JUnit XML from the report index, for CI dashboards.

One ``<testsuite>`` per area; a ``<testcase>`` per result named ``SR-01[client=ref server=ref]``
with ``classname`` = area and ``time`` in seconds. What fails a CI job fails here: an unexpected
verdict (``<failure type="UNEXPECTED FAILED">`` etc.; results written before expectations count
FAILED and ERROR as unexpected) and ERROR. An expected FAILED is what it is, not a pass:
``<skipped type="connformance.expected-FAILED">`` with the expectation's reason and source, the
failure text in ``<system-out>``. UNIMPLEMENTED is a ``<skipped>``. Every testcase carries its
verdict, level, expected verdicts, rate and history as ``<property>`` elements.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from harness.report.index_json import cell_variant_labels
from harness.report.verdicts import FAILING_VERDICTS, Verdict

__all__ = ["is_unexpected", "render_junit", "xml_text"]

# Characters XML 1.0 cannot carry even escaped (NUL, most C0 controls, lone surrogates, U+FFFE/F).
_XML_INVALID = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: Any) -> str:
    """``value`` as text XML can hold: invalid characters shown as ``\\xNN`` escapes."""
    text = value if isinstance(value, str) else str(value)
    return _XML_INVALID.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _seconds(duration_ms: Any) -> str:
    return f"{float(duration_ms or 0) / 1000.0:.3f}"


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _failure_text(result: Mapping[str, Any]) -> str:
    lines = [f"requirement: {result['requirement']}"]
    if result.get("expected") is not None or result.get("actual") is not None:
        lines += [f"expected: {_show(result.get('expected'))}", f"actual:   {_show(result.get('actual'))}"]
    if result.get("detail"):
        lines += ["", str(result["detail"])]
    if result.get("history"):
        lines += ["", f"history: {result['history']}"]
    return "\n".join(lines)


def _message(verdict: Verdict, result: Mapping[str, Any]) -> str:
    """One line for CI summaries: expected vs actual when known, else the detail's first line."""
    if result.get("expected") is not None or result.get("actual") is not None:
        text = f"expected {_show(result.get('expected'))}, actual {_show(result.get('actual'))}"
    else:
        lines = str(result.get("detail") or "").strip().splitlines()
        text = lines[0] if lines else result["requirement"]
    text = " ".join(text.split())
    return f"{verdict}: {text[:300]}" + ("…" if len(text) > 300 else "")


def is_unexpected(result: Mapping[str, Any]) -> bool:
    """What fails the run: an unexpected verdict, or ERROR. A result judged before expectations
    existed (no ``expected_verdicts``) counts FAILED and ERROR, as runs did then."""
    if Verdict(result["verdict"]) is Verdict.ERROR:
        return True
    if not result.get("expected_verdicts"):
        return Verdict(result["verdict"]) in FAILING_VERDICTS
    return bool(result.get("unexpected"))


def _testcase(result: Mapping[str, Any], variant: str) -> ET.Element:
    column = f"{result['peer']} {variant}" if variant else result["peer"]
    case = ET.Element(
        "testcase",
        {
            "classname": xml_text(result["area"]),
            "name": xml_text(f"{result['case_id']}[{column}]"),
            "time": _seconds(result.get("duration_ms")),
        },
    )
    properties = ET.SubElement(case, "properties")
    for name in ("verdict", "level", "requirement", "history", "seed", "nodeid", "rate", "unexpected_why"):
        if result.get(name) not in (None, ""):
            ET.SubElement(properties, "property", {"name": name, "value": xml_text(result[name])})
    if result.get("expected_verdicts"):
        ET.SubElement(properties, "property", {"name": "expected_verdicts",
                                               "value": xml_text("/".join(result["expected_verdicts"]))})

    verdict = Verdict(result["verdict"])
    message = _message(verdict, result)
    if is_unexpected(result):
        kind = str(verdict) if verdict is Verdict.ERROR or not result.get("expected_verdicts") \
            else f"UNEXPECTED {verdict}"
        why = result.get("unexpected_why") or ""
        failure = ET.SubElement(case, "failure", {"type": kind, "message": xml_text(f"{why} | {message}" if why
                                                                                    else message)})
        failure.text = xml_text(_failure_text(result))
    elif verdict is Verdict.FAILED:
        entry = result.get("expectation") or {}
        ET.SubElement(case, "skipped", {"type": "connformance.expected-FAILED",
                                        "message": xml_text(f"expected FAILED: {entry.get('reason', '')} "
                                                            f"({entry.get('source', '')})")})
        ET.SubElement(case, "system-out").text = xml_text(_failure_text(result))
    elif verdict is Verdict.UNIMPLEMENTED:
        ET.SubElement(case, "skipped", {"message": xml_text(message)})
    elif result.get("detail"):
        # Passing but worth reading (NON-STRICT lateness, INFORMATIONAL findings).
        ET.SubElement(case, "system-out").text = xml_text(_failure_text(result))
    return case


def render_junit(index: Mapping[str, Any]) -> bytes:
    """The JUnit XML document (UTF-8 bytes with declaration) for an ``index.json`` document."""
    results = index["results"]
    variants = cell_variant_labels(results)
    by_area: dict[str, list[ET.Element]] = {}
    counts: dict[str, dict[str, float]] = {}
    for result, variant in zip(results, variants, strict=True):
        area = result["area"]
        by_area.setdefault(area, []).append(_testcase(result, variant))
        c = counts.setdefault(area, {"tests": 0, "failures": 0, "skipped": 0, "time": 0.0})
        verdict = Verdict(result["verdict"])
        c["tests"] += 1
        c["failures"] += is_unexpected(result)
        c["skipped"] += verdict is Verdict.UNIMPLEMENTED or (verdict is Verdict.FAILED and not is_unexpected(result))
        c["time"] += float(result.get("duration_ms") or 0)

    total = {k: sum(c[k] for c in counts.values()) for k in ("tests", "failures", "skipped", "time")}
    root = ET.Element(
        "testsuites",
        {
            "name": "connformance",
            "tests": str(int(total["tests"])),
            "failures": str(int(total["failures"])),
            "errors": "0",
            "skipped": str(int(total["skipped"])),
            "time": _seconds(total["time"]),
        },
    )
    timestamp = str(index.get("meta", {}).get("started_at") or "")
    for area, cases in by_area.items():
        c = counts[area]
        suite_attrs = {
            "name": xml_text(area),
            "tests": str(int(c["tests"])),
            "failures": str(int(c["failures"])),
            "errors": "0",
            "skipped": str(int(c["skipped"])),
            "time": _seconds(c["time"]),
        }
        if timestamp:
            suite_attrs["timestamp"] = xml_text(timestamp)
        suite = ET.SubElement(root, "testsuite", suite_attrs)
        suite.extend(cases)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
