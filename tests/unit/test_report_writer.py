"""Unit tests for the report folder: index.json, junit.xml and the index.html matrix."""

from __future__ import annotations

import json
import random
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import __version__
from harness.errors import HarnessError
from harness.report.html_page import format_duration
from harness.report.verdicts import CaseResult, Level, Verdict
from harness.report.writer import ReportWriter

REF = "client=ref server=ref"
SDK = "client=nacos-sdk-python server=ref"
SCRIPT = "<script>alert('x')</script>"
META = {
    "run_id": "run-1",
    "started_at": "2025-01-01T00:00:00Z",
    "finished_at": "2025-01-01T00:01:00Z",
    "runtime_s": 60.0,
    "peers": {"nacos-client": ["ref", "nacos-sdk-python"], "nacos-server": ["ref"]},
    "seed": 7,
    "command_line": "pytest suites -p connformance",
}

CASES = {
    "SR-01": (Level.MUST, "setup_reset", "ServerCheck gives a connection id", "ServerCheck -> 200, non-empty connectionId"),
    "TC-04": (Level.SHOULD, "transport_cleanup", "blackhole eject", "the server ejects a blackholed connection"),
    "SR-08": (Level.INFO, "setup_reset", "redirect outside the list", "record what the client does"),
}

# (case, column) -> verdict, detail: one of each verdict over 3 cases x 2 peers.
CELLS = {
    ("SR-01", REF): (Verdict.OK, ""),
    ("SR-01", SDK): (Verdict.FAILED, f"connectionId was empty {SCRIPT}"),
    ("TC-04", REF): (Verdict.NON_STRICT, "ejected after 29.1 s, band ends at 28.25 s"),
    ("TC-04", SDK): (Verdict.ERROR, "SetupError: port 8848 busy"),
    ("SR-08", REF): (Verdict.INFORMATIONAL, "client rotated to the next server"),
    ("SR-08", SDK): (Verdict.UNIMPLEMENTED, "peer lacks capability events"),
}


def make_result(case_id: str, peer: str, **overrides) -> CaseResult:
    level, area, title, requirement = CASES[case_id]
    verdict, detail = CELLS[(case_id, peer)]
    client = peer.split()[0].split("=")[1]
    fields = {
        "case_id": case_id,
        "level": level,
        "requirement": requirement,
        "title": title,
        "area": area,
        "peer": peer,
        "params": {"nacos-client": client, "nacos-server": "ref"},
        "verdict": verdict,
        "detail": detail,
        "expected": "non-empty" if verdict is Verdict.FAILED else None,
        "actual": "" if verdict is Verdict.FAILED else None,
        "duration_ms": 1500.0 if verdict is Verdict.NON_STRICT else 120.0,
        "history": f"histories/{case_id}-{client}.jsonl",
        "log_paths": {"server": f"logs/{case_id}-server.log"},
        "seed": 7,
        "nodeid": f"suites/x.py::test_{case_id}[{client}]",
    }
    fields.update(overrides)
    return CaseResult(**fields)


def all_results() -> list[CaseResult]:
    return [make_result(case_id, peer) for case_id, peer in CELLS]


@pytest.fixture
def report(tmp_path: Path) -> Path:
    writer = ReportWriter(tmp_path / "report", column_order=[REF])
    for result in all_results():
        writer.add(result)
    writer.write(META)
    return tmp_path / "report"


def test_index_json_shape(report: Path) -> None:
    index = json.loads((report / "index.json").read_text(encoding="utf-8"))
    assert set(index) == {"meta", "peers", "cases", "results", "summary"}
    assert index["meta"] == {**META, "connformance_version": __version__}
    assert index["peers"] == [REF, SDK]
    assert [c["id"] for c in index["cases"]] == ["SR-01", "SR-08", "TC-04"]
    assert index["cases"][0] == {
        "id": "SR-01",
        "level": "MUST",
        "area": "setup_reset",
        "title": "ServerCheck gives a connection id",
        "requirement": "ServerCheck -> 200, non-empty connectionId",
    }
    assert [(r["case_id"], r["peer"]) for r in index["results"]] == [
        ("SR-01", REF), ("SR-01", SDK), ("SR-08", REF), ("SR-08", SDK), ("TC-04", REF), ("TC-04", SDK),
    ]
    assert index["summary"] == {str(v): 1 for v in Verdict}
    assert all(CaseResult.from_dict(r).to_dict() == r for r in index["results"])


