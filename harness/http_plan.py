"""The http-client agent contract (SPEC §4.4) as data: the plan a run is given and the JSON lines
an agent prints. Shared by the harness (``harness.http_run``, which writes plans and reads
output) and the Python agents (``harness.agents.python.http_agent``, which read plans); pure
standard library, no pytest, no processes.

Plan (a JSON file with exactly the keys ``knobs`` and ``phases``; the Go and Java agents reject
any other key, so the URLs are not in it)::

    {"knobs": {"max_conns_per_host": 3, "idle_timeout_ms": 1000},
     "phases": [
       {"op": "burst", "n": 20, "path": "/sleep?ms=300", "method": "GET", "target": 0},
       {"op": "sequential", "n": 5, "path": "/"},
       {"op": "sleep", "ms": 1500},
       {"op": "cancel_burst", "n": 10, "cancel_after_ms": 50, "path": "/sleep?ms=1000"},
       {"op": "spread_burst", "n": 8, "targets": [0, 1], "path": "/sleep?ms=300", "timeout_ms": 2000}]}

- URLs: the agent gets them as ``--url`` values, repeated or comma-separated (``--url A,B`` is
  ``--url A --url B``); a phase's ``target`` indexes that list (PL-06's two hosts). The harness
  fills the manifest's ``{url}`` with the comma-joined list, so one placeholder carries them all
  and a one-host run looks like any other.
- request phases (``burst`` all at once, ``sequential`` one after another, ``cancel_burst`` all
  at once and each canceled ``cancel_after_ms`` after it was issued, ``spread_burst`` all at once
  over several hosts: request ``i`` goes to ``targets[i % len(targets)]``, one client and one
  pool for all of them): ``n`` (1..1000), ``path`` (default ``/``, joined to the target's base
  URL), ``method`` (default ``GET``), ``target`` (default 0; ``targets`` instead for
  ``spread_burst``), and optionally ``body`` (a string) and ``timeout_ms`` (a per-request
  timeout; absent = the library's default).
- ``sleep``: ``ms``. The agent stays alive through it (idle behaviour is observed then).

Knobs (``KNOBS``) may also reach an agent as flags (``--max-conns-per-host 3``, the manifest's
``[knobs]``); a flag wins over the plan. ``max_conns_total`` is a harness extension beyond SPEC
§4.4's list: the pool-wide connection limit that httpx (``max_connections``) and aiohttp
(``limit``) have and PL-10 needs.

Output: one JSON object per line. Per request (``RECORD_FIELDS``): ``phase`` (index into
``phases``), ``i`` (index within the phase), ``start_ms``/``end_ms`` (epoch ms, to line up with
the ledger's), ``status`` (int or null), ``error`` (string or null; ``"canceled"`` or
``"canceled: ..."`` for a canceled request), ``reused`` (bool or null), ``local_port`` (int or
null). Then ``{"done": true}`` and exit 0; or ``{"unsupported": [knob or op, ...]}`` (the
Python agents add ``"detail": {name: why}``) and exit 3 before any request. Lines that are not
JSON objects (library warnings on stderr, the runtime's start marker) are noise and kept aside.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError

__all__ = [
    "BOOL_KNOBS",
    "EXIT_UNSUPPORTED",
    "INT_KNOBS",
    "KNOBS",
    "KNOB_FLAGS",
    "OPS",
    "RECORD_FIELDS",
    "AgentOutput",
    "Phase",
    "Plan",
    "PlanError",
    "RequestRecord",
    "join_url",
    "knob_from_text",
    "parse_agent_output",
    "parse_plan",
    "split_urls",
]

EXIT_UNSUPPORTED = 3
# int knobs: name -> smallest allowed value
INT_KNOBS: dict[str, int] = {
    "max_conns_per_host": 1,
    "max_conns_total": 1,
    "max_idle_per_host": 0,
    "max_idle_total": 0,
    "idle_timeout_ms": 0,
}
BOOL_KNOBS = ("keepalive", "block_when_full", "read_error_body")
KNOBS = (*INT_KNOBS, *BOOL_KNOBS)
KNOB_FLAGS = {f"--{k.replace('_', '-')}": k for k in KNOBS}  # how a manifest's [knobs] passes them
REQUEST_OPS = ("burst", "sequential", "cancel_burst", "spread_burst")
OPS = (*REQUEST_OPS, "sleep")
MAX_N = 1000
RECORD_FIELDS = ("phase", "i", "start_ms", "end_ms", "status", "error", "reused", "local_port")
EPOCH_MS_FLOOR = 1_000_000_000_000  # 2001-09-09 in epoch ms: anything smaller is a relative time

_METHOD = re.compile(r"[A-Z]{1,16}")
_REQUEST_KEYS = {"op", "n", "path", "method", "target", "body", "timeout_ms"}
_PHASE_KEYS = {
    "burst": _REQUEST_KEYS,
    "sequential": _REQUEST_KEYS,
    "cancel_burst": _REQUEST_KEYS | {"cancel_after_ms"},
    "spread_burst": (_REQUEST_KEYS - {"target"}) | {"targets"},
    "sleep": {"op", "ms"},
}


class PlanError(HarnessError):
    """A plan that does not follow the contract (the case's bug, or a hand-written plan's)."""


@dataclass(frozen=True)
class Phase:
    op: str
    n: int = 0
    path: str = "/"
    method: str = "GET"
    target: int = 0
    body: str | None = None
    timeout_ms: int | None = None
    cancel_after_ms: int | None = None
    targets: tuple[int, ...] | None = None  # spread_burst
    ms: int = 0  # sleep

    @property
    def is_request(self) -> bool:
        return self.op in REQUEST_OPS

    def target_of(self, i: int) -> int:
        """The URL index request ``i`` of this phase goes to."""
        return self.targets[i % len(self.targets)] if self.targets else self.target

    @property
    def all_targets(self) -> tuple[int, ...]:
        return self.targets if self.targets else (self.target,)

    def to_json(self) -> dict[str, Any]:
        if self.op == "sleep":
            return {"op": "sleep", "ms": self.ms}
        out: dict[str, Any] = {"op": self.op, "n": self.n, "path": self.path, "method": self.method}
        if self.targets:
            out["targets"] = list(self.targets)
        else:
            out["target"] = self.target
        for key in ("body", "timeout_ms", "cancel_after_ms"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class Plan:
    phases: tuple[Phase, ...]
    knobs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ops(self) -> set[str]:
        return {p.op for p in self.phases}

    @property
    def request_count(self) -> int:
        return sum(p.n for p in self.phases if p.is_request)

    @property
    def targets(self) -> int:
        """How many URLs the plan needs (1 + the highest ``target``)."""
        return 1 + max((t for p in self.phases if p.is_request for t in p.all_targets), default=0)

    def to_json(self) -> dict[str, Any]:
        return {"knobs": dict(self.knobs), "phases": [p.to_json() for p in self.phases]}


def _int(where: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlanError(f"{where}: expected an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise PlanError(f"{where}: {value} is outside {bound}")
    return value


def parse_knobs(knobs: Any, *, where: str = "knobs", strict: bool = True) -> dict[str, Any]:
    """Validate knob values. ``strict``: an unknown name is an error (the harness side); not
    strict: unknown names pass through (the agent reports them as unsupported)."""
    if knobs is None:
        return {}
    if not isinstance(knobs, dict):
        raise PlanError(f"{where}: expected an object, got {knobs!r}")
    out: dict[str, Any] = {}
    for name, value in knobs.items():
        if value is None:
            continue
        if name in INT_KNOBS:
            out[name] = _int(f"{where}.{name}", value, INT_KNOBS[name])
        elif name in BOOL_KNOBS:
            if not isinstance(value, bool):
                raise PlanError(f"{where}.{name}: expected true or false, got {value!r}")
            out[name] = value
        elif strict:
            raise PlanError(f"{where}.{name}: unknown knob; known: {', '.join(KNOBS)}")
        else:
            out[name] = value
    return out


def knob_from_text(name: str, text: str) -> Any:
    """A knob value given as command-line text (``"3"``, ``"true"``) in the plan's JSON type."""
    if name in INT_KNOBS:
        try:
            return int(text)
        except ValueError:
            raise PlanError(f"--{name.replace('_', '-')}: expected an integer, got {text!r}") from None
    if name in BOOL_KNOBS:
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        raise PlanError(f"--{name.replace('_', '-')}: expected true or false, got {text!r}")
    raise PlanError(f"unknown knob {name!r}; known: {', '.join(KNOBS)}")


