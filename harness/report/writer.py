"""``ReportWriter``: collects case results and writes the report folder (SPEC §6).

The folder holds ``index.json`` (the data), ``index.html`` (the matrix), ``junit.xml`` and,
written by each case's ``History`` rather than here, the per-case histories and logs that the
results point at by relative path. HTML and JUnit are rendered from the ``index.json`` document
alone, so a report can be re-rendered from its index (``ReportWriter.load``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.report.html_page import render_findings, render_html
from harness.report.index_json import build_index, dumps_index
from harness.report.junit import render_junit
from harness.report.verdicts import CaseResult, Verdict, run_failed

__all__ = ["ReportFiles", "ReportWriter", "write_atomically"]

INDEX_JSON = "index.json"
INDEX_HTML = "index.html"
JUNIT_XML = "junit.xml"
FINDINGS_HTML = "findings.html"


@dataclass(frozen=True)
class ReportFiles:
    index_json: Path
    index_html: Path
    junit_xml: Path


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``.

    A reader (a browser, CI uploading artifacts) sees the old file or the new one, never half.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; a report is meant to be read
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


class ReportWriter:
    """Collects ``CaseResult``s and writes the report folder; ``write`` may be called any number of
    times (after each case, at the end): each call rewrites every file from all results so far.

    Parameters:
        report_dir: the report folder; created on first write.
        column_order: matrix columns (peer labels) to show first, in this order; any other
            columns follow alphabetically.

    Results are keyed by pytest node id (or by case, column and params when there is none): adding
    a result for the same key again replaces the earlier one (a rerun, a late xdist report).
    """

    def __init__(self, report_dir: Path, *, column_order: Sequence[str] = ()) -> None:
        self.report_dir = Path(report_dir)
        self.column_order = list(column_order)
        self._results: dict[str, CaseResult] = {}

    def add(self, result: CaseResult) -> None:
        if not isinstance(result, CaseResult):
            raise HarnessError(
                f"ReportWriter.add takes a CaseResult, got {type(result).__name__}; "
                "use CaseResult.from_dict for data passed between xdist workers"
            )
        result = dataclasses.replace(
            result,
            history=self._relative(result.history) if result.history else result.history,
            log_paths={name: self._relative(p) for name, p in result.log_paths.items()},
        )
        self._results[self._key(result)] = result

    @property
    def results(self) -> list[CaseResult]:
        return list(self._results.values())

    def summary(self) -> dict[str, int]:
        counts = {str(v): 0 for v in Verdict}
        for r in self._results.values():
            counts[str(r.verdict)] += 1
        return counts

    def failed(self) -> bool:
        """True if the run must exit non-zero (some result FAILED or ERROR)."""
        return run_failed(r.verdict for r in self._results.values())

    def write(self, meta: Mapping[str, Any]) -> ReportFiles:
        """Write ``junit.xml``, ``index.html`` then ``index.json``, each atomically.

        ``meta`` describes the run: ``run_id``, ``started_at``, ``finished_at``, ``runtime_s``,
        ``peers``, ``seed``, ``command_line`` (``connformance_version`` is filled in); any further
        keys are kept and shown. Same results and meta give byte-identical files.
        """
        index = build_index(self._results.values(), meta, self.column_order)
        files = ReportFiles(
            index_json=self.report_dir / INDEX_JSON,
            index_html=self.report_dir / INDEX_HTML,
            junit_xml=self.report_dir / JUNIT_XML,
        )
        write_atomically(files.junit_xml, render_junit(index))
        write_atomically(files.index_html, render_html(index).encode("utf-8"))
        write_atomically(self.report_dir / FINDINGS_HTML, render_findings(index).encode("utf-8"))
        # index.json last: when it is there, the report it describes is complete.
        write_atomically(files.index_json, dumps_index(index).encode("utf-8"))
        return files

    @classmethod
    def load(cls, report_dir: Path) -> tuple[ReportWriter, dict[str, Any]]:
        """A writer holding the results of an existing report, and that report's meta."""
        index = json.loads((Path(report_dir) / INDEX_JSON).read_text(encoding="utf-8"))
        writer = cls(report_dir, column_order=index["peers"])
        writer.extend(CaseResult.from_dict(d) for d in index["results"])
        return writer, index["meta"]

    def extend(self, results: Iterable[CaseResult]) -> None:
        for result in results:
            self.add(result)

    def _relative(self, path: str | os.PathLike[str]) -> str:
        # Links in the report are relative to the report folder, so the folder can be moved or
        # uploaded as a CI artifact as a whole.
        p = Path(path)
        if p.is_absolute():
            p = Path(os.path.relpath(p.resolve(), self.report_dir.resolve()))
        return p.as_posix()

    @staticmethod
    def _key(result: CaseResult) -> str:
        if result.nodeid:
            return result.nodeid
        return json.dumps([result.case_id, result.peer, result.params], sort_keys=True, default=repr)
