"""Instance-scoped client for the Toxiproxy HTTP API (v2.12.0, research §A2).

Why not toxiproxy-python 0.1.1's objects (research §A5): every one of its calls goes through
class-level ``APIConsumer.host/port`` (one server per process) and plain ``requests.get/post``
with no timeout, so a hung server hangs the test; it has no PATCH (no toxic update), its
``populate`` churns proxies, it re-lists all proxies before each create and it silently returns
500/403/503 responses. So all HTTP here goes through our own ``requests.Session`` with timeouts;
from the package we keep only its exception types, which our 404/409/400 errors also inherit,
so code written against toxiproxy-python still catches them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from harness import __version__
from harness.errors import HarnessError
from harness.ports import check_loopback
from harness.toxiproxy.errors import (
    ERROR_BY_STATUS,
    BadRequest,
    Conflict,
    NotFound,
    ToxiproxyError,
    ToxiproxyUnavailable,
    hint_for,
)
from harness.toxiproxy.toxics import Toxic, toxic_from_api
from harness.wait import now_ms

__all__ = [
    "BadRequest",
    "Conflict",
    "EventCallback",
    "NotFound",
    "Proxy",
    "ToxiproxyClient",
    "ToxiproxyError",
    "ToxiproxyUnavailable",
]

EventCallback = Callable[[dict[str, Any]], None]

# Removing/updating a toxic, disabling or deleting a proxy and /reset close or flush live links;
# the server gives each link up to 5 s to flush and answers 503 after its 25 s handler timeout,
# so these calls get a longer read timeout than the caller's default.
_SLOW_CALL_TIMEOUT_S = 30.0


def _split_hostport(addr: str, what: str, *, namespaced: bool = False) -> tuple[str, int]:
    """``namespaced``: an upstream may live in a namespace the harness made (198.18.0.0/15)."""
    host, sep, port_s = addr.rpartition(":")
    if not sep or not host or not port_s.isdecimal() or not 0 <= int(port_s) <= 65535:
        raise HarnessError(f"{what} must be 'host:port' on 127.0.0.0/8 (e.g. '127.0.0.1:0'), got {addr!r}")
    try:
        check_loopback(host, namespaced=namespaced)
    except ValueError as exc:
        raise HarnessError(f"{what} {addr!r}: {exc}") from None
    return host, int(port_s)


def normalise_toxiproxy_url(url: str) -> str:
    """``http://<loopback literal>:<port>``, or HarnessError saying what is wrong with ``url``."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise HarnessError(f"Toxiproxy URL {url!r}: the port must be 1..65535") from None
    if parts.scheme != "http" or not parts.hostname or port is None or port == 0:
        raise HarnessError(f"Toxiproxy URL must look like http://127.0.0.1:8474, got {url!r}")
    try:
        host = check_loopback(parts.hostname)
    except ValueError as exc:
        raise HarnessError(f"Toxiproxy URL {url!r}: {exc}") from None
    return f"http://{host}:{port}"


