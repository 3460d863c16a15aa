"""One fault vocabulary for cases and chaos sessions (SPEC TC-02..TC-09, TC-08's seeded soak).

A fault is a small object with ``name``, ``apply()`` and ``heal()``, also a context manager::

    with Blackhole(server.proxy, history=h):
        ...  # the link is dead; leaving the block heals it

``heal()`` is idempotent and a no-op for a fault never applied, so cleanup can always call it.
Every apply/heal is written to the history. Proxy faults write only ``fault_begin``/``fault_end``
(naming the vocabulary fault): the toxics and proxy down/up themselves are recorded by the
topology's proxy event hook, so recording them here would count them twice. Node faults write
``fault``/``healed`` events (kill, pause/resume, restart) with the pid and ``via``: how the
runtime did it (process: signals to the process group; docker: ``docker kill``, ``docker pause``
/``unpause``, ``docker stop`` + ``start`` of the same container).

The package: ``base`` (Fault, Role), ``proxy`` (ProxyDown, ResetPeer, Blackhole, Latency: L4,
Toxiproxy), ``node`` (Kill, Pause, Restart), ``packet`` (SynDrop, Silence, PacketLoss, LinkDown:
L3, iptables in a peer's namespace), ``registry`` (every fault by name) and ``schedule``
(seeded schedules of them: chaos sessions, the TC-08 soak). Import the names from here.
"""

from harness.faults.base import Fault, Role
from harness.faults.node import Kill, Pause, Restart
from harness.faults.packet import L3_FAULTS, LinkDown, PacketLoss, Silence, SynDrop, namespace_of
from harness.faults.proxy import Blackhole, Latency, ProxyDown, ResetPeer
from harness.faults.registry import FAULTS, check_fault_params, fault_class, fault_from_spec
from harness.faults.schedule import FaultRun, Schedule, ScheduledFault, run_schedule, topology_resolver

__all__ = [
    "FAULTS", "L3_FAULTS", "Blackhole", "Fault", "FaultRun", "Kill", "Latency", "LinkDown", "PacketLoss", "Pause",
    "ProxyDown", "ResetPeer", "Restart", "Role", "Schedule", "ScheduledFault", "Silence", "SynDrop",
    "check_fault_params", "fault_class", "fault_from_spec", "namespace_of", "run_schedule", "topology_resolver",
]