def parse_phase(raw: Any, index: int, url_count: int | None) -> Phase:
    where = f"phases[{index}]"
    if not isinstance(raw, dict):
        raise PlanError(f"{where}: expected an object, got {raw!r}")
    op = raw.get("op")
    if op not in OPS:
        raise PlanError(f"{where}.op: expected one of {', '.join(OPS)}, got {op!r}")
    extra = sorted(set(raw) - _PHASE_KEYS[op])
    if extra:
        raise PlanError(f"{where}: unexpected key(s) {', '.join(extra)} for op {op}; allowed: "
                        f"{', '.join(sorted(_PHASE_KEYS[op]))}")
    if op == "sleep":
        if "ms" not in raw:
            raise PlanError(f"{where}.ms: missing (how long to stay idle)")
        return Phase(op="sleep", ms=_int(f"{where}.ms", raw["ms"], 0, 3_600_000))
    if "n" not in raw:
        raise PlanError(f"{where}.n: missing (how many requests)")
    n = _int(f"{where}.n", raw["n"], 1, MAX_N)
    path = raw.get("path", "/")
    if not isinstance(path, str) or not path.startswith("/") or any(c in path for c in " \r\n"):
        raise PlanError(f"{where}.path: expected an absolute path without spaces, got {path!r}")
    method = raw.get("method", "GET")
    if not isinstance(method, str) or not _METHOD.fullmatch(method):
        raise PlanError(f"{where}.method: expected an upper-case method such as GET, got {method!r}")
    target = _int(f"{where}.target", raw.get("target", 0), 0)
    targets = None
    if op == "spread_burst":
        raw_targets = raw.get("targets")
        if not isinstance(raw_targets, list) or not raw_targets:
            raise PlanError(f"{where}.targets: expected a non-empty list of URL indexes, got {raw_targets!r}")
        targets = tuple(_int(f"{where}.targets[{k}]", t, 0) for k, t in enumerate(raw_targets))
    for t in targets or (target,):
        if url_count is not None and t >= url_count:
            raise PlanError(f"{where}.target: {t} but the run has {url_count} URL(s)")
    body = raw.get("body")
    if body is not None and not isinstance(body, str):
        raise PlanError(f"{where}.body: expected a string, got {body!r}")
    timeout_ms = raw.get("timeout_ms")
    if timeout_ms is not None:
        timeout_ms = _int(f"{where}.timeout_ms", timeout_ms, 1)
    cancel_after_ms = None
    if op == "cancel_burst":
        if "cancel_after_ms" not in raw:
            raise PlanError(f"{where}.cancel_after_ms: missing (when to cancel the requests)")
        cancel_after_ms = _int(f"{where}.cancel_after_ms", raw["cancel_after_ms"], 0)
    return Phase(op=op, n=n, path=path, method=method, target=target, body=body, timeout_ms=timeout_ms,
                 cancel_after_ms=cancel_after_ms, targets=targets)


