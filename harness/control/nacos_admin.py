"""Client of a nacos-server peer's admin HTTP API (SPEC §4.2): the loader endpoints and the
harness extensions (``events``, ``clientIpCounts``, ``pushes``, ``transports``)."""

from __future__ import annotations

from typing import Any

from harness.control.http import ControlError, JsonHttp

LOADER = "/nacos/v2/core/loader"


class NacosAdmin:
    def __init__(self, main_address: str, *, timeout_s: float = 5.0) -> None:
        self.main_address = main_address
        self._http = JsonHttp(f"http://{main_address}", timeout_s=timeout_s)

    def current(self) -> dict[str, dict[str, Any]]:
        """``current``: registered connections keyed by connectionId."""
        data = self._http.json_of(self._http.get_raw(f"{LOADER}/current"))
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

    # -- harness extensions (capabilities) -------------------------------------------------
    def events(self, since: int = 0) -> list[dict[str, Any]]:
        return self._http.json_of(self._http.get_raw(f"{LOADER}/events", {"since": since}))

    def client_ip_counts(self) -> dict[str, int]:
        return self._http.json_of(self._http.get_raw(f"{LOADER}/clientIpCounts"))

    def pushes(self, since: int = 0) -> list[dict[str, Any]]:
        return self._http.json_of(self._http.get_raw(f"{LOADER}/pushes", {"since": since}))

    def transports(self) -> list[dict[str, Any]]:
        return self._http.json_of(self._http.get_raw(f"{LOADER}/transports"))

    def close(self) -> None:
        self._http.close()
