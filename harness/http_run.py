"""Harness side of the HTTP half: run one http-client agent to completion (SPEC §4.4) and read
the ``ledger`` http-server's connection ledger (SPEC §4.5).

``run_http_agent`` writes the plan (``harness.http_plan``: knobs and phases) into the case's
work folder and renders the manifest with two placeholders: ``{plan}`` (that file) and
``{url}`` (every URL, comma-joined: the agents take ``--url A,B`` as two targets, so one
placeholder serves PL-06's two hosts and a one-host run alike). The plan's knobs also go to
``render``: the manifest's ``[knobs]`` table turns them into flags, and a knob the manifest does
not declare is ``UnsupportedKnob`` before anything starts. The agent then runs with no readiness
(one-shot: ``start`` returns at once); the harness waits for it to exit within a bound and parses
its JSON lines. Exit 3 -> ``AgentUnsupported`` (an ``Unimplemented``: UNIMPLEMENTED, e.g. a
combination of knobs the library cannot express); any other failure -> ``SetupError`` with the
log tail.
"""

from __future__ import annotations

import http.client
import itertools
import json
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, SetupError, Unimplemented
from harness.http_plan import (
    EXIT_UNSUPPORTED,
    AgentOutput,
    Plan,
    PlanError,
    RequestRecord,
    parse_agent_output,
    parse_plan,
)
from harness.observe.history import History
from harness.peers import PeerManifest, render
from harness.ports import check_loopback
from harness.runtime.base import Runtime
from harness.wait import WaitTimeout, eventually

__all__ = ["AgentRun", "AgentUnsupported", "LedgerAdmin", "run_http_agent"]

LOG_TAIL_LINES = 40
ADMIN_TIMEOUT_S = 5.0
_run_ids = itertools.count(1)


class AgentUnsupported(Unimplemented):
    """The http-client agent reported knobs or ops its library does not have (exit 3)."""

    def __init__(self, peer: str, names: Sequence[str], detail: Mapping[str, str]) -> None:
        self.peer = peer
        self.names = list(names)
        self.detail = dict(detail)
        reasons = "; ".join(f"{n}: {self.detail[n]}" if n in self.detail else n for n in self.names)
        super().__init__(f"http-client {peer} does not support {', '.join(self.names)} ({reasons})")


@dataclass
class AgentRun:
    """One finished agent run: its records (in the order printed) and where its files are."""

    peer: str
    name: str
    plan: Plan
    plan_path: Path
    log_path: Path
    exit_code: int
    records: list[RequestRecord] = field(default_factory=list)
    noise: list[str] = field(default_factory=list)

    def phase(self, index: int) -> list[RequestRecord]:
        """The records of one phase, by request index."""
        return sorted((r for r in self.records if r.phase == index), key=lambda r: r.i)

    @property
    def failed(self) -> list[RequestRecord]:
        return [r for r in self.records if not r.ok]

    @property
    def local_ports(self) -> set[int]:
        return {r.local_port for r in self.records if r.local_port is not None}

    def span_ms(self, index: int) -> float:
        """From the first start to the last end of one phase (epoch ms difference)."""
        records = self.phase(index)
        if not records:
            return 0.0
        return max(r.end_ms for r in records) - min(r.start_ms for r in records)


def _as_plan(plan: Plan | Mapping[str, Any], urls: Sequence[str]) -> Plan:
    try:
        parsed = parse_plan(plan.to_json() if isinstance(plan, Plan) else dict(plan), url_count=len(urls))
    except PlanError as exc:
        raise HarnessError(f"bad http-client plan: {exc}") from None
    return parsed


def _check_urls(urls: Sequence[str]) -> list[str]:
    if not urls:
        raise HarnessError("run_http_agent needs at least one URL")
    for url in urls:
        if "," in url or not url.startswith("http://"):
            raise HarnessError(f"URL {url!r}: expected one http:// base URL (no commas)")
        host = urllib.parse.urlsplit(url).hostname or ""
        try:
            check_loopback(host)
        except ValueError as exc:
            raise HarnessError(f"URL {url!r}: {exc}") from None
    return list(urls)


