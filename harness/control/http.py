"""A tiny JSON-over-HTTP helper for control APIs on loopback: timeouts always, errors that
name the URL and say what came back."""

from __future__ import annotations

import json
from typing import Any

import requests

from harness.errors import SetupError


class ControlError(SetupError):
    """A control endpoint did not answer as documented."""


class JsonHttp:
    def __init__(self, base_url: str, *, timeout_s: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._session = requests.Session()
        self._session.trust_env = False  # never route loopback through a proxy from the env

    def get_raw(self, path: str, params: dict[str, Any] | None = None, *, timeout_s: float | None = None) -> requests.Response:
        url = f"{self.base_url}{path}"
        try:
            return self._session.get(url, params=params, timeout=timeout_s or self.timeout_s)
        except requests.RequestException as exc:
            raise ControlError(f"GET {url} failed: {exc}") from exc

    def post_raw(self, path: str, body: Any = None, *, timeout_s: float | None = None) -> requests.Response:
        url = f"{self.base_url}{path}"
        try:
            return self._session.post(url, json=body, timeout=timeout_s or self.timeout_s)
        except requests.RequestException as exc:
            raise ControlError(f"POST {url} failed: {exc}") from exc

    @staticmethod
    def json_of(resp: requests.Response) -> Any:
        try:
            return resp.json()
        except (ValueError, json.JSONDecodeError) as exc:
            raise ControlError(
                f"{resp.request.method} {resp.url}: expected a JSON body, got HTTP {resp.status_code} {resp.text[:200]!r}"
            ) from exc

    def close(self) -> None:
        self._session.close()
