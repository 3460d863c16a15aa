"""``connformance up --ui``: a local page that shows a chaos session as it happens, and lets the
operator apply and heal faults from it.

- ``Sampler`` reads every server (registered connections, its per-IP counter when it offers one)
  and every client (status, current server) with short timeouts, so a paused peer shows as "no
  answer" instead of stalling the view. Each sample is written to the history as
  ``observe live_view`` and its ``seq`` is the snapshot number the page shows: what the page says
  can be checked against the history.
- ``LiveView`` serves the page (127.0.0.1 only, an ephemeral port) and ``/state.json`` (the last
  sample, every fault window from the history, the checks now); ``POST /fault`` applies or heals
  a fault of the session's vocabulary on a target. UI faults are recorded like scheduled ones
  (plus an ``info ui`` record) and healed when the session ends.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from harness.control.agent import AgentControl
from harness.control.http import ControlError
from harness.errors import HarnessError
from harness.faults import Role, fault_class
from harness.faults.base import Fault
from harness.faults.registry import fault_from_spec
from harness.observe.history import History
from harness.topology import Topology

SAMPLE_INTERVAL_S = 1.0
_PEER_TIMEOUT_S = 0.5  # a paused peer must not stall a sample
_APPLY_KINDS = ("fault_begin", "fault")
_HEAL_KINDS = ("fault_end", "healed")


class Sampler:
    """One reading of every server and client of ``topology``, with short timeouts."""

    def __init__(self, topology: Topology) -> None:
        self.servers = [(f"server-{s.index}", s, s.new_admin(timeout_s=_PEER_TIMEOUT_S)) for s in topology.servers]
        self.clients = [(f"client-{i}", c, AgentControl(c.control_port, timeout_s=_PEER_TIMEOUT_S))
                        for i, c in enumerate(topology.clients)]

    def sample(self) -> dict[str, Any]:
        addresses = {server.main_address: name for name, server, _ in self.servers}
        servers = []
        for name, server, admin in self.servers:
            row: dict[str, Any] = {"name": name, "address": server.main_address, "registered": None, "ip_counts": None}
            try:
                row["registered"] = len(admin.current())
                if server.peer.has_capability("client_ip_counts"):
                    row["ip_counts"] = {str(k): int(v) for k, v in admin.client_ip_counts().items() if int(v)}
            except (ControlError, OSError, ValueError):
                pass  # no answer: shown as such
            servers.append(row)
        clients = []
        for name, client, control in self.clients:
            row = {"name": name, "status": "dead", "server": None}
            if client.node.alive():
                try:
                    state = control.state()
                    row.update(status=state.get("status"), server=addresses.get(state.get("server"), state.get("server")))
                except (ControlError, OSError, ValueError):
                    row["status"] = None
            clients.append(row)
        return {"servers": servers, "clients": clients}

    def close(self) -> None:
        for _, _, admin in self.servers:
            admin.close()
        for _, _, control in self.clients:
            control.close()


def checks_now(sample: dict[str, Any]) -> list[dict[str, str]]:
    """The session's checks as they stand in one sample (they may fail while a fault is on)."""
    running = [c for c in sample["clients"] if c["status"] == "RUNNING"]
    answered = [s for s in sample["servers"] if s["registered"] is not None]
    registered = sum(s["registered"] for s in answered)
    checks = [{"name": "membership", "status": "OK" if len(answered) == len(sample["servers"]) and registered == len(running)
               else "FAILED", "summary": f"{registered} registered, {len(running)} live client(s) RUNNING"
               + ("" if len(answered) == len(sample["servers"]) else "; a server did not answer")}]
    counted = [s for s in answered if s["ip_counts"] is not None]
    if counted:
        drift = [s["name"] for s in counted if sum(s["ip_counts"].values()) != s["registered"]]
        checks.append({"name": "per-IP counts", "status": "FAILED" if drift else "OK",
                       "summary": f"counter != registrations on {drift}" if drift else "each server's counter sums to its registrations"})
    return checks


def fault_windows(history: History) -> list[dict[str, Any]]:
    """Every fault of the history as a window: kind, target, from, to (None while it is on)."""
    windows: list[dict[str, Any]] = []
    open_: dict[tuple[str, str], dict[str, Any]] = {}
    for event in history.events((*_APPLY_KINDS, *_HEAL_KINDS)):
        if "fault" not in event or event.get("error"):
            continue
        key = (str(event["fault"]), str(event.get("label") or event.get("target")))
        if event["kind"] in _APPLY_KINDS and key not in open_:
            open_[key] = {"fault": key[0], "target": key[1], "from_ms": round(event["t_ms"]), "to_ms": None}
            windows.append(open_[key])
        elif event["kind"] in _HEAL_KINDS and key in open_:
            open_.pop(key)["to_ms"] = round(event["t_ms"])
    return windows


