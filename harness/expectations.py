"""Expected verdicts (web-platform-tests' expectation metadata, s2n-quic's "expected to pass but
failed"): what each cell of the matrix is known to give, and why, so a run is red only when
something changed.

A file (TOML) holds ``[[expect]]`` entries::

    [[expect]]
    case = "SR-06"                                            # a case id (glob allowed: "SR-*")
    peer = "nacos-client=nacos-sdk-python nacos-server=ref"   # the matrix column (glob allowed)
    verdicts = ["FAILED"]                                     # what it gives; several where it varies
    reason = "never answers ConnectResetRequest (no such type in its GrpcUtils.remote_type)"
    source = "nacos-sdk-python 3.2.0 grpc_util.py:29-53; research/real-servers-and-audit.md §3"
    rate = ""                                                 # where it varies: the measured rate

A cell without an entry is expected to give OK, INFORMATIONAL or UNIMPLEMENTED. UNIMPLEMENTED is
never unexpected, entry or not: it says what the machine and the manifests let a case judge (no
namespaces without root, a capability left out), not how a peer behaved. ERROR is never expected: a broken run is always red. An
entry that matches a cell giving something else is *unexpected* too: a regression, or a fix
that made the entry stale (the run says which). Later files win over earlier ones for the same
(case, peer) pattern; the built-in file ships beside this module for the built-in peers.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

__all__ = ["BUILTIN_EXPECTATIONS", "DEFAULT_EXPECTED", "Expectation", "Expectations", "Judgement",
           "render_expectations"]

BUILTIN_EXPECTATIONS = Path(__file__).resolve().parent / "expectations.toml"
DEFAULT_EXPECTED = ("OK", "INFORMATIONAL", "UNIMPLEMENTED")
_VERDICTS = ("OK", "NON-STRICT", "FAILED", "UNIMPLEMENTED", "INFORMATIONAL")
_KEYS = {"case", "peer", "verdicts", "reason", "source", "rate"}


@dataclass(frozen=True)
class Expectation:
    case: str
    peer: str
    verdicts: tuple[str, ...]
    reason: str
    source: str
    rate: str = ""
    origin: str = ""  # file:entry, for messages

    def matches(self, case_id: str, peer: str) -> bool:
        return fnmatch.fnmatchcase(case_id, self.case) and fnmatch.fnmatchcase(peer, self.peer)

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.case, "peer": self.peer, "verdicts": list(self.verdicts), "reason": self.reason,
                "source": self.source, "rate": self.rate, "origin": self.origin}


@dataclass(frozen=True)
class Judgement:
    """One cell against the expectations."""

    expected: tuple[str, ...]
    entry: Expectation | None
    unexpected: bool
    why: str  # for an unexpected cell: regression, stale entry, or a broken run

    def to_dict(self) -> dict[str, Any]:
        return {"expected": list(self.expected), "entry": self.entry.to_dict() if self.entry else None,
                "unexpected": self.unexpected, "why": self.why}


def _parse(path: Path) -> list[Expectation]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise HarnessError(f"expectations {path}: cannot read it: {exc}") from None
    unknown_top = set(data) - {"expect"}
    if unknown_top:
        raise HarnessError(f"expectations {path}: unknown table(s) {sorted(unknown_top)}; entries are [[expect]]")
    entries = []
    for i, raw in enumerate(data.get("expect", []), 1):
        where = f"{path}: [[expect]] #{i}"
        if not isinstance(raw, dict):
            raise HarnessError(f"{where}: expected a table")
        unknown = set(raw) - _KEYS
        if unknown:
            raise HarnessError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(_KEYS)}")
        if not isinstance(raw.get("peer"), str):
            raise HarnessError(f"{where}: `peer` is required: the matrix column, e.g. "
                               '"nacos-client=ref nacos-server=ref" ("" for a case without peers; globs allowed)')
        for key in ("case", "reason", "source"):
            if not isinstance(raw.get(key), str) or not raw[key].strip():
                raise HarnessError(f"{where}: `{key}` is required (a non-empty string): every expectation says "
                                   "why, and cites its evidence (an upstream issue, a source line, a measured rate)")
        verdicts = raw.get("verdicts")
        if not isinstance(verdicts, list) or not verdicts or any(v not in _VERDICTS for v in verdicts):
            raise HarnessError(f"{where}: `verdicts` must be a non-empty list of {', '.join(_VERDICTS)} "
                               f"(ERROR is never expected), got {verdicts!r}")
        if len(verdicts) > 1 and not str(raw.get("rate", "")).strip():
            raise HarnessError(f"{where}: a cell that varies ({verdicts}) needs its measured `rate` "
                               "(e.g. \"NON-STRICT 2/5, --trials 5\")")
        entries.append(Expectation(raw["case"], raw["peer"], tuple(verdicts), raw["reason"].strip(),
                                   raw["source"].strip(), str(raw.get("rate", "")).strip(), where))
    return entries


class Expectations:
    """The entries of several files, the last file winning for the same (case, peer) pattern."""

    def __init__(self, entries: Sequence[Expectation] = ()) -> None:
        self.entries = list(entries)

    @classmethod
    def load(cls, paths: Iterable[Path], *, builtin: bool = True) -> Expectations:
        entries: list[Expectation] = []
        for path in ([BUILTIN_EXPECTATIONS] if builtin else []) + [Path(p) for p in paths]:
            entries.extend(_parse(path))
        return cls(entries)

    def entry_for(self, case_id: str, peer: str) -> Expectation | None:
        """The last matching entry (an exact pattern beats a glob of the same file order)."""
        found = [e for e in self.entries if e.matches(case_id, peer)]
        if not found:
            return None
        exact = [e for e in found if e.case == case_id and e.peer == peer]
        return (exact or found)[-1]

    def judge(self, case_id: str, peer: str, verdict: str) -> Judgement:
        entry = self.entry_for(case_id, peer)
        expected = entry.verdicts if entry else DEFAULT_EXPECTED
        if verdict == "ERROR":
            return Judgement(expected, entry, True, "ERROR: the run broke (never expected)")
        if verdict == "UNIMPLEMENTED":
            # Not a verdict about behaviour: what this machine or manifest lets the case judge
            # (a namespace without root, a capability dropped). Never red, never stale.
            return Judgement(expected, entry, False, "")
        if verdict in expected:
            return Judgement(expected, entry, False, "")
        if entry is None:
            return Judgement(expected, None, True, f"regression: {verdict} where no expectation says so")
        if verdict in DEFAULT_EXPECTED:
            return Judgement(expected, entry, True, f"stale expectation: {verdict}, but {entry.origin} expects "
                                                    f"{'/'.join(entry.verdicts)} ({entry.reason}); fixed? update it")
        return Judgement(expected, entry, True, f"changed: {verdict}, expected {'/'.join(entry.verdicts)} "
                                                f"({entry.origin})")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def render_expectations(rows: Iterable[dict[str, Any]]) -> str:
    """TOML for ``--update-expectations``: one entry per row (``case``, ``peer``, ``verdicts``,
    ``reason``, ``source``, ``rate``)."""
    out = ["# Expected verdicts, written by --update-expectations from a run; review each reason and",
           "# give each its evidence (an upstream issue, a source line, a measured rate) before use.", ""]
    for row in rows:
        out.append("[[expect]]")
        out.append(f"case = {_quote(row['case'])}")
        out.append(f"peer = {_quote(row['peer'])}")
        out.append("verdicts = [" + ", ".join(_quote(v) for v in row["verdicts"]) + "]")
        out.append(f"reason = {_quote(row['reason'])}")
        out.append(f"source = {_quote(row['source'])}")
        if row.get("rate"):
            out.append(f"rate = {_quote(row['rate'])}")
        out.append("")
    return "\n".join(out)
