"""How peers run: the ``Node``/``Runtime`` interface, readiness checks and the process runtime
(the embedded default). This package depends on nothing above it; the docker runtime lives in
``harness.docker`` and ``harness.runtimes`` picks one by name."""

from __future__ import annotations

from harness.runtime.base import LaunchSpec, Node, Readiness, Runtime
from harness.runtime.process import ProcessNode, ProcessRuntime
from harness.runtime.readiness import HttpReady, LogLineReady, PortReady, wait_ready

__all__ = [
    "LaunchSpec",
    "Node",
    "Readiness",
    "Runtime",
    "ProcessRuntime",
    "ProcessNode",
    "PortReady",
    "HttpReady",
    "LogLineReady",
    "wait_ready",
]
