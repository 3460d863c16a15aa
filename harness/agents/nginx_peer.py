"""nginx as a connformance http-server peer: a throwaway config, nginx in the foreground.

    python -m harness.agents.nginx_peer --host 127.0.0.1 --port 18080 \\
        [--keepalive-timeout-ms 75000] [--keepalive-requests 1000] [--keepalive-header-s N]

Writes ``nginx.conf`` into a temporary directory under ``$TMPDIR`` (the runtime gives each peer
its own, removed at stop and reaped after a crash; pid file, temp paths and prefix all there),
then runs ``nginx -p DIR -e stderr -c DIR/nginx.conf -g 'daemon off;'`` with ``master_process
off`` (one process: SIGSTOP/SIGCONT/SIGKILL of the process group reach the process that holds
the sockets) and waits for it; signals are forwarded and the directory is removed when nginx
exits. nginx logs to stderr (the runtime's log); no access log.

Paths (the ledger's, SPEC §4.5, as far as nginx can serve them):

- ``/`` → 200. ``/status/<code>`` for 200-299 and 400-599 (not 444/499, which nginx reserves
  for "close without answering"): 2xx with a short body via ``return``; 4xx/5xx with
  nginx's own error page, so nginx's own keep-alive rules apply: it sends ``Connection: close``
  and closes after 400, 413, 414, 500 and 501 (a different list from Tomcat's), and answers
  ``/status/408`` by closing without a response, as nginx does for a 408.
- ``/sleep?ms=N`` and ``/bytes?n=N`` need the echo module (``echo_sleep``, ``echo_duplicate``),
  which Debian's nginx-light ships (libnginx-mod-http-echo). Plain nginx has no way to delay a
  response or generate N bytes: without the module those paths answer 404 and a note is printed
  (capability gap: declare no ``sleep``/``bytes`` capability for such a build). Echo responses
  are chunked (no Content-Length).
- no ``/drop-nth`` and no ledger: observe nginx through the socket table.

Knobs: ``keepalive_timeout`` (ms precision, nginx's default 75 s; 0 disables keep-alive), its
optional header value (``Keep-Alive: timeout=N``, not sent by default), ``keepalive_requests``
(default 1000 since nginx 1.19.10).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.agents.build import NGINX_PACKAGE, find_nginx
from harness.ports import check_loopback

__all__ = ["ECHO_MODULE_PATHS", "STATUS_CODES", "find_echo_module", "main", "render_config"]

ECHO_MODULE_PATHS = (
    Path("/usr/lib/nginx/modules/ngx_http_echo_module.so"),
    Path("/usr/share/nginx/modules/ngx_http_echo_module.so"),
)
# 444 and 499 are nginx's own "close without a response" codes, not statuses it sends.
STATUS_CODES = tuple(c for c in (*range(200, 300), *range(400, 600)) if c not in (444, 499))
_NO_BODY = (204,)


def find_echo_module() -> Path | None:
    return next((p for p in ECHO_MODULE_PATHS if p.is_file()), None)


def render_config(
    *,
    tmp: Path,
    host: str,
    port: int,
    keepalive_timeout_ms: int | None = None,
    keepalive_header_s: int | None = None,
    keepalive_requests: int | None = None,
    echo_module: Path | None = None,
) -> str:
    """The whole nginx.conf for one peer. Pure: no files touched."""
    keepalive = ""
    if keepalive_timeout_ms is not None:
        header = f" {keepalive_header_s}s" if keepalive_header_s is not None else ""
        keepalive += f"    keepalive_timeout {keepalive_timeout_ms}ms{header};\n"
    elif keepalive_header_s is not None:
        keepalive += f"    keepalive_timeout 75s {keepalive_header_s}s;\n"
    if keepalive_requests is not None:
        keepalive += f"    keepalive_requests {keepalive_requests};\n"

    statuses = []
    for code in STATUS_CODES:
        if code in _NO_BODY:
            action = f"return {code};"
        elif code < 400:
            action = f'return {code} "status {code}\\n";'
        else:
            action = f"return {code};"  # nginx's own error page and its own close-on-error rules
        statuses.append(f"        location = /status/{code} {{ {action} }}")

    if echo_module is not None:
        load = f"load_module {echo_module};\n"
        # echo_sleep takes seconds: ms -> "S.mmm" (0-padded), via named captures in a map.
        echo = """\
    map $arg_ms $cf_sleep_s {
        default                          "";
        "~^(?<cf_a>[0-9]+)(?<cf_b>[0-9]{3})$"  "${cf_a}.${cf_b}";
        "~^(?<cf_c>[0-9]{3})$"                "0.${cf_c}";
        "~^(?<cf_d>[0-9]{2})$"                "0.0${cf_d}";
        "~^(?<cf_e>[0-9])$"                   "0.00${cf_e}";
    }
    map $arg_n $cf_bytes_n {
        default                 "";
        "~^[0-9]{1,8}$"         $arg_n;
    }