class ToxiproxyClient:
    """One Toxiproxy server's API. Thread-safe enough for fixtures and fault schedulers.

    ``on_event(cb)`` registers a callback that receives every fault applied or healed through
    this client or any ``Proxy`` it returned (see ``Proxy._emit`` for the event shape).
    """

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = normalise_toxiproxy_url(url)
        self.timeout_s = timeout_s
        self._slow_timeout_s = max(timeout_s, _SLOW_CALL_TIMEOUT_S)
        self._session = requests.Session()
        self._session.trust_env = False  # never route loopback API calls through an HTTP(S)_PROXY
        self._session.headers.update(
            {"User-Agent": f"connformance/{__version__}", "Accept": "application/json"}
        )
        self._listeners: list[EventCallback] = []
        self._listeners_lock = threading.Lock()

    # -- plumbing -----------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        expect: tuple[int, ...] = (200,),
        proxy: str | None = None,
        toxic: str | None = None,
        slow: bool = False,
    ) -> Any:
        timeout = (self.timeout_s, self._slow_timeout_s if slow else self.timeout_s)
        ctx: dict[str, Any] = {
            "url": self.url,
            "method": method,
            "path": path,
            "proxy": proxy,
            "toxic": toxic,
        }
        try:
            resp = self._session.request(method, self.url + path, json=body, timeout=timeout)
        except requests.Timeout as exc:
            raise ToxiproxyUnavailable(
                f"no answer within {timeout[1]:.1f} s ({type(exc).__name__})",
                hint="is the server stuck? see its log",
                **ctx,
            ) from exc
        except requests.ConnectionError as exc:
            raise ToxiproxyUnavailable(
                f"cannot connect ({exc.__class__.__name__}: {exc})",
                hint="start it with ToxiproxyServer, or check the URL given to --toxiproxy-url",
                **ctx,
            ) from exc
        if resp.status_code in expect:
            if resp.status_code == 204 or not resp.content:
                return None
            return _parse_body(resp.text)
        # Errors come as JSON {"error", "status"} but with a text/plain content type (http.Error).
        parsed = _parse_body(resp.text)
        if isinstance(parsed, Mapping) and "error" in parsed:
            text = str(parsed["error"])
        else:
            text = resp.text.strip()[:500] or "(empty body)"
        cls = ERROR_BY_STATUS.get(resp.status_code, ToxiproxyError)
        raise cls(
            f"expected HTTP {'/'.join(map(str, expect))}, got HTTP {resp.status_code}: {text!r}",
            status=resp.status_code,
            error_text=text,
            hint=hint_for(resp.status_code, text, proxy, toxic),
            **ctx,
        )

    def on_event(self, callback: EventCallback) -> EventCallback:
        """Call ``callback(event)`` for every fault applied/healed; returns it (usable as decorator)."""
        with self._listeners_lock:
            self._listeners.append(callback)
        return callback

    def _emit(self, event: dict[str, Any], extra: Sequence[EventCallback] = ()) -> None:
        with self._listeners_lock:
            listeners = [*extra, *self._listeners]
        for cb in listeners:
            cb(dict(event))

    # -- API ----------------------------------------------------------------------------------

    def version(self) -> str:
        """Server version; a `go install` build answers "git" (no ldflags)."""
        body = self._request("GET", "/version")
        if isinstance(body, Mapping):
            return str(body.get("version"))
        return str(body).strip()  # before 2.7.0 the body was plain text

    def proxies(self) -> dict[str, Proxy]:
        data = self._request("GET", "/proxies") or {}
        return {name: Proxy(self, obj) for name, obj in data.items()}

    def get_proxy(self, name: str) -> Proxy:
        return Proxy(self, self._request("GET", f"/proxies/{quote(name, safe='')}", proxy=name))

    def create_proxy(
        self, name: str, upstream: str, listen: str = "127.0.0.1:0", enabled: bool = True
    ) -> Proxy:
        """Create a proxy; ``listen`` port 0 lets the server pick (read ``proxy.listen_port``).

        Toxiproxy does not dial ``upstream`` here: a dead upstream shows up as an immediate
        close of each accepted client connection.
        """
        _split_hostport(listen, "listen")
        _split_hostport(upstream, "upstream", namespaced=True)
        t0 = now_ms()
        data = self._request(
            "POST",
            "/proxies",
            body={"name": name, "upstream": upstream, "listen": listen, "enabled": enabled},
            expect=(201,),
            proxy=name,
        )
        proxy = Proxy(self, data)
        proxy._emit(
            "proxy_created", t0, attributes={"listen": proxy.listen, "upstream": upstream, "enabled": enabled}
        )
        return proxy

    def reset(self) -> None:
        """POST /reset: re-enable every proxy and remove every toxic; proxies stay."""
        t0 = now_ms()
        self._request("POST", "/reset", expect=(204,), slow=True)
        self._emit(
            {
                "kind": "fault",
                "action": "reset",
                "proxy": None,
                "toxic": None,
                "attributes": None,
                "t_start_ms": t0,
                "t_ms": now_ms(),
            }
        )

    def delete_all(self) -> None:
        """Delete every proxy (closing its connections)."""
        for proxy in self.proxies().values():
            proxy.delete(missing_ok=True)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> ToxiproxyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ToxiproxyClient({self.url!r})"