def run_http_agent(
    runtime: Runtime,
    peer: PeerManifest,
    *,
    urls: Sequence[str],
    plan: Plan | Mapping[str, Any],
    workdir: Path,
    timeout_ms: int,
    name: str | None = None,
    history: History | None = None,
) -> AgentRun:
    """Run ``peer`` (an http-client manifest) once over ``plan`` against ``urls``; bounded by
    ``timeout_ms`` from start to exit."""
    if peer.role != "http-client":
        raise HarnessError(f"run_http_agent runs http-client peers; {peer.label} is a {peer.role}")
    urls = _check_urls(urls)
    full_plan = _as_plan(plan, urls)
    name = name or f"http-client-{peer.name}-{next(_run_ids)}"
    workdir = Path(workdir)
    plan_path = workdir / f"{name}.plan.json"
    log_path = workdir / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(json.dumps(full_plan.to_json(), indent=1))
    spec, readiness = render(peer, runtime=runtime.name, placeholders={"url": ",".join(urls), "plan": str(plan_path)},
                             knobs=full_plan.knobs, name=name, log_path=log_path)
    if history is not None:
        history.info("harness", "http_agent_started", {"name": name, "peer": peer.name, "urls": urls,
                                                        "plan": full_plan.to_json()})
    # The runtime appends to an existing log (a name reused across runs): read only this run's part.
    log_offset = log_path.stat().st_size if log_path.exists() else 0
    node = runtime.start(spec, readiness, timeout_ms=timeout_ms)
    try:
        eventually(lambda: not node.alive(), timeout_ms=timeout_ms, what=f"{name} to finish its plan",
                   interval_ms=20)
    except WaitTimeout:
        node.stop()
        raise SetupError(
            f"http-client agent {name} ({peer.label}) did not finish its plan within {timeout_ms} ms "
            f"(plan {plan_path}); it was stopped. Last log lines:\n{node.logs(LOG_TAIL_LINES)}\n"
            "what to do: raise the case's timeout if the plan is long, else the agent hangs"
        ) from None
    exit_code = node.stop()  # already exited: reaps it and returns its code
    output = _read_output(name, peer, log_path, log_offset, node.logs(LOG_TAIL_LINES))
    if exit_code == EXIT_UNSUPPORTED and output.unsupported is not None:
        if history is not None:
            history.info("harness", "http_agent_unsupported", {"name": name, "unsupported": output.unsupported})
        raise AgentUnsupported(peer.label, output.unsupported, output.detail)
    problem = None
    if exit_code != 0:
        problem = f"exited with code {exit_code}"
    elif not output.done:
        problem = 'exited 0 without printing {"done": true}'
    elif len(output.records) != full_plan.request_count:
        problem = f"printed {len(output.records)} request records; the plan has {full_plan.request_count} requests"
    if problem:
        raise SetupError(f"http-client agent {name} ({peer.label}) {problem} (plan {plan_path}). "
                         f"Last log lines:\n{node.logs(LOG_TAIL_LINES)}")
    run = AgentRun(peer=peer.label, name=name, plan=full_plan, plan_path=plan_path, log_path=log_path,
                   exit_code=exit_code or 0, records=output.records, noise=output.noise)
    if history is not None:
        history.info("harness", "http_agent_finished", {"name": name, "records": len(run.records),
                                                         "failed": len(run.failed)})
    return run


def _read_output(name: str, peer: PeerManifest, log_path: Path, offset: int, tail: str) -> AgentOutput:
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", errors="replace")
    except OSError as exc:
        raise SetupError(f"cannot read the output of http-client agent {name}: {exc}") from None
    try:
        return parse_agent_output(text)
    except PlanError as exc:
        raise SetupError(f"http-client agent {name} ({peer.label}) broke the output contract: {exc}. "
                         f"Last log lines:\n{tail}") from None


class LedgerAdmin:
    """Client of the ledger's admin API (``GET /_ledger``, ``POST /_ledger/reset``).

    Each call is one fresh connection with ``Connection: close``: the ledger classifies a
    connection whose first request is under ``/_ledger`` as admin and leaves it out of its counts.
    No proxy, loopback only.
    """

    def __init__(self, url: str, timeout_s: float = ADMIN_TIMEOUT_S) -> None:
        parsed = urllib.parse.urlsplit(url if "//" in url else f"http://{url}")
        if parsed.scheme != "http" or not parsed.hostname or not parsed.port:
            raise HarnessError(f"LedgerAdmin needs http://host:port, got {url!r}")
        self.host = check_loopback(parsed.hostname)
        self.port = parsed.port
        self.timeout_s = timeout_s

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _call(self, method: str, path: str) -> dict[str, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            conn.request(method, path, headers={"Connection": "close"})
            response = conn.getresponse()
            body = response.read()
        except OSError as exc:
            raise SetupError(f"ledger admin {method} {self.url}{path} failed: {exc!r}; is the ledger running?") from exc
        finally:
            conn.close()
        if response.status != 200:
            raise SetupError(f"ledger admin {method} {self.url}{path} answered {response.status}: {body[:200]!r}")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise SetupError(f"ledger admin {method} {self.url}{path}: not JSON: {body[:200]!r}") from exc

    def ledger(self) -> dict[str, Any]:
        """``{"connections": [...], "max_simultaneous", "max_served_simultaneous", "open", "queued",
        "now_ms", "config"}`` (see ``harness.reference.http.ledger``)."""
        return self._call("GET", "/_ledger")

    def connections(self) -> list[dict[str, Any]]:
        return self.ledger()["connections"]

    def reset(self) -> None:
        self._call("POST", "/_ledger/reset")