"""
        paths = """\
        location = /sleep {
            if ($cf_sleep_s = "") { return 400 "ms must be a whole number of milliseconds\\n"; }
            echo_sleep $cf_sleep_s;
            echo "ok";
        }
        location = /bytes {
            if ($cf_bytes_n = "") { return 400 "n must be 0..99999999\\n"; }
            echo_duplicate $cf_bytes_n "x";
        }
"""
    else:
        load = echo = paths = ""

    return f"""\
# written by harness.agents.nginx_peer; lives only as long as this nginx
{load}worker_processes 1;
master_process off;
pid {tmp}/nginx.pid;
error_log stderr notice;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    default_type text/plain;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{keepalive}{echo}
    server {{
        listen {host}:{port};
        server_name _;

        location = / {{ return 200 "ok\\n"; }}
{paths}{chr(10).join(statuses)}
    }}
}}
"""


def _die_with_parent(parent_pid: int):
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.agents.nginx_peer", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--keepalive-timeout-ms", type=int, metavar="MS",
                   help="nginx keepalive_timeout (default 75000; 0 disables keep-alive)")
    p.add_argument("--keepalive-header-s", type=int, metavar="S",
                   help="2nd keepalive_timeout parameter: send Keep-Alive: timeout=S")
    p.add_argument("--keepalive-requests", type=int, metavar="N", help="nginx keepalive_requests (default 1000)")
    p.add_argument("--nginx", help="nginx binary (default: $CONNFORMANCE_NGINX_BIN, PATH, /usr/sbin/nginx)")
    args = p.parse_args(argv)
    try:
        check_loopback(args.host, namespaced=True)
    except ValueError as exc:
        p.error(str(exc))
    for name in ("keepalive_timeout_ms", "keepalive_header_s", "keepalive_requests"):
        value = getattr(args, name)
        if value is not None and value < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    nginx = Path(args.nginx) if args.nginx else find_nginx()
    if nginx is None:
        print(f"nginx_peer: nginx not found; run `connformance setup` (installs {NGINX_PACKAGE} as root) "
              "or set CONNFORMANCE_NGINX_BIN", file=sys.stderr)
        return 2
    echo = find_echo_module()
    if echo is None:
        print("nginx_peer: no echo module (libnginx-mod-http-echo): /sleep and /bytes will answer 404",
              file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="connformance-nginx-") as tmp_name:
        tmp = Path(tmp_name)
        conf = tmp / "nginx.conf"
        conf.write_text(render_config(
            tmp=tmp, host=args.host, port=args.port, keepalive_timeout_ms=args.keepalive_timeout_ms,
            keepalive_header_s=args.keepalive_header_s, keepalive_requests=args.keepalive_requests,
            echo_module=echo,
        ))
        argv_nginx = [str(nginx), "-p", str(tmp), "-e", "stderr", "-c", str(conf), "-g", "daemon off;"]
        print(f"nginx_peer: {' '.join(argv_nginx)}", file=sys.stderr, flush=True)
        # nginx dies with this wrapper, even when the wrapper is SIGKILLed (a crash of the peer).
        proc = subprocess.Popen(argv_nginx, preexec_fn=_die_with_parent(os.getpid()))

        def forward(signum: int, _frame: object) -> None:
            if proc.poll() is None:
                os.kill(proc.pid, signum)

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
            signal.signal(sig, forward)
        rc = proc.wait()
    # nginx exits 0 on SIGTERM/SIGQUIT (fast/graceful shutdown): a stop is not a failure.
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main())
