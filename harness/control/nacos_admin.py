"""Client of a nacos-server peer's admin HTTP API (SPEC §4.2): the loader endpoints and the
harness extensions (``events``, ``clientIpCounts``, ``pushes``, ``transports``)."""

from __future__ import annotations

from typing import Any

from harness.control.http import ControlError, JsonHttp
from harness.errors import Unimplemented

LOADER = "/nacos/v2/core/loader"


class NacosAdmin:
    """``current_path``/``current_shape``: a server without the loader API lists its
    registrations elsewhere (its manifest's ``[admin]``); ``"ids"`` is ``{"list": [ids]}``, read
    as ``{id: {}}`` (no metadata)."""

    def __init__(self, main_address: str, *, timeout_s: float = 5.0, current_path: str | None = None,
                 current_shape: str = "loader") -> None:
        self.main_address = main_address
        self._http = JsonHttp(f"http://{main_address}", timeout_s=timeout_s)
        self._current_path = current_path or f"{LOADER}/current"
        self._current_shape = current_shape

    def current(self) -> dict[str, dict[str, Any]]:
        """``current``: registered connections keyed by connectionId."""
        data = self._http.json_of(self._http.get_raw(self._current_path))
        if self._current_shape == "ids":
            ids = data.get("list") if isinstance(data, dict) else None
            if not isinstance(ids, list):
                raise ControlError(f"{self.main_address} {self._current_path}: expected {{\"list\": [ids]}}, got {data!r:.200}")
            return {str(cid): {} for cid in ids}
        if not isinstance(data, dict):
            raise ControlError(f"{self.main_address} current: expected a JSON object, got {type(data).__name__}")
        return data

    def reload_client(self, connection_id: str, redirect_address: str | None = None) -> str:
        params = {"connectionId": connection_id}
        if redirect_address:
            params["redirectAddress"] = redirect_address
        # loadSingle waits up to 3 s for the client's answer.
        return self._http.get_raw(f"{LOADER}/reloadClient", params, timeout_s=10).text

    def reload_current(self, count: int, redirect_address: str | None = None) -> str:
        params: dict[str, Any] = {"count": count}
        if redirect_address:
            params["redirectAddress"] = redirect_address
        return self._http.get_raw(f"{LOADER}/reloadCurrent", params).text

    def smart_reload_cluster(self, loader_factor: float | None = None) -> str:
        params = {} if loader_factor is None else {"loaderFactor": loader_factor}
        return self._http.get_raw(f"{LOADER}/smartReloadCluster", params, timeout_s=15).text

    def cluster(self) -> dict[str, Any]:
        return self._http.json_of(self._http.get_raw(f"{LOADER}/cluster"))

    # -- harness extensions ----------------------------------------------------------------
    # A server without an extension answers 404: the checks that need it are UNIMPLEMENTED for
    # that peer (SPEC §4.2), the rest of the case still ran.
    def _extension(self, name: str, params: dict[str, Any] | None = None) -> Any:
        resp = self._http.get_raw(f"{LOADER}/{name}", params)
        if resp.status_code == 404:
            raise Unimplemented(f"server {self.main_address} has no `{name}` extension (GET {LOADER}/{name} -> 404)")
        return self._http.json_of(resp)

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        """Listener notifications ``{seq, t_ms, event, connectionId, clientIp}`` (capability ``events``)."""
        return self._extension("events", {"since": since})

    def client_ip_counts(self) -> dict[str, int]:
        """The server's per-client-IP counter (capability ``client_ip_counts``)."""
        return self._extension("clientIpCounts")

    def pushes(self, since: int = 0) -> list[dict[str, Any]]:
        """Server pushes and their answers (capability ``pushes``)."""
        return self._extension("pushes", {"since": since})

    def transports(self) -> list[dict[str, Any]]:
        """Open transports, registered or not (capability ``transports``)."""
        return self._extension("transports")

    def close(self) -> None:
        self._http.close()