def parse_plan(raw: Any, *, url_count: int | None = None, strict_knobs: bool = True) -> Plan:
    """A validated ``Plan``. ``url_count``: how many URLs the run has (``target`` is checked
    against it when given)."""
    if not isinstance(raw, dict):
        raise PlanError(f"a plan is a JSON object, got {type(raw).__name__}")
    extra = sorted(set(raw) - {"knobs", "phases"})
    if extra:
        raise PlanError(f"plan: unexpected key(s) {', '.join(extra)}; a plan has knobs and phases only "
                        "(URLs are --url values)")
    phases = raw.get("phases")
    if not isinstance(phases, list) or not phases:
        raise PlanError(f"plan.phases: expected a non-empty list, got {phases!r}")
    parsed = tuple(parse_phase(p, i, url_count) for i, p in enumerate(phases))
    return Plan(phases=parsed, knobs=parse_knobs(raw.get("knobs"), strict=strict_knobs))


def split_urls(values: Sequence[str]) -> list[str]:
    """``--url`` values, repeated or comma-separated, as one list; each an ``http://`` URL."""
    urls = [u.strip() for value in values for u in value.split(",") if u.strip()]
    if not urls:
        raise PlanError("no URL given (--url)")
    for url in urls:
        if not re.fullmatch(r"http://[^/\s,]+(/\S*)?", url):
            raise PlanError(f"--url {url!r}: expected an http:// base URL")
    return urls


