"""The ``connformance`` command line.

Each subcommand is registered by one small ``_add_<name>(subparsers)`` function that builds its
parser and binds its handler with ``set_defaults(func=...)``; ``_REGISTRARS`` lists them in help
order. A handler takes the parsed namespace and returns the exit code.

Exit codes: 0 ok, 1 the environment is not ready (SetupError), 2 usage error, harness error or
a subcommand that is not implemented yet.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.errors import HarnessError, SetupError

EXIT_OK = 0
EXIT_SETUP = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


# --- setup -------------------------------------------------------------------------------------


def _add_setup(subparsers: argparse._SubParsersAction) -> None:
    from harness import toolchain

    p = subparsers.add_parser(
        "setup",
        help="install what the harness needs (Toxiproxy, agents); idempotent",
        description="Run the named, idempotent setup steps; steps already done are skipped. "
        f"Known steps: {', '.join(toolchain.step_names(toolchain.GROUPS))}.",
    )
    p.add_argument(
        "--toxiproxy-url",
        metavar="URL",
        help="use an already running Toxiproxy at URL (loopback only, e.g. http://127.0.0.1:8474): "
        "check that it answers /version and skip installing one",
    )
    p.add_argument(
        "--only",
        metavar="STEP",
        action="append",
        help="run only this step (repeatable)",
    )
    p.add_argument(
        "--skip",
        metavar="STEP",
        action="append",
        default=[],
        help="leave this step out (repeatable); e.g. the selftest skips `rnacos`, whose cargo build "
        "takes minutes and which no selftest runs",
    )
    p.add_argument(
        "--docker",
        action="store_true",
        help="also set up the docker runtime: an engine (Debian's docker.io, started by the project when "
        f"none answers), the Debian base, the wheelhouse and the peer images (steps: {', '.join(toolchain.step_names(('docker',)))})",
    )
    p.add_argument(
        "--browser",
        action="store_true",
        help="also install headless Chromium (Debian, as root) for the self-test of `up --ui`'s page (step: browser)",
    )
    p.set_defaults(func=_cmd_setup)


def _cmd_setup(args: argparse.Namespace) -> int:
    from harness import toolchain

    groups = ("default", *(("docker",) if args.docker else ()), *(("browser",) if args.browser else ()))
    steps: list[str] = list(args.only) if args.only else toolchain.step_names(groups)
    unknown = [s for s in args.skip if s not in toolchain.step_names(toolchain.GROUPS)]
    if unknown:
        print(f"connformance setup: unknown step(s) to --skip: {unknown}; known steps: "
              f"{', '.join(toolchain.step_names(toolchain.GROUPS))}", file=sys.stderr)
        return EXIT_USAGE
    steps = [s for s in steps if s not in args.skip]
    if args.toxiproxy_url:
        _check_external_toxiproxy(args.toxiproxy_url)
        steps = [s for s in steps if s != "toxiproxy"]
    start = time.monotonic()
    durations = toolchain.run_setup(steps)
    total = time.monotonic() - start
    summary = ", ".join(f"{name} {secs:.2f} s" for name, secs in durations.items()) or "nothing to do"
    print(f"[setup] finished in {total:.1f} s ({summary})")
    return EXIT_OK


def _check_external_toxiproxy(url: str) -> None:
    from harness.toolchain import TOXIPROXY_VERSION
    from harness.toxiproxy import ToxiproxyClient

    with ToxiproxyClient(url, timeout_s=5) as client:
        version = client.version()
    print(
        f"[setup] toxiproxy: using the running Toxiproxy at {client.url} (version {version!r}); not installing"
    )
    if version not in ("git", TOXIPROXY_VERSION):
        # A `go install` build answers "git"; a release build its version number.
        print(
            f"[setup] toxiproxy: note: the harness pins v{TOXIPROXY_VERSION} ('git' when built with go install); "
            f"behaviour pinned by tests/integration/test_toxiproxy_quirks.py may differ on {version!r}"
        )


# --- stubs filled in by other modules ------------------------------------------------------------


def _not_implemented(name: str) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        print(f"connformance {name}: not yet implemented", file=sys.stderr)
        return EXIT_USAGE

    return handler


def _add_peers(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("peers", help="list the known peers, their knobs and capabilities")
    p.add_argument("--peers-file", action="append", default=[], metavar="FILE",
                   help="also load peers from this manifest (as the suites' --peers-file)")
    p.set_defaults(func=_cmd_peers)


def _cmd_peers(args: argparse.Namespace) -> int:

    from harness.peers import PeerRegistry

    registry = PeerRegistry()
    registry.load_builtin()
    for path in args.peers_file:
        registry.add_file(Path(path))
    print(registry.describe())
    return EXIT_OK


def _add_run(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run", help="run the conformance suites (pytest suites ...); extra arguments go to pytest",
        description="Runs `pytest suites` with the connformance plugin; everything after the known "
        "options is passed to pytest (e.g. --peer nacos-client=ref -k SR-02).",
    )
    p.add_argument("--report-dir", default=None, help="where the report goes (default ./report)")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    import subprocess

    from harness.paths import PROJECT_ROOT

    cmd = [sys.executable, "-m", "pytest", str(PROJECT_ROOT / "suites"), "-p", "no:cacheprovider"]
    if args.report_dir:
        cmd += ["--report-dir", args.report_dir]
    cmd += list(args.pytest_args)
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=PROJECT_ROOT)


def _add_up(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "up", help="start peers behind Toxiproxy for a chaos session: a seeded fault schedule, or stay up (bounded)",
        description="Start Toxiproxy (or use --toxiproxy-url), N servers each behind its own proxy and the "
        "given clients; print every address; then run a seeded fault schedule (--faults) and check the "
        "cluster converged, or keep it up printing a status line every 2 s until Ctrl-C or --duration-s. "
        "Always bounded; tears everything down and prints the leak check. Exit 0, 3 when teardown found "
        "leaks or the cluster did not converge, 130 when interrupted.",
    )
    p.add_argument("--servers", type=int, default=2, metavar="N", help="nacos servers (default 2)")
    p.add_argument("--clients", action="append", default=None, metavar="PEER[:COUNT]",
                   help="clients of a nacos-client peer, repeatable (default ref:3)")
    p.add_argument("--server-peer", default="ref", metavar="NAME", help="the nacos-server peer (default ref)")
    p.add_argument("--peers-file", action="append", default=[], metavar="FILE",
                   help="also load peers from this manifest (as the suites' --peers-file)")
    p.add_argument("--knob", action="append", default=[], metavar="ROLE.KNOB=VALUE",
                   help="server.KNOB=V or client.KNOB=V (JSON values parsed), e.g. server.eject_interval_ms=1000; "
                   "a client knob goes to every client peer that declares it")
    p.add_argument("--scaled-timers", action="store_true",
                   help="the TC-08 soak's scaled-down eject/health/backoff knobs where the peers take them "
                   "(explicit --knob values win)")
    p.add_argument("--duration-s", type=float, default=None, metavar="S",
                   help="end the session after S seconds (default 300; with --faults the window + 60; max 3600)")
    p.add_argument("--chaos-seed", type=int, default=None, metavar="S", help="seed of the fault schedule (printed)")
    p.add_argument("--faults", type=int, default=0, metavar="M",
                   help="run M seeded random faults (proxy_down, reset_peer, blackhole, kill, pause), then "
                   "check convergence and end (default 0: just stay up)")
    p.add_argument("--l3-faults", action="store_true",
                   help="each server alone in its own network namespace (root; not a cluster), and the schedule also draws "
                   "packet-level faults on servers (silence, packet_loss, syn_drop, link_down: iptables inside "
                   "the namespace), which Toxiproxy cannot make")
    p.add_argument("--window-ms", type=int, default=10000, metavar="W", help="the schedule's window (default 10000)")
    p.add_argument("--fault-kinds", default=None, metavar="K,K",
                   help="draw only these faults (comma-separated, e.g. proxy_down,blackhole; default: all of them)")
    p.add_argument("--schedule", default=None, metavar="JSON|@FILE",
                   help="replay this fault schedule ({\"events\": [{\"at_ms\", \"fault\", \"target\", \"duration_ms\"}, ...]}, "
                   "as `connformance shrink` prints it) instead of a seeded one; its window ends with its last heal")
    p.add_argument("--history", default=None, metavar="PATH", help="write the session's history (JSONL) here")
    p.add_argument("--ui", action="store_true",
                   help="serve a live view of the session on 127.0.0.1 (URL printed): servers, clients, fault windows, "
                   "checks, and a form to apply and heal faults")
    p.add_argument("--toxiproxy-url", default=None, metavar="URL",
                   help="use this running Toxiproxy (loopback) instead of starting the pinned one")
    p.add_argument("--workdir", default=None, metavar="DIR", help="peer logs (and the history) go here (default: a temp dir)")
    p.add_argument("--runtime", choices=("process", "docker"), default="process",
                   help="how peers run (docker: containers, Toxiproxy too; `connformance setup --docker` first)")
    p.set_defaults(func=_cmd_up)


def _cmd_up(args: argparse.Namespace) -> int:
    from harness.up import UpOptions, run_up

    options = UpOptions(
        servers=args.servers, clients=args.clients or ["ref:3"], server_peer=args.server_peer,
        peers_files=args.peers_file, knobs=args.knob, scaled_timers=args.scaled_timers,
        duration_s=args.duration_s, seed=args.chaos_seed, faults=args.faults, window_ms=args.window_ms,
        history=args.history, toxiproxy_url=args.toxiproxy_url, workdir=args.workdir, runtime=args.runtime,
        l3_faults=args.l3_faults, schedule=args.schedule, ui=args.ui,
        fault_kinds=[k.strip() for k in args.fault_kinds.split(",") if k.strip()] if args.fault_kinds else None,
    )
    return run_up(options, echo=lambda line: print(line, flush=True))


def _add_shrink(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "shrink", help="shrink a failing chaos schedule (up --faults, TC-08) to a small one and print its replay",
        description="Reads the history of an `up --faults` session or a TC-08 case that ended with a failed check, "
        "then replays smaller schedules (fewer faults, then shorter ones) as `up` sessions with the same peers "
        "and knobs, keeping each that fails the same way. Prints the smallest as a one-line `connformance up "
        "... --schedule '...'` and writes it to shrink/replay.txt beside the history. Bounded by --budget-s "
        "and --max-trials. Exit 0 when a failing schedule was printed.",
    )
    p.add_argument("history", metavar="HISTORY", help="history.jsonl of the failing session or TC-08 cell")
    p.add_argument("--budget-s", type=float, default=900, metavar="S", help="stop searching after S seconds (default 900)")
    p.add_argument("--max-trials", type=int, default=40, metavar="N", help="at most N replays while searching (default 40)")
    p.add_argument("--confirm", type=int, default=3, metavar="K",
                   help="replay the smallest K more times; if one passes, confirm the next larger instead (default 3)")
    p.set_defaults(func=_cmd_shrink)


def _cmd_shrink(args: argparse.Namespace) -> int:
    from harness.shrink import shrink

    shrink(Path(args.history), budget_s=args.budget_s, max_trials=args.max_trials, confirmations=args.confirm,
           echo=lambda line: print(line, flush=True))
    return 0


def _add_check_peer(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("check-peer", help="start one peer and check that it keeps the contract (docs/roles)")
    p.add_argument("--peers-file", action="append", default=[], help="manifest(s) to load (repeatable)")
    p.add_argument("--peer", action="append", required=True, metavar="ROLE=NAME", help="the peer(s) to check")
    p.add_argument("--runtime", default="process", choices=("process", "docker"))
    p.set_defaults(func=_cmd_check_peer)


def _cmd_check_peer(args: argparse.Namespace) -> int:
    from harness.check_peer import check_peer
    from harness.peers import PeerRegistry

    registry = PeerRegistry.default(args.peers_file)
    problems: list[str] = []
    for spec in args.peer:
        role, _, name = spec.partition("=")
        if not name:
            raise HarnessError(f"--peer {spec!r}: expected ROLE=NAME, e.g. --peer nacos-client=mine")
        problems += check_peer(registry.get(role, name), registry, runtime_name=args.runtime)
    for line in problems:
        print(f"PROBLEM {line}")
    print(f"check-peer: {len(problems)} problem(s)")
    return 1 if problems else EXIT_OK


def _add_report(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="render, diff and merge reports (render is the default)")
    actions = p.add_subparsers(dest="report_action", metavar="ACTION")
    render = actions.add_parser("render", help="re-render index.html and junit.xml from a report's index.json")
    render.add_argument("report_dir", nargs="?", default=None, help="the report folder (default ./report)")
    render.set_defaults(func=_cmd_report_render)
    diff = actions.add_parser("diff", help="the cells whose verdict changed between two reports, with both details")
    diff.add_argument("old", help="the earlier report (folder or index.json)")
    diff.add_argument("new", help="the later report (folder or index.json)")
    diff.add_argument("--json", dest="json_out", default=None, help="also write the diff as JSON here")
    diff.add_argument("--exit-code", action="store_true", help="exit 1 when something changed")
    diff.set_defaults(func=_cmd_report_diff)
    merge = actions.add_parser("merge", help="join shard reports (--shard K/N) into one report folder")
    merge.add_argument("out", help="the merged report folder")
    merge.add_argument("shards", nargs="+", help="the shards' report folders")
    merge.set_defaults(func=_cmd_report_merge)
    p.set_defaults(func=_cmd_report_render, report_dir=None)


def _cmd_report_render(args: argparse.Namespace) -> int:

    from harness.paths import default_report_dir
    from harness.report.writer import ReportWriter

    report_dir = Path(args.report_dir) if args.report_dir else default_report_dir()
    if not (report_dir / "index.json").exists():
        raise HarnessError(f"{report_dir}/index.json not found: run the suites first (tox run -e conformance)")
    writer, meta = ReportWriter.load(report_dir)
    files = writer.write(meta)
    print(f"wrote {files}")
    print(f"summary: {writer.summary()}")
    return EXIT_OK


def _cmd_report_diff(args: argparse.Namespace) -> int:
    import json

    from harness.report.compare import diff_reports, load_index, render_diff

    diff = diff_reports(load_index(Path(args.old)), load_index(Path(args.new)))
    print(render_diff(diff))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(diff.to_dict(), indent=1))
    return 1 if args.exit_code and not diff.empty else EXIT_OK


def _cmd_report_merge(args: argparse.Namespace) -> int:
    import shutil

    from harness.report.compare import load_index, merge_reports
    from harness.report.writer import ReportWriter

    out = Path(args.out)
    shards = [Path(p) for p in args.shards]
    results, meta = merge_reports([load_index(p) for p in shards], [str(p) for p in shards])
    out.mkdir(parents=True, exist_ok=True)
    for shard in shards:  # histories and logs, so the merged report's links resolve
        if (shard / "cases").is_dir() and shard.resolve() != out.resolve():
            shutil.copytree(shard / "cases", out / "cases", dirs_exist_ok=True)
    writer = ReportWriter(out)
    writer.extend(results)
    files = writer.write(meta)
    print(f"merged {len(results)} cells from {len(shards)} shard(s) into {files.index_json.parent}")
    print(f"summary: {writer.summary()}")
    return EXIT_OK


# --- docker ----------------------------------------------------------------------------------


def _add_docker(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "docker",
        help="the docker runtime's engine and images: up, down, status, build, reap",
        description="up: find an engine or start the project's own dockerd (installing docker.io if needed); "
        "down: stop the project's own dockerd (never one it did not start); status: engine, images, containers; "
        "build: build the peer images missing at their content tag; reap: remove containers of dead runs.",
    )
    p.add_argument("action", choices=("up", "down", "status", "build", "reap"))
    p.set_defaults(func=_cmd_docker)


def _cmd_docker(args: argparse.Namespace) -> int:
    from harness.docker import engine

    if args.action == "up":
        found = engine.find_engine(required=False) or engine.start_own_engine()
        print(f"[docker] engine {found.base_url} ({found.origin}, version {found.version})")
        return EXIT_OK
    if args.action == "down":
        stopped = engine.stop_own_engine()
        print("[docker] stopped the project's dockerd" if stopped else "[docker] the project's dockerd was not running")
        return EXIT_OK
    from harness.docker import images
    from harness.docker.runtime import LABEL_OWNER, reap_leftovers

    found = engine.find_engine()
    client = engine.engine_client(found)
    try:
        if args.action == "build":
            images.build_images(client)
        elif args.action == "reap":
            removed = reap_leftovers(client)
            print(f"[docker] removed {len(removed)} container(s) of dead runs: {', '.join(removed) or '-'}")
        else:
            print(f"[docker] engine {found.base_url} ({found.origin}, version {found.version})")
            missing = set(images.missing_images(client))
            for name in images.IMAGES:
                ref = images.image_ref(name)
                print(f"  image {ref}: {'MISSING (connformance docker build)' if ref in missing else 'built'}")
            containers = client.containers.list(all=True, filters={"label": LABEL_OWNER})
            print(f"  containers of connformance runs: {len(containers)}"
                  + "".join(f"\n    {c.name} {c.status} owner {c.labels.get(LABEL_OWNER)}" for c in containers))
    finally:
        client.close()
    return EXIT_OK


_REGISTRARS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_setup,
    _add_peers,
    _add_run,
    _add_up,
    _add_shrink,
    _add_check_peer,
    _add_report,
    _add_docker,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connformance",
        description="Conformance and chaos harness for connection lifecycles, behind a real Toxiproxy.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _REGISTRARS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # `connformance report DIR` (the old form) still re-renders: render is report's default action.
    if len(argv) >= 2 and argv[0] == "report" and argv[1] not in ("render", "diff", "merge", "-h", "--help"):
        argv.insert(1, "render")
    args, extra = parser.parse_known_args(argv)
    if args.command == "run":
        args.pytest_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except SetupError as exc:
        print(f"connformance {args.command}: environment not ready: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except HarnessError as exc:
        print(f"connformance {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