def test_junit_parses_with_one_suite_per_area_and_the_right_counts(report: Path) -> None:
    root = ET.parse(report / "junit.xml").getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("6", "2", "1")
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"setup_reset", "transport_cleanup"}
    assert (suites["setup_reset"].get("tests"), suites["setup_reset"].get("failures")) == ("4", "1")
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == {f"{case_id}[{peer}]" for case_id, peer in CELLS}
    assert len(root.findall(".//failure")) == 2 and len(root.findall(".//skipped")) == 1

    failed = cases[f"SR-01[{SDK}]"]
    assert failed.get("classname") == "setup_reset" and failed.get("time") == "0.120"
    failure = failed.find("failure")
    assert failure is not None and failure.get("type") == "FAILED"
    assert "expected: non-empty" in failure.text and SCRIPT in failure.text  # escaped in the file, intact here
    assert cases[f"TC-04[{SDK}]"].find("failure").get("type") == "ERROR"
    ok = cases[f"SR-01[{REF}]"]
    assert ok.find("failure") is None and ok.find("skipped") is None
    props = {p.get("name"): p.get("value") for p in ok.iter("property")}
    assert props["verdict"] == "OK" and props["history"] == "histories/SR-01-ref.jsonl"
    assert cases[f"TC-04[{REF}]"].get("time") == "1.500"


