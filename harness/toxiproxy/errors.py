"""The Toxiproxy API's errors, one class per status (404, 409, 400, 503), each with a hint that
says what to do; they also inherit toxiproxy-python's exception types, so code written against
that package still catches them."""

from __future__ import annotations

from toxiproxy import exceptions as _tp_exc

from harness.errors import HarnessError, SetupError


class ToxiproxyError(HarnessError):
    """A Toxiproxy API call failed. Names the call, proxy/toxic, HTTP status and Toxiproxy's text."""

    def __init__(
        self,
        summary: str,
        *,
        url: str,
        method: str,
        path: str,
        status: int | None = None,
        error_text: str | None = None,
        proxy: str | None = None,
        toxic: str | None = None,
        hint: str = "",
    ) -> None:
        self.url = url
        self.method = method
        self.path = path
        self.status = status
        self.error_text = error_text
        self.proxy = proxy
        self.toxic = toxic
        self.hint = hint
        where = ", ".join(f"{k} {v!r}" for k, v in (("proxy", proxy), ("toxic", toxic)) if v)
        msg = f"Toxiproxy {method} {url}{path}" + (f" ({where})" if where else "") + f": {summary}"
        if hint:
            msg += f"; {hint}"
        super().__init__(msg)


class ToxiproxyUnavailable(ToxiproxyError, SetupError):
    """Toxiproxy did not answer (connection refused, timeout, handler timeout 503)."""


class NotFound(ToxiproxyError, _tp_exc.NotFound):
    """404: proxy or toxic not found."""


class Conflict(ToxiproxyError, _tp_exc.ProxyExists):
    """409: proxy or toxic already exists."""


class BadRequest(ToxiproxyError, _tp_exc.InvalidToxic):
    """400: bad body, missing field, invalid stream or toxic type."""


ERROR_BY_STATUS: dict[int, type[ToxiproxyError]] = {
    404: NotFound,
    409: Conflict,
    400: BadRequest,
    503: ToxiproxyUnavailable,
}


def hint_for(status: int, text: str, proxy: str | None, toxic: str | None) -> str:
    if status == 404 and "proxy" in text:
        return f"create proxy {proxy!r} first (delete_all() and DELETE remove proxies; /reset keeps them)"
    if status == 404 and "toxic" in text:
        return "list the installed toxics with proxy.toxics(); /reset removes every toxic"
    if status == 409 and "toxic" in text:
        return (
            f"remove toxic {toxic!r} first or give the new toxic its own name= "
            "(unnamed toxics are called <type>_<stream>, unique across both streams)"
        )
    if status == 409:
        return f"proxy {proxy!r} exists: delete it first or pick another name"
    if status == 500 and "address already in use" in text:
        return "the listen address is busy: listen on port 0 (the default) and read proxy.listen_port"
    if status == 503:
        return "Toxiproxy's 25 s handler timeout fired; a toxic removal may be stuck flushing a link"
    if status == 403:
        return "Toxiproxy refuses User-Agents starting with 'Mozilla/'"
    return ""