def join_url(base: str, path: str) -> str:
    """``base`` (``http://h:p`` or ``http://h:p/prefix/``) + an absolute ``path``."""
    return base.rstrip("/") + path


# --- output --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    phase: int
    i: int
    start_ms: float
    end_ms: float
    status: int | None
    error: str | None
    reused: bool | None
    local_port: int | None

    @property
    def ok(self) -> bool:
        return self.status is not None and self.error is None

    @property
    def canceled(self) -> bool:
        return self.error == "canceled" or (self.error or "").startswith("canceled")

    @property
    def duration_ms(self) -> float:
        return self.end_ms - self.start_ms

    def to_json(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in RECORD_FIELDS}


@dataclass
class AgentOutput:
    records: list[RequestRecord] = field(default_factory=list)
    done: bool = False
    unsupported: list[str] | None = None
    detail: dict[str, str] = field(default_factory=dict)
    noise: list[str] = field(default_factory=list)


def _record(obj: dict[str, Any], line_no: int) -> RequestRecord:
    missing = [f for f in RECORD_FIELDS if f not in obj]
    if missing:
        raise PlanError(f"agent output line {line_no}: request record lacks {', '.join(missing)}: {obj}")

    def typed(name: str, types: tuple[type, ...], nullable: bool) -> Any:
        value = obj[name]
        if value is None and nullable:
            return None
        if isinstance(value, bool) and bool not in types:
            raise PlanError(f"agent output line {line_no}: {name} must be {types}, got {value!r}")
        if not isinstance(value, types):
            raise PlanError(f"agent output line {line_no}: {name} must be {'null or ' if nullable else ''}"
                            f"{'/'.join(t.__name__ for t in types)}, got {value!r}")
        return value

    for name in ("start_ms", "end_ms"):
        value = obj[name]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not EPOCH_MS_FLOOR <= value:
            raise PlanError(f"agent output line {line_no}: {name} {value!r} is not a wall-clock time: the contract's "
                            "start_ms/end_ms are epoch milliseconds (e.g. Date.now(), System.currentTimeMillis(), "
                            "time.time()*1000), so they line up with the server's ledger")
    return RequestRecord(
        phase=typed("phase", (int,), False), i=typed("i", (int,), False),
        start_ms=float(typed("start_ms", (int, float), False)), end_ms=float(typed("end_ms", (int, float), False)),
        status=typed("status", (int,), True), error=typed("error", (str,), True),
        reused=typed("reused", (bool,), True), local_port=typed("local_port", (int,), True),
    )


def parse_agent_output(text: str) -> AgentOutput:
    """Split an agent's output into records, the end marker, an unsupported report and noise.

    A JSON object line that claims to be a record but breaks the contract raises ``PlanError``
    (the agent is wrong, and its numbers cannot be trusted); anything that is not a JSON object
    is noise.
    """
    out = AgentOutput()
    for line_no, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped.startswith("{"):
            if stripped:
                out.noise.append(line)
            continue
        try:
            obj = json.loads(stripped)
        except ValueError:
            out.noise.append(line)
            continue
        if not isinstance(obj, dict):
            out.noise.append(line)
        elif "unsupported" in obj:
            names = obj["unsupported"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise PlanError(f"agent output line {line_no}: unsupported must be a list of names, got {names!r}")
            out.unsupported = names
            detail = obj.get("detail") or {}
            out.detail = {str(k): str(v) for k, v in detail.items()} if isinstance(detail, dict) else {}
        elif obj.get("done") is True:
            out.done = True
        elif "phase" in obj or "i" in obj:
            out.records.append(_record(obj, line_no))
        else:
            out.noise.append(line)
    return out