class LiveView:
    """The page and its API over one session; ``start()`` returns its URL, ``stop()`` heals every
    fault applied from the page and shuts the server down."""

    def __init__(self, topology: Topology, history: History, resolve: Callable[[str, Role], Any], *,
                 kinds: Sequence[str], targets: Sequence[str], echo: Callable[[str], None]) -> None:
        self.topology, self.history, self.resolve = topology, history, resolve
        self.kinds, self.targets, self.echo = list(kinds), list(targets), echo
        self.sampler = Sampler(topology)
        self.final_checks: list[dict[str, str]] | None = None  # the session's own, once judged
        self._lock = threading.Lock()
        self._fault_lock = threading.Lock()
        self._last: dict[str, Any] = {"seq": None, "t_ms": 0, "servers": [], "clients": []}
        self._ui_faults: dict[tuple[str, str], Fault] = {}
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._threads = [threading.Thread(target=self._server.serve_forever, name="connformance-ui", daemon=True),
                         threading.Thread(target=self._sample_loop, name="connformance-ui-sampler", daemon=True)]

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> str:
        self.take_sample()
        for thread in self._threads:
            thread.start()
        return self.url

    def take_sample(self) -> dict[str, Any]:
        sample = self.sampler.sample()
        event = self.history.observe("live_view", sample)
        with self._lock:
            self._last = {**sample, "seq": event["seq"], "t_ms": round(event["t_ms"])}
            return dict(self._last)

    def _sample_loop(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):  # a refresh timer, bounded by stop()
            self.take_sample()

    def state(self) -> dict[str, Any]:
        with self._lock:
            last = dict(self._last)
        return {"snapshot": last, "now_ms": round(self.history.elapsed_ms()), "faults": fault_windows(self.history),
                "checks": self.final_checks or checks_now(last), "checks_final": self.final_checks is not None,
                "kinds": self.kinds, "targets": self.targets,
                "ui_faults": [{"fault": k, "target": t} for k, t in list(self._ui_faults)]}

    def act(self, action: str, kind: str, target: str) -> str:
        """Apply or heal ``kind`` on ``target`` from the page; returns what happened, in words."""
        if kind not in self.kinds or target not in self.targets or action not in ("apply", "heal"):
            raise HarnessError(f"{action} {kind} on {target}: expected apply|heal, a fault of {self.kinds} "
                               f"and a target of {self.targets}")
        key = (kind, target)
        with self._fault_lock:  # not the sample lock: a slow apply must not stall the page
            if action == "apply":
                if key in self._ui_faults:
                    return f"{kind} on {target} is already on"
                fault = fault_from_spec(kind, self.resolve(target, fault_class(kind).ROLE), history=self.history,
                                        label=target)
                self.history.info("ui", "apply", {"fault": kind, "target": target})
                fault.apply()
                self._ui_faults[key] = fault
                return f"applied {kind} on {target}"
            fault = self._ui_faults.pop(key, None)
            if fault is None:
                return f"{kind} on {target} was not applied from this page"
            self.history.info("ui", "heal", {"fault": kind, "target": target})
            fault.heal()
            return f"healed {kind} on {target}"

    def heal_all(self) -> list[str]:
        """Heal every fault applied from the page (the session is ending); returns the failures."""
        failures = []
        with self._fault_lock:
            for (kind, target), fault in list(self._ui_faults.items()):
                try:
                    fault.heal()
                except Exception as exc:  # noqa: BLE001 - heal the rest, report every failure
                    failures.append(f"{kind} on {target}: {exc!r}")
            self._ui_faults.clear()
        return failures

    def stop(self) -> list[str]:
        self._stop.set()
        failures = self.heal_all()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self.sampler.close()
        return failures