def _parse_body(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class Proxy:
    """A proxy on a Toxiproxy server. State fields reflect the last API answer."""

    def __init__(self, client: ToxiproxyClient, data: Mapping[str, Any]) -> None:
        self._client = client
        self._listeners: list[EventCallback] = []
        self._added: dict[str, Toxic] = {}  # toxics added through this object, for event details
        self._update(data)

    def _update(self, data: Mapping[str, Any]) -> None:
        self.name: str = data["name"]
        self.listen: str = data["listen"]
        self.upstream: str = data["upstream"]
        self.enabled: bool = bool(data.get("enabled", True))

    @property
    def _path(self) -> str:
        return f"/proxies/{quote(self.name, safe='')}"

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def on_event(self, callback: EventCallback) -> EventCallback:
        """Like ``ToxiproxyClient.on_event`` but for this proxy object only."""
        self._listeners.append(callback)
        return callback

    def _emit(
        self,
        action: str,
        t_start_ms: float,
        *,
        toxic: Toxic | str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        """Event shape: kind "fault", action, proxy, toxic (name), type, stream, toxicity,
        attributes (unit-named fields, e.g. {"latency_ms": 200}), t_start_ms/t_ms (monotonic ms
        when the API call started/returned: the fault took effect in between)."""
        event: dict[str, Any] = {
            "kind": "fault",
            "action": action,
            "proxy": self.name,
            "toxic": None,
            "attributes": attributes,
        }
        if isinstance(toxic, Toxic):
            event.update(
                toxic=toxic.toxic_name,
                type=toxic.TYPE,
                stream=toxic.stream,
                toxicity=toxic.toxicity,
                attributes={f: getattr(toxic, f) for f in toxic.ATTRIBUTES},
            )
        elif toxic is not None:
            event["toxic"] = toxic
        event.update(t_start_ms=t_start_ms, t_ms=now_ms())
        self._client._emit(event, self._listeners)

    def refresh(self) -> Proxy:
        self._update(self._client._request("GET", self._path, proxy=self.name))
        return self

    def _set_enabled(self, enabled: bool) -> None:
        t0 = now_ms()
        # PATCH keeps listen/upstream when omitted; disabling closes every live connection.
        data = self._client._request(
            "PATCH", self._path, body={"enabled": enabled}, proxy=self.name, slow=True
        )
        self._update(data)
        self._emit("proxy_up" if enabled else "proxy_down", t0)

    def enable(self) -> None:
        self._set_enabled(True)

    def disable(self) -> None:
        """Close the listener (new connects: ECONNREFUSED) and every live connection."""
        self._set_enabled(False)

    def delete(self, *, missing_ok: bool = False) -> None:
        t0 = now_ms()
        try:
            self._client._request("DELETE", self._path, expect=(204,), proxy=self.name, slow=True)
        except NotFound:
            if not missing_ok:
                raise
            return
        self._emit("proxy_deleted", t0)

    def toxics(self) -> dict[str, Toxic]:
        data = self._client._request("GET", f"{self._path}/toxics", proxy=self.name) or []
        return {t["name"]: toxic_from_api(t) for t in data}

    def get_toxic(self, name: str) -> Toxic:
        return toxic_from_api(
            self._client._request(
                "GET", f"{self._path}/toxics/{quote(name, safe='')}", proxy=self.name, toxic=name
            )
        )

    def add_toxic(self, toxic: Toxic) -> str:
        """Install ``toxic``; it applies to live connections too. Returns its server-side name."""
        if not isinstance(toxic, Toxic):
            raise HarnessError(f"add_toxic expects a Toxic (e.g. LatencyToxic(latency_ms=200)), got {toxic!r}")
        t0 = now_ms()
        data = self._client._request(
            "POST", f"{self._path}/toxics", body=toxic.to_api(), proxy=self.name, toxic=toxic.toxic_name
        )
        name = data["name"]
        self._added[name] = toxic
        self._emit("toxic_added", t0, toxic=toxic)
        return name

    def update_toxic(
        self, name: str, toxic_or_attrs: Toxic | Mapping[str, int], toxicity: float | None = None
    ) -> Toxic:
        """PATCH toxic ``name`` in place (live connections see it at once; toxicity is re-rolled).

        ``toxic_or_attrs`` is a toxic of the same type and stream, or a dict of its unit-named
        fields, e.g. ``{"latency_ms": 500}``. Returns the toxic as the server now has it.
        """
        current = self.get_toxic(name)
        if isinstance(toxic_or_attrs, Toxic):
            new = toxic_or_attrs
            if (new.TYPE, new.stream) != (current.TYPE, current.stream):
                raise HarnessError(
                    f"cannot update toxic {name!r} on proxy {self.name!r}: it is {current.TYPE}/{current.stream}, "
                    f"the new value is {new.TYPE}/{new.stream}; Toxiproxy cannot change type or stream, "
                    "remove it and add a new one"
                )
            body: dict[str, Any] = {
                "attributes": new.attributes(),
                "toxicity": float(new.toxicity if toxicity is None else toxicity),
            }
        else:
            allowed = set(current.ATTRIBUTES)
            unknown = set(toxic_or_attrs) - allowed
            if unknown:
                raise HarnessError(
                    f"toxic {name!r} ({current.TYPE}) on proxy {self.name!r} has no attribute(s) {sorted(unknown)}; "
                    f"expected some of {sorted(allowed)}"
                )
            new = current.with_fields(**toxic_or_attrs)  # validates values like a new toxic
            body = {"attributes": new.attributes()}
            if toxicity is not None:
                body["toxicity"] = float(toxicity)
        t0 = now_ms()
        data = self._client._request(
            "PATCH",
            f"{self._path}/toxics/{quote(name, safe='')}",
            body=body,
            proxy=self.name,
            toxic=name,
            slow=True,
        )
        updated = toxic_from_api(data)
        self._added[name] = updated
        self._emit("toxic_updated", t0, toxic=updated)
        return updated

    def remove_toxic(self, name: str, *, missing_ok: bool = False) -> None:
        """Remove toxic ``name``. Note: removing a ``timeout`` toxic closes the connections it held."""
        t0 = now_ms()
        try:
            self._client._request(
                "DELETE",
                f"{self._path}/toxics/{quote(name, safe='')}",
                expect=(204,),
                proxy=self.name,
                toxic=name,
                slow=True,
            )
        except NotFound:
            if not missing_ok:
                raise
            return
        self._emit("toxic_removed", t0, toxic=self._added.pop(name, name))

    @contextmanager
    def toxic(self, toxic: Toxic) -> Iterator[str]:
        """``with proxy.toxic(LatencyToxic(latency_ms=200)) as name:`` — always removed on exit
        (tolerating a toxic already removed by /reset or a deleted proxy)."""
        name = self.add_toxic(toxic)
        try:
            yield name
        finally:
            self.remove_toxic(name, missing_ok=True)

    @contextmanager
    def down(self) -> Iterator[Proxy]:
        """Disable the proxy for the block, re-enable on exit (unless it was deleted meanwhile)."""
        self.disable()
        try:
            yield self
        finally:
            try:
                self.enable()
            except NotFound:
                pass

    def __repr__(self) -> str:
        state = "enabled" if self.enabled else "disabled"
        return f"Proxy({self.name!r}, listen={self.listen!r}, upstream={self.upstream!r}, {state})"
