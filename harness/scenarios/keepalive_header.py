"""Does a client act on a server's ``Keep-Alive: timeout=N`` (PL-17)? The same plan against a
ledger that announces the header and against one that does not; what the header changed is the
answer (``effect``), so a stack's own idle handling is never mistaken for reading the header."""

from __future__ import annotations

from typing import Any

from harness.peers import PeerManifest
from harness.scenarios.bounds import AGENT_RUN_SLACK_MS, TOLERANCE_MS
from harness.scenarios.pools import LEDGER_QUIET_KEEPALIVE_MS, require_baseline, serving

PATH = "/?pl17=keep-alive-timeout"


def idle_then_next(topology, ledger: PeerManifest, client_peer: PeerManifest, header: str | None, *,
                   window_ms: int) -> dict[str, Any]:
    """One GET, ``window_ms`` idle, one GET against a ledger that keeps idle connections 30 s itself
    and announces ``header`` (None: no Keep-Alive header): who closed the first connection, when
    after its response, and whether the second GET reused it."""
    knobs = {"keepalive_timeout_ms": LEDGER_QUIET_KEEPALIVE_MS, **({"keepalive_header": header} if header else {})}
    (srv,) = topology.http_servers(1, peer=ledger, knobs=knobs)
    get = {"op": "sequential", "n": 1, "path": PATH}
    run = topology.run_http_client(peer=client_peer, servers=[srv], plan={
        "knobs": {}, "phases": [get, {"op": "sleep", "ms": window_ms}, get]}, timeout_ms=window_ms + AGENT_RUN_SLACK_MS)
    require_baseline(run, phase=0, what="the first GET")
    require_baseline(run, phase=2, what="the GET after the idle window")
    first = min(serving(srv.ledger.ledger(), PATH), key=lambda c: c["opened_ms"])
    return {"header": header or "none", "reused by the next GET": first["requests"] > 1,
            "closed by": first["closed_by"],
            "closed after its response ms": None if first["closed_ms"] is None
            else round(first["closed_ms"] - run.phase(0)[0].end_ms),
            "closed before the next GET": first["closed_ms"] is not None
            and first["closed_ms"] < run.phase(2)[0].start_ms}


def effect(with_header: dict[str, Any], without: dict[str, Any]) -> str:
    """What the header changed between the two runs (a difference is the only evidence it was read)."""
    if with_header["reused by the next GET"] and without["reused by the next GET"]:
        return "ignores it: the idle connection outlived the window and was reused, as without the header"
    if with_header["reused by the next GET"]:
        return ("ignores it, and closes differently without it: reused with the header, "
                f"closed by the {without['closed by']} without")
    if without["reused by the next GET"] or (
            with_header["closed before the next GET"] and not without["closed before the next GET"]):
        when = "" if with_header["closed before the next GET"] else ", when the next GET came (lazily)"
        return (f"honours it: closed by the {with_header['closed by']} "
                f"{with_header['closed after its response ms']} ms after its response{when} "
                f"(without the header: {'reused' if without['reused by the next GET'] else 'closed at the next GET'})")
    if with_header["closed before the next GET"] and without["closed before the next GET"] and \
            without["closed after its response ms"] - with_header["closed after its response ms"] > TOLERANCE_MS:
        return (f"honours it: closed {with_header['closed after its response ms']} ms after its response, "
                f"{without['closed after its response ms']} ms without the header")
    return ("cannot tell: its own idle handling closed the connection the same way without the header "
            f"({with_header['closed after its response ms']} vs {without['closed after its response ms']} ms)")