def test_html_has_the_summary_and_every_matrix_cell(report: Path) -> None:
    page = (report / "index.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page  # self-contained
    # One matrix per area, each with only the columns that have a cell there.
    matrices = re.findall(r'<table class="matrix">.*?</table>', page)
    assert len(matrices) == 2
    for matrix in matrices:
        assert "<th>client ref<br>server ref</th>" in matrix and "<th>client nacos-sdk-python<br>server ref</th>" in matrix
    joined = "".join(matrices)
    for case_id in CASES:
        assert f'<td class="id">{case_id}</td>' in joined
    chips = re.findall(r'<a class="chip v-([A-Z-]+)[^"]*" href="#([^"]+)" data-cell="([^"]+)"', joined)
    assert sorted(v for v, _, _ in chips) == sorted(str(v) for v in Verdict)
    cells = json.loads(re.search(r'<script type="application/json" id="cells">(.*?)</script>', page).group(1))
    for _, anchor, cell in chips:
        assert f'id="{anchor}"' in page and cell in cells  # each chip opens its cell, and has a section
    sr01 = next(c for c in cells.values() if c["case_id"] == "SR-01" and c["peer"] == REF)
    assert sr01["history_href"] == "histories/SR-01-ref.jsonl"
    assert ["server", "logs/SR-01-server.log"] in sr01["logs"]
    assert 'title="ServerCheck -&gt; 200, non-empty connectionId"' in joined
    assert "1.5 s" in joined and "120 ms" in joined
    for v in Verdict:
        assert f'title="{v}: 1"' in page  # the summary


def test_findings_list_the_deviations_with_a_command(report: Path) -> None:
    page = (report / "findings.html").read_text(encoding="utf-8")
    assert "SR-01" in page and "TC-04" in page  # the FAILED and the NON-STRICT cells
    assert "python3 -m tox run -e conformance -- -k SR-01 --peer client=nacos-sdk-python --peer server=ref" in page


def test_html_escapes_strings_from_peers(report: Path) -> None:
    page = (report / "index.html").read_text(encoding="utf-8")
    assert SCRIPT not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # only the page's own (and the JSON island, escaped)


def test_write_is_idempotent_and_order_independent(tmp_path: Path, report: Path) -> None:
    """Rewriting, or adding the results in another order (xdist), gives the same bytes."""
    first = {name: (report / name).read_bytes() for name in ("index.json", "index.html", "junit.xml", "findings.html")}
    shuffled = all_results()
    random.Random(3).shuffle(shuffled)
    writer = ReportWriter(report, column_order=[REF])
    writer.extend(shuffled)
    writer.write(META)
    writer.write(META)
    assert {name: (report / name).read_bytes() for name in first} == first
    assert sorted(p.name for p in report.iterdir()) == ["findings.html", "index.html", "index.json", "junit.xml"]


def test_columns_default_to_alphabetical_order(tmp_path: Path) -> None:
    writer = ReportWriter(tmp_path)
    writer.extend(all_results())
    writer.write({})
    index = json.loads((tmp_path / "index.json").read_text(encoding="utf-8"))
    assert index["peers"] == [SDK, REF]
    assert [r["peer"] for r in index["results"][:2]] == [SDK, REF]


def test_adding_the_same_node_again_replaces_it(tmp_path: Path) -> None:
    writer = ReportWriter(tmp_path)
    writer.add(make_result("SR-01", SDK))
    writer.add(make_result("SR-01", SDK, verdict=Verdict.OK, detail=""))
    assert [r.verdict for r in writer.results] == [Verdict.OK]
    assert not writer.failed()
    writer.add(make_result("TC-04", SDK))
    assert writer.failed() and writer.summary()["ERROR"] == 1


def test_absolute_paths_become_relative_to_the_report(tmp_path: Path) -> None:
    report_dir = tmp_path / "report"
    writer = ReportWriter(report_dir)
    original = make_result("SR-01", REF, history=str(report_dir / "histories" / "h.jsonl"), log_paths={"agent": str(tmp_path / "agent.log")})
    writer.add(original)
    (stored,) = writer.results
    assert stored.history == "histories/h.jsonl"
    assert stored.log_paths == {"agent": "../agent.log"}
    assert original.history.startswith("/")  # the caller's object is left alone


def test_results_sharing_a_cell_get_distinct_labels_and_anchors(tmp_path: Path) -> None:
    """PL-16 style: one case, one column, several extra params."""
    writer = ReportWriter(tmp_path)
    for width in (4, 16):
        writer.add(make_result("SR-08", REF, params={"nacos-client": "ref", "burst": width}, nodeid=f"n[{width}]"))
    writer.write({})
    root = ET.parse(tmp_path / "junit.xml").getroot()
    assert sorted(c.get("name") for c in root.iter("testcase")) == [f"SR-08[{REF} burst=16]", f"SR-08[{REF} burst=4]"]
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    anchors = re.findall(r'<details class="result[^"]*" id="([^"]+)"', page)
    assert len(anchors) == len(set(anchors)) == 2


def test_control_characters_do_not_break_the_xml(tmp_path: Path) -> None:
    writer = ReportWriter(tmp_path)
    writer.add(make_result("SR-01", SDK, detail="log line \x1b[31mred\x00", actual="\x07"))
    writer.write({})
    failure = ET.parse(tmp_path / "junit.xml").getroot().find(".//failure")
    assert failure is not None and "\\x1b[31mred\\x00" in failure.text


def test_load_reads_a_report_back(report: Path) -> None:
    writer, meta = ReportWriter.load(report)
    assert meta["run_id"] == "run-1"
    assert sorted(r.to_dict()["nodeid"] for r in writer.results) == sorted(r.nodeid for r in all_results())


def test_add_refuses_anything_but_a_case_result(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="from_dict"):
        ReportWriter(tmp_path).add(make_result("SR-01", REF).to_dict())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ms", "text"), [(None, "0 ms"), (0.4, "0 ms"), (999, "999 ms"), (1000, "1.0 s"), (59_940, "59.9 s"), (123_000, "2 min 03 s")]
)
def test_format_duration(ms, text: str) -> None:
    assert format_duration(ms) == text