def _handler(view: LiveView) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass  # the session's output is its own lines, not an access log

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path in ("/", "/index.html"):
                self._send(200, PAGE.encode(), "text/html; charset=utf-8")
            elif self.path == "/state.json":
                self._send(200, json.dumps(view.state()).encode(), "application/json")
            else:
                self._send(404, b"not found: / and /state.json\n", "text/plain")

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/fault":
                self._send(404, b"not found: POST /fault\n", "text/plain")
                return
            try:
                length = min(int(self.headers.get("Content-Length") or 0), 4096)
                body = json.loads(self.rfile.read(length) or b"{}")
                message = view.act(str(body.get("action")), str(body.get("fault")), str(body.get("target")))
                view.echo(f"[ui] {message}")
                self._send(200, json.dumps({"ok": True, "message": message}).encode(), "application/json")
            except (HarnessError, ValueError) as exc:
                self._send(400, json.dumps({"ok": False, "message": str(exc)}).encode(), "application/json")
            except Exception as exc:  # noqa: BLE001 - the page shows it; the session goes on
                self._send(500, json.dumps({"ok": False, "message": repr(exc)}).encode(), "application/json")

    return Handler


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>connformance up — live</title>
<style>
body{font:14px system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:18px;margin:0 0 8px} h2{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
.OK{color:#075} .FAILED{color:#b00;font-weight:bold} .muted{color:#777}
svg{border:1px solid #ccc;background:#fafafa} form *{margin-right:6px}
</style></head>
<body data-snapshot-seq="">
<h1>connformance up — live view</h1>
<div class="muted">snapshot <span id="seq">-</span> at +<span id="t">-</span> ms (history time); refreshes every second</div>
<h2>Servers</h2><table id="servers"><thead><tr><th>server</th><th>address</th><th>registered</th><th>per-IP counts</th></tr></thead><tbody></tbody></table>
<h2>Clients</h2><table id="clients"><thead><tr><th>client</th><th>status</th><th>server</th></tr></thead><tbody></tbody></table>
<h2>Faults</h2><svg id="timeline" width="900" height="60"></svg>
<form id="act"><select id="kind"></select><select id="target"></select>
<button type="button" data-action="apply">apply</button><button type="button" data-action="heal">heal</button>
<span id="message" class="muted"></span></form>
<h2>Checks <span id="checks-when" class="muted"></span></h2><ul id="checks"></ul>
<script>
const esc = s => String(s ?? "").replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
let filled = false;
function fillForm(st) {
  if (filled) return; filled = true;
  document.getElementById("kind").innerHTML = st.kinds.map(k => `<option>${esc(k)}</option>`).join("");
  document.getElementById("target").innerHTML = st.targets.map(t => `<option>${esc(t)}</option>`).join("");
}
function drawTimeline(st) {
  const svg = document.getElementById("timeline"), lanes = st.targets, w = 900, left = 80;
  const span = Math.max(st.now_ms, 1000), x = t => left + (w - left - 10) * t / span;
  svg.setAttribute("height", 20 + 18 * lanes.length);
  let out = lanes.map((t, i) => `<text x="4" y="${28 + 18 * i}" font-size="11">${esc(t)}</text>`).join("");
  for (const f of st.faults) {
    const i = lanes.indexOf(f.target); if (i < 0) continue;
    const a = x(f.from_ms), b = x(f.to_ms ?? st.now_ms);
    out += `<rect class="fault" data-fault="${esc(f.fault)}" data-target="${esc(f.target)}" x="${a}" y="${16 + 18 * i}" `
         + `width="${Math.max(2, b - a)}" height="14" fill="${f.to_ms === null ? "#e55" : "#f4a6a6"}">`
         + `<title>${esc(f.fault)} ${esc(f.target)} ${f.from_ms}..${f.to_ms ?? "now"} ms</title></rect>`;
  }
  out += `<text x="${left}" y="12" font-size="10">0 ms</text><text x="${w - 70}" y="12" font-size="10">${st.now_ms} ms</text>`;
  svg.innerHTML = out;
}
function render(st) {
  const s = st.snapshot;
  document.body.dataset.snapshotSeq = s.seq;
  document.getElementById("seq").textContent = s.seq;
  document.getElementById("t").textContent = s.t_ms;
  document.querySelector("#servers tbody").innerHTML = s.servers.map(v =>
    `<tr data-server="${esc(v.name)}"><td>${esc(v.name)}</td><td>${esc(v.address)}</td>`
    + `<td class="registered">${v.registered ?? "no answer"}</td>`
    + `<td class="ip-counts">${v.ip_counts ? esc(JSON.stringify(v.ip_counts)) : "-"}</td></tr>`).join("");
  document.querySelector("#clients tbody").innerHTML = s.clients.map(c =>
    `<tr data-client="${esc(c.name)}"><td>${esc(c.name)}</td><td class="status">${esc(c.status ?? "no answer")}</td>`
    + `<td class="server">${esc(c.server ?? "-")}</td></tr>`).join("");
  document.getElementById("checks-when").textContent = st.checks_final ? "(after healing)" : "(now)";
  document.getElementById("checks").innerHTML = st.checks.map(c =>
    `<li data-check="${esc(c.name)}"><span class="${esc(c.status)}">${esc(c.status)}</span> ${esc(c.name)}: ${esc(c.summary)}</li>`).join("");
  fillForm(st); drawTimeline(st);
}
async function refresh() {
  try { render(await (await fetch("/state.json")).json()); }
  catch (e) { document.getElementById("message").textContent = "session ended or not answering"; }
}
document.querySelectorAll("#act button").forEach(b => b.addEventListener("click", async () => {
  const body = {action: b.dataset.action, fault: document.getElementById("kind").value,
                target: document.getElementById("target").value};
  const r = await fetch("/fault", {method: "POST", body: JSON.stringify(body)});
  document.getElementById("message").textContent = (await r.json()).message; refresh();
}));
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""
