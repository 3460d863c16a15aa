"""Client of the nacos-client agent contract (SPEC §4.3): ``/state``, ``/request``, ``/shutdown``."""

from __future__ import annotations

from typing import Any

from harness.control.http import ControlError, JsonHttp


class AgentControl:
    def __init__(self, control_port: int, *, timeout_s: float = 5.0) -> None:
        self.control_port = control_port
        self._http = JsonHttp(f"http://127.0.0.1:{control_port}", timeout_s=timeout_s)

    def state(self) -> dict[str, Any]:
        data = self._http.json_of(self._http.get_raw("/state"))
        if not isinstance(data, dict) or "status" not in data:
            raise ControlError(f"agent on :{self.control_port} /state: expected {{status, ...}}, got {data!r:.200}")
        return data

    def request(self, timeout_ms: int = 3000) -> dict[str, Any]:
        # The agent's own retries may take a few times its timeout; allow for them.
        resp = self._http.post_raw("/request", {"timeout_ms": timeout_ms}, timeout_s=timeout_ms / 1000 * 4 + 5)
        return self._http.json_of(resp)

    def shutdown(self) -> None:
        try:
            self._http.post_raw("/shutdown", {}, timeout_s=3)
        except ControlError:
            pass  # already gone: the runtime's stop() still reaps it

    def close(self) -> None:
        self._http.close()
