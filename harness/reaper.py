"""Reaping what a run left behind when it could not tear down (SIGKILL, a crash, a power cut of
the CI job): its slot's processes, network namespaces, proxies on an external Toxiproxy and
scratch files. Runs when a slot is taken (``harness.slots.current_slot``) and, for every slot no
living process holds, at the start of a pytest run or ``connformance up``.

Only the harness's own leftovers are touched, each found by what the harness marked it with:
a cgroup under ``connformance/cf<n>``, the ``CONNFORMANCE_OWNER`` environment marker, the name
prefix ``cf<n>-`` of namespaces, veths and proxies, and the slot's own state folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

from harness.slots import SLOT_COUNT, Slot, slot_has_owner, try_lock

__all__ = ["reap_slot", "reap_unowned", "record_external_toxiproxy", "forget_external_toxiproxy"]

_EXTERNAL_PROXIES = "external-toxiproxy.json"
_REAP_WAIT_MS = 5000


def _reap_processes(slot: Slot) -> list[str]:
    from harness.runtime.containment import marked_processes, process_cmdline, slot_cgroup

    reaped = []
    group = slot_cgroup(slot)
    if group is not None and group.exists():
        pids = group.members()
        if pids:
            reaped.append(f"{len(pids)} process(es) in {group.path}: "
                          + "; ".join(f"{p} {process_cmdline(p)[:60]}" for p in pids[:5]))
            group.kill()
            group.wait_empty(_REAP_WAIT_MS)
        group.remove()
    # Without cgroups (or for a process that somehow left it): the owner marker.
    from harness.slots import current_slot_index

    mine = os.getpid() if current_slot_index() == slot.index else None
    marked = marked_processes(slot.index, exclude_owner=mine)
    if marked:
        reaped.append(f"{len(marked)} marked process(es): "
                      + "; ".join(f"{p} {process_cmdline(p)[:60]}" for p in marked[:5]))
        for pid in marked:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return reaped


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)


def _reap_namespaces(slot: Slot) -> list[str]:
    if shutil.which("ip") is None:
        return []
    reaped = []
    try:
        listed = _run(["ip", "netns", "list"]).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(slot.prefix):
            from harness.placement.netns import delete_namespace

            delete_namespace(name)
            reaped.append(f"network namespace {name}")
    try:
        links = _run(["ip", "-o", "link", "show"]).stdout
    except (OSError, subprocess.TimeoutExpired):
        links = ""
    for line in links.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name.startswith(slot.prefix):
                _run(["ip", "link", "delete", name])
                reaped.append(f"link {name}")
    return reaped


def record_external_toxiproxy(slot: Slot, url: str) -> None:
    """Remember that this slot makes proxies on ``url`` (an external Toxiproxy outlives the run)."""
    path = slot.state_dir / _EXTERNAL_PROXIES
    urls = set(_external_urls(slot))
    urls.add(url)
    path.write_text(json.dumps(sorted(urls)))


def forget_external_toxiproxy(slot: Slot) -> None:
    (slot.state_dir / _EXTERNAL_PROXIES).unlink(missing_ok=True)


def _external_urls(slot: Slot) -> list[str]:
    try:
        return list(json.loads((slot.state_dir / _EXTERNAL_PROXIES).read_text()))
    except (OSError, ValueError):
        return []


def _reap_proxies(slot: Slot) -> list[str]:
    reaped = []
    for url in _external_urls(slot):
        try:
            from harness.toxiproxy.client import ToxiproxyClient

            client = ToxiproxyClient(url, timeout_s=3.0)
            proxies = {name: proxy for name, proxy in client.proxies().items() if name.startswith(slot.prefix)}
            for proxy in proxies.values():
                proxy.delete(missing_ok=True)
            names = sorted(proxies)
            if names:
                reaped.append(f"{len(names)} proxy(ies) on {url}: {', '.join(names[:5])}")
        except Exception as exc:  # noqa: BLE001 - an unreachable Toxiproxy must not stop the run
            reaped.append(f"proxies on {url} not checked ({type(exc).__name__}: {exc})")
    forget_external_toxiproxy(slot)
    return reaped


def _reap_tmp(slot: Slot) -> list[str]:
    tmp = slot.state_dir / "tmp"
    if not tmp.is_dir():
        return []
    entries = list(tmp.iterdir())
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    return [f"{len(entries)} scratch item(s) in {tmp}"] if entries else []


def reap_slot(slot: Slot, *, announce: bool = False) -> list[str]:
    """Remove what an earlier owner of ``slot`` left; the caller holds the slot's lock."""
    reaped = [*_reap_processes(slot), *_reap_namespaces(slot), *_reap_proxies(slot), *_reap_tmp(slot)]
    if announce and reaped:
        print(f"connformance: slot {slot.index}: reaped what an earlier run left without teardown:\n  "
              + "\n  ".join(reaped), file=sys.stderr)
    return reaped


def reap_unowned(*, announce: bool = True) -> list[str]:
    """Reap every slot that no living process holds (each under its lock, so two runs starting
    at once never reap the same slot twice or a slot that was just taken)."""
    reaped: list[str] = []
    for index in range(SLOT_COUNT):
        if slot_has_owner(index):
            continue
        fd = try_lock(index)
        if fd is None:
            continue
        try:
            reaped += reap_slot(Slot(index), announce=announce)
        finally:
            os.close(fd)
    return reaped

